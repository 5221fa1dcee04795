"""EfficientNet-Lite0's features on a CPU with its depthwise convolutions as strided-slice
sums (the library's choice on CPUs) against XLA's grouped convolution, in one process.

    python experiments/bench/depthwise_speed.py [--batch 16] [--rounds 5]

Prints the median seconds of one jitted forward pass over `batch` 224x224 images each way,
the rounds interleaved, and their ratio.
"""
import argparse
import functools
import statistics
import time

import jax
import numpy as np

from mmfsl_jax.nn.encoders import efficientnet_lite as lite
from mmfsl_jax.run.autotune import machine_name


def forward(impl: str, params, images):
  """A jitted forward pass whose depthwise convolutions use `impl`."""
  original = lite.depthwise_conv
  lite.depthwise_conv = functools.partial(original, impl=impl)
  try:
    module = lite.EfficientNetLite0(output="features")
    apply = jax.jit(lambda p, x: module.apply({"params": p}, lite.preprocess(x)))
    jax.block_until_ready(apply(params, images))   # compiled with the patched function
  finally:
    lite.depthwise_conv = original
  return apply


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  params = lite.load_efficientnet_lite0()
  images = np.random.default_rng(0).random((args.batch, 224, 224, 3)).astype(np.float32)
  applies = {impl: forward(impl, params, images) for impl in ("shifted", "xla")}
  outputs = {impl: np.asarray(f(params, images)) for impl, f in applies.items()}
  times = {impl: [] for impl in applies}
  for _ in range(args.rounds):
    for impl, f in applies.items():
      start = time.perf_counter()
      jax.block_until_ready(f(params, images))
      times[impl].append(time.perf_counter() - start)
  shifted, xla = (statistics.median(times[i]) for i in ("shifted", "xla"))
  print(f"{machine_name()}: {args.batch} images at 224x224, median of {args.rounds}: "
        f"shifted {shifted:.3f} s, xla {xla:.3f} s, ratio {xla / shifted:.2f}x; largest "
        f"feature difference {np.abs(outputs['shifted'] - outputs['xla']).max():.2e}")


if __name__ == "__main__":
  main()
