"""Omniglot loaders on the real files (skipped when the data directory is not found)."""
from __future__ import annotations

import io
import pathlib
import zipfile

import numpy as np
import pytest
from PIL import Image

from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.evaluators.omniglot_runs import one_shot_runs_accuracy
from mmfsl_jax.data.sources import omniglot
from mmfsl_jax.errors import ConfigError, UserError
from omniglot_data import DATA_DIR, needs_data

SIZE = 28


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("omniglot_cache")


@pytest.fixture(scope="module")
def characters(cache_dir):
  return omniglot.load_omniglot_characters(DATA_DIR, SIZE, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def splits(cache_dir, characters):
  return omniglot.omniglot_splits(DATA_DIR, image_size=SIZE, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def runs(cache_dir):
  return omniglot.load_one_shot_runs(DATA_DIR, SIZE, cache_dir=cache_dir)


@needs_data
def test_characters_shapes_values_and_dedup(characters):
  assert len(characters) == 8
  assert sum(len(chars) for chars in characters.values()) == 242
  assert len(characters["Greek"]) == 24 and len(characters["Latin"]) == 26  # not doubled
  images = np.stack([imgs for chars in characters.values() for imgs in chars.values()])
  assert images.shape == (242, 20, SIZE, SIZE, 1) and images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0
  assert images.mean() < 0.5  # ink is 1 on a 0 background
  assert images.max(axis=(2, 3, 4)).min() > 0.5  # every drawing has some ink


@needs_data
def test_cache_is_reused_and_rebuilt_when_corrupt(characters, cache_dir):
  files = list(pathlib.Path(cache_dir).glob("omniglot_characters_*.npz"))
  assert len(files) == 1
  again = omniglot.load_omniglot_characters(DATA_DIR, SIZE, cache_dir=cache_dir)
  np.testing.assert_array_equal(again["Korean"]["character01"],
                                characters["Korean"]["character01"])
  files[0].write_bytes(b"not an npz")
  rebuilt = omniglot.load_omniglot_characters(DATA_DIR, SIZE, cache_dir=cache_dir)
  np.testing.assert_array_equal(rebuilt["Tagalog"]["character17"],
                                characters["Tagalog"]["character17"])


@needs_data
def test_splits_counts_rotations_and_disjoint_alphabets(splits, characters):
  alphabets = {name: {c.split("/")[0] for c in ds.class_names} for name, ds in splits.items()}
  assert alphabets["val"] == {"Early_Aramaic"}
  assert alphabets["test"] == {"Korean", "Tagalog"}
  assert not (alphabets["train"] & alphabets["val"] or alphabets["train"] & alphabets["test"])
  assert set().union(*alphabets.values()) == set(characters)
  assert (splits["train"].num_classes, splits["val"].num_classes,
          splits["test"].num_classes) == (4 * 163, 22, 57)
  for ds in splits.values():
    assert ds.examples["image"].shape == (20 * ds.num_classes, SIZE, SIZE, 1)
    assert np.bincount(ds.labels).tolist() == [20] * ds.num_classes
    assert ds.class_texts == {} and len(set(ds.class_names)) == ds.num_classes
  train = splits["train"]
  assert sum(n.endswith("/rot90") for n in train.class_names) == 163
  assert not any("/rot" in n for n in splits["val"].class_names + splits["test"].class_names)
  # A rotated class holds its character's drawings turned by 90 degrees.
  label = train.class_names.index("Greek/character01/rot90")
  rotated = train.examples["image"][train.labels == label]
  np.testing.assert_array_equal(rotated, np.rot90(characters["Greek"]["character01"],
                                                  axes=(1, 2)))


def test_alphabet_splits_hold_out_by_name_and_leave_out_empty_splits():
  valid = ["A", "B", "C", "D"]
  assert omniglot.alphabet_splits(valid, ("C",), ("A", "D")) == {
      "train": ["B"], "val": ["C"], "test": ["A", "D"]}
  assert omniglot.alphabet_splits(valid, (), ("B",)) == {"train": ["A", "C", "D"], "test": ["B"]}
  assert omniglot.alphabet_splits(valid, (), ()) == {"train": valid}
  with pytest.raises(ValueError, match=r"\['E'\]; valid alphabets"):
    omniglot.alphabet_splits(valid, ("E",), ())
  with pytest.raises(ValueError, match=r"\['B'\] are in both"):
    omniglot.alphabet_splits(valid, ("B",), ("B",))
  with pytest.raises(ValueError, match="no alphabet is left to train on"):
    omniglot.alphabet_splits(valid, ("A", "B"), ("C", "D"))


@needs_data
def test_splits_without_rotations_and_bad_alphabets(cache_dir):
  plain = omniglot.omniglot_splits(DATA_DIR, rotations=False, cache_dir=cache_dir,
                                   val_alphabets=("Latin",), test_alphabets=("Greek",))
  assert (plain["train"].num_classes, plain["val"].num_classes,
          plain["test"].num_classes) == (242 - 50, 26, 24)
  with pytest.raises(ValueError, match="Klingon.*valid alphabets.*Balinese"):
    omniglot.omniglot_splits(DATA_DIR, test_alphabets=("Klingon",), cache_dir=cache_dir)
  with pytest.raises(ValueError, match="Korean"):
    omniglot.omniglot_splits(DATA_DIR, val_alphabets=("Korean",), cache_dir=cache_dir)
  # No held-out alphabets: every character trains (as the PyTorch peer's protocol).
  everything = omniglot.omniglot_splits(DATA_DIR, rotations=False, cache_dir=cache_dir,
                                        val_alphabets=(), test_alphabets=())
  assert list(everything) == ["train"] and everything["train"].num_classes == 242


@needs_data
def test_one_shot_runs(runs):
  assert [run["name"] for run in runs] == [f"run{r:02d}" for r in range(1, 21)]
  for run in runs:
    assert run["train"].shape == run["test"].shape == (20, SIZE, SIZE, 1)
    assert run["train"].dtype == run["test"].dtype == np.float32
    assert 0.0 <= run["test"].min() and run["test"].max() <= 1.0
    assert run["test"].mean() < 0.5
    assert np.issubdtype(run["answers"].dtype, np.integer)
    assert sorted(run["answers"].tolist()) == list(range(20))
  assert runs[0]["answers"][:3].tolist() == [7, 8, 1]  # run01: item01 -> class08, ...


@needs_data
def test_one_shot_runs_accuracy(runs):
  oracle = {id(run["test"]): run["answers"] for run in runs}
  result = one_shot_runs_accuracy(lambda train, test: oracle[id(test)], runs)
  assert result["mean"] == 1.0 and len(result["per_run"]) == 20

  def half_right(train, test):
    answers = oracle[id(test)].copy()
    answers[10:] = (answers[10:] + 1) % 20
    return answers

  result = one_shot_runs_accuracy(half_right, runs)
  assert result["mean"] == 0.5 and set(result["per_run"].values()) == {0.5}
  # Raw-pixel nearest neighbour is far above chance (1/20); Lake et al. report ~22%.
  def nearest(train, test):
    distances = ((test.reshape(20, 1, -1) - train.reshape(1, 20, -1)) ** 2).sum(-1)
    return distances.argmin(1)

  assert one_shot_runs_accuracy(nearest, runs)["mean"] > 0.1


def test_missing_dir_names_env_var(tmp_path, monkeypatch):
  monkeypatch.delenv(omniglot.OMNIGLOT_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match=omniglot.OMNIGLOT_ENV):
    omniglot.resolve_omniglot_dir(None)
  with pytest.raises(FileNotFoundError, match=f"{omniglot.OMNIGLOT_ENV}"):
    omniglot.load_omniglot_characters(tmp_path / "absent", cache_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match="one_shot_runs.zip.*" + omniglot.OMNIGLOT_ENV):
    omniglot.resolve_omniglot_dir(tmp_path)
  monkeypatch.setenv(omniglot.OMNIGLOT_ENV, str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="absent"):
    omniglot.load_one_shot_runs(cache_dir=tmp_path)


def test_corrupt_zip_names_the_file(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  for name in omniglot.OMNIGLOT_FILES:
    (data / name).write_bytes(b"garbage, not a zip" * 10)
  with pytest.raises(ValueError, match="images_background_small1.zip"):
    omniglot.load_omniglot_characters(data, cache_dir=tmp_path / "cache")
  with pytest.raises(ValueError, match="one_shot_runs.zip"):
    omniglot.load_one_shot_runs(data, cache_dir=tmp_path / "cache")


def test_corrupt_image_names_zip_and_member(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  good = io.BytesIO()
  Image.new("1", (105, 105), 1).save(good, format="PNG")
  for name in omniglot.BACKGROUND_ZIPS:
    with zipfile.ZipFile(data / name, "w") as zf:
      folder = name[:-len(".zip")]
      zf.writestr(f"{folder}/Greek/character01/0001_01.png", good.getvalue())
      if name.endswith("small2.zip"):
        zf.writestr(f"{folder}/Tagalog/character01/0002_01.png", b"\x89PNG broken")
  with pytest.raises(ValueError) as info:
    omniglot.load_omniglot_characters(data, cache_dir=tmp_path / "cache")
  assert "images_background_small2.zip" in str(info.value)
  assert "Tagalog/character01/0002_01.png" in str(info.value)


def test_ink_image_inverts_averages_channels_and_resizes():
  paper = np.ones((105, 105), np.float32)
  paper[:, :42] = 0.0  # ink on the left 40%
  ink = omniglot.ink_image(paper, SIZE)
  assert ink.shape == (SIZE, SIZE, 1) and ink.dtype == np.float32
  assert ink[:, :10].min() == 1.0 and ink[:, -10:].max() == 0.0
  assert ink.mean() == pytest.approx(0.4, abs=0.01)  # the BOX filter keeps the ink's area
  np.testing.assert_allclose(omniglot.ink_image(np.stack([paper] * 3, -1), SIZE), ink)


def test_ink_image_bilinear_filter_is_pillows_and_an_unknown_one_is_refused():
  paper = np.random.default_rng(0).integers(0, 2, size=(105, 105)).astype(np.float32)
  box, bilinear = (omniglot.ink_image(paper, SIZE, f) for f in ("box", "bilinear"))
  expected = Image.fromarray(1.0 - paper).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
  np.testing.assert_allclose(bilinear[..., 0], np.clip(np.asarray(expected), 0, 1), atol=1e-6)
  assert not np.allclose(box, bilinear, atol=1e-3)
  with pytest.raises(UserError, match="unknown resize filter 'lanczos'; choose one of box, "
                                      "bilinear"):
    omniglot.ink_image(paper, SIZE, "lanczos")


@needs_data
def test_each_resize_filter_has_its_own_cache_and_the_runs_use_it(tmp_path, runs):
  bilinear = omniglot.load_one_shot_runs(DATA_DIR, SIZE, resize="bilinear", cache_dir=tmp_path)
  box = omniglot.load_one_shot_runs(DATA_DIR, SIZE, cache_dir=tmp_path)
  names = sorted(f.name for f in tmp_path.glob("omniglot_runs_*.npz"))
  assert len(names) == 2 and "_bilinear_" in names[0] and "_box_" in names[1]
  np.testing.assert_array_equal(box[3]["test"], runs[3]["test"])
  assert not np.allclose(bilinear[3]["test"], box[3]["test"], atol=1e-3)
  with zipfile.ZipFile(pathlib.Path(DATA_DIR) / "one_shot_runs.zip") as zf:
    with Image.open(io.BytesIO(zf.read("run04/test/item01.png"))) as image:
      paper = np.asarray(image.convert("L"), np.float32) / 255.0
  np.testing.assert_allclose(bilinear[3]["test"][0], omniglot.ink_image(paper, SIZE, "bilinear"))


def test_check_omniglot_files_reports_each_file(tmp_path, monkeypatch):
  (tmp_path / "images_background_small2.zip").write_bytes(b"not a zip")
  with zipfile.ZipFile(tmp_path / "one_shot_runs.zip", "w") as zf:
    zf.writestr("run01/class_labels.txt", "")
  directory, status = omniglot.check_omniglot_files(tmp_path)
  assert directory == tmp_path
  assert status["images_background_small1.zip"] == "missing"
  assert status["images_background_small2.zip"] == "not a readable zip file"
  assert status["one_shot_runs.zip"].startswith("ok (")
  monkeypatch.setenv(omniglot.OMNIGLOT_ENV, str(tmp_path))
  assert omniglot.check_omniglot_files("")[0] == tmp_path  # "" = not given: the env var
  monkeypatch.delenv(omniglot.OMNIGLOT_ENV)
  with pytest.raises(FileNotFoundError, match=f"{omniglot.OMNIGLOT_ENV}.*one_shot_runs.zip"):
    omniglot.check_omniglot_files(None)


@needs_data
def test_check_omniglot_files_on_the_real_directory():
  _, status = omniglot.check_omniglot_files(DATA_DIR)
  assert list(status) == list(omniglot.OMNIGLOT_FILES)
  assert all(s.startswith("ok (") for s in status.values())


def test_config_offers_exactly_the_implemented_filters():
  # build.CHOICES spells this choice out rather than reading the loader's: it must stay the
  # loader's own list, and a filter outside it is refused naming the dotted key.
  assert build.CHOICES["data.omniglot.resize"] == tuple(omniglot.RESIZE_FILTERS)
  for resize in omniglot.RESIZE_FILTERS:
    build.check_config(config_lib.apply_overrides(
        config_lib.base_config(), [f"data.omniglot.resize={resize}"]))
  config = config_lib.apply_overrides(config_lib.base_config(),
                                      ["data.omniglot.resize=lanczos"])
  with pytest.raises(ConfigError, match="data.omniglot.resize='lanczos' is not valid; choose "
                                        "one of box, bilinear"):
    build.check_config(config)
