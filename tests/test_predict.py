"""Predictions and embeddings of your own examples (`mmfsl predict`, `mmfsl embed`).

A module-scoped tiny shapes run (protonet, 20 steps) classifies queries written from five of
the shapes test classes (PNG images and captions) against two supports per class; some
queries lack their image or their caption. A MAML run of 4 steps checks that the support is
adapted on.
"""
from __future__ import annotations

import contextlib
import csv
import io
import pathlib

import numpy as np
import pytest
from PIL import Image

from mmfsl_jax.cli import main
from mmfsl_jax.errors import UserError
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run import data as run_data
from mmfsl_jax.run.predict import embed, predict
from mmfsl_jax.run.train import train_and_evaluate

CLASSES = 5
SHOTS = 2


def _config(**learner):
  config = config_lib.load_config("tiny")
  config.run.update(num_steps=20, val_episodes=0, checkpoint_every=20)
  config.learner.update(learner)
  return config


@pytest.fixture(scope="module", autouse=True)
def _image_cache(tmp_path_factory):
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield


def _write(path: pathlib.Path, rows, header=("image", "text", "label")) -> pathlib.Path:
  with path.open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """(support rows, query rows, directory): rows are (image, text, label) of the first
  CLASSES shapes test classes, SHOTS per class in the support, the rest queries, of which
  every third lacks its image and every third (another) its caption."""
  root = tmp_path_factory.mktemp("predict_files")
  test = run_data.build_splits(_config())["test"]
  (root / "img").mkdir()
  support, queries, seen = [], [], {}
  for i, (image, text, label) in enumerate(zip(test.examples["image"], test.examples["text"],
                                               test.labels)):
    if label >= CLASSES:
      continue
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
    row = [f"img/{i}.png", text, test.class_names[label]]
    seen[label] = seen.get(label, 0) + 1
    if seen[label] <= SHOTS:
      support.append(row)
    else:
      gap = len(queries) % 3
      queries.append([row[0] if gap != 1 else "", row[1] if gap != 2 else "", row[2]])
  return support, queries, root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, compilation_cache):
  path = tmp_path_factory.mktemp("predict_run") / "run"
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    train_and_evaluate(_config(), path, progress=False)
  return path


@pytest.mark.slow
def test_predictions_follow_rows_and_classes_not_file_order(workdir, files):
  support, queries, root = files
  p = predict(workdir, _write(root / "s.csv", support), _write(root / "q.csv", queries))
  assert p.probabilities.shape == (len(queries), CLASSES)
  np.testing.assert_allclose(p.probabilities.sum(-1), 1.0, rtol=1e-5)
  assert p.classes == tuple(sorted({row[2] for row in support}))
  assert p.labels == tuple(row[2] for row in queries)
  by_gap = {0: ("image", "text"), 1: ("text",), 2: ("image",)}
  assert list(p.modalities) == [by_gap[i % 3] for i in range(len(queries))]
  correct, labelled = p.accuracy()
  assert labelled == len(queries)
  assert correct / labelled > 0.3  # chance 0.2; measured 0.44 at 20 steps

  # Batch statistics and prototypes do not depend on the order of the rows: shuffled files
  # give each query the same probabilities; renamed classes carry their columns along.
  order = np.random.default_rng(0).permutation(len(queries))
  renamed = {name: f"class {j}" for j, name in enumerate(reversed(p.classes))}
  shuffled = predict(workdir,
                     _write(root / "s2.csv", [[a, b, renamed[c]] for a, b, c in support[::-1]]),
                     _write(root / "q2.csv", [queries[i] for i in order]))
  assert shuffled.classes == tuple(sorted(renamed.values()))
  columns = [shuffled.classes.index(renamed[name]) for name in p.classes]
  np.testing.assert_allclose(shuffled.probabilities[:, columns], p.probabilities[order],
                             rtol=2e-4, atol=1e-6)


