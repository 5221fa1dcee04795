"""Fusers: one vector per example from the aligned modality vectors.

Each fuser is a Component over a dict {modality: [n, d]} (all in the shared space) that
returns [n, d]. Every fuser also runs when some modalities are absent from the dict, so
unimodal ablations use the same code and the same parameters:

- `weighted`: sum_m w_m z_m with w on the simplex; fixed weights, or learned (softmax of
  logits, so they stay positive and sum to 1). Absent modalities drop out and the remaining
  weights are renormalised.
- `concat`: Dense(concat_m z_m); an absent modality contributes zeros.
- `gated` (AM3, Xing et al. 2019): l = sigmoid(h(z_gate)), out = l z_main + (1 - l) z_gate,
  with h a small MLP on the gating modality (text). With one modality absent the other passes
  through unchanged. Applied to prototypes it mixes per class; to examples, per example.
- `attention`: the modality vectors (plus a learned modality embedding) form a short
  sequence; a learned query attends over it (multi-head), followed by a residual Dense.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfsl_jax.core.component import Component

FUSERS = ("weighted", "concat", "gated", "attention")


def _present(z: Mapping[str, jax.Array], modalities: Sequence[str]) -> list[str]:
  present = [m for m in modalities if m in z]
  if not present:
    raise ValueError(f"fuser needs at least one of {list(modalities)}, got {list(z)}")
  return present


def simplex_weights(params, modalities: Sequence[str],
                    weights: Sequence[float] | None = None) -> dict[str, jax.Array]:
  """The weighted fuser's weight of each modality (summing to 1): the fixed `weights`
  normalised, else the softmax of the learned logits in `params`."""
  if weights is not None:
    weights = jnp.asarray(weights, jnp.float32)
    w = weights / weights.sum()
  else:
    w = jax.nn.softmax(params["logits"])
  return dict(zip(modalities, w))


def weighted(modalities: Sequence[str], weights: Sequence[float] | None = None) -> Component:
  """Weighted average; `weights=None` learns them (softmax of logits, starting equal)."""
  modalities = tuple(modalities)
  if weights is not None:
    array = jnp.asarray(weights, jnp.float32)
    if (array.shape != (len(modalities),) or bool(jnp.any(array < 0))
        or float(array.sum()) <= 0):
      raise ValueError(f"fixed fusion weights must be {len(modalities)} non-negative numbers "
                       f"with a positive sum, got {array.tolist()}")

  def init(key, z):
    return {} if weights is not None else {"logits": jnp.zeros((len(modalities),), jnp.float32)}

  def apply(params, z, *, train=False, key=None):
    present = _present(z, modalities)
    w = simplex_weights(params, modalities, weights)
    total = sum(w[m] for m in present)
    return sum(w[m] * z[m] for m in present) / total

  return Component(init, apply)


def concat(modalities: Sequence[str]) -> Component:
  """Dense layer [M*d -> d] over the concatenated modality vectors (zeros for an absent one)."""
  modalities = tuple(modalities)

  def stack(z):
    ref = z[_present(z, modalities)[0]]
    return jnp.concatenate([z.get(m, jnp.zeros_like(ref)) for m in modalities], axis=-1)

  def dense(z):
    return nn.Dense(z[_present(z, modalities)[0]].shape[-1])

  def init(key, z):
    return dense(z).init(key, stack(z))["params"]

  def apply(params, z, *, train=False, key=None):
    return dense(z).apply({"params": params}, stack(z))

  return Component(init, apply)


class _Gate(nn.Module):
  hidden: int = 64

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(1)(h)


def gate_weight(params, z_gate: jax.Array) -> jax.Array:
  """The gated fuser's l = sigmoid(h(z_gate)) [n, 1]: the weight it gives the main modality."""
  hidden = params["Dense_0"]["kernel"].shape[-1]
  return jax.nn.sigmoid(_Gate(hidden=hidden).apply({"params": params}, z_gate))


