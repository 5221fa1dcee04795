"""`mmfsl plot` on files the tests write: each figure holds the data it was drawn from."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from mmfsl_jax.cli import main
from mmfsl_jax.errors import UserError
from mmfsl_jax.plot.compare import plot_compare
from mmfsl_jax.plot.curves import plot_curves
from mmfsl_jax.plot.records import read_curves


def _metrics(workdir, *, rates=None, resumed_at=None, torn=False):
  """A metrics.jsonl of 6 train records (every 10 steps) and 2 validation records."""
  workdir.mkdir(parents=True)
  lines = []
  for k in range(6):
    step = 10 * (k + 1)
    time = 5.0 * (k + 1) if resumed_at is None or step <= resumed_at else 5.0 * (k - 2)
    record = {"step": step, "split": "train", "time": time, "loss": 2.0 / (k + 1),
              "accuracy": 0.3 + 0.1 * k}
    if rates is not None:
      record["learning_rate"] = rates[k]
    lines.append(json.dumps(record))
    if step in (30, 60):
      lines.append(json.dumps({"step": step, "split": "val", "accuracy": {
          "mean": 0.4 + step / 200, "ci95": 0.02, "n": 100}}))
  text = "\n".join(lines) + "\n" + ('{"step": 70, "spl' if torn else "")
  (workdir / "metrics.jsonl").write_text(text)
  return workdir


def test_curves_hold_each_runs_records(tmp_path):
  a = _metrics(tmp_path / "a", torn=True)
  b = _metrics(tmp_path / "b", rates=[1e-3] * 3 + [1e-4] * 3)
  figure = plot_curves([a, b], tmp_path / "curves.png", names=["first", "second"])
  loss_axis, accuracy_axis, rate_axis = figure.axes
  assert loss_axis.get_ylabel() == "training loss" and loss_axis.get_xlabel() == "meta-step"
  assert accuracy_axis.get_ylabel() == "accuracy" and rate_axis.get_ylabel() == "learning rate"
  assert [line.get_label() for line in loss_axis.lines] == ["first", "second"]
  np.testing.assert_allclose(loss_axis.lines[0].get_ydata(), [2.0 / (k + 1) for k in range(6)])
  np.testing.assert_array_equal(loss_axis.lines[0].get_xdata(), [10, 20, 30, 40, 50, 60])
  labels = [line.get_label() for line in accuracy_axis.lines]
  assert labels == ["first (train)", "first (validation)", "second (train)",
                    "second (validation)"]
  np.testing.assert_allclose(accuracy_axis.lines[1].get_ydata(), [0.55, 0.7])
  assert len(accuracy_axis.collections) == 2                 # one 95% band per run
  np.testing.assert_allclose(rate_axis.lines[0].get_ydata(), [1e-3] * 3 + [1e-4] * 3)
  assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_without_a_changing_rate_have_no_rate_axis_and_time_adds_up(tmp_path):
  run = _metrics(tmp_path / "run", rates=[1e-3] * 6, resumed_at=30)
  assert len(plot_curves([run], x="time").axes) == 2
  # resumed after step 30: its clock restarts at 5 s, and the plot adds the segments up
  np.testing.assert_allclose(read_curves(run).seconds, [5, 10, 15, 20, 25, 30])
  np.testing.assert_allclose(read_curves(run).val_seconds, [15, 30])
  plot_curves([run], tmp_path / "c.svg")
  assert "<svg" in (tmp_path / "c.svg").read_text()[:500]


def _eval(path, method, modalities, accuracy):
  path.parent.mkdir(parents=True, exist_ok=True)
  metric = lambda m: {"mean": m, "ci95": 0.01, "n": 600}
  path.write_text(json.dumps({"accuracy": metric(accuracy), "macro_recall": metric(accuracy),
                              "macro_f1": metric(accuracy - 0.01), "settings": {
                                  "method": method, "modalities": modalities,
                                  "fuser": "weighted"}}))
  return path


def test_compare_draws_every_metric_with_its_interval_grouped(tmp_path):
  files = [_eval(tmp_path / "img" / "eval.json", "protonet", ["image"], 0.7),
           _eval(tmp_path / "txt" / "eval.json", "maml", ["text"], 0.5),
           _eval(tmp_path / "fused" / "eval_5shot.json", "protonet", ["image", "text"], 0.8)]
  figure = plot_compare(files, tmp_path / "cmp.png", group_by="method")
  (axis,) = figure.axes
  bars = [container for container in axis.containers if hasattr(container, "patches")]
  assert [b.get_label() for b in bars] == ["accuracy", "macro recall", "macro F1"]
  # protonet's two files first (in the order given), then maml's
  np.testing.assert_allclose([p.get_height() for p in bars[0].patches], [70, 80, 50])
  np.testing.assert_allclose([p.get_height() for p in bars[2].patches], [69, 79, 49])
  ticks = [t.get_text() for t in axis.get_xticklabels()]
  assert ticks == ["img\n(protonet)", "fused / eval_5shot\n(protonet)", "txt\n(maml)"]
  assert len(axis.lines) >= 1                               # the line between the groups
  errors = [c for c in axis.containers if type(c).__name__ == "ErrorbarContainer"]
  segments = errors[0].lines[2][0].get_segments()
  np.testing.assert_allclose([s[1][1] - s[0][1] for s in segments], [2.0] * 3)  # +- 1 point
  by_modalities = plot_compare(files, group_by="modalities").axes[0]
  assert [t.get_text().split("\n")[1] for t in by_modalities.get_xticklabels()] == [
      "(image)", "(text)", "(image + text)"]


def test_errors_and_the_command_line(tmp_path):
  with pytest.raises(UserError, match="no metrics.jsonl"):
    plot_curves([tmp_path / "nothing"])
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "metrics.jsonl").write_text("")
  with pytest.raises(UserError, match="no training records yet"):
    plot_curves([tmp_path / "empty"])
  with pytest.raises(UserError, match="no evaluation file"):
    plot_compare([tmp_path / "none.json"])
  (tmp_path / "bad.json").write_text('{"accuracy": 1}')
  with pytest.raises(UserError, match="not an evaluation file"):
    plot_compare([tmp_path / "bad.json"])
  run = _metrics(tmp_path / "run")
  with pytest.raises(UserError, match="2 names for 1 workdirs"):
    plot_curves([run], names=["a", "b"])
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    assert main(["plot", "curves", "--workdir", str(run), "--output",
                 str(tmp_path / "c.png")]) == 0
    assert main(["plot", "curves", "--workdir", str(run), "--output",
                 str(tmp_path / "c.pdf")]) == 2
    assert main(["plot", "compare", "--eval", str(_eval(tmp_path / "e" / "eval.json", "maml",
                                                        ["image"], 0.6)),
                 "--output", str(tmp_path / "e.svg")]) == 0
  assert "give a .png or .svg file" in err.getvalue()
  assert (tmp_path / "c.png").exists() and (tmp_path / "e.svg").exists()
  assert not (tmp_path / "c.pdf").exists()


def test_pca_recovers_points_on_a_plane():
  """Points on a 2-D plane inside 6-D space: the projection keeps every distance."""
  rng = np.random.default_rng(0)
  plane = rng.normal(size=(40, 2)) * [3.0, 1.0]
  basis, _ = np.linalg.qr(rng.normal(size=(6, 2)))
  points = plane @ basis.T + rng.normal(size=6)
  from mmfsl_jax.plot.embeddings import pca_2d
  projected = pca_2d(points)
  distances = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)
  np.testing.assert_allclose(distances(projected), distances(plane), atol=1e-9)
  assert projected[:, 0].var() > projected[:, 1].var()      # the leading axis first


def _shots_file(path, points):
  """An `mmfsl eval --shots` file: points are (n_way, k_shot, accuracy)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  metric = lambda m: {"mean": m, "ci95": 0.02, "n": 100}
  path.write_text(json.dumps({"results": [
      {"n_way": n, "k_shot": k, "accuracy": metric(a), "macro_recall": metric(a),
       "macro_f1": metric(a)} for n, k, a in points], "settings": {"method": "protonet"}}))
  return path


