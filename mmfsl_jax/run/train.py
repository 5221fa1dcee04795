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

import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.checkpoint import Checkpoints, state_bytes
from mmfsl_jax.data.augment import wrap_train_sampler
from mmfsl_jax.data.pipeline import prefetch
from mmfsl_jax.run.data import prepare_splits
from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.errors import CheckpointError, UserError
from mmfsl_jax.run.evaluators.episodic import evaluate_episodes, make_batched_predict
from mmfsl_jax.run.build import build_learner, build_model, build_optimizer, learning_rate
from mmfsl_jax.run.faults import (DiskSpaceError, NonFiniteLossError, StopSignals, TrainingStopped,
                              check_free_space, describe_nonfinite, is_disk_full)
from mmfsl_jax.meta.step import init_train_state, make_meta_step
from mmfsl_jax.run.sharding import (check_splits, is_primary, replicate, shard_tasks, task_mesh_for,
                                to_host)

__all__ = ["NonFiniteLossError", "DiskSpaceError", "TrainingStopped", "train_and_evaluate",
           "effective_config", "check_workdir", "save_config", "make_samplers"]

# Settings a resumed run may change: how long to train and how often to log, validate, save.
# skip_nonfinite_steps too: a run stopped by a non-finite step is resumed with it set.
# conv_impl, task_chunk and shard_tasks too: they change how and where the step is computed
# (so a run can move to more devices), not what it computes.
RESUMABLE_CHANGES = ("num_steps", "log_every", "eval_every", "checkpoint_every", "val_episodes",
                     "eval_episodes", "skip_nonfinite_steps", "conv_impl", "task_chunk",
                     "shard_tasks")
KEEP_CHECKPOINTS = 2


def effective_config(config):
  config_lib.validate(config)
  return config_lib.shrink_for_smoke(config) if config.smoke else config


