"""A trained model applied to your own examples: classify queries against labelled supports of
new classes (`mmfsl predict`, `mm.predict`), or embed examples (`mmfsl embed`, `mm.embed`).

    predictions = predict("runs/default", "support.csv", "queries.csv")
    predictions.classes            the support's class names, sorted (column j below)
    predictions.probabilities      float32 [n, N]
    predictions.predicted_labels   the most probable class of each query
    arrays = embed("runs/default", "examples.csv")   # "fused" [n, d], "aligned_<m>" [n, d], ...

The support is a manifest (or ImageFolder) of labelled examples with every modality the model
reads (data/sources/files.py); it may have any number of classes (2 or more; the training
way for learners with a fixed head) and any number of examples per class. The MAML family
adapts on it for its test-time inner steps. The queries (data/sources/rows.py) need no
label, and each may lack a modality: a query is classified by the model restricted to the
modalities it has (the fusers run on any subset with the same parameters), against the
support embedded with those same modalities, so that query and prototypes (or the adapted
head's inputs) are the same function of the same inputs. Queries with the same modalities
form one task.

Images are read at the model's image size as its training data were (and, with a frozen
pretrained backbone, become its features as they did); text is encoded as the
training run encoded it (its vocabulary or pretrained tokenizer, run/data.py's
`text_mapping`, which reads the training split for a word vocabulary or for the statistics of
frozen features). Batch norm: with `batch_norm="trained"` (as in training) a task's
statistics come from its own examples, so a query's probabilities depend on the other
queries of its task (and an embedding on the other rows of its batch) under transductive
batch norm; "population" normalises every example with the training population's moments
(test_time.py), independently of the others.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
from pathlib import Path
import tempfile

import jax
import numpy as np

from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.modalities import modality_kind
from mmfsl_jax.data.sources.rows import Rows, read_rows
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.registry import METHODS
from mmfsl_jax.nn.encoders.batch_norm import fixed_batch_moments
from mmfsl_jax.run import build
from mmfsl_jax.run import data as run_data
from mmfsl_jax.run.evaluators.episodic import (check_manifest_model, make_batched_predict,
                                               manifest_columns, read_manifest_for)
from mmfsl_jax.run.evaluators.test_time import test_time_config, test_time_moments
from mmfsl_jax.run.workdir import require_checkpoint, restore_for


@dataclasses.dataclass(frozen=True)
class Predictions:
  """The classes of each query, in the query file's row order."""
  classes: tuple[str, ...]                  # the support's classes (sorted): column j
  probabilities: np.ndarray                 # float32 [n, N]
  modalities: tuple[tuple[str, ...], ...]   # the modalities each query was classified with
  labels: tuple[str | None, ...]            # the query file's labels, where it has them
  inputs: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  # modality -> each query's cell as written (its image path, its text; "" where absent)

  @property
  def predicted(self) -> np.ndarray:
    """int [n]: the index in `classes` of each query's most probable class."""
    return self.probabilities.argmax(-1)

  @property
  def predicted_labels(self) -> tuple[str, ...]:
    return tuple(self.classes[i] for i in self.predicted)

  def accuracy(self) -> tuple[int, int]:
    """(correct, labelled): over the queries whose label is one of the support's classes."""
    scored = [(label, guess) for label, guess in zip(self.labels, self.predicted_labels)
              if label in self.classes]
    return sum(label == guess for label, guess in scored), len(scored)


@dataclasses.dataclass(frozen=True)
class Trained:
  """A workdir's best checkpoint, ready to apply to new examples (`load_trained`)."""
  config: object
  model: object
  learner: object
  params: dict
  moments: dict | None
  encodings: dict[str, run_data.Encoding]


def _example_task(config, encodings, train, n_way: int) -> dict:
  """A task of one example per class with zeros (empty texts) for every modality, and for
  am3 its class texts: the shapes the learner's parameters are initialised (and so restored)
  from."""
  inputs = {}
  for m in config.data.modalities:
    kind = modality_kind(m)
    if kind == "image" and m in encodings:     # a frozen backbone's features
      inputs[m] = np.zeros((n_way, encodings[m].feature_dim), np.float32)
    elif kind == "image":
      size = run_data.dataset_image_size(config)
      channels = run_data.image_channels(config)
      inputs[m] = np.zeros((n_way, size, size, channels), np.float32)
    elif kind == "text":
      inputs[m] = encodings[m].encode([""] * n_way)
    else:
      inputs[m] = np.zeros((n_way, train.examples[m].shape[1]), np.float32)
  labels = np.arange(n_way, dtype=np.int32)
  task = {"support": {**inputs, "label": labels}, "query": {**inputs, "label": labels}}
  if METHODS[config.learner.name].class_text:   # its class-level text
    task["class"] = {"text": inputs["text"]}
  return task


