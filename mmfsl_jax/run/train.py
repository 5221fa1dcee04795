"""Meta-training: `train_and_evaluate(config, workdir)`, importable from notebooks.

Writes into workdir: config.json (a rerun must match it), metrics.jsonl (one JSON object per
log or validation event), checkpoints/ (latest, for resuming) and best/ (best validation
accuracy, for eval). Running again with the same workdir resumes from the latest checkpoint
and continues exactly: the sampler position and RNG keys are functions of the step, log
lines written after that checkpoint are dropped and written again, and the train records of
the unfinished log window are saved with the checkpoint, so a train record always averages
the `steps` meta-steps since the previous one, whether or not the run was interrupted.

Faults (see faults.py and checkpoint.py):
- killed at any moment (SIGKILL, the OOM killer): the next run resumes from the
  last complete checkpoint and ends with the same params and metrics as an uninterrupted run;
  files the loop rewrites (config.json, metrics.jsonl on resume) are replaced atomically, and
  a half-written last line of metrics.jsonl is dropped;
- an unreadable or corrupt checkpoint: a warning names it and the previous one is used;
- SIGTERM/SIGINT: the current step finishes, a checkpoint is saved and waited for, and
  `TrainingStopped` (SystemExit with status 143 / 130) ends the process without a traceback;
- a non-finite metric, gradient or updated parameter: NonFiniteLossError naming the step and
  the parts (inner loss, outer loss, parameter groups), the last good checkpoint kept; with
  `skip_nonfinite_steps=True` such updates are dropped and counted (`skipped_steps`);
- too little disk space: DiskSpaceError before training starts, and when the disk fills up.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
import sys
import time

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from mmfsl_jax.data.pipeline import prefetch
from mmfsl_jax.errors import CheckpointError, UserError
from mmfsl_jax.meta.step import TrainState, init_train_state, make_meta_step
from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run import legacy
from mmfsl_jax.run.checkpoint import Checkpoints, state_bytes
from mmfsl_jax.run import autotune
from mmfsl_jax.run.data import prepare_splits
from mmfsl_jax.run.image_features import feature_cache_report
from mmfsl_jax.run.evaluators.episodic import evaluate_episodes, make_batched_predict
from mmfsl_jax.run.faults import (DiskSpaceError, NonFiniteLossError, StopSignals, TrainingStopped,
                                  check_free_space, describe_nonfinite, is_disk_full)
from mmfsl_jax.run.sharding import check_splits, is_primary, replicate, shard_tasks, to_host
from mmfsl_jax.run.workdir import open_checkpoints
from mmfsl_jax.run.workdir_lock import check_same_workdir, hold_workdir

__all__ = ["NonFiniteLossError", "DiskSpaceError", "TrainingStopped", "train_and_evaluate",
           "check_workdir", "save_config"]

# Settings a resumed run may change: how long to train and how often to log, validate, save.
# skip_nonfinite_steps too: a run stopped by a non-finite step is resumed with it set.
# conv_impl, task_chunk and shard_tasks too: they change how and where the step is computed
# (so a run can move to more devices), not what it computes.
RESUMABLE_CHANGES = ("run.num_steps", "run.log_every", "run.eval_every", "run.checkpoint_every",
                     "run.val_episodes", "eval.episodes", "run.skip_nonfinite_steps",
                     "model.image.conv_impl", "run.task_chunk", "run.shard_tasks")
KEEP_CHECKPOINTS = 2


def _write_atomically(path: Path, text: str) -> None:
  """Replaces `path` by `text` in one step: a kill leaves the old or the new file, never half."""
  tmp = path.with_name(f".{path.name}.tmp")
  with tmp.open("w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def check_workdir(workdir: Path, config) -> None:
  """Creates workdir, checks it is writable and that a rerun uses a compatible config.

  Writes nothing else: config.json is written by `save_config` once the run is known to
  start, so a rejected request never pins the workdir to a bad config.
  """
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test.{jax.process_index()}.{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as error:
    raise UserError(f"workdir {workdir} is not writable: {error}") from None
  saved = workdir / "config.json"
  current = config_lib.config_to_dict(config)
  if saved.exists():
    try:
      previous = json.loads(saved.read_text())
    except ValueError as error:
      raise CheckpointError(f"{saved} is not valid JSON ({error}); restore it from a copy or "
                            f"use a new workdir") from None
    # An older layout is translated; a field added since that run had its default there.
    if legacy.is_flat(previous):
      legacy.warn_flat_workdir(saved)
    previous = config_lib.saved_config(previous)
    if bool(previous["run"]["val_episodes"]) != bool(config.run.val_episodes):
      raise CheckpointError(
          f"{workdir} holds a run {'with' if previous['run']['val_episodes'] else 'without'} "
          f"validation; run.val_episodes may change on resume but not to or from 0 (the best "
          f"checkpoint, which eval uses, would mean something else)")
    diffs = [d for d in config_lib.config_differences(previous, current)
             if d.split(":")[0] not in RESUMABLE_CHANGES]
    if diffs:
      raise CheckpointError(
          f"{workdir} holds a run with a different config; use a new workdir or the same "
          f"settings (only {', '.join(RESUMABLE_CHANGES)} may change on resume). "
          f"Differences (saved -> now): " + "; ".join(diffs))


def save_config(workdir: Path, config) -> None:
  _write_atomically(workdir / "config.json",
                    json.dumps(config_lib.config_to_dict(config), indent=2))


def _parse(line: str) -> dict | None:
  try:
    record = json.loads(line)
  except ValueError:
    return None
  return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


def _trim_metrics(path: Path, step: int) -> str | None:
  """Drops log lines past `step` (written after the checkpoint a resumed run starts from) and
  lines cut short (a kill during a write); -> what was dropped, for the log (None: nothing)."""
  if not path.exists():
    return None
  text = path.read_text()
  lines = text.splitlines()
  records = [_parse(l) for l in lines]
  kept = "".join(l + "\n" for l, r in zip(lines, records) if r is not None and r["step"] <= step)
  if kept == text:
    return None
  _write_atomically(path, kept)
  torn = sum(r is None and bool(l.strip()) for l, r in zip(lines, records))
  later = sum(r is not None and r["step"] > step for r in records)
  parts = ([f"{torn} line(s) cut short (a kill while writing)"] if torn else []) + (
      [f"{later} record(s) past step {step} (logged after the checkpoint it resumes from)"]
      if later else [])
  return f"{path.name}: dropped " + " and ".join(parts) if parts else None


def _summarise(window: list[dict], skipping: bool) -> dict:
  """Means of the window's metrics over its steps that were not skipped."""
  kept = [m for m in window if not m.get("skipped")]
  names = [k for k in window[0] if k != "skipped"]
  means = {k: float(np.mean([m[k] for m in kept])) if kept else None for k in names}
  return {**means, "skipped_steps": len(window) - len(kept)} if skipping else means


