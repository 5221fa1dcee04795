"""TFDS-backed datasets on `tfds.testing.mock_data` (no TensorFlow), class splits and names,
`mmfsl data prepare`, train augmentation and the pipeline throughput measure.

mock_data works without TensorFlow with `policy=MockPolicy.USE_CODE` and `tfds.data_source`:
either its own random examples (random labels, random image sizes; `ds[i]` only, its
`__getitems__` is broken) or examples we give through `as_data_source_fn`, which is how the
split tests control labels and names. Passing `decoders=` to a mocked data source needs
TensorFlow, so the loader passes none.
"""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mmfsl_jax.run import config as config_lib
from mmfsl_jax.cli import main
from mmfsl_jax.data import ClassDataset, EpisodeSampler, augment
from mmfsl_jax.data.sources import tfds as td
from mmfsl_jax.run import build
from mmfsl_jax.run.data import prepare_splits, train_augmentation
from mmfsl_jax.errors import UserError

CODE = tfds.testing.MockPolicy.USE_CODE


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.delenv("MMFSL_DEBUG", raising=False)


def _mock(examples_by_split):
  """mock_data whose data sources hold the given examples: {split: [example dict]}."""
  def as_data_source(self, split, decoders=None, **kwargs):
    return examples_by_split[split]
  return tfds.testing.mock_data(policy=CODE, as_data_source_fn=as_data_source)


