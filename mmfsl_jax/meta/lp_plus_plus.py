"""LP++ (Huang et al., CVPR 2024): a linear probe whose class weights blend visual prototypes
with the class text, the blend learned per class.

    logits = scale * f (V + diag(a) W)^T

f [M, d] unit query image features, W [N, d] unit class text (shared_space.py); V [N, d] starts
at the support's class means (the visual prototypes) and a [N] at `alpha_init`. Both are
fitted on the support's cross-entropy by block coordinate descent, each block's step
1 / L_block from a bound on its curvature (as LP++ does, so no learning rate is tuned; the
softmax cross-entropy's Hessian in the logits is at most 1/2):

    L_V = scale^2 ||F||_2^2 / (2 N*K),   L_a = scale^2 / (2 N*K) sum_i max_c (f_i . w_c)^2

With `alpha_init = 0` and no steps the logits are scale * f P^T: the prototypes' dot-product
classifier.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import MetaLearner, cross_entropy
from mmfsl_jax.meta.linear_probe import curvature_bound
from mmfsl_jax.meta.protonet import class_means
from mmfsl_jax.meta.shared_space import TaskFeatures, feature_learner


def blend_logits(f: jax.Array, prototypes: jax.Array, alpha: jax.Array, text: jax.Array,
                 scale: float) -> jax.Array:
  """[M, d] features -> [M, N] scale * f (V + diag(a) W)^T."""
  return scale * f @ (prototypes + alpha[:, None] * text).T


def fit_blend(features: TaskFeatures, labels: jax.Array, *, scale: float, alpha_init: float,
              steps: int) -> tuple[jax.Array, jax.Array]:
  """(V [N, d], a [N]) after `steps` rounds of a step on V then one on a (module docstring)."""
  n_way = features.text.shape[0]
  support, text = features.support, features.text
  prototypes = class_means(support, labels, n_way)
  alpha = jnp.full((n_way,), alpha_init, support.dtype)
  step_v = 1.0 / (scale**2 * curvature_bound(support))
  projections = support @ text.T   # [N*K, N]: f_i . w_c
  step_a = 1.0 / (scale**2 * jnp.sum(jnp.max(projections**2, axis=1))
                  / (2.0 * support.shape[0]) + 1e-12)

  def loss(v, a):
    return cross_entropy(blend_logits(support, v, a, text, scale), labels)

  def step(_, carry):
    v, a = carry
    v = v - step_v * jax.grad(loss, argnums=0)(v, a)
    a = a - step_a * jax.grad(loss, argnums=1)(v, a)
    return v, a

  return jax.lax.fori_loop(0, steps, step, (prototypes, alpha))


def lp_plus_plus_logits(features: TaskFeatures, labels: jax.Array, *, scale: float,
                        alpha_init: float, steps: int) -> jax.Array:
  v, a = fit_blend(features, labels, scale=scale, alpha_init=alpha_init, steps=steps)
  return blend_logits(features.query, v, a, features.text, scale)


def lp_plus_plus(model: MultimodalModel, *, n_way: int, cosine_scale: float = 10.0,
                 alpha_init: float = 1.0, steps: int = 100, image_modality: str = "image",
                 class_modality: str = "text", batch_norm: str = "transductive") -> MetaLearner:
  del n_way   # any way
  if steps < 0:
    raise UserError(f"lp_plus_plus needs steps >= 0, got {steps}")
  classify = lambda f, labels: lp_plus_plus_logits(f, labels, scale=cosine_scale,
                                                   alpha_init=alpha_init, steps=steps)
  return feature_learner(model, "lp_plus_plus", classify, image_modality=image_modality,
                         class_modality=class_modality, batch_norm=batch_norm)
