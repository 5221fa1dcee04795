"""Image encoders: Conv4 and ResNet-12, as pure (init, apply) pairs.

Inputs are float images [n, H, W, C]; outputs are feature vectors [n, D]. Their batch norm
(`batch_norm.BatchStatNorm`) keeps no running averages; by default it normalises with the
statistics of the batch it is given, and `batch_norm`'s contexts choose others.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmfsl_jax.core.component import Component, from_linen
from mmfsl_jax.nn.encoders.batch_norm import BatchStatNorm
from mmfsl_jax.nn.encoders.conv_ops import (Conv, check_init, check_pool_mode, max_pool_2x2,
                                            resolve_impl)


class Conv4(nn.Module):
  """`num_blocks` x [conv3x3-`channels`, batch norm, ReLU, 2x2 max-pool], then flatten.

  `conv_impl` chooses how convolutions and pooling are computed (conv_ops.IMPLS; same
  parameters and function either way); `pool` how an odd side is pooled (conv_ops.POOL_MODES:
  on 28x28 inputs "same" leaves 2x2x64 features, "floor" 1x1x64 as PyTorch's Conv4);
  `conv_init` the convolutions' initialisers (conv_ops.INITS)."""
  channels: int = 64
  num_blocks: int = 4
  conv_impl: str = "auto"
  pool: str = "same"
  conv_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x, train: bool = False):
    for _ in range(self.num_blocks):
      x = Conv(self.channels, (3, 3), impl=self.conv_impl, init=self.conv_init)(x)
      x = nn.relu(BatchStatNorm()(x))
      x = max_pool_2x2(x, self.conv_impl, self.pool)
    return x.reshape(x.shape[0], -1)


class ResidualBlock12(nn.Module):
  """The ResNet-12 block: 3 x conv3x3 + BN (leaky ReLU between), 1x1 shortcut, max-pool."""
  channels: int
  conv_impl: str = "auto"
  pool: str = "same"
  conv_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x):
    conv = lambda size: Conv(self.channels, size, use_bias=False, impl=self.conv_impl,
                             init=self.conv_init)
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
  conv_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x, train: bool = False):
    for width in self.channels:
      x = ResidualBlock12(width, conv_impl=self.conv_impl, pool=self.pool,
                          conv_init=self.conv_init)(x)
    return jnp.mean(x, axis=(1, 2))


def _check_names(conv_impl: str, pool: str, conv_init: str) -> None:
  """At build time, not at the first trace: an unknown name is an error."""
  resolve_impl(conv_impl)
  check_pool_mode(pool)
  check_init(conv_init)


def conv4(channels: int = 64, num_blocks: int = 4, conv_impl: str = "auto",
          pool: str = "same", conv_init: str = "lecun_normal") -> Component:
  _check_names(conv_impl, pool, conv_init)
  return from_linen(Conv4(channels=channels, num_blocks=num_blocks, conv_impl=conv_impl,
                          pool=pool, conv_init=conv_init))


def resnet12(channels: Sequence[int] = (64, 160, 320, 640), conv_impl: str = "auto",
             pool: str = "same", conv_init: str = "lecun_normal") -> Component:
  _check_names(conv_impl, pool, conv_init)
  return from_linen(ResNet12(channels=tuple(channels), conv_impl=conv_impl, pool=pool,
                             conv_init=conv_init))
