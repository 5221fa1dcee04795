"""From a config's `data` section to ready-to-sample splits: build the dataset, turn raw text
into arrays.

Datasets (`data.name`): "shapes" (generated), "omniglot" (the zip files, in `data.dir` or
$MMFSL_OMNIGLOT_DIR), and the TFDS-backed "tfds_omniglot", "cifar_fs", "fc100", "cub",
"flowers102" (prepared TFDS data in `data.dir`, else TFDS's default directory; see
data/sources/tfds.py), and "files": your own data, a manifest file or an ImageFolder in
`data.files.manifest` (data/sources/files.py; only the modalities in data.modalities are
read). `data.image_size` 0 means the dataset's own size. Omniglot is image only: asking it
for 'text' is an error before anything is loaded.

Images stay images, except with a frozen pretrained backbone (`model.image.encoder=pretrained`):
then they become its cached features [n, D] (run/image_features.py).

Raw text (object arrays of strings) becomes, by `model.text.encoder`:
- "bow" / "gru": word ids [n, L] from a vocabulary of the meta-train split;
- "pretrained", frozen: cached features [n, D] of the pretrained model (computed once per
  distinct string), which the model then treats as a vector modality;
- "pretrained", trainable: the model's own token ids [n, L] (0 is padding).
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any

import numpy as np

from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.modalities import kind_of, of_kind
from mmfsl_jax.data.sources.shapes import ShapesConfig, shapes_splits
from mmfsl_jax.data.text import WordVocabulary
from mmfsl_jax.errors import ConfigError, UserError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Encoding:
  """How a modality's raw data became the arrays the model reads (text always; images with a
  frozen pretrained backbone, run/image_features.py), and what the model builder needs to
  know of those arrays."""
  kind: str                      # "ids" or "features"
  vocab_size: int = 0
  feature_dim: int = 0
  pretrained: Any = None         # a PretrainedText or ImageBackbone, where one encodes
  # raw texts (a list of strings) or images [n, H, W, C] -> those arrays, as built from the
  # meta-train split (its vocabulary); `encode_dataset` applies it to data the run did not see
  encode: Callable | None = dataclasses.field(default=None, repr=False, compare=False)
  # class-level texts -> arrays, where they are encoded otherwise (prompt templates)
  encode_class: Callable | None = dataclasses.field(default=None, repr=False, compare=False)

  def encode_classes(self, texts):
    return (self.encode_class or self.encode)(texts)


# dataset -> (modalities it has, image channels, default image size, default augmentation)
DATASET_INFO = {
    "shapes": (("image", "text"), 3, 32, "none"),
    "omniglot": (("image",), 1, 28, "none"),
    "tfds_omniglot": (("image",), 1, 28, "none"),
    "cifar_fs": (("image",), 3, 32, "crop_flip"),
    "fc100": (("image",), 3, 32, "crop_flip"),
    "cub": (("image",), 3, 84, "crop_flip"),
    "flowers102": (("image",), 3, 84, "crop_flip"),
    "files": (("image", "text"), 3, 32, "none"),
}
# Datasets whose only text is their class names (class-level text, never per example).
_NAME_TEXT = ("cifar_fs", "fc100", "cub", "flowers102")


def _dataset_info(name: str):
  if name not in DATASET_INFO:
    raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_INFO)}")
  return DATASET_INFO[name]


def dataset_modalities(name: str) -> tuple[str, ...]:
  return _dataset_info(name)[0]


def dataset_channels(name: str) -> int:
  return _dataset_info(name)[1]


def image_channels(config) -> int:
  """The channels of the config's images: the dataset's, or for "files" 1 when its images
  are read as ink (data.files.color=ink), else 3."""
  if config.data.name == "files":
    return 1 if config.data.files.color == "ink" else 3
  return dataset_channels(config.data.name)


def manifest_image_reading(config) -> dict[str, str]:
  """How a manifest's images must be read for a model trained on the config's data (files.py's
  `color` and `resize`): Omniglot models read ink (inverted luminance, 1 channel) with their
  resize filter; models trained on files read as their own data were; others RGB, bilinear."""
  if config.data.name in ("omniglot", "tfds_omniglot"):
    return {"color": "ink", "resize": str(config.data.omniglot.resize)}
  if config.data.name == "files":
    return {"color": str(config.data.files.color), "resize": str(config.data.files.resize)}
  return {"color": "rgb", "resize": "bilinear"}


def dataset_image_size(config) -> int:
  """The image size a config's data has: data.image_size, or the dataset's default."""
  if config.data.image_size:
    return int(config.data.image_size)
  if config.data.name == "shapes":
    return int(config.data.shapes.image_size)
  return _dataset_info(config.data.name)[2]


def uses_frozen_features(config) -> bool:
  """Whether the config's images become cached features of a frozen pretrained backbone."""
  image = config.model.image
  return image.encoder == "pretrained" and not image.trainable


