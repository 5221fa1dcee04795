"""Train-time image augmentation, applied per task batch on top of an episode sampler.

    augmented = AugmentedSampler(sampler, crop_flip(padding=4))
    batch = augmented.sample(i)       # sampler.sample(i), its images augmented

The randomness of batch `i` comes from `np.random.default_rng([sampler.seed, i, 1])`, so an
augmented batch, like a sampled one, is a function of the seed and the step alone: a resumed
run sees the same augmented images. `EpisodeSampler` itself is unchanged; the wrapper has
its attributes (n_way, k_shot, ..., dataset) and `sample`/`__iter__`.

`augmented(sampler, name)`: "none", or "crop_flip" (random crop of the image padded by
`image_size // 8` pixels of zeros, then a horizontal flip with probability 1/2, the usual
CIFAR/CUB recipe). A config's `data.augment="auto"` picks the dataset's own default
(run/data.py: crop_flip for cifar_fs, fc100, cub, flowers102; none for shapes and
Omniglot, whose rotations are classes of their own and whose strokes would not survive a
flip); run/build.py wraps the meta-train sampler; `mmfsl data throughput` measures it.
"""
from __future__ import annotations

from collections.abc import Callable
import itertools

import numpy as np

from mmfsl_jax.data.modalities import kind_of
from mmfsl_jax.errors import UserError

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
AUGMENTATIONS = ("none", "crop_flip")


def _crop_flip(images: np.ndarray, rng: np.random.Generator, padding: int,
               flip: bool) -> np.ndarray:
  """images [n, H, W, C] -> [n, H, W, C]: random windows of the zero-padded images, each
  mirrored left-right with probability 1/2 if `flip`."""
  n, height, width = images.shape[:3]
  padding = max(int(padding), 0)
  top = rng.integers(0, 2 * padding + 1, size=n)
  left = rng.integers(0, 2 * padding + 1, size=n)
  mirror = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
  out = np.zeros_like(images)
  for i in range(n):  # slices per image: faster here than padding and fancy indexing
    dy, dx = top[i] - padding, left[i] - padding  # the window's corner in image coordinates
    y0, y1 = max(dy, 0), min(dy + height, height)
    x0, x1 = max(dx, 0), min(dx + width, width)
    out[i, y0 - dy:y1 - dy, x0 - dx:x1 - dx] = images[i, y0:y1, x0:x1]
    if mirror[i]:
      out[i] = out[i, :, ::-1].copy()
  return out


def random_crop(images: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
  """images [n, H, W, C] -> [n, H, W, C]: each a random H x W window of it zero-padded."""
  return _crop_flip(images, rng, padding, flip=False)


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """images [n, H, W, C]: each mirrored left-right with probability 1/2."""
  return _crop_flip(images, rng, 0, flip=True)


def crop_flip(padding: int) -> Augment:
  """The augment function (images [n, H, W, C], rng) -> images of the same shape and dtype:
  a random crop of the image padded by `padding` pixels of zeros, then a random flip."""
  def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _crop_flip(images, rng, padding, flip=True)
  return augment


class AugmentedSampler:
  """`sampler.sample(i)` with `augment` applied to the support and query images."""

  def __init__(self, sampler, augment: Augment, modality: str = "image"):
    self.sampler, self.augment, self.modality = sampler, augment, modality

  def __getattr__(self, name):  # n_way, k_shot, q_query, batch_size, seed, dataset, ...
    if name == "sampler":
      raise AttributeError(name)
    return getattr(self.sampler, name)

  def sample(self, index: int) -> dict:
    batch = self.sampler.sample(index)
    rng = np.random.default_rng([self.sampler.seed, int(index), 1])
    out = dict(batch)
    for part in ("support", "query"):
      if self.modality in batch[part]:
        images = batch[part][self.modality]           # [B, M, H, W, C]
        flat = images.reshape((-1,) + images.shape[2:])
        out[part] = {**batch[part],
                     self.modality: self.augment(flat, rng).reshape(images.shape)}
    return out

  def __iter__(self):  # batches 0, 1, 2, ... without end
    return map(self.sample, itertools.count())


def check_augment(name: str) -> str:
  if name not in AUGMENTATIONS:
    raise UserError(f"augmentation {name!r} is not valid; choose one of "
                    f"{', '.join(AUGMENTATIONS)}")
  return name


def augmented(sampler, name: str):
  """`sampler` with the train-time augmentation `name` ("none": the sampler itself;
  "crop_flip": padding of image_size // 8 pixels) on the images of each of its image
  modalities (data/modalities.py), if it has any."""
  check_augment(name)
  if name == "none":
    return sampler
  for modality in sampler.modalities:
    if kind_of(modality) == "image":
      images = sampler.dataset.examples[modality]
      sampler = AugmentedSampler(sampler, crop_flip(padding=max(1, int(images.shape[1]) // 8)),
                                 modality)
  return sampler
