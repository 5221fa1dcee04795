"""mmfsl_jax: multimodal few-shot learning in JAX.

Pure (init, apply) components -- encoders, aligners, fusers -- composed into a multimodal
embedding model, and meta-learners (ProtoNet, MAML) whose task losses are vmapped over task
batches inside one jitted meta-step.
"""
from mmfsl_jax import align, fuse, sharding
from mmfsl_jax.component import Component, from_linen
from mmfsl_jax.data import ClassDataset, EpisodeSampler, ShapesConfig, WordVocabulary, shapes_splits
from mmfsl_jax.encoders import conv4, resnet12, token_text_encoder, vector_encoder
from mmfsl_jax.evaluate import evaluate_episodes, evaluate_workdir, make_batched_predict
from mmfsl_jax.meta import (MetaLearner, TrainState, init_train_state, make_meta_step, maml,
                            protonet)
from mmfsl_jax.metrics import episode_metrics, mean_and_ci95
from mmfsl_jax.model import MultimodalModel, multimodal_model
from mmfsl_jax.train import train_and_evaluate

__version__ = "0.1.0"

__all__ = [
    "ClassDataset", "Component", "EpisodeSampler", "MetaLearner", "MultimodalModel",
    "ShapesConfig", "TrainState", "WordVocabulary", "align", "conv4", "episode_metrics",
    "evaluate_episodes", "evaluate_workdir", "from_linen", "fuse", "init_train_state",
    "make_batched_predict", "make_meta_step", "maml", "mean_and_ci95", "multimodal_model",
    "protonet", "resnet12", "shapes_splits", "sharding", "token_text_encoder", "train_and_evaluate",
    "vector_encoder",
]