def load_trained(workdir: Path, config, *, n_way: int, batch_norm: str,
                  population_batches: int, seed: int) -> Trained:
  """The workdir's best checkpoint as a learner for `n_way`-way tasks, with what reading
  new examples needs: the training run's text mapping, test-time batch-norm moments."""
  needs_training_data = (any(modality_kind(m) != "image" for m in config.data.modalities)
                         or batch_norm == "population" or config.learner.name == "baselinepp"
                         or run_data.uses_frozen_features(config))   # their statistics
  splits, encodings = run_data.prepare_splits(config) if needs_training_data else ({}, {})
  train = splits.get("train")
  model = build.build_model(config, encodings, train)
  learner = build.build_learner(config, model, n_way=n_way, for_eval=True,
                                num_classes=None if train is None else train.num_classes)
  state = restore_for(workdir, learner, config,
                      _example_task(config, encodings, train, n_way))
  moments, _ = test_time_moments(batch_norm, population_batches, config, model, state.params,
                                 train, seed)
  return Trained(config, model, learner, state.params, moments, encodings)


def _encode_inputs(encodings, *inputs: dict) -> list[dict]:
  """Each dict of modality arrays with its raw texts (and, with a frozen backbone, its
  images) encoded (the modalities of `encodings`), all of one modality in one call (word ids
  padded to one length)."""
  out = [dict(arrays) for arrays in inputs]
  for m, info in encodings.items():
    groups = [arrays[m] for arrays in inputs]
    if modality_kind(m) == "image":
      encoded = info.encode(np.concatenate([np.asarray(g, np.float32) for g in groups]))
    else:
      encoded = info.encode([str(t) for group in groups for t in group])
    parts = np.split(np.asarray(encoded), np.cumsum([len(g) for g in groups])[:-1])
    for arrays, part in zip(out, parts):
      arrays[m] = part
  return out


def _query_rows(config, queries, columns: dict) -> Rows:
  return read_rows(queries, modalities=tuple(config.data.modalities),
                   image_size=run_data.dataset_image_size(config), **columns,
                   **run_data.manifest_image_reading(config))


def predict(workdir, support, queries, *, image_column: str | None = None,
            text_column: str | None = None, label_column: str | None = None,
            columns: dict[str, str] | None = None, inner_steps: int | None = None,
            batch_norm: str = "trained", population_batches: int = 50,
            seed: int = 0, class_texts=None) -> Predictions:
  """The classes of the `queries` (a manifest or a directory of images) among those of the
  labelled `support` (a manifest or ImageFolder), by the trained model of `workdir` (module
  docstring). Columns (`columns`: modality -> column, for modalities other than image and
  text) default to the training config's data.files.* (else image, text, label, and each
  modality's name); `inner_steps` replaces the MAML family's test-time steps; `class_texts`
  (a file of label,text rows) gives each support class its text, for the methods that read
  class text (zeroshot, Tip-Adapter, ...)."""
  workdir = Path(workdir)
  config = test_time_config(workdir, inner_steps=inner_steps, batch_norm=batch_norm,
                            population_batches=population_batches)
  check_manifest_model(config, support, class_texts)
  require_checkpoint(workdir)
  columns = manifest_columns(config, image_column=image_column, text_column=text_column,
                             label_column=label_column, columns=columns)
  support_set: ClassDataset = read_manifest_for(config, support, columns, class_texts)
  n_way = support_set.num_classes
  if n_way < 2:
    raise UserError(f"the support {str(support)!r} has one class "
                    f"({support_set.class_names[0]!r}); give labelled examples of at least 2 "
                    f"classes to choose between")
  build.check_eval_way(config, n_way, UserError)
  rows = _query_rows(config, queries, columns)
  trained = load_trained(workdir, config, n_way=n_way, batch_norm=batch_norm,
                          population_batches=population_batches, seed=seed)
  support_inputs, query_inputs = _encode_inputs(trained.encodings, support_set.examples,
                                               rows.examples)
  class_level = {}
  if support_set.class_texts:   # encoded as the run encoded class text (its prompts)
    class_level = {"class": {m: np.asarray(trained.encodings[m].encode_classes(list(texts)))
                             for m, texts in support_set.class_texts.items()}}

  predict_tasks = make_batched_predict(trained.learner, config.run.task_chunk, trained.moments)
  probabilities = np.zeros((len(rows), n_way), np.float32)
  used: list[tuple[str, ...]] = [()] * len(rows)
  for modalities, at in rows.modality_sets().items():
    task = {"support": {**{m: support_inputs[m] for m in modalities},
                        "label": support_set.labels},
            "query": {**{m: query_inputs[m][at] for m in modalities},
                      "label": np.zeros(len(at), np.int32)}, **class_level}
    batch = jax.tree_util.tree_map(lambda x: np.asarray(x)[None], task)
    logits = np.asarray(predict_tasks(trained.params, batch))[0]
    probabilities[at] = np.asarray(jax.nn.softmax(logits, axis=-1))
    for i in at:
      used[i] = modalities
  return Predictions(classes=support_set.class_names, probabilities=probabilities,
                     modalities=tuple(used), labels=rows.labels, inputs=rows.cells)


