"""What can go wrong in a long run, and how training reacts.

- Stop signals: inside `StopSignals`, the first SIGTERM or SIGINT only sets a flag; the
  training loop then finishes the step it is in, saves a checkpoint, waits for it and raises
  `TrainingStopped`, a `SystemExit` with status 128 + the signal number (143 for SIGTERM,
  130 for SIGINT, as a shell reports a process killed by that signal, so a scheduler that
  restarts failed jobs restarts it). A second signal acts as usual (Ctrl-C twice aborts).
- Disk space: `check_free_space` refuses to start when the workdir's file system cannot hold
  the checkpoints the run will write; `is_disk_full` recognises ENOSPC during the run.
- Non-finite steps: `describe_nonfinite` turns the meta-step's finiteness report into a
  message naming the step and the parts (inner loss, outer loss, parameter groups).
"""
from __future__ import annotations

import errno
from pathlib import Path
import shutil
import signal
import threading

from mmfsl_jax.errors import UserError


class NonFiniteLossError(UserError):
  """The loss or gradient became NaN/inf; the last good checkpoint is kept."""


class DiskSpaceError(UserError):
  """Not enough free disk space for the checkpoints, or the disk filled up during the run."""


class TrainingStopped(SystemExit):
  """Training stopped by a signal after saving a checkpoint; `code` is 128 + the signal."""

  def __init__(self, signum: int, step: int, message: str):
    super().__init__(128 + signum)
    self.signum, self.step, self.message = signum, step, message

  def __str__(self) -> str:
    return self.message


class StopSignals:
  """Context manager: the first SIGTERM/SIGINT sets `signum` instead of stopping the process.

  Handlers can only be installed from the main thread; elsewhere it does nothing and the
  signals keep their usual effect. Previous handlers are restored on exit, and for a signal
  as soon as it is caught, so that a second one acts as before.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, object] = {}

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum is not None else ""

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      self.signum = signum
    previous = self._previous.pop(signum, None)
    if previous is not None:
      signal.signal(signum, previous)

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.getsignal(sig)
        signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> bool:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}
    return False


def _megabytes(n: float) -> str:
  return f"{n / 2**20:.1f} MiB"


def directory_bytes(path: Path) -> int:
  """Total size of the files under `path` (0 if it does not exist)."""
  if not path.is_dir():
    return 0
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def check_free_space(workdir: Path, state_bytes: int, *, copies: int, margin: int = 2**20) -> int:
  """Raises DiskSpaceError unless `workdir` has room for `copies` saved states.

  `state_bytes` is the in-memory size of one state (params, optimizer state, ...); a saved
  one takes about that much plus metadata. Checkpoints already in the workdir count as room
  already taken (they are replaced, not added to). Returns the number of bytes needed.
  """
  per_copy = int(state_bytes * 1.05) + 64 * 2**10
  existing = sum(directory_bytes(workdir / sub) for sub in ("checkpoints", "best"))
  needed = max(copies * per_copy - existing, 2 * per_copy) + margin
  free = shutil.disk_usage(workdir).free
  if free < needed:
    raise DiskSpaceError(
        f"not enough free disk space in {workdir}: training needs about {_megabytes(needed)} "
        f"for checkpoints (up to {copies} saved states of about {_megabytes(per_copy)} each) "
        f"but only {_megabytes(free)} is free. Free some space or use a --workdir on another "
        f"disk.")
  return needed


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or an exception it was raised from, is 'no space left on device'."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def describe_nonfinite(bad: list[str]) -> str:
  """'inner loss (inner_loss), outer loss (loss), gradients of encoder/image, align' from the
  False keys of a meta-step finiteness report ("metrics/<name>", "grads/<group>",
  "params/<group>")."""
  metrics = [k.split("/", 1)[1] for k in bad if k.startswith("metrics/")]
  grads = [k.split("/", 1)[1] for k in bad if k.startswith("grads/")]
  params = [k.split("/", 1)[1] for k in bad if k.startswith("params/")]
  inner = [m for m in metrics if m.startswith(("inner", "support"))]
  outer = [m for m in metrics if m not in inner and m != "grad_norm"]
  parts = []
  if inner:
    parts.append(f"inner loss ({', '.join(inner)})")
  if outer:
    parts.append(f"outer loss ({', '.join(outer)})")
  if grads:
    parts.append(f"gradients of parameter group{'s' if len(grads) > 1 else ''} "
                 f"{', '.join(grads)}")
  elif "grad_norm" in metrics:
    parts.append("gradient norm")
  if params:
    parts.append(f"parameters of group{'s' if len(params) > 1 else ''} {', '.join(params)} "
                 f"after the update")
  return "; ".join(parts) if parts else ", ".join(bad)
