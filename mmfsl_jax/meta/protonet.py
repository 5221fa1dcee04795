"""Prototypical networks (Snell et al. 2017) over the multimodal embedding.

Support and query are encoded in one call (batch norm statistics from the whole task, or
from the support alone with `batch_norm="inductive"`; see base.py), class prototypes are the
mean support embeddings, and logits are negative squared euclidean distances or scaled
cosine similarities to them. Params: {"model": the MultimodalModel's}, as every learner's.

`fuse_level="example"` fuses each example and averages fused vectors; `fuse_level="class"`
averages each modality into per-class prototypes first and fuses those (AM3-style per-class
mixing when the fuser is gated); queries are always fused per example.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import (MetaLearner, check_batch_norm, concat_inputs, embed_task,
                                 inputs_of, query_objective)

DISTANCES = ("euclidean", "cosine")
FUSE_LEVELS = ("example", "class")


def class_means(embeddings: jax.Array, labels: jax.Array, n_way: int) -> jax.Array:
  """[N*K, d] embeddings, [N*K] labels -> [N, d] per-class means."""
  one_hot = jax.nn.one_hot(labels, n_way, dtype=embeddings.dtype)
  return (one_hot.T @ embeddings) / jnp.maximum(one_hot.sum(0)[:, None], 1.0)


def prototype_logits(queries: jax.Array, prototypes: jax.Array, distance: str,
                     cosine_scale: float = 10.0) -> jax.Array:
  """[M, d] queries, [N, d] prototypes -> [M, N] logits."""
  if distance == "euclidean":
    return -(jnp.sum(queries**2, -1, keepdims=True) - 2 * queries @ prototypes.T
             + jnp.sum(prototypes**2, -1)[None, :])
  if distance == "cosine":
    q = queries / (jnp.linalg.norm(queries, axis=-1, keepdims=True) + 1e-8)
    p = prototypes / (jnp.linalg.norm(prototypes, axis=-1, keepdims=True) + 1e-8)
    return cosine_scale * q @ p.T
  raise UserError(f"unknown distance {distance!r}; choose one of {DISTANCES}")


def protonet(model: MultimodalModel, *, n_way: int, distance: str = "euclidean",
             cosine_scale: float = 10.0, fuse_level: str = "example",
             align_weight: float = 0.0, align_temperature: float = 0.1,
             batch_norm: str = "transductive") -> MetaLearner:
  check_batch_norm(batch_norm)
  if distance not in DISTANCES:
    raise UserError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
  if fuse_level not in FUSE_LEVELS:
    raise UserError(f"unknown fuse_level {fuse_level!r}; choose 'example' or 'class'")

  def init(key, task):
    inputs = concat_inputs(inputs_of(task["support"]), inputs_of(task["query"]))
    return {"model": model.init(key, inputs)}

  def forward(params, task, key, train):
    support, query = task["support"], task["query"]
    n_support = support["label"].shape[0]
    fused, aligned = embed_task(model, params["model"], support, query, train=train, key=key,
                                batch_norm=batch_norm)
    if fuse_level == "example":
      prototypes = class_means(fused[:n_support], support["label"], n_way)
    else:
      per_modality = {m: class_means(z[:n_support], support["label"], n_way)
                      for m, z in aligned.items()}
      prototypes = model.fuse(params["model"], per_modality)
    logits = prototype_logits(fused[n_support:], prototypes, distance, cosine_scale)
    return logits, aligned

  def task_loss(params, task, key=None):
    logits, aligned = forward(params, task, key, True)
    return query_objective(logits, task["query"]["label"], aligned, align_weight,
                           align_temperature)

  def predict(params, task, key=None):
    return forward(params, task, key, False)[0]

  return MetaLearner(init, task_loss, predict)
