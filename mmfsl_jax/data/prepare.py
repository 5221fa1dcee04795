"""From a config to ready-to-sample splits: build the dataset, turn raw text into arrays.

Raw text (object arrays of strings) becomes, by `config.text_encoder`:
- "bow" / "gru": word ids [n, L] from a vocabulary of the meta-train split;
- "pretrained", frozen: cached features [n, D] of the pretrained model (computed once per
  distinct string), which the model then treats as a vector modality;
- "pretrained", trainable: the model's own token ids [n, L] (0 is padding).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mmfsl_jax.errors import UserError

from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.shapes import ShapesConfig, shapes_splits
from mmfsl_jax.data.text import WordVocabulary

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class TextInfo:
  """What the model builder needs to know about the text arrays."""
  kind: str                      # "ids" or "features"
  vocab_size: int = 0
  feature_dim: int = 0
  pretrained: Any = None         # a PretrainedText when text_encoder == "pretrained"


def build_splits(config) -> dict[str, ClassDataset]:
  if config.dataset == "shapes":
    fields = {f.name for f in dataclasses.fields(ShapesConfig)}
    values = {k: (tuple(v) if isinstance(v, (list, tuple)) else v)
              for k, v in config.shapes.items() if k in fields}
    return shapes_splits(ShapesConfig(**values))
  raise UserError(f"unknown dataset {config.dataset!r}")


def _map_text(splits, fn):
  out = {}
  for name, ds in splits.items():
    class_text = ds.class_texts.get("text")
    out[name] = ds.with_modality(
        "text", fn(list(ds.examples["text"])),
        None if class_text is None else fn(list(class_text)))
  return out


def _pad_to_same_length(splits):
  """Pads id arrays of all splits (examples and class texts) to one length L."""
  arrays = [a for ds in splits.values() for a in (ds.examples["text"], ds.class_texts.get("text"))
            if a is not None]
  length = max(a.shape[1] for a in arrays)
  pad = lambda a: np.pad(a, ((0, 0), (0, length - a.shape[1])))
  return {n: ds.with_modality("text", pad(ds.examples["text"]),
                              None if "text" not in ds.class_texts else pad(ds.class_texts["text"]))
          for n, ds in splits.items()}


def prepare_text(splits: dict[str, ClassDataset], config) -> tuple[dict, TextInfo | None]:
  if "text" not in config.modalities:
    return ({n: ds.replace(examples={m: a for m, a in ds.examples.items() if m != "text"},
                           class_texts={m: a for m, a in ds.class_texts.items() if m != "text"})
             if "text" in ds.examples and len(ds.examples) > 1 else ds
             for n, ds in splits.items()}, None)
  if "text" not in splits["train"].examples:
    raise UserError(f"modalities include 'text' but dataset {config.dataset!r} has only "
                     f"{list(splits['train'].modalities)}")
  if config.text_encoder in ("bow", "gru"):
    vocab = WordVocabulary.build(splits["train"].examples["text"])
    out = _map_text(splits, lambda texts: vocab.encode(texts, config.text_max_length))
    return _pad_to_same_length(out), TextInfo("ids", vocab_size=vocab.size)
  from mmfsl_jax.encoders.pretrained_text import (TextFeatureCache, load_pretrained_text,
                                                  tokenize)
  pretrained = load_pretrained_text(config.text_model)
  if config.text_trainable:
    out = _map_text(splits, lambda t: tokenize(pretrained, t, config.text_max_length)["ids"])
    return _pad_to_same_length(out), TextInfo("ids", pretrained=pretrained)
  cache = TextFeatureCache(pretrained, max_length=config.text_max_length)
  out = _map_text(splits, cache)
  return out, TextInfo("features", feature_dim=pretrained.dim, pretrained=pretrained)


def prepare_splits(config) -> tuple[dict[str, ClassDataset], TextInfo | None]:
  """The config's dataset with only its modalities, text turned into arrays."""
  splits = build_splits(config)
  splits, text_info = prepare_text(splits, config)
  keep = tuple(config.modalities)
  splits = {n: ds.replace(examples={m: ds.examples[m] for m in keep if m in ds.examples},
                          class_texts={m: a for m, a in ds.class_texts.items() if m in keep})
            for n, ds in splits.items()}
  return splits, text_info
