"""Small trainable text encoders over token ids.

Inputs are int32 token ids [n, L] with 0 as padding (see `mmfsl_jax.data.text`); outputs are
vectors [n, D]. `pooling="mean"` averages the embeddings of the real tokens (a bag of
words); `pooling="gru"` runs a GRU over them and returns its final state.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mmfsl_jax.core.component import Component, from_linen


class TokenEncoder(nn.Module):
  vocab_size: int
  dim: int = 64
  pooling: str = "mean"

  @nn.compact
  def __call__(self, ids, train: bool = False):
    mask = (ids > 0).astype(jnp.float32)
    x = nn.Embed(self.vocab_size, self.dim)(ids)
    if self.pooling == "mean":
      count = jnp.maximum(mask.sum(-1, keepdims=True), 1.0)
      return jnp.einsum("nld,nl->nd", x, mask) / count
    if self.pooling == "gru":
      lengths = mask.sum(-1).astype(jnp.int32)
      carry, _ = nn.RNN(nn.GRUCell(self.dim), return_carry=True)(x, seq_lengths=lengths)
      return carry
    raise ValueError(f"unknown pooling {self.pooling!r}; choose 'mean' or 'gru'")


def token_text_encoder(vocab_size: int, dim: int = 64, pooling: str = "mean") -> Component:
  if pooling not in ("mean", "gru"):
    raise ValueError(f"unknown text pooling {pooling!r}; choose 'mean' or 'gru'")
  return from_linen(TokenEncoder(vocab_size=vocab_size, dim=dim, pooling=pooling))
