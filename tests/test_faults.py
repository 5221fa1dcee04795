"""Faults during training: SIGKILL at random moments, SIGTERM/SIGINT, unfinished and corrupt
checkpoints, a cut-off metrics line, too little disk space.

One module-scoped uninterrupted run of the tiny config (12 steps, a checkpoint every step, a
train record every 2 steps) is the reference every interrupted run must equal: the same
final params and the same metrics.jsonl apart from the "time" field. Interrupted runs start
in `mmfsl train` subprocesses where a real signal is needed and finish in-process (same
code, same compiled programs through the session's compilation cache).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run import faults
from mmfsl_jax.run.checkpoint import Checkpoints, CheckpointWarning
from mmfsl_jax.cli import main
from mmfsl_jax.run.faults import DiskSpaceError, TrainingStopped
from mmfsl_jax.run.train import train_and_evaluate

STEPS = 12
OVERRIDES = {"run.num_steps": STEPS, "run.checkpoint_every": 1, "run.log_every": 2,
             "run.eval_every": 4}


def run_config():
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, [f"{k}={v!r}" for k, v in OVERRIDES.items()])
  return config


def cli_command(workdir: Path) -> list[str]:
  script = Path(sys.executable).parent / "mmfsl"
  script = str(script) if script.exists() else shutil.which("mmfsl")
  return [script, "train", "--config", "tiny", "--workdir", str(workdir), "--no-progress",
          *(f"{k}={v}" for k, v in OVERRIDES.items())]


def steps(workdir: Path, sub: str = "checkpoints") -> set[int]:
  path = workdir / sub
  return {int(p.name) for p in path.iterdir() if p.name.isdigit()} if path.is_dir() else set()


def records(workdir: Path) -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if k != "time"} for l in lines]


def final_params(workdir: Path):
  checkpoints = Checkpoints(workdir, create=False)
  try:
    step = checkpoints.latest.latest_step()
    return step, jax.tree_util.tree_leaves(checkpoints.latest.restore(step)["params"])
  finally:
    checkpoints.close()


def assert_same_run(workdir: Path, reference: Path) -> None:
  step_a, params_a = final_params(reference)
  step_b, params_b = final_params(workdir)
  assert step_a == step_b == STEPS
  for a, b in zip(params_a, params_b, strict=True):
    np.testing.assert_array_equal(a, b)
  assert records(workdir) == records(reference)


def finish(workdir: Path) -> None:
  train_and_evaluate(run_config(), workdir, progress=False)


def tree_hash(path: Path) -> str:
  digest = hashlib.sha256()
  for p in sorted(path.rglob("*")):
    if p.is_file():
      digest.update(str(p.relative_to(path)).encode() + p.read_bytes())
  return digest.hexdigest()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compilation_cache):
  """The uninterrupted run's workdir (do not modify; copy it)."""
  workdir = tmp_path_factory.mktemp("faults") / "reference"
  train_and_evaluate(run_config(), workdir, progress=False)
  assert steps(workdir) == {STEPS - 1, STEPS}
  return workdir


def copy_of(reference: Path, tmp_path: Path) -> Path:
  return Path(shutil.copytree(reference, tmp_path / "run"))


