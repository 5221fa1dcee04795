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
import jax.numpy as jnp

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


COMPUTE_DTYPES = ("float32", "bfloat16")


def _cast_floats(tree: Any, dtype) -> Any:
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def with_compute_dtype(component: Component, dtype: str) -> Component:
  """`component` computing in `dtype` ("float32": unchanged; "bfloat16"): its floating
  inputs are cast to it and its floating outputs back to float32. Layers that cast their
  parameters to their input's dtype (conv_ops.Conv; BatchStatNorm normalises in float32 and
  returns its input's dtype) then run in bfloat16, while the parameters, their gradients
  (the casts' transposes), the optimiser state and the losses stay float32."""
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f"unknown compute dtype {dtype!r}; choose one of {', '.join(COMPUTE_DTYPES)}")
  if dtype == "float32":
    return component
  low = jnp.dtype(dtype)

  def apply(params, inputs, *, train=False, key=None):
    out = component.apply(params, _cast_floats(inputs, low), train=train, key=key)
    return _cast_floats(out, jnp.float32)

  return Component(component.init, apply)
