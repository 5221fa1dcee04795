#!/usr/bin/env bash
# Your own data, end to end (README.md here has the figures). From the repository root, with
# mmfsl installed and, for the cross-domain part, scikit-learn (`pip install scikit-learn`):
#   bash experiments/own_data/run.sh [shapes|variation|digits|all]
# 1. shapes: the default model trained on the built-in set, and again on its export
#    (`mmfsl data export shapes`) read through data.name=files; both scored on 600 episodes.
# 2. variation: the built-in set with another seed; the text-only model on both.
# 3. digits: an Omniglot ProtoNet scored with `mmfsl eval --data` on scikit-learn's
#    handwritten digits (another source's handwriting, written to PNG by make_digits.py).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PART="${1:-all}"
MMFSL="${MMFSL:-mmfsl}"
PYTHON="${PYTHON:-python}"
OMNIGLOT="${MMFSL_OMNIGLOT_DIR:-../shared/data/omniglot}"

timed() {  # dir, command...: runs it, adds its seconds to dir/wall_time.json
  local dir="$1"; shift
  local t0=$(date +%s)
  "$@"
  local t1=$(date +%s)
  "$PYTHON" - "$dir/wall_time.json" "$*" $((t1 - t0)) <<'PY'
import json, os, sys
path, command, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = json.load(open(path)) if os.path.exists(path) else {"cores": os.cpu_count()}
times[command.split()[1] + (" " + command.split()[-1] if "--output" in command else "")] = seconds
json.dump(times, open(path, "w"), indent=1)
PY
}

if [[ "$PART" == shapes || "$PART" == all ]]; then
  builtin="$HERE/runs/shapes_builtin"
  if [[ ! -f "$builtin/eval.json" ]]; then
    timed "$builtin" $MMFSL train --workdir "$builtin" --no-progress
    timed "$builtin" $MMFSL eval --workdir "$builtin" --episodes 600
  fi
  export_dir="$HERE/data/shapes_export"
  [[ -f "$export_dir/manifest.csv" ]] || $MMFSL data export shapes "$export_dir"
  exported="$HERE/runs/shapes_from_export"
  if [[ ! -f "$exported/eval.json" ]]; then
    timed "$exported" $MMFSL train --workdir "$exported" --no-progress data.name=files \
      data.files.manifest="$export_dir/manifest.csv" data.files.split_column=split \
      data.image_size=32 "data.modalities=('image', 'text')" \
      data.files.class_texts="$export_dir/class_texts.csv"
    timed "$exported" $MMFSL eval --workdir "$exported" --episodes 600
  fi
fi

if [[ "$PART" == variation || "$PART" == all ]]; then
  # How far two runs of one model drift apart on their own: the built-in set with another seed;
  # and the text-only model on both (text is exported exactly: the runs must be identical).
  export_dir="$HERE/data/shapes_export"
  [[ -f "$export_dir/manifest.csv" ]] || $MMFSL data export shapes "$export_dir"
  FROM_EXPORT=(data.name=files data.files.manifest="$export_dir/manifest.csv"
               data.files.split_column=split data.image_size=32
               data.files.class_texts="$export_dir/class_texts.csv")
  declare -A RUNS=(
    [shapes_builtin_seed1]="seed=1"
    [shapes_text_builtin]="data.modalities=('text',)"
    [shapes_text_from_export]="data.modalities=('text',) ${FROM_EXPORT[*]}"
    [shapes_from_export_seed1]="seed=1 ${FROM_EXPORT[*]}"
  )
  for name in shapes_builtin_seed1 shapes_text_builtin shapes_text_from_export \
      shapes_from_export_seed1; do
    dir="$HERE/runs/$name"
    [[ -f "$dir/eval.json" ]] && continue
    read -ra overrides <<< "${RUNS[$name]}"
    timed "$dir" $MMFSL train --workdir "$dir" --no-progress "${overrides[@]}"
    timed "$dir" $MMFSL eval --workdir "$dir" --episodes 600
  done
fi

if [[ "$PART" == digits || "$PART" == all ]]; then
  [[ -f "$HERE/data/digits/manifest.csv" ]] || "$PYTHON" "$HERE/make_digits.py" "$HERE/data/digits"
  og="$HERE/runs/omniglot_protonet"
  # 20-way 1-shot ProtoNet on the Omniglot background alphabets, shortened to 600 steps
  # (experiments/omniglot's 'protonet' row is the same model at 500 steps).
  if [[ ! -f "$og/eval_5w1s.json" ]]; then
    timed "$og" $MMFSL train --config omniglot_protonet --workdir "$og" --no-progress \
      data.dir="$OMNIGLOT" task.n_way=20 task.k_shot=1 task.q_query=5 task.meta_batch=2 \
      run.num_steps=600 run.eval_every=300 run.checkpoint_every=300 run.val_episodes=100
    timed "$og" $MMFSL eval --workdir "$og" --episodes 600 --n-way 5 --k-shot 1 \
      --output eval_5w1s.json
  fi
  for shot in 1 5; do
    out="eval_digits_5w${shot}s.json"
    [[ -f "$og/$out" ]] || timed "$og" $MMFSL eval --workdir "$og" --episodes 600 --n-way 5 \
      --k-shot "$shot" --data "$HERE/data/digits/manifest.csv" --output "$out"
  done
fi
