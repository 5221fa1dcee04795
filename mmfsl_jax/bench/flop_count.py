"""FLOPs of a function's matrix products and convolutions, counted from its jaxpr.

XLA's `compiled.cost_analysis()` counts the body of a loop once, whatever its trip count, so
a meta-step that scans over its tasks (task_chunk) or over inner steps reports a fraction of
its work. Here loops are multiplied out: a `scan` body counts `length` times. Only
`dot_general` and `conv_general_dilated` are counted (2 FLOPs a multiply-add): they are where
a few-shot network's arithmetic is, and what a CPU's or accelerator's peak rate is quoted for.
"""
from __future__ import annotations

from collections.abc import Callable
import math

import jax
from jax.extend import core


def _product_flops(eqn) -> int:
  if eqn.primitive.name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    contracted = math.prod(lhs[d] for d in lhs_contract)
    return 2 * math.prod(eqn.outvars[0].aval.shape) * contracted
  if eqn.primitive.name == "conv_general_dilated":
    # Every output element takes (kernel window x input features a group) multiply-adds:
    # the kernel's size over its output-feature count.
    rhs = eqn.invars[1].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // out_features
  return 0


def _sub_jaxprs(value):
  if isinstance(value, (core.ClosedJaxpr, core.Jaxpr)):
    yield value if hasattr(value, "eqns") else value.jaxpr
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def jaxpr_flops(jaxpr) -> int:
  """Matrix-product and convolution FLOPs of one evaluation of `jaxpr` (open or closed, as
  `jax.make_jaxpr` or a jitted function's `.trace(...).jaxpr` gives it).

  Raises ValueError for a `while` loop around such products (its trip count is not static).
  """
  if not hasattr(jaxpr, "eqns"):
    jaxpr = jaxpr.jaxpr
  total = 0
  for eqn in jaxpr.eqns:
    total += _product_flops(eqn)
    inner = [jaxpr_flops(sub) for value in eqn.params.values() for sub in _sub_jaxprs(value)]
    if not inner:
      continue
    name = eqn.primitive.name
    if name == "scan":
      total += eqn.params["length"] * sum(inner)
    elif name == "cond":
      total += max(inner)   # one branch runs; the costlier one is an upper bound
    elif name == "while" and any(inner):
      raise ValueError("a while loop around matrix products has no static trip count; "
                       "its FLOPs cannot be counted")
    else:
      total += sum(inner)
  return total


def matmul_flops(fun: Callable, *args) -> int:
  """FLOPs of `fun(*args)`'s matrix products and convolutions (traced, not run)."""
  return jaxpr_flops(jax.make_jaxpr(fun)(*args))