def wait_for_checkpoint_after(workdir: Path, after: int, proc: subprocess.Popen,
                              timeout: float = 300) -> bool:
  """Waits until a finished checkpoint newer than `after` exists; False if proc ended first."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if max(steps(workdir), default=-1) > after:
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.02)
  raise AssertionError(f"no checkpoint after step {after} within {timeout} s")


# ---------------------------------------------------------------------------------------------
# SIGKILL, SIGTERM, SIGINT


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(reference, tmp_path,
                                                                    compilation_cache):
  # Each `mmfsl train` is killed a random 0-0.25 s after it wrote a new checkpoint: with a
  # checkpoint every step, often in the middle of the next save.
  workdir, log = tmp_path / "run", tmp_path / "log.txt"
  env = {**os.environ, **compilation_cache}
  rng = random.Random(6)
  kills = []
  with log.open("w") as out:
    for _ in range(3):
      before = max(steps(workdir), default=-1)
      proc = subprocess.Popen(cli_command(workdir), env=env, stdout=out, stderr=out)
      try:
        if wait_for_checkpoint_after(workdir, before, proc):
          time.sleep(rng.uniform(0.0, 0.25))
      finally:
        proc.kill()
        proc.wait(timeout=60)
      if proc.returncode != -signal.SIGKILL:
        break  # it finished before the kill
      kills.append(max(steps(workdir)))
  assert kills and max(kills) < STEPS, (kills, log.read_text()[-3000:])
  finish(workdir)
  assert_same_run(workdir, reference)
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(reference, tmp_path, compilation_cache):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(cli_command(workdir), env={**os.environ, **compilation_cache},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert wait_for_checkpoint_after(workdir, -1, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
  assert "Traceback" not in err
  line = [l for l in err.splitlines() if "stopped by SIGTERM" in l][0]
  step = int(line.split("at step ")[1].split(";")[0])
  assert 1 <= step < STEPS and "checkpoint saved" in line and "resume" in line
  assert max(steps(workdir)) == step
  assert max(r["step"] for r in records(workdir)) <= step
  finish(workdir)
  assert_same_run(workdir, reference)


@pytest.mark.slow
def test_sigint_in_process_raises_training_stopped_130(tmp_path, monkeypatch):
  # Ctrl-C arrives while step 3 is being saved; the loop saves step 3 and stops.
  save, sent = Checkpoints.save_latest, []

  def save_then_interrupt(self, state, extra=None):
    save(self, state, extra)
    if int(state.step) == 3 and not sent:   # once: a second Ctrl-C would abort as usual
      sent.append(True)
      os.kill(os.getpid(), signal.SIGINT)

  monkeypatch.setattr(Checkpoints, "save_latest", save_then_interrupt)
  handler = signal.getsignal(signal.SIGINT)
  config = run_config()
  config.run.checkpoint_every = 3
  with pytest.raises(TrainingStopped, match="stopped by SIGINT at step 3; checkpoint saved"
                     ) as stopped:
    train_and_evaluate(config, tmp_path / "run", progress=False)
  assert stopped.value.code == 130 and isinstance(stopped.value, SystemExit)
  assert stopped.value.step == 3 and steps(tmp_path / "run") == {3}
  assert signal.getsignal(signal.SIGINT) is handler     # the handler is put back


@pytest.mark.slow
def test_sigterm_in_the_middle_of_a_save_finishes_it_then_stops(reference, tmp_path,
                                                                 monkeypatch):
  """The signal arrives after a save has begun and before it is written: the save completes,
  the run stops with 143 at that step, and the resumed run is the uninterrupted one."""
  save, sent = Checkpoints.save_latest, []

  def interrupted_save(self, state, extra=None):
    if int(state.step) == 5 and not sent:
      sent.append(True)
      os.kill(os.getpid(), signal.SIGTERM)
    save(self, state, extra)

  monkeypatch.setattr(Checkpoints, "save_latest", interrupted_save)
  with pytest.raises(TrainingStopped, match="stopped by SIGTERM at step 5") as stopped:
    train_and_evaluate(run_config(), tmp_path / "run", progress=False)
  assert stopped.value.code == 143 and max(steps(tmp_path / "run")) == 5
  monkeypatch.setattr(Checkpoints, "save_latest", save)
  finish(tmp_path / "run")
  assert_same_run(tmp_path / "run", reference)


# ---------------------------------------------------------------------------------------------
# unfinished and corrupt checkpoints


@pytest.mark.slow
def test_unfinished_save_and_cut_off_log_line_are_ignored(reference, tmp_path, capsys):
  workdir = copy_of(reference, tmp_path)
  # killed while saving step 12 (orbax writes into a temporary directory, then renames it)
  # and while writing its log line
  (workdir / "checkpoints" / str(STEPS)).rename(
      workdir / "checkpoints" / f"{STEPS}.orbax-checkpoint-tmp")
  with (workdir / "metrics.jsonl").open("a") as f:
    f.write('{"step": 13, "split": "tr')
  assert Checkpoints(workdir, create=False).latest.latest_step() == STEPS - 1
  capsys.readouterr()
  with warnings.catch_warnings():
    warnings.simplefilter("error", CheckpointWarning)
    finish(workdir)
  assert ("metrics.jsonl: dropped 1 line(s) cut short (a kill while writing) and 2 record(s) "
          f"past step {STEPS - 1}") in capsys.readouterr().out   # the train and val of step 12
  assert_same_run(workdir, reference)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(STEPS - 1),
                                                                         str(STEPS)]


def _data_files(step_dir: Path) -> list[Path]:
  # Every array data file: which one holds the parameters depends on orbax's layout
  # (OCDBT may leave per-process files besides the merged ones).
  files = [p for p in (step_dir / "default").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files, f"no data files under {step_dir}"
  return files


def _truncate(step_dir: Path) -> None:
  for path in _data_files(step_dir):
    path.write_bytes(path.read_bytes()[:100])


def _flip_a_byte(step_dir: Path) -> None:  # orbax restores this without complaint
  for path in _data_files(step_dir):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _remove_files(step_dir: Path) -> None:
  shutil.rmtree(step_dir / "default")


def _cut_metadata(step_dir: Path) -> None:
  path = step_dir / "_CHECKPOINT_METADATA"
  path.write_text(path.read_text()[:20])


def test_corrupt_checkpoints_fall_back_to_the_newest_good_one(reference, tmp_path):
  # Step 12 truncated; 13-15 are copies of step 12 damaged in other ways (one resume tries
  # them all: 15, 14, 13, 12 fail; it resumes from 11 and trains step 12 again).
  workdir = copy_of(reference, tmp_path)
  ckpts = workdir / "checkpoints"
  damage = {13: _flip_a_byte, 14: _remove_files, 15: _cut_metadata}
  for step in damage:
    shutil.copytree(ckpts / str(STEPS), ckpts / str(step))
  for step, corrupt in [(STEPS, _truncate), *damage.items()]:
    corrupt(ckpts / str(step))
  good_hash = tree_hash(ckpts / str(STEPS - 1))
  with pytest.warns(CheckpointWarning) as caught:
    finish(workdir)
  messages = [str(w.message) for w in caught]
  for step in (STEPS, *damage):
    assert any(f"checkpoints/{step} is incomplete or corrupt" in m for m in messages), messages
    assert any(f"checkpoints/{step}.corrupt" in m for m in messages)
    assert (ckpts / f"{step}.corrupt").is_dir()                 # kept for inspection
  assert tree_hash(ckpts / str(STEPS - 1)) == good_hash          # the good one is untouched
  assert_same_run(workdir, reference)


def test_fingerprint_mismatch_is_detected(reference, tmp_path):
  # Orbax restores silently-corrupted arrays; the per-array fingerprint saved with each
  # checkpoint catches them. Simulate one wrong array by editing the stored fingerprint.
  from mmfsl_jax.run.checkpoint import CorruptCheckpoint
  workdir = copy_of(reference, tmp_path)
  meta_path = workdir / "checkpoints" / str(STEPS) / "_CHECKPOINT_METADATA"
  meta = json.loads(meta_path.read_text())
  name = "['params']['model']['fuse']['logits']"
  meta["custom_metadata"]["fingerprint"][name] += 1
  meta_path.write_text(json.dumps(meta))
  checkpoints = Checkpoints(workdir, create=False)
  like = fresh_state()
  checkpoints.restore(checkpoints.latest, STEPS - 1, like)  # untouched: restores
  with pytest.raises(CorruptCheckpoint, match=r"do not match the fingerprint.*fuse"):
    checkpoints.restore(checkpoints.latest, STEPS, like)
  checkpoints.close()


def fresh_state():
  """A TrainState of the run's structure, built the way training builds it."""
  import jax
  from mmfsl_jax.run.data import prepare_splits
  from mmfsl_jax.run.build import (build_learner, build_model, build_optimizer,
                                   effective_config, training_samplers)
  from mmfsl_jax.meta.step import init_train_state
  config = effective_config(run_config())
  splits, encoding = prepare_splits(config)
  train, _ = training_samplers(config, splits)
  learner = build_learner(config, build_model(config, encoding, splits["train"]),
                          num_classes=splits["train"].num_classes)
  example = jax.tree_util.tree_map(lambda x: x[0], train.sample(0))
  return init_train_state(learner, build_optimizer(config), example, config.seed)


