#!/bin/bash
# XLA CPU flags against the canonical MAML step at meta-batch 8, interleaved rounds.
cd "$(dirname "$0")/../.."
FLAGS=(""
  "--xla_cpu_prefer_vector_width=512"
  "--xla_cpu_enable_fast_math=true"
  "--xla_cpu_enable_concurrency_optimized_scheduler=true"
  "--xla_cpu_use_thunk_runtime=false"
  "--xla_cpu_use_fusion_emitters=false")
git log --oneline | head -1; lscpu | grep "Model name"; date
for round in 1 2; do
  for f in "${FLAGS[@]}"; do
    line=$(XLA_FLAGS="$f" timeout 300 .venv/bin/python -m mmfsl_jax.cli bench --variants maml --iters 5 task.meta_batch=8 2>&1 | grep -E "^maml " || echo "FAILED")
    echo "round $round [${f:-default}] $line"
  done
done
date
