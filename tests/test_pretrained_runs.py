"""Pretrained image backbones in runs (`model.image.encoder=pretrained`, run/image_features.py):
frozen features replace the images once (then read from the disk cache), every method trains
on them, predict reads new images through the same backbone, a fine-tuned backbone changes
only the weights chosen, and CLIP's two towers with `model.embed_dim=0` are CLIP zero-shot
(with prompt templates averaged), checked against transformers' own calls."""
from __future__ import annotations

import contextlib
import csv
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tiny_models import save_tiny

from mmfsl_jax.errors import ConfigError, UserError
from mmfsl_jax.meta.step import init_train_state, make_meta_step
from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run import data as run_data
from mmfsl_jax.run import image_features
from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
from mmfsl_jax.run.predict import predict
from mmfsl_jax.run.train import train_and_evaluate

LITE = ["model.image.encoder=pretrained", "model.image.input_size=32"]


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))


def _config(*overrides):
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, [*LITE, *overrides])
  return build.effective_config(config)


def test_frozen_features_replace_the_images_and_come_back_from_the_disk_cache(tmp_path):
  config = _config()
  raw = run_data.build_splits(config)
  splits, encodings = run_data.prepare_splits(config)
  assert set(encodings) == {"text", "image"} and encodings["image"].feature_dim == 1280
  for name, ds in splits.items():
    assert ds.examples["image"].shape == (raw[name].num_examples, 1280)
  backbone = image_features.image_backbone(config)
  direct = jax.jit(backbone.apply)(backbone.params,
                                   jnp.asarray(raw["test"].examples["image"][:3]))
  np.testing.assert_allclose(splits["test"].examples["image"][:3], direct, rtol=1e-4, atol=1e-4)
  total = sum(ds.num_examples for ds in raw.values())
  first = image_features.feature_cache_report(encodings)
  assert f"{total} images through the backbone, 0 read from the disk cache" in first
  assert len(list((tmp_path / "xdg_cache" / "mmfsl_jax").glob("image_features_*.npz"))) == 1

  again, encodings = run_data.prepare_splits(config)
  assert (f"0 images through the backbone, {total} read from the disk cache"
          in image_features.feature_cache_report(encodings))
  for name in splits:
    np.testing.assert_array_equal(again[name].examples["image"], splits[name].examples["image"])
  assert run_data.train_augmentation(config) == "none"   # features are computed unaugmented
  # with the disk file gone, features the process holds are served from memory: neither
  # computed again nor counted as read from disk
  for file in (tmp_path / "xdg_cache" / "mmfsl_jax").glob("image_features_*.npz"):
    file.unlink()
  encodings["image"].encode(raw["test"].examples["image"])
  assert (f"0 images through the backbone, {total} read from the disk cache"
          in image_features.feature_cache_report(encodings))


@pytest.mark.parametrize("learner", ["anil", "lp_plus_plus"])
def test_the_methods_train_on_frozen_features(learner):
  config = _config(f"learner.name={learner}", "task.meta_batch=1")
  splits, encodings = run_data.prepare_splits(config)
  model = build.build_model(config, encodings, splits["train"])
  learner_ = build.build_learner(config, model)
  optimizer = build.build_optimizer(config)
  sampler, _ = build.training_samplers(config, splits)
  batch = sampler.sample(0)
  state = init_train_state(learner_, optimizer, jax.tree_util.tree_map(lambda x: x[0], batch),
                           0)
  step = make_meta_step(learner_, optimizer)
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def _write_manifest(path, rows):
  with path.open("w", newline="") as f:
    csv.writer(f).writerows([("image", "text", "label"), *rows])
  return path


@pytest.mark.slow
def test_a_frozen_backbone_run_trains_evaluates_and_predicts_new_images(tmp_path):
  config = _config("run.num_steps=6", "run.val_episodes=0", "run.checkpoint_every=6",
                   "eval.episodes=4")
  workdir = tmp_path / "run"
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    train_and_evaluate(config, workdir, progress=False)
  result = evaluate_workdir(workdir, write=False)
  assert 0.0 <= result["accuracy"]["mean"] <= 1.0
  with pytest.raises(UserError, match="no batch norm layers .a frozen pretrained backbone"):
    evaluate_workdir(workdir, batch_norm="population", population_batches=2, write=False)
  test = run_data.build_splits(config)["test"]
  (tmp_path / "img").mkdir()
  rows = []
  for label in range(5):
    for i in np.flatnonzero(test.labels == label)[:4]:
      Image.fromarray(np.round(test.examples["image"][i] * 255).astype(np.uint8)).save(
          tmp_path / "img" / f"{i}.png")
      rows.append([f"img/{i}.png", test.examples["text"][i], test.class_names[label]])
  manifest = _write_manifest(tmp_path / "manifest.csv", rows)
  scored = evaluate_workdir(workdir, data=manifest, q_query=2, episodes=3, write=False)
  assert scored["settings"]["episodes"] == 3
  p = predict(workdir, _write_manifest(tmp_path / "support.csv", rows[::4]),
              _write_manifest(tmp_path / "queries.csv", [r for i, r in enumerate(rows) if i % 4]))
  assert p.probabilities.shape == (15, 5)
  np.testing.assert_allclose(p.probabilities.sum(-1), 1.0, rtol=1e-5)


