"""Alignment of modalities in one shared embedding space.

`projections` maps each modality's features into R^d (one linear map, or a small MLP, per
modality; with d = 0, none: `identity`); `info_nce` is the symmetric contrastive loss
(CLIP-style) that pulls the two views of the same example together and pushes other examples
apart, usable as an auxiliary loss term with a weight.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmfsl_jax.core.component import Component
from mmfsl_jax.errors import UserError


class _Projection(nn.Module):
  dim: int
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, x):
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.dim)(x)


def projections(modalities: Sequence[str], dim: int, hidden: Sequence[int] = ()) -> Component:
  """Per-modality projection into R^dim; `dim=0` is no projection (`identity`).

  init(key, features: {modality: [n, F_m]}) -> {modality: params}
  apply(params, features) -> {modality: [n, dim]} for the modalities present in `features`
  (a missing modality is simply absent from the output).
  """
  if dim == 0:
    if hidden:
      raise UserError(f"projection hidden widths {tuple(hidden)} need a projection: "
                       "give a dim of at least 1")
    return identity(modalities)
  module = _Projection(dim=dim, hidden=tuple(hidden))
  modalities = tuple(modalities)

  def init(key, features: Mapping[str, jax.Array]):
    keys = jax.random.split(key, len(modalities))
    return {m: module.init(k, features[m])["params"] for m, k in zip(modalities, keys)}

  def apply(params, features, *, train=False, key=None):
    return {m: module.apply({"params": params[m]}, x) for m, x in features.items()}

  return Component(init, apply)


def identity(modalities: Sequence[str]) -> Component:
  """No projection: each modality's features are its embedding, as in Snell et al.'s ProtoNet.

  init(key, features: {modality: [n, F]}) -> {} (no parameters); apply(params, features) ->
  features. Several modalities must have the same width F, for the fuser to combine them.
  """
  modalities = tuple(modalities)

  def init(key, features: Mapping[str, jax.Array]):
    widths = {m: features[m].shape[-1] for m in modalities}
    if len(set(widths.values())) > 1:
      raise UserError(f"without a projection the modalities' features must have one width "
                       f"to be fused, got {widths}; project them (a dim of at least 1)")
    return {}

  def apply(params, features, *, train=False, key=None):
    return dict(features)

  return Component(init, apply)


def unit_rows(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Rows of x [..., d] scaled to unit length; a zero row stays zero with a finite gradient
  (the norm's own gradient is NaN at zero, and a dead ReLU can make an embedding row zero)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def info_nce(z_a: jax.Array, z_b: jax.Array, temperature: float = 0.1) -> jax.Array:
  """Symmetric InfoNCE between paired rows of z_a [n, d] and z_b [n, d]; a scalar.

  Rows are L2-normalised; example i of one view must pick example i of the other among n.
  """
  z_a, z_b = unit_rows(z_a), unit_rows(z_b)
  logits = z_a @ z_b.T / temperature
  labels = jnp.arange(z_a.shape[0])
  loss_ab = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  loss_ba = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
  return 0.5 * (loss_ab.mean() + loss_ba.mean())
