"""The builder: the one reader of a config. Sections in, library objects out.

    config = build.effective_config(config)            # checked; `smoke=True` shrunk
    splits, text = run.data.prepare_splits(config)     # data section -> ClassDatasets
    model = build.build_model(config, text, splits["train"])
    learner = build.build_learner(config, model, num_classes=...)
    optimizer = build.build_optimizer(config)
    train, val = build.training_samplers(config, splits)

Everything below meta/, nn/ and data/ takes plain arguments; this module maps the config's
sections onto them, and `check_config` holds the rules that span sections or that no
constructor sees early enough (before any data is loaded). Choices are checked against the
tuples of the modules that implement them, so no list of names is kept twice.
"""
from __future__ import annotations

import jax
import ml_collections
import optax

from mmfsl_jax.core.component import COMPUTE_DTYPES, Component, with_compute_dtype
from mmfsl_jax.core.model import MultimodalModel, multimodal_model
from mmfsl_jax.data import augment
from mmfsl_jax.data.modalities import modality_kind
from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.data.sources import files as files_source
from mmfsl_jax.data.sources import omniglot, tfds
from mmfsl_jax.errors import ConfigError, UserError
from mmfsl_jax.meta.base import BATCH_NORM, MetaLearner
from mmfsl_jax.meta.inner import LOOPS, InnerLoop
from mmfsl_jax.meta.protonet import DISTANCES, FUSE_LEVELS
from mmfsl_jax.meta.registry import METHODS, names_with
from mmfsl_jax.nn import align, fuse
from mmfsl_jax.nn.encoders import conv_ops
from mmfsl_jax.nn.encoders.image import conv4, resnet12
from mmfsl_jax.nn.encoders.text import token_text_encoder
from mmfsl_jax.nn.encoders.vector import fit_standardizer, standardizer, vector_encoder
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.data import (DATASET_INFO, Encoding, dataset_image_size, file_columns,
                                train_augmentation, uses_frozen_features)

MODALITIES = ("image", "text")
IMAGE_ENCODERS = ("conv4", "resnet12", "pretrained")
IMAGE_HEADS = ("standardize", "none")       # over a frozen backbone's features
TEXT_HEADS = ("mlp", "standardize", "none")  # over a frozen text model's features
TEXT_ENCODERS = ("bow", "gru", "pretrained")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "step", "cosine")