def _run_cli(argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(argv)
  return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------
# Names and class splits


@pytest.mark.parametrize("raw, clean", [
    ("black_footed_albatross", "black footed albatross"),
    ("001.Black_footed_Albatross", "black footed albatross"),
    ("200.Common_Yellowthroat", "common yellowthroat"),
    ("aquarium_fish", "aquarium fish"),
    ("hard-leaved pocket orchid", "hard-leaved pocket orchid"),
    ("colt's foot", "colt's foot"),
    ("  Sweet__Pepper ", "sweet pepper"),
])
def test_clean_class_name(raw, clean):
  assert td.clean_class_name(raw) == clean


def test_cub_rule_on_sorted_class_index():
  splits = [td.class_split_by_index(i) for i in range(200)]
  assert [splits.count(s) for s in ("train", "val", "test")] == [100, 50, 50]
  assert splits[:8] == ["train", "val", "train", "test"] * 2
  flowers = [td.class_split_by_index(i) for i in range(102)]
  assert [flowers.count(s) for s in ("train", "val", "test")] == [51, 26, 25]


def test_cifar_fs_and_fc100_class_lists():
  classes = td.CIFAR100_CLASSES
  assert len(classes) == 100 and classes[:3] == ("apple", "aquarium_fish", "baby")
  assert classes[-1] == "worm" and len(td.CIFAR100_SUPERCLASSES) == 20
  fs = [td.cifar_fs_split(c) for c in classes]
  assert [fs.count(s) for s in ("train", "val", "test")] == [64, 16, 20]
  assert set(td.CIFAR_FS_VAL) | set(td.CIFAR_FS_TEST) <= set(classes)
  fc = [td.fc100_split(c) for c in classes]
  assert [fc.count(s) for s in ("train", "val", "test")] == [60, 20, 20]
  supers = {s: {td.CIFAR100_SUPERCLASS_OF[c] for c in classes if td.fc100_split(c) == s}
            for s in ("train", "val", "test")}
  assert [len(supers[s]) for s in ("train", "val", "test")] == [12, 4, 4]
  assert supers["test"] == {"aquatic_mammals", "insects", "medium_mammals", "people"}


# ---------------------------------------------------------------------------------------------
# Loaders on mock data


def _cifar_examples(per_class=2, size=32):
  """Each CIFAR-100 class `per_class` times, split over TFDS train/test; pixel value = label."""
  examples = {"train": [], "test": []}
  for label in range(100):
    for i in range(per_class):
      examples["train" if i % 2 == 0 else "test"].append(
          {"image": np.full((size, size, 3), label, np.uint8), "label": np.int64(label),
           "coarse_label": np.int64(0), "id": f"{label}_{i}"})
  return examples


def test_cifar_fs_split_names_text_and_normalisation():
  with _mock(_cifar_examples()):
    splits = td.tfds_splits("cifar_fs", data_dir="/nowhere")
  assert [splits[s].num_classes for s in ("train", "val", "test")] == [64, 16, 20]
  assert set(splits["test"].class_names) == set(td.CIFAR_FS_TEST)
  assert set(splits["val"].class_names) == set(td.CIFAR_FS_VAL)
  test = splits["test"]
  assert test.examples["image"].shape == (40, 32, 32, 3)
  assert test.examples["image"].dtype == np.float32
  assert np.bincount(test.labels).tolist() == [2] * 20
  names = list(test.class_texts["text"])
  assert "sweet pepper" in names and "pickup truck" in names
  # class names are class-level text only: per-example copies would leak query labels
  assert "text" not in test.examples
  # pixel value = original label; normalised with the CIFAR-100 mean and std
  label = td.CIFAR100_CLASSES.index(test.class_names[0])
  expected = (label / 255.0 - np.asarray(td.CIFAR100_MEAN)) / np.asarray(td.CIFAR100_STD)
  np.testing.assert_allclose(test.examples["image"][0, 0, 0], expected, rtol=1e-5)


def test_fc100_splits_by_superclass():
  with _mock(_cifar_examples()):
    splits = td.tfds_splits("fc100")
  assert [splits[s].num_classes for s in ("train", "val", "test")] == [60, 20, 20]
  for split, wanted in (("val", td.FC100_VAL), ("test", td.FC100_TEST)):
    supers = {td.CIFAR100_SUPERCLASS_OF[c] for c in splits[split].class_names}
    assert supers == set(wanted)


def test_cub_rule_names_and_resize():
  rng = np.random.default_rng(0)
  examples = {"train": [], "test": []}
  for label in range(200):
    for split in ("train", "test"):
      h, w = rng.integers(20, 60, size=2)
      examples[split].append({
          "image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "label": np.int64(label),
          "label_name": "black_footed_albatross" if label == 0 else f"bird_{label:03d}"})
  with _mock(examples):
    splits = td.tfds_splits("cub", image_size=16)
  assert [splits[s].num_classes for s in ("train", "val", "test")] == [100, 50, 50]
  assert splits["train"].class_names[:2] == ("black_footed_albatross", "bird_002")
  assert splits["val"].class_names[:2] == ("bird_001", "bird_005")
  assert splits["test"].class_names[:2] == ("bird_003", "bird_007")
  assert splits["train"].class_texts["text"][0] == "black footed albatross"
  assert splits["train"].examples["image"].shape == (200, 16, 16, 3)


def test_flowers102_on_random_mock_data():
  # TFDS's own random examples: random labels and image sizes; names from the builder.
  with tfds.testing.mock_data(num_examples=60, policy=CODE):
    splits = td.tfds_splits("flowers102", image_size=12)
    names = list(tfds.builder("oxford_flowers102").info.features["label"].names)
  assert names[0] == "pink primrose"
  for split, ds in splits.items():
    assert {td.class_split_by_index(names.index(n)) for n in ds.class_names} == {split}
    assert ds.examples["image"].shape[1:] == (12, 12, 3)
    assert list(ds.class_texts["text"]) == [td.clean_class_name(n) for n in ds.class_names]
  assert sum(ds.num_examples for ds in splits.values()) == 3 * 60  # 3 TFDS splits pooled


def _omniglot_examples(alphabets=10, chars=2, drawings=3, first=0):
  """Alphabets first..first+alphabets-1 of `chars` characters; label = global character id."""
  examples = []
  for a in range(first, first + alphabets):
    for c in range(chars):
      label = a * chars + c
      for d in range(drawings):
        image = np.full((105, 105, 3), 255, np.uint8)
        image[10 + c:20 + c, 10 + d:30] = 0  # some ink
        examples.append({"image": image, "label": np.int64(label),
                         "alphabet": np.int64(a), "alphabet_char_id": np.int64(c)})
  return examples


def test_tfds_omniglot_full_splits_rotations_and_ink():
  data = {"train": _omniglot_examples(10), "test": _omniglot_examples(2, first=10)}
  with _mock(data):
    splits = td.tfds_splits("tfds_omniglot")
  train, val, test = splits["train"], splits["val"], splits["test"]
  assert val.class_names == ("alphabet04/character01", "alphabet04/character02",
                             "alphabet09/character01", "alphabet09/character02")
  assert train.num_classes == 4 * 8 * 2 and test.num_classes == 2 * 2
  assert "alphabet00/character01/rot90" in train.class_names
  assert train.modalities == ("image",) and train.class_texts == {}
  image = test.examples["image"]
  assert image.shape == (12, 28, 28, 1) and 0.0 <= image.min() and image.max() <= 1.0
  assert image.mean() < 0.5 and image.max() > 0.5  # ink is 1 on 0
  with _mock(data):
    bilinear = td.tfds_splits("tfds_omniglot", resize="bilinear")["test"].examples["image"]
  assert bilinear.shape == image.shape and not np.allclose(bilinear, image, atol=1e-3)


def test_tfds_omniglot_small_deduplicates_and_uses_alphabets():
  small1 = _omniglot_examples(3)            # alphabets 0, 1, 2
  small2 = _omniglot_examples(3)[6:] + _omniglot_examples(2, first=3)  # 1, 2 again; 3, 4
  with _mock({"small1": small1, "small2": small2}):
    splits = td.tfds_omniglot_splits(tfds_splits="small", val_alphabets=("alphabet03",),
                                     test_alphabets=("alphabet04", "alphabet01"),
                                     rotations=False)
    with pytest.raises(UserError, match="Klingon.*valid alphabets"):
      td.tfds_omniglot_splits(tfds_splits="small", test_alphabets=("Klingon",))
  assert splits["train"].num_classes == 4  # alphabets 0 and 2, not doubled
  assert np.bincount(splits["train"].labels).tolist() == [3] * 4
  assert splits["val"].num_classes == 2 and splits["test"].num_classes == 4
  with _mock({"small1": small1, "small2": small2}):
    no_val = td.tfds_omniglot_splits(tfds_splits="small", val_alphabets=(),
                                     test_alphabets=("alphabet04",), rotations=False)
  assert list(no_val) == ["train", "test"] and no_val["train"].num_classes == 8


def test_per_example_text_from_class_names_is_refused():
  config = config_lib.apply_overrides(config_lib.base_config(), ["data.name=cifar_fs"])
  with _mock(_cifar_examples()), pytest.raises(UserError, match="give its label away"):
    prepare_splits(config)
  config_lib.apply_overrides(config, ["data.modalities=('image',)"])
  with _mock(_cifar_examples()):
    splits, info = prepare_splits(config)
  assert info == {} and list(splits["train"].examples) == ["image"]


def test_not_prepared_names_dataset_directory_and_command(tmp_path):
  with pytest.raises(UserError) as info:
    td.tfds_splits("cifar_fs", data_dir=str(tmp_path))
  message = str(info.value)
  assert "'cifar_fs'" in message and "'cifar100'" in message and str(tmp_path) in message
  assert "mmfsl data prepare cifar_fs" in message and "internet" in message


def test_dataset_without_text_is_refused_before_loading(tmp_path):
  for dataset in ("omniglot", "tfds_omniglot"):
    config = config_lib.apply_overrides(config_lib.base_config(),
                                        [f"data.name={dataset}", f"data.dir={tmp_path}/absent"])
    build.check_config(config)
    with pytest.raises(UserError, match=r"only the modalities \('image',\).*'text'.*"
                                        r"data\.modalities=\"\('image',\)\""):
      prepare_splits(config)
  code, _, err = _run_cli(["train", "--workdir", str(tmp_path / "run"), "--no-progress",
                           "data.name=omniglot"])
  assert code == 2 and "omniglot" in err and "('image',)" in err
  assert not (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------------------------------------
# mmfsl data prepare


class _Builder:
  def __init__(self, error=None, prepared=False):
    self.error, self.prepared, self.data_dir = error, prepared, "/data/tfds/cifar100/3.0.2"
    self.info = type("Info", (), {"file_format": "array_record"})()
    self.calls = []

  def is_prepared(self):
    return self.prepared

  def download_and_prepare(self, **kwargs):
    self.calls.append(kwargs)
    if self.error is not None:
      raise self.error


def test_data_prepare_offline_says_what_is_missing(monkeypatch):
  builder = _Builder(ConnectionError("Failed to establish a new connection: [Errno -3]"))
  monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: builder)
  code, _, err = _run_cli(["data", "prepare", "cifar_fs", "--data-dir", "/data/tfds"])
  assert code == 2
  assert "'cifar_fs'" in err and "'cifar100'" in err and "/data/tfds/cifar100/3.0.2" in err
  assert "internet connection" in err and err.count("\n") == 1
  assert builder.calls == [{"file_format": "array_record"}]
  builder.error = ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
  code, _, err = _run_cli(["data", "prepare", "cub"])
  assert code == 2 and "'tensorflow'" in err and "internet connection" in err


def test_data_prepare_success_and_already_prepared(monkeypatch):
  builder = _Builder()
  monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: builder)
  code, out, _ = _run_cli(["data", "prepare", "flowers102"])
  assert code == 0 and "prepared 'flowers102'" in out and len(builder.calls) == 1
  builder.prepared = True
  code, out, _ = _run_cli(["data", "prepare", "flowers102"])
  assert code == 0 and "already prepared" in out and len(builder.calls) == 1


