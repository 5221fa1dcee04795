"""A training workdir read back: its config (older layouts translated), its checkpoints.

    config = workdir_config(workdir)                    # config.json, as this version reads it
    state = restore_for(workdir, learner, config, example_task)   # best, else latest
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import ml_collections
import optax

from mmfsl_jax.errors import CheckpointError
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.step import TrainState, init_train_state
from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run import legacy
from mmfsl_jax.run.checkpoint import Checkpoints


def workdir_config(workdir) -> ml_collections.ConfigDict:
  """The config a training workdir was run with, in this version's layout (an old flat
  config.json is translated; keys added since then take their defaults); CheckpointError if
  it is not a training workdir."""
  path = Path(workdir) / "config.json"
  if not path.exists():
    raise CheckpointError(f"{workdir} has no config.json: it is not a training workdir "
                          f"(run `mmfsl train --workdir {workdir}` first)")
  try:
    saved = json.loads(path.read_text())
  except ValueError as error:
    raise CheckpointError(f"{path} is not valid JSON ({error}); restore it from a copy") from None
  if legacy.is_flat(saved):
    legacy.warn_flat_workdir(path)
  return config_lib.config_from_dict(config_lib.saved_config(saved))


def require_checkpoint(workdir) -> None:
  if not Checkpoints.exist(workdir):
    raise CheckpointError(f"no checkpoint in {workdir}: run `mmfsl train --workdir {workdir}` "
                          f"first (or let it reach its first checkpoint)")


def old_layout(learner_name: str, optimizer: optax.GradientTransformation):
  """For `Checkpoints(old_layout=...)`: the state a checkpoint of params layout 1 holds, where
  ProtoNet's params were the model's own instead of {"model": ...}; None for the learners
  whose layout did not change. The old state reuses `like`'s leaves (and so their devices)."""
  if learner_name != "protonet":
    return None

  def like_saved(like: TrainState) -> TrainState:
    params = like.params["model"]
    opt_structure = jax.tree_util.tree_structure(jax.eval_shape(optimizer.init, params))
    opt_state = jax.tree_util.tree_unflatten(opt_structure,
                                             jax.tree_util.tree_leaves(like.opt_state))
    return like._replace(params=params, opt_state=opt_state)

  return like_saved


def open_checkpoints(workdir, config, **options) -> Checkpoints:
  """The workdir's checkpoints, read in this version's params layout whatever their own."""
  return Checkpoints(workdir, old_layout=old_layout(config.learner.name,
                                                    build.build_optimizer(config)), **options)


def restore_for(workdir, learner: MetaLearner, config, example_task: dict) -> TrainState:
  """The best (else latest) checkpointed TrainState of a workdir, shaped for `learner`."""
  like = jax.eval_shape(lambda: init_train_state(learner, build.build_optimizer(config),
                                                  example_task, config.seed))  # no compile
  checkpoints = open_checkpoints(workdir, config, create=False)
  try:
    return checkpoints.restore_best(like)
  finally:
    checkpoints.close()
