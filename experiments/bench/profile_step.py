"""Where one bench variant's meta-step spends its time, per XLA operation (jax profiler).

    python experiments/bench/profile_step.py maml --meta-batch 8 run.task_chunk=1

Compiles the variant's step (`mmfsl_jax.bench.runner.build_variant`), runs a warm-up step and one
timed step, then profiles one more and prints the operations that took longest (summed over
scan iterations) with their output shapes, and the totals by kind of operation. Times under
the profiler are a little higher than unprofiled ones.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax

from mmfsl_jax.bench import runner as bench


def op_times(trace_dir: Path) -> collections.Counter:
  """Microseconds per operation name in a perfetto trace written by jax.profiler."""
  trace = next(trace_dir.rglob("*.json.gz"))
  events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
  times = collections.Counter()
  for event in events:
    if event.get("ph") == "X":
      times[event["name"]] += event["dur"]
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("variant", choices=list(bench.VARIANTS))
  parser.add_argument("--meta-batch", type=int, default=8)
  parser.add_argument("--top", type=int, default=30)
  parser.add_argument("overrides", nargs="*",
                      help="config overrides, dotted key=value (run.task_chunk=1)")
  args = parser.parse_intermixed_args()

  _, step, state, batch = bench.build_variant(
      args.variant, [f"task.meta_batch={args.meta_batch}", *args.overrides])
  shapes = {m.group(1): m.group(2) for m in re.finditer(
      r"^\s*%?([\w.\-]+) = (\S+) ", step.lower(state, batch).compile().as_text(), re.M)}
  state, _ = step(state, batch)
  jax.block_until_ready(state)
  start = time.perf_counter()
  state, _ = step(state, batch)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  print(f"{args.variant}: {seconds:.3f} s a step, {args.meta_batch / seconds:.2f} tasks/s")

  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      state, _ = step(state, batch)
      jax.block_until_ready(state)
    times = op_times(Path(trace_dir))
  ops = collections.Counter({name: t for name, t in times.items() if name in shapes})
  print(f"XLA operations: {sum(ops.values()) / 1e3:.1f} ms in all")
  for name, t in ops.most_common(args.top):
    print(f"{t / 1e3:9.1f} ms  {name:32s} {shapes[name][:70]}")
  kinds = collections.Counter()
  for name, t in ops.items():
    kinds[re.sub(r"\.\d+$", "", name)] += t
  print("by kind:")
  for kind, t in kinds.most_common(12):
    print(f"{t / 1e3:9.1f} ms  {kind}")


if __name__ == "__main__":
  main()
