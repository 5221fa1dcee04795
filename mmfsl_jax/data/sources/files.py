""""files": your own multimodal few-shot data, from a manifest file or an ImageFolder.

Two layouts:
- A manifest: a CSV (.csv), TSV (.tsv) or JSON-lines (.jsonl, or .json: JSON lines or one
  JSON array of objects) file, one row per example, with a label column and, per modality
  asked for, an image column (a path relative to the manifest's directory, or absolute)
  and a text column (the example's caption). An optional split column names each row's
  split. CSV/TSV files start with a header row; they are read as UTF-8 (a BOM is allowed).
      image,text,label
      cats/001.png,a cat asleep on a mat,cat
- An ImageFolder: a directory root/<class>/<image> (.png, .jpg, .jpeg, .bmp, .gif, .webp),
  with, for the text modality, a caption root/<class>/<image stem>.txt beside each image.

Only the modalities asked for are read: a text-only run needs no image column (nor images),
an image-only run no text column (nor captions, nor class texts). `text_column=""` reads no
caption: every example's text is "", and the text that counts is each class's (`class_texts`,
required then), for methods that compare images with class text (zero-shot, Tip-Adapter).
A manifest may hold any number of modalities of each kind (data/modalities.py: "image",
"image_ct", "text_note", "vector_labs", ...), each in its own column: by default the column
of the modality's name ("image" and "text": `image_column`, `text_column`), or as `columns`
maps them. A vector
column holds numbers or a .npy path per row (vectors.py). An ImageFolder has one image and
one caption per example (the modalities "image" and "text").

Splits are by class (no class is in two splits), from, in this order of precedence:
1. `split_column`: every row says train, val or test; all rows of a class must agree;
2. `train_classes` / `val_classes` / `test_classes`: every class must be in one given list;
3. a split of the sorted class names, shuffled with `split_seed`, by `split_fractions`
   (train, val, test): each split with a positive fraction gets at least one class.
A split without classes is left out of the result; train must have classes. Within a split,
classes are in sorted order (labels 0..C-1) and examples class by class, each class's in
manifest order (ImageFolder: files in sorted order), whatever the order of the rows.

Images are decoded once with Pillow (the first frame of an animation, EXIF orientation
applied), converted to RGB: grayscale is repeated over the three channels, 16-bit grayscale
scaled to 8 bits, and transparency (RGBA, LA, palette or grayscale with a transparent
colour) composited on a white background. Each image is then stretched to
image_size x image_size (no crop) with Pillow's bilinear filter (or `resize="box"`), which
antialiases when it shrinks: examples["image"] float32 [n, s, s, 3] in [0, 1]. With
`color="ink"` the luminance (Pillow's "L") is kept and inverted instead, and resized as
Omniglot's images are (omniglot.ink_image): [n, s, s, 1], dark strokes on white paper 1.0,
the paper 0.0, which is how the Omniglot models saw their images.

Decoded images are cached as 8-bit .npz under `cache_dir` (default $XDG_CACHE_HOME/mmfsl_jax
or ~/.cache/mmfsl_jax), keyed by the image paths, image_size, color, resize and a cache
version; the images' sizes and modification times are stored with the pixels, and a cache
whose images changed since is rebuilt. An image file that has gone since it was cached is
served from the cache (with a warning), so a dataset can be trained on again after its images
were removed.

Text stays raw: examples["text"] is an object array of strings (run/data.py's prepare_text
encodes it). Class-level text comes from `class_texts`, a CSV/TSV/JSON-lines file with
columns label,text and one row per class of the data: ClassDataset.class_texts["text"],
in class order. Paths given (manifest, class_texts) are relative to the working directory.

Every problem with the files is a UserError naming the file, the row (CSV/TSV: the 1-based
data row, header not counted, and its line) or line (JSON lines), and what to do.
"""
from __future__ import annotations

from collections.abc import Sequence
import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import warnings

import numpy as np
from PIL import Image, ImageOps

from mmfsl_jax.data import cache
from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.modalities import KINDS, modality_kind
from mmfsl_jax.data.sources.omniglot import RESIZE_FILTERS, ink_image
from mmfsl_jax.data.sources.vectors import read_vector, stack_vectors
from mmfsl_jax.errors import UserError

SPLITS = ("train", "val", "test")
MODALITIES = ("image", "text")  # what an ImageFolder holds, and the default
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
JSON_SUFFIXES = (".jsonl", ".json")
MANIFEST_KINDS = "a CSV (.csv), TSV (.tsv) or JSON-lines (.jsonl, .json) file"

