"""Meta-training: `train_and_evaluate(config, workdir)`, importable from notebooks.

Writes into workdir: config.json (a rerun must match it), metrics.jsonl (one JSON object per
log or validation event), checkpoints/ (latest, for resuming) and best/ (best validation
accuracy, for eval). Running again with the same workdir resumes from the latest checkpoint
and continues exactly: the sampler position and RNG keys are functions of the step, and log
lines written after that checkpoint are dropped and written again. A train record averages
the `steps` meta-steps since the previous one; a run resumed from a step that is not a
multiple of log_every starts with a shorter window.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from mmfsl_jax import config as config_lib
from mmfsl_jax.checkpoint import Checkpoints
from mmfsl_jax.data.pipeline import prefetch
from mmfsl_jax.data.prepare import prepare_splits
from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.errors import CheckpointError, UserError
from mmfsl_jax.evaluate import evaluate_episodes, make_batched_predict
from mmfsl_jax.factory import build_learner, build_model, build_optimizer
from mmfsl_jax.meta.step import init_train_state, make_meta_step


class NonFiniteLossError(UserError):
  """The loss or gradient became NaN/inf; the last good checkpoint is kept."""


# Settings a resumed run may change: how long to train and how often to log, validate, save.
RESUMABLE_CHANGES = ("num_steps", "log_every", "eval_every", "checkpoint_every", "val_episodes",
                     "eval_episodes")


def effective_config(config):
  config_lib.validate(config)
  return config_lib.shrink_for_smoke(config) if config.smoke else config


def check_workdir(workdir: Path, config) -> None:
  """Creates workdir, checks it is writable and that a rerun uses a compatible config.

  Writes nothing else: config.json is written by `save_config` once the run is known to
  start, so a rejected request never pins the workdir to a bad config.
  """
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / ".write_test"
    probe.write_text("ok")
    probe.unlink()
  except OSError as error:
    raise UserError(f"workdir {workdir} is not writable: {error}") from None
  saved = workdir / "config.json"
  current = config_lib.config_to_dict(config)
  if saved.exists():
    previous = json.loads(saved.read_text())
    diffs = [d for d in config_lib.config_differences(previous, current)
             if d.split(":")[0] not in RESUMABLE_CHANGES]
    if diffs:
      raise CheckpointError(
          f"{workdir} holds a run with a different config; use a new workdir or the same "
          f"settings (only {', '.join(RESUMABLE_CHANGES)} may change on resume). "
          f"Differences (saved -> now): " + "; ".join(diffs))


def save_config(workdir: Path, config) -> None:
  (workdir / "config.json").write_text(json.dumps(config_lib.config_to_dict(config), indent=2))


def make_samplers(config, splits):
  train = EpisodeSampler(splits["train"], n_way=config.n_way, k_shot=config.k_shot,
                         q_query=config.q_query, batch_size=config.meta_batch, seed=config.seed,
                         split_name="train")
  val = EpisodeSampler(splits["val"], n_way=config.n_way, k_shot=config.k_shot,
                       q_query=config.eval_q_query, seed=config.eval_seed + 1, split_name="val",
                       batch_size=min(config.eval_batch, config.val_episodes))
  return train, val


def _trim_metrics(path: Path, step: int) -> None:
  """Drops log lines past `step` (written after the checkpoint a resumed run starts from)."""
  if path.exists():
    lines = [l for l in path.read_text().splitlines() if l and json.loads(l)["step"] <= step]
    path.write_text("".join(l + "\n" for l in lines))


def _check_finite(step: int, metrics: dict) -> None:
  bad = [k for k in ("loss", "objective", "grad_norm") if not math.isfinite(metrics[k])]
  if bad:
    raise NonFiniteLossError(
        f"non-finite {', '.join(bad)} at step {step} ({metrics}); the last good checkpoint is "
        f"kept. Lower learning_rate / inner_lr or check the data.")


def train_and_evaluate(config, workdir: str | Path, *, progress: bool = True) -> dict:
  """Meta-trains per `config` in `workdir`; returns the final log record."""
  config = effective_config(config)
  workdir = Path(workdir)
  check_workdir(workdir, config)
  splits, text_info = prepare_splits(config)
  train_sampler, val_sampler = make_samplers(config, splits)
  save_config(workdir, config)
  model = build_model(config, text_info, splits["train"])
  learner = build_learner(config, model)
  eval_learner = build_learner(config, model, for_eval=True)
  optimizer = build_optimizer(config)
  example_task = jax.tree_util.tree_map(lambda x: x[0], train_sampler.sample(0))
  state = init_train_state(learner, optimizer, example_task, config.seed)

  checkpoints = Checkpoints(workdir)
  metrics_path = workdir / "metrics.jsonl"
  restored = checkpoints.restore_latest(state)
  if restored is not None:
    state = restored
    tqdm.write(f"resuming from step {int(state.step)} in {workdir}")
  _trim_metrics(metrics_path, int(state.step))

  meta_step = make_meta_step(learner, optimizer)
  predict = make_batched_predict(eval_learner)
  start = int(state.step)
  window: list[dict] = []
  record: dict = {"step": start}
  bar = tqdm(total=config.num_steps, initial=start, disable=not progress, desc="meta-train")
  t0 = time.time()
  try:
    with metrics_path.open("a") as log:
      for step, batch in prefetch(train_sampler.sample, start, config.num_steps):
        state, metrics = meta_step(state, batch)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        _check_finite(step, metrics)
        window.append(metrics)
        done = step + 1
        if done % config.log_every == 0 or done == config.num_steps:
          record = {"step": done, "split": "train", "steps": len(window),
                    "time": round(time.time() - t0, 2),
                    **{k: float(np.mean([m[k] for m in window])) for k in window[0]}}
          log.write(json.dumps(record) + "\n")
          log.flush()
          bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
          window = []
        if done % config.eval_every == 0 or done == config.num_steps:
          summary = evaluate_episodes(predict, state.params, val_sampler, config.val_episodes)
          val = {"step": done, "split": "val", **{f"{k}": v for k, v in summary.items()}}
          log.write(json.dumps(val) + "\n")
          log.flush()
          checkpoints.save_best(state, summary["accuracy"]["mean"])
          bar.write(f"step {done}: val accuracy {summary['accuracy']['mean']:.4f} "
                    f"± {summary['accuracy']['ci95']:.4f}")
        if done % config.checkpoint_every == 0 or done == config.num_steps:
          checkpoints.save_latest(state)
        bar.update(1)
  finally:
    bar.close()
    checkpoints.wait()
    checkpoints.close()
  return record
