"""Reptile (Nichol et al. 2018): move the initialisation towards the task-adapted parameters.

For each task the parameters matched by `inner_params` take `inner_steps` SGD steps of rate
`inner_lr` on the support loss (first order: nothing is differentiated through the loop),
giving phi. The task loss is

    0.5 * ||theta - stop_gradient(phi)||^2      (over the adapted parameters)

whose gradient is theta - phi, so the meta-step's mean over the task batch is the batched
Reptile direction theta - mean(phi), and the outer optimizer applies it: plain SGD of rate
eps (`optimizer=sgd` adds momentum 0.9) is Reptile's theta <- theta + eps (mean(phi) - theta);
Adam (the default) rescales it per parameter. Parameters outside `inner_params` get no
gradient, so they stay at their initial values. With one inner step the direction is just
the support gradient (joint training); Reptile needs several (e.g. inner_steps=5).

`inner_batch=b` (training only, when task_loss gets a key): each inner step fits a random
minibatch of b examples drawn from the task's support and query sets together, as Reptile
has no support/query split. Minibatches that differ from step to step are what make the
Reptile update more than joint training (Nichol et al. 2018, Sec. 5): with the same batch
at every step, and labels in a random order per task, there is little for the shared layers
to learn. `inner_batch=None` fits the whole support set at every step; adaptation at test
time (predict, adapt) always does.

The reported "loss" and "accuracy" are the query's at phi; "objective" is the Reptile loss.
The inner loss includes `align_weight` x InfoNCE of the support's modalities, so alignment is
part of what each task trains. `predict` adapts on the support set, then classifies the
query. Batch norm as in maml.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta import inner as inner_loop
from mmfsl_jax.meta.base import (MetaLearner, alignment_loss, check_batch_norm, concat_inputs,
                                 cross_entropy, embed_query, inputs_of, query_objective)
from mmfsl_jax.meta.inner import InnerLoop
from mmfsl_jax.meta.maml import core_params, head_module
from mmfsl_jax.meta.paths import merge, path_mask, select


def reptile_objective(theta, phi) -> jax.Array:
  """0.5 * ||theta - stop_gradient(phi)||^2 summed over all leaves; gradient theta - phi."""
  phi = jax.lax.stop_gradient(phi)
  return 0.5 * sum(jnp.sum(jnp.square(t - p)) for t, p in
                   zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(phi)))


def reptile_step(loss_fn, theta, key, options: InnerLoop):
  """SGD from theta on `loss_fn(phi, key)`, then the Reptile objective.

  Returns (objective, phi, support losses [steps]).
  """
  options = options._replace(first_order=True, learned_lr="none", per_step_lr=False)
  phi, losses, _ = inner_loop.run(loss_fn, jax.lax.stop_gradient(theta), None, key, options)
  return reptile_objective(theta, phi), phi, losses


def reptile(model: MultimodalModel, *, n_way: int, inner: InnerLoop = InnerLoop(steps=5),
            inner_params: str = ".*",
            head_init: str = "zeros", align_weight: float = 0.0,
            align_temperature: float = 0.1, batch_norm: str = "transductive",
            inner_batch: int | None = None) -> MetaLearner:
  """`inner`: the SGD steps (steps, lr, loop); always first order, fixed rates."""
  options = inner._replace(first_order=True, learned_lr="none", per_step_lr=False,
                           multi_step_loss=False).check()
  check_batch_norm(batch_norm)
  if inner_batch is not None and inner_batch < 1:
    raise UserError(f"inner_batch must be at least 1 (or None: the whole support set), got "
                    f"{inner_batch}")
  head = head_module(n_way, head_init)

  def init(key, task):
    k_model, k_head = jax.random.split(key)
    inputs = inputs_of(task["support"])
    model_params = model.init(k_model, inputs)
    fused, _ = model.apply(model_params, inputs)
    return {"model": model_params, "head": head.init(k_head, fused)["params"]}

  def inner_data(task, minibatches: bool):
    """(inputs, labels) the inner loop fits, and a function picking one step's minibatch."""
    support, query = task["support"], task["query"]
    if not minibatches:
      return inputs_of(support), support["label"], lambda data, step_key: data
    inputs = concat_inputs(inputs_of(support), inputs_of(query))
    labels = jnp.concatenate([support["label"], query["label"]])
    size = labels.shape[0]
    if inner_batch > size:
      raise UserError(f"inner_batch={inner_batch} is more than a task's {size} support and "
                      f"query examples")

    def pick(data, step_key):
      rows = jax.random.permutation(jax.random.fold_in(step_key, 1), size)[:inner_batch]
      return jax.tree_util.tree_map(lambda x: x[rows], data)

    return inputs, labels, pick

  def run_inner(params, task, key, minibatches=False):
    core = core_params(params)
    frozen = jax.lax.stop_gradient(core)
    inputs, labels, pick = inner_data(task, minibatches)

    def support_loss(fast, step_key):
      p = merge(frozen, fast)
      x, y = pick((inputs, labels), step_key)
      fused, aligned = model.apply(p["model"], x, train=True, key=step_key)
      loss = cross_entropy(head.apply({"params": p["head"]}, fused), y)
      if align_weight:
        loss = loss + align_weight * alignment_loss(aligned, align_temperature)
      return loss

    theta = select(core, path_mask(core, inner_params))
    objective, phi, losses = reptile_step(support_loss, theta, key, options)
    return objective, merge(frozen, phi), losses

  def query_pass(adapted, task, key, train):
    fused, aligned = embed_query(model, adapted["model"], task["support"], task["query"],
                                 train=train, key=key, batch_norm=batch_norm)
    logits = head.apply({"params": adapted["head"]}, fused)
    return logits, query_objective(logits, task["query"]["label"], aligned, align_weight,
                                   align_temperature)[1]

  def task_loss(params, task, key=None):
    k_inner, k_query = jax.random.split(key) if key is not None else (None, None)
    objective, adapted, losses = run_inner(params, task, k_inner,
                                           minibatches=inner_batch is not None and key is not None)
    _, metrics = query_pass(adapted, task, k_query, True)
    return objective, dict(metrics, inner_loss=losses.mean(), reptile_loss=objective)

  def predict(params, task, key=None):
    return query_pass(run_inner(params, task, key)[1], task, None, False)[0]

  def adapt(params, task, key=None):
    return run_inner(params, task, key)[1]

  return MetaLearner(init, task_loss, predict, adapt)
