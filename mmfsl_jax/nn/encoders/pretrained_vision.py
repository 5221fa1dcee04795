"""Pretrained Hugging Face vision models (CLIP's image tower, ViT, DINOv2, ResNet) as frozen
image encoders, in Flax.

    vision = load_pretrained_vision("path/to/clip-vit-base-patch32")   # or a model id, online
    encoder = pretrained_image_encoder(vision)
    params = encoder.init(key, images)            # the pretrained weights
    features = encoder.apply(params, images)      # [B, H, W, 3] in [0, 1] -> [B, vision.dim]

Features: CLIP's image embedding (its vision tower's pooled output through the visual
projection, in the space its text tower shares); ViT's [CLS] token of the last hidden state;
DINOv2's pooled output (the layer-normed [CLS] token); ResNet's pooled output. The images
are preprocessed as the model's image processor (its preprocessor_config.json) says: resized
(the shortest side to `size`, or to height x width), centre-cropped where it crops, and
normalised with its mean and std. Resizing runs in JAX (bicubic or bilinear, as the processor
resamples), so it is jitted and vmapped with the rest, and differs from PIL's by interpolation
rounding only.

Loading reads Flax weights (flax_model.msgpack) or PyTorch safetensors (model.safetensors)
without torch, through transformers' Flax classes (transformers < 5).
"""
from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mmfsl_jax.core.component import Component
from mmfsl_jax.errors import UserError
from mmfsl_jax.nn.encoders.pretrained_text import (_check_model_dir, _looks_like_path,
                                                   _quiet_transformers)

MODEL_TYPES = ("clip", "vit", "dinov2", "resnet")
# PIL resampling codes of the processors -> jax.image.resize methods
_RESAMPLE = {2: "linear", 3: "cubic"}


class Preprocessing(NamedTuple):
  """The image processor's settings: resize to `size` (an int: the shortest side; a pair:
  height, width), then crop to `crop` (height, width) or not, then (x - mean) / std."""
  size: int | tuple[int, int]
  crop: tuple[int, int] | None
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  method: str


class PretrainedVision(NamedTuple):
  """A loaded model: Flax `module`, its `params`, `model_type`, feature size `dim`."""
  module: Any
  params: Any
  model_type: str
  dim: int
  preprocessing: Preprocessing
  name: str
  fixed_size: int | None = None   # the only input side its position embeddings take (ViT, CLIP)
  patch_size: int = 1             # a transformer's patch side (inputs are multiples of it)


def read_preprocessing(path: str) -> Preprocessing:
  """The preprocessing of the model directory `path` (its preprocessor_config.json)."""
  file = os.path.join(path, "preprocessor_config.json")
  if not os.path.isfile(file):
    raise UserError(f"{path} has no preprocessor_config.json, so how the model expects its "
                    f"images (size, crop, mean, std) is unknown; save its image processor "
                    f"beside it (processor.save_pretrained({path!r}))")
  processor = json.loads(open(file).read())

  def pair(value):
    if isinstance(value, dict):
      if "shortest_edge" in value:
        return int(value["shortest_edge"])
      return int(value["height"]), int(value["width"])
    return (int(value), int(value)) if value is not None else None

  size = pair(processor.get("size")) if processor.get("do_resize", True) else None
  crop = pair(processor.get("crop_size")) if processor.get("do_center_crop", False) else None
  if isinstance(crop, int):
    crop = (crop, crop)
  if size is None and crop is None:
    raise UserError(f"{file} neither resizes nor crops: the model's input size is unknown")
  normalise = processor.get("do_normalize", True)
  mean = tuple(processor.get("image_mean", (0.0, 0.0, 0.0))) if normalise else (0.0, 0.0, 0.0)
  std = tuple(processor.get("image_std", (1.0, 1.0, 1.0))) if normalise else (1.0, 1.0, 1.0)
  method = _RESAMPLE.get(int(processor.get("resample", 3)), "cubic")
  return Preprocessing(size if size is not None else crop, crop, mean, std, method)


