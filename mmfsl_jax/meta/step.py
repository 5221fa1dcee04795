"""The jitted meta-step over a batch of tasks, and the training state it carries.

`TrainState` is everything a resumed run needs besides the config: the step (which is also
the episode sampler's position), parameters, optimizer state and the base RNG key.
The step's key is `fold_in(state.key, state.step)`, so randomness never depends on how many
times a run was restarted.

The task axis B is the leading axis of every batch array; `batch_loss` vmaps over it, and
mmfsl_jax/run/sharding.py splits it across devices.

With `check_finite=True` the step also reports, as booleans computed inside the jitted
program, whether each metric, the gradient of each parameter group and each group after the
update are finite; `skip_nonfinite=True` drops an update where any of them is not.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmfsl_jax.meta.base import MetaLearner

# Subtrees of the params layout (meta/base.py) that hold named components rather than one
# component's parameters: the learner's "model" and the model's "encoder" (one per modality).
GROUP_CONTAINERS = ("model", "encoder")


class TrainState(NamedTuple):
  step: jax.Array      # int32 scalar
  params: Any
  opt_state: Any
  key: jax.Array       # uint32 [2], a raw PRNG key (checkpoint friendly)


def init_params(learner: MetaLearner, example_task: dict, seed: int):
  """The learner's initial parameters for `seed`, from one jitted `learner.init`.

  The key is an "rbg" key (XLA's RngBitGenerator). With the default threefry key, XLA's CPU
  compiler spends seconds on every random draw of a Flax init: a ResNet-12 init compiled in
  ~60 s on 2 cores, against ~6 s with rbg. The same seed gives the same parameters on one
  backend; rbg streams may differ between CPU, GPU and TPU.
  """
  return jax.jit(learner.init)(jax.random.key(seed, impl="rbg"), example_task)


def init_train_state(learner: MetaLearner, optimizer: optax.GradientTransformation,
                     example_task: dict, seed: int) -> TrainState:
  """`example_task` is a single task (no batch axis). Parameters as `init_params`."""
  params = init_params(learner, example_task, seed)
  run_key = jax.random.split(jax.random.PRNGKey(seed))[1]
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), run_key)


def batch_loss(learner: MetaLearner, params, batch: dict, key: jax.Array):
  """Mean task loss over the leading task axis; metrics averaged likewise."""
  num_tasks = jax.tree_util.tree_leaves(batch)[0].shape[0]
  keys = jax.random.split(key, num_tasks)
  losses, metrics = jax.vmap(learner.task_loss, in_axes=(None, 0, 0))(params, batch, keys)
  return losses.mean(), jax.tree_util.tree_map(jnp.mean, metrics)


def resolve_task_chunk(task_chunk: int) -> int | None:
  """`task_chunk`, or for 0 (automatic) one task at a time on a CPU, whose caches then hold a
  task's activations (Conv4 MAML ran ~1.5x faster than with 32 tasks vmapped at once,
  experiments/bench/README.md), and all at once (None) on accelerators, which want the width."""
  if task_chunk:
    return task_chunk
  return 1 if jax.default_backend() == "cpu" else None


def batch_loss_and_grad(learner: MetaLearner, params, batch: dict, key: jax.Array,
                        task_chunk: int | None = None):
  """`((loss, metrics), grads)` of `batch_loss`.

  With task_chunk < B, the B tasks run as B // task_chunk vmapped chunks of task_chunk
  tasks in a `lax.scan`, whose gradients are summed: the same values (up to float summation
  order; every task keeps its key), with the temporary memory of one chunk. Chunk j holds
  tasks j, j + B/task_chunk, ...: a strided split, so a batch sharded over devices along
  its task axis stays sharded inside every chunk.
  """
  num_tasks = jax.tree_util.tree_leaves(batch)[0].shape[0]
  if num_tasks == 1:
    task_chunk = 1  # a vmap over one task is slower than none (see chunk_sums)
  elif not task_chunk or task_chunk >= num_tasks:
    return jax.value_and_grad(lambda p: batch_loss(learner, p, batch, key), has_aux=True)(params)
  if num_tasks % task_chunk:
    raise ValueError(f"task_chunk={task_chunk} does not divide the meta-batch of {num_tasks} "
                     f"tasks")
  num_chunks = num_tasks // task_chunk
  keys = jax.random.split(key, num_tasks)

  def to_chunks(x):  # [B, ...] -> [num_chunks, task_chunk, ...]; chunk j = x[j::num_chunks]
    if task_chunk == 1:
      return x
    return jnp.swapaxes(x.reshape(task_chunk, num_chunks, *x.shape[1:]), 0, 1)

  def chunk_sums(p, chunk, chunk_keys):
    if task_chunk == 1:
      # No vmap at all: XLA's CPU backend then lays out the first convolution's kernel
      # gradient without transposing its output gradient (a vmap of one task kept shared
      # weights unbatched beside batched activations, and ProtoNet lost ~30% to that).
      losses, metrics = learner.task_loss(p, chunk, chunk_keys)
    else:
      losses, metrics = jax.vmap(learner.task_loss, in_axes=(None, 0, 0))(p, chunk, chunk_keys)
    # mean * task_chunk, so that summing over chunks and dividing by B gives batch_loss's means
    return losses.sum(), jax.tree_util.tree_map(lambda m: jnp.mean(m) * task_chunk, metrics)

  chunk_grad = jax.value_and_grad(chunk_sums, has_aux=True)
  chunks = (jax.tree_util.tree_map(to_chunks, batch), to_chunks(keys))

  def accumulate(total, chunk):
    (loss, metrics), grads = chunk_grad(params, *chunk)
    return jax.tree_util.tree_map(jnp.add, total, (loss, grads)), metrics

  zeros = (jnp.zeros((), jnp.result_type(float)), jax.tree_util.tree_map(jnp.zeros_like, params))
  (loss, grads), metrics = jax.lax.scan(accumulate, zeros, chunks)  # metrics: [num_chunks]
  metrics = jax.tree_util.tree_map(lambda m: m.sum() / num_tasks, metrics)
  return (loss / num_tasks, metrics), jax.tree_util.tree_map(lambda g: g / num_tasks, grads)


def param_groups(params) -> dict[str, Any]:
  """The parameter groups of a params pytree, by '/'-joined path.

  A group is a top-level subtree, except that "model" and "encoder" (dicts of components)
  are opened: a learner's params give model/encoder/image, model/encoder/text, model/align,
  model/fuse and its own (head, classifier, ...); a bare model's give encoder/image, ...
  """
  groups: dict[str, Any] = {}

  def visit(node, prefix):
    for name, child in node.items():
      if name in GROUP_CONTAINERS and isinstance(child, Mapping) and child:
        visit(child, f"{prefix}{name}/")
      else:
        groups[f"{prefix}{name}"] = child

  if isinstance(params, Mapping) and params:
    visit(params, "")
  else:
    groups["params"] = params
  return groups


def all_finite(tree) -> jax.Array:
  """One boolean scalar: every float entry of `tree` is finite."""
  checks = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.stack(checks).all() if checks else jnp.array(True)


def finite_report(metrics: dict, grads, params) -> dict[str, jax.Array]:
  """{"metrics/<name>", "grads/<group>", "params/<group>": bool scalar}."""
  report = {f"metrics/{k}": jnp.isfinite(v).all() for k, v in metrics.items()}
  report.update({f"grads/{k}": all_finite(v) for k, v in param_groups(grads).items()})
  report.update({f"params/{k}": all_finite(v) for k, v in param_groups(params).items()})
  return report


def make_meta_step(learner: MetaLearner, optimizer: optax.GradientTransformation, *,
                   check_finite: bool = False, skip_nonfinite: bool = False,
                   task_chunk: int = 0):
  """A jitted `(state, batch) -> (state, metrics)`; `state` is donated.

  The meta-gradient is computed in chunks of `task_chunk` tasks (`batch_loss_and_grad`; the
  same step whatever the chunk); 0 is automatic (`resolve_task_chunk`), and a chunk of at
  least the meta-batch vmaps all tasks at once.

  With `check_finite=True` (implied by `skip_nonfinite`) it returns
  `(state, metrics, finite)`, `finite` as in `finite_report` (the params are those after the
  update). With `skip_nonfinite=True` a step where any of them is False keeps params and
  optimizer state as they were; the step still advances, so the sampler moves on.
  """
  check_finite = check_finite or skip_nonfinite
  task_chunk = resolve_task_chunk(task_chunk)

  def meta_step(state: TrainState, batch: dict):
    key = jax.random.fold_in(state.key, state.step)
    (loss, metrics), grads = batch_loss_and_grad(learner, state.params, batch, key, task_chunk)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, objective=loss, grad_norm=optax.tree.norm(grads))
    if not check_finite:
      return TrainState(state.step + 1, params, opt_state, state.key), metrics
    finite = finite_report(metrics, grads, params)
    if skip_nonfinite:
      ok = jnp.stack(list(finite.values())).all()
      keep = lambda new, old: jnp.where(ok, new, old)
      params = jax.tree_util.tree_map(keep, params, state.params)
      opt_state = jax.tree_util.tree_map(keep, opt_state, state.opt_state)
    return TrainState(state.step + 1, params, opt_state, state.key), metrics, finite

  return jax.jit(meta_step, donate_argnums=0)