def test_shots_draws_a_line_per_model_and_way_sorted_by_shot(tmp_path):
  from mmfsl_jax.plot.shots import plot_shots
  a = _shots_file(tmp_path / "a" / "eval_shots.json",
                  [(5, 5, 0.8), (5, 1, 0.5), (10, 1, 0.3), (10, 5, 0.6)])
  single = _eval(tmp_path / "b" / "eval.json", "maml", ["image"], 0.45)
  settings = json.loads(single.read_text())
  settings["settings"].update(n_way=5, k_shot=1)
  single.write_text(json.dumps(settings))
  figure = plot_shots([a, single], tmp_path / "s.png")
  (axis,) = figure.axes
  errorbars = [c for c in axis.containers if type(c).__name__ == "ErrorbarContainer"]
  assert [c.get_label() for c in errorbars] == ["a, 5-way", "a, 10-way", "b, 5-way"]
  data = [c.lines[0] for c in errorbars]
  np.testing.assert_array_equal(data[0].get_xdata(), [1, 5])
  np.testing.assert_allclose(np.asarray(data[0].get_ydata(), float), [50, 80])
  np.testing.assert_allclose(np.asarray(data[1].get_ydata(), float), [30, 60])
  np.testing.assert_allclose(np.asarray(data[2].get_ydata(), float), [45])
  segments = errorbars[0].lines[2][0].get_segments()
  np.testing.assert_allclose([s[1][1] - s[0][1] for s in segments], [4.0, 4.0])   # +- 2
  chance = [line for line in axis.lines if line.get_label().startswith("chance")]
  assert [line.get_ydata()[0] for line in chance] == [20.0, 10.0]
  assert axis.get_xscale() == "log" and [t.get_text() for t in axis.get_xticklabels()] == [
      "1", "5"]
  assert axis.get_ylabel() == "accuracy (%, 95% CI)"
  with pytest.raises(UserError, match="two 5-way 5-shot results"):
    plot_shots([a, a])
  assert len(plot_shots([a, a], labels=["x", "y"]).axes[0].containers) == 4
  with pytest.raises(UserError, match="without its way, shot or metrics"):
    plot_shots([_eval(tmp_path / "c" / "eval.json", "maml", ["image"], 0.4)])
