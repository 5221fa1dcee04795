"""A dataset's splits written as files plus a manifest, which the "files" source reads back
(`mmfsl data export`).

    DIR/manifest.csv                 image,text,label,split (text where the set has it)
    DIR/images/<split>/<class>/<i>.png
    DIR/class_texts.csv              label,text (where the set has class-level text)

Labels are "<label index, 4 digits> <class name>", so that sorting them (as files.py does
within a split) gives back each split's class order, and with it the same labels, the same
tasks from the sampler and the same vocabulary. Images are 8-bit PNG: RGB images as they are,
each value rounded to the nearest of 256 levels (so a float image comes back within 0.5/255);
1-channel ink images (Omniglot's: strokes 1.0, paper 0.0) as grayscale paper-white drawings,
dark strokes on white as the originals were drawn, which `color="ink"` reads back to the
same values (within 0.5/255). The directory is written whole or not at all: into a temporary
directory beside it, renamed when complete; a directory that exists and is not empty is
refused.
"""
from __future__ import annotations

import csv
import os
import pathlib
import shutil
import tempfile

import numpy as np
from PIL import Image

from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.errors import UserError

MANIFEST = "manifest.csv"
CLASS_TEXTS = "class_texts.csv"


def export_label(index: int, name: str) -> str:
  return f"{index:04d} {name}"


def _png(image: np.ndarray, path: pathlib.Path) -> None:
  levels = np.round(np.clip(np.asarray(image, np.float64), 0.0, 1.0) * 255).astype(np.uint8)
  if levels.shape[-1] == 1:
    Image.fromarray(255 - levels[..., 0]).save(path)   # ink -> dark on white
  else:
    Image.fromarray(levels).save(path)


def _check_target(directory: pathlib.Path) -> None:
  if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
    raise UserError(f"{str(directory)!r} exists and is not an empty directory; export into a "
                    f"new directory (nothing was written)")


def export_splits(splits: dict[str, ClassDataset], directory) -> pathlib.Path:
  """Writes `splits` ({"train", "val", "test"} ClassDatasets with an "image" and optionally
  a raw "text" modality) as files plus a manifest into `directory` (module docstring);
  returns the manifest's path."""
  directory = pathlib.Path(directory).expanduser().absolute()
  _check_target(directory)
  for name, ds in splits.items():
    other = [m for m in ds.modalities if m not in ("image", "text")]
    if other or "image" not in ds.modalities:
      raise UserError(f"export writes an image and an optional text per example; split "
                      f"{name!r} has {list(ds.modalities)}")
    if "text" in ds.modalities and ds.examples["text"].dtype != object:
      raise UserError("export needs the raw texts (strings), not encoded ones")
  directory.parent.mkdir(parents=True, exist_ok=True)
  temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
  try:
    _write(splits, temporary)
    if directory.exists():
      directory.rmdir()  # empty, checked above
    os.replace(temporary, directory)
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise
  return directory / MANIFEST


def _write(splits: dict[str, ClassDataset], root: pathlib.Path) -> None:
  has_text = all("text" in ds.modalities for ds in splits.values())
  header = ["image", *(["text"] if has_text else []), "label", "split"]
  class_rows = []
  with (root / MANIFEST).open("w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for split, ds in splits.items():
      for c, name in enumerate(ds.class_names):
        label = export_label(c, name)
        folder = root / "images" / split / f"{c:04d}"
        folder.mkdir(parents=True)
        for i, row in enumerate(np.flatnonzero(ds.labels == c)):
          relative = f"images/{split}/{c:04d}/{i:04d}.png"
          _png(ds.examples["image"][row], folder / f"{i:04d}.png")
          text = [str(ds.examples["text"][row])] if has_text else []
          writer.writerow([relative, *text, label, split])
        if "text" in ds.class_texts:
          class_rows.append([label, str(ds.class_texts["text"][c])])
  if class_rows:
    with (root / CLASS_TEXTS).open("w", newline="", encoding="utf-8") as f:
      csv.writer(f).writerows([["label", "text"], *class_rows])
