"""Batch-norm moments of the training population, for evaluating as PyTorch's `model.eval()`.

The image encoders' batch norm keeps no running averages (meta/base.py says why), so by
default a test task is normalised with its own statistics. PyTorch models are usually
evaluated with running averages of the training batches' moments instead, each test image
normalised independently of the others. `estimate_population_moments` computes that
estimate after training: it encodes batches of training images shaped like a training task
(N*(K+Q) images of N classes, from the training sampler) under the final parameters and
averages each layer's batch mean and variance over them ("precise BN", Wu & Johnson 2021,
where running averages weigh recent batches more). Evaluating under
`encoders.batch_norm.fixed_batch_moments(moments)` then uses them in every call.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mmfsl_jax.core.model import MultimodalModel
from mmfsl_jax.data.modalities import kind_of
from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.errors import UserError
from mmfsl_jax.nn.encoders.batch_norm import Moments, recording_batch_moments


def estimate_population_moments(model: MultimodalModel, params: dict, sampler: EpisodeSampler,
                                num_batches: int) -> dict[str, Moments]:
  """Layer path -> (mean [C], var [C]), each the average over `num_batches` batches of
  training images (task i of `sampler`: its support and query images together).

  `params` are the model's (a learner's params["model"]). Only image encoders have batch
  norm (each image modality's layers are recorded under their own paths); a model without
  an image modality is an error.
  """
  if num_batches < 1:
    raise UserError(f"population batch-norm moments need at least 1 batch, got {num_batches}")
  image_modalities = [m for m in model.modalities if kind_of(m) == "image"]
  if not image_modalities:
    raise UserError(f"population batch-norm moments are for image encoders; the model has "
                    f"modalities {list(model.modalities)}")

  @jax.jit
  def moments_of(params, images):
    with recording_batch_moments() as recorded:
      model.apply(params, images, train=False)
    return {path: calls[0] for path, calls in recorded.items()}  # one call per layer

  totals: dict[str, list[np.ndarray]] = {}
  for i in range(num_batches):
    task = sampler.sample(i)
    images = {m: jnp.concatenate([task["support"][m][0], task["query"][m][0]])
              for m in image_modalities}
    for path, (mean, var) in moments_of(params, images).items():
      sums = totals.setdefault(path, [0.0, 0.0])
      sums[0] = sums[0] + np.asarray(mean, np.float64)
      sums[1] = sums[1] + np.asarray(var, np.float64)
  if not totals:
    raise UserError("the model's image encoder has no batch norm layers (a frozen pretrained "
                    "backbone's features, for one, are read as they are): there are no "
                    "moments to estimate, and the batch-norm mode changes nothing; use "
                    "batch_norm='trained'")
  return {path: (jnp.asarray(m / num_batches, jnp.float32), jnp.asarray(v / num_batches,
                                                                       jnp.float32))
          for path, (m, v) in totals.items()}
