"""Manifests with modalities of the user's own naming: two image columns, a named text column,
vector columns of numbers and of .npy files, read, trained on and predicted with.

The vector "vector_labs" carries each class's signature (a fixed random vector per class plus
a little noise); "vector_noise" carries none. A ProtoNet on the signature alone must classify
well above chance, and on the noise alone near chance: the vectors reach the model, in row
order, with their labels.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from mmfsl_jax.cli import main
from mmfsl_jax.data.sources import files
from mmfsl_jax.errors import ConfigError, UserError
from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
from mmfsl_jax.run.predict import embed, predict
from mmfsl_jax.run.train import train_and_evaluate

CLASSES = 8
PER_CLASS = 6
FEATURES = 5


@pytest.fixture(scope="module", autouse=True)
def _image_cache(tmp_path_factory):
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield


def _rows(root: pathlib.Path) -> list[dict]:
  """A manifest's rows: photo and side (images), note (text), labs (numbers), noise (.npy)."""
  rng = np.random.default_rng(0)
  signatures = rng.normal(size=(CLASSES, FEATURES)) * 3
  (root / "img").mkdir(parents=True, exist_ok=True)
  (root / "npy").mkdir(exist_ok=True)
  rows = []
  for c in range(CLASSES):
    for i in range(PER_CLASS):
      name = f"{c}_{i}"
      for kind, shade in (("photo", 30 * c), ("side", 255 - 30 * c)):
        image = np.full((8, 8, 3), shade, np.uint8)
        image[i, i] = 255 - shade
        Image.fromarray(image).save(root / "img" / f"{kind}_{name}.png")
      np.save(root / "npy" / f"{name}.npy", rng.normal(size=FEATURES))
      labs = signatures[c] + 0.1 * rng.normal(size=FEATURES)
      rows.append({"photo": f"img/photo_{name}.png", "side": f"img/side_{name}.png",
                   "note": f"note {i} of class {c}", "labs": " ".join(f"{v:.6f}" for v in labs),
                   "noise": f"npy/{name}.npy", "label": f"class{c}",
                   "split": "train" if c < 5 else "test"})
  return rows


def _write_csv(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
  with path.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
  root = tmp_path_factory.mktemp("own_modalities")
  rows = _rows(root)
  return _write_csv(root / "manifest.csv", rows), rows


COLUMNS = ("image=photo", "image_side=side", "text_note=note", "vector_labs=labs",
           "vector_noise=noise")


def _config(manifest_path, modalities, **overrides):
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, [
      "data.name=files", f"data.files.manifest={manifest_path}", "data.files.split_column=split",
      f"data.modalities={tuple(modalities)!r}",
      f"data.files.columns={tuple(c for c in COLUMNS if c.split('=')[0] in modalities)!r}",
      "data.image_size=8", "task.n_way=3", "task.q_query=2", "run.val_episodes=0",
      "eval.q_query=2", *[f"{k}={v}" for k, v in overrides.items()]])
  return config


def test_every_modality_is_read_from_its_column(manifest):
  path, rows = manifest
  modalities = ("image", "image_side", "text_note", "vector_labs", "vector_noise")
  columns = {m: c for m, c in (item.split("=") for item in COLUMNS) if m != "image"}
  splits = files.files_splits(path, image_column="photo", split_column="split",
                              image_size=8, modalities=modalities, columns=columns)
  train = splits["train"]
  assert set(train.examples) == set(modalities) and "val" not in splits
  assert train.examples["image"].shape == train.examples["image_side"].shape == (30, 8, 8, 3)
  np.testing.assert_allclose(train.examples["image"][7, 0, 0], 30 / 255, atol=1e-6)
  np.testing.assert_allclose(train.examples["image_side"][7, 0, 0], 225 / 255, atol=1e-6)
  assert train.examples["text_note"][7] == rows[7]["note"]
  np.testing.assert_allclose(train.examples["vector_labs"][7],
                             [float(v) for v in rows[7]["labs"].split()], rtol=1e-6)
  np.testing.assert_array_equal(train.examples["vector_noise"][7],
                                np.load(path.parent / rows[7]["noise"]).astype(np.float32))
  assert train.examples["vector_labs"].dtype == np.float32
  with pytest.raises(UserError, match=r"no column 'vector_labs' \(the feature vectors: pass "
                                      r"columns=\('vector_labs=<column>',\)"):
    files.files_splits(path, split_column="split", image_column="photo", image_size=8,
                       modalities=("image", "vector_labs"))
  bad = [dict(r) for r in rows]
  bad[3]["labs"] = "1 2"
  with pytest.raises(UserError, match=r"row 4 \(line 5\).*'vector_labs' has 2 values, but the "
                                      r"first row's has 5"):
    files.files_splits(_write_csv(path.parent / "bad.csv", bad), split_column="split",
                       image_size=8, modalities=("vector_labs",), columns={"vector_labs": "labs"})
  json_rows = [{"labs": [float(v) for v in r["labs"].split()], "label": r["label"]} for r in rows]
  json_path = path.parent / "vectors.jsonl"
  json_path.write_text("\n".join(json.dumps(r) for r in json_rows))
  from_json = files.files_dataset(json_path, image_size=8, modalities=("vector_labs",),
                                  columns={"vector_labs": "labs"})
  np.testing.assert_allclose(from_json.examples["vector_labs"][:30],
                             train.examples["vector_labs"], rtol=1e-6)