def embed(workdir, examples, *, image_column: str | None = None, text_column: str | None = None,
          label_column: str | None = None, columns: dict[str, str] | None = None,
          batch_norm: str = "trained",
          population_batches: int = 50, seed: int = 0,
          batch_size: int = 256) -> dict[str, np.ndarray]:
  """The embeddings of every row of `examples` (a manifest or a directory of images) under
  the trained model of `workdir`, in row order:
      "fused" float32 [n, d]; "aligned_<m>" float32 [n, d] per modality m of the model (each
      modality in the shared space before fusion; NaN rows where a row lacks m);
      "present_<m>" bool [n]; "label" str [n] (the label column, "" where none).
  A row's fused embedding fuses the modalities it has. Rows with the same modalities are
  embedded `batch_size` at a time (each call's batch statistics, unless population)."""
  if batch_size < 1:
    raise UserError(f"batch_size must be at least 1, got {batch_size}")
  workdir = Path(workdir)
  config = test_time_config(workdir, batch_norm=batch_norm,
                            population_batches=population_batches)
  require_checkpoint(workdir)
  columns = manifest_columns(config, image_column=image_column, text_column=text_column,
                             label_column=label_column, columns=columns)
  rows = _query_rows(config, examples, columns)
  trained = load_trained(workdir, config, n_way=config.task.n_way, batch_norm=batch_norm,
                          population_batches=population_batches, seed=seed)
  inputs = _encode_inputs(trained.encodings, rows.examples)[0]

  moments = trained.moments

  def apply(params, batch):
    with fixed_batch_moments(moments) if moments is not None else contextlib.nullcontext():
      return trained.model.apply(params["model"], batch, train=False)

  apply = jax.jit(apply)
  modalities_all = tuple(config.data.modalities)
  fused, aligned = None, {}
  for modalities, at in rows.modality_sets().items():
    for start in range(0, len(at), batch_size):
      chunk = at[start:start + batch_size]
      out, per_modality = apply(trained.params, {m: inputs[m][chunk] for m in modalities})
      if fused is None:
        dim = out.shape[-1]
        fused = np.zeros((len(rows), dim), np.float32)
        aligned = {m: np.full((len(rows), dim), np.nan, np.float32) for m in modalities_all}
      fused[chunk] = np.asarray(out)
      for m, z in per_modality.items():
        aligned[m][chunk] = np.asarray(z)
  result = {"fused": fused}
  for m in modalities_all:
    result[f"aligned_{m}"] = aligned[m]
    result[f"present_{m}"] = rows.present[m]
  result["label"] = np.asarray(["" if label is None else label for label in rows.labels])
  return result


def _atomic_path(path: Path):
  """A temporary file beside `path` (renamed onto it once complete)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
  os.close(handle)
  return Path(temporary)


def write_predictions(predictions: Predictions, path) -> Path:
  """One CSV row per query: row (1-based), the query's image and text cells as written,
  its label where the file has labels, the predicted class, its
  probability, the modalities used, and p_<class> per class. Written whole or not at all."""
  path = Path(path)
  labelled = any(label is not None for label in predictions.labels)
  cells = predictions.inputs
  header = ["row", *cells, *(["label"] if labelled else []), "predicted", "probability",
            "modalities", *(f"p_{name}" for name in predictions.classes)]
  temporary = _atomic_path(path)
  try:
    with temporary.open("w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      for i, guess in enumerate(predictions.predicted_labels):
        p = predictions.probabilities[i]
        writer.writerow([i + 1, *(cells[m][i] for m in cells),
                         *([predictions.labels[i] or ""] if labelled else []), guess,
                         f"{p.max():.6f}", "+".join(predictions.modalities[i]),
                         *(f"{v:.6f}" for v in p)])
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)
  return path


def write_embeddings(arrays: dict[str, np.ndarray], path) -> Path:
  """`embed`'s arrays as one .npz file, written whole or not at all."""
  path = Path(path)
  temporary = _atomic_path(path)
  try:
    with temporary.open("wb") as f:
      np.savez(f, **arrays)
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)
  return path
