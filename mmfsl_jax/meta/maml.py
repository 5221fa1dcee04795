"""MAML (Finn et al. 2017): second-order by default, first-order with a switch.

The learner's params are the model's plus a linear "head" [d -> N]. For each task the
parameters matched by `inner_params` (a regular expression over '/'-joined param paths,
e.g. "head/.*" adapts only the head) take `inner_steps` SGD steps on the support loss;
the query loss at the adapted parameters is the task loss. The inner loop is a `lax.scan`
(or `lax.fori_loop`, same result) over `jax.grad`, so the meta-gradient differentiates
through it (second order). With `first_order=True` the inner gradients are treated as
constants (`stop_gradient`), giving first-order MAML.

Batch norm uses the statistics of the batch it sees: the support set during adaptation, the
query set for the task loss (the transductive setting of the original MAML).
The head starts at zero by default, which makes the initial model indifferent to the
random label order of each task.
"""
from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfsl_jax.meta.base import MetaLearner, cross_entropy, inputs_of, query_objective
from mmfsl_jax.model import MultimodalModel


def path_mask(params, pattern: str):
  """A pytree of bools like `params`: True where the '/'-joined path fully matches `pattern`."""
  regex = re.compile(pattern)

  def matches(path, _):
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    return bool(regex.fullmatch(name))

  mask = jax.tree_util.tree_map_with_path(matches, params)
  if not any(jax.tree_util.tree_leaves(mask)):
    names = ["/".join(str(getattr(k, "key", k)) for k in p)
             for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    raise ValueError(f"inner_params={pattern!r} matches no parameter; paths look like "
                     f"{names[:6]}")
  return mask


def maml(model: MultimodalModel, *, n_way: int, inner_steps: int = 1, inner_lr: float = 0.4,
         first_order: bool = False, inner_loop: str = "scan", inner_params: str = ".*",
         head_init: str = "zeros", align_weight: float = 0.0,
         align_temperature: float = 0.1) -> MetaLearner:
  if inner_loop not in ("scan", "fori"):
    raise ValueError(f"unknown inner_loop {inner_loop!r}; choose 'scan' or 'fori'")
  if inner_steps < 1:
    raise ValueError(f"inner_steps must be at least 1, got {inner_steps}")
  head_module = nn.Dense(n_way, kernel_init=nn.initializers.zeros if head_init == "zeros"
                         else nn.initializers.lecun_normal())

  def logits_and_aligned(params, inputs, train, key):
    fused, aligned = model.apply(params["model"], inputs, train=train, key=key)
    return head_module.apply({"params": params["head"]}, fused), aligned

  def init(key, task):
    k_model, k_head = jax.random.split(key)
    inputs = inputs_of(task["support"])
    model_params = model.init(k_model, inputs)
    fused, _ = model.apply(model_params, inputs)
    return {"model": model_params, "head": head_module.init(k_head, fused)["params"]}

  def support_loss(params, support, key):
    logits, _ = logits_and_aligned(params, inputs_of(support), True, key)
    return cross_entropy(logits, support["label"])

  def adapt(params, support, key):
    """Parameters after `inner_steps` SGD steps on the support loss, and that loss's mean."""
    adapt_mask = path_mask(params, inner_params)
    keys = jax.random.split(key, inner_steps) if key is not None else None

    def step(fast, step_key):
      loss, grads = jax.value_and_grad(support_loss)(fast, support, step_key)
      if first_order:
        grads = jax.lax.stop_gradient(grads)
      fast = jax.tree_util.tree_map(lambda p, g, m: p - inner_lr * g if m else p,
                                    fast, grads, adapt_mask)
      return fast, loss

    if inner_loop == "scan":
      fast, losses = jax.lax.scan(step, params, keys, length=inner_steps)
      return fast, losses.mean()

    def fori_body(i, carry):
      fast, total = carry
      fast, loss = step(fast, None if keys is None else keys[i])
      return fast, total + loss

    fast, total = jax.lax.fori_loop(0, inner_steps, fori_body, (params, jnp.zeros(())))
    return fast, total / inner_steps

  def task_loss(params, task, key=None):
    k_inner, k_outer = jax.random.split(key) if key is not None else (None, None)
    fast, inner_loss = adapt(params, task["support"], k_inner)
    query = task["query"]
    logits, aligned = logits_and_aligned(fast, inputs_of(query), True, k_outer)
    loss, metrics = query_objective(logits, query["label"], aligned, align_weight,
                                    align_temperature)
    return loss, dict(metrics, inner_loss=inner_loss)

  def predict(params, task, key=None):
    fast, _ = adapt(params, task["support"], key)
    return logits_and_aligned(fast, inputs_of(task["query"]), False, None)[0]

  return MetaLearner(init, task_loss, predict)