@pytest.mark.slow
def test_a_query_is_classified_with_its_own_modalities(workdir, files):
  """The support's captions reach the queries that have a caption, and only those."""
  support, queries, root = files
  p = predict(workdir, _write(root / "s.csv", support), _write(root / "q.csv", queries))
  recaptioned = [[a, "a grey thing that is silent", c] for a, _, c in support]
  other = predict(workdir, _write(root / "s3.csv", recaptioned), root / "q.csv")
  image_only = np.asarray([m == ("image",) for m in p.modalities])
  np.testing.assert_allclose(other.probabilities[image_only], p.probabilities[image_only],
                             rtol=1e-5, atol=1e-7)
  assert np.abs(other.probabilities[~image_only] - p.probabilities[~image_only]).max() > 1e-3


@pytest.mark.slow
def test_cli_predict_and_embed_round_trip(workdir, files, tmp_path):
  support, queries, root = files
  s, q = _write(root / "s.csv", support), _write(root / "q.csv", queries)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert main(["predict", "--workdir", str(workdir), "--support", str(s), "--query", str(q),
                 "--output", str(tmp_path / "preds.csv")]) == 0
    assert main(["embed", "--workdir", str(workdir), "--input", str(q), "--output",
                 str(tmp_path / "emb.npz")]) == 0
  assert "accuracy on the" in out.getvalue() and "wrote" in out.getvalue()
  with (tmp_path / "preds.csv").open() as f:
    written = list(csv.DictReader(f))
  p = predict(workdir, s, q)
  assert len(written) == len(queries)
  assert [r["predicted"] for r in written] == list(p.predicted_labels)
  assert [r["image"] for r in written] == [row[0] for row in queries]
  assert [r["modalities"] for r in written] == ["+".join(m) for m in p.modalities]
  for j, name in enumerate(p.classes):
    np.testing.assert_allclose([float(r[f"p_{name}"]) for r in written],
                               p.probabilities[:, j], atol=1e-6)

  saved = np.load(tmp_path / "emb.npz")
  arrays = embed(workdir, q)
  assert set(saved.files) == set(arrays) == {"fused", "aligned_image", "aligned_text",
                                             "present_image", "present_text", "label"}
  for key in arrays:
    np.testing.assert_array_equal(saved[key], arrays[key])
  assert list(arrays["label"]) == [row[2] for row in queries]
  has_image = np.asarray([bool(row[0]) for row in queries])
  np.testing.assert_array_equal(arrays["present_image"], has_image)
  assert np.isnan(arrays["aligned_image"][~has_image]).all()
  assert np.isfinite(arrays["aligned_image"][has_image]).all()
  # the weighted-average fuser with one modality present returns that modality's vector
  only_text = ~has_image
  np.testing.assert_allclose(arrays["fused"][only_text], arrays["aligned_text"][only_text],
                             rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_embedding_with_population_norm_is_per_row(workdir, files):
  """With the population's batch-norm moments a row's embedding does not depend on the
  other rows of its batch; with the batch's own statistics (transductive) it does."""
  _, queries, root = files
  q = _write(root / "q.csv", queries)
  one = _write(root / "one.csv", queries[:1])
  alone = embed(workdir, one, batch_norm="population", population_batches=2)
  together = embed(workdir, q, batch_norm="population", population_batches=2)
  np.testing.assert_allclose(alone["fused"][0], together["fused"][0], rtol=1e-4, atol=1e-6)
  transductive = embed(workdir, q)
  assert np.abs(transductive["fused"][0] - together["fused"][0]).max() > 1e-4


@pytest.mark.slow
def test_maml_adapts_on_the_support(tmp_path, files, compilation_cache):
  """A MAML head starts at zero, so without adaptation every class is equally probable:
  probabilities that are not uniform come from the inner steps on the support."""
  support, queries, root = files
  workdir = tmp_path / "maml"
  config = _config(name="maml")
  config.run.update(num_steps=4, checkpoint_every=4)
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    train_and_evaluate(config, workdir, progress=False)
  s, q = _write(root / "s.csv", support), _write(root / "q.csv", queries)
  p = predict(workdir, s, q)
  assert np.abs(p.probabilities - 1 / CLASSES).max() > 1e-3
  more = predict(workdir, s, q, inner_steps=3)
  assert np.abs(more.probabilities - p.probabilities).max() > 1e-4
  three = _write(root / "s_3way.csv", [r for r in support if r[2] in p.classes[:3]])
  with pytest.raises(UserError, match="cannot be evaluated 3-way"):
    predict(workdir, three, q)


@pytest.mark.slow
def test_input_errors(workdir, files, tmp_path):
  support, queries, root = files
  s, q = _write(root / "s.csv", support), _write(root / "q.csv", queries)
  one_class = _write(root / "one.csv", [r for r in support if r[2] == support[0][2]])
  with pytest.raises(UserError, match="at least 2"):
    predict(workdir, one_class, q)
  empty_row = _write(root / "empty.csv", [queries[0], ["", "", "x"]])
  with pytest.raises(UserError, match=r"row 2 .*none of the modalities"):
    predict(workdir, s, empty_row)
  no_columns = _write(tmp_path / "cols.csv", [["a"]], header=("photo",))
  with pytest.raises(UserError, match="none of the columns"):
    embed(workdir, no_columns)
  with pytest.raises(UserError, match="does not exist"):
    predict(workdir, s, tmp_path / "missing.csv")
  no_caption = _write(root / "s_nocap.csv", [[a, "", c] for a, _, c in support])
  with pytest.raises(UserError, match="empty"):
    predict(workdir, no_caption, q)
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    assert main(["predict", "--workdir", str(tmp_path / "none"), "--support", str(s),
                 "--query", str(q)]) == 2
    assert main(["embed", "--workdir", str(workdir), "--input", str(q), "--output",
                 "e.csv"]) == 2
  assert "not a training workdir" in err.getvalue() and ".npz" in err.getvalue()


@pytest.mark.slow
def test_a_directory_of_query_images(workdir, files):
  """Every image under a directory is a query; its class directory is its label, a caption
  beside it its text."""
  support, queries, root = files
  directory = root / "query_dir"
  with_images = [row for row in queries if row[0]][:6]
  for i, (image, text, label) in enumerate(with_images):
    (directory / label).mkdir(parents=True, exist_ok=True)
    target = directory / label / f"{i}.png"
    target.write_bytes((root / image).read_bytes())
    if i % 2 and text:
      target.with_suffix(".txt").write_text(text)
  p = predict(workdir, _write(root / "s.csv", support), directory)
  written = sorted(directory.rglob("*.png"))
  assert p.labels == tuple(path.parent.name for path in written)
  assert p.inputs["image"] == tuple(str(path.relative_to(directory)) for path in written)
  captioned = [path.with_suffix(".txt").is_file() for path in written]
  assert [m == ("image", "text") for m in p.modalities] == captioned
  assert [m == ("image",) for m in p.modalities] == [not c for c in captioned]


def test_an_am3_model_is_refused_before_anything_is_read(tmp_path):
  import json
  config = _config(name="am3")
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(json.dumps(config_lib.config_to_dict(config)))
  with pytest.raises(UserError, match="am3 reads each class's own text"):
    predict(tmp_path / "run", tmp_path / "s.csv", tmp_path / "q.csv")


@pytest.mark.slow
def test_plot_embed_draws_every_modality_and_the_fused_space(workdir, tmp_path):
  from mmfsl_jax.plot.embeddings import plot_embeddings, run_embeddings
  points, labels, names = run_embeddings(workdir, classes=4, per_class=5)
  assert set(points) == {"image", "text", "fused"} and len(names) == 4
  assert all(p.shape == (20, 16) for p in points.values())
  np.testing.assert_array_equal(np.bincount(labels), [5, 5, 5, 5])
  figure = plot_embeddings(workdir, tmp_path / "e.png", classes=4, per_class=5)
  assert [a.get_title() for a in figure.axes] == ["image (PCA)", "text (PCA)", "fused (PCA)"]
  for axis in figure.axes:
    assert [len(c.get_offsets()) for c in axis.collections] == [5, 5, 5, 5]
  assert [t.get_text() for t in figure.axes[-1].get_legend().get_texts()] == list(names)
  assert (tmp_path / "e.png").stat().st_size > 1000
