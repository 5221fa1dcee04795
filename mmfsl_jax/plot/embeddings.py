"""A 2-D map of a run's embeddings: test-class examples in each modality's aligned space and
fused, projected by PCA (or t-SNE where scikit-learn is installed), coloured by class."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from mmfsl_jax.errors import UserError
from mmfsl_jax.plot.figures import new_figure, save

PROJECTIONS = ("pca", "tsne")


def pca_2d(points: np.ndarray) -> np.ndarray:
  """[n, d] -> [n, 2]: the centred points on their two leading principal axes."""
  centred = np.asarray(points, np.float64) - np.mean(points, axis=0)
  _, _, axes = np.linalg.svd(centred, full_matrices=False)
  return centred @ axes[:2].T


def _project(points: np.ndarray, projection: str, seed: int) -> np.ndarray:
  if projection == "pca":
    return pca_2d(points)
  try:
    from sklearn.manifold import TSNE
  except ImportError as error:
    raise UserError("--projection tsne needs scikit-learn (pip install scikit-learn); "
                    "--projection pca needs nothing more") from error
  perplexity = min(30.0, max(2.0, (len(points) - 1) / 3))
  return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(points)


@dataclasses.dataclass(frozen=True)
class Sample:
  """Examples of some classes of a run's split, and the run's trained model."""
  trained: object            # run.predict.Trained
  dataset: object            # the split's ClassDataset (text encoded as in training)
  classes: np.ndarray        # int [C]: the classes drawn, ascending
  rows: np.ndarray           # int [n]: their examples' rows in `dataset`, class by class
  labels: np.ndarray         # int [n]: each row's index in `classes`

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.dataset.class_names[c] for c in self.classes)

  def embed(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(fused [n, d], {modality: aligned [n, d]}) of the rows, embedded together (one batch:
    batch norm uses these examples' statistics)."""
    model, params = self.trained.model, self.trained.params
    inputs = {m: a[self.rows] for m, a in self.dataset.examples.items()}
    fused, aligned = jax.jit(lambda p, x: model.apply(p["model"], x))(params, inputs)
    return np.asarray(fused), {m: np.asarray(z) for m, z in aligned.items()}


def sample_examples(workdir, *, split: str = "test", classes: int = 10, per_class: int = 20,
                    seed: int = 0) -> Sample:
  """Up to `per_class` examples of `classes` classes of the run's `split`, drawn with
  `seed`, and the workdir's best checkpoint to embed them with."""
  from mmfsl_jax.run.data import prepare_splits
  from mmfsl_jax.run.predict import load_trained
  from mmfsl_jax.run.workdir import require_checkpoint, workdir_config
  if classes < 1 or per_class < 1:
    raise UserError(f"classes and per_class must be positive, got {classes}, {per_class}")
  workdir = Path(workdir)
  config = workdir_config(workdir)
  require_checkpoint(workdir)
  splits, _ = prepare_splits(config)
  if split not in splits:
    raise UserError(f"the run's data has no {split} split; choose one of {', '.join(splits)}")
  dataset = splits[split]
  rng = np.random.default_rng(seed)
  chosen = np.sort(rng.choice(dataset.num_classes, min(classes, dataset.num_classes),
                              replace=False))
  by_class = dataset.indices_by_class()
  rows = np.concatenate([rng.permutation(by_class[c])[:per_class] for c in chosen])
  trained = load_trained(workdir, config, n_way=config.task.n_way, batch_norm="trained",
                         population_batches=1, seed=seed)
  return Sample(trained, dataset, chosen, rows, np.searchsorted(chosen, dataset.labels[rows]))


def run_embeddings(workdir, *, split: str = "test", classes: int = 10, per_class: int = 20,
                   seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[str, ...]]:
  """({"fused" and each modality: embeddings [n, d]}, labels [n], class names) of up to
  `per_class` examples of `classes` classes of the run's `split` (`sample_examples`),
  embedded together by the workdir's best checkpoint (batch statistics of these examples)."""
  sample = sample_examples(workdir, split=split, classes=classes, per_class=per_class,
                           seed=seed)
  fused, aligned = sample.embed()
  return {**aligned, "fused": fused}, sample.labels, sample.class_names


def plot_embeddings(workdir, output=None, *, split: str = "test", classes: int = 10,
                    per_class: int = 20, projection: str = "pca", seed: int = 0):
  """The Figure of `run_embeddings`: one panel per modality (its aligned space) and one for
  the fused embedding, each a 2-D projection, points coloured by class; saved if `output`."""
  if projection not in PROJECTIONS:
    raise UserError(f"projection={projection!r}: choose one of {', '.join(PROJECTIONS)}")
  points, labels, names = run_embeddings(workdir, split=split, classes=classes,
                                         per_class=per_class, seed=seed)
  figure = new_figure(4 * len(points) + 1.5, 4)
  axes = np.atleast_1d(figure.subplots(1, len(points)))
  for axis, (name, values) in zip(axes, points.items()):
    xy = _project(values, projection, seed)
    for c, class_name in enumerate(names):
      mine = labels == c
      axis.scatter(xy[mine, 0], xy[mine, 1], s=12, color=f"C{c % 10}", label=class_name,
                   marker="o" if c < 10 else "^")
    axis.set(title=f"{name} ({projection.upper() if projection == 'pca' else 't-SNE'})",
             xticks=[], yticks=[])
  axes[-1].legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
  if output is not None:
    save(figure, output)
  return figure
