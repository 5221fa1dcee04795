"""Image encoders: Conv4 and ResNet-12, as pure (init, apply) pairs.

Inputs are float images [n, H, W, C]; outputs are feature vectors [n, D].

Batch norm keeps no running averages, so nothing but parameters crosses the meta-learning
transforms. By default it uses the statistics of the batch it is given (the "transductive"
mode of MAML: a task's examples are normalised together). Inside `batch_stats_from(rows)`
every `BatchStatNorm` takes its statistics from the first `rows` examples of its batch only
and applies them to all of them: meta-learners encode [support; query] in one call under
`batch_stats_from(num_support)` for the "inductive" mode, in which each query is normalised
by support statistics and so classified independently of the other queries.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmfsl_jax.component import Component, from_linen
from mmfsl_jax.encoders.conv_ops import Conv, check_pool_mode, max_pool_2x2, resolve_impl


class BatchStatNorm(nn.Module):
  """Batch norm over all axes but the last, from the current batch's statistics only.

  x [n, ..., C]. `stats_rows=r` takes mean and variance from x[:r] alone (and normalises
  all n rows with them); None uses all n rows.
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, stats_rows: int | None = None):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,))
    bias = self.param("bias", nn.initializers.zeros, (features,))
    axes = tuple(range(x.ndim - 1))
    ref = x if stats_rows is None else x[:stats_rows]
    mean = jnp.mean(ref, axis=axes)
    var = jnp.mean(jnp.square(ref - mean), axis=axes)
    return (x - mean) * (scale * (var + self.epsilon) ** -0.5) + bias


@contextlib.contextmanager
def batch_stats_from(rows: int) -> Iterator[None]:
  """Within this context (at trace time), every BatchStatNorm uses `stats_rows=rows`.

  A Flax method interceptor, so the encoders need no extra argument; it only changes how the
  functions traced inside it compute, and holds no state beyond the `with` block.
  """
  if rows < 1:
    raise ValueError(f"batch statistics need at least one row, got rows={rows}")

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, BatchStatNorm) and context.method_name == "__call__":
      kwargs = {**kwargs, "stats_rows": rows}
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield


class Conv4(nn.Module):
  """`num_blocks` x [conv3x3-`channels`, batch norm, ReLU, 2x2 max-pool], then flatten.

  `conv_impl` chooses how convolutions and pooling are computed (conv_ops.IMPLS; same
  parameters and function either way); `pool` how an odd side is pooled (conv_ops.POOL_MODES:
  on 28x28 inputs "same" leaves 2x2x64 features, "floor" 1x1x64 as PyTorch's Conv4)."""
  channels: int = 64
  num_blocks: int = 4
  conv_impl: str = "auto"
  pool: str = "same"

  @nn.compact
  def __call__(self, x, train: bool = False):
    for _ in range(self.num_blocks):
      x = Conv(self.channels, (3, 3), impl=self.conv_impl)(x)
      x = nn.relu(BatchStatNorm()(x))
      x = max_pool_2x2(x, self.conv_impl, self.pool)
    return x.reshape(x.shape[0], -1)


class ResidualBlock12(nn.Module):
  """The ResNet-12 block: 3 x conv3x3 + BN (leaky ReLU between), 1x1 shortcut, max-pool."""
  channels: int
  conv_impl: str = "auto"
  pool: str = "same"

  @nn.compact
  def __call__(self, x):
    conv = lambda size: Conv(self.channels, size, use_bias=False, impl=self.conv_impl)
    shortcut = BatchStatNorm()(conv((1, 1))(x))
    h = x
    for i in range(3):
      h = BatchStatNorm()(conv((3, 3))(h))
      if i < 2:
        h = nn.leaky_relu(h, 0.1)
    h = nn.leaky_relu(h + shortcut, 0.1)
    return max_pool_2x2(h, self.conv_impl, self.pool)


class ResNet12(nn.Module):
  """Four residual blocks (widths `channels`) and global average pooling."""
  channels: Sequence[int] = (64, 160, 320, 640)
  conv_impl: str = "auto"
  pool: str = "same"

  @nn.compact
  def __call__(self, x, train: bool = False):
    for width in self.channels:
      x = ResidualBlock12(width, conv_impl=self.conv_impl, pool=self.pool)(x)
    return jnp.mean(x, axis=(1, 2))


def conv4(channels: int = 64, num_blocks: int = 4, conv_impl: str = "auto",
          pool: str = "same") -> Component:
  resolve_impl(conv_impl)  # fail at build time on an unknown name
  check_pool_mode(pool)
  return from_linen(Conv4(channels=channels, num_blocks=num_blocks, conv_impl=conv_impl,
                          pool=pool))


def resnet12(channels: Sequence[int] = (64, 160, 320, 640), conv_impl: str = "auto",
             pool: str = "same") -> Component:
  resolve_impl(conv_impl)  # fail at build time on an unknown name
  check_pool_mode(pool)
  return from_linen(ResNet12(channels=tuple(channels), conv_impl=conv_impl, pool=pool))