# Dotted key -> the choices of the module that implements it.
CHOICES = {
    "data.name": tuple(DATASET_INFO),
    "data.augment": ("auto",) + augment.AUGMENTATIONS,
    "data.omniglot.tfds_splits": tfds.OMNIGLOT_SPLIT_SETS,
    "data.omniglot.resize": tuple(omniglot.RESIZE_FILTERS),
    "data.files.color": files_source.COLORS,
    "data.files.resize": tuple(omniglot.RESIZE_FILTERS),
    "model.image.encoder": IMAGE_ENCODERS,
    "model.image.conv_impl": conv_ops.IMPLS,
    "model.image.pool": conv_ops.POOL_MODES,
    "model.image.init": conv_ops.INITS,
    "model.image.head": IMAGE_HEADS,
    "model.image.compute_dtype": ("auto",) + COMPUTE_DTYPES,
    "model.text.head": TEXT_HEADS,
    "model.text.encoder": TEXT_ENCODERS,
    "model.fuser": fuse.FUSERS,
    "learner.name": tuple(METHODS),
    "learner.distance": DISTANCES,
    "learner.fuse_level": FUSE_LEVELS,
    "learner.batch_norm": BATCH_NORM,
    "inner.loop": LOOPS,
    "run.autotune": ("auto", "on", "off"),
    "optim.name": OPTIMIZERS,
    "optim.schedule": SCHEDULES,
}
POSITIVE = ("task.k_shot", "task.q_query", "task.meta_batch", "inner.steps",
            "run.num_steps", "run.log_every", "run.eval_every", "run.checkpoint_every",
            "eval.episodes", "eval.q_query", "eval.batch", "optim.lr", "inner.lr",
            "model.vector.dim")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError, naming the keys, on any setting no run could use."""
  for key, choices in CHOICES.items():
    value = config_lib.get_value(config, key)
    if value not in choices:
      raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(choices)}")
  for key in POSITIVE:
    value = config_lib.get_value(config, key)
    if value <= 0:
      raise ConfigError(f"{key} must be positive, got {value}")
  mods = tuple(config.data.modalities)
  _check_modalities(config, mods)
  _check_task_shapes(config)
  _check_model(config, mods)
  _check_learner(config, mods)
  _check_schedule(config)
  _check_data(config, mods)


def _check_task_shapes(config) -> None:
  if config.task.n_way < 2:
    raise ConfigError(f"task.n_way must be at least 2, got {config.task.n_way}")
  if config.run.val_episodes < 0:
    raise ConfigError(f"run.val_episodes must be 0 (no validation) or positive, got "
                      f"{config.run.val_episodes}")
  if config.eval.n_way < 0 or config.eval.n_way == 1 or config.eval.k_shot < 0:
    raise ConfigError(f"eval.n_way must be 0 (the training way) or at least 2, and "
                      f"eval.k_shot 0 (the training shot) or at least 1; got "
                      f"{config.eval.n_way}, {config.eval.k_shot}")
  check_eval_way(config, evaluation_shape(config)[0], ConfigError)
  chunk, batch = config.run.task_chunk, config.task.meta_batch
  if chunk < 0 or (0 < chunk < batch and batch % chunk):
    raise ConfigError(f"run.task_chunk={chunk} must be 0 (automatic), divide "
                      f"task.meta_batch={batch}, or be at least it (all tasks at once)")


def _check_modalities(config, mods) -> None:
  if not mods or len(set(mods)) != len(mods):
    raise ConfigError(f"data.modalities={mods!r}: give one or more distinct modalities (a "
                      f"subset of {MODALITIES}; data.name=files: names of the kinds image, "
                      f"text and vector, e.g. image_ct)")
  if config.data.name != "files" and any(m not in MODALITIES for m in mods):
    raise ConfigError(f"data.modalities={mods!r}: give a non-empty subset of {MODALITIES} "
                      f"(modalities of other names and kinds are read from your own files, "
                      f"data.name=files)")
  for m in mods:
    try:
      modality_kind(m)
    except UserError as error:
      raise ConfigError(f"data.modalities: {error}") from None
  columns = file_columns(config)
  unknown = [m for m in columns if m not in mods]
  if unknown:
    raise ConfigError(f"data.files.columns names {unknown}, which data.modalities={mods} "
                      f"does not have")


def _check_model(config, mods) -> None:
  model = config.model
  if model.embed_dim < 0:
    raise ConfigError(f"model.embed_dim must be 0 (no projection) or positive, got "
                      f"{model.embed_dim}")
  if model.embed_dim == 0 and tuple(model.projection_hidden):
    raise ConfigError(f"model.projection_hidden={tuple(model.projection_hidden)} needs a "
                      f"projection; set model.embed_dim to at least 1, or "
                      f"model.projection_hidden=()")
  weights = tuple(model.fuse_weights)
  if weights and len(weights) != len(mods):
    raise ConfigError(f"model.fuse_weights={weights} needs one weight per modality {mods}")
  if weights and (min(weights) < 0 or sum(weights) <= 0):
    raise ConfigError(f"model.fuse_weights must be non-negative with a positive sum, got "
                      f"{weights}")
  if model.fuser == "gated" and len(mods) == 2 and modality_kind(mods[1]) != "text":
    raise ConfigError("the gated fuser takes its gate from text: list data.modalities as "
                      "('image', 'text')")
  _check_pretrained(config, mods)
  image_size = dataset_image_size(config)
  pools = 4 if model.image.encoder == "conv4" else len(model.image.resnet_channels)
  has_images = any(modality_kind(m) == "image" for m in mods)
  from_scratch = model.image.encoder != "pretrained"
  if (from_scratch and model.image.pool == "floor" and has_images
      and 0 < image_size < 2 ** pools):
    raise ConfigError(f"model.image.pool='floor' halves the image {pools} times, rounding "
                      f"down: images of {image_size} pixels vanish before the last block; use "
                      f"images of at least {2 ** pools} pixels or model.image.pool='same'")


def _check_pretrained(config, mods) -> None:
  """The pretrained encoders' settings that no loader sees before the data are read."""
  image, text = config.model.image, config.model.text
  own = ("trainable", "finetune", "input_size", "lora_rank")
  if image.encoder != "pretrained" and any(image[k] for k in own):
    set_ = [f"model.image.{k}" for k in own if image[k]]
    raise ConfigError(f"{', '.join(set_)} apply to model.image.encoder=pretrained, not "
                      f"{image.encoder!r}")
  if image.input_size < 0:
    raise ConfigError(f"model.image.input_size must be 0 (the model's own) or positive, got "
                      f"{image.input_size}")
  if image.finetune and not image.trainable:
    raise ConfigError("model.image.finetune chooses the backbone weights that are fine-tuned: "
                      "it needs model.image.trainable=True")
  if image.lora_rank < 0 or (image.lora_rank and not image.trainable):
    raise ConfigError(f"model.image.lora_rank={image.lora_rank}: give 0 (no adapters), or a "
                      f"positive rank with model.image.trainable=True")
  if image.lora_rank and image.finetune:
    raise ConfigError("model.image.lora_rank trains adapters beside a frozen backbone; "
                      "model.image.finetune chooses backbone weights to train: set one of them")
  if image.finetune:
    import re
    try:
      re.compile(image.finetune)
    except re.error as error:
      raise ConfigError(f"model.image.finetune={image.finetune!r} is not a regex: "
                        f"{error}") from None
  if uses_frozen_features(config) and config.data.augment not in ("auto", "none"):
    raise ConfigError(f"data.augment={config.data.augment!r} changes the images every step, but "
                      f"a frozen pretrained backbone reads each image once (its features are "
                      f"cached): use data.augment=none, or model.image.trainable=True")
  prompts = tuple(text.prompts)
  if prompts and (text.encoder != "pretrained" or text.trainable):
    raise ConfigError("model.text.prompts are averaged over a frozen pretrained text model's "
                      "features: they need model.text.encoder=pretrained and "
                      "model.text.trainable=False")
  bad = [p for p in prompts if str(p).count("{}") != 1]
  if bad:
    raise ConfigError(f"model.text.prompts {bad}: each template holds the class text once, as "
                      f"{{}} (e.g. \"a photo of a {{}}.\")")
  if prompts and "text" not in mods:
    raise ConfigError(f"model.text.prompts apply to class text: data.modalities={mods} has no "
                      f"'text'")