def test_data_prepare_omniglot_reports_files(tmp_path, monkeypatch):
  (tmp_path / "one_shot_runs.zip").write_bytes(b"not a zip")
  code, out, err = _run_cli(["data", "prepare", "omniglot", "--data-dir", str(tmp_path)])
  assert code == 2
  assert "images_background_small1.zip: missing" in out
  assert "one_shot_runs.zip: not a readable zip file" in out
  assert str(tmp_path) in err and "internet connection" in err
  # each missing or unreadable file with the address it is published at, under its name here
  assert ("one_shot_runs.zip from https://github.com/brendenlake/omniglot/raw/master/python/"
          "one-shot-classification/all_runs.zip") in err
  assert "images_background_small2.zip from " in err
  monkeypatch.delenv("MMFSL_OMNIGLOT_DIR", raising=False)
  code, _, err = _run_cli(["data", "prepare", "omniglot"])
  assert code == 2 and "MMFSL_OMNIGLOT_DIR" in err


# ---------------------------------------------------------------------------------------------
# Augmentation and the pipeline measure


def _image_dataset(classes=4, per_class=6, size=8):
  rng = np.random.default_rng(0)
  images = rng.random((classes * per_class, size, size, 3)).astype(np.float32)
  return ClassDataset(examples={"image": images}, labels=np.repeat(np.arange(classes), per_class),
                      class_names=tuple(f"c{i}" for i in range(classes)))