def train_augmentation(config) -> str:
  """data.augment with "auto" replaced by the dataset's default ("none" or "crop_flip"), and
  by "none" where images become a frozen backbone's features (computed once, unaugmented)."""
  if config.data.augment == "auto":
    return "none" if uses_frozen_features(config) else _dataset_info(config.data.name)[3]
  return config.data.augment


def check_dataset_modalities(config) -> None:
  """UserError when the config asks for a modality its dataset does not have (for "files",
  which the manifest may lack: the source names the missing column, when it reads it)."""
  name = config.data.name
  if name == "files" and not str(config.data.files.manifest):
    raise UserError(
        "data.name=files needs data.files.manifest: a CSV, TSV or JSON-lines file with one "
        "row per example (image paths relative to it), or an ImageFolder directory "
        "root/<class>/<image>")
  if name == "files":
    return  # a manifest holds any modalities; files.py names a missing column
  has = dataset_modalities(name)
  missing = [m for m in config.data.modalities if m not in has]
  if "text" in missing and name in _NAME_TEXT:
    raise UserError(
        f"dataset {name!r} has text per class (its class names), not per example: "
        f"encoding a query's text would give its label away. Use "
        f"data.modalities=\"('image',)\"; "
        f"class names are kept as class-level text (ClassDataset.class_texts) for "
        f"prototype-level (AM3-style) fusion")
  if missing:
    with_text = [n for n, info in DATASET_INFO.items() if "text" in info[0]]
    raise UserError(
        f"dataset {name!r} has only the modalities {has}, but data.modalities="
        f"{tuple(config.data.modalities)} asks for {missing}. Set data.modalities=\"{has}\""
        + (" (as the omniglot_protonet config does)" if "omniglot" in name else "")
        + f", or choose a dataset with text: {', '.join(with_text)}")


def file_columns(config) -> dict[str, str]:
  """data.files.columns ("modality=column" items) as modality -> column."""
  out = {}
  for item in tuple(config.data.files.columns):
    modality, equals, column = str(item).partition("=")
    if not equals or not modality.strip() or not column.strip():
      raise ConfigError(f"data.files.columns item {item!r}: write modality=column, e.g. "
                        f"\"vector_labs=labs\"")
    if modality.strip() in out:
      raise ConfigError(f"data.files.columns names {modality.strip()!r} twice")
    out[modality.strip()] = column.strip()
  return out