def test_no_readable_checkpoint_is_a_clear_error(reference, tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("MMFSL_DEBUG", raising=False)
  workdir = copy_of(reference, tmp_path)
  for step in (STEPS - 1, STEPS):
    _truncate(workdir / "checkpoints" / str(step))
  argv = ["train", "--config", "tiny", "--workdir", str(workdir), "--no-progress",
          *(f"{k}={v}" for k, v in OVERRIDES.items())]
  with pytest.warns(CheckpointWarning):
    assert main(argv) == 2
  err = capsys.readouterr().err
  assert "none of the checkpoints" in err and "move" in err and "Traceback" not in err
  assert steps(workdir) == {STEPS - 1, STEPS}            # nothing renamed or deleted


def test_eval_falls_back_from_a_corrupt_best_checkpoint(reference, tmp_path):
  from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
  workdir = copy_of(reference, tmp_path)
  (best,) = steps(workdir, "best")
  _flip_a_byte(workdir / "best" / str(best))
  with pytest.warns(CheckpointWarning, match=rf"best/{best} is incomplete or corrupt"):
    result = evaluate_workdir(workdir, episodes=4, write=False)
  assert result["settings"]["checkpoint_step"] == STEPS
  assert steps(workdir, "best") == {best}


@pytest.mark.slow
def test_damaged_best_metrics_do_not_stop_eval_or_training(reference, tmp_path):
  # e.g. killed while orbax deleted the previous best checkpoint
  from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
  workdir = copy_of(reference, tmp_path)
  (best,) = steps(workdir, "best")
  (workdir / "best" / str(best) / "metrics" / "metrics").write_text("{\"val_acc")
  with pytest.warns(CheckpointWarning, match="using the latest checkpoints"):
    result = evaluate_workdir(workdir, episodes=4, write=False)
  assert result["settings"]["checkpoint_step"] == STEPS
  assert steps(workdir, "best") == {best}                 # eval renames nothing
  config = run_config()
  config.run.num_steps = STEPS + 1
  with pytest.warns(CheckpointWarning) as caught:
    train_and_evaluate(config, workdir, progress=False)
  messages = [str(w.message) for w in caught]
  assert any(f"best/{best} is incomplete or corrupt" in m for m in messages), messages
  assert any(f"best/{best}.corrupt" in m for m in messages)
  assert (workdir / "best" / f"{best}.corrupt").is_dir()
  assert steps(workdir, "best") == {STEPS + 1}


# ---------------------------------------------------------------------------------------------
# disk space


class _Usage:
  def __init__(self, free):
    self.total, self.used, self.free = 10 * free, 9 * free, free


def test_too_little_disk_space_fails_before_training(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("MMFSL_DEBUG", raising=False)
  monkeypatch.setattr(faults.shutil, "disk_usage", lambda path: _Usage(200_000))
  workdir = tmp_path / "run"
  assert main(["train", "--config", "tiny", "--workdir", str(workdir), "--no-progress"]) == 2
  err = capsys.readouterr().err
  assert "not enough free disk space" in err and str(workdir) in err
  assert "MiB" in err and "is free" in err and "Traceback" not in err
  assert not (workdir / "config.json").exists() and not steps(workdir)


def test_disk_full_during_a_save_is_a_clear_error(tmp_path, monkeypatch):
  save = Checkpoints.save_latest

  def failing_save(self, state, extra=None):
    if int(state.step) == 4:
      raise OSError(28, "No space left on device")
    save(self, state, extra)

  monkeypatch.setattr(Checkpoints, "save_latest", failing_save)
  config = run_config()
  config.run.num_steps = 6
  with pytest.raises(DiskSpaceError, match=r"disk holding .* is full .* checkpoint \(step 3\)"):
    train_and_evaluate(config, tmp_path / "run", progress=False)
  assert max(steps(tmp_path / "run")) == 3
  monkeypatch.setattr(Checkpoints, "save_latest", save)   # space is back: the run resumes
  train_and_evaluate(config, tmp_path / "run", progress=False)
  assert max(steps(tmp_path / "run")) == 6
  logged = [(r["step"], r["split"]) for r in records(tmp_path / "run")]
  assert logged == sorted(set(logged)) and max(s for s, _ in logged) == 6
