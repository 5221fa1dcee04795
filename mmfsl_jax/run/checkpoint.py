"""Checkpoints of the whole training state with orbax.

Two managers in the workdir: `checkpoints/` keeps the latest few (periodic saves, used to
resume) and `best/` keeps the one with the highest validation accuracy (used by eval).
A saved state is {"step", "params", "opt_state", "key"}; it is restored into the structure
of a freshly initialised state, so optimizer NamedTuples come back as they were.

Crash safety. Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it to
`<step>` once complete (an atomic rename on local disks), so a save interrupted at any point
never looks like a checkpoint; leftover temporary directories are removed when training
starts again. Each checkpoint's metadata (written inside the temporary directory, so it is
committed with it) holds a fingerprint of every array (a wrapping uint32 sum of its bits,
position weighted) and any extra JSON the caller saves with it (the training loop's
unfinished log window). A checkpoint that cannot be read or does not match its fingerprint
(orbax restores some flipped bytes without complaint) is reported with a
`CheckpointWarning` and skipped for the previous one; when training resumes, the skipped
ones are renamed to `<step>.corrupt` (kept for inspection, never deleted) so that the run
can save that step again.
"""
from __future__ import annotations

from collections.abc import Callable
import copy
import json
from pathlib import Path
import warnings

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mmfsl_jax.errors import CheckpointError
from mmfsl_jax.meta.step import TrainState

METADATA_FILE = "_CHECKPOINT_METADATA"   # orbax's per-step metadata, written before commit
# The params layout of the states saved (meta/base.py: every learner's model under "model"),
# kept in each checkpoint's metadata; checkpoints without it are of layout 1, where ProtoNet's
# params were the model's own (run/legacy.py reads them).
PARAMS_LAYOUT = 2


class CheckpointWarning(UserWarning):
  """A checkpoint could not be used; an earlier one is used instead."""


class CorruptCheckpoint(ValueError):
  """A checkpoint whose files are missing, unreadable or do not match its fingerprint."""


