"""One of the library's own derivative rules against plain autodiff, on one bench variant's
whole meta-step, interleaved in one process.

    python experiments/bench/own_rule_ab.py protonet --rule kernel_grad --rounds 4
    python experiments/bench/own_rule_ab.py maml --rule pool --rounds 6

kernel_grad: the patch-matmul convolution's kernel-gradient rule (`conv_ops.patch_product`)
against a plain `patches @ kernel`. pool: the 2x2 max-pool's own derivative against a
reshape-and-max pool (the max's autodiff rule). Builds the variant's step with each, checks
both take the same first step, then times them in turn (interleaved_variants.py).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from interleaved_variants import time_in_turn
from mmfsl_jax.bench import runner as bench
from mmfsl_jax.nn.encoders import conv_ops, image
from mmfsl_jax.run.autotune import machine_name


def autodiff_pool(x, impl="matmul", mode="same"):
  """The pool as it was before its own derivative: 'same' padding, then a max."""
  n, height, width, channels = x.shape
  x = jnp.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
  return x.reshape(n, (height + 1) // 2, 2, (width + 1) // 2, 2, channels).max(axis=(2, 4))


# rule -> (module, attribute the step looks up when traced, the plain form)
RULES = {"kernel_grad": (conv_ops, "patch_product", lambda patches, kernel: patches @ kernel),
         "pool": (image, "max_pool_2x2", autodiff_pool)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("variant", choices=list(bench.VARIANTS))
  parser.add_argument("--rule", choices=list(RULES), default="kernel_grad")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("overrides", nargs="*", help="config overrides, dotted key=value")
  args = parser.parse_intermixed_args()

  module, attribute, plain = RULES[args.rule]
  library_rule = getattr(module, attribute)
  entries, first_losses = {}, {}
  for name, form in {"own rule": library_rule, "autodiff": plain}.items():
    setattr(module, attribute, form)
    try:
      config, step, state, batch = bench.build_variant(args.variant, args.overrides)
      state, metrics = step(state, batch)
      jax.block_until_ready(state)
    finally:
      setattr(module, attribute, library_rule)
    entries[name] = [step, state, batch, config.task.meta_batch]
    first_losses[name] = float(metrics["loss"])
  print(f"{args.variant}: first loss " + ", ".join(f"{n} {v:.6f}" for n, v in first_losses.items()))
  time_in_turn(entries, args.rounds)
  print(f"machine: {machine_name()}")


if __name__ == "__main__":
  main()
