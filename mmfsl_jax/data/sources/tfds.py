"""Few-shot datasets read from TensorFlow Datasets with `tfds.data_source` (no TensorFlow needed).

    name            TFDS builder (splits pooled)          classes  train/val/test  image  text
    tfds_omniglot   omniglot (train, test | small1+2)     1623     see below       28x28x1  -
    cifar_fs        cifar100 (train + test)               100      64 / 16 / 20    32x32x3  yes
    fc100           cifar100 (train + test)               100      60 / 20 / 20    32x32x3  yes
    cub             caltech_birds2011 (train + test)      200      100 / 50 / 50   84x84x3  yes
    flowers102      oxford_flowers102 (train+validation+test)  102  51 / 26 / 25   84x84x3  yes

The TFDS train/test splits are pooled, then *classes* are split (few-shot splits are by class):
- cifar_fs: the CIFAR-FS split of Bertinetto et al. 2019 (R2D2), as distributed with their
  code and torchmeta's assets: the class lists CIFAR_FS_VAL (16) and CIFAR_FS_TEST (20)
  of class_splits.py (with the other tables and split rules);
  the other 64 classes are train. 600 images per class.
- fc100: FC100 of Oreshkin et al. 2018 (TADAM), by CIFAR-100 superclass (coarse label):
  val superclasses FC100_VAL, test FC100_TEST (4 each), the other 12 train: 60/20/20 classes.
- cub: classes in label order (= the sorted class folders 001..200): even index -> train,
  index % 4 == 1 -> val, index % 4 == 3 -> test (../shared/docs/ANCHORS.md), 100/50/50.
- flowers102: no standard few-shot split exists (Meta-Dataset's 71/15/16 comes from a seeded
  permutation); this library applies the CUB rule to the label index 0..101: 51/26/25.
- tfds_omniglot: image only. With `tfds_splits="full"` (default) the background set (TFDS
  "train", 30 alphabets, 964 characters) gives train and val, val being every fifth alphabet in
  sorted order (index % 5 == 4: 6 alphabets), and the evaluation set (TFDS "test", 20
  alphabets, 659 characters; the one-shot runs come from it) is test. With "small", TFDS's
  small1 + small2 are merged (Greek and Latin deduplicated: 8 alphabets, 242 characters) and
  split by the given val/test alphabets, as `omniglot.omniglot_splits` does with the zip
  files. Rotations by 90/180/270 degrees become new train classes in both.

Class names, cleaned into words (`clean_class_name`), are class-level text only:
`class_texts["text"]` (raw strings). Examples get no text of their own: a per-example copy of
the class name would hand every query its label. Class-level text enters through
prototype-level fusion (AM3-style learners), not through per-example encoders.

Images: resized to `image_size` (the whole image, bilinear with anti-aliasing), then float32
normalised per channel with the dataset's mean and std (CIFAR-100's, or ImageNet's for CUB
and flowers); Omniglot as in omniglot.py (ink 1.0 on 0.0, BOX filter). Decoded, resized images
are cached in memory and, as uint8 (float32 for Omniglot), on disk under the mmfsl_jax cache
directory (data/cache.py), keyed by the prepared TFDS files; a dataset read through a mock
is never cached.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
import os
import pathlib

import numpy as np
from PIL import Image

from mmfsl_jax.data import cache
from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.sources import omniglot
from mmfsl_jax.data.sources.class_splits import (  # noqa: F401 (re-exported)
    CIFAR100_CLASSES, CIFAR100_SUPERCLASS_OF, CIFAR100_SUPERCLASSES, CIFAR_FS_TEST, CIFAR_FS_VAL,
    FC100_TEST, FC100_VAL, cifar_fs_split, class_split_by_index, clean_class_name, fc100_split)
from mmfsl_jax.errors import UserError

SPLITS = ("train", "val", "test")
OMNIGLOT_SPLIT_SETS = ("full", "small")   # tfds_omniglot_splits(tfds_splits=...)
_CACHE_VERSION = 1

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How one of this library's dataset names reads a TFDS builder."""
  tfds_name: str
  tfds_splits: tuple[str, ...]     # pooled before the class split
  image_size: int                  # default when data.image_size is 0
  channels: int
  has_text: bool
  augment: str                     # the default ("auto") train augmentation
  mean: tuple[float, ...] = ()
  std: tuple[float, ...] = ()


