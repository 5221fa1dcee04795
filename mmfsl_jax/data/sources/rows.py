"""Examples to classify or embed: the rows of a manifest, or the images of a directory, each
with whichever modalities it has.

Unlike a training manifest (files.py), a row here may leave a modality out (an empty cell,
or no such column at all: an image-only query file for an image + text model) and need not
have a label; a row with none of the modalities asked for is an error naming it. A directory
(the modalities "image" and "text" only) is read as every image file under it (sorted by
path; a label from the class directory
<root>/<class>/<image> when the images are in subdirectories; a caption from
<image stem>.txt beside an image, where there is one).

    rows = read_rows("queries.csv", modalities=("image", "text"), image_size=32)
    rows.examples["image"]   float32 [n, s, s, C], zeros where a row has no image
    rows.examples["text"]    object [n] of strings, "" where a row has no text
    rows.examples[vector]    float32 [n, F], zeros where a row has no vector
    rows.present["image"]    bool [n]
    rows.labels              the label cells (None where empty or without a label column)
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import os
import pathlib

import numpy as np

from mmfsl_jax.data.modalities import modality_kind
from mmfsl_jax.data.sources import files
from mmfsl_jax.data.sources.vectors import read_vector, stack_vectors
from mmfsl_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Rows:
  """The examples of a file, in its row order; see the module docstring."""
  examples: dict[str, np.ndarray]
  present: dict[str, np.ndarray]
  labels: tuple[str | None, ...]
  cells: dict[str, tuple[str, ...]]   # modality -> the cell as written ("" where absent)
  wheres: tuple[str, ...]             # each row's place in the file, for messages

  def __len__(self) -> int:
    return len(self.wheres)

  def modality_sets(self) -> dict[tuple[str, ...], np.ndarray]:
    """Each combination of modalities the rows have -> the indices of its rows."""
    names = tuple(self.present)
    mask = np.stack([self.present[m] for m in names], axis=1)
    groups = {}
    for combination in sorted({tuple(row) for row in mask.tolist()}, reverse=True):
      rows = np.flatnonzero((mask == np.asarray(combination)).all(axis=1))
      groups[tuple(m for m, has in zip(names, combination) if has)] = rows
    return groups


def _vector_cell(row, column: str):
  """A vector cell as written: a JSON-lines list kept as it is, else a stripped string."""
  value = row.cells.get(column)
  return value if isinstance(value, list) else ("" if value is None else str(value).strip())


def _table_rows(path: pathlib.Path, modalities, columns: dict[str, str], label_column: str):
  """(cells by modality, labels, wheres) of a manifest file."""
  header, table = files._read_table(path, "manifest")
  usable = [m for m in modalities if columns[m] in header]
  if not usable:
    raise UserError(
        f"manifest {str(path)!r} has none of the columns of the model's modalities "
        f"({', '.join(f'{m}: {columns[m]!r}' for m in modalities)}); its columns are "
        f"{files._names(header, 20)}; name them with --image-column / --text-column / "
        f"--column MODALITY=COLUMN")
  cells = {m: [] for m in modalities}
  labels = []
  for row in table:
    for m in modalities:
      if m not in usable:
        cells[m].append("")
      elif modality_kind(m) == "vector":
        cells[m].append(_vector_cell(row, columns[m]))
      else:
        cells[m].append(files._cell(row, columns[m]))
    labels.append(files._cell(row, label_column) or None if label_column in header else None)
  return cells, labels, [row.where for row in table]


def _directory_rows(root: pathlib.Path, modalities):
  other = [m for m in modalities if m not in files.MODALITIES]
  if other:
    raise UserError(f"a directory of images ({str(root)!r}) holds the modalities image and "
                    f"text, not {', '.join(other)}; give a manifest file with their columns")
  images = sorted(p for p in root.rglob("*") if p.suffix.lower() in files.IMAGE_SUFFIXES
                  and p.is_file() and not any(part.startswith(".")
                                              for part in p.relative_to(root).parts))
  if not images:
    raise UserError(f"directory {str(root)!r} holds no image files "
                    f"({', '.join(files.IMAGE_SUFFIXES)}), in it or in subdirectories")
  cells = {m: [] for m in modalities}
  for image in images:
    if "image" in cells:
      cells["image"].append(str(image.relative_to(root)))
    if "text" in cells:
      caption = image.with_suffix(".txt")
      cells["text"].append(files._read_caption(image) if caption.is_file() else "")
  labels = [image.parent.name if image.parent != root else None for image in images]
  return cells, labels, [repr(str(image)) for image in images]


def read_rows(manifest, *, modalities: Sequence[str], image_size: int,
              image_column: str = "image", text_column: str = "text",
              label_column: str = "label", columns: dict[str, str] | None = None,
              cache_dir=None, **image_options) -> Rows:
  """The rows of a manifest file (CSV, TSV, JSON lines) or the images under a directory,
  with the `modalities` each has (module docstring), in the columns files.manifest_columns
  chooses. Images are read as files.load_images reads them (`image_options`: its reading
  options), each distinct file once."""
  modalities, image_size = files._check_arguments(modalities, image_size)
  if not str(manifest):
    raise UserError("no input given: name a manifest file or a directory of images")
  path = pathlib.Path(os.path.abspath(pathlib.Path(manifest).expanduser()))
  if not path.exists():
    raise UserError(f"{str(path)!r} does not exist; give {files.MANIFEST_KINDS}, or a "
                    f"directory of images")
  columns = files.manifest_columns(modalities, image_column, text_column, columns)
  if path.is_dir():
    cells, labels, wheres = _directory_rows(path, modalities)
  else:
    cells, labels, wheres = _table_rows(path, modalities, columns, label_column)
  present = {m: np.asarray([bool(c) for c in cells[m]]) for m in modalities}
  for i, where in enumerate(wheres):
    if not any(present[m][i] for m in modalities):
      raise UserError(f"{where}: the row has none of the modalities "
                      f"({', '.join(f'{m} in column {columns[m]!r}' for m in modalities)}); "
                      f"give it at least one, or remove it")
  examples = {}
  base = path if path.is_dir() else path.parent
  for m in modalities:
    kind, at = modality_kind(m), np.flatnonzero(present[m])
    if kind == "image":
      examples[m] = _images(cells[m], at, base, wheres, image_size, cache_dir, image_options)
    elif kind == "text":
      examples[m] = np.asarray(cells[m], dtype=object)
    else:
      vectors = stack_vectors([read_vector(cells[m][i], base, f"{wheres[i]}, column "
                                           f"{columns[m]!r}") for i in at],
                              [wheres[i] for i in at], f"column {columns[m]!r}")
      examples[m] = np.zeros((len(wheres), vectors.shape[1]), np.float32)
      examples[m][at] = vectors
  shown = {m: tuple(c if isinstance(c, str) else " ".join(map(str, c)) for c in cells[m])
           for m in modalities}
  return Rows(examples=examples, present=present, labels=tuple(labels), cells=shown,
              wheres=tuple(wheres))


def _images(cells, at, base, wheres, image_size, cache_dir, image_options) -> np.ndarray:
  """The images of the rows `at` (zeros elsewhere), each distinct file decoded once."""
  paths = [pathlib.Path(os.path.normpath(base / pathlib.Path(cells[i]).expanduser()))
           for i in at]
  unique = list(dict.fromkeys(paths))
  first = {}
  for i, p in zip(at, paths):
    first.setdefault(p, wheres[i])
  decoded = files.load_images(unique, image_size, wheres=[first[p] for p in unique],
                              cache_dir=cache_dir, **image_options)
  position = {p: j for j, p in enumerate(unique)}
  images = np.zeros((len(wheres), *decoded.shape[1:]), np.float32)
  images[at] = decoded[[position[p] for p in paths]]
  return images
