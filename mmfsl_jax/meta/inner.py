"""The inner loop of the MAML family: gradient steps on the adapted part of the parameters.

    fast, support_losses, observed = run(loss_fn, fast, rates, key, options, observe=None)

`fast` is the adapted part (a pytree, see `paths.select`); each step is
fast <- fast - rate * grad loss_fn(fast, step_key). The loop is a `lax.scan` or a
`lax.fori_loop` (same result) and is differentiable: the meta-gradient goes through it
(second order) unless `first_order`, which treats the inner gradients as constants.

Inner learning rates (`InnerLoop.learned_lr`):
- "none": the fixed float `lr` (MAML);
- "per_tensor": one learned rate per adapted tensor (with `per_step_lr`: one per step and
  tensor, the LSLR of MAML++, Antoniou et al. 2019);
- "per_parameter": a learned rate per parameter entry, the shape of the parameter (Meta-SGD,
  Li et al. 2017); with `per_step_lr` one such array per step.
Learned rates start at `lr` and live in the learner's params under "inner_lr" (a pytree like
the adapted part); rates learned for `lr_steps` steps run any number of steps, steps past
the last reusing its rates (e.g. more inner steps at evaluation).

`checkpoint=True` wraps each step in `jax.checkpoint`: the backward pass keeps only the
carried parameters of each step and recomputes the step's activations, so activation memory
no longer grows with the number of steps (experiments/bench/README.md has numbers).

`observe(fast)`, when given, is evaluated after every step and stacked along a leading
[steps] axis (MAML++'s multi-step loss takes the query loss after each step).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmfsl_jax.errors import UserError

LEARNED_LR = ("none", "per_tensor", "per_parameter")
LOOPS = ("scan", "fori")


class InnerLoop(NamedTuple):
  steps: int = 1
  lr: float = 0.4
  first_order: bool = False
  loop: str = "scan"
  learned_lr: str = "none"
  per_step_lr: bool = False
  lr_steps: int | None = None       # steps the learned rates are stored for (None: steps)
  checkpoint: bool = False
  multi_step_loss: bool = False     # MAML++: the task loss averages the query loss of every step

  def check(self) -> InnerLoop:
    if self.loop not in LOOPS:
      raise UserError(f"unknown inner_loop {self.loop!r}; choose one of {LOOPS}")
    if self.learned_lr not in LEARNED_LR:
      raise UserError(f"unknown learned_lr {self.learned_lr!r}; choose one of {LEARNED_LR}")
    if self.steps < 1:
      raise UserError(f"inner steps must be at least 1, got {self.steps}")
    if self.lr <= 0:
      raise UserError(f"the inner learning rate must be positive, got {self.lr}")
    if self.lr_steps is not None and self.lr_steps < 1:
      raise UserError(f"lr_steps must be at least 1, got {self.lr_steps}")
    if self.per_step_lr and self.learned_lr == "none":
      raise UserError("per_step_lr needs learned rates: set learned_lr to 'per_tensor' or "
                       "'per_parameter'")

    return self

  @property
  def stored_steps(self) -> int:
    return self.steps if self.lr_steps is None else self.lr_steps


def init_rates(fast, options: InnerLoop):
  """The initial learned rates for the adapted part `fast` (None when rates are fixed)."""
  if options.learned_lr == "none":
    return None
  lead = (options.stored_steps,) if options.per_step_lr else ()

  def rate(p):
    shape = lead + (p.shape if options.learned_lr == "per_parameter" else ())
    return jnp.full(shape, options.lr, jnp.result_type(p))

  return jax.tree_util.tree_map(rate, fast)


def _rates_by_step(rates, options: InnerLoop):
  """Per-step rates [steps, ...] from stored ones: steps past the last stored reuse it."""
  index = jnp.minimum(jnp.arange(options.steps), options.stored_steps - 1)
  return jax.tree_util.tree_map(lambda r: r[index], rates)


def run(loss_fn: Callable, fast, rates, key, options: InnerLoop,
        observe: Callable | None = None):
  """`options.steps` gradient steps of `loss_fn(fast, key)` on `fast`.

  rates: None (the fixed `options.lr`) or a pytree like `fast` from `init_rates`.
  Returns (fast, support losses [steps] (each before its step), observed [steps, ...] or None).
  """
  steps = options.steps
  keys = jax.random.split(key, steps) if key is not None else None
  per_step = rates is not None and options.per_step_lr
  step_rates = _rates_by_step(rates, options) if per_step else None

  def update(fast, grads, rate):
    if rate is None:
      return jax.tree_util.tree_map(lambda p, g: p - options.lr * g, fast, grads)
    return jax.tree_util.tree_map(lambda p, g, r: p - r * g, fast, grads, rate)

  def step(fast, xs):
    step_key, rate = xs
    loss, grads = jax.value_and_grad(loss_fn)(fast, step_key)
    if options.first_order:
      grads = jax.lax.stop_gradient(grads)
    fast = update(fast, grads, rate if per_step else rates)
    return fast, (loss, None if observe is None else observe(fast))

  if options.checkpoint:
    step = jax.checkpoint(step)

  if options.loop == "scan":
    fast, (losses, observed) = jax.lax.scan(step, fast, (keys, step_rates), length=steps)
    return fast, losses, observed

  observed0 = None
  if observe is not None:
    shapes = jax.eval_shape(observe, fast)
    observed0 = jax.tree_util.tree_map(lambda s: jnp.zeros((steps,) + s.shape, s.dtype), shapes)
  losses0 = jnp.zeros((steps,), jnp.result_type(*jax.tree_util.tree_leaves(fast)))

  def body(i, carry):
    fast, losses, observed = carry
    at = lambda tree: None if tree is None else jax.tree_util.tree_map(lambda x: x[i], tree)
    fast, (loss, seen) = step(fast, (at(keys), at(step_rates)))
    losses = losses.at[i].set(loss)
    if observe is not None:
      observed = jax.tree_util.tree_map(lambda a, v: a.at[i].set(v), observed, seen)
    return fast, losses, observed

  return jax.lax.fori_loop(0, steps, body, (fast, losses0, observed0))