DATASETS: dict[str, TfdsSpec] = {
    "tfds_omniglot": TfdsSpec("omniglot", ("train", "test"), 28, 1, False, "none"),
    "cifar_fs": TfdsSpec("cifar100", ("train", "test"), 32, 3, True, "crop_flip",
                         CIFAR100_MEAN, CIFAR100_STD),
    "fc100": TfdsSpec("cifar100", ("train", "test"), 32, 3, True, "crop_flip",
                      CIFAR100_MEAN, CIFAR100_STD),
    "cub": TfdsSpec("caltech_birds2011", ("train", "test"), 84, 3, True, "crop_flip",
                    IMAGENET_MEAN, IMAGENET_STD),
    "flowers102": TfdsSpec("oxford_flowers102", ("train", "validation", "test"), 84, 3, True,
                           "crop_flip", IMAGENET_MEAN, IMAGENET_STD),
}


def _spec(name: str) -> TfdsSpec:
  if name not in DATASETS:
    raise UserError(f"unknown TFDS-backed dataset {name!r}; choose one of "
                    f"{', '.join(DATASETS)}")
  return DATASETS[name]


def _looks_named(names: Sequence[str]) -> bool:
  """False for the placeholder names "0", "1", ... of a ClassLabel whose names are unknown."""
  return bool(names) and not all(str(n).isdigit() for n in names)


# ---------------------------------------------------------------------------------------------
# Reading TFDS


def _tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as error:  # a declared dependency; only a broken install lacks it
    raise UserError(f"reading TFDS datasets needs the package tensorflow-datasets "
                    f"(pip install tensorflow-datasets): {error}") from error
  return tfds


def _not_prepared(name: str, tfds_name: str, data_dir: str | None, where: str,
                  detail: str) -> UserError:
  given = f" --data-dir {data_dir}" if data_dir else ""
  return UserError(
      f"dataset {name!r} needs the TFDS dataset {tfds_name!r} prepared in array_record format, "
      f"but it is not in {where} ({detail}). Run `mmfsl data prepare {name}{given}` on a "
      f"machine with an internet connection (TFDS downloads it), then point data.dir (or "
      f"$TFDS_DATA_DIR) at that directory.")


def _open_sources(name: str, spec: TfdsSpec, splits: Sequence[str], data_dir: str | None):
  """(builder, {split: data source}); a clear UserError when the data is not there."""
  tfds = _tfds()
  try:
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  except Exception as error:  # noqa: BLE001  (TFDS raises many kinds)
    raise UserError(f"cannot open TFDS builder {spec.tfds_name!r} for dataset {name!r} "
                    f"(data_dir={data_dir or 'TFDS default'}): {error}") from error
  sources = {}
  for split in splits:
    try:
      sources[split] = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir,
                                        download=False)
    except Exception as error:  # noqa: BLE001
      try:
        prepared = builder.is_prepared()
      except Exception:  # noqa: BLE001
        prepared = False
      detail = ("it is not prepared there" if not prepared else
                f"TFDS could not open split {split!r}: {type(error).__name__}: {error}")
      raise _not_prepared(name, spec.tfds_name, data_dir, str(builder.data_dir),
                          detail) from error
  return builder, sources


