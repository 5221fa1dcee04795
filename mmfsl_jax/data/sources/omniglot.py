"""Omniglot (Lake et al. 2015) from the authors' zip files, read without extracting them.

Files, in a directory given explicitly or by the environment variable MMFSL_OMNIGLOT_DIR:
    images_background_small1.zip, images_background_small2.zip  (characters, 20 drawings each)
    one_shot_runs.zip                                            (the paper's 20 one-shot runs)

Preprocessing: 105x105 1-bit PNG -> inverted so ink is 1.0 and paper 0.0 -> resized to
`image_size` on the float image with Pillow's BOX (area) filter, or its BILINEAR one
(`resize="bilinear"`, what PyTorch pipelines usually apply); values stay in [0, 1].
Images are float32 [..., image_size, image_size, 1].

The two small sets share Greek and Latin (identical files); deduplicated by alphabet/character
the union is 8 alphabets, 242 characters:
    Balinese 24, Early_Aramaic 22, Greek 24, Japanese_(katakana) 47, Korean 40, Latin 26,
    Sanskrit 42, Tagalog 17.

Default split (by character, held out by alphabet, so no alphabet is in two splits):
    train  Balinese, Greek, Japanese_(katakana), Latin, Sanskrit: 163 characters, 652 classes
           with rotations (each character at 0/90/180/270 degrees is its own class)
    val    Early_Aramaic: 22 classes
    test   Korean, Tagalog: 57 classes
Every class has 20 examples.

`ink_image` is the preprocessing shared with the TFDS omniglot loader
(mmfsl_jax/data/sources/tfds.py); `check_omniglot_files` reports which files a directory
holds (`mmfsl data prepare omniglot`).

Decoded arrays are cached as .npz under `cache_dir` (default $XDG_CACHE_HOME/mmfsl_jax or
~/.cache/mmfsl_jax), never in the data directory, which may be read-only. The cache is keyed
by the zips' names, sizes and mtimes and by image_size; an unreadable cache is rebuilt.
"""
from __future__ import annotations

from collections.abc import Sequence
import io
import os
import pathlib
import re
import zipfile
import zlib

import numpy as np
from PIL import Image

from mmfsl_jax.data import cache
from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.errors import UserError

OMNIGLOT_ENV = "MMFSL_OMNIGLOT_DIR"
BACKGROUND_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
RUNS_ZIP = "one_shot_runs.zip"
OMNIGLOT_FILES = BACKGROUND_ZIPS + (RUNS_ZIP,)

DEFAULT_VAL_ALPHABETS = ("Early_Aramaic",)
DEFAULT_TEST_ALPHABETS = ("Korean", "Tagalog")
ROTATIONS = (0, 90, 180, 270)

_CACHE_VERSION = 1
# Pillow filters for downsampling the 105x105 drawings (`ink_image`).
RESIZE_FILTERS = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}
PathLike = str | os.PathLike


def resolve_omniglot_dir(path: PathLike | None = None, *,
                         required: Sequence[str] = OMNIGLOT_FILES) -> pathlib.Path:
  """The Omniglot directory: `path`, else $MMFSL_OMNIGLOT_DIR; it must hold `required` files.

  An empty `path` ("", the config's default data.dir) counts as not given.
  """
  if path is None or str(path) == "":
    path = os.environ.get(OMNIGLOT_ENV) or None
  expected = ", ".join(required or OMNIGLOT_FILES)
  if path is None:
    raise FileNotFoundError(
        f"no Omniglot directory given: pass a path or set the environment variable "
        f"{OMNIGLOT_ENV} to a directory holding {expected}")
  directory = pathlib.Path(path).expanduser()
  if not directory.is_dir():
    raise FileNotFoundError(
        f"Omniglot directory {str(directory)!r} does not exist (expected it to hold "
        f"{expected}; set {OMNIGLOT_ENV} or pass a path)")
  missing = [name for name in required if not (directory / name).is_file()]
  if missing:
    raise FileNotFoundError(
        f"Omniglot directory {str(directory)!r} lacks {', '.join(missing)} (expected "
        f"{expected}; set {OMNIGLOT_ENV} or pass a path)")
  return directory


OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
# Where each file is published (the authors' repository); the runs are its all_runs.zip.
DOWNLOAD_URLS = {
    "images_background_small1.zip": OMNIGLOT_URL + "images_background_small1.zip",
    "images_background_small2.zip": OMNIGLOT_URL + "images_background_small2.zip",
    RUNS_ZIP: OMNIGLOT_URL + "one-shot-classification/all_runs.zip",
}


