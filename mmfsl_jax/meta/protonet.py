"""Prototypical networks (Snell et al. 2017) over the multimodal embedding.

Support and query are encoded in one call (batch norm statistics from the whole task, or
from the support alone with `batch_norm="inductive"`; see base.py), class prototypes are the
mean support embeddings, and logits are negative squared euclidean distances or scaled
cosine similarities to them. Params: {"model": the MultimodalModel's}, as every learner's.

`fuse_level="example"` fuses each example and averages fused vectors; `fuse_level="class"`
averages each modality into per-class prototypes first and fuses those (AM3-style per-class
mixing when the fuser is gated); queries are always fused per example.

The seed objective (`support_loss_weight` = lambda > 0) adds lambda times a support loss at
the initial parameters to the task loss. ProtoNet does not adapt, so its parameters are always
the initial ones; its support loss is the prototypical loss of the support examples
themselves: each support embedding classified by its distance (or similarity) to the
prototypes, which include it (the means are not leave-one-out), cross-entropy over the support
labels. It reuses the task's one model call (the support rows, with the task's batch
statistics), so it costs no extra forward pass, and is reported as the metric "support_loss".
With 0 (the default) the computation is unchanged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import (MetaLearner, check_batch_norm, concat_inputs, cross_entropy,
                                 embed_task, inputs_of, query_objective)
from mmfsl_jax.nn.align import unit_rows

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
    return cosine_scale * unit_rows(queries) @ unit_rows(prototypes).T
  raise UserError(f"unknown distance {distance!r}; choose one of {DISTANCES}")


def protonet(model: MultimodalModel, *, n_way: int, distance: str = "euclidean",
             cosine_scale: float = 10.0, fuse_level: str = "example",
             align_weight: float = 0.0, align_temperature: float = 0.1,
             batch_norm: str = "transductive", support_loss_weight: float = 0.0) -> MetaLearner:
  check_batch_norm(batch_norm)
  if support_loss_weight < 0:
    raise UserError(f"support_loss_weight must be 0 (off) or positive, got {support_loss_weight}")
  if distance not in DISTANCES:
    raise UserError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
  if fuse_level not in FUSE_LEVELS:
    raise UserError(f"unknown fuse_level {fuse_level!r}; choose 'example' or 'class'")

  def init(key, task):
    inputs = concat_inputs(inputs_of(task["support"]), inputs_of(task["query"]))
    return {"model": model.init(key, inputs)}

  def forward(params, task, key, train, with_support=False):
    """-> (query logits, aligned, support logits when `with_support` else None)."""
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
    support_logits = (prototype_logits(fused[:n_support], prototypes, distance, cosine_scale)
                      if with_support else None)
    return logits, aligned, support_logits

  def task_loss(params, task, key=None):
    logits, aligned, support_logits = forward(params, task, key, True,
                                              with_support=bool(support_loss_weight))
    loss, metrics = query_objective(logits, task["query"]["label"], aligned, align_weight,
                                    align_temperature)
    if support_loss_weight:
      support = cross_entropy(support_logits, task["support"]["label"])
      metrics["support_loss"] = support
      loss = loss + support_loss_weight * support
    return loss, metrics

  def predict(params, task, key=None):
    return forward(params, task, key, False)[0]

  return MetaLearner(init, task_loss, predict)