def _as_dict(state: TrainState) -> dict:
  return dict(state._asdict())


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  bits = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  words = jax.lax.bitcast_convert_type(x, bits).astype(jnp.uint32).reshape(-1)
  weights = jnp.arange(words.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
  return jnp.sum(words * weights, dtype=jnp.uint32)   # odd weights: any bit flip shows


@jax.jit
def _fingerprints(tree) -> jax.Array:
  return jnp.stack([_leaf_fingerprint(x) for x in jax.tree_util.tree_leaves(tree)])


def fingerprint(tree) -> dict[str, int]:
  """{path: uint32 checksum} of every array in `tree`, computed on device."""
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  return dict(zip(paths, np.asarray(_fingerprints(tree)).tolist()))


def _valid_json(path: Path) -> bool:
  try:
    json.loads(path.read_text())
  except (OSError, ValueError):
    return False
  return True


def _set_aside(path: Path) -> Path:
  """Renames a damaged step directory to `<step>.corrupt` (never deletes it). Of several
  processes only the first renames; the others then wait for it in `_all_processes_here`."""
  if jax.process_index() != 0:
    return path
  target, n = path.with_name(f"{path.name}.corrupt"), 1
  while target.exists():
    target, n = path.with_name(f"{path.name}.corrupt{n}"), n + 1
  path.rename(target)
  warnings.warn(f"moved the unusable checkpoint {path} to {target}; delete it once you no "
                f"longer need it", CheckpointWarning, stacklevel=4)
  return target


def _all_processes_here(name: str) -> None:
  """A barrier across the processes of a multi-process run (nothing with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _restore_target(x) -> jax.ShapeDtypeStruct:
  """Shape, dtype and placement to restore an array into: `x`'s own placement, else this
  process's first device (not the saved one: a run saved by several processes must load
  into one)."""
  sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(
      jax.local_devices()[0])
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def state_bytes(state: TrainState) -> int:
  """In-memory size of a state: about the size of one saved checkpoint."""
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))


class Checkpoints:
  """The latest-N and best-by-validation checkpoint managers of one workdir.

  `create=False` opens an existing workdir without creating or cleaning anything (eval).
  `old_layout(like)`: the abstract state a checkpoint of params layout 1 holds where this
  learner's layout has changed since (else None); such a checkpoint is restored into it and
  its leaves put into `like`'s structure (the layouts differ by single-key dict levels, which
  keep the order of the leaves).
  """

  def __init__(self, workdir: str | Path, keep: int = 2, create: bool = True,
               old_layout: Callable[[TrainState], TrainState | None] | None = None):
    workdir = Path(workdir).absolute()
    self.keep, self.create, self.old_layout = keep, create, old_layout
    self.latest = self._manager(workdir / "checkpoints", max_to_keep=keep)
    self.best = self._open_best(workdir / "best")

  def _manager(self, directory: Path, **options) -> ocp.CheckpointManager:
    """An orbax manager of `directory` with one unnamed item, said explicitly: left to orbax,
    the mode is guessed from the first step directory it reads, and a damaged one would make
    every later restore fail."""
    return ocp.CheckpointManager(
        directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(
            create=self.create, cleanup_tmp_directories=self.create,
            # Of several processes, orbax 0.12.8's background commit could validate the
            # array metadata before every process had written its own, and fail the save.
            enable_async_checkpointing=jax.process_count() == 1, **options))

  def _open_best(self, directory: Path) -> ocp.CheckpointManager | None:
    """The best-checkpoint manager. Orbax reads every step's metrics when it opens the
    directory and fails on a damaged one: in training such steps are set aside; in eval
    (create=False) there is then no best manager and eval uses the latest checkpoint."""
    open_manager = lambda: self._manager(
        directory, max_to_keep=1, best_fn=lambda m: m["val_accuracy"], best_mode="max")
    try:
      return open_manager()
    except Exception as error:  # a damaged metrics file of some step
      reason = " ".join(str(error).split())[:200]
      if not self.create:
        warnings.warn(f"the best checkpoints in {directory} cannot be read "
                      f"({type(error).__name__}: {reason}); using the latest checkpoints",
                      CheckpointWarning, stacklevel=3)
        return None
      bad = [p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()
             and not _valid_json(p / "metrics" / "metrics")]
      if not bad:
        raise
      for path in bad:
        warnings.warn(f"checkpoint {path} is incomplete or corrupt and is skipped (its "
                      f"metrics file is damaged)", CheckpointWarning, stacklevel=3)
        _set_aside(path)
      _all_processes_here("mmfsl: damaged best checkpoints set aside")
      return open_manager()

  @staticmethod
  def exist(workdir: str | Path) -> bool:
    """Whether workdir holds at least one finished checkpoint (without creating anything)."""
    workdir = Path(workdir)
    return any(p.is_dir() and p.name.isdigit()
               for sub in ("checkpoints", "best") if (workdir / sub).is_dir()
               for p in (workdir / sub).iterdir())

  def save_latest(self, state: TrainState, extra: dict | None = None) -> None:
    """Saves `state` (asynchronously) unless its step is saved; `extra` is JSON kept with it
    (copied now: orbax writes it later, in the background)."""
    step = int(state.step)
    if step not in self.latest.all_steps():
      self.latest.save(step, args=ocp.args.StandardSave(_as_dict(state)),
                       custom_metadata={"fingerprint": fingerprint(_as_dict(state)),
                                        "params_layout": PARAMS_LAYOUT,
                                        "extra": copy.deepcopy(extra or {})})

  def save_best(self, state: TrainState, val_accuracy: float) -> None:
    step = int(state.step)
    if self.best is not None and step not in self.best.all_steps():
      self.best.save(step, args=ocp.args.StandardSave(_as_dict(state)),
                     metrics={"val_accuracy": float(val_accuracy)},
                     custom_metadata={"fingerprint": fingerprint(_as_dict(state)),
                                      "params_layout": PARAMS_LAYOUT})

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def _custom_metadata(self, manager: ocp.CheckpointManager, step: int) -> dict:
    path = Path(manager.directory) / str(step) / METADATA_FILE
    if not path.is_file():
      raise CorruptCheckpoint(f"its {METADATA_FILE} file is missing")
    if not _valid_json(path):
      raise CorruptCheckpoint(f"its {METADATA_FILE} file is not valid JSON")
    return dict(manager.metadata(step).custom_metadata or {})

  def restore_with_extra(self, manager: ocp.CheckpointManager, step: int,
                         like: TrainState) -> tuple[TrainState, dict]:
    """The state saved at `step` and its extra JSON; CorruptCheckpoint or orbax's error if it
    cannot be read. Checkpoints without a fingerprint (older versions) are not verified."""
    metadata = self._custom_metadata(manager, step)
    saved_like = like
    if metadata.get("params_layout", 1) < PARAMS_LAYOUT and self.old_layout is not None:
      saved_like = self.old_layout(like) or like
    abstract = jax.tree_util.tree_map(_restore_target, _as_dict(saved_like))
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    expected = metadata.get("fingerprint")
    if expected:
      actual = fingerprint(restored)
      wrong = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
      if wrong:
        shown = ", ".join(wrong[:4]) + (f" and {len(wrong) - 4} more" if len(wrong) > 4 else "")
        raise CorruptCheckpoint(f"{len(wrong)} array(s) do not match the fingerprint saved "
                                f"with them: {shown}")
    if saved_like is not like:
      restored = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(_as_dict(like)),
                                              jax.tree_util.tree_leaves(restored))
    return TrainState(**restored), dict(metadata.get("extra") or {})

  def restore(self, manager: ocp.CheckpointManager, step: int, like: TrainState) -> TrainState:
    return self.restore_with_extra(manager, step, like)[0]

  def _first_good(self, manager: ocp.CheckpointManager, steps, like: TrainState):
    """(step, state, extra) of the first of `steps` that restores, and [(step, reason)] of the
    ones before it that did not (each reported with a CheckpointWarning)."""
    failed = []
    for step in steps:
      try:
        state, extra = self.restore_with_extra(manager, step, like)
      except Exception as error:  # any unreadable checkpoint: report it and try the previous
        path = Path(manager.directory) / str(step)
        reason = " ".join(str(error).split())[:300]
        warnings.warn(f"checkpoint {path} is incomplete or corrupt and is skipped "
                      f"({type(error).__name__}: {reason})", CheckpointWarning, stacklevel=3)
        failed.append((step, f"{type(error).__name__}: {reason}"))
        continue
      return (step, state, extra), failed
    return None, failed

  def resume(self, like: TrainState) -> tuple[TrainState, dict] | None:
    """The newest latest-checkpoint that restores, with its extra JSON; None if there is none.

    Newer ones that fail are renamed to `<step>.corrupt` (with a warning naming them), so
    training saves those steps afresh; the good one is not touched. If checkpoints exist but
    none restores, raises CheckpointError and renames nothing.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    found, failed = self._first_good(self.latest, steps, like)
    if found is None:
      if failed:
        directory = Path(self.latest.directory)
        raise CheckpointError(
            f"none of the checkpoints in {directory} can be restored (steps "
            f"{', '.join(str(s) for s, _ in failed)}; last error: {failed[-1][1]}). If they were "
            f"written by another version of mmfsl_jax, use that version; to train from scratch, "
            f"move {directory} aside or use a new workdir.")
      return None
    for step, _ in failed:
      _set_aside(Path(self.latest.directory) / str(step))
    if failed:
      _all_processes_here("mmfsl: damaged checkpoints set aside")
      self.latest.reload()
    return found[1], found[2]

  def restore_latest(self, like: TrainState) -> TrainState | None:
    resumed = self.resume(like)
    return None if resumed is None else resumed[0]

  def restore_best(self, like: TrainState) -> TrainState:
    """The best-by-validation state, else the latest; CheckpointError if there is none.

    A best checkpoint that cannot be read is skipped with a warning for the latest ones (the
    newest that restores); nothing is renamed or deleted.
    """
    best = None if self.best is None else self.best.best_step()
    found, failed = self._first_good(self.best, [] if best is None else [best], like)
    if found is None:
      found, more = self._first_good(self.latest, sorted(self.latest.all_steps(), reverse=True),
                                     like)
      failed += more
    if found is None:
      if failed:
        raise CheckpointError(
            f"no checkpoint in this workdir can be restored (last error: {failed[-1][1]}); "
            f"train again with `mmfsl train` in a new workdir")
      raise CheckpointError("no checkpoint in this workdir: run `mmfsl train` with it first")
    return found[1]

  def _managers(self) -> list[ocp.CheckpointManager]:
    return [m for m in (self.latest, self.best) if m is not None]

  def wait(self) -> None:
    for manager in self._managers():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers():
      manager.close()