def _rgb(image: np.ndarray, image_size: int) -> np.ndarray:
  """Any decoded image [H, W(, C)] -> uint8 [s, s, 3], the whole image resized."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  image = image[..., :3].astype(np.uint8)
  if image.shape[:2] != (image_size, image_size):
    image = np.asarray(Image.fromarray(image).resize((image_size, image_size),
                                                     Image.Resampling.BILINEAR))
  return image


def _ink(image: np.ndarray, image_size: int, resize: str) -> np.ndarray:
  """A TFDS omniglot image (paper white, uint8) -> float32 [s, s, 1], ink 1.0."""
  return omniglot.ink_image(np.asarray(image, np.float32) / 255.0, image_size, resize)


def _read(source, fields: Sequence[str], convert: Callable, image_size: int,
          desc: str) -> dict[str, np.ndarray]:
  """All examples of one data source: images [n, ...] (converted), labels [n], `fields`."""
  from tqdm.auto import tqdm
  images, labels = [], []
  extra: dict[str, list] = {f: [] for f in fields}
  for i in tqdm(range(len(source)), desc=desc, disable=len(source) < 5000, leave=False):
    example = source[i]
    images.append(convert(example["image"], image_size))
    labels.append(int(example["label"]))
    for f in fields:
      value = example[f]
      extra[f].append(value.decode() if isinstance(value, bytes) else value)
  if not images:
    raise UserError(f"{desc.replace('decoding ', 'TFDS ')} holds no examples")
  out = {"images": np.stack(images), "labels": np.asarray(labels, np.int64)}
  for f, values in extra.items():
    out[f] = np.asarray(values) if values and not isinstance(values[0], str) else np.array(
        values, dtype=str)
  return out


def _cache_file(cache_dir, name: str, builder, splits, image_size: int,
                resize: str | None) -> pathlib.Path | None:
  """Where the decoded arrays of a prepared dataset are cached; None when nothing is on disk.
  `resize`: Omniglot's downsampling filter (None for RGB datasets)."""
  directory = pathlib.Path(str(builder.data_dir))
  if not directory.is_dir():
    return None
  stats = sorted(cache.file_stats([p for p in directory.iterdir() if p.is_file()]))
  filter_name = f"_{resize}" if resize else ""
  return cache.cache_path(cache_dir, f"tfds_{builder.name}_{image_size}px{filter_name}",
                          [_CACHE_VERSION, name, str(directory), list(splits), image_size,
                           resize, stats])


def read_tfds(name: str, splits: Sequence[str], *, fields: Sequence[str] = (),
              data_dir: str | None = None, image_size: int | None = None,
              resize: str = "box", cache_dir=None,
              ) -> tuple[dict[str, dict[str, np.ndarray]], object]:
  """The TFDS splits of dataset `name`, decoded: ({split: arrays}, builder info).

  arrays: "images" uint8 [n, s, s, 3] (float32 [n, s, s, 1] ink for Omniglot, downsampled
  with the `resize` filter, omniglot.RESIZE_FILTERS; RGB images resize bilinearly), "labels"
  int [n] and each of `fields` [n].
  """
  spec = _spec(name)
  image_size = int(image_size or spec.image_size)
  if image_size < 1:
    raise UserError(f"image_size must be positive, got {image_size}")
  data_dir = str(data_dir) if data_dir else None
  builder, sources = _open_sources(name, spec, splits, data_dir)
  ink = spec.channels == 1
  resize = omniglot.check_resize(resize) if ink else None
  convert = functools.partial(_ink, resize=resize) if ink else _rgb
  keys = [f"{split}/{k}" for split in splits for k in ("images", "labels", *fields)]

  def build():
    out = {}
    for split in splits:
      arrays = _read(sources[split], fields, convert, image_size,
                     f"decoding {spec.tfds_name}[{split}]")
      out.update({f"{split}/{k}": v for k, v in arrays.items()})
    return out

  cache_file = _cache_file(cache_dir, name, builder, splits, image_size, resize)
  arrays = build() if cache_file is None else cache.cached_arrays(cache_file, keys, build)
  per_split = {split: {k.split("/", 1)[1]: v for k, v in arrays.items()
                       if k.startswith(split + "/")} for split in splits}
  return per_split, builder.info


# ---------------------------------------------------------------------------------------------
# ClassDatasets


