"""What every meta-learner provides, and the helpers they share.

A task is a dict of arrays for ONE task (the sampler's batch with the leading B axis
removed; `jax.vmap` adds it back):
    support: {modality: [N*K, ...], "label": [N*K]},  query: {modality: [N*Q, ...], "label": [N*Q]}

    params = learner.init(key, task)                        # {"model": ..., <the learner's>}
    loss, metrics = learner.task_loss(params, task, key)    # differentiable in params
    logits = learner.predict(params, task, key)             # [N*Q, N], after any adaptation
    fast = learner.adapt(params, task, key)                 # params after the inner loop
                                                            # (learners with one; else None)
Every learner's params are a dict with the MultimodalModel's params under "model" and its
own beside them ("head", "classifier", "am3", "inner_lr"), so code that needs the model's
part (population batch norm, inner-loop paths such as "model/encoder/image/...") reads
params["model"] whatever the learner.

A task may also hold `class` ({modality: [N, ...]} class-level data in label order) and
`class_id` ([N] the classes' indices in their split), which some learners use.

Batch norm (`batch_norm`, for the image encoders' `BatchStatNorm`, which keeps no running
averages):
- "transductive": statistics of the batch each encoder call sees (MAML's setting): the
  support set while adapting; then the query set (MAML family) or support and query together
  (ProtoNet, AM3, Baseline++). A query's embedding depends on the other queries.
- "inductive": statistics of the support set only, applied to the support and to every
  query, so each query is classified independently of the others (MetaBN in Bronskill et
  al. 2020, "TaskNorm"). These are the task's support statistics, not running averages
  accumulated over meta-training: running averages would be state updated outside the
  parameters (and outside the vmap over tasks and the gradient), and the support set is what
  a test task has to go by. Where the MAML family embeds the query on its own, inductive
  mode runs support and query through the model together and keeps the query rows.
At test time `mmfsl eval --batch-norm population` can instead normalise with the training
population's moments, estimated after training (population_norm.py).
"""
from __future__ import annotations

from collections.abc import Callable
import contextlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmfsl_jax.errors import UserError
from mmfsl_jax.nn.align import info_nce
from mmfsl_jax.nn.encoders.batch_norm import batch_stats_from

BATCH_NORM = ("transductive", "inductive")


class MetaLearner(NamedTuple):
  init: Callable
  task_loss: Callable
  predict: Callable
  adapt: Callable | None = None


def check_batch_norm(batch_norm: str) -> None:
  if batch_norm not in BATCH_NORM:
    raise UserError(f"unknown batch_norm {batch_norm!r}; choose one of {BATCH_NORM}")


def inputs_of(split: dict) -> dict:
  """The modality arrays of a support or query dict (everything but labels)."""
  return {k: v for k, v in split.items() if k != "label"}


def concat_inputs(a: dict, b: dict) -> dict:
  return {m: jnp.concatenate([a[m], b[m]], axis=0) for m in a}


def embed_task(model, params, support: dict, query: dict, *, train: bool, key,
               batch_norm: str):
  """Support and query embedded in one model call -> (fused [N*K + M, d], aligned).

  Batch statistics from both ("transductive") or from the support rows ("inductive").
  """
  n_support = support["label"].shape[0]
  inputs = concat_inputs(inputs_of(support), inputs_of(query))
  stats = batch_stats_from(n_support) if batch_norm == "inductive" else contextlib.nullcontext()
  with stats:
    return model.apply(params, inputs, train=train, key=key)


def embed_query(model, params, support: dict, query: dict, *, train: bool, key,
                batch_norm: str):
  """The query embedded on its own -> (fused [M, d], aligned), batch statistics from the
  query ("transductive") or from the support ("inductive": support and query go through the
  model together and the support rows are dropped)."""
  if batch_norm != "inductive":
    return model.apply(params, inputs_of(query), train=train, key=key)
  n_support = support["label"].shape[0]
  fused, aligned = embed_task(model, params, support, query, train=train, key=key,
                              batch_norm=batch_norm)
  return fused[n_support:], {m: z[n_support:] for m, z in aligned.items()}


def class_level(task: dict, modality: str, method: str) -> jax.Array:
  """task["class"][modality]: one row per class in label order; a clear error without it."""
  if modality not in task.get("class", {}):
    raise UserError(
        f"{method} needs class-level {modality!r} (task['class'][{modality!r}], one row per "
        f"class in label order), but this task has {sorted(task.get('class', {})) or 'none'}; "
        f"the dataset must provide ClassDataset.class_texts[{modality!r}] and {modality!r} "
        f"must be one of the sampler's modalities")
  return task["class"][modality]


def init_inputs(model, task: dict, inputs: dict, labels: jax.Array, method: str) -> dict:
  """`inputs` (the examples' modalities) with each modality of the model they lack filled in
  by its class-level rows, by label: what model.init needs to build every encoder."""
  inputs = dict(inputs)
  for m in model.modalities:
    if m not in inputs:
      inputs[m] = jnp.asarray(class_level(task, m, method))[labels]
  return inputs


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
