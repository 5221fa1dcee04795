"""Memory of one MAML meta-step against inner steps, with and without `inner.checkpoint`.

    python experiments/bench/inner_memory.py [--steps 1 5 10] [--channels 64] [--method maml]
        [--conv-impl auto|matmul|xla]

Compiles (does not run) the jitted meta-step for Conv4 on 28x28x1 images, 5-way 1-shot,
15 queries per class, 4 tasks per meta-batch, second order, and prints XLA's memory
analysis of the compiled program: temporary buffers (activations kept for the backward
pass and workspace), and arguments + outputs (state and batch). Numbers are for the backend
it runs on (the CPU unless a GPU is visible).
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

from mmfsl_jax.nn import align

from mmfsl_jax.nn import fuse
from mmfsl_jax.nn.encoders import conv4
from mmfsl_jax.nn.encoders.conv_ops import IMPLS, resolve_impl
from mmfsl_jax.meta import InnerLoop, anil, init_train_state, make_meta_step, maml, metasgd
from mmfsl_jax.core.model import multimodal_model

N_WAY, K_SHOT, QUERIES, META_BATCH, SIZE = 5, 1, 15, 4, 28
LEARNERS = {"maml": maml, "metasgd": metasgd, "anil": anil}


def batch(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  split = lambda per_class: {
      "image": rng.random((META_BATCH, N_WAY * per_class, SIZE, SIZE, 1), np.float32),
      "label": np.tile(np.repeat(np.arange(N_WAY, dtype=np.int32), per_class), (META_BATCH, 1))}
  return {"support": split(K_SHOT), "query": split(QUERIES)}


def memory(method: str, steps: int, checkpoint: bool, channels: int, conv_impl: str) -> dict:
  model = multimodal_model({"image": conv4(channels, conv_impl=conv_impl)},
                           align.projections(("image",), 64),
                           fuse.weighted(("image",)))
  learner = LEARNERS[method](model, n_way=N_WAY,
                             inner=InnerLoop(steps=steps, checkpoint=checkpoint))
  optimizer = optax.adam(1e-3)
  tasks = batch()
  state = init_train_state(learner, optimizer, jax.tree_util.tree_map(lambda x: x[0], tasks), 0)
  t0 = time.time()
  # All tasks vmapped at once (not the CPU's default chunks of one), as when this table was made.
  compiled = make_meta_step(learner, optimizer, task_chunk=META_BATCH).lower(state, tasks).compile()
  stats = compiled.memory_analysis()
  return {"temp": stats.temp_size_in_bytes,
          "io": stats.argument_size_in_bytes + stats.output_size_in_bytes,
          "compile_s": time.time() - t0}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10])
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--method", choices=sorted(LEARNERS), default="maml")
  parser.add_argument("--conv-impl", choices=IMPLS, default="auto")
  args = parser.parse_args()
  mib = lambda b: f"{b / 2**20:.1f}"
  print(f"{args.method}, Conv4-{args.channels} "
        f"(model.image.conv_impl={resolve_impl(args.conv_impl)}), "
        f"{SIZE}x{SIZE}x1, {N_WAY}-way {K_SHOT}-shot, {QUERIES} queries, meta-batch "
        f"{META_BATCH}, backend {jax.default_backend()}, jax {jax.__version__}")
  print("| inner steps | inner.checkpoint | temp MiB | arguments + outputs MiB | compile s |")
  print("| --- | --- | --- | --- | --- |")
  for steps in args.steps:
    for checkpoint in (False, True):
      m = memory(args.method, steps, checkpoint, args.channels, args.conv_impl)
      print(f"| {steps} | {checkpoint} | {mib(m['temp'])} | {mib(m['io'])} | "
            f"{m['compile_s']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
