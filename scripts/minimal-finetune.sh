#!/usr/bin/env bash
# Issue 6's "minimal fine-tuning" experiment, end to end with this project's CLI:
#   1. pretrain a dense model on SOTU + Brown at context 1024;
#   2. convert it to SparseK + window (K + W = 256, a quarter of the context);
#   3. fine-tune the converted model for 5% of the pretraining steps;
#   4. evaluate all three on the same validation documents at context 1024.
# Usage: bash scripts/minimal-finetune.sh OUT [DEVICE] [PRETRAIN_STEPS]
set -euo pipefail
out=${1:?usage: minimal-finetune.sh OUT [DEVICE] [PRETRAIN_STEPS]}
device=${2:-cuda}
steps=${3:-1200}
ft=$(( steps / 20 ))
cli="node dist/cli.js"
ctx=${CONTEXT:-1024}
model=${MODEL:-"--layers 6 --dim 384 --heads 6 --kv-heads 6 --vocab 4096"}
model="$model --context $ctx"
kw=${KW:-128}   # K = W
mkdir -p "$out"
rm -rf "$out/dense" "$out/converted" "$out/finetuned"   # a re-run starts over (the CLI refuses to write over a model)
node --import tsx scripts/dump-corpus.ts "$out/data" sotu brown
$cli train --data "$out/data" --attention dense $model --batch 8 --steps "$steps" --lr 2e-3 --eval-every 200 \
  --device "$device" --quiet --out "$out/dense"
$cli convert --from "$out/dense" --attention sparsek --k "$kw" --window "$kw" --out "$out/converted"
$cli finetune --checkpoint "$out/converted" --data "$out/data" --steps "$ft" --lr 5e-4 --eval-every "$ft" \
  --device "$device" --quiet --out "$out/finetuned"
for run in dense converted finetuned; do
  echo "{\"run\": \"$run\", \"eval\": $($cli eval --checkpoint "$out/$run" --data "$out/data" --context "$ctx" --rows 64 --device "$device" | tail -1)}"
done | tee "$out/results.jsonl"
