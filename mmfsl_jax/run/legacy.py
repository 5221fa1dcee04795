"""The flat config names of earlier versions (`method=maml`, `inner_steps=5`), translated.

Configs were one flat namespace until the sectioned layout of configs/base.py. Old names
given on the command line are translated with a deprecation message; an old workdir's
config.json is translated when it is read, so old runs still resume and evaluate.
"""
from __future__ import annotations

import warnings

# Old flat name -> its dotted name now. shapes.* and omniglot.* moved under data.
RENAMED = {
    "dataset": "data.name", "data_dir": "data.dir", "image_size": "data.image_size",
    "augment": "data.augment", "modalities": "data.modalities",
    "shapes": "data.shapes", "omniglot": "data.omniglot",
    "n_way": "task.n_way", "k_shot": "task.k_shot", "q_query": "task.q_query",
    "meta_batch": "task.meta_batch",
    "image_encoder": "model.image.encoder", "conv_channels": "model.image.channels",
    "resnet_channels": "model.image.resnet_channels", "conv_impl": "model.image.conv_impl",
    "conv_pool": "model.image.pool", "conv_init": "model.image.init",
    "text_encoder": "model.text.encoder", "text_model": "model.text.pretrained",
    "text_trainable": "model.text.trainable", "text_dim": "model.text.dim",
    "text_max_length": "model.text.max_length", "embed_dim": "model.embed_dim",
    "projection_hidden": "model.projection_hidden", "fuser": "model.fuser",
    "fuse_weights": "model.fuse_weights",
    "method": "learner.name", "distance": "learner.distance",
    "cosine_scale": "learner.cosine_scale", "fuse_level": "learner.fuse_level",
    "batch_norm": "learner.batch_norm", "align_weight": "learner.align_weight",
    "align_temperature": "learner.align_temperature", "zero_head": "learner.zero_head",
    "reptile_inner_batch": "learner.reptile.inner_batch",
    "finetune_steps": "learner.baselinepp.finetune_steps",
    "finetune_lr": "learner.baselinepp.finetune_lr",
    "am3_example_modalities": "learner.am3.example_modalities",
    "inner_steps": "inner.steps", "inner_lr": "inner.lr", "first_order": "inner.first_order",
    "inner_loop": "inner.loop", "inner_params": "inner.params",
    "eval_inner_steps": "inner.eval_steps", "per_step_inner_lr": "inner.per_step_lr",
    "multi_step_loss": "inner.multi_step_loss", "inner_checkpoint": "inner.checkpoint",
    "optimizer": "optim.name", "learning_rate": "optim.lr", "lr_schedule": "optim.schedule",
    "lr_decay_every": "optim.decay_every", "lr_decay_factor": "optim.decay_factor",
    "grad_clip": "optim.grad_clip",
    "num_steps": "run.num_steps", "log_every": "run.log_every", "eval_every": "run.eval_every",
    "checkpoint_every": "run.checkpoint_every", "val_episodes": "run.val_episodes",
    "skip_nonfinite_steps": "run.skip_nonfinite_steps", "task_chunk": "run.task_chunk",
    "shard_tasks": "run.shard_tasks",
    "eval_n_way": "eval.n_way", "eval_k_shot": "eval.k_shot", "eval_q_query": "eval.q_query",
    "eval_episodes": "eval.episodes", "eval_batch": "eval.batch", "eval_seed": "eval.seed",
}


def translate_key(key: str) -> str | None:
  """The dotted name now of an old flat key (`method`, `shapes.seed`), None if it is not one."""
  head, dot, rest = key.partition(".")
  if head in ("shapes", "omniglot") and dot:
    return f"{RENAMED[head]}.{rest}"
  return RENAMED.get(key)


def translate_value(old_key: str, value):
  # The old inner_params default ".*" meant "the method's own" (everything for maml, the
  # head for anil); that is "" now.
  return "" if old_key == "inner_params" and value == ".*" else value


def translate_override(item: str) -> str:
  """'key=value' with an old key replaced by its dotted name now (a FutureWarning, which
  Python shows by default, says so); any other item unchanged."""
  key, eq, text = item.partition("=")
  new = translate_key(key.strip()) if eq else None
  if new is None:
    return item
  warnings.warn(f"config key {key.strip()!r} is now {new!r}; the old name will stop working "
                f"in a later version", FutureWarning, stacklevel=3)
  if key.strip() == "inner_params" and text.strip() in (".*", "'.*'", '".*"'):
    text = ""
  return f"{new}={text}"


def warn_flat_workdir(path) -> None:
  """A FutureWarning that a workdir's config.json is of the flat layout (read translated)."""
  warnings.warn(f"{path} is in the flat config layout of an earlier version; it is read with "
                f"the keys translated to their sections (a resumed run saves it in sections)",
                FutureWarning, stacklevel=3)


def is_flat(values: dict) -> bool:
  """Whether a config dict (a config.json) has the old flat layout."""
  return any(key in RENAMED for key in values)


def translate_dict(values: dict) -> dict:
  """An old flat config dict in the sectioned layout (keys it lacks stay absent)."""
  out: dict = {}
  for key, value in values.items():
    new = RENAMED.get(key)
    if new is None:   # seed, smoke, or a key of neither layout (left for the caller to refuse)
      out[key] = value
      continue
    *parents, leaf = new.split(".")
    node = out
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = translate_value(key, value)
  return out