def build_splits(config) -> dict[str, ClassDataset]:
  check_dataset_modalities(config)
  data = config.data
  data_dir = str(data.dir) if data.dir else None
  if data.name == "shapes":
    fields = {f.name for f in dataclasses.fields(ShapesConfig)}
    values = {k: (tuple(v) if isinstance(v, (list, tuple)) else v)
              for k, v in data.shapes.items() if k in fields}
    if data.image_size:
      values["image_size"] = int(data.image_size)
    return shapes_splits(ShapesConfig(**values))
  image_size = dataset_image_size(config)
  if data.name == "files":
    from mmfsl_jax.data.sources.files import files_splits
    files = data.files
    return files_splits(
        str(files.manifest), image_column=files.image_column, text_column=files.text_column,
        label_column=files.label_column, split_column=files.split_column,
        train_classes=tuple(files.train_classes), val_classes=tuple(files.val_classes),
        test_classes=tuple(files.test_classes), split_fractions=tuple(files.split_fractions),
        split_seed=int(files.split_seed), class_texts=str(files.class_texts),
        image_size=image_size, modalities=tuple(data.modalities),
        columns=file_columns(config), color=files.color, resize=files.resize)
  omniglot = data.omniglot
  if data.name == "omniglot":
    from mmfsl_jax.data.sources.omniglot import omniglot_splits
    return omniglot_splits(data_dir, val_alphabets=tuple(omniglot.val_alphabets),
                           test_alphabets=tuple(omniglot.test_alphabets),
                           rotations=bool(omniglot.rotations), image_size=image_size,
                           resize=omniglot.resize)
  from mmfsl_jax.data.sources.tfds import tfds_splits
  if data.name == "tfds_omniglot":
    return tfds_splits("tfds_omniglot", data_dir=data_dir, image_size=image_size,
                       tfds_splits=omniglot.tfds_splits,
                       val_alphabets=tuple(omniglot.val_alphabets),
                       test_alphabets=tuple(omniglot.test_alphabets),
                       rotations=bool(omniglot.rotations), resize=omniglot.resize)
  return tfds_splits(data.name, data_dir=data_dir, image_size=image_size)


def _map_text(splits, modality: str, info: Encoding):
  out = {}
  for name, ds in splits.items():
    class_text = ds.class_texts.get(modality)
    out[name] = ds.with_modality(
        modality, info.encode(list(ds.examples[modality])),
        None if class_text is None else info.encode_classes(list(class_text)))
  return out


def _pad_to_same_length(splits, modality: str):
  """Pads the id arrays of `modality` in all splits (examples and class texts) to one length."""
  arrays = [a for ds in splits.values()
            for a in (ds.examples[modality], ds.class_texts.get(modality)) if a is not None]
  length = max(a.shape[1] for a in arrays)
  pad = lambda a: np.pad(a, ((0, 0), (0, length - a.shape[1])))
  return {n: ds.with_modality(modality, pad(ds.examples[modality]),
                              None if modality not in ds.class_texts
                              else pad(ds.class_texts[modality]))
          for n, ds in splits.items()}


def text_mapping(train: ClassDataset, config, modality: str = "text", *,
                 pretrained=None) -> Encoding:
  """The Encoding of the config's text encoder for the text `modality`; its `encode` turns
  raw texts into the arrays the model reads, built from the meta-train split `train` (the
  bow/gru vocabulary of that modality's texts). `pretrained`: the loaded PretrainedText,
  where the caller has it."""
  text = config.model.text
  max_length = text.max_length
  if text.encoder in ("bow", "gru"):
    texts = train.examples[modality]
    if not any(str(t).strip() for t in texts) and modality in train.class_texts:
      texts = train.class_texts[modality]   # examples without captions: the class texts' words
    vocab = WordVocabulary.build(texts)
    return Encoding("ids", vocab_size=vocab.size,
                    encode=lambda texts: vocab.encode(texts, max_length))
  from mmfsl_jax.nn.encoders.pretrained_text import (TextFeatureCache, load_pretrained_text,
                                                     prompt_ensemble, tokenize)
  pretrained = pretrained or load_pretrained_text(text.pretrained)
  if text.trainable:
    return Encoding("ids", pretrained=pretrained,
                    encode=lambda texts: tokenize(pretrained, texts, max_length)["ids"])
  cache = TextFeatureCache(pretrained, max_length=max_length)
  templates = tuple(str(t) for t in text.prompts)
  return Encoding("features", feature_dim=pretrained.dim, pretrained=pretrained, encode=cache,
                  encode_class=(lambda texts: prompt_ensemble(cache, texts, templates))
                  if templates else None)


