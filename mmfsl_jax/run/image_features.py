"""Pretrained image backbones from the config (`model.image.encoder=pretrained`), and their
frozen features in place of the images.

Frozen (the default), the backbone runs once per distinct image before training: each image
modality's arrays [n, H, W, C] become features [n, D] (computed once per distinct image, kept
on disk under the cache directory, keyed by the backbone's weight files and input size and by
the images themselves), which the model then treats as a vector modality. Trainable
(`model.image.trainable`), the images stay and the backbone is part of the model, fine-tuned
in the meta-step (all weights, or those matching `model.image.finetune`).
"""
from __future__ import annotations

import hashlib
import time

import numpy as np

from mmfsl_jax.data import cache
from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.modalities import of_kind
from mmfsl_jax.run.data import Encoding, uses_frozen_features

_BACKBONES: dict = {}   # (name, input size) -> ImageBackbone: loaded once per process


def image_backbone(config):
  """The config's pretrained backbone (model.image.pretrained at model.image.input_size)."""
  from mmfsl_jax.nn.encoders.image_backbones import load_image_backbone
  image = config.model.image
  key = (str(image.pretrained), int(image.input_size))
  if key not in _BACKBONES:
    _BACKBONES[key] = load_image_backbone(key[0], input_size=key[1])
  return _BACKBONES[key]


class CachedImageFeatures:
  """images [n, H, W, C] -> the frozen backbone's features [n, D]: in memory per distinct
  image, and on disk per set of images asked for at once (`cache_dir`: None for
  data/cache.py's default). `seconds` and `computed` say what the backbone cost."""

  def __init__(self, backbone, cache_dir=None, batch_size: int = 64):
    from mmfsl_jax.nn.encoders.image_backbones import ImageFeatureCache, image_digests
    self.backbone = backbone
    self.cache_dir = cache_dir
    self._memory = ImageFeatureCache(backbone, batch_size=batch_size)
    self._digests = image_digests
    self.seconds = 0.0
    self.loaded = 0

  @property
  def computed(self) -> int:
    return self._memory.computed

  def __call__(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    start = time.perf_counter()
    digests = self._digests(images)
    together = hashlib.sha1("".join(digests).encode()).hexdigest()
    path = cache.cache_path(self.cache_dir, f"image_features_{self.backbone.name}"[:60]
                            .replace("/", "_"), [list(self.backbone.key), together])

    built = []

    def build():
      built.append(True)
      return {"features": self._memory(images, digests)}

    features = cache.cached_arrays(path, ("features",), build)["features"]
    if not built:   # read from disk: remember them for later calls
      self._memory.store(digests, features)
      self.loaded += len(digests)
    self.seconds += time.perf_counter() - start
    return features


def image_mapping(config, *, cache_dir=None) -> Encoding:
  """The Encoding of the config's frozen backbone: images -> cached features."""
  backbone = image_backbone(config)
  return Encoding("features", feature_dim=backbone.dim, pretrained=backbone,
                  encode=CachedImageFeatures(backbone, cache_dir))


def prepare_images(splits: dict[str, ClassDataset], config, *, cache_dir=None
                   ) -> tuple[dict[str, ClassDataset], dict[str, Encoding]]:
  """With a frozen pretrained backbone, the splits with each image modality replaced by its
  features (all splits through the backbone in one call, so one disk-cache file holds them)
  and each modality's Encoding; else the splits as they are and {}."""
  if not uses_frozen_features(config):
    return splits, {}
  modalities = of_kind(tuple(config.data.modalities), "image")
  if not modalities:
    return splits, {}
  encoding = image_mapping(config, cache_dir=cache_dir)   # one backbone for every image modality
  for modality in modalities:
    names = [n for n, ds in splits.items() if modality in ds.examples]
    arrays = [splits[n].examples[modality] for n in names]
    features = encoding.encode(np.concatenate(arrays))
    parts = np.split(features, np.cumsum([len(a) for a in arrays])[:-1])
    splits = {**splits, **{n: splits[n].with_modality(modality, part)
                           for n, part in zip(names, parts)}}
  return splits, {m: encoding for m in modalities}


def feature_cache_report(encodings: dict[str, Encoding]) -> str | None:
  """One line on what the frozen backbone cost (images run, read from disk, seconds), or
  None without one."""
  caches = {id(e.encode): e.encode for e in encodings.values()
            if isinstance(e.encode, CachedImageFeatures)}
  if not caches:
    return None
  return "; ".join(
      f"image features of {c.backbone.name}: {c.computed} images through the backbone, "
      f"{c.loaded} read from the disk cache, {c.seconds:.1f} s" for c in caches.values())