_CACHE_VERSION = 2
COLORS = ("rgb", "ink")  # how images are read: RGB, or inverted luminance (Omniglot's ink)
_CACHE_KEYS = ("images", "sizes", "mtimes")
_PARALLEL_FROM = 64  # decode in threads from this many images on (Pillow releases the GIL)
PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class _Row:
  """One data row of a table file: its cells by column, and where it is (for errors)."""
  cells: dict
  where: str


@dataclasses.dataclass(frozen=True)
class _Example:
  label: str
  values: dict  # modality -> image path, text or vector [F]
  split: str | None
  where: str


def _names(items, limit: int = 10) -> str:
  """'a', 'b', 'c' (and 4 more)."""
  items = list(items)
  shown = ", ".join(repr(x) for x in items[:limit])
  return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


# ---------------------------------------------------------------------------------------------
# Table files: CSV, TSV, JSON lines


def _read_text_file(path: pathlib.Path, what: str) -> str:
  if not path.exists():
    raise UserError(f"{what} {str(path)!r} does not exist")
  if path.is_dir():
    raise UserError(f"{what} {str(path)!r} is a directory; give {MANIFEST_KINDS}")
  try:
    return path.read_text(encoding="utf-8-sig")
  except (OSError, UnicodeDecodeError) as error:
    raise UserError(f"cannot read {what} {str(path)!r}: {error} (it must be readable UTF-8 "
                    f"text)") from error


def _read_delimited(path: pathlib.Path, text: str, what: str) -> tuple[list[str], list[_Row]]:
  delimiter = TABLE_DELIMITERS[path.suffix.lower()]
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
  header, rows = None, []
  try:
    for cells in reader:
      if not any(cell.strip() for cell in cells):
        continue  # blank lines are not rows
      if header is None:
        header = [cell.strip() for cell in cells]
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
          raise UserError(f"{what} {str(path)!r}: the header names column(s) "
                          f"{_names(repeated)} more than once; give each column one name")
        continue
      where = f"{str(path)!r}, row {len(rows) + 1} (line {reader.line_num})"
      if len(cells) != len(header) and not (len(cells) > len(header)
                                            and not any(c.strip() for c in cells[len(header):])):
        raise UserError(f"{where}: {len(cells)} fields, but the header has {len(header)} "
                        f"columns; quote a field that holds the delimiter {delimiter!r}")
      rows.append(_Row(dict(zip(header, cells)), where))
  except csv.Error as error:
    raise UserError(f"{what} {str(path)!r}, line {reader.line_num}: not valid "
                    f"{'CSV' if delimiter == ',' else 'TSV'}: {error}") from error
  if header is None:
    raise UserError(f"{what} {str(path)!r} is empty: it needs a header row naming the columns "
                    f"and one row per example")
  if not rows:
    raise UserError(f"{what} {str(path)!r} has a header but no data rows; add one row per "
                    f"example")
  return header, rows


def _read_json(path: pathlib.Path, text: str, what: str) -> tuple[list[str], list[_Row]]:
  if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
    try:
      items = json.loads(text)
    except json.JSONDecodeError as error:
      raise UserError(f"{what} {str(path)!r}, line {error.lineno}: not valid JSON: "
                      f"{error.msg}") from error
    entries = [(f"{str(path)!r}, item {i + 1}", item) for i, item in enumerate(items)]
  else:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      where = f"{str(path)!r}, line {number}"
      try:
        entries.append((where, json.loads(line)))
      except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON ({error.msg}); JSON lines hold one object "
                        f"per line, e.g. {{\"image\": \"a.png\", \"label\": \"cat\"}}") from error
  if not entries:
    raise UserError(f"{what} {str(path)!r} is empty: give one JSON object per line, one per "
                    f"example")
  columns, rows = {}, []
  for where, item in entries:
    if not isinstance(item, dict):
      raise UserError(f"{where}: expected a JSON object of column: value, got "
                      f"{type(item).__name__}")
    columns.update(dict.fromkeys(item))
    rows.append(_Row(item, where))
  return list(columns), rows


def _read_table(path: pathlib.Path, what: str) -> tuple[list[str], list[_Row]]:
  """(column names, rows) of a CSV, TSV or JSON-lines file."""
  suffix = path.suffix.lower()
  if suffix not in TABLE_DELIMITERS and suffix not in JSON_SUFFIXES:
    raise UserError(f"{what} {str(path)!r}: unknown file type {path.suffix!r}; give "
                    f"{MANIFEST_KINDS}" + (", or an ImageFolder directory" if what == "manifest"
                                           else ""))
  text = _read_text_file(path, what)
  if suffix in TABLE_DELIMITERS:
    return _read_delimited(path, text, what)
  return _read_json(path, text, what)