def test_config_checks_of_modality_names_and_columns(manifest):
  path, _ = manifest
  for modalities, columns, message in (
      (("audio",), (), "has no kind"),
      (("image_side",), ("vector_x=x",), "data.files.columns names"),
      (("image",), ("image",), "write modality=column")):
    config = _config(path, ("image",))
    config.data.modalities = modalities
    config.data.files.columns = columns
    with pytest.raises(ConfigError, match=message):
      build.check_config(config)
  config = config_lib.load_config("tiny")
  config.data.modalities = ("image_side",)
  with pytest.raises(ConfigError, match="data.name=files"):
    build.check_config(config)


def _train(config, workdir):
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    return train_and_evaluate(config, workdir, progress=False)


@pytest.mark.slow
def test_vectors_carry_their_class_signal(manifest, tmp_path, compilation_cache):
  path, _ = manifest
  scores = {}
  for modality in ("vector_labs", "vector_noise"):
    _train(_config(path, (modality,), **{"run.num_steps": 4, "run.checkpoint_every": 4}),
           tmp_path / modality)
    result = evaluate_workdir(tmp_path / modality, episodes=20, write=False)
    scores[modality] = result["accuracy"]["mean"]
  assert scores["vector_labs"] > 0.9      # 3-way: chance 1/3
  assert scores["vector_noise"] < 0.6


@pytest.mark.slow
def test_five_modalities_train_predict_and_embed(manifest, tmp_path, compilation_cache):
  path, rows = manifest
  modalities = ("image", "image_side", "text_note", "vector_labs", "vector_noise")
  workdir = tmp_path / "run"
  record = _train(_config(path, modalities, **{"run.num_steps": 4,
                                               "run.checkpoint_every": 4}), workdir)
  assert np.isfinite(record["loss"])
  test_rows = [r for r in rows if r["split"] == "test"]
  support = [r for r in test_rows if int(r["label"][5:]) < 8 and r["note"][5] in "01"]
  support = [r for r in support if r["label"] in ("class5", "class6", "class7")]
  queries = [dict(r) for r in test_rows if r not in support]
  for i, query in enumerate(queries):   # each query lacks one modality, in turn
    query[("photo", "side", "note", "labs", "noise")[i % 5]] = ""
  s = _write_csv(path.parent / "support.csv", support)
  q = _write_csv(path.parent / "queries.csv", queries)
  p = predict(workdir, s, q)
  assert p.classes == ("class5", "class6", "class7")
  assert len(set(p.modalities)) == 5 and all(len(m) == 4 for m in p.modalities)
  correct, labelled = p.accuracy()
  assert labelled == len(queries) and correct / labelled > 0.6  # the labs signature
  arrays = embed(workdir, q)
  assert arrays["fused"].shape == (len(queries), 16)
  for m in modalities:
    assert np.isnan(arrays[f"aligned_{m}"]).any(axis=1).sum() == (~arrays[f"present_{m}"]).sum()
  # files whose columns have other names: --column says which is which (in both)
  rename = lambda table: [{("lab_values" if k == "labs" else k): v for k, v in r.items()}
                          for r in table]
  s2 = _write_csv(path.parent / "support_renamed.csv", rename(support))
  q2 = _write_csv(path.parent / "queries_renamed.csv", rename(queries))
  with contextlib.redirect_stdout(io.StringIO()):
    assert main(["predict", "--workdir", str(workdir), "--support", str(s2), "--query", str(q2),
                 "--column", "vector_labs=lab_values", "--output",
                 str(tmp_path / "p.csv")]) == 0
  with (tmp_path / "p.csv").open() as f:
    assert [r["predicted"] for r in csv.DictReader(f)] == list(p.predicted_labels)
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    assert main(["embed", "--workdir", str(workdir), "--input", str(q2), "--column",
                 "vector_labs"]) == 2
  assert "MODALITY=COLUMN" in err.getvalue()
