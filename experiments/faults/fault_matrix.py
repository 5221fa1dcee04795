"""The fault matrix: every fault of README.md's "When a run is interrupted" table injected into
a small run, each then resumed and compared with the uninterrupted run.

    python experiments/faults/fault_matrix.py [OUT_DIR]     # writes OUT_DIR/fault_matrix.json

The run is the tiny config, 12 meta-steps, a checkpoint every step, validation every 4 (the
tests' fault run, tests/test_faults.py). "Same result" means the final parameters are equal
bit for bit and metrics.jsonl equals the uninterrupted run's apart from the time field.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.checkpoint import Checkpoints
from mmfsl_jax.run.faults import DiskSpaceError, TrainingStopped
from mmfsl_jax.run.train import train_and_evaluate

STEPS = 12
OVERRIDES = [f"run.num_steps={STEPS}", "run.checkpoint_every=1", "run.log_every=2",
             "run.eval_every=4"]
KILLS = 10


def config():
  return config_lib.apply_overrides(config_lib.load_config("tiny"), OVERRIDES)


def quietly(fn, *args, **kwargs):
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
       warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return fn(*args, **kwargs)


def finish(workdir: Path) -> None:
  quietly(train_and_evaluate, config(), workdir, progress=False)


def records(workdir: Path) -> list[dict]:
  return [{k: v for k, v in json.loads(line).items() if k != "time"}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def final(workdir: Path):
  checkpoints = Checkpoints(workdir, create=False)
  try:
    step = checkpoints.latest.latest_step()
    return step, jax.tree_util.tree_leaves(checkpoints.latest.restore(step)["params"])
  finally:
    checkpoints.close()


def same_result(workdir: Path, reference: Path) -> bool:
  (step_a, a), (step_b, b) = final(workdir), final(reference)
  return (step_a == step_b == STEPS and all(np.array_equal(x, y) for x, y in zip(a, b))
          and records(workdir) == records(reference))


def steps(workdir: Path) -> set[int]:
  path = workdir / "checkpoints"
  return {int(p.name) for p in path.iterdir() if p.name.isdigit()} if path.is_dir() else set()


def cli(workdir: Path) -> list[str]:
  return [sys.executable, "-m", "mmfsl_jax.cli", "train", "--config", "tiny", "--workdir",
          str(workdir), "--no-progress", *OVERRIDES]


def sigkill_row(reference: Path, root: Path, seed: int = 0) -> dict:
  """KILLS kills of `mmfsl train`, each a random moment after the process last wrote a new
  checkpoint (0-0.6 s: mid-save, mid-step or mid-validation), then a resume per kill."""
  rng, results, moments = random.Random(seed), [], []
  env = dict(os.environ, MMFSL_HUGE_PAGES="0")
  for kill in range(KILLS):
    workdir = root / f"kill{kill}"
    target = rng.randint(1, STEPS - 2)   # kill after this step's checkpoint ...
    delay = rng.uniform(0.0, 0.6)        # ... and this long after it appeared
    proc = subprocess.Popen(cli(workdir), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and max(steps(workdir), default=-1) < target:
      time.sleep(0.01)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    moments.append({"after_checkpoint": target, "delay_s": round(delay, 3), "killed": killed,
                    "checkpoints_left": sorted(steps(workdir))})
    finish(workdir)
    if killed:   # else it had finished before the kill: not a try
      results.append(same_result(workdir, reference))
  return {"fault": "SIGKILL at a random moment (0-0.6 s after a new checkpoint: mid-step, "
                   "mid-save or mid-validation)", "tried": len(results),
          "same_result": sum(results), "moments": moments,
          "outcome": f"resumed each time ({KILLS - len(results)} run(s) finished before "
                     f"their kill)"}


def signal_during_save_row(reference: Path, root: Path, signum: int) -> dict:
  """The signal arrives while step 5's checkpoint is being saved (in-process)."""
  workdir, save, sent = root / f"signal{signum}", Checkpoints.save_latest, []

  def interrupted(self, state, extra=None):
    if int(state.step) == 5 and not sent:
      sent.append(True)
      os.kill(os.getpid(), signum)
    save(self, state, extra)

  Checkpoints.save_latest = interrupted
  try:
    quietly(train_and_evaluate, config(), workdir, progress=False)
    stopped = None
  except TrainingStopped as error:
    stopped = error
  finally:
    Checkpoints.save_latest = save
  finish(workdir)
  ok = stopped is not None and stopped.code == 128 + signum and stopped.step == 5
  return {"fault": f"{signal.Signals(signum).name} during a checkpoint save", "tried": 1,
          "same_result": int(ok and same_result(workdir, reference)),
          "outcome": f"exit {stopped.code if stopped else None} after saving step "
                     f"{stopped.step if stopped else None}; resumed"}


