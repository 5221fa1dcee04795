"""What every meta-learner provides, and the helpers they share.

A task is a dict of arrays for ONE task (the sampler's batch with the leading B axis
removed; `jax.vmap` adds it back):
    support: {modality: [N*K, ...], "label": [N*K]},  query: {modality: [N*Q, ...], "label": [N*Q]}

    params = learner.init(key, task)
    loss, metrics = learner.task_loss(params, task, key)    # differentiable in params
    logits = learner.predict(params, task, key)             # [N*Q, N], after any adaptation
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmfsl_jax.align import info_nce


class MetaLearner(NamedTuple):
  init: Callable
  task_loss: Callable
  predict: Callable


def inputs_of(split: dict) -> dict:
  """The modality arrays of a support or query dict (everything but labels)."""
  return {k: v for k, v in split.items() if k != "label"}


def concat_inputs(a: dict, b: dict) -> dict:
  return {m: jnp.concatenate([a[m], b[m]], axis=0) for m in a}


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def alignment_loss(aligned: dict, temperature: float) -> jax.Array:
  """Mean InfoNCE over all pairs of modalities (0 when fewer than two are present)."""
  names = sorted(aligned)
  pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
  if not pairs:
    return jnp.zeros(())
  return sum(info_nce(aligned[a], aligned[b], temperature) for a, b in pairs) / len(pairs)


def query_objective(logits: jax.Array, labels: jax.Array, aligned: dict, align_weight: float,
                    align_temperature: float) -> tuple[jax.Array, dict]:
  """Cross-entropy on the query, plus `align_weight` x InfoNCE of the aligned modalities."""
  loss = cross_entropy(logits, labels)
  metrics = {"loss": loss, "accuracy": accuracy(logits, labels)}
  if align_weight:
    align = alignment_loss(aligned, align_temperature)
    metrics["align_loss"] = align
    loss = loss + align_weight * align
  return loss, metrics
