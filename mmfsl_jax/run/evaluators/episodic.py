"""Evaluation over many episodes: accuracy, macro recall, macro F1 with 95% intervals; and the
20 one-shot runs of Lake et al. 2015 for models trained on Omniglot."""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.checkpoint import Checkpoints
from mmfsl_jax.data.sources import omniglot
from mmfsl_jax.run.data import dataset_channels, dataset_image_size, prepare_splits
from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.nn.encoders.batch_norm import Moments, fixed_batch_moments
from mmfsl_jax.errors import CheckpointError, UserError
from mmfsl_jax.run.build import build_learner, build_model, build_optimizer
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.step import init_train_state, resolve_task_chunk
from mmfsl_jax.run.evaluators.metrics import episode_metrics, summarise
from mmfsl_jax.run.evaluators.population_norm import estimate_population_moments, model_params_of
from mmfsl_jax.run.sharding import is_primary, replicate, shard_tasks, task_mesh_for, to_host


def make_batched_predict(learner: MetaLearner, task_chunk: int = 0,
                         moments: dict[str, Moments] | None = None):
  """jit(predict over a task batch): (params, task batch) -> logits [B, N*Q, N]. Build once.

  Tasks are vmapped `task_chunk` at a time (`lax.map`; 0 = automatic, `resolve_task_chunk`:
  one at a time on a CPU, all at once on accelerators); every task's logits are the same
  either way. With `moments` (layer path -> (mean, var), population_norm.py) every batch
  norm layer normalises with them instead of the batch's own statistics.
  """
  chunk = resolve_task_chunk(task_chunk)

  def predict(params, batch):
    one_task = lambda task: learner.predict(params, task, None)
    with fixed_batch_moments(moments) if moments is not None else contextlib.nullcontext():
      if chunk is None:
        return jax.vmap(one_task)(batch)
      return jax.lax.map(one_task, batch, batch_size=None if chunk == 1 else chunk)

  return jax.jit(predict)


def evaluate_episodes(predict, params, sampler: EpisodeSampler, num_episodes: int,
                      mesh: Mesh | None = None) -> dict:
  """Summary over `num_episodes` tasks from `sampler` (its batch size is the chunk size).

  `predict` comes from `make_batched_predict`. Episode i is the same task for a given
  sampler seed whatever the chunk size, so results do not depend on it. With a `mesh`
  (sharding.py) each chunk's tasks are split over its devices (padded to split evenly);
  `params` should then be replicated on it.
  """
  per_episode = []
  for chunk in range(math.ceil(num_episodes / sampler.batch_size)):
    batch = sampler.sample(chunk)
    placed = batch if mesh is None else shard_tasks(batch, mesh, pad=True)
    logits = to_host(predict(params, placed))
    labels = batch["query"]["label"]
    for i in range(len(labels)):
      if len(per_episode) < num_episodes:
        per_episode.append(episode_metrics(logits[i].argmax(-1), labels[i], sampler.n_way))
  return summarise(per_episode)


BENCHMARKS = ("episodic", "omniglot-runs")
# Test-time batch norm: as in training (config.batch_norm: each task's own statistics), or
# the training population's moments (population_norm.py; PyTorch's model.eval()).
TEST_BATCH_NORM = ("trained", "population")
# Learners that adapt by inner-loop steps at test time (`eval_inner_steps`).
INNER_LOOP_METHODS = ("maml", "anil", "metasgd", "reptile")


def workdir_config(workdir):
  """The config a training workdir was run with (keys added to the library since then take
  their base_config defaults); CheckpointError if it is not a training workdir."""
  config_path = Path(workdir) / "config.json"
  if not config_path.exists():
    raise CheckpointError(f"{workdir} has no config.json: it is not a training workdir "
                          f"(run `mmfsl train --workdir {workdir}` first)")

  def merge(base: dict, saved: dict) -> dict:
    return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(
        base.get(k), dict) else v for k, v in saved.items()}}

  saved = json.loads(config_path.read_text())
  return config_lib.config_from_dict(
      merge(config_lib.config_to_dict(config_lib.base_config()), saved))