def preprocess(images: jax.Array, prep: Preprocessing) -> jax.Array:
  """[B, H, W, 3] in [0, 1] -> the model's pixel values [B, h, w, 3] (channels last, as the
  Flax modules take them; the transformers model classes take them [B, 3, h, w])."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise UserError(f"a pretrained vision model takes RGB images [B, H, W, 3], got shape "
                    f"{tuple(images.shape)}")
  b, h, w, _ = images.shape
  if isinstance(prep.size, int):
    scale = prep.size / min(h, w)
    target = (max(1, round(h * scale)), max(1, round(w * scale)))
  else:
    target = prep.size
  if target != (h, w):
    images = jax.image.resize(images, (b, *target, 3), prep.method)
  if prep.crop is not None:
    ch, cw = prep.crop
    h, w = images.shape[1:3]
    if ch > h or cw > w:
      raise UserError(f"images resized to {h}x{w} are smaller than the model's crop {ch}x{cw}")
    top, left = (h - ch) // 2, (w - cw) // 2
    images = images[:, top:top + ch, left:left + cw]
  return (images - jnp.asarray(prep.mean)) / jnp.asarray(prep.std)


def _features(model_type: str):
  """module, pixel values -> [B, D] features, by model type (module docstring)."""
  def clip(module, pixels):
    return module.visual_projection(module.vision_model(pixel_values=pixels,
                                                        deterministic=True)[1])

  def vit(module, pixels):
    return module(pixel_values=pixels, deterministic=True).last_hidden_state[:, 0]

  def dinov2(module, pixels):
    return module(pixel_values=pixels, deterministic=True).pooler_output

  def resnet(module, pixels):
    pooled = module(pixel_values=pixels, deterministic=True).pooler_output
    return pooled.reshape(pooled.shape[0], -1)

  return {"clip": clip, "vit": vit, "dinov2": dinov2, "resnet": resnet}[model_type]


def _input_sizes(model_settings) -> tuple[int | None, int]:
  """(the fixed input side or None, the patch side) of a transformers model's settings:
  Flax ViT and CLIP do not interpolate their position embeddings; DINOv2 does."""
  if model_settings.model_type == "resnet":
    return None, 1
  vision = (model_settings.vision_config if model_settings.model_type == "clip"
            else model_settings)
  fixed = None if model_settings.model_type == "dinov2" else int(vision.image_size)
  return fixed, int(vision.patch_size)


def _dim(model_settings) -> int:
  """The feature size of a transformers model's settings (its PretrainedConfig)."""
  if model_settings.model_type == "clip":
    return int(model_settings.projection_dim)
  if model_settings.model_type == "resnet":
    return int(model_settings.hidden_sizes[-1])
  return int(model_settings.hidden_size)


def load_pretrained_vision(name_or_path: str, *, local_files_only: bool = False
                           ) -> PretrainedVision:
  """A local model directory (or a Hugging Face model id, where it can be downloaded) of a
  CLIP, ViT, DINOv2 or ResNet model, into Flax."""
  from transformers import AutoConfig, FlaxAutoModel
  name = str(name_or_path)
  path = os.path.expanduser(name)
  with _quiet_transformers():
    if not os.path.isdir(path):
      if _looks_like_path(name) or os.path.exists(path):
        raise FileNotFoundError(f"vision model directory {path} does not exist (or is not a "
                                f"directory)")
      try:
        from huggingface_hub import snapshot_download
        path = snapshot_download(name, local_files_only=local_files_only)
      except Exception as err:   # offline, unknown id, no cache: one clear message
        raise FileNotFoundError(
            f"could not load vision model {name!r}: it is not a local directory, not in the "
            f"Hugging Face cache, and could not be downloaded (there may be no internet). Pass "
            f"a local model directory. Cause: {err}") from err
    from_pt = _check_model_dir(path)
    settings = AutoConfig.from_pretrained(path)
    if settings.model_type not in MODEL_TYPES:
      raise UserError(f"{path} is a {settings.model_type!r} model; pretrained image encoders "
                      f"are {', '.join(MODEL_TYPES)}")
    model = FlaxAutoModel.from_pretrained(path, from_pt=from_pt)
  return PretrainedVision(model.module, model.params, settings.model_type, _dim(settings),
                          read_preprocessing(path), name, *_input_sizes(settings))


def pretrained_image_encoder(vision: PretrainedVision, *, frozen: bool = True) -> Component:
  """The model as a Component: images [B, H, W, 3] in [0, 1] -> [B, vision.dim] (module
  docstring for the features). `frozen`: no gradient reaches its weights; else all of them
  but stored batch-norm statistics (ResNet's, which inference reads) get gradients."""
  features = _features(vision.model_type)

  def init(key=None, example_inputs=None):
    return vision.params

  def apply(params, images, *, train=False, key=None):
    pixels = preprocess(jnp.asarray(images, jnp.float32), vision.preprocessing)
    if frozen:
      params = jax.lax.stop_gradient(params)
    # ResNet's weights come with its batch-norm statistics: {"params", "batch_stats"}
    if "batch_stats" in params:
      variables = {**params, "batch_stats": jax.lax.stop_gradient(params["batch_stats"])}
    else:
      variables = {"params": params}
    return vision.module.apply(variables, pixels, method=features)

  return Component(init, apply)
