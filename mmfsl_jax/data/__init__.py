"""Datasets, the episode sampler and text preparation."""
from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.data.sources.shapes import ShapesConfig, shapes_splits
from mmfsl_jax.data.text import WordVocabulary

__all__ = ["ClassDataset", "EpisodeSampler", "ShapesConfig", "WordVocabulary", "shapes_splits"]
