"""Stride-1 'SAME' convolution as one matrix product over image patches; 2x2 max-pool.

XLA's CPU convolution is fast forward but slow backward for small few-shot networks, and
under `jax.vmap` with per-task weights (every MAML task after its inner step) a convolution
becomes a grouped convolution, slower still. Written as patches @ kernel, the same layer is
a (batched) matrix product in every direction: forward, backward and the second-order terms
of MAML all run on the CPU's GEMM kernels, and the shared-weight first inner step of all
tasks folds into one large product.

`Conv` has nn.Conv's parameters (`kernel` [kh, kw, C_in, C_out], `bias` [C_out]) and
computes the same function; `impl="xla"` uses `lax.conv_general_dilated` instead.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLS = ("auto", "matmul", "xla")


def _check_choice(what: str, value: str, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
  return value


def resolve_impl(impl: str) -> str:
  """'auto' is 'matmul' on CPU and 'xla' on accelerators (whose convolutions are fast)."""
  if _check_choice("conv_impl", impl, IMPLS) == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


def _shifted_windows(x: jax.Array, kernel_size: Sequence[int]) -> list[jax.Array]:
  """kh*kw arrays [n, H, W, C], in (row offset, column offset) order: x shifted by each
  kernel offset, zero-padded 'SAME'."""
  kh, kw = kernel_size
  _, height, width, _ = x.shape
  top, left = (kh - 1) // 2, (kw - 1) // 2
  padded = jnp.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
  return [padded[:, i:i + height, j:j + width, :] for i in range(kh) for j in range(kw)]


def image_patches(x: jax.Array, kernel_size: Sequence[int]) -> jax.Array:
  """[n, H, W, C] -> [n, H, W, kh*kw*C]: each pixel's zero-padded kh x kw neighbourhood.

  The last axis is ordered (row offset, column offset, channel), the order of a
  [kh, kw, C, O] kernel reshaped to [kh*kw*C, O].
  """
  shifts = _shifted_windows(x, kernel_size)
  return shifts[0] if len(shifts) == 1 else jnp.concatenate(shifts, axis=-1)


def image_patches_transposed(x: jax.Array, kernel_size: Sequence[int]) -> jax.Array:
  """[n, H, W, C] -> [kh*kw*C, n*H*W]: `image_patches` with the patch axis first."""
  n, height, width, channels = x.shape
  shifts = jnp.stack(_shifted_windows(x, kernel_size))         # [kh*kw, n, H, W, C]
  return jnp.moveaxis(shifts, -1, 1).reshape(-1, n * height * width)


def _in_own_buffer(x: jax.Array) -> jax.Array:
  """x, computed into a buffer of its own rather than fused into its consumer.

  An identity `lax.cond` on a runtime predicate: XLA fuses neither across a conditional's
  boundary nor folds one it cannot decide, where an optimization barrier is expanded away
  before fusion. Both branches return x (x + 0 is x, NaN included), so the value never
  depends on the predicate. Under vmap the cond becomes a select, fused again: harmless.
  """
  return jax.lax.cond(jnp.isfinite(x.ravel()[0]), lambda v: v, lambda v: v + 0, x)


@jax.custom_vjp
def patch_product(patches: jax.Array, kernel: jax.Array) -> jax.Array:
  """patches [n, H, W, K] @ kernel [K, O] -> [n, H, W, O], with a kernel gradient shaped
  for the CPU's fast matrix-product kernels.

  Autodiff of the product asks for the kernel gradient as patches^T @ grad_out, a product
  contracting both operands' leading axes. XLA's CPU backend runs that form on its generic
  dot (about a third of the speed of its YNNPACK products), and transposes the output
  gradient for it in one pass fused with the batch-norm backward that produces it, which
  reads all of that pass's inputs strided. Here the kernel gradient is
  (grad_out^T @ patches)^T: grad_out is materialised first (`_in_own_buffer`), transposed on
  its own, and the transposes sit behind optimization barriers so that XLA does not fold
  them back into the product. The rule is differentiable again (second-order MAML
  differentiates it). experiments/bench/README.md has the measurements.
  """
  return patches @ kernel


def _patch_product_fwd(patches, kernel):
  return patches @ kernel, (patches, kernel)


def _patch_product_bwd(residuals, grad_out):
  patches, kernel = residuals
  barrier = jax.lax.optimization_barrier
  grad_patches = grad_out @ kernel.T
  grad_out_t = barrier(jnp.moveaxis(_in_own_buffer(grad_out), -1, 0))   # [O, n, H, W]
  grad_kernel_t = jax.lax.dot_general(grad_out_t, patches, (((1, 2, 3), (0, 1, 2)), ((), ())))
  return grad_patches, barrier(grad_kernel_t).T


patch_product.defvjp(_patch_product_fwd, _patch_product_bwd)


def conv_same(x: jax.Array, kernel: jax.Array, impl: str = "matmul") -> jax.Array:
  """Stride-1 'SAME' convolution: x [n, H, W, C], kernel [kh, kw, C, O] -> [n, H, W, O]."""
  if resolve_impl(impl) == "xla":
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  kh, kw, c_in, c_out = kernel.shape
  kernel = kernel.reshape(kh * kw * c_in, c_out)
  if kh * kw * c_in >= c_out:
    # [n, H, W, K] patches, not one [n*H*W, K] matrix: that ran a 600-image ProtoNet step
    # 8-11% faster, but XLA's CPU backend then computed a wrong first-layer kernel gradient
    # for 2 vmapped tasks on a 4-device host (experiments/bench/README.md).
    return patch_product(image_patches(x, (kh, kw)), kernel)
  # Narrow patches (a first layer on grey or RGB images): as [K, n*H*W], the kernel's
  # gradient is patches @ grad_out, a plain matrix product. From [n*H*W, K] patches, XLA's
  # CPU backend instead transposes the much wider output gradient, which took ~15% of a
  # Conv4 MAML step.
  n, height, width, _ = x.shape
  out = jax.lax.dot_general(image_patches_transposed(x, (kh, kw)), kernel,
                            (((0,), (0,)), ((), ())))
  return out.reshape(n, height, width, c_out)


POOL_MODES = ("same", "floor")


def check_pool_mode(mode: str) -> str:
  return _check_choice("pooling mode", mode, POOL_MODES)


def max_pool_2x2(x: jax.Array, impl: str = "matmul", mode: str = "same") -> jax.Array:
  """2x2 max-pool, stride 2: [n, H, W, C] -> [n, H', W', C].

  mode="same" pools an odd last row/column on its own (H' = ceil(H/2), TF/Flax 'SAME');
  mode="floor" drops it (H' = floor(H/2), PyTorch's MaxPool2d(2), flax 'VALID'): Conv4 on
  28x28 images then ends at 1x1x64 features instead of 2x2x64.

  Except with impl="xla" it is a reshape and a max, whose gradient is an elementwise
  select; XLA's CPU backend runs that about 2.5x faster than reduce_window's
  select_and_scatter. At ties the gradient goes to the first of the window's entries (row
  by row), as PyTorch's does; reduce_window's may pick another, an equally valid subgradient.
  """
  check_pool_mode(mode)
  if resolve_impl(impl) == "xla":
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME" if mode == "same" else "VALID")
  n, height, width, channels = x.shape
  if mode == "floor":
    if height < 2 or width < 2:
      raise ValueError(f"floor pooling needs at least 2x2 pixels, got {height}x{width}")
    x = x[:, :height - height % 2, :width - width % 2]
  elif height % 2 or width % 2:
    # Repeating the last row/column leaves every window's max unchanged, and its gradient
    # too (an entry comes before its copy in the window, so it wins their tie); -inf
    # padding made second-order MAML gradients NaN.
    x = jnp.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
  _, height, width, _ = x.shape
  return _window_max(x.reshape(n, height // 2, 2, width // 2, 2, channels))


def _window_entries(windows: jax.Array) -> tuple[jax.Array, ...]:
  """[n, H', 2, W', 2, C] -> the four [n, H', W', C] entries, row by row."""
  return tuple(windows[:, :, i, :, j] for i in (0, 1) for j in (0, 1))


@jax.custom_jvp
def _window_max(windows: jax.Array) -> jax.Array:
  """[n, H', 2, W', 2, C] -> [n, H', W', C]: the max of each 2x2 window.

  The derivative is its own: the max's own divides the tangent among the entries equal to
  the max, by their count, which is 0 (a NaN gradient) wherever the fused backward
  recomputes an entry and it comes out an ulp from the forward's (seen with XLA's CPU
  backend at --xla_backend_optimization_level=0). Here pairwise comparisons pick exactly
  one entry, the first of the largest (row by row, as PyTorch's); a NaN wins, as in the max.
  """
  return windows.max(axis=(2, 4))


@_window_max.defjvp
def _window_max_jvp(primals, tangents):
  (windows,), (dwindows,) = primals, tangents
  a, b, c, d = _window_entries(windows)
  wins = lambda x, y: (x >= y) | jnp.isnan(x)
  top_left, bottom_left = wins(a, b), wins(c, d)
  top_wins = wins(jnp.where(top_left, a, b), jnp.where(bottom_left, c, d))
  winner = jnp.where(top_wins, jnp.where(top_left, 0, 1), jnp.where(bottom_left, 2, 3))
  # The winner as a mask over the windows, and the tangent as a masked sum: one pass over
  # the windows each way, as the max's own rule (four strided selects ran MAML ~10% slower).
  position = 2 * jax.lax.broadcasted_iota(jnp.int8, (1, 1, 2, 1, 2, 1), 2) + \
      jax.lax.broadcasted_iota(jnp.int8, (1, 1, 2, 1, 2, 1), 4)
  chosen = position == winner.astype(jnp.int8)[:, :, None, :, None, :]
  tangent = jnp.where(chosen, dwindows, 0).sum(axis=(2, 4))
  return _window_max(windows), tangent   # itself again, so higher derivatives use this rule


INITS = ("lecun_normal", "torch")


def check_init(init: str) -> str:
  return _check_choice("convolution init", init, INITS)


def _torch_bias_init(fan_in: int):
  """PyTorch's Conv2d bias: uniform in +-1/sqrt(fan_in)."""
  def init(key, shape, dtype=jnp.float32):
    bound = fan_in ** -0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class Conv(nn.Module):
  """nn.Conv (stride 1, 'SAME', same parameter names) with a choice of implementation (see
  the module docstring) and of initialisers: init="lecun_normal" is nn.Conv's (lecun normal
  kernel, zero bias), init="torch" PyTorch's Conv2d default (kernel and bias uniform in
  +-1/sqrt(fan_in): its kaiming_uniform with a=sqrt(5)), for replicating PyTorch models."""
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  use_bias: bool = True
  impl: str = "auto"
  init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x):
    fan_in = self.kernel_size[0] * self.kernel_size[1] * x.shape[-1]
    torch_init = check_init(self.init) == "torch"
    kernel_init = (nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform") if torch_init
                   else nn.initializers.lecun_normal())
    kernel = self.param("kernel", kernel_init, (*self.kernel_size, x.shape[-1], self.features))
    y = conv_same(x, kernel.astype(x.dtype), self.impl)
    if self.use_bias:
      bias_init = _torch_bias_init(fan_in) if torch_init else nn.initializers.zeros
      y = y + self.param("bias", bias_init, (self.features,)).astype(x.dtype)
    return y