def _short(metrics: dict) -> str:
  return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def _disk_full(workdir: Path, checkpoints: Checkpoints, error: BaseException) -> DiskSpaceError:
  last = checkpoints.latest_step()
  kept = f"the last complete checkpoint (step {last}) is kept" if last is not None else (
      "no checkpoint was saved yet")
  return DiskSpaceError(f"the disk holding {workdir} is full ({error}); {kept}. Free some space "
                        f"and run the same command to resume.")


@contextlib.contextmanager
def _disk_full_is_a_user_error(workdir: Path, checkpoints: Checkpoints):
  """A full disk (while training or while a checkpoint is written) as a DiskSpaceError."""
  try:
    yield
  except Exception as error:
    if is_disk_full(error):
      raise _disk_full(workdir, checkpoints, error) from error
    raise


def _due(done: int, every: int, last: int) -> bool:
  return done % every == 0 or done == last


@dataclasses.dataclass
class _Run:
  """Everything a training run needs besides its checkpoints, built from the config."""
  config: ml_collections.ConfigDict
  workdir: Path
  state: TrainState
  meta_step: Callable
  predict: Callable
  make_batch: Callable[[int], dict]
  val_sampler: object
  mesh: object
  rate: object
  primary: bool

  def say(self, message: str) -> None:
    if self.primary:   # of several processes, only the first writes logs and messages
      tqdm.write(message)


