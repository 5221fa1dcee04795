#!/usr/bin/env bash
# Reproduces every row of README.md's table: trains and evaluates each model on the built-in
# "shapes" benchmark, one run after another, writing runs/<name>/{config.json, metrics.jsonl,
# eval.json, wall_time.json}. Usage: bash experiments/shapes/run.sh [name-filter-regex]
# (run from the repository root, with mmfsl installed). Then: python experiments/shapes/make_table.py
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
FILTER="${1:-.}"
MMFSL="${MMFSL:-mmfsl}"

# Shared settings for the table (the default config, but 600 meta-steps per run).
COMMON=(run.num_steps=600 run.eval_every=200 run.checkpoint_every=200 run.val_episodes=200)
PROTONET=(learner.name=protonet)
# MAML (second order, 1 inner step of lr 0.4, zero-initialised head) costs ~5x a ProtoNet step
# on the CPU, so it trains with 2 tasks per meta-batch: 600 steps at 1-shot, 300 at 5-shot.
MAML=(learner.name=maml inner.steps=1 inner.lr=0.4 task.meta_batch=2)

declare -A MODALITY=(
  [image]="data.modalities=('image',)"
  [text]="data.modalities=('text',)"
  [weighted]="data.modalities=('image','text') model.fuser=weighted"
  [gated]="data.modalities=('image','text') model.fuser=gated"
)

run() {  # name, overrides...
  local name="$1"; shift
  [[ "$name" =~ $FILTER ]] || return 0
  local dir="$HERE/runs/$name"
  if [[ -f "$dir/eval.json" ]]; then echo "skip $name (done)"; return 0; fi
  echo "== $name: $*"
  local t0=$(date +%s)
  $MMFSL train --workdir "$dir" --no-progress "$@"
  local t1=$(date +%s)
  $MMFSL eval --workdir "$dir" --episodes 600
  local t2=$(date +%s)
  printf '{"train_seconds": %d, "eval_seconds": %d, "cores": %d}\n' \
    $((t1 - t0)) $((t2 - t1)) "$(nproc)" > "$dir/wall_time.json"
}

for shot in 1 5; do
  for method in protonet maml; do
    for variant in image text weighted gated; do
      if [[ $method == protonet ]]; then extra=("${PROTONET[@]}"); else extra=("${MAML[@]}"); fi
      if [[ $method == maml && $shot == 5 ]]; then
        extra+=(run.num_steps=300 run.eval_every=100 run.checkpoint_every=100)
      fi
      # shellcheck disable=SC2206
      run "${method}_${variant}_${shot}shot" "${COMMON[@]}" "${extra[@]}" task.k_shot=$shot \
        ${MODALITY[$variant]}
    done
  done
done

# The rest of the method family, 1-shot, same tasks and encoders: image-only and gated fusion
# (AM3: image-only examples or gated fusion per example, plus each class's name as class-level
# text). Hyperparameters are the MAML rows' where they apply; not tuned. MAML++ costs about
# three MAML steps per step, so it trains 300 steps (like 5-shot MAML); inner.checkpoint would
# change its memory, not its results (same meta-gradient: tests/test_methods.py).
declare -A FAMILY=(
  [anil]="learner.name=anil inner.steps=1 inner.lr=0.4 task.meta_batch=2"
  [metasgd]="learner.name=metasgd inner.steps=1 inner.lr=0.4 task.meta_batch=2"
  [mamlpp]="learner.name=maml inner.steps=3 inner.lr=0.4 inner.per_step_lr=True \
    inner.multi_step_loss=True task.meta_batch=2 run.num_steps=300 run.eval_every=100 \
    run.checkpoint_every=100"
  [reptile]="learner.name=reptile inner.steps=5 inner.lr=0.1"
  [baselinepp]="learner.name=baselinepp learner.baselinepp.finetune_steps=100 \
    learner.baselinepp.finetune_lr=0.5"
  [am3]="learner.name=am3"
)
declare -A AM3_VARIANT=(
  [image]="data.modalities=('image','text') learner.am3.example_modalities=('image',)"
  [gated]="data.modalities=('image','text') model.fuser=gated"
)
for method in anil metasgd mamlpp reptile baselinepp am3; do
  for variant in image gated; do
    if [[ $method == am3 ]]; then mods=${AM3_VARIANT[$variant]}; else mods=${MODALITY[$variant]}; fi
    # shellcheck disable=SC2206
    run "${method}_${variant}_1shot" "${COMMON[@]}" ${FAMILY[$method]} task.k_shot=1 $mods
  done
done

# The seed objective (learner.support_loss_weight): ProtoNet, gated fusion, 1-shot, without it
# (weight 0: the protonet_gated_1shot row, rerun beside the other) and with weight 0.5.
for weight in 0 0.5; do
  # shellcheck disable=SC2206
  run "seedobj${weight/./}_protonet_gated_1shot" "${COMMON[@]}" "${PROTONET[@]}" task.k_shot=1 \
    ${MODALITY[gated]} learner.support_loss_weight=$weight
done
