"""Configs: the base ConfigDict, loading by name or file, key=value overrides, validation.

A config is a built-in name (a module of `mmfsl_jax.configs`) or a Python file with a
`get_config()` returning an `ml_collections.ConfigDict`. Overrides `key=value` (dotted keys
reach nested fields) are parsed as Python literals, else taken as strings; an unknown key or
a value of the wrong type is an error that says what is valid.
"""
from __future__ import annotations

import ast
import copy
import difflib
import importlib
import json
import importlib.util
import pkgutil
from pathlib import Path
from typing import Sequence

import ml_collections

from mmfsl_jax import configs as _configs_pkg
from mmfsl_jax.errors import ConfigError

# The names of the conv_* choices and of OMNIGLOT_RESIZE are also those of
# encoders/conv_ops.py and data/omniglot.py, which this module does not import (no jax, no
# PIL here); tests/test_conv_ops.py and tests/test_omniglot.py check that they agree.
OMNIGLOT_RESIZE = ("box", "bilinear")
CHOICES = {
    "dataset": ("shapes", "omniglot", "tfds_omniglot", "cifar_fs", "fc100", "cub", "flowers102"),
    "augment": ("auto", "none", "crop_flip"),
    "method": ("protonet", "maml", "anil", "metasgd", "reptile", "baselinepp", "am3"),
    "image_encoder": ("conv4", "resnet12"),
    "conv_impl": ("auto", "matmul", "xla"),
    "conv_pool": ("same", "floor"),
    "conv_init": ("lecun_normal", "torch"),
    "text_encoder": ("bow", "gru", "pretrained"),
    "fuser": ("weighted", "concat", "gated", "attention"),
    "fuse_level": ("example", "class"),
    "distance": ("euclidean", "cosine"),
    "inner_loop": ("scan", "fori"),
    "batch_norm": ("transductive", "inductive"),
    "optimizer": ("adam", "sgd"),
    "lr_schedule": ("constant", "step", "cosine"),
}
MODALITIES = ("image", "text")
# Methods with a differentiated inner loop (the MAML++ options apply to them).
SECOND_ORDER_METHODS = ("maml", "anil", "metasgd")
# Learners that classify any number of classes (prototypes, or a head fitted per task); the
# others have a head of n_way outputs and are evaluated at their training way only.
ANY_WAY_METHODS = ("protonet", "am3", "baselinepp")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.smoke = False                 # shrink everything for a quick check of the pipeline
  c.dataset = "shapes"             # shapes | omniglot (zip files) | tfds_omniglot, cifar_fs,
  #                                  fc100, cub, flowers102 (TFDS; `mmfsl data prepare NAME`)
  c.data_dir = ""                 # omniglot: the zips' directory (else $MMFSL_OMNIGLOT_DIR);
  #                                  TFDS datasets: the TFDS data_dir (else TFDS's default)
  c.image_size = 0                # 0 = the dataset's own (shapes.image_size, 28, 32 or 84)
  c.augment = "auto"              # train images: auto (the dataset's default) | none | crop_flip
  c.shapes = ml_collections.ConfigDict(dict(
      image_size=32, examples_per_class=40, classes_per_split=(64, 16, 20), mention_prob=0.5,
      colour_jitter=30.0, noise_std=0.06, clutter=1, seed=0))
  c.omniglot = ml_collections.ConfigDict(dict(
      val_alphabets=("Early_Aramaic",), test_alphabets=("Korean", "Tagalog"), rotations=True,
      tfds_splits="full",           # tfds_omniglot: full (TFDS train/test) | small (small1+2)
      resize="box"))                # downsampling filter: box (area) | bilinear (PIL's, as
  #                                 PyTorch pipelines; the one-shot runs are read the same way)
  c.modalities = ("image", "text")  # a subset gives the unimodal ablations
  c.image_encoder = "conv4"
  c.conv_channels = 32
  c.conv_impl = "auto"            # convolutions as patch matmuls (matmul: fast on CPUs) or
  #                                 XLA's own (xla: fast on accelerators); auto picks by backend
  c.conv_pool = "same"            # 2x2 max-pools on an odd side: same (pool the last row on its
  #                                 own; Conv4 on 28x28 -> 2x2x64 features) | floor (drop it, as
  #                                 PyTorch's MaxPool2d: 1x1x64); needs images of 16+ pixels
  c.conv_init = "lecun_normal"    # convolution initialisers: lecun_normal (Flax's nn.Conv) |
  #                                 torch (PyTorch's Conv2d: kernel and bias U(+-1/sqrt(fan_in)))
  c.resnet_channels = (64, 160, 320, 640)
  c.text_encoder = "bow"          # bow | gru (trainable, word ids) | pretrained (transformers)
  c.text_model = "minilm"         # for text_encoder=pretrained: a directory or model id
  c.text_trainable = False        # pretrained: fine-tune it, or cache its frozen features
  c.text_dim = 64
  c.text_max_length = 32
  c.embed_dim = 64                # the shared space; 0: no projection (features as they are)
  c.projection_hidden = ()
  c.fuser = "weighted"
  c.fuse_weights = ()             # () = learned; else fixed weights, one per modality
  c.fuse_level = "example"
  c.align_weight = 0.0            # weight of the InfoNCE alignment term
  c.align_temperature = 0.1
  c.method = "protonet"           # protonet | maml | anil | metasgd | reptile | baselinepp |
  #                                 am3 (mmfsl_jax/meta/registry.py)
  c.distance = "euclidean"
  c.cosine_scale = 10.0           # cosine logits (ProtoNet, AM3) and Baseline++'s classifier
  c.batch_norm = "transductive"   # transductive (batch statistics) | inductive (support
  #                                 statistics for support and query; meta/base.py)
  c.inner_steps = 1
  c.inner_lr = 0.4
  c.first_order = False
  c.inner_loop = "scan"
  c.inner_params = ".*"           # regex over param paths adapted in the inner loop (maml,
  #                                 metasgd, reptile); for anil the default means "head/.*"
  c.eval_inner_steps = 0          # 0 = same as inner_steps
  c.per_step_inner_lr = False     # MAML++: a learned inner rate per step and tensor (maml, anil;
  #                                 metasgd: per step and parameter)
  c.multi_step_loss = False       # MAML++: mean query loss after every inner step
  c.inner_checkpoint = False      # jax.checkpoint each inner step (memory flat in inner_steps)
  c.zero_head = False             # maml, anil, metasgd: every task starts from a zero head, not
  #                                 a meta-learned one (the "zeroing trick"; meta/maml.py)
  c.reptile_inner_batch = 10      # reptile: each training inner step fits a random minibatch of
  #                                 this many support+query examples (0 = the whole support set)
  c.finetune_steps = 100          # baselinepp: gradient steps fitting the head per test task
  c.finetune_lr = 0.5
  c.am3_example_modalities = ()   # am3: modalities of the examples (() = all of modalities);
  #                                 ('image',) is the original AM3 (text per class only)
  c.n_way = 5
  c.k_shot = 1
  c.q_query = 5
  c.meta_batch = 4
  c.task_chunk = 0                # meta-step and evaluation: vmap this many tasks at a time and
  #                                 scan over the chunks (same results, one chunk's memory);
  #                                 0 = automatic: 1 on a CPU (fastest there), all at once on
  #                                 GPU/TPU; a chunk >= meta_batch vmaps all tasks at once
  c.shard_tasks = True            # with several devices, split each meta-batch's tasks over
  #                                 all of them (meta_batch a multiple of the device count)
  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.lr_schedule = "constant"      # constant | step: x lr_decay_factor every lr_decay_every
  c.lr_decay_every = 0            #   meta-steps (PyTorch's StepLR) | cosine: to 0 at num_steps
  c.lr_decay_factor = 0.5
  c.grad_clip = 10.0
  c.skip_nonfinite_steps = False  # drop updates with a non-finite loss/gradient (counted as
  #                                 skipped_steps) instead of stopping with an error
  c.num_steps = 1200
  c.log_every = 25
  c.eval_every = 200
  c.checkpoint_every = 200
  c.val_episodes = 200             # 0: no validation (all steps train; eval uses the last
  #                                 checkpoint), e.g. with omniglot.val_alphabets=()
  c.eval_episodes = 600
  c.eval_n_way = 0                # validation and test tasks: way and shot, 0 = the training
  c.eval_k_shot = 0               #   ones (e.g. train 60-way, evaluate 20-way, as ProtoNets do)
  c.eval_q_query = 15
  c.eval_batch = 50
  c.eval_seed = 1234
  return c


