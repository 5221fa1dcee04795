"""mmfsl_jax: multimodal few-shot learning in JAX.

Pure (init, apply) components -- encoders, aligners, fusers -- composed into a multimodal
embedding model, and meta-learners (ProtoNet, MAML) whose task losses are vmapped over task
batches inside one jitted meta-step.

The names below are imported on first use: `import mmfsl_jax` alone loads neither jax nor
flax, so the `mmfsl` command starts (and restarts itself, host_memory.py) without them.
"""
import importlib

__version__ = "0.1.0"

# name -> the module that defines it (modules themselves: their own path).
_EXPORTS = {
    "align": "mmfsl_jax.align",
    "fuse": "mmfsl_jax.fuse",
    "sharding": "mmfsl_jax.sharding",
    "Component": "mmfsl_jax.component",
    "from_linen": "mmfsl_jax.component",
    "ClassDataset": "mmfsl_jax.data",
    "EpisodeSampler": "mmfsl_jax.data",
    "ShapesConfig": "mmfsl_jax.data",
    "WordVocabulary": "mmfsl_jax.data",
    "shapes_splits": "mmfsl_jax.data",
    "conv4": "mmfsl_jax.encoders",
    "resnet12": "mmfsl_jax.encoders",
    "token_text_encoder": "mmfsl_jax.encoders",
    "vector_encoder": "mmfsl_jax.encoders",
    "evaluate_episodes": "mmfsl_jax.evaluate",
    "evaluate_workdir": "mmfsl_jax.evaluate",
    "make_batched_predict": "mmfsl_jax.evaluate",
    "MetaLearner": "mmfsl_jax.meta",
    "TrainState": "mmfsl_jax.meta",
    "init_train_state": "mmfsl_jax.meta",
    "make_meta_step": "mmfsl_jax.meta",
    "maml": "mmfsl_jax.meta",
    "protonet": "mmfsl_jax.meta",
    "episode_metrics": "mmfsl_jax.metrics",
    "mean_and_ci95": "mmfsl_jax.metrics",
    "MultimodalModel": "mmfsl_jax.model",
    "multimodal_model": "mmfsl_jax.model",
    "train_and_evaluate": "mmfsl_jax.train",
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str):
  if name.startswith("__"):
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  if name not in _EXPORTS:   # a subpackage or module not imported yet, as `mmfsl_jax.data`
    try:
      return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
      if error.name != f"{__name__}.{name}":
        raise   # the module exists but needs something missing: say that
      raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
  module = importlib.import_module(_EXPORTS[name])
  value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
  globals()[name] = value   # later look-ups skip this function
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
