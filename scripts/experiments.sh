#!/usr/bin/env bash
# Issue 7's experiments, through the CLI, on one GPU (bash .device/run.sh scripts/experiments.sh PART):
#   lm        language modelling on SOTU at T = 4096 for every attention kind, matched budgets
#             (K + W = 512 keys per query for the sparse kinds), then evaluation at 4K, 8K and 16K
#             (length extrapolation)
#   slope     SparseK + window with eps = 0, 0.01 and 0.05, and with K:W = 128:384 and 384:128
#   passkey   the passkey retrieval task (src/data/passkey.ts) at 4K characters with the byte tokenizer
#   recall    multi-query associative recall (src/data/recall.ts): 240 facts, then 240 queries, ~3.9K characters
#   gap       the same in the compact style ('Q3 b5 ...': find the key, copy what follows, the plain
#             induction pattern) with 32 one-letter keys and 0 to 3,400 characters of filler (drawn per
#             document) between facts and queries: near facts teach retrieval, far ones are beyond a
#             512-key window
#   copy      'Copy: <32 letters>. <0 to 3,600 characters of filler> Again: <the letters>.': every letter of
#             the repeat after its first is retrievable from the original (the induction pattern), most
#             of them beyond a 512-key window
#   induction the copy task with a varied length (8 to 32 letters) and repeats, in two stages: train on
#             'Copy: S. Again: S. Again: S. Again: S. Again: S.' (no gap: the form a 2-layer width-64 model
#             learns on CPU in ~600 steps, scripts/recall.ts --repeats), then finetune STEPS2 (default
#             STEPS) steps at LR2 (default 1e-3) on those mixed with documents of 3 repeats, each after 0 to
#             1,500 characters of filler. Scored after each stage: stage 1 on gap-free documents, stage 2
#             on the gapped ones, where far counts letters whose previous occurrence is more than 512
#             characters back (beyond window's W = 512 and sparsek-window's W = 256). Chance: 1/24 = 0.042.
#             COPY_NEAR and NEAR_DOCS change stage 1's documents (e.g. '--task copy --length 8:32 --repeats 150',
#             one document a row at T = 4096), MIX_NEAR and MIX_DOCS the gap-free part of stage 2's; BATCH2 and
#             CONTEXT2 stage 2's batch and context (stage 1 at a short context, MODEL's --context, then 4096).
#   grow      the copy task learned at T = 128 (4 repeats of 4 to 16 letters without a gap, STEPS steps at B = 16,
#             default 1200, lr 3e-3), then finetuned at T = 128, 256, 512, ... GROW_T (default 4096), each stage
#             on 3 repeats of 4 to 12 letters after 0 to (T - 82) / 3 characters of filler (so a document fits
#             its context) mixed with every earlier stage's documents, GROW_STEPS steps a stage (default
#             '400 600 1000 1500 2000 2500'), GROW_TOKENS
#             tokens a step (default 8192), lr 5e-4. The 2-layer width-64 model of the CPU runs
#             (docs/RESULTS.md); dense, window (W = 32) and sparsek + window (K = W = 16), the same K + W.
#             Scored after every stage at its context, with accuracy by distance, and the last stage also on
#             documents for twice its context (extrapolation). A stage whose checkpoint exists is kept, so a
#             second call resumes the chain (COPY brings back the last stage of each run). Slope variants of
#             sparsek + window: sparsek-window-eps0.01, -eps0; and sparsek alone (K = 32, W = 0), fixed (blocks
#             of 32 and their summary columns), hash (64 buckets: about 64 keys a query at T = 4096) and
#             qktopk (exact top 16 by q . k, plus a window of 16). ONLY picks runs.
#   curriculum  the gap task in two stages: train on documents without a gap (every fact near, ~20 per
#             row: a dense signal to learn retrieval from), then finetune STEPS2 (default STEPS) steps on
#             the gap task; scored on the gap task
# Each run folder keeps config.json and metrics.jsonl; results.jsonl gathers one JSON line per
# evaluation. Model: 6 layers, width 384, 6 heads (HS = 64), same steps and batch for all.
# Environment: STEPS (default 300), BATCH (default 2), EXP_OUT (default runs/exp), COPY (a folder to copy
# the small outputs to, e.g. $OUT of the device tool); for a quick check elsewhere, DEVICE (cuda),
# MODEL (the model flags) and EVAL_T (the evaluation contexts of lm); ONLY (the run names to do, any
# part), LR (peak learning rate) and SEED (training seed) for all runs of the call; PARALLEL (how many
# runs train at once on the one GPU, default 1: these small models leave most of an H100 idle).
set -euo pipefail
part=${1:?usage: scripts/experiments.sh lm|slope|passkey|recall|gap|copy|induction|grow|curriculum}
steps=${STEPS:-300}
batch=${BATCH:-2}
out=${EXP_OUT:-runs/exp}
cli="node dist/cli.js"
model=${MODEL:---layers 6 --dim 384 --heads 6 --kv-heads 6 --context 4096}
device=${DEVICE:-cuda}
lm_contexts=${EVAL_T:-4096 8192 16384}
lr=${LR:+--lr $LR}
seed=${SEED:+--seed $SEED}
common="--batch $batch --steps $steps --device $device --quiet --eval-every 100 $lr $seed"
mkdir -p "$out"

