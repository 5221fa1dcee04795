"""The linear probe: multinomial logistic regression fitted per task on the support's image
features (the transfer-learning baseline of CLIP's paper and of the few-shot work after it).

    logits = f W + b,   (W [d, N], b [N]) minimising  CE(F W + b, labels) + weight_decay |W|^2

f [M, d] unit query image features, F [N*K, d] the support's (shared_space.py). Fitted from
zero by `steps` steps of full-batch gradient descent at the step 1 / L, where L bounds the
loss's curvature: the softmax cross-entropy's Hessian in the logits is at most 1/2, so
L = ||[F, 1]||_2^2 / (2 N*K) + 2 weight_decay (Boehning's bound), and each step lowers the loss
without a learning rate to tune. The fit is a jitted `lax.fori_loop`, differentiable (the
meta-gradient flows through it into the encoders) and vmapped over tasks like any learner.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.base import MetaLearner, cross_entropy
from mmfsl_jax.meta.shared_space import TaskFeatures, feature_learner


def curvature_bound(features: jax.Array) -> jax.Array:
  """||features||_2^2 / (2 n): the softmax cross-entropy's curvature bound for a linear map of
  these [n, d] rows. Differentiated like the rest of the fit (the step depends on the
  features), so the meta-gradient is the loss's exact gradient."""
  return jnp.linalg.norm(features, ord=2)**2 / (2.0 * features.shape[0])


def fit_logistic_regression(x: jax.Array, labels: jax.Array, n_classes: int, *, steps: int,
                            weight_decay: float) -> tuple[jax.Array, jax.Array]:
  """(W [d, N], b [N]) after `steps` gradient steps of 1 / L from zero (module docstring)."""
  with_bias = jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=1)
  step_size = 1.0 / (curvature_bound(with_bias) + 2.0 * weight_decay)

  def loss(wb):
    w, b = wb
    return cross_entropy(x @ w + b, labels) + weight_decay * jnp.sum(w**2)

  def step(_, wb):
    return jax.tree_util.tree_map(lambda p, g: p - step_size * g, wb, jax.grad(loss)(wb))

  zero = (jnp.zeros((x.shape[1], n_classes), x.dtype), jnp.zeros((n_classes,), x.dtype))
  return jax.lax.fori_loop(0, steps, step, zero)


def linear_probe_logits(features: TaskFeatures, labels: jax.Array, n_way: int, *, steps: int,
                        weight_decay: float) -> jax.Array:
  w, b = fit_logistic_regression(features.support, labels, n_way, steps=steps,
                                 weight_decay=weight_decay)
  return features.query @ w + b


def linear_probe(model: MultimodalModel, *, n_way: int, steps: int = 300,
                 weight_decay: float = 1e-3, image_modality: str = "image",
                 batch_norm: str = "transductive") -> MetaLearner:
  """Any way (`n_way`: the tasks'); reads the support and query images only."""
  if steps < 1 or weight_decay < 0:
    raise UserError(f"linear_probe needs steps >= 1 and weight_decay >= 0, got {steps} and "
                    f"{weight_decay}")
  classify = lambda f, labels: linear_probe_logits(f, labels, n_way, steps=steps,
                                                   weight_decay=weight_decay)
  return feature_learner(model, "linear_probe", classify, image_modality=image_modality,
                         class_modality=None, batch_norm=batch_norm)
