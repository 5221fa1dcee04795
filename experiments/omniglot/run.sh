#!/usr/bin/env bash
# Trains and evaluates every model of README.md's table on real Omniglot (the zips of
# ../shared/data/omniglot, or $MMFSL_OMNIGLOT_DIR), one run after another, writing
# runs/<name>/{config.json, metrics.jsonl, eval_<N>w<K>s[_<S>step].json, eval_runs[_<S>step].json,
# wall_time.json}. Usage: bash experiments/omniglot/run.sh [--evaluate] [name-filter-regex]
# (from the repository root, with mmfsl installed; --evaluate: only the evaluations missing
# from finished runs). Then: python experiments/omniglot/make_table.py
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
FILTER="${1:-.}"
[[ "${1:-}" == --evaluate ]] && EVAL_ONLY=1 FILTER="${2:-.}"  # evaluations missing from done runs
MMFSL="${MMFSL:-mmfsl}"
DATA="${MMFSL_OMNIGLOT_DIR:-$HERE/../../../shared/data/omniglot}"
EPISODES=600

output_name() {  # NwKs[:S] or runs[:S] -> eval_NwKs[_Sstep].json; runs:population -> eval_runs_population.json
  local what="${1%%:*}" suffix=""
  [[ $1 == *:population ]] && suffix="_population"
  [[ $1 == *:[0-9]* ]] && suffix="_${1#*:}step"
  echo "eval_${what}${suffix}.json"
}

evaluate() {  # dir, what: NwKs or "runs", optionally ":S" for S test-time inner steps or
  #             ":population" for the training population's batch-norm moments
  local dir="$1" what="${2%%:*}" flags=()
  [[ $2 == *:population ]] && flags=(--batch-norm population)
  [[ $2 == *:[0-9]* ]] && flags=(--inner-steps "${2#*:}")
  if [[ $what == runs ]]; then
    $MMFSL eval --workdir "$dir" --benchmark omniglot-runs "${flags[@]}" --output "$(output_name "$2")"
  else
    local n="${what%%w*}" k="${what#*w}"; k="${k%s}"
    $MMFSL eval --workdir "$dir" --episodes $EPISODES --n-way "$n" --k-shot "$k" "${flags[@]}" \
      --output "$(output_name "$2")"
  fi
}

run() {  # name, config, "evals", overrides...   evals: space-separated, as evaluate() takes
  local name="$1" config="$2" evals="$3"; shift 3
  [[ "$name" =~ $FILTER ]] || return 0
  local dir="$HERE/runs/$name"
  if [[ -f "$dir/wall_time.json" ]]; then
    if [[ -z "${EVAL_ONLY:-}" ]]; then echo "skip $name (done)"; return 0; fi
    for e in $evals; do [[ -f "$dir/$(output_name "$e")" ]] || evaluate "$dir" "$e"; done
    return 0
  fi
  [[ -n "${EVAL_ONLY:-}" ]] && return 0   # not trained yet: nothing to evaluate
  echo "== $name: --config $config $*"
  local t0=$(date +%s)
  $MMFSL train --config "$config" --workdir "$dir" --no-progress "data.dir=$DATA" "$@"
  local t1=$(date +%s)
  for e in $evals; do evaluate "$dir" "$e"; done
  local t2=$(date +%s)
  printf '{"train_seconds": %d, "eval_seconds": %d, "cores": %d}\n' \
    $((t1 - t0)) $((t2 - t1)) "$(nproc)" > "$dir/wall_time.json"
}

# ProtoNet: one model, trained 20-way 1-shot (5 queries, 2 tasks per step), evaluated at
# every setting; ProtoNet classifies any way and shot. 500 steps: what fitted on 2 shared cores.
run protonet omniglot_protonet "5w1s 5w5s 20w1s runs" task.n_way=20 task.k_shot=1 task.q_query=5 \
  task.meta_batch=2 run.num_steps=500 run.eval_every=250 run.checkpoint_every=250
# ProtoNet again, for the 20 runs: 600 images a step, as the PyTorch peer's 60-way 5-shot
# episodes (../shared/peers), as 3 tasks of 20-way 5-shot with 5 queries (run before
# eval.n_way existed, when 60-way training meant 60-way validation); 800 steps, for the CPU time left.
run protonet_20way5shot omniglot_protonet "runs 20w1s 5w1s 5w5s" task.n_way=20 task.k_shot=5 \
  task.q_query=5 task.meta_batch=3 run.num_steps=800 run.eval_every=200 run.checkpoint_every=200
# Snell et al.'s training episodes, as the PyTorch peer's: 60-way 5-shot with 5 queries (600
# images a step), validated 20-way 1-shot (eval.n_way, eval.k_shot: Early_Aramaic has 22
# characters); 2000 steps, as many as the peer's episodes, at a constant learning rate (the
# peer halves it every 500).
run protonet_60way5shot omniglot_protonet "runs 20w1s 5w1s 5w5s" task.n_way=60 task.k_shot=5 \
  task.q_query=5 task.meta_batch=1 eval.n_way=20 eval.k_shot=1 run.num_steps=2000 \
  run.eval_every=500 run.checkpoint_every=500
