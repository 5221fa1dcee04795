"""Builds the model, meta-learner and optimizer that a config names."""
from __future__ import annotations

import optax

from mmfsl_jax.nn import align

from mmfsl_jax.nn import fuse
from mmfsl_jax.core.component import Component
from mmfsl_jax.run.data import TextInfo
from mmfsl_jax.nn.encoders.image import conv4, resnet12
from mmfsl_jax.nn.encoders.text import token_text_encoder
from mmfsl_jax.nn.encoders.vector import fit_standardizer, vector_encoder
from mmfsl_jax.errors import ConfigError
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.registry import METHODS
from mmfsl_jax.core.model import MultimodalModel, multimodal_model


def _text_encoder(config, text_info: TextInfo, train_split) -> Component:
  if text_info.kind == "features":
    if train_split is None:
      raise ConfigError("a precomputed-feature text modality needs the training split "
                        "(its features are standardised with the training statistics)")
    mean, std = fit_standardizer(train_split.examples["text"])
    return vector_encoder(mean, std, hidden=(2 * config.text_dim,), out_dim=config.text_dim)
  if text_info.pretrained is not None:
    from mmfsl_jax.nn.encoders.pretrained_text import pretrained_text_encoder
    encoder = pretrained_text_encoder(text_info.pretrained)

    def apply(params, ids, *, train=False, key=None):
      return encoder.apply(params, {"ids": ids, "mask": (ids > 0).astype("int32")},
                           train=train, key=key)
    return Component(encoder.init, apply)
  return token_text_encoder(text_info.vocab_size, config.text_dim,
                            "mean" if config.text_encoder == "bow" else "gru")


def build_model(config, text_info: TextInfo | None, train_split=None) -> MultimodalModel:
  """`train_split` is read only by a precomputed-feature text modality (for its statistics)."""
  encoders = {}
  for modality in config.modalities:
    if modality == "image":
      options = dict(conv_impl=config.conv_impl, pool=config.conv_pool,
                     conv_init=config.conv_init)
      encoders["image"] = (conv4(config.conv_channels, **options)
                           if config.image_encoder == "conv4"
                           else resnet12(tuple(config.resnet_channels), **options))
    elif modality == "text":
      encoders["text"] = _text_encoder(config, text_info, train_split)
  aligner = align.projections(config.modalities, config.embed_dim, tuple(config.projection_hidden))
  fuser = fuse.make_fuser(config.fuser, config.modalities,
                          weights=tuple(config.fuse_weights) or None)
  return multimodal_model(encoders, aligner, fuser)


def train_class_count(config) -> int:
  """The number of classes in the config's training split (Baseline++'s classifier size).

  Read from the config for "shapes"; other datasets' splits are built to count them (pass
  `num_classes` to `build_learner` where the splits are at hand).
  """
  if config.dataset == "shapes":
    return int(config.shapes.classes_per_split[0])
  from mmfsl_jax.run.data import build_splits
  return build_splits(config)["train"].num_classes


def build_learner(config, model: MultimodalModel, *, for_eval: bool = False,
                  num_classes: int | None = None) -> MetaLearner:
  """The meta-learner `config.method` names (meta/registry.py).

  `for_eval` builds it for evaluation (`eval_inner_steps`); `num_classes` is the number of
  training classes, needed by baselinepp only (else counted by `train_class_count`).
  """
  if config.method not in METHODS:
    raise ConfigError(f"method={config.method!r} is not valid; choose one of "
                      f"{', '.join(METHODS)}")
  if config.method == "baselinepp" and num_classes is None:
    num_classes = train_class_count(config)
  return METHODS[config.method](config, model, for_eval=for_eval, num_classes=num_classes)


def learning_rate(config) -> float | optax.Schedule:
  """The meta-optimiser's rate: a float when constant, else an optax schedule of the step
  count (which the optimiser state carries, so a resumed run continues the schedule)."""
  if config.lr_schedule == "step":
    return optax.exponential_decay(config.learning_rate, config.lr_decay_every,
                                   config.lr_decay_factor, staircase=True)
  if config.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(config.learning_rate, config.num_steps)
  return config.learning_rate


def build_optimizer(config) -> optax.GradientTransformation:
  rate = learning_rate(config)
  base = optax.adam(rate) if config.optimizer == "adam" else optax.sgd(rate, momentum=0.9)
  if config.grad_clip:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), base)
  return base
