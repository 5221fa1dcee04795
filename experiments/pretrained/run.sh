#!/usr/bin/env bash
# Every row of README.md's table: the few-shot methods on frozen pretrained features
# (EfficientNet-Lite0 ImageNet weights for images, MiniLM for text; both offline), on the
# built-in shapes benchmark and on Omniglot, 5-way 1- and 5-shot, 600 test episodes.
# Usage (repository root, mmfsl installed): bash experiments/pretrained/run.sh [name-regex]
# Omniglot rows need the zips in $MMFSL_OMNIGLOT_DIR. Then: python experiments/pretrained/make_table.py
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
FILTER="${1:-.}"
MMFSL="${MMFSL:-mmfsl}"
export PYTHONUNBUFFERED=1   # train.log fills as the run goes

# Frozen EfficientNet-Lite0 at its own 224x224 input (the datasets' small images upsampled),
# features computed once per image and cached on disk; its head standardises them and the
# 64-d projection (model.embed_dim) is what meta-training fits.
PRETRAINED=(model.image.encoder=pretrained model.image.pretrained=efficientnet_lite0)
TEXT=(model.text.encoder=pretrained model.text.pretrained=minilm)
COMMON=(run.num_steps=600 run.eval_every=200 run.checkpoint_every=200 run.val_episodes=200)
IMAGE="data.modalities=('image',)"
BOTH="data.modalities=('image','text')"

run() {  # name, overrides...
  local name="$1"; shift
  [[ "$name" =~ $FILTER ]] || return 0
  local dir="$HERE/runs/$name"
  if [[ -f "$dir/eval.json" ]]; then echo "skip $name (done)"; return 0; fi
  echo "== $name: $*"
  mkdir -p "$dir"
  local t0=$(date +%s)
  $MMFSL train --workdir "$dir" --no-progress "$@" 2>&1 | tee "$dir/train.log" | grep -v '^{'
  local t1=$(date +%s)
  $MMFSL eval --workdir "$dir" --episodes 600 | tail -4
  local t2=$(date +%s)
  printf '{"train_seconds": %d, "eval_seconds": %d, "cores": %d}\n' \
    $((t1 - t0)) $((t2 - t1)) "$(nproc)" > "$dir/wall_time.json"
}

# shapes: image-only methods see images; the others also each class's text (its description)
# and, for fused ProtoNet, each example's caption.
declare -A SHAPES=(
  [protonet_image]="learner.name=protonet $IMAGE"
  [protonet_fused]="learner.name=protonet $BOTH model.fuser=weighted"
  [anil_image]="learner.name=anil inner.steps=1 inner.lr=0.4 task.meta_batch=2 $IMAGE"
  [linear_probe]="learner.name=linear_probe $IMAGE"
  [zeroshot]="learner.name=zeroshot $BOTH"
  [tip_adapter]="learner.name=tip_adapter $BOTH"
  [tip_adapter_f]="learner.name=tip_adapter_f $BOTH"
  [lp_plus_plus]="learner.name=lp_plus_plus $BOTH"
)
for shot in 1 5; do
  for method in protonet_image protonet_fused anil_image linear_probe zeroshot tip_adapter \
      tip_adapter_f lp_plus_plus; do
    # shellcheck disable=SC2206
    run "shapes_${method}_${shot}shot" "${PRETRAINED[@]}" "${TEXT[@]}" "${COMMON[@]}" \
      task.k_shot=$shot ${SHAPES[$method]}
  done
done

# Omniglot (image only, no text): 5-way, the default alphabets split, rotations as classes.
declare -A OMNIGLOT=(
  [protonet]="learner.name=protonet"
  [anil]="learner.name=anil inner.steps=1 inner.lr=0.4 task.meta_batch=2"
  [linear_probe]="learner.name=linear_probe"
)
for shot in 1 5; do
  for method in protonet anil linear_probe; do
    # shellcheck disable=SC2206
    run "omniglot_${method}_${shot}shot" "${PRETRAINED[@]}" "${COMMON[@]}" data.name=omniglot \
      "$IMAGE" task.k_shot=$shot ${OMNIGLOT[$method]}
  done
done
