"""Baseline++ (Chen et al. 2019): pre-train with a cosine classifier, fit a new head per task.

Training is plain classification, not meta-learning: the examples of each sampled task
(support and query) are labelled with their classes' indices in the training split
(task["class_id"] [N], which EpisodeSampler provides) and classified among all
`num_classes` training classes by a scaled cosine classifier,
    logits = cosine_scale * <z / |z|, w_c / |w_c|>,
with a learned weight vector w_c per class (params["classifier"]["weight"] [C, d]) on top
of the fused embedding z. A task batch of B tasks is a mini-batch of B*N*(K+Q) examples;
the training metrics "loss" and "accuracy" are of this C-way classification.

Evaluation (`predict`) freezes the model: it embeds support and query, starts a new cosine
head from the normalised support class means and takes `finetune_steps` gradient steps of
rate `finetune_lr` on the support cross-entropy (full batch, in a `lax.fori_loop`), then
classifies the query. `finetune_steps=0` keeps the class-mean head (a cosine ProtoNet).

A class index >= num_classes is an error at init and makes the task loss NaN inside the
jitted step (where no exception can be raised), so it cannot go unnoticed.
Batch norm: support and query are embedded in one call (see base.py for the two modes).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import (MetaLearner, check_batch_norm, concat_inputs, cross_entropy,
                                 embed_task, inputs_of, query_objective)
from mmfsl_jax.meta.protonet import class_means, prototype_logits
from mmfsl_jax.nn.align import unit_rows


def cosine_logits(z: jax.Array, weight: jax.Array, scale: float) -> jax.Array:
  """[M, d] embeddings, [C, d] class weights -> [M, C] scaled cosine similarities."""
  return prototype_logits(z, weight, "cosine", scale)


def finetune_head(support: jax.Array, labels: jax.Array, n_way: int, *, steps: int, lr: float,
                  scale: float) -> jax.Array:
  """A cosine head [N, d] fitted to support embeddings [N*K, d] by gradient descent."""
  start = class_means(support, labels, n_way)
  start = unit_rows(start)
  loss = lambda w: cross_entropy(cosine_logits(support, w, scale), labels)
  return jax.lax.fori_loop(0, steps, lambda _, w: w - lr * jax.grad(loss)(w), start)


def _class_ids(task) -> jax.Array:
  if "class_id" not in task:
    raise UserError("baselinepp trains on the classes' indices in the training split, "
                     "task['class_id'] [N]; EpisodeSampler batches have it, this task has only "
                     f"{sorted(task)}")
  return task["class_id"]


def baselinepp(model: MultimodalModel, *, n_way: int, num_classes: int,
               cosine_scale: float = 10.0, finetune_steps: int = 100, finetune_lr: float = 0.5,
               align_weight: float = 0.0, align_temperature: float = 0.1,
               batch_norm: str = "transductive", check_class_ids: bool = True) -> MetaLearner:
  """`check_class_ids=False` skips init's range check of task["class_id"] (for evaluation,
  whose example task comes from another split)."""
  if num_classes < 2:
    raise UserError(f"baselinepp needs the number of training classes (at least 2), got "
                     f"num_classes={num_classes}")
  if finetune_steps < 0 or finetune_lr <= 0:
    raise UserError(f"finetune_steps must be >= 0 and finetune_lr > 0, got "
                     f"{finetune_steps}, {finetune_lr}")
  check_batch_norm(batch_norm)

  def init(key, task):
    ids = _class_ids(task)
    # Under jit (init_train_state) the ids are abstract: task_loss's NaN for an out-of-range
    # id is what stops training then.
    if check_class_ids and not isinstance(ids, jax.core.Tracer):
      ids = np.asarray(ids)
      if ids.max() >= num_classes:
        raise UserError(f"task['class_id'] holds class {int(ids.max())}, but baselinepp was "
                         f"built for num_classes={num_classes} training classes")
    k_model, k_weight = jax.random.split(key)
    inputs = concat_inputs(inputs_of(task["support"]), inputs_of(task["query"]))
    model_params = model.init(k_model, inputs)
    fused, _ = model.apply(model_params, inputs)
    weight = jax.random.normal(k_weight, (num_classes, fused.shape[-1]), fused.dtype)
    return {"model": model_params, "classifier": {"weight": weight}}

  def task_loss(params, task, key=None):
    class_id = _class_ids(task)
    support, query = task["support"], task["query"]
    fused, aligned = embed_task(model, params["model"], support, query, train=True, key=key,
                                batch_norm=batch_norm)
    labels = class_id[jnp.concatenate([support["label"], query["label"]])]
    logits = cosine_logits(fused, params["classifier"]["weight"], cosine_scale)
    loss, metrics = query_objective(logits, labels, aligned, align_weight, align_temperature)
    valid = jnp.all(class_id < num_classes)
    return jnp.where(valid, loss, jnp.nan), dict(metrics, loss=jnp.where(valid, metrics["loss"],
                                                                        jnp.nan))

  def predict(params, task, key=None):
    support, query = task["support"], task["query"]
    fused, _ = embed_task(model, params["model"], support, query, train=False, key=key,
                          batch_norm=batch_norm)
    fused = jax.lax.stop_gradient(fused)
    n_support = support["label"].shape[0]
    head = finetune_head(fused[:n_support], support["label"], n_way, steps=finetune_steps,
                         lr=finetune_lr, scale=cosine_scale)
    return cosine_logits(fused[n_support:], head, cosine_scale)

  return MetaLearner(init, task_loss, predict)
