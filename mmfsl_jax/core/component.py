"""The one contract every encoder, aligner, fuser and head follows.

    params = component.init(key, example_inputs)
    outputs = component.apply(params, inputs, *, train=False, key=None)

Parameters are plain pytrees (nested dicts of arrays); nothing hides state in objects.
Flax Linen modules define most layers; `from_linen` turns one into such a pair.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax

Params = Any


class Component(NamedTuple):
  """A pure (init, apply) pair over plain pytrees."""
  init: Callable[..., Params]
  apply: Callable[..., Any]


def from_linen(module: nn.Module) -> Component:
  """Wraps a Linen module whose `__call__(x, train=False)` is pure (no mutable collections)."""

  def init(key: jax.Array, example_inputs: Any) -> Params:
    return module.init(key, example_inputs)["params"]

  def apply(params: Params, inputs: Any, *, train: bool = False, key: jax.Array | None = None):
    rngs = {"dropout": key} if key is not None else None
    return module.apply({"params": params}, inputs, train=train, rngs=rngs)

  return Component(init, apply)