def _set_up(config, workdir: Path) -> _Run:
  splits, encodings = prepare_splits(config)
  say = tqdm.write if is_primary() else (lambda message: None)
  report = feature_cache_report(encodings)
  if report:
    say(report)
  train_sampler, val_sampler = build.training_samplers(config, splits)
  num_classes = splits["train"].num_classes
  optimizer = build.build_optimizer(config)
  first_batch = train_sampler.sample(0)
  example_task = jax.tree_util.tree_map(lambda x: x[0], first_batch)

  def learners(step_config):
    model = build.build_model(step_config, encodings, splits["train"])
    return model, build.build_learner(step_config, model, num_classes=num_classes)

  mesh = build.task_mesh(config)
  def measure(choice, best) -> float:
    candidate = autotune.with_choices(config, choice)
    return autotune.tasks_per_second(learners(candidate)[1], optimizer, example_task,
                                     first_batch, seed=config.seed,
                                     task_chunk=candidate.run.task_chunk,
                                     give_up_below=best and best / 2)

  step_config = config   # several devices: the fixed rules (a measurement runs on one)
  if mesh is None:
    step_config = autotune.with_choices(config,
                                        autotune.tuned_choices(config, measure, say=say))
  model, learner = learners(step_config)
  eval_learner = build.build_learner(step_config, model,
                                     n_way=build.evaluation_shape(config)[0], for_eval=True,
                                     num_classes=num_classes)
  state = init_train_state(learner, optimizer, example_task, config.seed)
  check_free_space(workdir, state_bytes(state), copies=KEEP_CHECKPOINTS + 3)
  make_batch = train_sampler.sample
  if mesh is not None:   # before restoring, so that a checkpoint comes back replicated
    check_splits(config.task.meta_batch, mesh)
    state = replicate(state, mesh)
    make_batch = lambda step: shard_tasks(train_sampler.sample(step), mesh)  # prefetch's thread
  meta_step = make_meta_step(learner, optimizer, check_finite=True,
                             skip_nonfinite=config.run.skip_nonfinite_steps,
                             task_chunk=step_config.run.task_chunk)
  return _Run(config, workdir, state, meta_step,
              make_batched_predict(eval_learner, config.run.task_chunk), make_batch,
              val_sampler, mesh, build.learning_rate(config), is_primary())


class _TrainLog:
  """Hook: per-step metrics gathered into one train record every run.log_every steps (the
  window of an unfinished record is saved with each checkpoint)."""

  def __init__(self, run: _Run, file, window: list[dict], bar, start: int):
    self.run, self.file, self.window, self.bar = run, file, window, bar
    self.skipping = bool(run.config.run.skip_nonfinite_steps)
    self.t0 = time.time()
    self.record: dict = {"step": start}

  def after_step(self, step: int, metrics, finite, checkpoints: Checkpoints) -> None:
    metrics, finite = to_host((metrics, finite))
    metrics = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, ok in finite.items() if not ok]
    if bad and not self.skipping:
      last = checkpoints.latest_step()
      raise NonFiniteLossError(
          f"non-finite {describe_nonfinite(bad)} at step {step} ({_short(metrics)}); the last "
          f"good checkpoint {f'(step {last}) ' if last is not None else ''}is kept. Lower "
          f"optim.lr or inner.lr, set optim.grad_clip, check the data, or set "
          f"run.skip_nonfinite_steps=True to skip such steps.")
    self.window.append({**metrics, "skipped": True} if bad else metrics)
    done, settings = step + 1, self.run.config.run
    if not _due(done, settings.log_every, settings.num_steps):
      return
    record = {"step": done, "split": "train", "steps": len(self.window),
              "time": round(time.time() - self.t0, 2), **_summarise(self.window, self.skipping)}
    if callable(self.run.rate):   # a schedule: the rate of the window's last step
      record["learning_rate"] = float(self.run.rate(done - 1))
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()
    if record["loss"] is not None:
      self.bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
    self.record, self.window[:] = record, []