def _restore_best(workdir, learner, config, example_task):
  """The best (else latest) checkpointed TrainState of a workdir, for `learner`'s params."""
  like = jax.eval_shape(lambda: init_train_state(learner, build_optimizer(config), example_task,
                                                  config.seed))   # shapes only: no compile
  checkpoints = Checkpoints(workdir, create=False)
  try:
    return checkpoints.restore_best(like)
  finally:
    checkpoints.close()


def set_eval_inner_steps(config, inner_steps: int | None) -> int | None:
  """Sets the test-time inner steps (None keeps the config's); returns the steps the
  evaluation learner will take, None for learners without an inner loop."""
  if inner_steps is not None:
    if config.method not in INNER_LOOP_METHODS:
      raise UserError(f"--inner-steps applies to {', '.join(INNER_LOOP_METHODS)}; the model was "
                      f"trained with method={config.method}, which has no inner loop")
    if inner_steps < 1:
      raise UserError(f"--inner-steps must be at least 1, got {inner_steps}")
    config.eval_inner_steps = inner_steps
  if config.method not in INNER_LOOP_METHODS:
    return None
  return config.eval_inner_steps or config.inner_steps


def check_test_batch_norm(batch_norm: str, population_batches: int) -> None:
  if batch_norm not in TEST_BATCH_NORM:
    raise UserError(f"test-time batch norm {batch_norm!r} is not valid; choose one of "
                    f"{', '.join(TEST_BATCH_NORM)}")
  if batch_norm == "population" and population_batches < 1:
    raise UserError(f"--population-batches must be at least 1, got {population_batches}")


def eval_moments(batch_norm: str, population_batches: int, train_config, model, params,
                 train_split, seed: int) -> tuple[dict[str, Moments] | None, str]:
  """(moments for `make_batched_predict`, a description for the settings record): None and
  the training's mode for batch_norm="trained"; else the population moments of
  `population_batches` tasks shaped as `train_config`'s training tasks."""
  if batch_norm == "trained":
    return None, train_config.batch_norm
  sampler = EpisodeSampler(train_split, n_way=train_config.n_way, k_shot=train_config.k_shot,
                           q_query=train_config.q_query, seed=seed, modalities=("image",),
                           split_name="train")
  moments = estimate_population_moments(model, model_params_of(params), sampler,
                                         population_batches)
  images = train_config.n_way * (train_config.k_shot + train_config.q_query)
  return moments, f"population ({population_batches} training batches of {images} images)"


