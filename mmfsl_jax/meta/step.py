"""The jitted meta-step over a batch of tasks, and the training state it carries.

`TrainState` is everything a resumed run needs besides the config: the step (which is also
the episode sampler's position), parameters, optimizer state and the base RNG key.
The step's key is `fold_in(state.key, state.step)`, so randomness never depends on how many
times a run was restarted.

The task axis B is the leading axis of every batch array; `batch_loss` vmaps over it, which
is the axis to shard across devices.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmfsl_jax.meta.base import MetaLearner


class TrainState(NamedTuple):
  step: jax.Array      # int32 scalar
  params: Any
  opt_state: Any
  key: jax.Array       # uint32 [2], a raw PRNG key (checkpoint friendly)


def init_train_state(learner: MetaLearner, optimizer: optax.GradientTransformation,
                     example_task: dict, seed: int) -> TrainState:
  """`example_task` is a single task (no batch axis)."""
  init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
  params = learner.init(init_key, example_task)
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), run_key)


def batch_loss(learner: MetaLearner, params, batch: dict, key: jax.Array):
  """Mean task loss over the leading task axis; metrics averaged likewise."""
  num_tasks = jax.tree_util.tree_leaves(batch)[0].shape[0]
  keys = jax.random.split(key, num_tasks)
  losses, metrics = jax.vmap(learner.task_loss, in_axes=(None, 0, 0))(params, batch, keys)
  return losses.mean(), jax.tree_util.tree_map(jnp.mean, metrics)


def make_meta_step(learner: MetaLearner, optimizer: optax.GradientTransformation):
  """A jitted `(state, batch) -> (state, metrics)`; `state` is donated."""

  def meta_step(state: TrainState, batch: dict):
    key = jax.random.fold_in(state.key, state.step)
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: batch_loss(learner, p, batch, key), has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, objective=loss, grad_norm=optax.tree.norm(grads))
    return TrainState(state.step + 1, params, opt_state, state.key), metrics

  return jax.jit(meta_step, donate_argnums=0)
