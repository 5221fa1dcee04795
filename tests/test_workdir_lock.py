"""One training run per workdir (run/workdir_lock.py): the lock, its fallback where the file
system has no flock, and two `mmfsl train` processes started at once on one workdir."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import signal
import subprocess
import sys

import pytest

from mmfsl_jax.cli import main
from mmfsl_jax.errors import UserError
from mmfsl_jax.run import workdir_lock
from mmfsl_jax.run.workdir_lock import WorkdirBusy, hold_workdir, training_holder


def test_a_held_workdir_refuses_a_second_holder_and_names_the_first(tmp_path):
  assert training_holder(tmp_path / "run") is None
  with hold_workdir(tmp_path / "run"):
    holder = training_holder(tmp_path / "run")
    assert holder.startswith(f"pid {os.getpid()} on host ")
    with pytest.raises(WorkdirBusy, match=f"in use by another training run \\(pid {os.getpid()}"):
      with hold_workdir(tmp_path / "run"):
        pass
  assert training_holder(tmp_path / "run") is None
  with hold_workdir(tmp_path / "run"):   # free again
    pass


def test_a_killed_holder_leaves_no_lock(tmp_path):
  code = ("import sys, time; from mmfsl_jax.run.workdir_lock import hold_workdir\n"
          "with hold_workdir(sys.argv[1]):\n  print('held', flush=True); time.sleep(60)")
  holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    assert f"pid {holder.pid} " in training_holder(tmp_path / "run")
    with pytest.raises(WorkdirBusy):
      with hold_workdir(tmp_path / "run"):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert training_holder(tmp_path / "run") is None
  with hold_workdir(tmp_path / "run"):
    pass


def test_without_working_flock_the_lock_is_a_file(tmp_path, monkeypatch):
  def no_flock(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")
  monkeypatch.setattr(fcntl, "flock", no_flock)
  held = tmp_path / "run" / workdir_lock.HELD_FILE
  with hold_workdir(tmp_path / "run"):
    assert held.exists() and f"pid {os.getpid()} " in training_holder(tmp_path / "run")
    with pytest.raises(WorkdirBusy, match="no working file locks.*delete the file"):
      with hold_workdir(tmp_path / "run"):
        pass
  assert not held.exists() and training_holder(tmp_path / "run") is None
  held.write_text("left by a killed run")   # no description: still refused, still explained
  with pytest.raises(WorkdirBusy, match="left no description"):
    with hold_workdir(tmp_path / "run"):
      pass


def test_train_on_a_held_workdir_is_refused_and_touches_nothing(tmp_path):
  workdir = tmp_path / "run"
  with hold_workdir(workdir):
    before = sorted(p.name for p in workdir.iterdir())
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      assert main(["train", "--config", "tiny", "--workdir", str(workdir), "--no-progress"]) == 2
    assert "is in use by another training run" in err.getvalue()
    assert sorted(p.name for p in workdir.iterdir()) == before == [workdir_lock.LOCK_FILE]


@pytest.mark.slow
def test_two_trains_started_at_once_one_runs_one_is_refused(tmp_path, compilation_cache):
  workdir = tmp_path / "run"
  env = dict(os.environ, **compilation_cache, MMFSL_HUGE_PAGES="0")
  command = [sys.executable, "-m", "mmfsl_jax.cli", "train", "--config", "tiny", "--workdir",
             str(workdir), "--no-progress", "run.num_steps=40", "run.checkpoint_every=20"]
  runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env) for _ in range(2)]
  results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
  codes = sorted(code for code, _ in results)
  assert codes == [0, 2], results
  refused = next(err for code, err in results if code == 2)
  assert "is in use by another training run" in refused and "nothing was written" in refused
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  steps = [line for line in lines if '"split": "train"' in line]
  assert len(steps) == len(set(steps)) == 40 // 2   # one run's log, each record once (tiny
  #                                                     logs every 2 steps)
  # a reader of a workdir in training says so, and reads it all the same
  with hold_workdir(workdir):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      assert main(["eval", "--workdir", str(workdir), "--episodes", "2"]) == 0
  assert "is still training (pid" in err.getvalue()


def test_a_process_given_another_workdir_than_process_0_is_refused(tmp_path, monkeypatch):
  """Of several processes, each compares its workdir with the one process 0 broadcasts."""
  import jax
  from jax.experimental import multihost_utils
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  first = workdir_lock.workdir_token(tmp_path / "run")
  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", lambda value: first)
  workdir_lock.check_same_workdir(tmp_path / "run")                     # the same: passes
  workdir_lock.check_same_workdir(tmp_path / "x" / ".." / "run")        # the same, resolved
  with pytest.raises(UserError, match="process 1 was given --workdir .*other.* not the "
                                      "workdir process 0 trains in"):
    workdir_lock.check_same_workdir(tmp_path / "other")