def _changed_after_one_step(config) -> list[str]:
  """The parameter paths one meta-step of the config's learner changes."""
  splits, encodings = run_data.prepare_splits(config)
  assert "image" not in encodings and splits["train"].examples["image"].ndim == 4
  model = build.build_model(config, encodings, splits["train"])
  learner = build.build_learner(config, model)
  optimizer = build.build_optimizer(config)
  batch = build.training_samplers(config, splits)[0].sample(0)
  state = init_train_state(learner, optimizer, jax.tree_util.tree_map(lambda x: x[0], batch), 0)
  before = jax.tree_util.tree_map(np.asarray, state.params)
  state, _ = make_meta_step(learner, optimizer)(state, batch)
  return ["/".join(str(getattr(k, "key", k)) for k in path)
          for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(before),
                                  jax.tree_util.tree_leaves(state.params))
          if not np.array_equal(a, np.asarray(b))]


def _fine_tuned(tmp_path, model_type: str, *overrides) -> list[str]:
  """The parameters one meta-step changes with a tiny `model_type` backbone fine-tuned."""
  save_tiny(model_type, tmp_path / model_type)
  return _changed_after_one_step(_config(
      "model.image.input_size=0", f"model.image.pretrained={tmp_path / model_type}",
      "model.image.trainable=True", "data.modalities=('image',)", "task.meta_batch=1",
      *overrides))


def test_a_fine_tuned_backbone_changes_only_the_weights_chosen(tmp_path):
  changed = _fine_tuned(tmp_path, "resnet", "model.image.finetune=stages/1/")
  backbone = [p for p in changed if "embedder" in p or "stages" in p]
  assert backbone and all("stages/1/" in p and "batch_stats" not in p for p in backbone)


def test_lora_fine_tuning_changes_the_adapters_and_not_the_backbone(tmp_path):
  changed = _fine_tuned(tmp_path, "vit", "model.image.lora_rank=2")
  assert any("/lora/" in p for p in changed)
  assert not [p for p in changed if "/backbone/" in p]


@pytest.mark.parametrize("overrides, message", [
    (["data.augment=crop_flip"], "a frozen pretrained backbone reads each image once"),
    (["model.image.finetune=stages"], "needs model.image.trainable=True"),
    (["model.image.encoder=conv4", "model.image.trainable=True"], "apply to model.image.encoder"),
    (["model.image.trainable=True", "model.image.finetune=("], "is not a regex"),
    (["model.text.prompts=('a photo of a {}.',)"], "need model.text.encoder=pretrained"),
    (["model.text.encoder=pretrained", "model.text.prompts=('a photo',)"], "holds the class"),
    (["model.image.head=mlp"], "model.image.head='mlp' is not valid"),
    (["model.image.lora_rank=4"], "a positive rank with model.image.trainable=True"),
    (["model.image.trainable=True", "model.image.lora_rank=4", "model.image.finetune=x"],
     "set one of them"),
])
def test_pretrained_settings_no_run_could_use_are_config_errors(overrides, message):
  with pytest.raises(ConfigError, match=message):
    _config(*overrides)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("clip")
  return path, save_tiny("clip", path)


def test_text_asked_of_an_image_only_model_is_named(tmp_path):
  vit = tmp_path / "vit"
  save_tiny("vit", vit)
  config = _config("model.text.encoder=pretrained", f"model.text.pretrained={vit}")
  with pytest.raises(UserError, match="'vit' model, an image encoder without a text tower"):
    run_data.prepare_splits(config)


def test_clip_two_towers_in_the_identity_space_are_clip_zero_shot(clip_dir):
  path, clip = clip_dir
  prompts = ("a photo of a {}.", "a drawing of the {}.")
  config = _config("model.image.input_size=0", f"model.image.pretrained={path}",
                   "model.text.encoder=pretrained", f"model.text.pretrained={path}",
                   "model.image.head=none", "model.text.head=none", "model.embed_dim=0",
                   "learner.name=zeroshot", "learner.cosine_scale=100.0",
                   f"model.text.prompts={prompts!r}")
  splits, encodings = run_data.prepare_splits(config)
  raw = run_data.build_splits(config)["test"]
  model = build.build_model(config, encodings, splits["train"])
  learner = build.build_learner(config, model, for_eval=True)
  task = build.task_sampler(config, splits["test"], role="test", batch_size=1).sample(0)
  raw_task = build.task_sampler(config, raw, role="test", batch_size=1,
                                modalities=("image",)).sample(0)   # the same draw, raw
  one = jax.tree_util.tree_map(lambda x: x[0], task)
  params = learner.init(jax.random.PRNGKey(0), one)
  logits = np.asarray(learner.predict(params, one))

  # transformers' CLIP on the same images and class names, prompts ensembled as CLIP does
  from mmfsl_jax.nn.encoders.pretrained_vision import preprocess, read_preprocessing
  pixels = preprocess(jnp.asarray(raw_task["query"]["image"][0]), read_preprocessing(str(path)))
  image = np.asarray(clip.get_image_features(pixel_values=jnp.transpose(pixels, (0, 3, 1, 2))))
  tokenizer = encodings["text"].pretrained.tokenizer
  class_names = [str(t) for t in raw.class_texts["text"][raw_task["class_id"][0]]]
  text = []
  for name in class_names:
    tokens = tokenizer([p.format(name) for p in prompts], padding=True, return_tensors="np")
    f = np.asarray(clip.get_text_features(input_ids=tokens["input_ids"],
                                          attention_mask=tokens["attention_mask"]))
    mean = (f / np.linalg.norm(f, axis=-1, keepdims=True)).mean(0)
    text.append(mean / np.linalg.norm(mean))
  image = image / np.linalg.norm(image, axis=-1, keepdims=True)
  assert len(set(class_names)) == len(class_names) and np.ptp(logits, axis=1).min() > 0.05
  np.testing.assert_allclose(logits, 100.0 * image @ np.stack(text).T, rtol=1e-4, atol=2e-4)