# name, then the attention flags
lm_runs=(
  "dense|--attention dense"
  "window|--attention window --window 512"
  "fixed|--attention fixed --window 480"
  "hash|--attention hash --hash-buckets 4"
  "qktopk|--attention qktopk --k 256 --window 256"
  "sparsek|--attention sparsek --k 512 --window 0 --score-slope 0.05"
  "sparsek-window|--attention sparsek --k 256 --window 256 --score-slope 0.05"
)
slope_runs=(
  "sparsek-window-eps0|--attention sparsek --k 256 --window 256 --score-slope 0"
  "sparsek-window-eps0.01|--attention sparsek --k 256 --window 256 --score-slope 0.01"
  "sparsek-k128-w384|--attention sparsek --k 128 --window 384 --score-slope 0.05"
  "sparsek-k384-w128|--attention sparsek --k 384 --window 128 --score-slope 0.05"
)

record() { # name, then a JSON line from eval or passkey
  echo "{\"part\":\"$part\",\"run\":\"$1\",\"result\":$2}" | tee -a "$out/results.jsonl"
}

wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

parallel=${PARALLEL:-1}
spawn() { # runs "$@" in the background, keeping at most $parallel jobs running
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  "$@" &
}
finish() { # waits for every job; fails if any failed
  local failed=0
  for j in $(jobs -p); do wait "$j" || failed=1; done
  return $failed
}

train_and_eval() { # name, data flags, attention flags, eval contexts
  local name=$1 data=$2 flags=$3 contexts=$4 dir="$out/$part/$1"
  wanted "$name" || return 0
  rm -rf "$dir"
  local t0=$SECONDS
  $cli train $data $model $flags $common --out "$dir" | tail -1
  echo "# $name trained in $((SECONDS - t0)) s"
  for T in $contexts; do
    record "$name" "$($cli eval --checkpoint "$dir" --context "$T" --device "$device" | tail -1)"
  done
}

retrieval_one() { # task, eval flags, run name, attention flags
  train_and_eval "$3" "--data $out/$part-data --tokenizer byte" "$4" ""
  record "$3" "$(node --import tsx "scripts/$1.ts" eval --checkpoint "$out/$part/$3" $2 --device "$device" | tail -1)"
}

retrieval() { # task (scripts/TASK.ts), make flags, eval flags: byte-tokenizer corpus, every kind, the task's score
  local task=$1 make=$2 score=$3
  node --import tsx "scripts/$task.ts" make --out "$out/$part-data" $make
  for r in "${lm_runs[@]}"; do
    wanted "${r%%|*}" && spawn retrieval_one "$task" "$score" "${r%%|*}" "${r#*|}"
  done
  finish
}

curriculum_one() { # run name, attention flags: train on near facts, finetune on near and far, score both
  local name=$1 flags=$2 dir="$out/$part/$1"
  wanted "$name" || return 0
  rm -rf "$dir" "$dir-near"
  local t0=$SECONDS
  $cli train --data "$out/$part-near" --tokenizer byte $model $flags $common --out "$dir-near" | tail -1
  $cli finetune --checkpoint "$dir-near" --data "$out/$part-far" --batch $batch --steps ${STEPS2:-$steps} --device $device --quiet \
    --eval-every 100 $lr $seed --out "$dir" | tail -1
  echo "# $name trained in $((SECONDS - t0)) s"
  record "$name" "$(node --import tsx scripts/recall.ts eval --checkpoint "$dir" $recall_far --docs 100 --device "$device" | tail -1)"
}

