"""Choosing parameter subtrees by path: the inner-loop subset of the MAML family.

A parameter's path is its keys joined by '/', e.g. "model/encoder/image/Conv_0/kernel" or
"head/bias". `path_mask` marks the leaves whose path fully matches a regular expression;
`select` keeps only those leaves (a nested dict, the part an inner loop adapts) and `merge`
puts such a part back into the full pytree.
"""
from __future__ import annotations

import re

import jax

from mmfsl_jax.errors import UserError


def path_keys(path) -> tuple[str, ...]:
  """A jax key path as a tuple of strings."""
  return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def path_names(params) -> list[str]:
  """The '/'-joined paths of all leaves of `params`."""
  return ["/".join(path_keys(p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def path_mask(params, pattern: str):
  """A pytree of bools like `params`: True where the '/'-joined path fully matches `pattern`."""
  try:
    regex = re.compile(pattern)
  except re.error as error:
    raise UserError(f"inner_params={pattern!r} is not a valid regular expression: {error}") \
        from None
  mask = jax.tree_util.tree_map_with_path(
      lambda path, _: bool(regex.fullmatch("/".join(path_keys(path)))), params)
  if not any(jax.tree_util.tree_leaves(mask)):
    raise UserError(f"inner_params={pattern!r} matches no parameter; paths look like "
                     f"{path_names(params)[:6]}")
  return mask


def select(params, mask) -> dict:
  """The leaves of `params` where `mask` is True, as nested dicts keyed by path."""
  out: dict = {}
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for (path, leaf), keep in zip(flat, jax.tree_util.tree_leaves(mask)):
    if keep:
      *parents, last = path_keys(path)
      node = out
      for key in parents:
        node = node.setdefault(key, {})
      node[last] = leaf
  return out


def merge(params, part: dict):
  """`params` with the leaves present in `part` (as made by `select`) replaced by them."""

  def pick(path, leaf):
    node = part
    for key in path_keys(path):
      if not isinstance(node, dict) or key not in node:
        return leaf
      node = node[key]
    return node

  return jax.tree_util.tree_map_with_path(pick, params)
