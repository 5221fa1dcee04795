"""Where a Conv4 meta-step spends its time: forward+backward of each layer op, as the library
computes it (conv_impl=matmul and xla), on the query-pass shapes of 8 canonical tasks
(600 images). With --torch, the same ops in PyTorch for comparison (run by that python).

    python experiments/bench/op_timings.py
    /path/to/torch/python experiments/bench/op_timings.py --torch
"""
import argparse
import statistics
import time

SHAPES = [(600, 28, 1), (600, 14, 64)]   # (images, side, input channels) of conv layers 1 and 2


def timed(fn, repeats=8):
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def jax_rows():
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mmfsl_jax.nn.encoders.conv_ops import conv_same, max_pool_2x2

  def run(f, *args):
    f = jax.jit(f)
    return lambda: jax.block_until_ready(f(*args))

  rng = np.random.default_rng(0)
  for n, side, c_in in SHAPES:
    x = jnp.asarray(rng.normal(size=(n, side, side, c_in)), jnp.float32)
    h = jnp.asarray(rng.normal(size=(n, side, side, 64)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c_in, 64)) * 0.1, jnp.float32)
    for impl in ("matmul", "xla"):
      grad = jax.grad(lambda a, k: jnp.sum(conv_same(a, k, impl) ** 2), (0, 1))
      forward = run(lambda a, k: conv_same(a, k, impl), x, w)
      yield f"{side}x{side}x{c_in} conv ({impl}) fwd", timed(forward)
      yield f"{side}x{side}x{c_in} conv ({impl}) fwd+bwd", timed(run(grad, x, w))
      yield f"{side}x{side}x64 max-pool ({impl}) fwd+bwd", timed(run(
          jax.grad(lambda a: jnp.sum(max_pool_2x2(a, impl) ** 2)), h))


def torch_rows():
  import torch
  import torch.nn.functional as F
  for n, side, c_in in SHAPES:
    x = torch.randn(n, c_in, side, side, requires_grad=True)
    h = torch.randn(n, 64, side, side, requires_grad=True)
    w = (torch.randn(64, c_in, 3, 3) * 0.1).requires_grad_()
    yield f"{side}x{side}x{c_in} conv (torch) fwd", timed(lambda: F.conv2d(x, w, padding=1))
    yield f"{side}x{side}x{c_in} conv (torch) fwd+bwd", timed(
        lambda: torch.autograd.grad((F.conv2d(x, w, padding=1) ** 2).sum(), (x, w)))
    yield f"{side}x{side}x64 max-pool (torch) fwd+bwd", timed(
        lambda: torch.autograd.grad((F.max_pool2d(h, 2, ceil_mode=True) ** 2).sum(), h))


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--torch", action="store_true", help="time PyTorch's ops instead")
  args = parser.parse_args()
  for name, ms in (torch_rows() if args.torch else jax_rows()):
    print(f"{name:<36} {ms:9.1f} ms", flush=True)