def _check_columns(path: pathlib.Path, columns: Sequence[str], needed: dict[str, str],
                   what: str) -> None:
  """Every column of `needed` (column -> what it is for, how to do without) exists."""
  for column, purpose in needed.items():
    if column not in columns:
      raise UserError(f"{what} {str(path)!r} has no column {column!r} ({purpose}); its columns "
                      f"are {_names(columns, 20)}")


def _cell(row: _Row, column: str, *, required: str = "") -> str:
  """The row's value in `column` as a stripped string ('' for empty or absent); `required`
  says what to do when it is empty, which is then an error."""
  if column not in row.cells and required:
    raise UserError(f"{row.where}: no {column!r} key; {required} (JSON lines need each "
                    f"column asked for on every line)")
  value = row.cells.get(column)
  if value is None:
    value = ""
  if isinstance(value, (dict, list, bool)):
    raise UserError(f"{row.where}: column {column!r} holds {json.dumps(value)}; give a string")
  value = str(value).strip()
  if not value and required:
    raise UserError(f"{row.where}: column {column!r} is empty; {required}")
  return value


# ---------------------------------------------------------------------------------------------
# Manifest and ImageFolder -> examples


_NEEDED = {
    "image": "the image paths: pass {option}=<column>, or leave {modality!r} out of the "
             "modalities",
    "text": "the captions: pass {option}=<column>, or leave {modality!r} out of the modalities",
    "vector": "the feature vectors: pass {option}=<column>, or leave {modality!r} out of the "
              "modalities",
}
_REQUIRED = {
    "image": "give every example an image path",
    "text": "give every example a caption, remove the row, or leave {modality!r} out of the "
            "modalities",
    "vector": "give every example its vector (numbers or a .npy path), or remove the row",
}


def column_option(modality: str) -> str:
  """How a user names the column of `modality`."""
  if modality in MODALITIES:
    return f"{modality}_column"
  return f"columns=('{modality}=<column>',)"


def manifest_columns(modalities: Sequence[str], image_column: str = "image",
                     text_column: str = "text",
                     columns: dict[str, str] | None = None) -> dict[str, str]:
  """modality -> its manifest column: `columns`' entry, else image_column / text_column for
  "image" / "text", else the modality's own name."""
  columns = dict(columns or {})
  unknown = [m for m in columns if m not in modalities]
  if unknown:
    raise UserError(f"columns names modality(ies) {_names(unknown)} that are not among the "
                    f"modalities read ({', '.join(modalities)})")
  default = {"image": image_column, "text": text_column}
  return {m: columns.get(m, default.get(m, m)) for m in modalities}


def _read_manifest(path: pathlib.Path, *, columns: dict[str, str], label_column: str,
                   split_column: str, modalities: Sequence[str]) -> list[_Example]:
  header, rows = _read_table(path, "manifest")
  needed = {label_column: "each example's class: pass label_column=<column>"}
  for m in modalities:
    if not _uncaptioned(m, columns[m]):
      needed[columns[m]] = _NEEDED[modality_kind(m)].format(option=column_option(m),
                                                           modality=m)
  if split_column:
    needed[split_column] = ("each row's split: pass split_column=<column>, or '' to split by "
                            "class lists or fractions")
  _check_columns(path, header, needed, "manifest")
  base = path.parent
  examples, seen = [], {}
  for row in rows:
    label = _cell(row, label_column, required="give every example its class")
    values, key, split = {}, [label], None
    for m in modalities:
      kind, column = modality_kind(m), columns[m]
      required = _REQUIRED[kind].format(modality=m)
      if _uncaptioned(m, column):
        values[m] = ""
      elif kind == "vector":
        raw = row.cells.get(column)
        if raw is None or (not isinstance(raw, list) and not str(raw).strip()):
          raise UserError(f"{row.where}: column {column!r} is empty; {required}")
        values[m] = read_vector(raw, base, f"{row.where}, column {column!r}")
        key.append(values[m].tobytes())
      elif kind == "image":
        value = _cell(row, column, required=required)
        values[m] = pathlib.Path(os.path.normpath(base / pathlib.Path(value).expanduser()))
        key.append(str(values[m]))
      else:
        values[m] = _cell(row, column, required=required)
        key.append(values[m])
    if split_column:
      split = _cell(row, split_column, required=f"give every row one of {', '.join(SPLITS)}")
      if split.lower() not in SPLITS:
        raise UserError(f"{row.where}: split {split!r} in column {split_column!r} is not one "
                        f"of {', '.join(SPLITS)}")
      split = split.lower()
    # a duplicate agrees in every column (the modalities read compared as read: paths resolved)
    read = {columns[m] for m in modalities} | {label_column, split_column}
    key = tuple(key) + tuple(sorted((c, json.dumps(v)) for c, v in row.cells.items()
                                    if c not in read))
    if key in seen:
      raise UserError(f"{row.where}: the same {', '.join(modalities)} and label as "
                      f"{seen[key]} (and the same other columns); remove the duplicate row")
    seen[key] = row.where
    examples.append(_Example(label, values, split, row.where))
  return examples