def _normalise(images: np.ndarray, spec: TfdsSpec) -> np.ndarray:
  if spec.channels == 1:
    return images.astype(np.float32, copy=False)
  mean = np.asarray(spec.mean, np.float32) * 255.0
  std = np.asarray(spec.std, np.float32) * 255.0
  return ((images.astype(np.float32) - mean) / std).astype(np.float32)


def _class_dataset(images: np.ndarray, labels: np.ndarray, classes: Sequence[int],
                   names: Sequence[str], text: bool) -> ClassDataset:
  """The examples of `classes` (original labels, in this order) relabelled 0..len-1."""
  lookup = np.full(int(max(labels.max(initial=0), max(classes, default=0))) + 1, -1, np.int64)
  lookup[np.asarray(classes, np.int64)] = np.arange(len(classes))
  keep = np.flatnonzero(lookup[labels] >= 0) if len(labels) else np.zeros(0, np.int64)
  order = keep[np.argsort(lookup[labels[keep]], kind="stable")]
  new_labels = lookup[labels[order]]
  examples = {"image": images[order]}
  class_texts = {}
  if text:
    class_texts["text"] = np.array([clean_class_name(n) for n in names], dtype=object)
  return ClassDataset(examples=examples, labels=new_labels, class_names=tuple(names),
                      class_texts=class_texts)


def _split_by_rule(name: str, images, labels, class_names: Sequence[str],
                   rule: Callable[[int, str], str], text: bool) -> dict[str, ClassDataset]:
  """Classes (in label order, those with examples) -> split by `rule(label, name)`."""
  present = sorted(set(labels.tolist()))
  out = {}
  for split in SPLITS:
    classes = [c for c in present if rule(c, class_names[c]) == split]
    if not classes:
      raise UserError(f"dataset {name!r}: the {split} split has no classes with examples "
                      f"({len(present)} classes found in the data)")
    out[split] = _class_dataset(images, labels, classes, [class_names[c] for c in classes], text)
  return out


def _pooled(arrays: Mapping[str, Mapping[str, np.ndarray]], keys: Sequence[str]) -> dict:
  return {k: np.concatenate([a[k] for a in arrays.values()]) for k in keys}


def _cifar_names(info) -> tuple[str, ...]:
  """The fine class names by label: TFDS's, or the standard list where TFDS has none."""
  names = list(info.features["label"].names)
  if not _looks_named(names):
    return CIFAR100_CLASSES
  if sorted(names) != sorted(CIFAR100_CLASSES):
    unexpected = sorted(set(names) - set(CIFAR100_CLASSES))[:5]
    raise UserError(f"the TFDS cifar100 label names are not the CIFAR-100 classes this library "
                    f"splits by (unexpected: {unexpected}); the CIFAR-FS and FC100 splits need "
                    f"the standard cifar100 dataset")
  return tuple(names)


def _first_by_label(labels: np.ndarray, values: np.ndarray) -> dict[int, str]:
  out: dict[int, str] = {}
  for label, value in zip(labels.tolist(), values.tolist()):
    out.setdefault(label, str(value))
  return out


