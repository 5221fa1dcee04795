"""AM3 (Xing et al. 2019): prototypes that mix in class-level text, adaptively per class.

For each class c of a task, with p_c the mean support embedding (the model's fused
embedding of the examples) and t_c the class's own text (task["class"]["text"]: a
description or the class name, in label order) embedded by the model's text encoder and
aligner:

    w_c = g(t_c),   l_c = sigmoid(h(w_c)),   p'_c = l_c p_c + (1 - l_c) w_c

with g [d -> d] and h [d -> 1] small MLPs (params["am3"]); queries are classified by their
distance to p' as in ProtoNet (protonet.py). Examples are embedded with all their
modalities (per-example fusion alongside the class-level text) or, with
`example_modalities=("image",)`, as in the original AM3: image-only examples, text only per
class. `fixed_lambda` replaces l by a constant (1: ProtoNet; 0: prototypes from text alone).

A task without class-level text is an error, not a silent fall back to ProtoNet.
Batch norm: support and query are embedded in one call (see base.py for the two modes).
Metrics add "mix_weight", the mean l over the task's classes.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import (MetaLearner, check_batch_norm, class_level, concat_inputs,
                                 embed_task, init_inputs, inputs_of, query_objective)
from mmfsl_jax.meta.protonet import DISTANCES, class_means, prototype_logits


class _MLP(nn.Module):
  hidden: int
  out: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.out)(nn.relu(nn.Dense(self.hidden)(x)))


def class_mixing(am3_params, t: jax.Array,
                 fixed_lambda: float | None = None) -> tuple[jax.Array, jax.Array]:
  """From the classes' aligned text t [N, d]: w = g(t) [N, d] (the text prototypes) and
  l [N, 1], the weight of each class's example prototype (params["am3"] of the learner)."""
  # _MLP builds its output layer first, so "Dense_1" is the hidden layer [d, hidden]
  hidden = am3_params["g"]["Dense_1"]["kernel"].shape[-1]
  w = _MLP(hidden, t.shape[-1]).apply({"params": am3_params["g"]}, t)
  if fixed_lambda is not None:
    return w, jnp.full((w.shape[0], 1), fixed_lambda, w.dtype)
  return w, jax.nn.sigmoid(_MLP(hidden, 1).apply({"params": am3_params["h"]}, w))


def am3(model: MultimodalModel, *, n_way: int, class_modality: str = "text",
        example_modalities: Sequence[str] | None = None, distance: str = "euclidean",
        cosine_scale: float = 10.0, hidden: int = 64, fixed_lambda: float | None = None,
        align_weight: float = 0.0, align_temperature: float = 0.1,
        batch_norm: str = "transductive") -> MetaLearner:
  if distance not in DISTANCES:
    raise UserError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
  if class_modality not in model.modalities:
    raise UserError(f"am3 embeds the class-level {class_modality!r} with the model's "
                     f"encoder, but the model has only {list(model.modalities)}; add "
                     f"{class_modality!r} to its modalities")
  if example_modalities is not None:
    example_modalities = tuple(example_modalities)
    unknown = [m for m in example_modalities if m not in model.modalities]
    if not example_modalities or unknown:
      raise UserError(f"example_modalities={example_modalities} must be a non-empty subset "
                       f"of the model's modalities {list(model.modalities)}")
  if fixed_lambda is not None and not 0.0 <= fixed_lambda <= 1.0:
    raise UserError(f"fixed_lambda must lie in [0, 1], got {fixed_lambda}")
  check_batch_norm(batch_norm)

  def class_inputs(task):
    return {class_modality: class_level(task, class_modality, "am3")}

  def examples(split):
    keep = example_modalities or tuple(m for m in split if m != "label")
    missing = [m for m in keep if m not in split]
    if missing:
      raise UserError(f"am3 example_modalities {keep}: the task's examples lack {missing}")
    return {**{m: split[m] for m in keep}, "label": split["label"]}

  h = _MLP(hidden, 1)

  def g_module(dim):
    return _MLP(hidden, dim)

  def init(key, task):
    k_model, k_g, k_h = jax.random.split(key, 3)
    support, query = examples(task["support"]), examples(task["query"])
    text = class_inputs(task)[class_modality]
    labels = jnp.concatenate([support["label"], query["label"]])
    inputs = init_inputs(model, task, concat_inputs(inputs_of(support), inputs_of(query)),
                         labels, "am3")
    model_params = model.init(k_model, inputs)
    _, aligned = model.apply(model_params, {class_modality: text})
    t = aligned[class_modality]
    g_params = g_module(t.shape[-1]).init(k_g, t)["params"]
    w = g_module(t.shape[-1]).apply({"params": g_params}, t)
    return {"model": model_params,
            "am3": {"g": g_params, "h": h.init(k_h, w)["params"]}}

  def mixing(params, task, train, key):
    _, aligned = model.apply(params["model"], class_inputs(task), train=train, key=key)
    return class_mixing(params["am3"], aligned[class_modality], fixed_lambda)

  def forward(params, task, key, train):
    support, query = examples(task["support"]), examples(task["query"])
    k_examples, k_text = jax.random.split(key) if key is not None else (None, None)
    fused, aligned = embed_task(model, params["model"], support, query, train=train,
                                key=k_examples, batch_norm=batch_norm)
    n_support = support["label"].shape[0]
    prototypes = class_means(fused[:n_support], support["label"], n_way)
    w, lam = mixing(params, task, train, k_text)
    prototypes = lam * prototypes + (1.0 - lam) * w
    logits = prototype_logits(fused[n_support:], prototypes, distance, cosine_scale)
    return logits, aligned, lam

  def task_loss(params, task, key=None):
    logits, aligned, lam = forward(params, task, key, True)
    loss, metrics = query_objective(logits, task["query"]["label"], aligned, align_weight,
                                    align_temperature)
    return loss, dict(metrics, mix_weight=lam.mean())

  def predict(params, task, key=None):
    return forward(params, task, key, False)[0]

  return MetaLearner(init, task_loss, predict)