# The same with the peer's learning-rate schedule (halved every 500 episodes): one change.
run protonet_60way5shot_steplr omniglot_protonet "runs 20w1s 5w1s 5w5s" task.n_way=60 \
  task.k_shot=5 task.q_query=5 task.meta_batch=1 eval.n_way=20 eval.k_shot=1 run.num_steps=2000 \
  run.eval_every=500 run.checkpoint_every=500 optim.schedule=step optim.decay_every=500 \
  optim.decay_factor=0.5
# The peer's protocol whole: its schedule and all 8 background alphabets (no validation or
# test alphabets; the last checkpoint is scored on the one-shot runs).
run protonet_60way5shot_allalphabets omniglot_protonet "runs" task.n_way=60 task.k_shot=5 \
  task.q_query=5 task.meta_batch=1 run.num_steps=2000 run.checkpoint_every=500 optim.schedule=step \
  optim.decay_every=500 optim.decay_factor=0.5 run.val_episodes=0 'data.omniglot.val_alphabets=()' \
  'data.omniglot.test_alphabets=()'
# ... and no projection after Conv4's features (2x2x64 = 256 of them: 'SAME' pooling).
run protonet_60way5shot_allalphabets_noproj omniglot_protonet "runs runs:population" task.n_way=60 \
  task.k_shot=5 task.q_query=5 task.meta_batch=1 run.num_steps=2000 run.checkpoint_every=500 \
  optim.schedule=step optim.decay_every=500 optim.decay_factor=0.5 run.val_episodes=0 \
  'data.omniglot.val_alphabets=()' 'data.omniglot.test_alphabets=()' model.embed_dim=0
# ... again with another seed (initialisation and episodes), beside the peer's own seed 1.
run protonet_60way5shot_allalphabets_noproj_seed1 omniglot_protonet "runs runs:population" \
  task.n_way=60 task.k_shot=5 task.q_query=5 task.meta_batch=1 run.num_steps=2000 \
  run.checkpoint_every=500 optim.schedule=step optim.decay_every=500 optim.decay_factor=0.5 \
  run.val_episodes=0 'data.omniglot.val_alphabets=()' 'data.omniglot.test_alphabets=()' \
  model.embed_dim=0 seed=1
# ... and the peer's pooling: PyTorch's MaxPool2d(2) drops an odd last row (28-14-7-3-1), so
# its Conv4 ends at 64 features, where 'SAME' pooling (28-14-7-4-2) leaves 256.
run protonet_60way5shot_allalphabets_noproj_floorpool omniglot_protonet "runs runs:population" \
  task.n_way=60 task.k_shot=5 task.q_query=5 task.meta_batch=1 run.num_steps=2000 \
  run.checkpoint_every=500 optim.schedule=step optim.decay_every=500 optim.decay_factor=0.5 \
  run.val_episodes=0 'data.omniglot.val_alphabets=()' 'data.omniglot.test_alphabets=()' \
  model.embed_dim=0 model.image.pool=floor
# ... and the peer's downsampling of the 105x105 drawings: PIL's bilinear filter, not a box.
run protonet_60way5shot_allalphabets_noproj_floorpool_bilinear omniglot_protonet \
  "runs runs:population" task.n_way=60 task.k_shot=5 task.q_query=5 task.meta_batch=1 \
  run.num_steps=2000 run.checkpoint_every=500 optim.schedule=step optim.decay_every=500 \
  optim.decay_factor=0.5 run.val_episodes=0 'data.omniglot.val_alphabets=()' \
  'data.omniglot.test_alphabets=()' model.embed_dim=0 model.image.pool=floor \
  data.omniglot.resize=bilinear
# ... and PyTorch's initialisation of the convolutions (kernel and bias uniform in
# +-1/sqrt(fan_in), where Flax draws the kernel lecun-normal, sqrt(3) times wider, and zeros
# the bias; with batch norm after each convolution the kernel's scale sets Adam's relative step).
run protonet_60way5shot_allalphabets_noproj_floorpool_bilinear_torchinit omniglot_protonet \
  "runs runs:population" task.n_way=60 task.k_shot=5 task.q_query=5 task.meta_batch=1 \
  run.num_steps=2000 run.checkpoint_every=500 optim.schedule=step optim.decay_every=500 \
  optim.decay_factor=0.5 run.val_episodes=0 'data.omniglot.val_alphabets=()' \
  'data.omniglot.test_alphabets=()' model.embed_dim=0 model.image.pool=floor \
  data.omniglot.resize=bilinear model.image.init=torch