def _listdir(directory: pathlib.Path) -> list[pathlib.Path]:
  try:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
  except OSError as error:
    raise UserError(f"cannot list directory {str(directory)!r}: {error}") from error


def _read_caption(image: pathlib.Path) -> str:
  caption = image.with_suffix(".txt")
  if not caption.is_file():
    raise UserError(f"image {str(image)!r} has no caption {caption.name!r} beside it; an "
                    f"ImageFolder with text needs <image stem>.txt next to each image (or "
                    f"leave 'text' out of the modalities)")
  try:
    text = caption.read_text(encoding="utf-8-sig").strip()
  except (OSError, UnicodeDecodeError) as error:
    raise UserError(f"cannot read caption {str(caption)!r}: {error}") from error
  if not text:
    raise UserError(f"caption {str(caption)!r} is empty; write the image's caption in it")
  return text


def _uncaptioned(modality: str, column: str) -> bool:
  """A text modality whose column is "": its examples have no caption (their text is "");
  only its class-level text (class_texts) says anything."""
  return modality_kind(modality) == "text" and not column


def _read_image_folder(root: pathlib.Path, modalities: Sequence[str],
                       captions: bool = True) -> list[_Example]:
  other = [m for m in modalities if m not in MODALITIES]
  if other:
    raise UserError(f"an ImageFolder ({str(root)!r}) holds the modalities image and text (a "
                    f"caption beside each image), not {_names(other)}; give a manifest file "
                    f"with a column for each modality")
  class_dirs = [p for p in _listdir(root) if p.is_dir()]
  if not class_dirs:
    raise UserError(f"ImageFolder {str(root)!r} has no class directories; put each class's "
                    f"images in {str(root)}/<class>/ (image files: {', '.join(IMAGE_SUFFIXES)})")
  examples = []
  for directory in class_dirs:
    images = [p for p in _listdir(directory)
              if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not images:
      raise UserError(f"class directory {str(directory)!r} holds no image files "
                      f"({', '.join(IMAGE_SUFFIXES)}); add its images or remove it")
    for image in images:
      values = {"image": image} if "image" in modalities else {}
      if "text" in modalities:
        values["text"] = _read_caption(image) if captions else ""
      examples.append(_Example(directory.name, values, None, repr(str(image))))
  return examples


# ---------------------------------------------------------------------------------------------
# Splits by class


def _check_fractions(fractions) -> tuple[float, float, float]:
  bad = UserError(f"split_fractions must be 3 non-negative numbers (train, val, test) that sum "
                  f"to 1, e.g. (0.6, 0.2, 0.2); got {fractions!r}")
  try:
    values = tuple(fractions)
  except TypeError:
    raise bad from None
  if len(values) != 3 or any(isinstance(f, bool) or not isinstance(f, (int, float))
                             or not math.isfinite(f) or f < 0 for f in values):
    raise bad
  if abs(sum(values) - 1.0) > 1e-6:
    raise bad
  if values[0] == 0:
    raise UserError(f"split_fractions={values!r} gives train no classes; give train a "
                    f"positive fraction")
  return values


def _fraction_counts(num_classes: int, fractions: Sequence[float]) -> list[int]:
  """Classes per split: largest remainders, then at least one for each positive fraction."""
  positive = [f > 0 for f in fractions]
  if num_classes < sum(positive):
    raise UserError(f"{num_classes} class(es) cannot fill the {sum(positive)} splits that "
                    f"split_fractions={tuple(fractions)!r} asks for (each needs one class at "
                    f"least); add classes or set a split's fraction to 0")
  raw = [f * num_classes for f in fractions]
  counts = [math.floor(r) for r in raw]
  by_remainder = sorted(range(3), key=lambda i: (counts[i] - raw[i], i))
  for i in by_remainder[:num_classes - sum(counts)]:
    counts[i] += 1
  for i in range(3):
    if positive[i] and counts[i] == 0:
      donor = max(range(3), key=lambda j: counts[j])
      counts[donor] -= 1
      counts[i] += 1
  return counts


def _splits_from_column(examples: Sequence[_Example], split_column: str) -> dict[str, str]:
  split_of, first = {}, {}
  for ex in examples:
    if ex.label in split_of and split_of[ex.label] != ex.split:
      raise UserError(f"{ex.where}: class {ex.label!r} is in split {ex.split!r} here but in "
                      f"{split_of[ex.label]!r} at {first[ex.label]} (column {split_column!r}); "
                      f"splits are by class, so give all of a class's rows one split")
    split_of.setdefault(ex.label, ex.split)
    first.setdefault(ex.label, ex.where)
  return split_of


def _splits_from_lists(classes: Sequence[str],
                       lists: dict[str, Sequence[str]]) -> dict[str, str]:
  given = {split: (names,) if isinstance(names, str) else tuple(str(c) for c in names)
           for split, names in lists.items() if names}
  split_of = {}
  for split, names in given.items():
    unknown = [c for c in dict.fromkeys(names) if c not in classes]
    if unknown:
      raise UserError(f"{split}_classes names class(es) {_names(unknown)} that the data does "
                      f"not have; its classes are {_names(classes, 20)}")
    for name in names:
      if name in split_of and split_of[name] != split:
        raise UserError(f"class {name!r} is in both {split_of[name]}_classes and "
                        f"{split}_classes; give each class one split")
      split_of[name] = split
  unlisted = [c for c in classes if c not in split_of]
  if unlisted:
    lacking = [f"{s}_classes" for s in SPLITS if s not in given]
    need = (f"; with only {', '.join(f'{s}_classes' for s in given)} given, list them there "
            f"or also give {' / '.join(lacking)}" if lacking else "; list each in one of them")
    raise UserError(f"class(es) {_names(unlisted)} are in none of the class lists{need}")
  return split_of


def _splits_from_fractions(classes: Sequence[str], fractions, seed: int) -> dict[str, str]:
  counts = _fraction_counts(len(classes), _check_fractions(fractions))
  order = np.random.default_rng(int(seed)).permutation(len(classes))
  split_of, start = {}, 0
  for split, count in zip(SPLITS, counts):
    for i in order[start:start + count]:
      split_of[classes[i]] = split
    start += count
  return split_of


# ---------------------------------------------------------------------------------------------
# Images


def _to_rgb(image: Image.Image) -> Image.Image:
  """RGB: transparency composited on white, 16-bit grayscale scaled to 8 bits."""
  if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
    values = np.asarray(image, np.float64) / 257.0
    image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
  if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  return image.convert("RGB")


def check_image_reading(color: str, resize: str) -> None:
  if color not in COLORS:
    raise UserError(f"unknown image color {color!r}; choose one of {', '.join(COLORS)}")
  if resize not in RESIZE_FILTERS:
    raise UserError(f"unknown resize filter {resize!r}; choose one of "
                    f"{', '.join(RESIZE_FILTERS)}")


def decode_image(path: pathlib.Path, image_size: int, where: str = "", *, color: str = "rgb",
                 resize: str = "bilinear") -> np.ndarray:
  """One image file -> uint8 [image_size, image_size, 3] ("rgb"), or [.., 1] ("ink": the
  luminance inverted, so dark strokes on white paper are high, by `omniglot.ink_image`),
  stretched to the size with the `resize` filter (see the module docstring)."""
  at = f"{where}: " if where else ""
  try:
    with Image.open(path) as image:
      image = _to_rgb(ImageOps.exif_transpose(image))
      if color == "ink":  # Omniglot's own conversion, then 8 bits for the cache
        paper = np.asarray(image.convert("L"), np.float32) / np.float32(255.0)
        ink = ink_image(paper, image_size, resize)
        return np.round(ink * np.float32(255.0)).astype(np.uint8)
      if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), RESIZE_FILTERS[resize])
      return np.asarray(image, np.uint8)
  except FileNotFoundError as error:
    raise UserError(f"{at}image file {str(path)!r} does not exist; fix the path (relative to "
                    f"the manifest's directory) or remove the row") from error
  except (PermissionError, IsADirectoryError) as error:
    raise UserError(f"{at}cannot read image file {str(path)!r}: {error}") from error
  except Exception as error:  # Pillow raises many kinds on a corrupt file
    raise UserError(f"{at}cannot decode image file {str(path)!r} ({type(error).__name__}: "
                    f"{error}); replace it with a valid image or remove its row") from error


