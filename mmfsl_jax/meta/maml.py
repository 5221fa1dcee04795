"""MAML (Finn et al. 2017) and its MAML++ options; the parts the MAML family shares.

The learner's params are {"model": ..., "head": linear [d -> N]} (plus "inner_lr" when inner
rates are learned). For each task the parameters matched by `inner_params` (a regular
expression over '/'-joined param paths, e.g. "head/.*" adapts only the head; see paths.py)
take `inner.steps` gradient steps on the support loss (inner.py); the query loss at the
adapted parameters is the task loss. Second order by default: the meta-gradient goes
through the inner loop; `first_order=True` treats the inner gradients as constants.

MAML++ options (Antoniou et al. 2019):
- `InnerLoop.per_step_lr`: a learned inner rate per step and per adapted tensor (starting at
  the inner `lr`), meta-trained with the initialisation;
- `InnerLoop.multi_step_loss`: the task loss is the mean of the query losses after every inner step
  (uniform weights; MAML++ anneals them towards the last step), metrics are the last step's;
- `InnerLoop.checkpoint`: `jax.checkpoint` around each inner step, so the memory of the
  backward pass stays flat as inner steps grow, at the price of recomputing each step.
`per_parameter_lr=True` is Meta-SGD (metasgd.py): a learned rate per parameter entry.

Batch norm: `batch_norm="transductive"` uses the support set's statistics while adapting
and the query set's for the query loss (the original MAML); "inductive" normalises the
query with the support set's statistics (see base.py). The head starts at zero by default,
which makes the initial model indifferent to the random label order of each task.
`zero_head=True` keeps it there: every task starts from a zero head, which is then not
meta-learned (the "zeroing trick" of Kao et al. 2022). A meta-learned head drifts with the
query gradients of tasks whose labels are randomly ordered; first-order MAML has no
second-order term to hold it back.

The seed objective (`support_loss_weight` = lambda > 0): the task loss adds lambda times the
support loss at the meta-parameters, before any inner step, so the meta-objective is
sum_i L(query_i; adapted theta) + lambda * sum_i L(support_i; theta). That support loss is the
one the first inner step differentiates (its loss before the step, from inner.run), so it
costs no extra forward pass; its gradient reaches theta directly, also with `first_order`. It
is reported as the metric "support_loss". With 0 (the default) the computation is unchanged.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta import inner
from mmfsl_jax.meta.base import (MetaLearner, check_batch_norm, cross_entropy, embed_query,
                                 inputs_of, query_objective)
from mmfsl_jax.meta.inner import InnerLoop
from mmfsl_jax.meta.paths import merge, path_mask, select

__all__ = ["adapted_task_loss", "check_support_loss_weight", "family_learner", "family_options",
           "head_module", "maml", "path_mask"]


def head_module(n_way: int, head_init: str = "zeros") -> nn.Dense:
  if head_init not in ("zeros", "normal"):
    raise UserError(f"unknown head_init {head_init!r}; choose 'zeros' or 'normal'")
  return nn.Dense(n_way, kernel_init=nn.initializers.zeros if head_init == "zeros"
                  else nn.initializers.lecun_normal())


def family_options(inner_loop: InnerLoop, per_parameter_lr: bool) -> InnerLoop:
  """The inner loop with its learned-rate kind set: Meta-SGD's per-parameter rates, MAML++'s
  per-step per-tensor rates (`per_step_lr`), or MAML's fixed rate; checked."""
  learned = ("per_parameter" if per_parameter_lr else
             "per_tensor" if inner_loop.per_step_lr else "none")
  return inner_loop._replace(learned_lr=learned).check()


def check_support_loss_weight(weight: float) -> float:
  if weight < 0:
    raise UserError(f"support_loss_weight must be 0 (off) or positive, got {weight}")
  return weight


def core_params(params) -> dict:
  """The model and head (what the inner loop may adapt), without learned rates."""
  return {"model": params["model"], "head": params["head"]}


