"""The 2x2 max-pool's own derivative (conv_ops._window_max) against the max's autodiff rule,
on Conv4's first pool (80 images, 28x28x64), first and second order, interleaved in one
process.

    python experiments/bench/pool_rule_micro.py --rounds 15

Times grad (first order) and grad-of-grad (second order, as second-order MAML needs) of
sum(sin(pool(relu(x * s)))) for both forms, 5 calls a round, and prints the medians and the
largest difference between the two forms' second-order gradients (0 without ties).
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmfsl_jax.nn.encoders import conv_ops
from own_rule_ab import autodiff_pool
from mmfsl_jax.run.autotune import machine_name


def gradients(pool, v):
  loss = lambda x, s: jnp.sum(jnp.sin(pool(jax.nn.relu(x * s))))
  first = jax.jit(jax.grad(loss, argnums=(0, 1)))
  second = jax.jit(jax.grad(lambda x, s: jnp.vdot(jax.grad(loss)(x, s), v), argnums=(0, 1)))
  return first, second


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=15)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(80, 28, 28, 64)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(64,)), jnp.float32)
  v = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  forms = {"own rule": gradients(conv_ops.max_pool_2x2, v), "autodiff": gradients(autodiff_pool, v)}
  for first, second in forms.values():
    jax.block_until_ready((first(x, s), second(x, s)))
  for order, label in ((0, "first order"), (1, "second order")):
    times = {name: [] for name in forms}
    for _ in range(args.rounds):
      for name, fns in forms.items():
        start = time.perf_counter()
        for _ in range(5):
          out = fns[order](x, s)
        jax.block_until_ready(out)
        times[name].append((time.perf_counter() - start) / 5)
    medians = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    print(f"{label}: " + "  ".join(f"{n} {ms:.2f} ms" for n, ms in medians.items()))
  difference = jnp.max(jnp.abs(forms["own rule"][1](x, s)[0] - forms["autodiff"][1](x, s)[0]))
  print(f"largest second-order gradient difference: {float(difference):.3g}")
  print(f"machine: {machine_name()}")


if __name__ == "__main__":
  main()
