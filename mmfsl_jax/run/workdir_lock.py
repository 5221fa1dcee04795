"""One training run per workdir: an exclusive lock held for the run's whole life.

`mmfsl train` holds an OS lock (`fcntl.flock`, exclusive) on DIR/train.lock, which the
kernel releases when the process ends however it ends (SIGKILL included), so a killed run
leaves no stale lock. The file says who holds it (host, pid, start time) for the message a
second run gets; a second `mmfsl train` on a held workdir is one `WorkdirBusy` error naming
the holder, before it writes anything. Where the file system has no working flock (some
network file systems answer ENOLCK or EOPNOTSUPP), the lock is the existence of
DIR/train.lock.held instead (created with O_EXCL, removed when the run ends), which a killed
run leaves behind: the message then says how to take it over.

Of several processes, process 0 takes the lock; each of the others checks that process 0
trains the same workdir (`check_same_workdir`).

Readers (`mmfsl eval`, `predict`, `embed`) call `training_holder(workdir)`: who is training
in it now (None when nobody is), so that they can say they score a run still in progress.
They read its last complete checkpoint and take no lock.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path
import socket

from mmfsl_jax.errors import UserError

LOCK_FILE = "train.lock"
HELD_FILE = "train.lock.held"   # the lock where flock does not work
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirBusy(UserError):
  """Another training run holds the workdir."""


def _holder_text() -> str:
  return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                     "since": datetime.datetime.now().isoformat(timespec="seconds")})


def _describe(text: str) -> str:
  try:
    holder = json.loads(text)
    return f"pid {holder['pid']} on host {holder['host']}, since {holder['since']}"
  except (ValueError, KeyError, TypeError):
    return "a process that left no description"


def _read(path: Path) -> str:
  try:
    return path.read_text()
  except OSError:
    return ""


def _busy(workdir: Path, holder: str) -> WorkdirBusy:
  return WorkdirBusy(f"{workdir} is in use by another training run ({_describe(holder)}); "
                     f"wait for it to finish or stop it, or train in another --workdir "
                     f"(nothing was written)")


@contextlib.contextmanager
def hold_workdir(workdir) -> Iterator[None]:
  """Holds `workdir`'s training lock (module docstring) for the block; WorkdirBusy if
  another run holds it."""
  workdir = Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as error:
    raise UserError(f"workdir {workdir} is not writable: {error}") from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise _busy(workdir, _read(workdir / LOCK_FILE)) from None
    except OSError as error:
      if error.errno not in _NO_FLOCK:
        raise
      with _hold_by_existence(workdir):
        yield
      return
    os.ftruncate(fd, 0)
    os.write(fd, _holder_text().encode())
    try:
      yield
    finally:
      os.ftruncate(fd, 0)
  finally:
    os.close(fd)  # releases the flock


@contextlib.contextmanager
def _hold_by_existence(workdir: Path) -> Iterator[None]:
  held = workdir / HELD_FILE
  try:
    fd = os.open(held, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
  except FileExistsError:
    raise WorkdirBusy(
        f"{workdir} is in use by another training run ({_describe(_read(held))}), as far as "
        f"this file system can tell: it has no working file locks, so the lock is the file "
        f"{held}, which a run that was killed leaves behind. If that process is gone, delete "
        f"the file and train again (nothing was written)") from None
  try:
    os.write(fd, _holder_text().encode())
    os.close(fd)
    yield
  finally:
    held.unlink(missing_ok=True)


def training_holder(workdir) -> str | None:
  """Who holds `workdir`'s training lock now ("pid P on host H, since T"), else None."""
  workdir = Path(workdir)
  if (workdir / HELD_FILE).exists():
    return _describe(_read(workdir / HELD_FILE))
  path = workdir / LOCK_FILE
  if not path.exists():
    return None
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _describe(_read(path))
  except OSError:
    return None
  else:
    fcntl.flock(fd, fcntl.LOCK_UN)
    return None
  finally:
    os.close(fd)


def workdir_token(workdir) -> int:
  """A number naming the resolved workdir path (the same on every process of a run)."""
  digest = hashlib.sha256(str(Path(workdir).resolve()).encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def check_same_workdir(workdir) -> None:
  """Of several processes: UserError on a process whose workdir is not process 0's."""
  import jax
  if jax.process_count() == 1:
    return
  import numpy as np
  from jax.experimental import multihost_utils
  mine = workdir_token(workdir)
  first = int(multihost_utils.broadcast_one_to_all(np.int32(mine)))
  if first != mine:
    raise UserError(f"process {jax.process_index()} was given --workdir {workdir}, which is "
                    f"not the workdir process 0 trains in; give every process the same "
                    f"--workdir")