def evaluate_workdir(workdir, *, episodes: int | None = None, q_query: int | None = None,
                     seed: int | None = None, write: bool = True, data_dir=None,
                     n_way: int | None = None, k_shot: int | None = None,
                     inner_steps: int | None = None, output: str = "eval.json",
                     split: str = "test", batch_norm: str = "trained",
                     population_batches: int = 50) -> dict:
  """Evaluates the best checkpoint of a training workdir on meta-test tasks.

  Writes workdir/`output`: accuracy, macro recall and macro F1 (mean, 95% CI, n) and the
  settings used. `data_dir` replaces the config's (the data moved since training); `n_way`
  and `k_shot` replace the way and shot of the tasks (default: the config's `eval_n_way` and
  `eval_k_shot`, whose 0 means the training way and shot); `inner_steps` replaces
  the config's `eval_inner_steps` (MAML family); `split="val"` draws the tasks from the
  validation classes instead (for choosing such settings without the test classes);
  `batch_norm="population"` normalises with the moments of `population_batches` training
  tasks (`eval_moments`) instead of each test task's own.
  """
  if split not in ("test", "val"):
    raise UserError(f"split must be 'test' or 'val', got {split!r}")
  check_test_batch_norm(batch_norm, population_batches)

  workdir = Path(workdir)
  config = workdir_config(workdir)
  if data_dir is not None:
    config.data_dir = str(data_dir)
  for name, value in (("n_way", n_way), ("k_shot", k_shot)):
    if value is not None and value < (2 if name == "n_way" else 1):
      raise UserError(f"{name} must be at least {2 if name == 'n_way' else 1}, got {value}")
  if n_way is not None:
    config_lib.check_eval_way(config, n_way, UserError)
    config.eval_n_way = n_way
  if k_shot is not None:
    config.eval_k_shot = k_shot
  train_config, config = config, config_lib.evaluation_config(config)
  steps = set_eval_inner_steps(config, inner_steps)
  episodes = config.eval_episodes if episodes is None else episodes
  q_query = config.eval_q_query if q_query is None else q_query
  seed = config.eval_seed if seed is None else seed
  if episodes < 1 or q_query < 1:
    raise CheckpointError(f"episodes and q_query must be positive, got {episodes}, {q_query}")
  if not Checkpoints.exist(workdir):
    raise CheckpointError(f"no checkpoint in {workdir}: run `mmfsl train --workdir {workdir}` "
                          f"first (or let it reach its first checkpoint)")
  t0 = time.time()
  splits, text_info = prepare_splits(config)
  if split not in splits:
    hint = ("; an Omniglot model trained without test alphabets is scored with --benchmark "
            "omniglot-runs" if config.dataset == "omniglot" else "")
    raise UserError(f"the run's data has no {split} split (its config leaves it out){hint}")
  model = build_model(config, text_info, splits["train"])
  learner = build_learner(config, model, for_eval=True, num_classes=splits["train"].num_classes)
  test = EpisodeSampler(splits[split], n_way=config.n_way, k_shot=config.k_shot,
                        q_query=q_query, batch_size=min(config.eval_batch, episodes), seed=seed,
                        split_name=split)
  example = jax.tree_util.tree_map(lambda x: x[0], test.sample(0))
  state = _restore_best(workdir, learner, config, example)
  mesh = task_mesh_for(config)
  moments, norm = eval_moments(batch_norm, population_batches, train_config, model,
                               state.params, splits["train"], seed)
  params = state.params if mesh is None else replicate(state.params, mesh)
  summary = evaluate_episodes(make_batched_predict(learner, config.task_chunk, moments), params,
                              test, episodes, mesh)
  result = {**summary, "settings": {
      "checkpoint_step": int(state.step), "split": split, "episodes": episodes,
      "n_way": config.n_way, "k_shot": config.k_shot, "q_query": q_query, "seed": seed,
      "method": config.method, "modalities": list(config.modalities), "fuser": config.fuser,
      "dataset": config.dataset, "inner_steps": steps, "batch_norm": norm,
      "seconds": round(time.time() - t0, 2)}}
  if write and is_primary():
    (workdir / output).write_text(json.dumps(result, indent=2))
  return result


def one_shot_runs_task(run: dict) -> dict:
  """A 20-way 1-shot task from a one-shot run: support = its 20 training drawings with labels
  0..19 (class01..class20), query = its 20 test drawings (labels left 0: predict ignores them).
  Images [20, s, s, 1]."""
  n = len(run["train"])
  return {"support": {"image": np.asarray(run["train"], np.float32),
                      "label": np.arange(n, dtype=np.int32)},
          "query": {"image": np.asarray(run["test"], np.float32),
                    "label": np.zeros(len(run["test"]), np.int32)}}


