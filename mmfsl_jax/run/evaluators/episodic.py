"""Evaluation over many episodes: accuracy, macro recall, macro F1 with 95% intervals."""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
import time

import jax
from jax.sharding import Mesh

from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.registry import METHODS
from mmfsl_jax.meta.step import resolve_task_chunk
from mmfsl_jax.nn.encoders.batch_norm import Moments, fixed_batch_moments
from mmfsl_jax.run import build
from mmfsl_jax.run.data import (dataset_image_size, encode_dataset, file_columns,
                                manifest_image_reading, prepare_splits)
from mmfsl_jax.run.evaluators.metrics import episode_metrics, summarise
from mmfsl_jax.run.evaluators.test_time import test_time_config, test_time_moments
from mmfsl_jax.run.sharding import is_primary, replicate, shard_tasks, to_host
from mmfsl_jax.run.workdir import require_checkpoint, restore_for


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


def check_manifest_model(config, data, class_texts=None) -> None:
  """UserError for a model that cannot be scored on a manifest: a learner that reads
  class-level text (am3, zeroshot, ...) without `class_texts` (a file of label,text rows)."""
  name = config.learner.name
  if METHODS[name].class_text and not class_texts:
    raise UserError(f"learner.name={name} reads each class's own text, which the manifest "
                    f"{str(data)!r} does not give: pass a class-texts file (label,text rows, "
                    f"one per class; mmfsl eval/predict --class-texts FILE)")


def manifest_columns(config, *, image_column: str | None = None,
                     text_column: str | None = None, label_column: str | None = None,
                     columns: dict[str, str] | None = None) -> dict:
  """The columns of a manifest to read for the config's model, as files.files_dataset takes
  them: those given, else the training config's (data.files.*_column and data.files.columns
  when it was trained on files), else image, text and label."""
  given = {"image_column": image_column, "text_column": text_column,
           "label_column": label_column}
  trained_on_files = config.data.name == "files"
  chosen = {name: value if value is not None else
            (str(config.data.files[name]) if trained_on_files else name.split("_")[0])
            for name, value in given.items()}
  chosen["columns"] = {**(file_columns(config) if trained_on_files else {}), **(columns or {})}
  return chosen


def read_manifest_for(config, data, columns: dict, class_texts=None) -> ClassDataset:
  """The classes of the manifest (or ImageFolder) `data` as one dataset the config's model
  reads (the caller has run `check_manifest_model`): its modalities (the columns
  `manifest_columns` chose), images decoded at the model's image size as its training
  images were (`run.data.manifest_image_reading`: an Omniglot model's as ink), text still
  raw (`run.data.encode_dataset` encodes it); with `class_texts` (a file of label,text rows)
  each class's text as class_texts["text"]."""
  from mmfsl_jax.data.sources.files import files_dataset, read_class_texts
  dataset = files_dataset(data, **columns, image_size=dataset_image_size(config),
                          modalities=tuple(config.data.modalities),
                          **manifest_image_reading(config))
  if class_texts:
    dataset = dataset.replace(
        class_texts={"text": read_class_texts(class_texts, dataset.class_names,
                                              allow_extra=True)})
  return dataset