def _check_learner(config, mods) -> None:
  name, learner, inner = config.learner.name, config.learner, config.inner
  used = [f"inner.{k}" for k in ("per_step_lr", "multi_step_loss", "checkpoint") if inner[k]]
  used += ["learner.zero_head"] if learner.zero_head else []
  if used and not METHODS[name].second_order:
    raise ConfigError(f"{', '.join(used)} apply to methods with a differentiated inner loop "
                      f"({', '.join(names_with('second_order'))}), not learner.name={name}")
  weight = learner.support_loss_weight
  if weight < 0:
    raise ConfigError(f"learner.support_loss_weight must be 0 (off) or positive, got {weight}")
  if weight and not METHODS[name].support_loss:
    raise ConfigError(f"learner.support_loss_weight applies to methods with a support loss at "
                      f"the initial parameters ({', '.join(names_with('support_loss'))}), not "
                      f"learner.name={name}")
  if inner.eval_steps < 0:
    raise ConfigError(f"inner.eval_steps must be 0 (inner.steps) or positive, got "
                      f"{inner.eval_steps}")
  task_size = config.task.n_way * (config.task.k_shot + config.task.q_query)
  if name == "reptile" and not 0 <= learner.reptile.inner_batch <= task_size:
    raise ConfigError(f"learner.reptile.inner_batch={learner.reptile.inner_batch}: give 0 (the "
                      f"whole support set) or at most a task's {task_size} support and query "
                      f"examples (task.n_way * (task.k_shot + task.q_query))")
  if learner.baselinepp.finetune_steps < 0 or learner.baselinepp.finetune_lr <= 0:
    raise ConfigError(f"learner.baselinepp.finetune_steps must be >= 0 and finetune_lr "
                      f"positive, got {learner.baselinepp.finetune_steps}, "
                      f"{learner.baselinepp.finetune_lr}")
  _check_shared_space(config, mods)
  example_mods = tuple(learner.am3.example_modalities)
  if name == "am3":
    if "text" not in mods:
      raise ConfigError(f"learner.name=am3 mixes class-level text into the prototypes: "
                        f"data.modalities must include 'text' (got {mods}); use "
                        f"learner.am3.example_modalities=\"('image',)\" for image-only examples")
    if any(m not in mods for m in example_mods) or len(set(example_mods)) != len(example_mods):
      raise ConfigError(f"learner.am3.example_modalities={example_mods!r}: give () or a subset "
                        f"of data.modalities {mods}")
  elif example_mods:
    raise ConfigError(f"learner.am3.example_modalities applies to learner.name=am3, not "
                      f"learner.name={name}")