def evaluate_omniglot_runs(workdir, *, data_dir=None, write: bool = True,
                           inner_steps: int | None = None, output: str = "eval.json",
                           batch_norm: str = "trained", population_batches: int = 50,
                           seed: int | None = None) -> dict:
  """The best checkpoint of an Omniglot workdir on the 20 one-shot runs of Lake et al. 2015.

  Each run is one 20-way 1-shot task (`one_shot_runs_task`); the prediction for a test item is
  the arg-max of the meta-learner's `predict` (ProtoNet: the nearest prototype; MAML: after
  adapting on the 20 drawings). The learner is built with n_way=20, which ProtoNet allows for
  any training way; MAML's head has n_way outputs, so it needs a model trained 20-way.
  The runs' zips come from `data_dir`, else the config's data_dir (dataset=omniglot), else
  $MMFSL_OMNIGLOT_DIR. `batch_norm="population"`: as in `evaluate_workdir`, the moments of
  training tasks (the training zips from the same directory, for dataset=omniglot) drawn with
  `seed` (default: the config's eval_seed). Writes workdir/eval.json: {"benchmark",
  "accuracy", "error_rate", "per_run": {run: accuracy}, "settings"}.
  """
  check_test_batch_norm(batch_norm, population_batches)

  workdir = Path(workdir)
  config = workdir_config(workdir)
  steps = set_eval_inner_steps(config, inner_steps)
  modalities = tuple(config.modalities)
  if modalities != ("image",):
    raise UserError(
        f"--benchmark omniglot-runs needs an image-only model, but the model in {workdir} "
        f"uses modalities={modalities}; the one-shot runs have images only. Train one with "
        f"modalities=\"('image',)\" (e.g. --config omniglot_protonet)")
  channels = dataset_channels(config.dataset)
  if channels != 1:
    raise UserError(
        f"--benchmark omniglot-runs needs a model of 1-channel (grayscale) images, but the "
        f"model in {workdir} was trained on dataset={config.dataset!r} with {channels}-channel "
        f"images; train on dataset=omniglot or tfds_omniglot")
  runs_way = 20
  if config.n_way != runs_way and config.method not in config_lib.ANY_WAY_METHODS:
    raise UserError(
        f"--benchmark omniglot-runs is 20-way, but the model in {workdir} is {config.method} "
        f"with a head of n_way={config.n_way} outputs; {config.method} can only be evaluated "
        f"at the way it was trained. Train it with n_way=20, or use one of "
        f"{', '.join(config_lib.ANY_WAY_METHODS)} (any way)")
  if not Checkpoints.exist(workdir):
    raise CheckpointError(f"no checkpoint in {workdir}: run `mmfsl train --workdir {workdir}` "
                          f"first (or let it reach its first checkpoint)")
  t0 = time.time()
  if data_dir is None:
    data_dir = (config.data_dir or None) if config.dataset == "omniglot" else None
  image_size = dataset_image_size(config)
  runs = omniglot.load_one_shot_runs(data_dir, image_size, resize=config.omniglot.resize)
  eval_config = config.copy_and_resolve_references()
  eval_config.n_way = runs_way
  model = build_model(eval_config, None, None)
  learner = build_learner(eval_config, model, for_eval=True)
  state = _restore_best(workdir, learner, config, one_shot_runs_task(runs[0]))
  train_split = None
  if batch_norm == "population":
    if config.dataset == "omniglot" and data_dir is not None:
      config.data_dir = str(data_dir)
    train_split = prepare_splits(config)[0]["train"]
  moments, norm = eval_moments(batch_norm, population_batches, config, model, state.params,
                               train_split, config.eval_seed if seed is None else seed)
  batched = make_batched_predict(learner, config.task_chunk, moments)

  def predict(train, test):
    task = one_shot_runs_task({"train": train, "test": test})
    batch = jax.tree_util.tree_map(lambda x: x[None], task)
    return np.asarray(batched(state.params, batch))[0].argmax(-1)

  scores = omniglot.one_shot_runs_accuracy(predict, runs)
  result = {"benchmark": "omniglot-runs", "accuracy": scores["mean"],
            "error_rate": 1.0 - scores["mean"], "per_run": scores["per_run"],
            "settings": {"checkpoint_step": int(state.step), "runs": len(runs), "n_way": runs_way,
                         "k_shot": 1, "method": config.method, "dataset": config.dataset,
                         "image_size": image_size, "trained_n_way": config.n_way,
                         "trained_k_shot": config.k_shot, "inner_steps": steps,
                         "batch_norm": norm, "seconds": round(time.time() - t0, 2)}}
  if write and is_primary():
    (workdir / output).write_text(json.dumps(result, indent=2))
  return result