def adapted_task_loss(params, mask, support_loss: Callable, query_loss: Callable, key,
                      options: inner.InnerLoop, multi_step_loss: bool,
                      support_loss_weight: float = 0.0):
  """The inner loop on the masked part of params, then the query objective.

  support_loss(fast, key) -> scalar and query_loss(fast) -> (loss, metrics) take the adapted
  part (`paths.select` of the core params). `support_loss_weight` adds that times the support
  loss before the first inner step (metric "support_loss"). Returns (loss, metrics, adapted
  core params).
  """
  core = core_params(params)
  fast = select(core, mask)
  observe = query_loss if multi_step_loss else None
  fast, inner_losses, observed = inner.run(support_loss, fast, params.get("inner_lr"), key,
                                           options, observe)
  if multi_step_loss:
    losses, per_step = observed
    loss, metrics = losses.mean(), jax.tree_util.tree_map(lambda v: v[-1], per_step)
  else:
    loss, metrics = query_loss(fast)
  metrics = dict(metrics, inner_loss=inner_losses.mean())
  if support_loss_weight:
    # The first inner step's loss is the support loss at the meta-parameters.
    metrics["support_loss"] = inner_losses[0]
    loss = loss + support_loss_weight * inner_losses[0]
  return loss, metrics, merge(core, fast)


def family_learner(model: MultimodalModel, head: nn.Dense, mask_of: Callable,
                   options: inner.InnerLoop, multi_step_loss: bool,
                   run_inner: Callable, zero_head: bool = False) -> MetaLearner:
  """A MetaLearner from `run_inner(params, task, key, multi_step_loss, train)`, which returns
  (loss, metrics with the query "logits", adapted core params); `mask_of(core)` is the
  inner-loop subset. `zero_head`: every task starts from a zero head (its meta-gradient is
  then zero)."""
  if zero_head:
    with_head = run_inner

    def run_inner(params, *args):
      return with_head(dict(params, head=jax.tree_util.tree_map(jnp.zeros_like, params["head"])),
                       *args)

  def init(key, task):
    k_model, k_head = jax.random.split(key)
    inputs = inputs_of(task["support"])
    model_params = model.init(k_model, inputs)
    fused, _ = model.apply(model_params, inputs)
    params = {"model": model_params, "head": head.init(k_head, fused)["params"]}
    rates = inner.init_rates(select(params, mask_of(params)), options)
    return params if rates is None else dict(params, inner_lr=rates)

  def task_loss(params, task, key=None):
    loss, metrics, _ = run_inner(params, task, key, multi_step_loss, True)
    return loss, {k: v for k, v in metrics.items() if k != "logits"}

  def predict(params, task, key=None):
    return run_inner(params, task, key, False, False)[1]["logits"]

  def adapt(params, task, key=None):
    return run_inner(params, task, key, False, True)[2]

  return MetaLearner(init, task_loss, predict, adapt)


def maml(model: MultimodalModel, *, n_way: int, inner: InnerLoop = InnerLoop(),
         inner_params: str = ".*", head_init: str = "zeros", align_weight: float = 0.0,
         align_temperature: float = 0.1, batch_norm: str = "transductive",
         zero_head: bool = False, per_parameter_lr: bool = False,
         support_loss_weight: float = 0.0) -> MetaLearner:
  """`inner` holds every inner-loop setting (steps, rate, order, MAML++ options; inner.py);
  its `lr_steps` is how many steps learned per-step rates are stored for (default
  `steps`): build the evaluation learner with the training value. `zero_head`,
  `support_loss_weight`: see the module docstring. `per_parameter_lr` makes it Meta-SGD
  (metasgd.py)."""
  options = family_options(inner, per_parameter_lr)
  check_support_loss_weight(support_loss_weight)
  multi_step_loss = options.multi_step_loss
  check_batch_norm(batch_norm)
  head = head_module(n_way, head_init)

  def logits_of(core, fused):
    return head.apply({"params": core["head"]}, fused)

  def run_inner(params, task, key, multi_step_loss, train):
    core = core_params(params)
    mask = path_mask(core, inner_params)
    support, query = task["support"], task["query"]
    k_inner, k_outer = jax.random.split(key) if key is not None else (None, None)

    def support_loss(fast, step_key):
      p = merge(core, fast)
      fused, _ = model.apply(p["model"], inputs_of(support), train=True, key=step_key)
      return cross_entropy(logits_of(p, fused), support["label"])

    def query_pass(fast):
      p = merge(core, fast)
      fused, aligned = embed_query(model, p["model"], support, query, train=train,
                                   key=k_outer, batch_norm=batch_norm)
      logits = logits_of(p, fused)
      loss, metrics = query_objective(logits, query["label"], aligned, align_weight,
                                      align_temperature)
      return loss, dict(metrics, logits=logits)

    return adapted_task_loss(params, mask, support_loss, query_pass, k_inner, options,
                             multi_step_loss, support_loss_weight)

  return family_learner(model, head, lambda core: path_mask(core, inner_params), options,
                        multi_step_loss, run_inner, zero_head=zero_head)
