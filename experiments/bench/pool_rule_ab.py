"""The 2x2 max-pool's own derivative against the max's autodiff rule, on one bench
variant's whole meta-step, interleaved in one process.

    python experiments/bench/pool_rule_ab.py maml --rounds 6

Builds the variant's step twice, with the library's `max_pool_2x2` and with a
reshape-and-max pool in its place, checks both take the same first step, then times 3
steps of each in turn, `rounds` times, and prints each round's medians.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from mmfsl_jax.bench import runner as bench
from mmfsl_jax.nn.encoders import image
from mmfsl_jax.run.autotune import machine_name


def autodiff_pool(x, impl="matmul", mode="same"):
  """The pool as it was before its own derivative: 'same' padding, then a max."""
  n, height, width, channels = x.shape
  x = jnp.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
  return x.reshape(n, (height + 1) // 2, 2, (width + 1) // 2, 2, channels).max(axis=(2, 4))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("variant", choices=list(bench.VARIANTS))
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("overrides", nargs="*", help="config overrides, dotted key=value")
  args = parser.parse_intermixed_args()

  library_rule = image.max_pool_2x2
  forms = {"own rule": library_rule, "autodiff": autodiff_pool}
  steps, first_losses = {}, {}
  for name, product in forms.items():
    image.max_pool_2x2 = product     # Conv4 looks it up when the step is traced
    try:
      _, step, state, batch = bench.build_variant(args.variant, args.overrides)
      state, metrics = step(state, batch)
      jax.block_until_ready(state)
    finally:
      image.max_pool_2x2 = library_rule
    steps[name] = [step, state, batch]
    first_losses[name] = float(metrics["loss"])
  print(f"{args.variant}: first loss " + ", ".join(f"{n} {v:.6f}" for n, v in first_losses.items()))
  meta_batch = bench.variant_config(args.variant, args.overrides).task.meta_batch
  medians = {name: [] for name in forms}
  for round_ in range(args.rounds):
    for name, entry in steps.items():
      step, state, batch = entry
      times = []
      for _ in range(3):
        start = time.perf_counter()
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
      entry[1] = state
      medians[name].append(statistics.median(times))
    print(f"round {round_}: " + "  ".join(f"{n} {medians[n][-1]:.3f} s" for n in forms), flush=True)
  print("median over rounds: " + "  ".join(
      f"{n} {statistics.median(m):.3f} s a step ({meta_batch / statistics.median(m):.2f} tasks/s)"
      for n, m in medians.items()))
  print(f"machine: {machine_name()}")


if __name__ == "__main__":
  main()