def _uncaptioned_folder(root):
  """An ImageFolder of 6 shapes classes (4 images each, no captions) named class0..class5,
  and a class_texts file giving each its description: -> (folder, class_texts file)."""
  raw = run_data.build_splits(_config())
  test = raw["test"]
  folder = root / "folder"
  rows = [("label", "text")]
  for c in range(6):
    (folder / f"class{c}").mkdir(parents=True)
    for j, i in enumerate(np.flatnonzero(test.labels == c)[:4]):
      Image.fromarray(np.round(test.examples["image"][i] * 255).astype(np.uint8)).save(
          folder / f"class{c}" / f"{j}.png")
    rows.append((f"class{c}", test.class_texts["text"][c]))
  names = root / "class_texts.csv"
  with names.open("w", newline="") as f:
    csv.writer(f).writerows(rows)
  return folder, names


@pytest.mark.slow
def test_clip_tip_adapter_on_your_images_with_only_class_names(tmp_path, clip_dir):
  """data.files.text_column='' with class texts: no caption per example; CLIP's towers in
  their own space train nothing, then eval --data and predict read the class texts too."""
  path, _ = clip_dir
  folder, names = _uncaptioned_folder(tmp_path)
  config = _config(
      "model.image.input_size=0", f"model.image.pretrained={path}",
      "model.text.encoder=pretrained", f"model.text.pretrained={path}",
      "model.image.head=none", "model.text.head=none", "model.embed_dim=0",
      "model.text.prompts=('a photo of a {}.',)", "learner.name=tip_adapter",
      "learner.cosine_scale=100.0", "data.name=files", f"data.files.manifest={folder}",
      "data.files.text_column=", f"data.files.class_texts={names}",
      "data.files.split_fractions=(0.5,0,0.5)", "task.n_way=3", "task.q_query=2",
      "run.num_steps=2", "run.val_episodes=0", "run.checkpoint_every=2", "eval.episodes=2",
      "eval.q_query=2")
  splits, _ = run_data.prepare_splits(config)
  assert set(splits) == {"train", "test"} and "text" in splits["train"].class_texts
  workdir = tmp_path / "run"
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    train_and_evaluate(config, workdir, progress=False)
  scored = evaluate_workdir(workdir, data=folder, class_texts=names, episodes=2, write=False)
  assert 0.0 <= scored["accuracy"]["mean"] <= 1.0
  with pytest.raises(UserError, match="pass a class-texts file"):
    evaluate_workdir(workdir, data=folder, episodes=2, write=False)

  rows = [(f"folder/class{c}/{j}.png", f"class{c}") for c in range(3) for j in range(4)]
  support = tmp_path / "support.csv"
  queries = tmp_path / "queries.csv"
  for file, part in ((support, [r for r in rows if r[0].endswith("0.png")]),
                     (queries, [r for r in rows if not r[0].endswith("0.png")])):
    with file.open("w", newline="") as f:
      csv.writer(f).writerows([("image", "label"), *part])
  p = predict(workdir, support, queries, class_texts=names)
  assert p.classes == ("class0", "class1", "class2") and p.probabilities.shape == (9, 3)
  np.testing.assert_allclose(p.probabilities.sum(-1), 1.0, rtol=1e-5)


def test_examples_without_captions_need_class_texts_and_a_class_text_method(tmp_path):
  folder, names = _uncaptioned_folder(tmp_path)
  files = ["data.name=files", f"data.files.manifest={folder}", "data.files.text_column=",
           "model.image.encoder=conv4", "model.image.input_size=0"]
  with pytest.raises(ConfigError, match="text_column='' gives the examples no caption"):
    _config(*files, "learner.name=protonet")
  config = _config(*files, "learner.name=zeroshot")   # no class_texts file
  with pytest.raises(UserError, match="give class_texts"):
    run_data.prepare_splits(config)
  config = _config(*files, "learner.name=zeroshot", f"data.files.class_texts={names}")
  splits, encodings = run_data.prepare_splits(config)
  assert not np.any(splits["train"].examples["text"])   # no caption, no word
  assert encodings["text"].vocab_size > 2   # the vocabulary of the class texts
