"""The zero-shot classifier: each query image against each class's text, no support examples
(CLIP's, Radford et al. 2021; the baseline every CLIP few-shot paper reports).

    logits = scale * f W^T      f [M, d] unit query image features, W [N, d] unit class text

(shared_space.py). Meta-training it trains what the model learns (its encoders, its
projections into the shared space) so that images land near their class's text (the query's
cross-entropy is itself a contrastive loss); with frozen CLIP towers and `aligner=identity`
there is nothing to train and it is CLIP zero-shot.
"""
from __future__ import annotations

import jax

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.shared_space import TaskFeatures, feature_learner


def text_logits(features: TaskFeatures, scale: float) -> jax.Array:
  """[M, N]: scaled cosine similarities of the query images to the class texts."""
  return scale * features.query @ features.text.T


def zeroshot(model: MultimodalModel, *, n_way: int, cosine_scale: float = 100.0,
             image_modality: str = "image", class_modality: str = "text",
             batch_norm: str = "transductive") -> MetaLearner:
  del n_way   # any way: one class per row of the class text
  return feature_learner(model, "zeroshot", lambda f, labels: text_logits(f, cosine_scale),
                         image_modality=image_modality, class_modality=class_modality,
                         batch_norm=batch_norm)
