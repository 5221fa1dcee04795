"""The 20 one-shot runs of Lake et al. 2015 (20-way 1-shot, within one alphabet each) scored
with an image-only model trained on Omniglot."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import json
from pathlib import Path
import time

import jax
import numpy as np

from mmfsl_jax.data.sources import omniglot
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.registry import METHODS, names_with
from mmfsl_jax.run import build
from mmfsl_jax.run.data import dataset_image_size, image_channels, prepare_splits
from mmfsl_jax.run.evaluators.episodic import make_batched_predict
from mmfsl_jax.run.evaluators.test_time import test_time_config, test_time_moments
from mmfsl_jax.run.sharding import is_primary
from mmfsl_jax.run.workdir import require_checkpoint, restore_for

RUNS_WAY = 20


def one_shot_runs_task(run: dict) -> dict:
  """A 20-way 1-shot task from a one-shot run: support = its 20 training drawings with labels
  0..19 (class01..class20), query = its 20 test drawings (labels left 0: predict ignores them).
  Images [20, s, s, 1]."""
  n = len(run["train"])
  return {"support": {"image": np.asarray(run["train"], np.float32),
                      "label": np.arange(n, dtype=np.int32)},
          "query": {"image": np.asarray(run["test"], np.float32),
                    "label": np.zeros(len(run["test"]), np.int32)}}


def one_shot_runs_accuracy(predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
                           runs: Sequence[Mapping]) -> dict:
  """Accuracy of `predict(train [20, ...], test [20, ...]) -> int [20]` (train index per item).

  Returns {"per_run": {run name: accuracy}, "mean": mean of the per-run accuracies}.
  """
  if not runs:
    raise UserError("no one-shot runs given")
  per_run = {}
  for run in runs:
    answers = np.asarray(run["answers"])
    predicted = np.asarray(predict(run["train"], run["test"]))
    if predicted.shape != answers.shape:
      raise UserError(f"predict returned shape {predicted.shape} for run {run['name']!r}, "
                       f"expected {answers.shape} (one train index per test item)")
    per_run[run["name"]] = float(np.mean(predicted == answers))
  return {"per_run": per_run, "mean": float(np.mean(list(per_run.values())))}


def _check_model_fits_the_runs(config, workdir) -> None:
  modalities = tuple(config.data.modalities)
  if modalities != ("image",):
    raise UserError(
        f"--benchmark omniglot-runs needs an image-only model, but the model in {workdir} "
        f"uses data.modalities={modalities}; the one-shot runs have images only. Train one "
        f"with data.modalities=\"('image',)\" (e.g. --config omniglot_protonet)")
  channels = image_channels(config)
  if channels != 1:
    raise UserError(
        f"--benchmark omniglot-runs needs a model of 1-channel (grayscale) images, but the "
        f"model in {workdir} was trained on data.name={config.data.name!r} with "
        f"{channels}-channel images; train on data.name=omniglot or tfds_omniglot")
  name, n_way = config.learner.name, config.task.n_way
  if n_way != RUNS_WAY and not METHODS[name].any_way:
    raise UserError(
        f"--benchmark omniglot-runs is 20-way, but the model in {workdir} is {name} with a "
        f"head of task.n_way={n_way} outputs; {name} can only be evaluated at the way it was "
        f"trained. Train it with task.n_way=20, or use one of "
        f"{', '.join(names_with('any_way'))} (any way)")


def evaluate_omniglot_runs(workdir, *, data_dir=None, write: bool = True,
                           inner_steps: int | None = None, output: str = "eval.json",
                           batch_norm: str = "trained", population_batches: int = 50,
                           seed: int | None = None) -> dict:
  """The best checkpoint of an Omniglot workdir on the 20 one-shot runs of Lake et al. 2015.

  Each run is one 20-way 1-shot task (`one_shot_runs_task`); the prediction for a test item is
  the arg-max of the meta-learner's `predict` (ProtoNet: the nearest prototype; MAML: after
  adapting on the 20 drawings). The learner is built 20-way, which ProtoNet allows for any
  training way; MAML's head has task.n_way outputs, so it needs a model trained 20-way.
  The runs' zips come from `data_dir`, else the config's data.dir (data.name=omniglot), else
  $MMFSL_OMNIGLOT_DIR. `batch_norm="population"`: as in `evaluate_workdir`, the moments of
  training tasks (the training zips from the same directory, for data.name=omniglot) drawn
  with `seed` (default: eval.seed). Writes workdir/`output`: {"benchmark", "accuracy",
  "error_rate", "per_run": {run: accuracy}, "settings"}.
  """
  workdir = Path(workdir)
  config = test_time_config(workdir, inner_steps=inner_steps, batch_norm=batch_norm,
                            population_batches=population_batches)
  _check_model_fits_the_runs(config, workdir)
  require_checkpoint(workdir)
  t0 = time.time()
  if data_dir is None:
    data_dir = (config.data.dir or None) if config.data.name == "omniglot" else None
  image_size = dataset_image_size(config)
  runs = omniglot.load_one_shot_runs(data_dir, image_size, resize=config.data.omniglot.resize)
  model = build.build_model(config, {}, None)
  learner = build.build_learner(config, model, n_way=RUNS_WAY, for_eval=True)
  state = restore_for(workdir, learner, config, one_shot_runs_task(runs[0]))
  train_split = None
  if batch_norm == "population":
    if config.data.name == "omniglot" and data_dir is not None:
      config.data.dir = str(data_dir)
    train_split = prepare_splits(config)[0]["train"]
  moments, norm = test_time_moments(batch_norm, population_batches, config, model,
                                    state.params, train_split,
                                    config.eval.seed if seed is None else seed)
  batched = make_batched_predict(learner, config.run.task_chunk, moments)

  def predict(train, test):
    task = one_shot_runs_task({"train": train, "test": test})
    batch = jax.tree_util.tree_map(lambda x: x[None], task)
    return np.asarray(batched(state.params, batch))[0].argmax(-1)

  scores = one_shot_runs_accuracy(predict, runs)
  result = {"benchmark": "omniglot-runs", "accuracy": scores["mean"],
            "error_rate": 1.0 - scores["mean"], "per_run": scores["per_run"],
            "settings": {"checkpoint_step": int(state.step), "runs": len(runs),
                         "n_way": RUNS_WAY, "k_shot": 1, "method": config.learner.name,
                         "dataset": config.data.name, "image_size": image_size,
                         "trained_n_way": config.task.n_way,
                         "trained_k_shot": config.task.k_shot,
                         "inner_steps": build.eval_inner_steps(config), "batch_norm": norm,
                         "seconds": round(time.time() - t0, 2)}}
  if write and is_primary():
    (workdir / output).write_text(json.dumps(result, indent=2))
  return result
