"""Precomputed feature vectors (clinical-record features, word vectors, frozen text features).

Inputs [n, F] are standardised with statistics fixed at construction (from the meta-train
split, see `fit_standardizer`) and passed through an MLP; outputs are [n, D].
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mmfsl_jax.core.component import Component, from_linen


def fit_standardizer(train_features: np.ndarray,
                     eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std [F] of meta-train features, std floored at `eps`."""
  features = np.asarray(train_features, np.float64)
  return features.mean(0).astype(np.float32), np.maximum(features.std(0), eps).astype(np.float32)


class VectorMLP(nn.Module):
  mean: tuple
  std: tuple
  hidden: Sequence[int] = (128,)
  out_dim: int = 64

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.out_dim)(x)


def vector_encoder(mean: np.ndarray, std: np.ndarray, hidden: Sequence[int] = (128,),
                   out_dim: int = 64) -> Component:
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  if mean.shape != std.shape or mean.ndim != 1:
    raise ValueError(f"mean and std must both be [F]; got {mean.shape} and {std.shape}")
  return from_linen(VectorMLP(mean=tuple(mean.tolist()), std=tuple(std.tolist()),
                              hidden=tuple(hidden), out_dim=out_dim))


def standardizer(mean: np.ndarray | None = None, std: np.ndarray | None = None) -> Component:
  """Features [n, F] standardised with the fixed `mean` and `std` [F] (None: passed as they
  are), with no parameters: for frozen pretrained features whose space a projection (or, for
  a shared image-text space such as CLIP's, nothing) maps on."""
  if (mean is None) != (std is None):
    raise ValueError("give both mean and std, or neither")
  if mean is not None:
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean.shape != std.shape or mean.ndim != 1:
      raise ValueError(f"mean and std must both be [F]; got {mean.shape} and {std.shape}")

  def init(key=None, example_inputs=None):
    return {}

  def apply(params, x, *, train=False, key=None):
    x = jnp.asarray(x, jnp.float32)
    return x if mean is None else (x - mean) / std

  return Component(init, apply)