def _damaged(step_dir: Path):
  """(file kind, damage, function) for every file of a checkpoint, three damages each."""
  for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
    kind = str(path.relative_to(step_dir))
    if "/d/" in f"/{kind}":
      kind = kind.split("/d/")[0] + "/d/<data file>"
    yield kind, path


def _truncate(path: Path) -> None:
  path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def _flip(path: Path) -> None:
  data = bytearray(path.read_bytes())
  if data:
    data[len(data) // 2] ^= 0x10
  path.write_bytes(bytes(data))


DAMAGES = {"truncated": _truncate, "deleted": lambda p: p.unlink(), "bit-flipped": _flip}


def checkpoint_rows(reference: Path, root: Path) -> list[dict]:
  """Each file kind of the latest checkpoint, damaged each way, then a resume."""
  rows, seen = [], set()
  for kind, _ in _damaged(reference / "checkpoints" / str(STEPS)):
    if kind in seen:
      continue
    seen.add(kind)
    for damage, apply in DAMAGES.items():
      workdir = Path(shutil.copytree(reference, root / f"ckpt_{len(rows)}"))
      step_dir = workdir / "checkpoints" / str(STEPS)
      for k, path in _damaged(step_dir):
        if k == kind:
          apply(path)
      finish(workdir)
      set_aside = (workdir / "checkpoints" / f"{STEPS}.corrupt").is_dir()
      rows.append({"fault": f"checkpoint file {kind} {damage}", "tried": 1,
                   "same_result": int(same_result(workdir, reference)),
                   "outcome": "set aside, resumed from the previous checkpoint" if set_aside
                              else "read as is (the damage changed nothing it restores)"})
  return rows


def disk_full_row(reference: Path, root: Path) -> dict:
  workdir, save = root / "disk_full", Checkpoints.save_latest

  def failing(self, state, extra=None):
    if int(state.step) == 4:
      raise OSError(28, "No space left on device")
    save(self, state, extra)

  Checkpoints.save_latest = failing
  try:
    quietly(train_and_evaluate, config(), workdir, progress=False)
    error = None
  except DiskSpaceError as caught:
    error = caught
  finally:
    Checkpoints.save_latest = save
  kept = max(steps(workdir), default=None)
  finish(workdir)   # space is back
  return {"fault": "disk full during a save (ENOSPC)", "tried": 1,
          "same_result": int(error is not None and kept == 3 and same_result(workdir, reference)),
          "outcome": f"clear error, checkpoint {kept} intact; resumed once space was back"}


def torn_log_row(reference: Path, root: Path) -> dict:
  workdir = Path(shutil.copytree(reference, root / "torn"))
  shutil.rmtree(workdir / "checkpoints" / str(STEPS))
  with (workdir / "metrics.jsonl").open("a") as f:
    f.write('{"step": 13, "split": "tr')
  out = io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    train_and_evaluate(config(), workdir, progress=False)
  said = "cut short" in out.getvalue()
  return {"fault": "metrics.jsonl with a torn last line", "tried": 1,
          "same_result": int(said and same_result(workdir, reference)),
          "outcome": "dropped on resume, and said so" if said else "not reported"}


def two_trains_row(root: Path) -> dict:
  workdir, env = root / "two", dict(os.environ, MMFSL_HUGE_PAGES="0")
  runs = [subprocess.Popen(cli(workdir), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True) for _ in range(2)]
  codes = sorted(run.wait() for run in runs)
  return {"fault": "two trains started at once on one workdir", "tried": 1,
          "same_result": int(codes == [0, 2]),
          "outcome": f"exit codes {codes}: one trained, one refused naming the holder"}


def main(out_dir: str) -> None:
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  root = Path(tempfile.mkdtemp(prefix="fault_matrix_"))
  t0 = time.time()
  reference = root / "reference"
  finish(reference)
  rows = [sigkill_row(reference, root),
          signal_during_save_row(reference, root, signal.SIGTERM),
          signal_during_save_row(reference, root, signal.SIGINT),
          *checkpoint_rows(reference, root), disk_full_row(reference, root),
          torn_log_row(reference, root), two_trains_row(root)]
  result = {"rows": rows, "seconds": round(time.time() - t0, 1),
            "jax": jax.__version__, "cores": os.cpu_count()}
  (out / "fault_matrix.json").write_text(json.dumps(result, indent=1))
  print("| fault | times tried | same result as uninterrupted | outcome |")
  print("| --- | --- | --- | --- |")
  for row in rows:
    print(f"| {row['fault']} | {row['tried']} | {row['same_result']} | "
          f"{row.get('outcome', '')} |")
  shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent))