def check_omniglot_files(path: PathLike | None = None) -> tuple[pathlib.Path, dict[str, str]]:
  """What `mmfsl data prepare omniglot` reports: (directory, {file name: status}).

  Status is "ok (N bytes)", "missing" or "not a readable zip file". Raises FileNotFoundError
  when no directory is given (neither `path` nor $MMFSL_OMNIGLOT_DIR) or it does not exist.
  """
  directory = resolve_omniglot_dir(path, required=())
  status = {}
  for name in OMNIGLOT_FILES:
    file = directory / name
    if not file.is_file():
      status[name] = "missing"
    elif not zipfile.is_zipfile(file):
      status[name] = "not a readable zip file"
    else:
      status[name] = f"ok ({file.stat().st_size} bytes)"
  return directory, status


# ---------------------------------------------------------------------------------------------
# Decoding


def _open_zip(zip_path: pathlib.Path) -> zipfile.ZipFile:
  try:
    return zipfile.ZipFile(zip_path)
  except (zipfile.BadZipFile, OSError, EOFError) as error:
    raise UserError(f"cannot read zip file {str(zip_path)!r}: {error}") from error


def check_resize(resize: str) -> str:
  if resize not in RESIZE_FILTERS:
    raise UserError(f"unknown resize filter {resize!r}; choose one of "
                    f"{', '.join(RESIZE_FILTERS)}")
  return resize


def ink_image(paper: np.ndarray, image_size: int, resize: str = "box") -> np.ndarray:
  """Paper-white image [H, W] (or [H, W, C]) in [0, 1] -> float32 [s, s, 1], ink 1.0, paper 0.0.

  Channels are averaged; resizing uses Pillow's `resize` filter (RESIZE_FILTERS) on the
  float image, and values are clipped to [0, 1]. The zip loader and the TFDS omniglot loader
  both use it, so a model trained on either sees the same pixels (and the one-shot runs,
  decoded the same way).
  """
  paper = np.asarray(paper, dtype=np.float32)
  if paper.ndim == 3:
    paper = paper.mean(axis=-1)
  ink = Image.fromarray(1.0 - paper)  # mode "F"
  if ink.size != (image_size, image_size):
    ink = ink.resize((image_size, image_size), RESIZE_FILTERS[check_resize(resize)])
  return np.clip(np.asarray(ink, dtype=np.float32), 0.0, 1.0)[..., None]


def _decode(zf: zipfile.ZipFile, member: str, image_size: int, resize: str) -> np.ndarray:
  """One PNG member -> float32 [image_size, image_size, 1], ink 1.0, paper 0.0."""
  try:
    with Image.open(io.BytesIO(zf.read(member))) as image:
      paper = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
  except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
    raise UserError(
        f"cannot decode {member!r} in zip file {str(zf.filename)!r}: {error}") from error
  return ink_image(paper, image_size, resize)


def _check_image_size(image_size: int) -> int:
  if int(image_size) != image_size or image_size < 1:
    raise UserError(f"image_size must be a positive integer, got {image_size!r}")
  return int(image_size)


# ---------------------------------------------------------------------------------------------
# Cache


def _cache_file(cache_dir: PathLike | None, kind: str, zips: Sequence[pathlib.Path],
                image_size: int, resize: str) -> pathlib.Path:
  return cache.cache_path(cache_dir, f"omniglot_{kind}_{image_size}px_{resize}",
                          [_CACHE_VERSION, kind, image_size, resize, cache.file_stats(zips)])


# ---------------------------------------------------------------------------------------------
# Characters


