"""A multimodal embedding model: per-modality encoders -> aligner -> fuser.

    params = model.init(key, inputs)              inputs: {modality: [n, ...]}
    fused, aligned = model.apply(params, inputs, train=..., key=...)
        fused [n, d]; aligned {modality: [n, d]} (for contrastive losses and class-level fusion)
    model.fuse(params, aligned) -> [n, d]          the fuser alone, e.g. on prototypes

The params pytree is {"encoder": {modality: ...}, "align": ..., "fuse": ...}, so a
meta-learner can choose subtrees to adapt by path. Only the modalities present in `inputs`
are encoded: dropping one gives the unimodal model with the same parameters.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax

from mmfsl_jax.core.component import Component


class MultimodalModel(NamedTuple):
  init: Callable
  apply: Callable
  fuse: Callable
  modalities: tuple[str, ...]


def multimodal_model(encoders: Mapping[str, Component], aligner: Component,
                     fuser: Component) -> MultimodalModel:
  modalities = tuple(encoders)

  def encode(params, inputs, train, key):
    present = [m for m in modalities if m in inputs]
    if not present:
      raise ValueError(f"model inputs have none of its modalities {list(modalities)}: "
                       f"got {list(inputs)}")
    keys = jax.random.split(key, len(present)) if key is not None else [None] * len(present)
    return {m: encoders[m].apply(params["encoder"][m], inputs[m], train=train, key=k)
            for m, k in zip(present, keys)}

  def init(key, inputs):
    k_enc, k_align, k_fuse = jax.random.split(key, 3)
    enc_keys = dict(zip(modalities, jax.random.split(k_enc, len(modalities))))
    params = {"encoder": {m: encoders[m].init(enc_keys[m], inputs[m]) for m in modalities}}
    features = encode(params, inputs, False, None)
    params["align"] = aligner.init(k_align, features)
    aligned = aligner.apply(params["align"], features)
    params["fuse"] = fuser.init(k_fuse, aligned)
    return params

  def apply(params, inputs, *, train=False, key=None):
    features = encode(params, inputs, train, key)
    aligned = aligner.apply(params["align"], features)
    return fuser.apply(params["fuse"], aligned), aligned

  def fuse(params, aligned):
    return fuser.apply(params["fuse"], aligned)

  return MultimodalModel(init, apply, fuse, modalities)