def test_crop_and_flip_are_what_they_say():
  rng = np.random.default_rng(1)
  images = np.random.default_rng(0).random((64, 6, 6, 1)).astype(np.float32)
  cropped = augment.random_crop(images, rng, padding=2)
  assert cropped.shape == images.shape
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(len(images)):  # each crop is a 6x6 window of the padded image
    windows = np.lib.stride_tricks.sliding_window_view(padded[i, ..., 0], (6, 6))
    assert (np.abs(windows - cropped[i, ..., 0]).sum((-1, -2)) == 0).any()
  flipped = augment.random_flip(images, rng)
  same = [np.array_equal(f, x) for f, x in zip(flipped, images)]
  mirrored = [np.array_equal(f, x[:, ::-1]) for f, x in zip(flipped, images)]
  assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54


def test_augmented_sampler_is_deterministic_and_changes_images():
  base = EpisodeSampler(_image_dataset(), n_way=3, k_shot=2, q_query=2, batch_size=2, seed=5)
  sampler = augment.AugmentedSampler(base, augment.crop_flip(padding=2))
  a, b, again = sampler.sample(3), sampler.sample(4), sampler.sample(3)
  plain = base.sample(3)
  for part in ("support", "query"):
    np.testing.assert_array_equal(a[part]["image"], again[part]["image"])
    np.testing.assert_array_equal(a[part]["label"], plain[part]["label"])
    assert a[part]["image"].shape == plain[part]["image"].shape
    assert a[part]["image"].dtype == np.float32
    assert not np.array_equal(a[part]["image"], plain[part]["image"])
  assert not np.array_equal(a["support"]["image"], b["support"]["image"])
  other_seed = augment.AugmentedSampler(
      EpisodeSampler(_image_dataset(), n_way=3, k_shot=2, q_query=2, batch_size=2, seed=6),
      augment.crop_flip(padding=2))
  assert not np.array_equal(other_seed.sample(3)["support"]["image"], a["support"]["image"])
  assert sampler.n_way == 3 and sampler.batch_size == 2 and sampler.dataset is base.dataset
  assert next(iter(sampler))["support"]["image"].shape == (2, 6, 8, 8, 3)