def _check_shared_space(config, mods) -> None:
  """The shared-space methods compare 'image' examples with 'text' class text."""
  learner, name = config.learner, config.learner.name
  if not METHODS[name].shared_space:
    return
  needed = ("image", "text") if METHODS[name].class_text else ("image",)
  missing = [m for m in needed if m not in mods]
  if missing:
    raise ConfigError(f"learner.name={name} classifies 'image' examples"
                      + (" against each class's 'text'" if "text" in needed else "")
                      + f": data.modalities must include {missing} (got {mods})")
  if learner.align_weight:
    raise ConfigError(f"learner.align_weight applies to the methods that fuse examples, not "
                      f"learner.name={name} (its query loss already compares images with text)")
  tip, probe, lpp = learner.tip_adapter, learner.linear_probe, learner.lp_plus_plus
  if tip.alpha < 0 or tip.beta < 0 or tip.finetune_steps < 0 or tip.finetune_lr <= 0:
    raise ConfigError(f"learner.tip_adapter needs alpha, beta, finetune_steps >= 0 and "
                      f"finetune_lr > 0, got {tip.to_dict()}")
  if probe.steps < 1 or probe.weight_decay < 0:
    raise ConfigError(f"learner.linear_probe needs steps >= 1 and weight_decay >= 0, got "
                      f"{probe.to_dict()}")
  if lpp.steps < 0:
    raise ConfigError(f"learner.lp_plus_plus.steps must be >= 0, got {lpp.steps}")


def _check_schedule(config) -> None:
  optim = config.optim
  if optim.schedule == "step" and (optim.decay_every < 1 or not 0 < optim.decay_factor <= 1):
    raise ConfigError(f"optim.schedule='step' needs optim.decay_every >= 1 meta-steps and "
                      f"0 < optim.decay_factor <= 1, got decay_every={optim.decay_every}, "
                      f"decay_factor={optim.decay_factor}")
  if optim.grad_clip < 0:
    raise ConfigError(f"optim.grad_clip must be 0 (none) or positive, got {optim.grad_clip}")


def _check_data(config, mods) -> None:
  data = config.data
  if data.name == "files" and "text" in mods and not data.files.text_column:
    name, example_mods = config.learner.name, tuple(config.learner.am3.example_modalities)
    class_text_only = (METHODS[name].shared_space
                       or (name == "am3" and example_mods and "text" not in example_mods))
    if not class_text_only:
      raise ConfigError(
          f"data.files.text_column='' gives the examples no caption, so only class text "
          f"(data.files.class_texts) says anything, and learner.name={name} "
          f"{'' if name != 'am3' else 'with these example_modalities '}would read the "
          f"examples' empty text: use a method that compares images with class text "
          f"({', '.join(names_with('class_text'))}; am3 with "
          f"learner.am3.example_modalities=\"('image',)\"), or give a caption column")
  if data.image_size < 0:
    raise ConfigError(f"data.image_size must be 0 (the dataset's own size) or positive, got "
                      f"{data.image_size}")
  alphabets_apply = (data.name == "omniglot" or (data.name == "tfds_omniglot"
                                                 and data.omniglot.tfds_splits == "small"))
  if alphabets_apply and not tuple(data.omniglot.val_alphabets) and config.run.val_episodes:
    raise ConfigError("data.omniglot.val_alphabets=() leaves no validation classes: set "
                      "run.val_episodes=0 (no validation; eval then uses the last checkpoint) "
                      "or name a validation alphabet")


