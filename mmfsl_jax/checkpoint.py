"""Checkpoints of the whole training state with orbax.

Two managers in the workdir: `checkpoints/` keeps the latest few (periodic saves, used to
resume) and `best/` keeps the one with the highest validation accuracy (used by eval).
A saved state is {"step", "params", "opt_state", "key"}; it is restored into the structure
of a freshly initialised state, so optimizer NamedTuples come back as they were.
"""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from mmfsl_jax.errors import CheckpointError
from mmfsl_jax.meta.step import TrainState


def _as_dict(state: TrainState) -> dict:
  return dict(state._asdict())


class Checkpoints:
  """The latest-N and best-by-validation checkpoint managers of one workdir."""

  def __init__(self, workdir: str | Path, keep: int = 2, create: bool = True):
    workdir = Path(workdir).absolute()
    self.latest = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create))
    self.best = ocp.CheckpointManager(
        workdir / "best", options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m["val_accuracy"], best_mode="max", create=create))

  @staticmethod
  def exist(workdir: str | Path) -> bool:
    """Whether workdir holds at least one finished checkpoint (without creating anything)."""
    workdir = Path(workdir)
    return any(p.is_dir() and p.name.isdigit()
               for sub in ("checkpoints", "best") if (workdir / sub).is_dir()
               for p in (workdir / sub).iterdir())

  def save_latest(self, state: TrainState) -> None:
    step = int(state.step)
    if step not in self.latest.all_steps():
      self.latest.save(step, args=ocp.args.StandardSave(_as_dict(state)))

  def save_best(self, state: TrainState, val_accuracy: float) -> None:
    step = int(state.step)
    if step not in self.best.all_steps():
      self.best.save(step, args=ocp.args.StandardSave(_as_dict(state)),
                     metrics={"val_accuracy": float(val_accuracy)})

  def restore(self, manager: ocp.CheckpointManager, step: int, like: TrainState) -> TrainState:
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _as_dict(like))
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return TrainState(**restored)

  def restore_latest(self, like: TrainState) -> TrainState | None:
    step = self.latest.latest_step()
    return None if step is None else self.restore(self.latest, step, like)

  def restore_best(self, like: TrainState) -> TrainState:
    """The best-by-validation state, else the latest; CheckpointError if there is none."""
    step = self.best.best_step()
    if step is not None:
      return self.restore(self.best, step, like)
    step = self.latest.latest_step()
    if step is None:
      raise CheckpointError("no checkpoint in this workdir: run `mmfsl train` with it first")
    return self.restore(self.latest, step, like)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