induction_one() { # run name, attention flags: the copy task without a gap, then finetuned with gaps; scored after each
  local name=$1 flags=$2 dir="$out/$part/$1"
  wanted "$name" || return 0
  rm -rf "$dir" "$dir-near"
  local t0=$SECONDS
  $cli train --data "$out/$part-near" --tokenizer byte $model $flags $common --out "$dir-near" | tail -1
  record "$name-near" "$(node --import tsx scripts/recall.ts eval --checkpoint "$dir-near" $copy_near --docs 100 --device "$device" | tail -1)"
  $cli finetune --checkpoint "$dir-near" --data "$out/$part-far" --batch ${BATCH2:-$batch} --steps ${STEPS2:-$steps} --device $device --quiet \
    --eval-every 100 --lr ${LR2:-1e-3} ${CONTEXT2:+--context $CONTEXT2} $seed --out "$dir" | tail -1
  echo "# $name trained in $((SECONDS - t0)) s"
  record "$name" "$(node --import tsx scripts/recall.ts eval --checkpoint "$dir" $copy_far --docs 100 --device "$device" | tail -1)"
}

grow_runs=(
  "dense|--attention dense"
  "window|--attention window --window 32"
  "sparsek-window|--attention sparsek --k 16 --window 16 --score-slope 0.05"
  "sparsek-window-eps0.01|--attention sparsek --k 16 --window 16 --score-slope 0.01"
  "sparsek-window-eps0|--attention sparsek --k 16 --window 16 --score-slope 0"
  "sparsek|--attention sparsek --k 32 --window 0 --score-slope 0.01"
  "fixed|--attention fixed --window 32"
  "hash|--attention hash --hash-buckets 64"
  "qktopk|--attention qktopk --k 16 --window 16"
)
grow_gap() { echo $(( ($1 - 82) / 3 )); } # the longest filler that keeps 3 repeats of 12 letters within T

grow_one() { # run name, attention flags: stage 1 at T = 128, then every context of $grow_contexts
  local name=$1 flags=$2 dir="$out/$part/$1" prev T steps
  wanted "$name" || return 0
  local t0=$SECONDS
  if [ ! -f "$dir-1/config.json" ]; then
    rm -rf "$dir-1"
    $cli train --data "$out/$part-data/nogap" --tokenizer byte --layers 2 --dim 64 --heads 4 --kv-heads 4 --context 128 $flags \
      --batch 16 --steps $steps1 --lr 3e-3 --device $device --quiet --eval-every 200 $seed --out "$dir-1" | tail -1
  fi
  prev="$dir-1"
  set -- $grow_steps
  for T in $grow_contexts; do
    steps=$1; shift || true
    if [ ! -f "$dir-$T/config.json" ]; then
      rm -rf "$dir-$T"
      $cli finetune --checkpoint "$prev" --context $T --data "$out/$part-data/mix$T" --tokenizer byte \
        --batch $(( grow_tokens / T )) --steps $steps --lr $([ $T = 128 ] && echo 1e-3 || echo 5e-4) --device $device --quiet --eval-every 250 $seed --out "$dir-$T" | tail -1
      record "$name-$T" "$(node --import tsx scripts/recall.ts eval --checkpoint "$dir-$T" --task copy --length 4:12 --repeats 3 \
        --gap "0:$(grow_gap $T)" --docs 100 --near 32 --device "$device" | tail -1)"
      echo "# $name reached T = $T at $((SECONDS - t0)) s"
    fi
    prev="$dir-$T"
  done
  # length extrapolation: documents for twice the last context, whose far letters lie beyond any distance trained on
  record "$name-$T-at-$((2 * T))" "$(node --import tsx scripts/recall.ts eval --checkpoint "$prev" --task copy --length 4:12 --repeats 3 \
    --gap "0:$(grow_gap $((2 * T)))" --docs 100 --near 32 --device "$device" | tail -1)"
}