def builtin_config_names() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(_configs_pkg.__path__))


def load_config(name_or_path: str) -> ml_collections.ConfigDict:
  """A built-in config by name, or `get_config()` of a Python file."""
  path = Path(name_or_path)
  if path.suffix == ".py":
    if not path.is_file():
      raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"_mmfsl_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  elif name_or_path in builtin_config_names():
    module = importlib.import_module(f"mmfsl_jax.configs.{name_or_path}")
  else:
    raise ConfigError(f"unknown config {name_or_path!r}: give a built-in name "
                      f"({', '.join(builtin_config_names())}) or a .py file with get_config()")
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config {name_or_path!r} has no get_config() function")
  config = module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() of {name_or_path!r} must return an ml_collections.ConfigDict")
  return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys += flat_keys(v, f"{prefix}{k}.")
    else:
      keys.append(prefix + k)
  return keys


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _coerce(key: str, old, new):
  if isinstance(old, bool):
    if isinstance(new, bool):
      return new
    if isinstance(new, str) and new.lower() in ("true", "false"):
      return new.lower() == "true"
  elif isinstance(old, int) and isinstance(new, int) and not isinstance(new, bool):
    return new
  elif isinstance(old, float) and isinstance(new, (int, float)) and not isinstance(new, bool):
    return float(new)
  elif isinstance(old, str) and isinstance(new, (str, int, float)) and not isinstance(new, bool):
    return str(new)
  elif isinstance(old, tuple) and isinstance(new, (tuple, list)):
    return tuple(new)
  elif isinstance(old, tuple) and isinstance(new, (str, int, float)) and not isinstance(new, bool):
    return (new,)
  elif old is None:
    return new
  raise ConfigError(f"{key}={new!r}: expected a value of type {type(old).__name__} "
                    f"(current value {old!r})")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]):
  """Sets each 'key=value'; returns the config (changed in place)."""
  valid = flat_keys(config)
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    key, text = key.strip(), text.strip()
    if key not in valid:
      close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6) if key else []
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      raise ConfigError(f"unknown config key {key!r}.{hint} Valid keys: {', '.join(valid)}")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    with node.unlocked() if hasattr(node, "unlocked") else _null():
      node[leaf] = _coerce(key, node[leaf], _parse_value(text))
  return config


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError on any value no run could use."""
  for key, choices in CHOICES.items():
    if config[key] not in choices:
      raise ConfigError(f"{key}={config[key]!r} is not valid; choose one of {', '.join(choices)}")
  mods = tuple(config.modalities)
  if not mods or any(m not in MODALITIES for m in mods) or len(set(mods)) != len(mods):
    raise ConfigError(f"modalities={mods!r}: give a non-empty subset of {MODALITIES}")
  for key in ("n_way", "k_shot", "q_query", "meta_batch", "num_steps", "inner_steps",
              "eval_episodes", "eval_q_query", "eval_batch",
              "log_every", "eval_every", "checkpoint_every"):
    if config[key] < 1:
      raise ConfigError(f"{key} must be at least 1, got {config[key]}")
  if config.n_way < 2:
    raise ConfigError(f"n_way must be at least 2, got {config.n_way}")
  if config.embed_dim < 0:
    raise ConfigError(f"embed_dim must be 0 (no projection) or positive, got {config.embed_dim}")
  if config.embed_dim == 0 and tuple(config.projection_hidden):
    raise ConfigError(f"projection_hidden={tuple(config.projection_hidden)} needs a projection; "
                      f"set embed_dim to at least 1, or projection_hidden=()")
  if config.val_episodes < 0:
    raise ConfigError(f"val_episodes must be 0 (no validation) or positive, got "
                      f"{config.val_episodes}")
  alphabets_apply = (config.dataset == "omniglot" or (config.dataset == "tfds_omniglot"
                                                       and config.omniglot.tfds_splits == "small"))
  if alphabets_apply and not tuple(config.omniglot.val_alphabets) and config.val_episodes:
    raise ConfigError("omniglot.val_alphabets=() leaves no validation classes: set "
                      "val_episodes=0 (no validation; eval then uses the last checkpoint) or "
                      "name a validation alphabet")
  if config.eval_n_way < 0 or config.eval_n_way == 1 or config.eval_k_shot < 0:
    raise ConfigError(f"eval_n_way must be 0 (the training way) or at least 2, and eval_k_shot "
                      f"0 (the training shot) or at least 1; got {config.eval_n_way}, "
                      f"{config.eval_k_shot}")
  check_eval_way(config, config.eval_n_way or config.n_way, ConfigError)
  if config.fuse_weights and len(config.fuse_weights) != len(mods):
    raise ConfigError(f"fuse_weights={tuple(config.fuse_weights)} needs one weight per modality "
                      f"{mods}")
  if config.fuse_weights and (min(config.fuse_weights) < 0 or sum(config.fuse_weights) <= 0):
    raise ConfigError(f"fuse_weights must be non-negative with a positive sum, got "
                      f"{tuple(config.fuse_weights)}")
  if config.fuser == "gated" and len(mods) == 2 and mods[1] != "text":
    raise ConfigError("the gated fuser takes its gate from text: list modalities as ('image', 'text')")
  chunk = config.task_chunk
  if chunk < 0 or (0 < chunk < config.meta_batch and config.meta_batch % chunk):
    raise ConfigError(f"task_chunk={chunk} must be 0 (automatic), divide meta_batch="
                      f"{config.meta_batch}, or be at least it (all tasks at once)")
  if config.learning_rate <= 0 or config.inner_lr <= 0:
    raise ConfigError("learning_rate and inner_lr must be positive")
  if config.lr_schedule == "step" and (config.lr_decay_every < 1
                                       or not 0 < config.lr_decay_factor <= 1):
    raise ConfigError(f"lr_schedule='step' needs lr_decay_every >= 1 meta-steps and "
                      f"0 < lr_decay_factor <= 1, got lr_decay_every={config.lr_decay_every}, "
                      f"lr_decay_factor={config.lr_decay_factor}")
  _validate_method(config, mods)
  if config.image_size < 0:
    raise ConfigError(f"image_size must be 0 (the dataset's own size) or positive, got "
                      f"{config.image_size}")
  image_size = config.image_size or (config.shapes.image_size if config.dataset == "shapes" else 0)
  pools = 4 if config.image_encoder == "conv4" else len(config.resnet_channels)  # one a block
  if config.conv_pool == "floor" and "image" in mods and 0 < image_size < 2 ** pools:
    raise ConfigError(f"conv_pool='floor' halves the image {pools} times, rounding down: images "
                      f"of {image_size} pixels vanish before the last block; use images of at "
                      f"least {2 ** pools} pixels or conv_pool='same'")
  if config.omniglot.resize not in OMNIGLOT_RESIZE:
    raise ConfigError(f"omniglot.resize={config.omniglot.resize!r} is not valid; choose one of "
                      f"{', '.join(OMNIGLOT_RESIZE)}")
  if config.omniglot.tfds_splits not in ("full", "small"):
    raise ConfigError(f"omniglot.tfds_splits={config.omniglot.tfds_splits!r} is not valid; "
                      f"choose one of full, small")


def check_eval_way(config, n_way: int, error=ConfigError) -> None:
  """Only metric-based learners classify a way they were not trained for."""
  if n_way != config.n_way and config.method not in ANY_WAY_METHODS:
    raise error(
        f"the model is trained {config.n_way}-way with method={config.method}, whose head has "
        f"{config.n_way} outputs, so it cannot be evaluated {n_way}-way; train it with "
        f"n_way={n_way}, or use one of {', '.join(ANY_WAY_METHODS)} (any way)")


def evaluation_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose n_way and k_shot are those of its validation and test tasks
  (`eval_n_way`, `eval_k_shot`)."""
  config = copy.deepcopy(config)
  config.n_way = config.eval_n_way or config.n_way
  config.k_shot = config.eval_k_shot or config.k_shot
  return config