def effective_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config a run uses: checked, and shrunk to a few seconds if `smoke`."""
  check_config(config)
  return config_lib.shrink_for_smoke(config) if config.smoke else config


# ---------------------------------------------------------------------------------------------
# Task shapes


def evaluation_shape(config) -> tuple[int, int]:
  """(n_way, k_shot) of validation and test tasks: eval.n_way / eval.k_shot, where 0 means
  the training task's."""
  return (config.eval.n_way or config.task.n_way, config.eval.k_shot or config.task.k_shot)


def check_eval_way(config, n_way: int, error=ConfigError) -> None:
  """Only learners that classify any way are evaluated at a way they were not trained for."""
  name = config.learner.name
  if n_way != config.task.n_way and not METHODS[name].any_way:
    raise error(
        f"the model is trained {config.task.n_way}-way with learner.name={name}, whose head "
        f"has {config.task.n_way} outputs, so it cannot be evaluated {n_way}-way; train it with "
        f"task.n_way={n_way}, or use one of {', '.join(names_with('any_way'))} (any way)")


def eval_inner_steps(config) -> int | None:
  """The inner steps the learner takes at test time (inner.eval_steps, else inner.steps);
  None for learners without an inner loop."""
  if not METHODS[config.learner.name].inner_loop:
    return None
  return _test_time_steps(config)


def _test_time_steps(config) -> int:
  return config.inner.eval_steps or config.inner.steps


# ---------------------------------------------------------------------------------------------
# Samplers


def task_sampler(config, split, *, role: str, batch_size: int | None = None,
                 n_way: int | None = None, k_shot: int | None = None,
                 q_query: int | None = None, seed: int | None = None,
                 modalities=None, split_name: str | None = None) -> EpisodeSampler:
  """The episode sampler of `role` over `split` (a ClassDataset):
  "train": meta-training tasks (task section; the config's train augmentation),
  "population": tasks shaped as those, not augmented (batch-norm moments), "val": the
  validation tasks drawn during training, "test": evaluation tasks (eval section); the
  keyword arguments replace single settings (`split_name` names the split in errors)."""
  eval_way, eval_shot = evaluation_shape(config)
  if role in ("train", "population"):
    defaults = dict(n_way=config.task.n_way, k_shot=config.task.k_shot,
                    q_query=config.task.q_query, batch_size=config.task.meta_batch,
                    seed=config.seed)
  elif role in ("val", "test"):
    episodes = config.run.val_episodes if role == "val" else config.eval.episodes
    defaults = dict(n_way=eval_way, k_shot=eval_shot, q_query=config.eval.q_query,
                    batch_size=min(config.eval.batch, max(episodes, 1)),
                    seed=config.eval.seed + (1 if role == "val" else 0))
  else:
    raise ValueError(f"unknown sampler role {role!r}")
  given = dict(n_way=n_way, k_shot=k_shot, q_query=q_query, batch_size=batch_size, seed=seed)
  settings = {**defaults, **{k: v for k, v in given.items() if v is not None}}
  if role == "population":
    settings["batch_size"] = batch_size or 1
  name = split_name or ("train" if role == "population" else role)
  sampler = EpisodeSampler(split, split_name=name, modalities=modalities, **settings)
  if role == "train":
    return augment.augmented(sampler, train_augmentation(config))
  return sampler


def training_samplers(config, splits) -> tuple:
  """(meta-train sampler, validation sampler or None when run.val_episodes is 0)."""
  train = task_sampler(config, splits["train"], role="train")
  if not config.run.val_episodes:
    return train, None
  if "val" not in splits:
    raise UserError("the data has no validation split; set run.val_episodes=0 to train "
                    "without validation")
  return train, task_sampler(config, splits["val"], role="val")


# ---------------------------------------------------------------------------------------------
# Model, learner, optimiser


def _standardizer_statistics(train_split, modality: str):
  if train_split is None:
    raise ConfigError(f"the modality {modality!r} needs the training split (its features are "
                      f"standardised with the training statistics)")
  return fit_standardizer(train_split.examples[modality])


def _standardized_mlp(train_split, modality: str, hidden, out_dim: int) -> Component:
  mean, std = _standardizer_statistics(train_split, modality)
  return vector_encoder(mean, std, hidden=tuple(hidden), out_dim=out_dim)