def _stats(paths: Sequence[pathlib.Path], wheres: Sequence[str]) -> tuple[list, list]:
  sizes, mtimes = [], []
  for path, where in zip(paths, wheres):
    try:
      stat = path.stat()
    except FileNotFoundError:
      raise UserError(f"{where}: image file {str(path)!r} does not exist; fix the path "
                      f"(relative to the manifest's directory) or remove the row") from None
    except OSError as error:
      raise UserError(f"{where}: cannot read image file {str(path)!r}: {error}") from error
    if not path.is_file():
      raise UserError(f"{where}: image path {str(path)!r} is not a file")
    sizes.append(stat.st_size)
    mtimes.append(stat.st_mtime_ns)
  return sizes, mtimes


def _decode_all(paths: Sequence[pathlib.Path], wheres: Sequence[str], image_size: int,
                **reading) -> dict[str, np.ndarray]:
  sizes, mtimes = _stats(paths, wheres)
  decode = lambda i: decode_image(paths[i], image_size, wheres[i], **reading)
  if len(paths) >= _PARALLEL_FROM and (os.cpu_count() or 1) > 1:
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
      images = list(pool.map(decode, range(len(paths))))  # the first failure, in row order
  else:
    images = [decode(i) for i in range(len(paths))]
  return {"images": np.stack(images), "sizes": np.asarray(sizes, np.int64),
          "mtimes": np.asarray(mtimes, np.int64)}