# ... again with seed 1 (initialisation and episodes), as the peer was rerun.
run protonet_60way5shot_allalphabets_noproj_floorpool_bilinear_torchinit_seed1 omniglot_protonet \
  "runs runs:population" task.n_way=60 task.k_shot=5 task.q_query=5 task.meta_batch=1 \
  run.num_steps=2000 run.checkpoint_every=500 optim.schedule=step optim.decay_every=500 \
  optim.decay_factor=0.5 run.val_episodes=0 'data.omniglot.val_alphabets=()' \
  'data.omniglot.test_alphabets=()' model.embed_dim=0 model.image.pool=floor \
  data.omniglot.resize=bilinear model.image.init=torch seed=1
# MAML and first-order MAML (Finn et al.'s inner rate 0.4, 1 step in training; tested with
# their 3 steps, the config's inner.eval_steps, and with the training's 1):
# a 5-way model (evaluated at 1 and 5 shots) and a 20-way one (20-way 1-shot and the runs;
# 500 steps of 4 tasks, each ~2x a 5-way step's cost: what fitted on 2 shared cores; the run
# was stopped with SIGTERM at step 507 and resumed with run.num_steps=500, which ended it there).
run maml_5way omniglot_maml "5w1s 5w5s 5w1s:1 5w5s:1" task.n_way=5 task.k_shot=1 task.meta_batch=8 \
  run.num_steps=1000 run.eval_every=250 run.checkpoint_every=250
run maml_20way omniglot_maml "20w1s runs 20w1s:1 runs:1" task.n_way=20 task.k_shot=1 \
  task.meta_batch=4 run.num_steps=500 run.eval_every=250 run.checkpoint_every=250
# First-order MAML diverged at inner.lr=0.4 (5-way: training accuracy 71% at step 50, 32% at
# step 200, the pre-adaptation support loss rising from 1.6 to 11.8), so it runs at 0.1; and
# shorter (500 and 300 steps), for the CPU time left.
run fomaml_5way omniglot_maml "5w1s 5w5s 5w1s:1 5w5s:1" inner.first_order=True inner.lr=0.1 \
  task.n_way=5 task.k_shot=1 task.meta_batch=8 run.num_steps=500 run.eval_every=250 \
  run.checkpoint_every=250
run fomaml_20way omniglot_maml "20w1s runs runs:1" inner.first_order=True inner.lr=0.1 \
  task.n_way=20 task.k_shot=1 task.meta_batch=4 run.num_steps=300 run.eval_every=150 \
  run.checkpoint_every=150
# The "zeroing trick" (learner.zero_head=True: every task starts from a zero head, which is not
# meta-learned; see mmfsl_jax/meta/maml.py) at Finn et al.'s inner rate 0.4, where the
# meta-learned head diverged:
run fomaml_zerohead_5way omniglot_maml "5w1s 5w5s 5w1s:1 5w5s:1" inner.first_order=True \
  learner.zero_head=True task.n_way=5 task.k_shot=1 task.meta_batch=8 run.num_steps=500 \
  run.eval_every=250 run.checkpoint_every=250
run fomaml_zerohead_20way omniglot_maml "20w1s runs 20w1s:1 runs:1" inner.first_order=True \
  learner.zero_head=True task.n_way=20 task.k_shot=1 task.meta_batch=4 run.num_steps=300 \
  run.eval_every=150 run.checkpoint_every=150
# The rest of the method family (a row per method), 5-way 1-shot training, the budget of
# first-order MAML's rows (500 steps of 8 tasks), Finn et al.'s inner rate where one applies;
# not tuned. AM3 has no row: Omniglot has no class-level text.
FAMILY_5WAY=(task.n_way=5 task.k_shot=1 task.meta_batch=8 run.num_steps=500 run.eval_every=250
             run.checkpoint_every=250)
run anil_5way omniglot_maml "5w1s 5w5s 5w1s:1 5w5s:1" learner.name=anil "${FAMILY_5WAY[@]}"
run baselinepp_5way omniglot_protonet "5w1s 5w5s" learner.name=baselinepp "${FAMILY_5WAY[@]}"
# (Meta-SGD at 1 test step only, the number MAML's validation-alphabet check chose; CPU time)
run metasgd_5way omniglot_maml "5w1s:1 5w5s:1" learner.name=metasgd "${FAMILY_5WAY[@]}"
# (Reptile was stopped with SIGTERM at step 256 for CPU time, and later resumed from that
# checkpoint by rerunning this row without its wall_time.json; wall_time.json records both.)
run reptile_5way omniglot_maml "5w1s 5w5s" learner.name=reptile inner.steps=5 inner.lr=0.1 \
  inner.eval_steps=0 "${FAMILY_5WAY[@]}"
# (MAML++: 300 steps, as on shapes: each step costs about 3 of MAML's, 3 second-order inner steps)
run mamlpp_5way omniglot_maml "5w1s 5w5s" learner.name=maml inner.steps=3 inner.per_step_lr=True \
  inner.multi_step_loss=True inner.eval_steps=0 "${FAMILY_5WAY[@]}" run.num_steps=300 \
  run.eval_every=150 run.checkpoint_every=150