def _validate(run: _Run, state: TrainState, file, checkpoints: Checkpoints, done: int) -> None:
  """Hook: validation episodes every run.eval_every steps; the best state kept."""
  settings = run.config.run
  if run.val_sampler is None or not _due(done, settings.eval_every, settings.num_steps):
    return
  summary = evaluate_episodes(run.predict, state.params, run.val_sampler,
                              settings.val_episodes, run.mesh)
  file.write(json.dumps({"step": done, "split": "val", **summary}) + "\n")
  file.flush()
  checkpoints.save_best(state, summary["accuracy"]["mean"])
  run.say(f"step {done}: val accuracy {summary['accuracy']['mean']:.4f} "
          f"± {summary['accuracy']['ci95']:.4f}")


def _stopped(run: _Run, state: TrainState, start: int, window: list[dict],
             checkpoints: Checkpoints, stop: StopSignals) -> TrainingStopped:
  """After SIGTERM/SIGINT: the reached step saved and waited for; the error to raise."""
  at = int(state.step)
  if at > start:
    checkpoints.save_latest(state, {"window": window})
  checkpoints.wait()
  saved = (f"checkpoint saved in {run.workdir / 'checkpoints' / str(at)}"
           if checkpoints.latest_step() == at else "no step was run, nothing to save")
  return TrainingStopped(stop.signum, at,
                         f"stopped by {stop.name} at step {at}; {saved}. Run the same "
                         f"command to resume.")


def _train(run: _Run, checkpoints: Checkpoints, progress: bool) -> dict:
  """The loop: resume, then meta-steps with the hooks (log, validation, checkpoints, signals)
  until run.num_steps; returns the last train record."""
  state, window = run.state, []
  resumed = checkpoints.resume(state)
  if resumed is not None:
    state, extra = resumed
    window = list(extra.get("window", []))
    run.say(f"resuming from step {int(state.step)} in {run.workdir}")
  metrics_path = run.workdir / "metrics.jsonl"
  if run.primary:
    dropped = _trim_metrics(metrics_path, int(state.step))
    if dropped:
      run.say(dropped)
  if run.mesh is not None:
    processes = f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""
    run.say(f"meta-batch of {run.config.task.meta_batch} tasks split over {run.mesh.size} "
            f"devices{processes}")
  settings, start = run.config.run, int(state.step)
  bar = tqdm(total=settings.num_steps, initial=start, disable=not (progress and run.primary),
             desc="meta-train")
  stop = StopSignals()
  with contextlib.closing(bar), stop, (
      metrics_path.open("a") if run.primary else open(os.devnull, "w")) as file:
    log = _TrainLog(run, file, window, bar, start)
    for step, batch in prefetch(run.make_batch, start, settings.num_steps):
      if stop.signum is not None:
        error = _stopped(run, state, start, log.window, checkpoints, stop)
        bar.close()
        print(f"mmfsl: {error}", file=sys.stderr, flush=True)
        raise error
      state, metrics, finite = run.meta_step(state, batch)
      log.after_step(step, metrics, finite, checkpoints)
      done = step + 1
      _validate(run, state, file, checkpoints, done)
      if _due(done, settings.checkpoint_every, settings.num_steps):
        checkpoints.save_latest(state, {"window": log.window})
      bar.update(1)
    checkpoints.wait()   # still inside StopSignals: a late signal cannot cut the last save
  return log.record


def train_and_evaluate(config, workdir: str | Path, *, progress: bool = True) -> dict:
  """Meta-trains per `config` in `workdir`; returns the final log record.

  Raises WorkdirBusy (another run trains in `workdir`), NonFiniteLossError, DiskSpaceError,
  CheckpointError (user errors) and, after a SIGTERM/SIGINT and a saved checkpoint,
  TrainingStopped.
  """
  config = build.effective_config(config)
  workdir = Path(workdir)
  # one run per workdir (workdir_lock.py); taken before anything in it is read or written
  with hold_workdir(workdir) if is_primary() else contextlib.nullcontext():
    check_same_workdir(workdir)
    return _train_in(config, workdir, progress)


def _train_in(config, workdir: Path, progress: bool) -> dict:
  check_workdir(workdir, config)
  run = _set_up(config, workdir)
  if run.primary:
    save_config(workdir, config)
  checkpoints = open_checkpoints(workdir, config, keep=KEEP_CHECKPOINTS)
  try:
    with _disk_full_is_a_user_error(workdir, checkpoints):
      try:
        return _train(run, checkpoints, progress)
      finally:
        checkpoints.wait()
  finally:
    checkpoints.close()