def _stale_and_gone(arrays: dict[str, np.ndarray],
                    paths: Sequence[pathlib.Path]) -> tuple[bool, list[pathlib.Path]]:
  """Whether the cached images no longer match the files, and which files are gone."""
  if arrays["images"].shape[0] != len(paths) or arrays["sizes"].shape != (len(paths),):
    return True, []
  gone = []
  for path, size, mtime in zip(paths, arrays["sizes"].tolist(), arrays["mtimes"].tolist()):
    try:
      stat = path.stat()
    except FileNotFoundError:
      gone.append(path)
      continue
    except OSError:
      return True, []
    if (stat.st_size, stat.st_mtime_ns) != (size, mtime):
      return True, []
  return False, gone


def load_images(paths: Sequence[pathlib.Path], image_size: int, *,
                wheres: Sequence[str] | None = None, cache_dir: PathLike | None = None,
                color: str = "rgb", resize: str = "bilinear") -> np.ndarray:
  """float32 [len(paths), s, s, C] in [0, 1] (C = 3, or 1 for color="ink"), decoded once
  (`decode_image`) and cached (module docstring).

  `wheres` names each path's row for errors.
  """
  check_image_reading(color, resize)
  paths = [pathlib.Path(os.path.abspath(p)) for p in paths]
  if not paths:
    return np.zeros((0, image_size, image_size, 1 if color == "ink" else 3), np.float32)
  wheres = list(wheres) if wheres is not None else [repr(str(p)) for p in paths]
  file = cache.cache_path(cache_dir, f"files_{image_size}px",
                          [_CACHE_VERSION, image_size, color, resize, [str(p) for p in paths]])
  built = []
  build = lambda: built.append(True) or _decode_all(paths, wheres, image_size, color=color,
                                                    resize=resize)
  arrays = cache.cached_arrays(file, _CACHE_KEYS, build)
  if not built:
    stale, gone = _stale_and_gone(arrays, paths)
    if stale:  # images changed since they were cached: decode them again
      file.unlink(missing_ok=True)
      arrays = cache.cached_arrays(file, _CACHE_KEYS, build)
    elif gone:
      warnings.warn(f"{len(gone)} image file(s) are gone (e.g. {str(gone[0])!r}); their pixels "
                    f"come from the cache {str(file)!r}", stacklevel=3)
  return arrays["images"].astype(np.float32) / np.float32(255.0)


# ---------------------------------------------------------------------------------------------
# Class-level text


def read_class_texts(path: PathLike, class_names: Sequence[str], *,
                     allow_extra: bool = False) -> np.ndarray:
  """Object array [C] of the text of each of `class_names` from a label,text table file;
  rows of other classes are an error (a slip in a label) unless `allow_extra` (one file of
  every class for a support or manifest of some of them)."""
  path = pathlib.Path(path).expanduser()
  columns, rows = _read_table(path, "class_texts file")
  _check_columns(path, columns, {"label": "the class", "text": "the class's text"},
                 "class_texts file")
  texts, first = {}, {}
  for row in rows:
    label = _cell(row, "label", required="give every row its class")
    text = _cell(row, "text", required="give every class a text, or remove its row")
    if label in texts:
      raise UserError(f"{row.where}: class {label!r} already has a text at {first[label]}; "
                      f"give each class one row")
    texts[label], first[label] = text, row.where
  missing = [c for c in class_names if c not in texts]
  if missing:
    raise UserError(f"class_texts file {str(path)!r} has no text for class(es) "
                    f"{_names(missing)}; add a row label,text for each")
  extra = [label for label in texts if label not in set(class_names)]
  if extra and not allow_extra:
    raise UserError(f"class_texts file {str(path)!r} has text for class(es) {_names(extra)} "
                    f"that the data does not have ({first[extra[0]]}); its classes are "
                    f"{_names(class_names, 20)}; remove those rows or fix their labels")
  return np.asarray([texts[c] for c in class_names], dtype=object)


