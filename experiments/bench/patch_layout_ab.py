"""A/B of conv_ops.conv_same's patch product as one [n*H*W, K] matrix (the library's) against
the [n, H, W, K] patches it replaced, interleaved in one process so the machine's drift hits
both.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python experiments/bench/patch_layout_ab.py \\
        protonet --meta-batch 1 --rounds 8 n_way=60 k_shot=5 q_query=5

Builds the variant's step twice (the second with the earlier form traced in), checks that
their first losses agree, then times 3 steps of each per round (median) for `--rounds` rounds.
"""
import argparse
import time

import jax

from mmfsl_jax import bench
from mmfsl_jax.encoders import conv_ops


def conv_same_4d_patches(x, kernel, impl="matmul"):
  """conv_same before: wide patches multiplied as [n, H, W, K] @ [K, O]."""
  kh, kw, c_in, c_out = kernel.shape
  if conv_ops.resolve_impl(impl) == "matmul" and kh * kw * c_in >= c_out:
    return conv_ops.image_patches(x, (kh, kw)) @ kernel.reshape(kh * kw * c_in, c_out)
  return library_conv_same(x, kernel, impl)


library_conv_same = conv_ops.conv_same


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("variant", choices=list(bench.VARIANTS))
  parser.add_argument("--meta-batch", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
  args = parser.parse_intermixed_args()

  runs = {}
  for name, conv_same in {"[n*H*W, K]": library_conv_same,
                          "[n, H, W, K]": conv_same_4d_patches}.items():
    conv_ops.conv_same = conv_same   # read when the step is traced, below
    _, step, state, batch = bench.build_variant(
        args.variant, [f"meta_batch={args.meta_batch}", *args.overrides])
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    print(f"{name}: first loss {float(metrics['loss']):.10f}", flush=True)
    runs[name] = [step, state, batch]
  conv_ops.conv_same = library_conv_same

  for round_ in range(args.rounds):
    for name, run in runs.items():
      step, state, batch = run
      times = []
      for _ in range(3):
        start = time.perf_counter()
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
      run[1] = state
      print(f"round {round_} {name:<12}: {sorted(times)[1]:.3f} s a step", flush=True)


if __name__ == "__main__":
  main()
