// WebGPU under Node: a GPUDevice from the npm `webgpu` package (Dawn). The only node-specific
// file of src/webgpu/; browsers get their device from navigator.gpu (see requestDevice in
// device.ts). Dawn finds adapters through the Vulkan loader: on a machine without a GPU, Debian's
// chromium ships SwiftShader, a CPU Vulkan driver, that the loader uses when
// VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json (the tests set it; see
// docs/webgpu.md). Not here: anything the browser also needs.
/// <reference types="@webgpu/types" />

import fs from 'node:fs';
import { DeviceError } from '../core/errors.js';
import { GpuRuntime } from './runtime.js';
import { requestRuntime } from './device.js';
import { WebGpuModel, checkWebGpuConfig } from './model.js';
import type { ModelConfig } from '../model/config.js';
import type { Params } from '../model/params.js';

/** Debian chromium's SwiftShader Vulkan driver (CI has no GPU). */
export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

let gpu: GPU | null = null;

/** The Dawn GPU object, created once per process. */
async function dawn(): Promise<GPU> {
  if (gpu) return gpu;
  let mod: { create(options: string[]): GPU; globals: object };
  try {
    mod = await import('webgpu');
  } catch (e) {
    throw new DeviceError('webgpu', `the npm package 'webgpu' (Dawn for Node) does not load: ${(e as Error).message}`);
  }
  // Dawn's objects (GPUBufferUsage, GPUMapMode, ...) are globals in browsers.
  Object.assign(globalThis, mod.globals);
  gpu = mod.create([]);
  return gpu;
}

/**
 * A WebGPU runtime on Dawn. Throws DeviceError when no adapter is found, with the hint that
 * SwiftShader provides one on machines without a GPU.
 * @example
 *   const rt = await nodeRuntime(); ...; rt.destroy();
 */
export async function nodeRuntime(): Promise<GpuRuntime> {
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp'; // Dawn warns without it
  const g = await dawn();
  const hint = fs.existsSync(SWIFTSHADER_ICD) && !process.env.VK_ICD_FILENAMES
    ? ` (no GPU here? set VK_ICD_FILENAMES=${SWIFTSHADER_ICD} to use SwiftShader)`
    : fs.existsSync(SWIFTSHADER_ICD) ? '' : ' (Debian: apt-get install chromium libvulkan1 provides SwiftShader)';
  return requestRuntime(g, hint);
}

/** Why WebGPU cannot be used under Node here, or null when it can. */
export async function webgpuUnavailable(): Promise<string | null> {
  try {
    const rt = await nodeRuntime();
    rt.destroy();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** What loadModel(dir, { device: 'webgpu' }) runs: a model on its own Dawn device. */
export async function webgpuRunner(config: ModelConfig, params: Params): Promise<{ logits(ids: ArrayLike<number>): Promise<Float32Array>; dispose(): void }> {
  checkWebGpuConfig(config); // before making a device
  const rt = await nodeRuntime();
  let model: WebGpuModel;
  try {
    model = await WebGpuModel.create(rt, config, params);
  } catch (e) {
    rt.destroy();
    throw e;
  }
  return {
    logits: (ids) => model.logits(ids),
    dispose() {
      model.dispose();
      rt.destroy();
    },
  };
}
