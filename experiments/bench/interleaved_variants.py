"""Several bench variants' meta-steps timed in turn in one process, so that the machine's
drift (10-30% within minutes on the 2-core machines) falls on all of them alike.

    python experiments/bench/interleaved_variants.py maml,fomaml,anil,protonet --rounds 4

Builds each variant's step, takes one step of each (compiling it), then times 3 steps of
each in turn, `rounds` times, and prints each round's medians and the median over rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax

from mmfsl_jax.bench import runner as bench
from mmfsl_jax.run.autotune import machine_name


def time_in_turn(entries: dict[str, list], rounds: int) -> None:
  """Times 3 steps of each entry ([step, state, batch, tasks a step], compiled) in turn,
  `rounds` times; prints each round's medians and the median over rounds."""
  medians = {name: [] for name in entries}
  for round_ in range(rounds):
    for name, entry in entries.items():
      step, state, batch, _ = entry
      times = []
      for _ in range(3):
        start = time.perf_counter()
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
      entry[1] = state
      medians[name].append(statistics.median(times))
    print(f"round {round_}: " + "  ".join(f"{n} {m[-1]:.3f} s" for n, m in medians.items()),
          flush=True)
  middle = {name: statistics.median(m) for name, m in medians.items()}
  print("median over rounds: " + "  ".join(
      f"{n} {t:.3f} s a step ({entries[n][3] / t:.2f} tasks/s)" for n, t in middle.items()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("variants", help="comma-separated bench variants")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("overrides", nargs="*", help="config overrides, dotted key=value")
  args = parser.parse_intermixed_args()
  names = args.variants.split(",")
  unknown = sorted(set(names) - set(bench.VARIANTS))
  if unknown:
    parser.error(f"unknown variants {unknown}; choose from {sorted(bench.VARIANTS)}")

  entries = {}
  for name in names:
    config, step, state, batch = bench.build_variant(name, args.overrides)
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    entries[name] = [step, state, batch, config.task.meta_batch]
  time_in_turn(entries, args.rounds)
  print(f"machine: {machine_name()}")


if __name__ == "__main__":
  main()