def test_augment_choice_per_dataset():
  def resolved(dataset, choice="auto"):
    return train_augmentation(config_lib.apply_overrides(
        config_lib.base_config(), [f"data.name={dataset}", f"data.augment={choice}"]))
  assert [resolved(d) for d in ("cifar_fs", "fc100", "cub", "flowers102")] == ["crop_flip"] * 4
  assert [resolved(d) for d in ("shapes", "omniglot", "tfds_omniglot")] == ["none"] * 3
  assert resolved("cub", "none") == "none" and resolved("shapes", "crop_flip") == "crop_flip"
  config = config_lib.apply_overrides(config_lib.base_config(), ["data.name=cub"])
  base = EpisodeSampler(_image_dataset(size=16), n_way=2, k_shot=1, q_query=1)
  assert isinstance(augment.augmented(base, train_augmentation(config)), augment.AugmentedSampler)
  # the meta-train sampler a run builds is wrapped; the samplers of other roles never are
  split = _image_dataset(size=16)
  train = build.task_sampler(config, split, role="train", n_way=2, k_shot=1, q_query=1)
  assert isinstance(train, augment.AugmentedSampler) and train.n_way == 2
  for role in ("population", "val", "test"):
    other = build.task_sampler(config, split, role=role, n_way=2, k_shot=1, q_query=1)
    assert isinstance(other, EpisodeSampler)
  config.data.augment = "none"
  assert augment.augmented(base, train_augmentation(config)) is base
  assert isinstance(build.task_sampler(config, split, role="train", n_way=2, k_shot=1,
                                       q_query=1), EpisodeSampler)
  with pytest.raises(UserError, match="augmentation 'blur' is not valid; choose one of none, "
                                      "crop_flip"):
    augment.augmented(base, "blur")


def test_data_throughput_command():
  code, out, err = _run_cli(["data", "throughput", "--config", "tiny", "--batches", "3",
                             "data.augment=crop_flip"])
  assert code == 0, err
  result = json.loads(out.strip().splitlines()[-1])
  assert result["augment"] == "crop_flip" and result["batches"] == 3
  assert result["tasks_per_second"] > 0 and "tasks/s" in out
  assert result["tasks_per_second"] == pytest.approx(2 * result["batches_per_second"])