def _validate_method(config, mods: tuple[str, ...]) -> None:
  """The settings of one method that no run of it could use."""
  method = config.method
  used = [k for k in ("per_step_inner_lr", "multi_step_loss", "inner_checkpoint", "zero_head")
          if config[k]]
  if used and method not in SECOND_ORDER_METHODS:
    raise ConfigError(f"{', '.join(used)} apply to methods with a differentiated inner loop "
                      f"({', '.join(SECOND_ORDER_METHODS)}), not method={method}")
  task_size = config.n_way * (config.k_shot + config.q_query)
  if method == "reptile" and not 0 <= config.reptile_inner_batch <= task_size:
    raise ConfigError(f"reptile_inner_batch={config.reptile_inner_batch}: give 0 (the whole "
                      f"support set) or at most a task's {task_size} support and query examples "
                      f"(n_way * (k_shot + q_query))")
  if config.finetune_steps < 0 or config.finetune_lr <= 0:
    raise ConfigError(f"finetune_steps must be >= 0 and finetune_lr positive, got "
                      f"{config.finetune_steps}, {config.finetune_lr}")
  example_mods = tuple(config.am3_example_modalities)
  if method == "am3":
    if "text" not in mods:
      raise ConfigError(f"method=am3 mixes class-level text into the prototypes: modalities "
                        f"must include 'text' (got {mods}); use am3_example_modalities="
                        f"\"('image',)\" for image-only examples")
    if any(m not in mods for m in example_mods) or len(set(example_mods)) != len(example_mods):
      raise ConfigError(f"am3_example_modalities={example_mods!r}: give () or a subset of "
                        f"modalities {mods}")
  elif example_mods:
    raise ConfigError(f"am3_example_modalities applies to method=am3, not method={method}")


def shrink_for_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `smoke=True` switch: a run of a few seconds with the same code paths."""
  config = config.copy_and_resolve_references()
  config.shapes.examples_per_class = 12
  config.shapes.classes_per_split = (10, 6, 6)
  config.num_steps = min(config.num_steps, 4)
  config.eval_every = config.checkpoint_every = 2
  config.log_every = 1
  config.val_episodes = config.eval_episodes = 4
  config.q_query = config.eval_q_query = 2
  config.meta_batch = 2
  return config


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json())


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
  """Inverse of `config_to_dict` (JSON lists come back as tuples)."""
  return ml_collections.ConfigDict(_tuples(values))


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
  """Keys whose values differ between two config dicts, as 'key: a -> b'."""
  diffs = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
    if isinstance(va, dict) and isinstance(vb, dict):
      diffs += config_differences(va, vb, f"{prefix}{key}.")
    elif va != vb:
      diffs.append(f"{prefix}{key}: {va!r} -> {vb!r}")
  return diffs
