"""Class-indexed multimodal datasets: the input to the episode sampler."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses

import numpy as np

from mmfsl_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class ClassDataset:
  """Examples of several modalities, each labelled with a class.

  Attributes:
    examples: modality name -> array [num_examples, ...] (numbers, or an object array of
      strings for raw text before it is tokenised or embedded).
    labels: int array [num_examples], class index in 0..num_classes-1.
    class_names: one name per class.
    class_texts: optional modality name -> array [num_classes, ...], class-level data such as a
      description of each class (AM3-style prototypes use it).
  """
  examples: Mapping[str, np.ndarray]
  labels: np.ndarray
  class_names: tuple[str, ...]
  class_texts: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    labels = np.asarray(self.labels)
    if labels.ndim != 1:
      raise UserError(f"labels must be 1-D, got shape {labels.shape}")
    if not self.examples:
      raise UserError("a ClassDataset needs at least one modality in `examples`")
    for name, array in self.examples.items():
      if len(array) != len(labels):
        raise UserError(
            f"modality {name!r} has {len(array)} examples but there are {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
      raise UserError(
          f"labels must lie in 0..{len(self.class_names) - 1} (one per class name), "
          f"got range {labels.min()}..{labels.max()}")
    for name, array in self.class_texts.items():
      if len(array) != len(self.class_names):
        raise UserError(f"class_texts[{name!r}] has {len(array)} rows for "
                         f"{len(self.class_names)} classes")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def num_examples(self) -> int:
    return len(self.labels)

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.examples)

  def indices_by_class(self) -> list[np.ndarray]:
    """For each class, the indices of its examples (ascending)."""
    order = np.argsort(self.labels, kind="stable")
    counts = np.bincount(self.labels, minlength=self.num_classes)
    return np.split(order, np.cumsum(counts)[:-1])

  @classmethod
  def from_lists(cls, examples: Mapping[str, Sequence], labels: Sequence[int],
                 class_names: Sequence[str], *, names: Sequence[str] | None = None,
                 class_texts: Mapping[str, np.ndarray] | None = None) -> ClassDataset:
    """Builds a dataset from per-example lists (e.g. images loaded one by one).

    Each modality's items must share one shape; otherwise a UserError names the first item
    that differs (by `names[i]`, e.g. its file name, when given).
    """
    stacked = {}
    for modality, items in examples.items():
      items = list(items)
      if not items:
        raise UserError(f"modality {modality!r} has no examples")
      if isinstance(items[0], str):
        stacked[modality] = np.asarray(items, dtype=object)
        continue
      arrays = [np.asarray(x) for x in items]
      shape = arrays[0].shape
      for i, array in enumerate(arrays):
        if array.shape != shape:
          first = names[0] if names else "example 0"
          which = names[i] if names else f"example {i}"
          raise UserError(f"modality {modality!r}: {which} has shape {array.shape}, but "
                          f"{first} has {shape}; resize or pad every item to one shape")
      stacked[modality] = np.stack(arrays)
    return cls(examples=stacked, labels=np.asarray(labels, np.int32),
               class_names=tuple(class_names), class_texts=dict(class_texts or {}))

  def replace(self, **changes) -> ClassDataset:
    return dataclasses.replace(self, **changes)

  def with_modality(self, name: str, array: np.ndarray,
                    class_array: np.ndarray | None = None) -> ClassDataset:
    """A copy whose modality `name` (and its class-level entry, if given) is replaced."""
    examples = dict(self.examples)
    examples[name] = array
    class_texts = dict(self.class_texts)
    if class_array is not None:
      class_texts[name] = class_array
    return self.replace(examples=examples, class_texts=class_texts)
