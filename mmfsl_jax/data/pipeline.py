"""Task batches prepared ahead in a background thread, so the meta-step never waits on numpy."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

_DONE = object()


def prefetch(make_batch: Callable[[int], dict], start: int, stop: int,
             size: int = 2) -> Iterator[tuple[int, dict]]:
  """Yields (index, make_batch(index)) for index in [start, stop), `size` batches ahead.

  An exception in the producer is re-raised in the consumer; closing the iterator early
  stops the producer.
  """
  buffer: queue.Queue = queue.Queue(maxsize=size)
  stopped = threading.Event()

  def produce():
    try:
      for index in range(start, stop):
        item = (index, make_batch(index))
        while not stopped.is_set():
          try:
            buffer.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stopped.is_set():
          return
      buffer.put(_DONE)
    except BaseException as error:  # handed to the consumer, which re-raises it
      buffer.put(error)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = buffer.get()
      if item is _DONE:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stopped.set()


def measure_pipeline(config, *, batches: int = 20, warmup: int = 2) -> dict:
  """How fast the data pipeline alone produces meta-train task batches for `config`.

  Builds the splits (timed as "load_seconds"), the meta-train sampler as training does, with
  the config's augmentation (data/augment.py), then times `sample(i)` -- sampling, gathering
  and augmentation, one thread, i.e. the producer side of `prefetch` -- over `batches` batches
  after `warmup`. Returns tasks_per_second, batches_per_second, seconds_per_batch and the
  settings; the meta-step's consumption rate is measured separately.
  """
  import time

  from mmfsl_jax.run import config as config_lib
  from mmfsl_jax.data.augment import resolve_augment, wrap_train_sampler
  from mmfsl_jax.run.data import prepare_splits
  from mmfsl_jax.data.sampler import EpisodeSampler

  if batches < 1 or warmup < 0:
    raise ValueError(f"batches must be >= 1 and warmup >= 0, got {batches}, {warmup}")
  config_lib.validate(config)
  if config.smoke:
    config = config_lib.shrink_for_smoke(config)
  t0 = time.perf_counter()
  splits, _ = prepare_splits(config)
  load_seconds = time.perf_counter() - t0
  sampler = wrap_train_sampler(
      EpisodeSampler(splits["train"], n_way=config.n_way, k_shot=config.k_shot,
                     q_query=config.q_query, batch_size=config.meta_batch, seed=config.seed,
                     split_name="train"), config)
  for index in range(warmup):
    sampler.sample(index)
  t0 = time.perf_counter()
  for index in range(warmup, warmup + batches):
    sampler.sample(index)
  seconds = time.perf_counter() - t0
  return {"dataset": config.dataset, "augment": resolve_augment(config),
          "n_way": config.n_way, "k_shot": config.k_shot, "q_query": config.q_query,
          "meta_batch": config.meta_batch, "batches": batches,
          "batches_per_second": batches / seconds,
          "tasks_per_second": batches * config.meta_batch / seconds,
          "seconds_per_batch": seconds / batches, "load_seconds": load_seconds}