def _read_background(zips: Sequence[pathlib.Path], image_size: int,
                     resize: str) -> dict[str, np.ndarray]:
  """names [C] "alphabet/character" (sorted), images float32 [C, 20, s, s, 1]."""
  members: dict[str, tuple[pathlib.Path, list[str]]] = {}
  for zip_path in zips:
    with _open_zip(zip_path) as zf:
      found: dict[str, list[str]] = {}
      for member in zf.namelist():
        parts = member.split("/")
        if len(parts) == 4 and parts[3].endswith(".png"):
          found.setdefault(f"{parts[1]}/{parts[2]}", []).append(member)
    for name, files in found.items():
      members.setdefault(name, (zip_path, sorted(files)))  # first zip wins: dedup
  if not members:
    raise UserError(f"no character images found in {[str(z) for z in zips]}")
  names = sorted(members)
  counts = {len(members[name][1]) for name in names}
  if len(counts) != 1:
    raise UserError(f"characters have differing numbers of drawings: {sorted(counts)}")
  images = np.empty((len(names), counts.pop(), image_size, image_size, 1), np.float32)
  open_zips: dict[pathlib.Path, zipfile.ZipFile] = {}
  try:
    for c, name in enumerate(names):
      zip_path, files = members[name]
      if zip_path not in open_zips:
        open_zips[zip_path] = _open_zip(zip_path)
      for i, member in enumerate(files):
        images[c, i] = _decode(open_zips[zip_path], member, image_size, resize)
  finally:
    for zf in open_zips.values():
      zf.close()
  return {"names": np.array(names), "images": images}


def load_omniglot_characters(path: PathLike | None = None, image_size: int = 28, *,
                             resize: str = "box", cache_dir: PathLike | None = None,
                             ) -> dict[str, dict[str, np.ndarray]]:
  """alphabet -> character -> float32 [20, image_size, image_size, 1], both small sets merged.

  Alphabets and characters are in sorted order; drawings in drawer order (NNNN_01..20).
  `resize` names the downsampling filter (RESIZE_FILTERS).
  """
  image_size, resize = _check_image_size(image_size), check_resize(resize)
  directory = resolve_omniglot_dir(path, required=BACKGROUND_ZIPS)
  zips = [directory / name for name in BACKGROUND_ZIPS]
  arrays = cache.cached_arrays(_cache_file(cache_dir, "characters", zips, image_size, resize),
                   ("names", "images"), lambda: _read_background(zips, image_size, resize))
  characters: dict[str, dict[str, np.ndarray]] = {}
  for name, images in zip(arrays["names"].tolist(), arrays["images"]):
    alphabet, character = name.split("/")
    characters.setdefault(alphabet, {})[character] = images
  return characters


def _dataset(entries: Sequence[tuple[str, np.ndarray]]) -> ClassDataset:
  """(class name, images [n, ...]) pairs -> ClassDataset with labels in entry order."""
  images = np.concatenate([imgs for _, imgs in entries])
  labels = np.repeat(np.arange(len(entries)), [len(imgs) for _, imgs in entries])
  return ClassDataset(examples={"image": images}, labels=labels,
                      class_names=tuple(name for name, _ in entries), class_texts={})