def evaluate_workdir(workdir, *, episodes: int | None = None, q_query: int | None = None,
                     seed: int | None = None, write: bool = True, data_dir=None,
                     n_way: int | None = None, k_shot: int | None = None,
                     inner_steps: int | None = None, output: str = "eval.json",
                     split: str = "test", batch_norm: str = "trained",
                     population_batches: int = 50, data=None,
                     image_column: str | None = None, text_column: str | None = None,
                     label_column: str | None = None,
                     columns: dict[str, str] | None = None, class_texts=None) -> dict:
  """Evaluates the best checkpoint of a training workdir on meta-test tasks.

  Writes workdir/`output`: accuracy, macro recall and macro F1 (mean, 95% CI, n) and the
  settings used. `data_dir` replaces the config's data.dir (the data moved since training);
  `n_way` and `k_shot` replace the way and shot of the tasks (default: the config's
  eval.n_way and eval.k_shot, whose 0 means the training way and shot); `inner_steps`
  replaces inner.eval_steps (MAML family); `split="val"` draws the tasks from the
  validation classes instead (for choosing such settings without the test classes);
  `batch_norm="population"` normalises with the moments of `population_batches` training
  tasks (test_time.py) instead of each test task's own.

  `data` (a manifest file or ImageFolder, as data.name=files reads them) scores the model
  on tasks drawn from all of its classes instead (cross-domain evaluation), preprocessed as
  the training data were (`read_manifest_for`, `run.data.encode_dataset`); `image_column`,
  `text_column`, `label_column` and `columns` (modality -> column) name its columns, and
  `class_texts` (a file of label,text rows) gives each of its classes its text, for the
  methods that read class text. The settings then record it as "data".
  """
  if split not in ("test", "val"):
    raise UserError(f"split must be 'test' or 'val', got {split!r}")
  if data is not None and split != "test":
    raise UserError(f"--split {split} and --data do not go together: with --data the tasks "
                    f"are drawn from all the classes of the manifest")
  given = dict(image_column=image_column, text_column=text_column, label_column=label_column,
               columns=columns)
  if data is None and any(v for v in given.values()):
    raise UserError("--image-column, --text-column, --label-column and --column name the "
                    "columns of --data; give --data too")
  workdir = Path(workdir)
  config = test_time_config(workdir, inner_steps=inner_steps, batch_norm=batch_norm,
                            population_batches=population_batches)
  if data_dir is not None:
    config.data.dir = str(data_dir)
  for name, value, least in (("n_way", n_way, 2), ("k_shot", k_shot, 1)):
    if value is not None and value < least:
      raise UserError(f"{name} must be at least {least}, got {value}")
  if n_way is not None:
    build.check_eval_way(config, n_way, UserError)
    config.eval.n_way = n_way
  if k_shot is not None:
    config.eval.k_shot = k_shot
  eval_way, eval_shot = build.evaluation_shape(config)
  episodes = config.eval.episodes if episodes is None else episodes
  q_query = config.eval.q_query if q_query is None else q_query
  seed = config.eval.seed if seed is None else seed
  if episodes < 1 or q_query < 1:
    raise UserError(f"episodes and q_query must be positive, got {episodes}, {q_query}")
  if data is not None:
    check_manifest_model(config, data, class_texts)
  require_checkpoint(workdir)
  t0 = time.time()
  manifest = (None if data is None else
              read_manifest_for(config, data, manifest_columns(config, **given), class_texts))
  splits, encodings = prepare_splits(config)
  if manifest is not None:
    # encoded as the training run encoded its text: the vocabulary of its training split,
    # the pretrained tokenizer or frozen features
    manifest = encode_dataset(manifest, encodings)
  elif manifest is None and split not in splits:
    hint = ("; an Omniglot model trained without test alphabets is scored with --benchmark "
            "omniglot-runs" if config.data.name == "omniglot" else "")
    raise UserError(f"the run's data has no {split} split (its config leaves it out){hint}")
  model = build.build_model(config, encodings, splits["train"])
  learner = build.build_learner(config, model, n_way=eval_way, for_eval=True,
                                num_classes=splits["train"].num_classes)
  test = build.task_sampler(
      config, splits[split] if manifest is None else manifest, role="test", q_query=q_query,
      seed=seed, batch_size=min(config.eval.batch, episodes),
      split_name=split if manifest is None else f"--data {str(data)!r}")
  example = jax.tree_util.tree_map(lambda x: x[0], test.sample(0))
  state = restore_for(workdir, learner, config, example)
  mesh = build.task_mesh(config)
  moments, norm = test_time_moments(batch_norm, population_batches, config, model,
                                    state.params, splits["train"], seed)
  params = state.params if mesh is None else replicate(state.params, mesh)
  summary = evaluate_episodes(make_batched_predict(learner, config.run.task_chunk, moments),
                              params, test, episodes, mesh)
  result = {**summary, "settings": {
      "checkpoint_step": int(state.step), "split": split, "episodes": episodes,
      "n_way": eval_way, "k_shot": eval_shot, "q_query": q_query, "seed": seed,
      "method": config.learner.name, "modalities": list(config.data.modalities),
      "fuser": config.model.fuser, "dataset": config.data.name,
      "inner_steps": build.eval_inner_steps(config), "batch_norm": norm,
      "seconds": round(time.time() - t0, 2)}}
  if data is not None:
    result["settings"]["data"] = os.path.abspath(os.path.expanduser(str(data)))
  if write and is_primary():
    (workdir / output).write_text(json.dumps(result, indent=2))
  return result


def evaluate_shots(workdir, shots, *, ways=None, output: str = "eval_shots.json",
                   write: bool = True, **options) -> dict:
  """`evaluate_workdir` at every k-shot of `shots` (and every n-way of `ways`; default the
  evaluation way), on tasks of the same seed, written to one file workdir/`output`:
      {"results": [{"n_way", "k_shot", "accuracy", "macro_recall", "macro_f1"}, ...],
       "settings": the settings the runs share}
  `options` are evaluate_workdir's (episodes, q_query, split, data, ...)."""
  shots = [int(k) for k in shots]
  ways = [None] if not ways else [int(n) for n in ways]
  if not shots or len(set(shots)) != len(shots) or len(set(ways)) != len(ways):
    raise UserError(f"--shots (and --ways) must list distinct numbers, got shots {shots}, "
                    f"ways {[w for w in ways if w is not None]}")
  runs = [evaluate_workdir(workdir, n_way=n, k_shot=k, write=False, **options)
          for n in ways for k in shots]
  per_run = ("n_way", "k_shot", "seconds")
  results = [{"n_way": r["settings"]["n_way"], "k_shot": r["settings"]["k_shot"],
              **{m: r[m] for m in ("accuracy", "macro_recall", "macro_f1")},
              "seconds": r["settings"]["seconds"]} for r in runs]
  shared = {k: v for k, v in runs[0]["settings"].items() if k not in per_run}
  result = {"results": results, "settings": {**shared, "shots": shots,
                                             "ways": sorted({r["n_way"] for r in results})}}
  if write and is_primary():
    (Path(workdir) / output).write_text(json.dumps(result, indent=2))
  return result
