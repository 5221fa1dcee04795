"""How fast the input pipeline alone makes meta-train task batches (`mmfsl data throughput`)."""
from __future__ import annotations

import time

from mmfsl_jax.run import build
from mmfsl_jax.run.data import prepare_splits, train_augmentation


def measure_pipeline(config, *, batches: int = 20, warmup: int = 2) -> dict:
  """How fast the data pipeline alone produces meta-train task batches for `config`.

  Builds the splits (timed as "load_seconds"), the meta-train sampler as training does, with
  the config's augmentation (data/augment.py), then times `sample(i)` -- sampling, gathering
  and augmentation, one thread, i.e. the producer side of `prefetch` -- over `batches` batches
  after `warmup`. Returns tasks_per_second, batches_per_second, seconds_per_batch and the
  settings; the meta-step's consumption rate is measured separately.
  """
  if batches < 1 or warmup < 0:
    raise ValueError(f"batches must be >= 1 and warmup >= 0, got {batches}, {warmup}")
  config = build.effective_config(config)
  t0 = time.perf_counter()
  splits, _ = prepare_splits(config)
  load_seconds = time.perf_counter() - t0
  sampler = build.task_sampler(config, splits["train"], role="train")
  for index in range(warmup):
    sampler.sample(index)
  t0 = time.perf_counter()
  for index in range(warmup, warmup + batches):
    sampler.sample(index)
  seconds = time.perf_counter() - t0
  task = config.task
  return {"dataset": config.data.name, "augment": train_augmentation(config),
          "n_way": task.n_way, "k_shot": task.k_shot, "q_query": task.q_query,
          "meta_batch": task.meta_batch, "batches": batches,
          "batches_per_second": batches / seconds,
          "tasks_per_second": batches * task.meta_batch / seconds,
          "seconds_per_batch": seconds / batches, "load_seconds": load_seconds}
