"""Batch norm without running averages, and the contexts that choose its statistics.

`BatchStatNorm` keeps no running averages, so nothing but parameters crosses the
meta-learning transforms (meta/base.py says why). By default it normalises with the moments
of the batch it is given (the "transductive" mode of MAML: a task's examples are normalised
together). Three trace-time contexts (Flax method interceptors, so the encoders need no extra
argument; they change only how the functions traced inside them compute):

    with batch_stats_from(rows): ...          moments of the first `rows` examples of every
                                              batch (the support set: "inductive" mode)
    with recording_batch_moments() as rec:    every call also records the moments it used,
        ...                                   rec[layer path] = [(mean [C], var [C]), ...]
    with fixed_batch_moments(moments): ...    every layer normalises with the given moments,
                                              moments[layer path] = (mean [C], var [C])

Layer paths are the module paths inside one encoder, joined by "/" (Conv4:
"BatchStatNorm_0"; ResNet-12: "ResidualBlock12_0/BatchStatNorm_1"); a model has one encoder
with batch norm (the image encoder). `fixed_batch_moments` with moments averaged over
training batches is what PyTorch's `model.eval()` does with its running averages
(population_norm.py estimates them after training).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp

Moments = tuple[jax.Array, jax.Array]


def batch_moments(x: jax.Array, stats_rows: int | None = None) -> Moments:
  """Mean and (biased) variance over all axes but the last of x[:stats_rows] (None: all)."""
  ref = x if stats_rows is None else x[:stats_rows]
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(ref, axis=axes)
  return mean, jnp.mean(jnp.square(ref - mean), axis=axes)


class BatchStatNorm(nn.Module):
  """Batch norm over all axes but the last, without running averages.

  x [n, ..., C]. Normalises with `moments` (mean [C], var [C]) when given, else with those
  of x[:stats_rows] (None: all n rows), applied to all n rows. Moments and normalisation are
  computed in float32 whatever x's dtype; the output has x's dtype (bfloat16 compute keeps
  bfloat16 activations between layers).
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, stats_rows: int | None = None, moments: Moments | None = None):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,))
    bias = self.param("bias", nn.initializers.zeros, (features,))
    wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean, var = batch_moments(wide, stats_rows) if moments is None else moments
    return ((wide - mean) * (scale * (var + self.epsilon) ** -0.5) + bias).astype(x.dtype)


def layer_path(module: nn.Module) -> str:
  return "/".join(module.path)


@contextlib.contextmanager
def _on_batch_norm(update: Callable[[nn.Module, jax.Array, dict], dict]) -> Iterator[None]:
  """Every BatchStatNorm call inside the block takes `update(module, x, kwargs)` as kwargs."""
  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, BatchStatNorm) and context.method_name == "__call__":
      kwargs = update(context.module, args[0], kwargs)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield


def batch_stats_from(rows: int) -> contextlib.AbstractContextManager:
  """Within this context, every BatchStatNorm takes its moments from its batch's first
  `rows` examples."""
  if rows < 1:
    raise ValueError(f"batch statistics need at least one row, got rows={rows}")
  return _on_batch_norm(lambda module, x, kwargs: {**kwargs, "stats_rows": rows})


@contextlib.contextmanager
def recording_batch_moments() -> Iterator[dict[str, list[Moments]]]:
  """Yields a dict that every BatchStatNorm call inside the block appends its moments to
  (layer path -> [(mean, var), ...], one per call). The arrays are the traced values: return
  them from the function traced inside the block, outside any scan or vmap in it."""
  recorded: dict[str, list[Moments]] = {}

  def record(module, x, kwargs):
    if kwargs.get("moments") is None:
      wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))   # as the layer computes them
      recorded.setdefault(layer_path(module), []).append(
          batch_moments(wide, kwargs.get("stats_rows")))
    return kwargs

  with _on_batch_norm(record):
    yield recorded


def fixed_batch_moments(moments: Mapping[str, Moments]) -> contextlib.AbstractContextManager:
  """Within this context, every BatchStatNorm normalises with `moments[its layer path]`."""
  def fix(module, x, kwargs):
    path = layer_path(module)
    if path not in moments:
      raise ValueError(f"no batch-norm moments for layer {path!r}; given for "
                       f"{sorted(moments)}")
    mean, var = moments[path]
    if jnp.shape(mean) != x.shape[-1:] or jnp.shape(var) != x.shape[-1:]:
      raise ValueError(f"batch-norm moments for layer {path!r} have shapes {jnp.shape(mean)}, "
                       f"{jnp.shape(var)}; the layer has {x.shape[-1]} channels")
    return {**kwargs, "moments": (mean, var)}

  return _on_batch_norm(fix)