def _encode_modality(splits, modality: str, info: Encoding):
  out = _map_text(splits, modality, info)
  return out if info.kind == "features" else _pad_to_same_length(out, modality)


def encode_dataset(dataset: ClassDataset, encodings: dict[str, Encoding]) -> ClassDataset:
  """`dataset` (raw text and images) with each modality of `encodings` that it has encoded,
  as `prepare_splits` encodes a run's splits (text ids padded to one length over its
  examples and class texts; images as a frozen backbone's features)."""
  out = {"data": dataset}
  for modality, info in encodings.items():
    if modality not in dataset.examples:
      continue
    if kind_of(modality) == "image":
      out = {"data": out["data"].with_modality(
          modality, info.encode(out["data"].examples[modality]))}
    else:
      out = _encode_modality(out, modality, info)
  return out["data"]


def prepare_text(splits: dict[str, ClassDataset],
                 config) -> tuple[dict[str, ClassDataset], dict[str, Encoding]]:
  """The splits with the text modalities of data.modalities encoded (and the text the
  config does not ask for dropped), and each one's Encoding ({} without text)."""
  wanted = tuple(config.data.modalities)
  unwanted = lambda m: kind_of(m) == "text" and m not in wanted
  splits = {n: ds.replace(examples={m: a for m, a in ds.examples.items() if not unwanted(m)},
                          class_texts={m: a for m, a in ds.class_texts.items()
                                       if not unwanted(m)})
            if any(unwanted(m) for m in ds.examples) and len(ds.examples) > 1 else ds
            for n, ds in splits.items()}
  infos, pretrained = {}, None
  for modality in of_kind(wanted, "text"):
    if modality not in splits["train"].examples:
      raise UserError(f"data.modalities include {modality!r} but dataset "
                      f"{config.data.name!r} has only {list(splits['train'].modalities)}")
    infos[modality] = text_mapping(splits["train"], config, modality, pretrained=pretrained)
    pretrained = infos[modality].pretrained
    splits = _encode_modality(splits, modality, infos[modality])
  return splits, infos


def prepare_splits(config) -> tuple[dict[str, ClassDataset], dict[str, Encoding]]:
  """The config's dataset with only its modalities, text turned into arrays (and images into
  features where a frozen pretrained backbone reads them), and each encoded modality's
  Encoding."""
  from mmfsl_jax.run.image_features import prepare_images
  splits = build_splits(config)
  splits, encodings = prepare_text(splits, config)
  keep = tuple(config.data.modalities)
  splits = {n: ds.replace(examples={m: ds.examples[m] for m in keep if m in ds.examples},
                          class_texts={m: a for m, a in ds.class_texts.items() if m in keep})
            for n, ds in splits.items()}
  splits, image_encodings = prepare_images(splits, config)
  return splits, {**encodings, **image_encodings}


def export_data(config, directory) -> tuple[str, list[str]]:
  """The config's dataset (its data section, shapes or omniglot) written as files plus a
  manifest into `directory` (data/export.py); -> (the manifest's path, the config overrides
  that train on it as data.name=files)."""
  if config.data.name not in ("shapes", "omniglot"):
    raise UserError(f"mmfsl data export writes the built-in sets shapes and omniglot, not "
                    f"data.name={config.data.name}")
  from mmfsl_jax.data.export import CLASS_TEXTS, export_splits
  wanted = {"shapes": ("image", "text"), "omniglot": ("image",)}[config.data.name]
  config.data.modalities = wanted
  splits = build_splits(config)
  manifest = export_splits(splits, directory)
  overrides = ["data.name=files", f"data.files.manifest={manifest}",
               "data.files.split_column=split", f"data.image_size={dataset_image_size(config)}",
               f"data.modalities={wanted!r}"]
  if (manifest.parent / CLASS_TEXTS).exists():
    overrides.append(f"data.files.class_texts={manifest.parent / CLASS_TEXTS}")
  if image_channels(config) == 1:
    overrides.append("data.files.color=ink")
  return str(manifest), overrides