def omniglot_splits(path: PathLike | None = None, *,
                    val_alphabets: Sequence[str] = DEFAULT_VAL_ALPHABETS,
                    test_alphabets: Sequence[str] = DEFAULT_TEST_ALPHABETS,
                    rotations: bool = True, image_size: int = 28, resize: str = "box",
                    cache_dir: PathLike | None = None) -> dict[str, ClassDataset]:
  """{"train", "val", "test"} ClassDatasets, one class per character, held out by alphabet.

  Alphabets not in val or test go to train; an empty `val_alphabets` or `test_alphabets`
  leaves that split out (training on every alphabet, tested on the one-shot runs). With
  `rotations`, each train character also gives classes "<alphabet>/<character>/rot90",
  ".../rot180", ".../rot270" (counter-clockwise), right after its unrotated class. Images:
  examples["image"] float32 [n, s, s, 1].
  """
  characters = load_omniglot_characters(path, image_size, resize=resize, cache_dir=cache_dir)
  valid = sorted(characters)
  splits = {}
  for split, alphabets in alphabet_splits(valid, val_alphabets, test_alphabets).items():
    entries = []
    for alphabet in alphabets:
      for character, images in characters[alphabet].items():
        name = f"{alphabet}/{character}"
        entries.append((name, images))
        if split == "train" and rotations:
          for degrees in ROTATIONS[1:]:
            rotated = np.rot90(images, k=degrees // 90, axes=(1, 2))
            entries.append((f"{name}/rot{degrees}", rotated))
    splits[split] = _dataset(entries)
  return splits


def alphabet_splits(valid: Sequence[str], val_alphabets: Sequence[str],
                    test_alphabets: Sequence[str]) -> dict[str, list[str]]:
  """{"train": [...], "val": [...], "test": [...]}: the `valid` alphabets held out by name,
  the rest to train; "val" or "test" is left out where its alphabets are () ."""
  val_alphabets, test_alphabets = tuple(val_alphabets), tuple(test_alphabets)
  unknown = sorted(set(val_alphabets + test_alphabets) - set(valid))
  if unknown:
    raise UserError(f"unknown Omniglot alphabet(s) {unknown}; valid alphabets: {list(valid)}")
  overlap = sorted(set(val_alphabets) & set(test_alphabets))
  if overlap:
    raise UserError(f"alphabet(s) {overlap} are in both val_alphabets and test_alphabets")
  train = [a for a in valid if a not in val_alphabets + test_alphabets]
  if not train:
    raise UserError(f"no alphabet is left to train on: val {val_alphabets}, test "
                    f"{test_alphabets} hold all of {list(valid)}")
  groups = {"train": train}
  for split, names in (("val", val_alphabets), ("test", test_alphabets)):
    if names:
      groups[split] = [a for a in valid if a in names]
  return groups


# ---------------------------------------------------------------------------------------------
# One-shot runs

_LABEL_LINE = re.compile(r"^\s*(\S*?item(\d+)\.png)\s+(\S*?class(\d+)\.png)\s*$")


def _parse_class_labels(text: str, source: str) -> list[tuple[int, int]]:
  """class_labels.txt -> [(item index, class index)], 0-based."""
  pairs = []
  for line in text.splitlines():
    if not line.strip():
      continue
    match = _LABEL_LINE.match(line)
    if match is None:
      raise UserError(f"unexpected line {line!r} in {source}")
    pairs.append((int(match.group(2)) - 1, int(match.group(4)) - 1))
  return pairs


def _read_runs(zip_path: pathlib.Path, image_size: int, resize: str) -> dict[str, np.ndarray]:
  """names [R], train/test float32 [R, 20, s, s, 1], answers int [R, 20]."""
  with _open_zip(zip_path) as zf:
    all_members = zf.namelist()
    run_names = sorted({m.split("/")[0] for m in all_members if re.match(r"run\d+/", m)})
    if not run_names:
      raise UserError(f"no runNN/ folders in zip file {str(zip_path)!r}")
    names, trains, tests, answers = [], [], [], []
    for run in run_names:
      train_files = sorted(m for m in all_members
                           if re.fullmatch(rf"{run}/training/class\d+\.png", m))
      test_files = sorted(m for m in all_members if re.fullmatch(rf"{run}/test/item\d+\.png", m))
      labels_member = f"{run}/class_labels.txt"
      source = f"{labels_member!r} in zip file {str(zip_path)!r}"
      try:
        text = zf.read(labels_member).decode()
      except (KeyError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {source}: {error}") from error
      pairs = _parse_class_labels(text, source)
      answer = np.full(len(test_files), -1, np.int64)
      for item, cls in pairs:
        if not (0 <= item < len(test_files) and 0 <= cls < len(train_files)):
          raise UserError(f"item {item + 1} -> class {cls + 1} out of range in {source}")
        answer[item] = cls
      if (answer < 0).any():
        raise UserError(f"{source} does not label every test item")
      names.append(run)
      trains.append([_decode(zf, m, image_size, resize) for m in train_files])
      tests.append([_decode(zf, m, image_size, resize) for m in test_files])
      answers.append(answer)
  return {"names": np.array(names), "train": np.asarray(trains, np.float32),
          "test": np.asarray(tests, np.float32), "answers": np.asarray(answers)}


def load_one_shot_runs(path: PathLike | None = None, image_size: int = 28, *,
                       resize: str = "box", cache_dir: PathLike | None = None) -> list[dict]:
  """The 20 one-shot runs of Lake et al. 2015, preprocessed like the characters (give the
  model's training `resize` filter).

  Each run: {"name": "run01", "train": float32 [20, s, s, 1] (class01..class20),
  "test": float32 [20, s, s, 1] (item01..item20), "answers": int [20] (train index of the
  class of each test item, from class_labels.txt)}.
  """
  image_size, resize = _check_image_size(image_size), check_resize(resize)
  zip_path = resolve_omniglot_dir(path, required=(RUNS_ZIP,)) / RUNS_ZIP
  arrays = cache.cached_arrays(_cache_file(cache_dir, "runs", [zip_path], image_size, resize),
                   ("names", "train", "test", "answers"),
                   lambda: _read_runs(zip_path, image_size, resize))
  return [{"name": name, "train": arrays["train"][r], "test": arrays["test"][r],
           "answers": arrays["answers"][r]}
          for r, name in enumerate(arrays["names"].tolist())]