def gated(main: str = "image", gate: str = "text", hidden: int = 64) -> Component:
  """AM3 mixing: l = sigmoid(h(z[gate])) [n, 1]; out = l * z[main] + (1 - l) * z[gate]."""

  def init(key, z):
    return _Gate(hidden=hidden).init(key, z[gate])["params"]

  def apply(params, z, *, train=False, key=None):
    _present(z, (main, gate))
    if gate not in z:
      return z[main]
    if main not in z:
      return z[gate]
    lam = gate_weight(params, z[gate])
    return lam * z[main] + (1.0 - lam) * z[gate]

  return Component(init, apply)


class _Attention(nn.Module):
  num_modalities: int
  heads: int = 4

  @nn.compact
  def __call__(self, tokens, present, sow_weights=False):
    """tokens [n, M, d]; present bool [M] -> [n, d]. `sow_weights`: the attention weights
    [n, heads, 1, M] go to the "intermediates" collection (attention_weights)."""
    n, m, d = tokens.shape
    tokens = tokens + self.param("modality_embedding", nn.initializers.normal(0.02), (m, d))
    query = self.param("query", nn.initializers.normal(0.02), (1, 1, d))
    query = jnp.broadcast_to(query, (n, 1, d))
    mask = jnp.broadcast_to(present[None, None, None, :], (n, 1, 1, m))
    attended = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=d)(
        query, tokens, mask=mask, sow_weights=sow_weights)[:, 0]
    mean = jnp.sum(tokens * present[None, :, None], 1) / jnp.sum(present)
    return mean + nn.Dense(d)(attended)


def _tokens_and_mask(z, modalities):
  ref = z[_present(z, modalities)[0]]
  tokens = jnp.stack([z.get(m, jnp.zeros_like(ref)) for m in modalities], axis=1)
  present = jnp.asarray([m in z for m in modalities])
  return tokens, present


def attention_weights(params, z: Mapping[str, jax.Array],
                      modalities: Sequence[str]) -> jax.Array:
  """The attention fuser's weights [n, heads, M] over `modalities` (0 for absent ones)."""
  modalities = tuple(modalities)
  heads = params["MultiHeadDotProductAttention_0"]["query"]["kernel"].shape[1]
  module = _Attention(num_modalities=len(modalities), heads=heads)
  _, state = module.apply({"params": params}, *_tokens_and_mask(z, modalities),
                          sow_weights=True, mutable=["intermediates"])
  (weights,) = jax.tree_util.tree_leaves(state["intermediates"])
  return weights[:, :, 0, :]


def attention(modalities: Sequence[str], heads: int = 4) -> Component:
  """A learned query attends over the modality vectors; absent modalities are masked out."""
  modalities = tuple(modalities)
  module = _Attention(num_modalities=len(modalities), heads=heads)
  tokens_and_mask = lambda z: _tokens_and_mask(z, modalities)

  def init(key, z):
    dim = z[_present(z, modalities)[0]].shape[-1]
    if dim % heads:
      raise ValueError(f"attention fuser: the shared dimension {dim} must be divisible by "
                       f"heads={heads}")
    return module.init(key, *tokens_and_mask(z))["params"]

  def apply(params, z, *, train=False, key=None):
    return module.apply({"params": params}, *tokens_and_mask(z))

  return Component(init, apply)


def make_fuser(name: str, modalities: Sequence[str], *, weights=None, hidden: int = 64,
               heads: int = 4) -> Component:
  """A fuser by name; see the module docstring."""
  modalities = tuple(modalities)
  if name == "weighted":
    return weighted(modalities, weights)
  if name == "concat":
    return concat(modalities)
  if name == "gated":
    if len(modalities) != 2:
      raise ValueError(f"the gated fuser mixes exactly two modalities, got {list(modalities)}")
    return gated(modalities[0], modalities[1], hidden)
  if name == "attention":
    return attention(modalities, heads)
  raise ValueError(f"unknown fuser {name!r}; choose one of {FUSERS}")
