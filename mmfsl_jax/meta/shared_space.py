"""What the CLIP-era few-shot methods (zeroshot, linear_probe, tip_adapter(_f), lp_plus_plus)
work on: each example's image embedding and each class's text embedding in the model's shared
space, as unit vectors.

    features = task_features(model, params, task, image_modality="image",
                             class_modality="text", train=..., key=..., batch_norm=...)
    features.support [N*K, d], features.query [M, d], features.text [N, d]: unit rows
    learner = feature_learner(model, "tip_adapter", classify)   # classify(features, labels)

The examples are embedded by their image alone (`image_modality`, as CLIP's image tower
sees them; a caption the examples carry is not used), support and query in one model call
(batch norm as base.py says); the class text (task["class"][class_modality], one row per class
in label order: a name through a prompt, or a description) by the model's text encoder and
aligner. With a two-tower model whose towers share a space (CLIP) the aligner is the
identity; otherwise its projections are what meta-training on episodes learns.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import (MetaLearner, check_batch_norm, class_level, embed_task,
                                 init_inputs, query_objective)
from mmfsl_jax.nn.align import unit_rows


class TaskFeatures(NamedTuple):
  support: jax.Array   # [N*K, d] unit rows
  query: jax.Array     # [M, d] unit rows
  text: jax.Array | None   # [N, d] unit rows, class text in label order (None: not asked)


def check_modalities(model, method: str, image_modality: str,
                     class_modality: str | None) -> None:
  missing = [m for m in (image_modality, class_modality)
             if m is not None and m not in model.modalities]
  if missing:
    against = f" with class-level {class_modality!r}" if class_modality else ""
    raise UserError(f"{method} compares {image_modality!r} examples{against} in one space, but "
                    f"the model has no encoder for {missing}; its modalities are "
                    f"{list(model.modalities)}")


def init_model(model, key, task, image_modality: str, method: str):
  """The model's params, every encoder initialised (the class text fills in for examples
  without text)."""
  support, query = task["support"], task["query"]
  examples = {image_modality: jnp.concatenate([support[image_modality],
                                                query[image_modality]])}
  labels = jnp.concatenate([support["label"], query["label"]])
  return model.init(key, init_inputs(model, task, examples, labels, method))


def task_features(model, params, task, *, image_modality: str, class_modality: str | None,
                  train: bool, key, batch_norm: str, method: str) -> TaskFeatures:
  """The task's unit image features (support, query) and unit class-text features (none
  for `class_modality=None`)."""
  support = {image_modality: task["support"][image_modality], "label": task["support"]["label"]}
  query = {image_modality: task["query"][image_modality], "label": task["query"]["label"]}
  k_examples, k_text = jax.random.split(key) if key is not None else (None, None)
  _, aligned = embed_task(model, params, support, query, train=train, key=k_examples,
                          batch_norm=batch_norm)
  z = unit_rows(aligned[image_modality])
  n_support = support["label"].shape[0]
  if class_modality is None:
    return TaskFeatures(z[:n_support], z[n_support:], None)
  text = class_level(task, class_modality, method)
  _, text_aligned = model.apply(params, {class_modality: text}, train=train, key=k_text)
  return TaskFeatures(z[:n_support], z[n_support:], unit_rows(text_aligned[class_modality]))


def feature_learner(model, method: str, classify: Callable, *, image_modality: str = "image",
                    class_modality: str | None = "text",
                    batch_norm: str = "transductive") -> MetaLearner:
  """A MetaLearner whose query logits [M, N] are `classify(features, support_labels)`,
  meta-trained by the query's cross-entropy. The model is initialised with every encoder
  (class-level rows stand in for a modality the examples lack)."""
  check_batch_norm(batch_norm)
  check_modalities(model, method, image_modality, class_modality)

  def init(key, task):
    return {"model": init_model(model, key, task, image_modality, method)}

  def logits(params, task, key, train):
    features = task_features(model, params["model"], task, image_modality=image_modality,
                             class_modality=class_modality, train=train, key=key,
                             batch_norm=batch_norm, method=method)
    return classify(features, task["support"]["label"])

  def task_loss(params, task, key=None):
    return query_objective(logits(params, task, key, True), task["query"]["label"], {}, 0.0, 1.0)

  def predict(params, task, key=None):
    return logits(params, task, key, False)

  return MetaLearner(init, task_loss, predict)