def _rotated(entries: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
  """Each (name, images [n, s, s, 1]) followed by its 90/180/270-degree rotations."""
  out = []
  for class_name, imgs in entries:
    out.append((class_name, imgs))
    for degrees in omniglot.ROTATIONS[1:]:
      out.append((f"{class_name}/rot{degrees}", np.rot90(imgs, k=degrees // 90, axes=(1, 2))))
  return out


def _entries_dataset(entries: Sequence[tuple[str, np.ndarray]], split: str) -> ClassDataset:
  if not entries:
    raise UserError(f"dataset 'tfds_omniglot': the {split} split would be empty")
  images = np.concatenate([imgs for _, imgs in entries])
  labels = np.repeat(np.arange(len(entries)), [len(imgs) for _, imgs in entries])
  return ClassDataset(examples={"image": images}, labels=labels,
                      class_names=tuple(n for n, _ in entries))


def _omniglot_characters(arrays: Mapping[str, np.ndarray],
                         info) -> dict[str, dict[str, np.ndarray]]:
  """alphabet -> "characterNN" -> images, one entry per TFDS label."""
  alphabet_names = list(info.features["alphabet"].names)
  by_label: dict[int, tuple[str, str]] = {}
  for label, alphabet, char in zip(arrays["labels"].tolist(), arrays["alphabet"].tolist(),
                                   arrays["alphabet_char_id"].tolist()):
    if label not in by_label:
      alpha = (alphabet_names[alphabet] if _looks_named(alphabet_names)
               and 0 <= alphabet < len(alphabet_names) else f"alphabet{alphabet:02d}")
      by_label[label] = (alpha, f"character{int(char) + 1:02d}")
  characters: dict[str, dict[str, np.ndarray]] = {}
  for label in sorted(by_label, key=lambda l: (by_label[l], l)):
    alphabet, char = by_label[label]
    chars = characters.setdefault(alphabet, {})
    chars[char if char not in chars else f"{char}_{label}"] = (
        arrays["images"][arrays["labels"] == label])
  return characters


def tfds_omniglot_splits(*, data_dir=None, image_size: int | None = None,
                         tfds_splits: str = "full",
                         val_alphabets: Sequence[str] = omniglot.DEFAULT_VAL_ALPHABETS,
                         test_alphabets: Sequence[str] = omniglot.DEFAULT_TEST_ALPHABETS,
                         rotations: bool = True, resize: str = "box",
                         cache_dir=None) -> dict[str, ClassDataset]:
  """Omniglot from TFDS as {"train", "val", "test"} image-only ClassDatasets (module docstring).

  Images float32 [n, s, s, 1], ink 1.0 on 0.0. Class names "<alphabet>/characterNN", train
  rotations "<alphabet>/characterNN/rot90" etc. `val_alphabets`/`test_alphabets` apply to
  `tfds_splits="small"` only, as in `omniglot.omniglot_splits` (() leaves that split out).
  """
  fields = ("alphabet", "alphabet_char_id")
  if tfds_splits == "full":
    arrays, info = read_tfds("tfds_omniglot", ("train", "test"), fields=fields,
                             data_dir=data_dir, image_size=image_size, resize=resize,
                             cache_dir=cache_dir)
    background = _omniglot_characters(arrays["train"], info)
    evaluation = _omniglot_characters(arrays["test"], info)
    alphabets = sorted(background)
    held_out = {a for i, a in enumerate(alphabets) if i % 5 == 4}
    groups = {"train": [a for a in alphabets if a not in held_out],
              "val": [a for a in alphabets if a in held_out]}
    sources = {"train": background, "val": background, "test": evaluation}
    groups["test"] = sorted(evaluation)
  elif tfds_splits == "small":
    arrays, info = read_tfds("tfds_omniglot", ("small1", "small2"), fields=fields,
                             data_dir=data_dir, image_size=image_size, resize=resize,
                             cache_dir=cache_dir)
    first = arrays["small1"]
    second = arrays["small2"]
    keep = ~np.isin(second["labels"], first["labels"])  # Greek, Latin: in both, keep one
    merged = {k: np.concatenate([first[k], second[k][keep]]) for k in first}
    characters = _omniglot_characters(merged, info)
    groups = omniglot.alphabet_splits(sorted(characters), val_alphabets, test_alphabets)
    sources = {split: characters for split in groups}
  else:
    raise UserError(f"data.omniglot.tfds_splits={tfds_splits!r} is not valid; choose 'full' "
                    f"(TFDS train/test: all 50 alphabets) or 'small' (small1 + small2)")
  out = {}
  for split in groups:
    entries = [(f"{a}/{c}", imgs) for a in groups[split] for c, imgs in sources[split][a].items()]
    if split == "train" and rotations:
      entries = _rotated(entries)
    out[split] = _entries_dataset(entries, split)
  return out


def tfds_splits(name: str, *, data_dir=None, image_size: int | None = None, cache_dir=None,
                **omniglot_options) -> dict[str, ClassDataset]:
  """{"train", "val", "test"} ClassDatasets of a TFDS-backed dataset (see the module docstring).

  examples: "image" float32 [n, s, s, C] (normalised); for datasets with class names,
  class_texts["text"] object [num_classes] (the cleaned names).
  `omniglot_options` go to `tfds_omniglot_splits` (tfds_omniglot only).
  """
  spec = _spec(name)
  if name == "tfds_omniglot":
    return tfds_omniglot_splits(data_dir=data_dir, image_size=image_size, cache_dir=cache_dir,
                                **omniglot_options)
  fields = ("label_name",) if name == "cub" else ()
  arrays, info = read_tfds(name, spec.tfds_splits, fields=fields, data_dir=data_dir,
                           image_size=image_size, cache_dir=cache_dir)
  pooled = _pooled(arrays, ("images", "labels", *fields))
  images, labels = _normalise(pooled["images"], spec), pooled["labels"]
  if name in ("cifar_fs", "fc100"):
    names = _cifar_names(info)
    pick = cifar_fs_split if name == "cifar_fs" else fc100_split
    rule = lambda label, class_name: pick(class_name)
  elif name == "cub":
    num = info.features["label"].num_classes
    from_examples = _first_by_label(labels, pooled["label_name"])
    info_names = list(info.features["label"].names)
    names = [from_examples.get(c, info_names[c] if _looks_named(info_names) else f"class {c}")
             for c in range(max(num, int(labels.max(initial=-1)) + 1))]
    rule = lambda label, class_name: class_split_by_index(label)
  else:  # flowers102
    names = list(info.features["label"].names)
    rule = lambda label, class_name: class_split_by_index(label)
  return _split_by_rule(name, images, labels, names, rule, spec.has_text)


# ---------------------------------------------------------------------------------------------
# Download and prepare


def download_and_prepare(name: str, data_dir=None) -> str:
  """`mmfsl data prepare NAME`: TFDS download_and_prepare in array_record format.

  NAME is one of DATASETS or a TFDS builder name. Returns a one-line report; raises UserError
  naming the dataset, the directory and what is missing (an internet connection, a package)
  when it cannot.
  """
  tfds_name = DATASETS[name].tfds_name if name in DATASETS else name
  label = f"{name!r}" + (f" (TFDS {tfds_name!r})" if tfds_name != name else "")
  tfds = _tfds()
  data_dir = str(data_dir) if data_dir else None
  where_default = os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except Exception as error:  # noqa: BLE001
    known = ", ".join(DATASETS)
    raise UserError(f"cannot prepare {label}: {type(error).__name__}: "
                    f"{str(error).splitlines()[0].rstrip('.')}. This library's TFDS datasets: "
                    f"{known} "
                    f"(or any TFDS builder name); 'omniglot' checks the zip files.") from error
  where = str(builder.data_dir)
  try:
    if builder.is_prepared() and "array_record" in str(builder.info.file_format).lower():
      return f"{label} is already prepared in {where}"
  except Exception:  # noqa: BLE001
    pass
  try:
    builder.download_and_prepare(file_format="array_record")
  except ImportError as error:
    module = getattr(error, "name", None) or str(error)
    raise UserError(
        f"cannot prepare {label} in {where}: preparing it needs the Python module "
        f"{module!r}, which is not installed (TFDS builders often need TensorFlow to generate "
        f"the files: pip install tensorflow), and an internet connection to download it. "
        f"Reading a prepared dataset needs neither: you can also prepare it on another machine "
        f"and copy DIR/{tfds_name} into {data_dir or where_default}. "
        f"({type(error).__name__}: {error})") from error
  except Exception as error:  # noqa: BLE001  (network errors come in many types)
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    raise UserError(
        f"cannot download and prepare {label} into {where}: {type(error).__name__}: "
        f"{first}. Downloading needs an internet connection; offline, prepare it on a machine "
        f"that has one (`mmfsl data prepare {name} --data-dir DIR`) and copy DIR/{tfds_name} "
        f"into {data_dir or where_default}.") from error
  return f"prepared {label} in {where}"