def _write_atomically(path: Path, text: str) -> None:
  """Replaces `path` by `text` in one step: a kill leaves the old or the new file, never half."""
  tmp = path.with_name(f".{path.name}.tmp")
  with tmp.open("w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _with_defaults(saved: dict, defaults: dict) -> dict:
  """`saved` with the keys it lacks taken from `defaults` (recursively)."""
  merged = dict(saved)
  for key, value in defaults.items():
    if key not in merged:
      merged[key] = value
    elif isinstance(value, dict) and isinstance(merged[key], dict):
      merged[key] = _with_defaults(merged[key], value)
  return merged


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
    # A field added to the library since that run had its default value there.
    previous = _with_defaults(previous, config_lib.config_to_dict(config_lib.base_config()))
    if bool(previous.get("val_episodes")) != bool(config.val_episodes):
      raise CheckpointError(
          f"{workdir} holds a run {'with' if previous.get('val_episodes') else 'without'} "
          f"validation; val_episodes may change on resume but not to or from 0 (the best "
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


def make_samplers(config, splits):
  train = EpisodeSampler(splits["train"], n_way=config.n_way, k_shot=config.k_shot,
                         q_query=config.q_query, batch_size=config.meta_batch, seed=config.seed,
                         split_name="train")
  train = wrap_train_sampler(train, config)  # augmentation where the dataset calls for it
  if not config.val_episodes:
    return train, None   # no validation
  if "val" not in splits:
    raise UserError("the data has no validation split; set val_episodes=0 to train without "
                    "validation")
  eval_config = config_lib.evaluation_config(config)
  val = EpisodeSampler(splits["val"], n_way=eval_config.n_way, k_shot=eval_config.k_shot,
                       q_query=config.eval_q_query, seed=config.eval_seed + 1, split_name="val",
                       batch_size=min(config.eval_batch, config.val_episodes))
  return train, val


def _parse(line: str) -> dict | None:
  try:
    record = json.loads(line)
  except ValueError:
    return None
  return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


def _trim_metrics(path: Path, step: int) -> None:
  """Drops log lines past `step` (written after the checkpoint a resumed run starts from) and
  a line cut short by a kill."""
  if path.exists():
    text = path.read_text()
    lines = [l for l in text.splitlines() if (r := _parse(l)) is not None and r["step"] <= step]
    kept = "".join(l + "\n" for l in lines)
    if kept != text:
      _write_atomically(path, kept)


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


def train_and_evaluate(config, workdir: str | Path, *, progress: bool = True) -> dict:
  """Meta-trains per `config` in `workdir`; returns the final log record.

  Raises NonFiniteLossError, DiskSpaceError, CheckpointError (user errors) and, after a
  SIGTERM/SIGINT and a saved checkpoint, TrainingStopped.
  """
  config = effective_config(config)
  skipping = bool(config.get("skip_nonfinite_steps", False))
  workdir = Path(workdir)
  check_workdir(workdir, config)
  splits, text_info = prepare_splits(config)
  train_sampler, val_sampler = make_samplers(config, splits)
  model = build_model(config, text_info, splits["train"])
  num_classes = splits["train"].num_classes
  learner = build_learner(config, model, num_classes=num_classes)
  eval_learner = build_learner(config_lib.evaluation_config(config), model, for_eval=True,
                               num_classes=num_classes)
  optimizer = build_optimizer(config)
  rate = learning_rate(config)
  example_task = jax.tree_util.tree_map(lambda x: x[0], train_sampler.sample(0))
  state = init_train_state(learner, optimizer, example_task, config.seed)
  check_free_space(workdir, state_bytes(state), copies=KEEP_CHECKPOINTS + 3)
  mesh = task_mesh_for(config)
  if mesh is not None:   # before restoring, so that a checkpoint comes back replicated
    check_splits(config.meta_batch, mesh)
    state = replicate(state, mesh)
  primary = is_primary()   # of several processes, only the first writes logs and config.json
  say = tqdm.write if primary else lambda message: None
  if primary:
    save_config(workdir, config)

  checkpoints = Checkpoints(workdir, keep=KEEP_CHECKPOINTS)
  metrics_path = workdir / "metrics.jsonl"
  window: list[dict] = []
  try:
    resumed = checkpoints.resume(state)
  except BaseException:
    checkpoints.close()
    raise
  if resumed is not None:
    state, extra = resumed
    window = list(extra.get("window", []))
    say(f"resuming from step {int(state.step)} in {workdir}")
  if primary:
    _trim_metrics(metrics_path, int(state.step))

  make_batch = train_sampler.sample
  if mesh is not None:
    make_batch = lambda step: shard_tasks(train_sampler.sample(step), mesh)  # in prefetch's thread
    processes = f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""
    say(f"meta-batch of {config.meta_batch} tasks split over {mesh.size} devices{processes}")
  meta_step = make_meta_step(learner, optimizer, check_finite=True, skip_nonfinite=skipping,
                             task_chunk=config.task_chunk)
  predict = make_batched_predict(eval_learner, config.task_chunk)
  start = int(state.step)
  record: dict = {"step": start}
  bar = tqdm(total=config.num_steps, initial=start, disable=not (progress and primary),
             desc="meta-train")
  t0 = time.time()
  stop = StopSignals()
  stopped = False
  try:
    with stop, (metrics_path.open("a") if primary else open(os.devnull, "w")) as log:
      for step, batch in prefetch(make_batch, start, config.num_steps):
        if stop.signum is not None:
          stopped = True
          break
        state, metrics, finite = meta_step(state, batch)
        metrics, finite = to_host((metrics, finite))
        metrics = {k: float(v) for k, v in metrics.items()}
        bad = [k for k, ok in finite.items() if not ok]
        if bad and not skipping:
          last = checkpoints.latest_step()
          raise NonFiniteLossError(
              f"non-finite {describe_nonfinite(bad)} at step {step} ({_short(metrics)}); "
              f"the last good checkpoint "
              f"{f'(step {last}) ' if last is not None else ''}is kept. Lower learning_rate "
              f"or inner_lr, set grad_clip, check the data, or set skip_nonfinite_steps=True "
              f"to skip such steps.")
        window.append({**metrics, "skipped": True} if bad else metrics)
        done = step + 1
        if done % config.log_every == 0 or done == config.num_steps:
          record = {"step": done, "split": "train", "steps": len(window),
                    "time": round(time.time() - t0, 2), **_summarise(window, skipping)}
          if callable(rate):   # a schedule: the rate of the window's last step
            record["learning_rate"] = float(rate(done - 1))
          log.write(json.dumps(record) + "\n")
          log.flush()
          if record["loss"] is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
          window = []
        if val_sampler is not None and (done % config.eval_every == 0
                                        or done == config.num_steps):
          summary = evaluate_episodes(predict, state.params, val_sampler, config.val_episodes,
                                      mesh)
          val = {"step": done, "split": "val", **{f"{k}": v for k, v in summary.items()}}
          log.write(json.dumps(val) + "\n")
          log.flush()
          checkpoints.save_best(state, summary["accuracy"]["mean"])
          say(f"step {done}: val accuracy {summary['accuracy']['mean']:.4f} "
              f"± {summary['accuracy']['ci95']:.4f}")
        if done % config.checkpoint_every == 0 or done == config.num_steps:
          checkpoints.save_latest(state, {"window": window})
        bar.update(1)
      if stopped:
        at = int(state.step)
        if at > start:
          checkpoints.save_latest(state, {"window": window})
        checkpoints.wait()
        saved = (f"checkpoint saved in {workdir / 'checkpoints' / str(at)}"
                 if checkpoints.latest_step() == at else "no step was run, nothing to save")
        message = (f"stopped by {stop.name} at step {at}; {saved}. Run the same command to "
                   f"resume.")
        raise TrainingStopped(stop.signum, at, message)
      checkpoints.wait()   # still inside StopSignals: a late signal cannot cut the last save
  except TrainingStopped as stop_error:
    bar.close()
    print(f"mmfsl: {stop_error}", file=sys.stderr, flush=True)
    raise
  except Exception as error:
    if is_disk_full(error):
      raise _disk_full(workdir, checkpoints, error) from error
    raise
  finally:
    bar.close()
    try:
      checkpoints.wait()
    except Exception as error:
      if is_disk_full(error):
        raise _disk_full(workdir, checkpoints, error) from error
      raise
    finally:
      checkpoints.close()
  return record
