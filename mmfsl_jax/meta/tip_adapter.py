"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): the zero-shot classifier plus a
cache of the support set's image features, training-free or with the cache fine-tuned.

    logits = scale * f W^T + alpha * exp(-beta * (1 - f F^T)) L

f [M, d] unit query image features, W [N, d] unit class text, F [N*K, d] the cache keys (the
support's unit image features), L [N*K, N] their one-hot labels (shared_space.py). `alpha`
weighs the cache against the text, `beta` sharpens the affinities; alpha = 0 is the
zero-shot classifier. The paper's ImageNet settings are alpha = 1, beta = 5.5, and CLIP's
logit scale 100.

Tip-Adapter-F fine-tunes the keys F on each task's support set (Adam, `finetune_steps` steps
at `finetune_lr`, the whole support at once) by the support's cross-entropy under these
logits. The paper trains on augmented views of many shots per class; with one view of each
support example its own key would give it away, so each example is left out of its own
cache while the keys are fitted (the diagonal of the support-to-key affinities is masked).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import MetaLearner, cross_entropy
from mmfsl_jax.meta.shared_space import TaskFeatures, feature_learner
from mmfsl_jax.meta.zeroshot import text_logits


def cache_logits(queries: jax.Array, keys: jax.Array, labels_one_hot: jax.Array,
                 beta: float, mask: jax.Array | None = None) -> jax.Array:
  """[M, d] unit queries, [S, d] keys, [S, N] one-hot -> [M, N] exp(-beta (1 - q k)) L."""
  affinity = jnp.exp(-beta * (1.0 - queries @ keys.T))
  if mask is not None:
    affinity = affinity * mask
  return affinity @ labels_one_hot


def fine_tuned_keys(features: TaskFeatures, labels: jax.Array, *, scale: float, alpha: float,
                    beta: float, steps: int, lr: float) -> jax.Array:
  """The cache keys [N*K, d] after `steps` Adam steps on the support's cross-entropy (each
  example left out of its own cache)."""
  one_hot = jax.nn.one_hot(labels, features.text.shape[0], dtype=features.support.dtype)
  zero_shot = text_logits(features._replace(query=features.support), scale)
  leave_out = 1.0 - jnp.eye(labels.shape[0], dtype=features.support.dtype)

  def loss(keys):
    logits = zero_shot + alpha * cache_logits(features.support, keys, one_hot, beta, leave_out)
    return cross_entropy(logits, labels)

  optimizer = optax.adam(lr)

  def step(_, carry):
    keys, state = carry
    updates, state = optimizer.update(jax.grad(loss)(keys), state, keys)
    return optax.apply_updates(keys, updates), state

  keys = features.support
  return jax.lax.fori_loop(0, steps, step, (keys, optimizer.init(keys)))[0]


def tip_adapter_logits(features: TaskFeatures, labels: jax.Array, *, scale: float,
                       alpha: float, beta: float, keys: jax.Array | None = None) -> jax.Array:
  """[M, N] Tip-Adapter logits of the queries; `keys` default to the support features."""
  keys = features.support if keys is None else keys
  one_hot = jax.nn.one_hot(labels, features.text.shape[0], dtype=features.query.dtype)
  return text_logits(features, scale) + alpha * cache_logits(features.query, keys, one_hot, beta)


def _check(alpha: float, beta: float) -> None:
  if alpha < 0 or beta < 0:
    raise UserError(f"tip_adapter needs alpha >= 0 and beta >= 0, got alpha={alpha}, "
                    f"beta={beta}")


def tip_adapter(model: MultimodalModel, *, n_way: int, cosine_scale: float = 100.0,
                alpha: float = 1.0, beta: float = 5.5, image_modality: str = "image",
                class_modality: str = "text", batch_norm: str = "transductive") -> MetaLearner:
  del n_way   # any way
  _check(alpha, beta)
  classify = lambda f, labels: tip_adapter_logits(f, labels, scale=cosine_scale, alpha=alpha,
                                                  beta=beta)
  return feature_learner(model, "tip_adapter", classify, image_modality=image_modality,
                         class_modality=class_modality, batch_norm=batch_norm)


def tip_adapter_f(model: MultimodalModel, *, n_way: int, cosine_scale: float = 100.0,
                  alpha: float = 1.0, beta: float = 5.5, finetune_steps: int = 50,
                  finetune_lr: float = 1e-2, image_modality: str = "image",
                  class_modality: str = "text",
                  batch_norm: str = "transductive") -> MetaLearner:
  del n_way   # any way
  _check(alpha, beta)
  if finetune_steps < 0 or finetune_lr <= 0:
    raise UserError(f"tip_adapter_f needs finetune_steps >= 0 and finetune_lr > 0, got "
                    f"{finetune_steps} and {finetune_lr}")

  def classify(f, labels):
    keys = fine_tuned_keys(f, labels, scale=cosine_scale, alpha=alpha, beta=beta,
                           steps=finetune_steps, lr=finetune_lr)
    return tip_adapter_logits(f, labels, scale=cosine_scale, alpha=alpha, beta=beta, keys=keys)

  return feature_learner(model, "tip_adapter_f", classify, image_modality=image_modality,
                         class_modality=class_modality, batch_norm=batch_norm)
