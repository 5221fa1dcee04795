"""N-way K-shot Q-query episodes from a ClassDataset, stacked into task batches.

Task `t` is drawn from `np.random.default_rng([seed, t])` and batch `i` holds tasks
i*B .. i*B+B-1, so the sampler has no hidden position: the training state's step is its
position, a resumed run draws exactly the tasks an uninterrupted one would, and evaluation
episodes do not depend on the chunk size they are computed in.

A task batch is a dict of numpy arrays:
    support: {modality: [B, N*K, ...], "label": [B, N*K]}
    query:   {modality: [B, N*Q, ...], "label": [B, N*Q]}
    class:   {modality: [B, N, ...]}  class-level data (if the dataset has any), in label order
    class_id: [B, N] int32  the classes' indices in the dataset, in label order (Baseline++
             trains a classifier over all of a split's classes with them)
Within a task, labels 0..N-1 are given to the N sampled classes in random order; examples
are laid out class by class (label-major), and support and query never share an example.
"""
from __future__ import annotations

from collections.abc import Sequence
import itertools

import numpy as np

from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.errors import UserError


class EpisodeSampler:
  """Draws batches of N-way K-shot Q-query tasks; stateless apart from its seed."""

  def __init__(self, dataset: ClassDataset, *, n_way: int, k_shot: int, q_query: int,
               batch_size: int = 1, seed: int = 0, modalities: Sequence[str] | None = None,
               split_name: str = "given"):
    self.dataset = dataset
    self.n_way, self.k_shot, self.q_query = int(n_way), int(k_shot), int(q_query)
    self.batch_size, self.seed = int(batch_size), int(seed)
    self.modalities = tuple(dataset.modalities if modalities is None else modalities)
    self._check_request(split_name)
    self._by_class = dataset.indices_by_class()
    eligible = [c for c, idx in enumerate(self._by_class) if len(idx) >= self.k_shot + self.q_query]
    self._eligible = np.asarray(eligible)

  def _check_request(self, split_name: str) -> None:
    ds = self.dataset
    for name, value in (("n_way", self.n_way), ("k_shot", self.k_shot),
                        ("q_query", self.q_query), ("batch_size", self.batch_size)):
      if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")
    missing = [m for m in self.modalities if m not in ds.examples]
    if missing:
      raise UserError(f"modalities {missing} requested, but the {split_name} split has only "
                       f"{list(ds.modalities)}")
    for m in self.modalities:
      for where, arrays in (("examples", ds.examples), ("class_texts", ds.class_texts)):
        if m in arrays and np.asarray(arrays[m]).dtype == object:
          raise UserError(f"modality {m!r} ({where}) of the {split_name} split holds raw "
                          f"strings; turn them into arrays first (WordVocabulary.encode, or "
                          f"TextFeatureCache for a pretrained encoder)")
      if ds.examples[m].size == 0 or (ds.examples[m].ndim > 1 and ds.examples[m].shape[1] == 0):
        raise UserError(f"modality {m!r} of the {split_name} split is empty "
                         f"(shape {ds.examples[m].shape})")
    if self.n_way > ds.num_classes:
      raise UserError(f"n_way={self.n_way} asked, but the {split_name} split has only "
                       f"{ds.num_classes} classes")
    counts = np.bincount(ds.labels, minlength=ds.num_classes)
    need = self.k_shot + self.q_query
    enough = int((counts >= need).sum())
    if enough < self.n_way:
      smallest = int(np.argmin(counts))
      short = [f"{ds.class_names[c]!r} ({counts[c]})" for c in np.flatnonzero(counts < need)]
      listed = ", ".join(short[:10]) + (f" and {len(short) - 10} more" if len(short) > 10 else "")
      raise UserError(
          f"k_shot + q_query = {self.k_shot} + {self.q_query} = {need} examples per class asked, "
          f"but only {enough} classes of the {split_name} split have that many (n_way={self.n_way} "
          f"needed); the smallest class, {ds.class_names[smallest]!r}, has {counts[smallest]}, "
          f"the largest {counts.max()}; classes with fewer than {need}: {listed}")

  def _task_indices(self, rng: np.random.Generator):
    classes = rng.choice(self._eligible, size=self.n_way, replace=False)
    support, query = [], []
    for c in classes:
      picked = rng.choice(self._by_class[c], size=self.k_shot + self.q_query, replace=False)
      support.append(picked[:self.k_shot])
      query.append(picked[self.k_shot:])
    return classes, np.concatenate(support), np.concatenate(query)

  def sample(self, index: int) -> dict:
    """The task batch number `index` (deterministic in seed and index)."""
    first = int(index) * self.batch_size
    tasks = [self._task_indices(np.random.default_rng([self.seed, first + j]))
             for j in range(self.batch_size)]
    classes = np.stack([t[0] for t in tasks])
    support_idx = np.stack([t[1] for t in tasks])
    query_idx = np.stack([t[2] for t in tasks])
    batch = {"support": self._gather(support_idx, self.k_shot),
             "query": self._gather(query_idx, self.q_query),
             "class_id": classes.astype(np.int32)}
    class_mods = [m for m in self.modalities if m in self.dataset.class_texts]
    if class_mods:
      batch["class"] = {m: self.dataset.class_texts[m][classes] for m in class_mods}
    return batch

  def _gather(self, indices: np.ndarray, per_class: int) -> dict:
    out = {m: self.dataset.examples[m][indices] for m in self.modalities}
    labels = np.repeat(np.arange(self.n_way, dtype=np.int32), per_class)
    out["label"] = np.broadcast_to(labels, indices.shape).copy()
    return out

  def __iter__(self):  # batches 0, 1, 2, ... without end
    return map(self.sample, itertools.count())
