"""Image encoders: Conv4 and ResNet-12, as pure (init, apply) pairs.

Inputs are float images [n, H, W, C]; outputs are feature vectors [n, D].

Batch norm uses the statistics of the batch it is given and keeps no running averages
(the "transductive" mode of MAML): a task's examples are normalised together, so nothing
but parameters crosses the meta-learning transforms. Meta-learners encode a task's support
(and, for ProtoNet, its query) in one call.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmfsl_jax.component import Component, from_linen
from mmfsl_jax.encoders.conv_ops import Conv, resolve_impl


class BatchStatNorm(nn.Module):
  """Batch norm over all axes but the last, from the current batch's statistics only."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,))
    bias = self.param("bias", nn.initializers.zeros, (features,))
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    return (x - mean) * (scale * (var + self.epsilon) ** -0.5) + bias


class Conv4(nn.Module):
  """`num_blocks` x [conv3x3-`channels`, batch norm, ReLU, 2x2 max-pool], then flatten.

  `conv_impl` chooses how convolutions are computed (conv_ops.IMPLS; same parameters and
  function either way)."""
  channels: int = 64
  num_blocks: int = 4
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    for _ in range(self.num_blocks):
      x = Conv(self.channels, (3, 3), impl=self.conv_impl)(x)
      x = nn.relu(BatchStatNorm()(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    return x.reshape(x.shape[0], -1)


class ResidualBlock12(nn.Module):
  """The ResNet-12 block: 3 x conv3x3 + BN (leaky ReLU between), 1x1 shortcut, max-pool."""
  channels: int
  conv_impl: str = "auto"

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
    return nn.max_pool(h, (2, 2), strides=(2, 2), padding="SAME")


class ResNet12(nn.Module):
  """Four residual blocks (widths `channels`) and global average pooling."""
  channels: Sequence[int] = (64, 160, 320, 640)
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    for width in self.channels:
      x = ResidualBlock12(width, conv_impl=self.conv_impl)(x)
    return jnp.mean(x, axis=(1, 2))


def conv4(channels: int = 64, num_blocks: int = 4, conv_impl: str = "auto") -> Component:
  resolve_impl(conv_impl)  # fail at build time on an unknown name
  return from_linen(Conv4(channels=channels, num_blocks=num_blocks, conv_impl=conv_impl))


def resnet12(channels: Sequence[int] = (64, 160, 320, 640), conv_impl: str = "auto") -> Component:
  resolve_impl(conv_impl)
  return from_linen(ResNet12(channels=tuple(channels), conv_impl=conv_impl))