def _feature_head(train_split, modality: str, head: str, hidden=(), out_dim: int = 0
                  ) -> Component:
  """The encoder over a frozen model's features: as they are ("none"), standardised with
  the training statistics ("standardize"), or then an MLP ("mlp")."""
  if head == "none":
    return standardizer()
  if head == "standardize":
    return standardizer(*_standardizer_statistics(train_split, modality))
  return _standardized_mlp(train_split, modality, hidden, out_dim)


def _text_encoder(config, encoding: Encoding, train_split, modality: str = "text") -> Component:
  text = config.model.text
  if encoding.kind == "features":
    return _feature_head(train_split, modality, text.head, (2 * text.dim,), text.dim)
  if encoding.pretrained is not None:
    from mmfsl_jax.nn.encoders.pretrained_text import pretrained_text_encoder
    encoder = pretrained_text_encoder(encoding.pretrained)

    def apply(params, ids, *, train=False, key=None):
      return encoder.apply(params, {"ids": ids, "mask": (ids > 0).astype("int32")},
                           train=train, key=key)
    return Component(encoder.init, apply)
  return token_text_encoder(encoding.vocab_size, text.dim,
                            "mean" if text.encoder == "bow" else "gru")


def _image_encoder(config, encoding: Encoding | None, train_split, modality: str) -> Component:
  image = config.model.image
  if encoding is not None:        # a frozen backbone's cached features
    return _feature_head(train_split, modality, image.head)
  if image.encoder == "pretrained":
    from mmfsl_jax.nn.encoders.image_backbones import backbone_encoder, lora_encoder
    from mmfsl_jax.run.image_features import image_backbone
    if image.lora_rank:
      return lora_encoder(image_backbone(config), int(image.lora_rank))
    return backbone_encoder(image_backbone(config), trainable=bool(image.trainable),
                            finetune=str(image.finetune))
  options = dict(conv_impl=image.conv_impl, pool=image.pool, conv_init=image.init)
  encoder = (conv4(image.channels, **options) if image.encoder == "conv4"
             else resnet12(tuple(image.resnet_channels), **options))
  return with_compute_dtype(encoder, compute_dtype(config))


def compute_dtype(config) -> str:
  """model.image.compute_dtype with "auto" resolved: bfloat16 on accelerators, float32 on
  CPUs (whose float32 products are as fast, and the tests' tolerances are float32's)."""
  dtype = config.model.image.compute_dtype
  if dtype == "auto":
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return dtype


def build_model(config, encodings: dict[str, Encoding], train_split=None) -> MultimodalModel:
  """The model section as a MultimodalModel over data.modalities, one encoder each by its
  kind (image: model.image; text: model.text; both from `encodings[modality]` where one
  encoded them, what `run.data.prepare_splits` gives; vector: model.vector). `train_split`
  is read only by vector and precomputed-feature modalities (for their statistics)."""
  model, mods = config.model, tuple(config.data.modalities)
  encoders = {}
  for m in mods:
    kind = modality_kind(m)
    if kind == "image":
      encoders[m] = _image_encoder(config, encodings.get(m), train_split, m)
    elif kind == "text":
      encoders[m] = _text_encoder(config, encodings[m], train_split, m)
    else:
      encoders[m] = _standardized_mlp(train_split, m, model.vector.hidden, model.vector.dim)
  aligner = align.projections(mods, model.embed_dim, tuple(model.projection_hidden))
  fuser = fuse.make_fuser(model.fuser, mods, weights=tuple(model.fuse_weights) or None)
  return multimodal_model(encoders, aligner, fuser)


def inner_loop(config, *, for_eval: bool = False) -> InnerLoop:
  """The inner section as an InnerLoop; for evaluation with inner.eval_steps (learned
  per-step rates stay stored for the training steps)."""
  inner = config.inner
  steps = _test_time_steps(config) if for_eval else inner.steps
  return InnerLoop(steps=steps, lr=inner.lr, first_order=inner.first_order, loop=inner.loop,
                   per_step_lr=inner.per_step_lr, lr_steps=inner.steps,
                   checkpoint=inner.checkpoint, multi_step_loss=inner.multi_step_loss)


def train_class_count(config) -> int:
  """The number of classes in the training split (Baseline++'s classifier size); built
  splits are counted where they are not at hand."""
  if config.data.name == "shapes":
    return int(config.data.shapes.classes_per_split[0])
  from mmfsl_jax.run.data import build_splits
  return build_splits(config)["train"].num_classes