# ---------------------------------------------------------------------------------------------
# Entry point


def _check_arguments(modalities, image_size) -> tuple[tuple[str, ...], int]:
  modalities = tuple(modalities)
  if not modalities or len(set(modalities)) != len(modalities):
    raise UserError(f"modalities={modalities!r}: give one or more distinct modality names "
                    f"(of the kinds {', '.join(KINDS)})")
  for m in modalities:
    modality_kind(m)
  try:
    size = int(image_size)
  except (TypeError, ValueError):
    size = 0
  if isinstance(image_size, bool) or size != image_size or size < 1:
    raise UserError(f"image_size must be a positive integer, got {image_size!r}")
  return modalities, size


def _example_arrays(examples: Sequence[_Example], modalities: Sequence[str], image_size: int,
                    cache_dir: PathLike | None, **reading) -> dict[str, np.ndarray]:
  """modality -> array over `examples` (images decoded, each file once; text raw)."""
  arrays = {}
  for m in modalities:
    kind = modality_kind(m)
    if kind == "image":
      unique = list(dict.fromkeys(ex.values[m] for ex in examples))
      where = {}
      for ex in examples:
        where.setdefault(ex.values[m], ex.where)
      images = load_images(unique, image_size, wheres=[where[p] for p in unique],
                           cache_dir=cache_dir, **reading)
      position = {p: i for i, p in enumerate(unique)}
      arrays[m] = images[[position[ex.values[m]] for ex in examples]]
    elif kind == "text":
      arrays[m] = np.asarray([ex.values[m] for ex in examples], dtype=object)
    else:
      arrays[m] = stack_vectors([ex.values[m] for ex in examples],
                                [ex.where for ex in examples], f"modality {m!r}")
  return arrays


def files_dataset(manifest: PathLike, *, image_column: str = "image", text_column: str = "text",
                  label_column: str = "label", image_size: int = 32,
                  modalities: Sequence[str] = MODALITIES, columns: dict[str, str] | None = None,
                  color: str = "rgb", resize: str = "bilinear",
                  cache_dir: PathLike | None = None) -> ClassDataset:
  """All the classes of a manifest or ImageFolder as one ClassDataset (no split), read as
  `files_splits` reads them: classes in sorted order, examples class by class. A manifest
  lacking the columns of some of `modalities` is a UserError naming all of them."""
  modalities, image_size = _check_arguments(modalities, image_size)
  check_image_reading(color, resize)
  if not str(manifest):
    raise UserError(f"no manifest given: name {MANIFEST_KINDS} with one row per example, or "
                    f"an ImageFolder directory root/<class>/<image>")
  path = pathlib.Path(os.path.abspath(pathlib.Path(manifest).expanduser()))
  if path.is_dir():
    examples = _read_image_folder(path, modalities, captions=bool(text_column))
  else:
    if not path.exists():
      raise UserError(f"manifest {str(path)!r} does not exist; give {MANIFEST_KINDS} with one "
                      f"row per example, or an ImageFolder directory root/<class>/<image>")
    header, _ = _read_table(path, "manifest")
    wanted = manifest_columns(modalities, image_column, text_column, columns)
    missing = [m for m in modalities if wanted[m] not in header
               and not _uncaptioned(m, wanted[m])]
    if missing:
      raise UserError(
          f"manifest {str(path)!r} lacks the column(s) of the modalities "
          f"{', '.join(f'{m} (column {wanted[m]!r})' for m in missing)}, which the model "
          f"reads ({', '.join(modalities)}); its columns are {_names(header, 20)}; name the "
          f"columns with image_column / text_column / columns (mmfsl eval: --image-column / "
          f"--text-column / --column MODALITY=COLUMN)")
    examples = _read_manifest(path, columns=wanted, label_column=label_column, split_column="",
                              modalities=modalities)
  classes = sorted({ex.label for ex in examples})
  index = {name: i for i, name in enumerate(classes)}
  labels = np.asarray([index[ex.label] for ex in examples], np.int32)
  order = np.argsort(labels, kind="stable")
  arrays = _example_arrays(examples, modalities, image_size, cache_dir, color=color,
                           resize=resize)
  return ClassDataset(examples={m: a[order] for m, a in arrays.items()}, labels=labels[order],
                      class_names=tuple(classes))


