"""Vector cells of a manifest: a row's numeric feature vector, written in the cell or kept in a
.npy file.

A cell holds either
- numbers: a JSON array ("[0.5, 1, -2]"), or numbers separated by spaces, commas or
  semicolons ("0.5 1 -2"); in a JSON-lines manifest, also a JSON array value;
- a path ending in .npy (relative to the manifest's directory, or absolute) to an array of
  one vector (shape [F], or [1, F]).
Every vector of a column must have the same length and finite values; otherwise a UserError
names the row.
"""
from __future__ import annotations

from collections.abc import Sequence
import json
import os
import pathlib
import re

import numpy as np

from mmfsl_jax.errors import UserError

_SEPARATORS = re.compile(r"[\s,;]+")


def _numbers(text: str, where: str) -> np.ndarray:
  text = text.strip()
  try:
    values = json.loads(text) if text.startswith("[") else [
        float(v) for v in _SEPARATORS.split(text) if v]
  except ValueError as error:
    raise UserError(f"{where}: cannot read the vector {text[:60]!r} ({error}); give numbers "
                    f"separated by spaces or commas, a JSON array, or a path to a .npy "
                    f"file") from None
  return _as_vector(values, where)


def _as_vector(values, where: str) -> np.ndarray:
  try:
    array = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError):
    raise UserError(f"{where}: the vector holds values that are not numbers") from None
  if array.ndim == 2 and array.shape[0] == 1:
    array = array[0]
  if array.ndim != 1 or array.size == 0:
    raise UserError(f"{where}: a vector must be one non-empty row of numbers, got shape "
                    f"{list(array.shape)}")
  if not np.isfinite(array).all():
    raise UserError(f"{where}: the vector holds NaN or infinite values; replace them (e.g. by "
                    f"the feature's mean) or remove the row")
  return array.astype(np.float32)


def _load_npy(path: pathlib.Path, where: str) -> np.ndarray:
  try:
    values = np.load(path, allow_pickle=False)
  except FileNotFoundError:
    raise UserError(f"{where}: vector file {str(path)!r} does not exist; fix the path "
                    f"(relative to the manifest's directory) or remove the row") from None
  except (OSError, ValueError) as error:
    raise UserError(f"{where}: cannot read vector file {str(path)!r} ({error}); save it with "
                    f"numpy.save") from None
  return _as_vector(values, f"{where} ({str(path)!r})")


def read_vector(cell, base: pathlib.Path, where: str) -> np.ndarray:
  """One cell (a string, or a JSON lines list) -> float32 [F] (module docstring)."""
  if isinstance(cell, list):
    return _as_vector(cell, where)
  text = str(cell).strip()
  if text.lower().endswith(".npy"):
    return _load_npy(pathlib.Path(os.path.normpath(base / pathlib.Path(text).expanduser())),
                     where)
  return _numbers(text, where)


def read_vectors(cells: Sequence, base: pathlib.Path, wheres: Sequence[str],
                 column: str) -> np.ndarray:
  """The cells of one column -> float32 [n, F]; every vector must have the same length F."""
  return stack_vectors([read_vector(cell, base, where) for cell, where in zip(cells, wheres)],
                       wheres, f"column {column!r}")


def stack_vectors(vectors: Sequence[np.ndarray], wheres: Sequence[str],
                  what: str) -> np.ndarray:
  """[F] vectors -> float32 [n, F]; UserError naming the first row whose length differs
  (and `what` the vectors are, e.g. "column 'labs'")."""
  if not vectors:
    return np.zeros((0, 0), np.float32)
  length = vectors[0].shape[0]
  for vector, where in zip(vectors, wheres):
    if vector.shape[0] != length:
      raise UserError(f"{where}: the vector of {what} has {vector.shape[0]} values, but the "
                      f"first row's has {length}; every row's vector must have the same "
                      f"length")
  return np.stack(vectors)