def shared_space_arguments(config) -> dict:
  """The settings of a shared-space method (zeroshot, linear_probe, tip_adapter(_f),
  lp_plus_plus) from its learner section."""
  learner, name = config.learner, config.learner.name
  if name == "linear_probe":
    return dict(steps=learner.linear_probe.steps,
                weight_decay=learner.linear_probe.weight_decay)
  scale = dict(cosine_scale=learner.cosine_scale)
  tip = learner.tip_adapter
  if name == "tip_adapter":
    return dict(scale, alpha=tip.alpha, beta=tip.beta)
  if name == "tip_adapter_f":
    return dict(scale, alpha=tip.alpha, beta=tip.beta, finetune_steps=tip.finetune_steps,
                finetune_lr=tip.finetune_lr)
  if name == "lp_plus_plus":
    return dict(scale, alpha_init=learner.lp_plus_plus.alpha_init,
                steps=learner.lp_plus_plus.steps)
  return scale


def build_learner(config, model: MultimodalModel, *, n_way: int | None = None,
                  num_classes: int | None = None, for_eval: bool = False) -> MetaLearner:
  """The learner section's meta-learner (meta/registry.py) for `n_way`-way tasks (default
  task.n_way). `for_eval`: with the test-time inner steps; `num_classes`: the training
  classes (baselinepp only; counted when not given)."""
  learner, name = config.learner, config.learner.name
  if name not in METHODS:
    raise ConfigError(f"learner.name={name!r} is not valid; choose one of {', '.join(METHODS)}")
  common = dict(n_way=n_way or config.task.n_way, align_weight=learner.align_weight,
                align_temperature=learner.align_temperature, batch_norm=learner.batch_norm)
  if METHODS[name].support_loss:
    common["support_loss_weight"] = learner.support_loss_weight
  constructor = METHODS[name].constructor
  if name == "protonet":
    return constructor(model, distance=learner.distance, cosine_scale=learner.cosine_scale,
                       fuse_level=learner.fuse_level, **common)
  if name == "am3":
    return constructor(model, example_modalities=tuple(learner.am3.example_modalities) or None,
                       distance=learner.distance, cosine_scale=learner.cosine_scale, **common)
  if METHODS[name].shared_space:
    return constructor(model, **shared_space_arguments(config), n_way=common["n_way"],
                       batch_norm=learner.batch_norm)
  if name == "baselinepp":
    return constructor(model, num_classes=num_classes or train_class_count(config),
                       cosine_scale=learner.cosine_scale,
                       finetune_steps=learner.baselinepp.finetune_steps,
                       finetune_lr=learner.baselinepp.finetune_lr,
                       check_class_ids=not for_eval, **common)
  inner = inner_loop(config, for_eval=for_eval)
  params = {"inner_params": config.inner.params} if config.inner.params else {}
  if name == "reptile":
    return constructor(model, inner=inner, inner_batch=learner.reptile.inner_batch or None,
                       **params, **common)
  return constructor(model, inner=inner, zero_head=learner.zero_head, **params, **common)


def learning_rate(config) -> float | optax.Schedule:
  """The meta-optimiser's rate: a float when constant, else an optax schedule of the step
  count (which the optimiser state carries, so a resumed run continues the schedule)."""
  optim = config.optim
  if optim.schedule == "step":
    return optax.exponential_decay(optim.lr, optim.decay_every, optim.decay_factor,
                                   staircase=True)
  if optim.schedule == "cosine":
    return optax.cosine_decay_schedule(optim.lr, config.run.num_steps)
  return optim.lr


def build_optimizer(config) -> optax.GradientTransformation:
  rate = learning_rate(config)
  base = optax.adam(rate) if config.optim.name == "adam" else optax.sgd(rate, momentum=0.9)
  if config.optim.grad_clip:
    return optax.chain(optax.clip_by_global_norm(config.optim.grad_clip), base)
  return base


def task_mesh(config):
  """The device mesh tasks are split over (run.shard_tasks), or None (one device)."""
  from mmfsl_jax.run.sharding import task_mesh_for
  return task_mesh_for(config.run.shard_tasks)