def files_splits(manifest: PathLike, *, image_column: str = "image", text_column: str = "text",
                 label_column: str = "label", split_column: str = "",
                 train_classes: Sequence[str] = (), val_classes: Sequence[str] = (),
                 test_classes: Sequence[str] = (),
                 split_fractions: Sequence[float] = (0.6, 0.2, 0.2), split_seed: int = 0,
                 class_texts: PathLike = "", image_size: int = 32,
                 modalities: Sequence[str] = MODALITIES, columns: dict[str, str] | None = None,
                 color: str = "rgb", resize: str = "bilinear",
                 cache_dir: PathLike | None = None) -> dict[str, ClassDataset]:
  """{"train", "val", "test"} ClassDatasets of your own files (module docstring); a split
  without classes is left out.

  examples holds the modalities asked for: images float32 [n, image_size, image_size, 3],
  texts raw strings, vectors float32 [n, F]; class_texts["text"] the class-level text when
  `class_texts` names a file (and "text" is asked for). `columns` maps modalities to their
  columns where these are not image_column, text_column or the modality's name. `color`
  and `resize` say how images are read (`decode_image`).
  """
  modalities, image_size = _check_arguments(modalities, image_size)
  check_image_reading(color, resize)
  if not str(manifest):
    raise UserError(f"no manifest given: name {MANIFEST_KINDS} with one row per example, or "
                    f"an ImageFolder directory root/<class>/<image>")
  if "text" in modalities and not text_column and not str(class_texts):
    raise UserError("text_column='' reads no caption per example, so the only text is each "
                    "class's own: give class_texts, a file of (label, text) rows")
  path = pathlib.Path(os.path.abspath(pathlib.Path(manifest).expanduser()))
  lists = {"train": train_classes, "val": val_classes, "test": test_classes}
  if path.is_dir():
    if split_column:
      raise UserError(f"split_column={split_column!r} needs a manifest file, but "
                      f"{str(path)!r} is an ImageFolder directory; split it by class lists "
                      f"or split_fractions")
    examples = _read_image_folder(path, modalities, captions=bool(text_column))
  else:
    if not path.exists():
      raise UserError(f"manifest {str(path)!r} does not exist; give {MANIFEST_KINDS} with one "
                      f"row per example, or an ImageFolder directory root/<class>/<image>")
    if split_column and any(lists.values()):
      raise UserError(f"split_column={split_column!r} and class lists both say the splits; "
                      f"give one of them")
    examples = _read_manifest(
        path, columns=manifest_columns(modalities, image_column, text_column, columns),
        label_column=label_column, split_column=split_column, modalities=modalities)
  classes = sorted({ex.label for ex in examples})
  if split_column:
    split_of = _splits_from_column(examples, split_column)
  elif any(lists.values()):
    split_of = _splits_from_lists(classes, lists)
  else:
    split_of = _splits_from_fractions(classes, split_fractions, split_seed)
  if "train" not in split_of.values():
    raise UserError(f"no class of {str(path)!r} is in the train split; give train some classes")

  arrays = _example_arrays(examples, modalities, image_size, cache_dir, color=color,
                           resize=resize)
  class_text = (read_class_texts(class_texts, classes)
                if str(class_texts) and "text" in modalities else None)

  splits, class_index = {}, {name: i for i, name in enumerate(classes)}
  labels_of = np.asarray([ex.label for ex in examples], dtype=object)
  for split in SPLITS:
    names = [c for c in classes if split_of[c] == split]
    if not names:
      continue
    index = {name: i for i, name in enumerate(names)}
    rows = np.asarray([i for i, ex in enumerate(examples) if ex.label in index], np.int64)
    labels = np.asarray([index[label] for label in labels_of[rows]], np.int32)
    order = np.argsort(labels, kind="stable")  # class by class, in manifest order within
    rows, labels = rows[order], labels[order]
    texts = {}
    if class_text is not None:
      texts["text"] = class_text[[class_index[name] for name in names]]
    splits[split] = ClassDataset(examples={m: a[rows] for m, a in arrays.items()},
                                 labels=labels, class_names=tuple(names), class_texts=texts)
  return splits