case "$part" in
  grow)
    grow_contexts=""
    for ((T = 128; T <= ${GROW_T:-4096}; T *= 2)); do grow_contexts="$grow_contexts $T"; done
    grow_steps=${GROW_STEPS:-400 600 1000 1500 2000 2500}
    grow_tokens=${GROW_TOKENS:-8192}
    steps1=${STEPS:-1200}
    mk() { node --import tsx scripts/recall.ts make --task copy --length "$1" --repeats "$2" --gap "$3" --docs "$4" --seed "$5" --out "$6" >/dev/null; }
    d="$out/$part-data"
    if [ ! -d "$d/mix128" ]; then
      # Each stage's mix: the gap-free documents and every stage's gapped documents up to its own.
      mk 4:16 4 0 40000 1 "$d/nogap"
      prev="$d/nogap"
      for T in $grow_contexts; do
        mkdir -p "$d/mix$T"
        cp -r "$prev"/* "$d/mix$T/"
        mk 4:12 3 "0:$(grow_gap $T)" 6000 $((10 + T / 128)) "$d/mix$T/g$T"
        prev="$d/mix$T"
      done
    fi
    for r in "${grow_runs[@]}"; do spawn grow_one "${r%%|*}" "${r#*|}"; done
    finish ;;
  lm)
    for r in "${lm_runs[@]}"; do spawn train_and_eval "${r%%|*}" "--data sotu --vocab 4096" "${r#*|}" "$lm_contexts"; done
    finish ;;
  slope)
    for r in "${slope_runs[@]}"; do spawn train_and_eval "${r%%|*}" "--data sotu --vocab 4096" "${r#*|}" "${lm_contexts%% *}"; done
    finish ;;
  passkey) retrieval passkey "--docs 3000 --length 3800 --seed 1" "--docs 100 --length 3800" ;;
  recall) retrieval recall "--docs 3000 --pairs 240 --seed 1" "--docs 20 --pairs 240" ;;
  gap) retrieval recall "--docs 12000 --pairs 32 --key-length 1 --style compact --gap 0:3400 --seed 1" "--docs 100 --pairs 32 --key-length 1 --style compact --gap 0:3400" ;;
  copy) retrieval recall "--task copy --length 32 --docs 12000 --gap 0:3600 --seed 1" "--task copy --length 32 --docs 100 --gap 0:3600" ;;
  induction)
    copy_near=${COPY_NEAR:---task copy --length 8:32 --repeats 4}
    mix_near=${MIX_NEAR:-$copy_near}
    copy_far="--task copy --length 8:32 --repeats 3 --gap 0:1500"
    node --import tsx scripts/recall.ts make --out "$out/$part-near" $copy_near --docs ${NEAR_DOCS:-40000} --seed 1
    node --import tsx scripts/recall.ts make --out "$out/$part-far/near" $mix_near --docs ${MIX_DOCS:-20000} --seed 2
    node --import tsx scripts/recall.ts make --out "$out/$part-far/gap" $copy_far --docs 12000 --seed 3
    for r in "${lm_runs[@]}"; do spawn induction_one "${r%%|*}" "${r#*|}"; done
    finish ;;
  curriculum)
    recall_far="--pairs 32 --key-length 1 --style compact --gap 0:3400"
    node --import tsx scripts/recall.ts make --out "$out/$part-near" --docs 20000 --pairs 32 --key-length 1 --style compact --gap 0 --seed 1
    node --import tsx scripts/recall.ts make --out "$out/$part-far" --docs 12000 $recall_far --seed 2
    for r in "${lm_runs[@]}"; do spawn curriculum_one "${r%%|*}" "${r#*|}"; done
    finish ;;
  *) echo "unknown part $part (lm, slope, passkey, recall, gap, copy, induction, grow or curriculum)" >&2; exit 2 ;;
esac

if [ -n "${COPY:-}" ]; then
  # One archive: the device tool brings back a handful of files, not a folder per run.
  mkdir -p "$COPY"
  if [ "$part" = grow ]; then # every stage's curves, and the last stage's checkpoints (small: a later call resumes from them)
    (cd "$out" && tar czf "$COPY/exp-$part.tgz" results.jsonl "$part"/*/config.json "$part"/*/metrics.jsonl \
      $(for r in "${grow_runs[@]}"; do ls -d "$part/${r%%|*}-"[0-9]* 2>/dev/null | sort -V | tail -1; done))
  else
    (cd "$out" && tar czf "$COPY/exp-$part.tgz" results.jsonl "$part"/*/config.json "$part"/*/metrics.jsonl)
  fi
fi
