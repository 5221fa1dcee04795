"""Omniglot through the command line: one smoke-sized training run of the omniglot_protonet
config on the real files, then `mmfsl eval` on it, episodic and `--benchmark omniglot-runs`
(skipped when the data directory is not found), and the runs evaluator's refusals."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re

import numpy as np
import pytest

from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.cli import main
from mmfsl_jax.data.sources import omniglot
from mmfsl_jax.run.evaluators.omniglot_runs import evaluate_omniglot_runs
from omniglot_data import DATA_DIR, needs_data

# A run of seconds: 2 meta-steps of a Conv4 with 8 channels, 4 validation episodes.
SMOKE = ("smoke=True", "run.num_steps=2", "model.image.channels=8", "model.embed_dim=16")


def _run(argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(argv)
  return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
  monkeypatch.delenv("MMFSL_DEBUG", raising=False)


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
  """Decoded-Omniglot caches in a temporary XDG_CACHE_HOME, for the whole module."""
  previous = os.environ.get("XDG_CACHE_HOME")
  os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
  yield
  if previous is None:
    os.environ.pop("XDG_CACHE_HOME", None)
  else:
    os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_home, compilation_cache):
  workdir = tmp_path_factory.mktemp("omniglot_cli") / "run"
  code, out, err = _run(["train", "--config", "omniglot_protonet", "--workdir", str(workdir),
                         "--no-progress", f"data.dir={DATA_DIR}", *SMOKE])
  assert code == 0, err
  return workdir


@pytest.mark.slow
@needs_data
def test_train_smoke_run(trained):
  saved = json.loads((trained / "config.json").read_text())
  assert saved["data"]["name"] == "omniglot" and saved["data"]["modalities"] == ["image"]
  assert saved["data"]["image_size"] == 28 and saved["run"]["num_steps"] == 2
  records = [json.loads(l) for l in (trained / "metrics.jsonl").read_text().splitlines() if l]
  assert [r["step"] for r in records if r["split"] == "val"] == [2]
  assert (trained / "best").is_dir()


@needs_data
def test_eval_omniglot_runs_writes_per_run_accuracy(trained):
  code, out, err = _run(["eval", "--workdir", str(trained), "--benchmark", "omniglot-runs"])
  assert code == 0, err
  result = json.loads((trained / "eval.json").read_text())
  assert result["benchmark"] == "omniglot-runs"
  assert list(result["per_run"]) == [f"run{r:02d}" for r in range(1, 21)]
  accuracies = list(result["per_run"].values())
  assert all(a in {i / 20 for i in range(21)} for a in accuracies)  # 20 items per run
  assert result["accuracy"] == pytest.approx(np.mean(accuracies))
  assert result["error_rate"] == pytest.approx(1 - result["accuracy"])
  assert result["settings"]["n_way"] == 20 and result["settings"]["trained_n_way"] == 5
  assert "run20:" in out and "wrote" in out


@needs_data
def test_eval_omniglot_runs_with_the_training_population_batch_norm(trained):
  code, out, err = _run(["eval", "--workdir", str(trained), "--benchmark", "omniglot-runs",
                         "--batch-norm", "population", "--population-batches", "2",
                         "--output", "eval_runs_pop.json"])
  assert code == 0, err
  result = json.loads((trained / "eval_runs_pop.json").read_text())
  # smoke training tasks: 5-way, 1 shot, 2 queries
  assert result["settings"]["batch_norm"] == "population (2 training batches of 15 images)"
  assert len(result["per_run"]) == 20


@needs_data
def test_runs_evaluator_gets_known_answers_right(trained, monkeypatch):
  # Runs whose test drawings are the training drawings in a known order: a ProtoNet finds
  # each one's own prototype at distance 0, whatever its weights.
  real = omniglot.load_one_shot_runs(DATA_DIR, 28)
  order = np.random.default_rng(0).permutation(20)

  def fake(answers):
    return lambda *args, **kwargs: [
        {"name": run["name"], "train": run["train"], "test": run["train"][order],
         "answers": answers} for run in real[:3]]

  monkeypatch.setattr(omniglot, "load_one_shot_runs", fake(order))
  result = evaluate_omniglot_runs(trained, write=False)
  assert result["per_run"] == {"run01": 1.0, "run02": 1.0, "run03": 1.0}
  monkeypatch.setattr(omniglot, "load_one_shot_runs", fake((order + 1) % 20))
  assert evaluate_omniglot_runs(trained, write=False)["accuracy"] == 0.0


@needs_data
def test_eval_episodic_on_omniglot(trained):
  code, out, err = _run(["eval", "--workdir", str(trained), "--episodes", "4"])
  assert code == 0, err
  result = json.loads((trained / "eval.json").read_text())
  assert result["accuracy"]["n"] == 4 and result["settings"]["dataset"] == "omniglot"


@pytest.mark.slow
@needs_data
def test_an_omniglot_model_scores_and_classifies_dark_on_white_images(trained, tmp_path):
  """`eval --data` and `predict` on a manifest of RGB images read as the model's ink."""
  from PIL import Image
  rows = [["image", "label"]]
  for c in range(5):
    for i in range(3):
      paper = np.full((40, 40, 3), 250, np.uint8)
      paper[5 + 6 * c:9 + 6 * c, 4 + 2 * i:36 - 2 * i] = 20   # a class's own stroke
      Image.fromarray(paper).save(tmp_path / f"{c}_{i}.png")
      rows.append([f"{c}_{i}.png", f"stroke{c}"])
  manifest = tmp_path / "strokes.csv"
  manifest.write_text("\n".join(",".join(r) for r in rows) + "\n")
  code, out, err = _run(["eval", "--workdir", str(trained), "--data", str(manifest),
                         "--episodes", "4", "--k-shot", "1", "--queries", "2",
                         "--output", "strokes.json"])
  assert code == 0, err
  assert json.loads((trained / "strokes.json").read_text())["accuracy"]["n"] == 4
  queries = tmp_path / "queries.csv"
  queries.write_text("image\n" + "\n".join(r[0] for r in rows[1:]) + "\n")
  code, out, err = _run(["predict", "--workdir", str(trained), "--support", str(manifest),
                         "--query", str(queries), "--output", str(tmp_path / "p.csv")])
  assert code == 0, err
  assert len((tmp_path / "p.csv").read_text().splitlines()) == 16


@needs_data
def test_eval_at_another_way_and_shot_into_its_own_file(trained):
  code, out, err = _run(["eval", "--workdir", str(trained), "--episodes", "3", "--n-way", "20",
                         "--k-shot", "2", "--queries", "1", "--output", "eval_20w2s.json"])
  assert code == 0, err
  result = json.loads((trained / "eval_20w2s.json").read_text())
  assert result["accuracy"]["n"] == 3
  assert (result["settings"]["n_way"], result["settings"]["k_shot"]) == (20, 2)
  assert "eval_20w2s.json" in out


def test_eval_refuses_another_way_for_a_fixed_head_and_bad_output_names(tmp_path):
  workdir = _workdir_with(tmp_path, "omniglot_maml")
  code, _, err = _run(["eval", "--workdir", str(workdir), "--n-way", "20"])
  assert code == 2 and re.search(r"trained 5-way with learner\.name=maml.*protonet", err), err
  for bad in ("../eval.json", "eval.txt"):
    code, _, err = _run(["eval", "--workdir", str(workdir), "--output", bad])
    assert code == 2 and "--output" in err, err
  code, _, err = _run(["eval", "--workdir", str(workdir), "--inner-steps", "0"])
  assert code == 2 and "--inner-steps must be at least 1" in err, err


@needs_data
def test_runs_with_a_directory_lacking_the_zip(trained, tmp_path):
  code, _, err = _run(["eval", "--workdir", str(trained), "--benchmark", "omniglot-runs",
                       "--data-dir", str(tmp_path)])
  assert code == 2 and "one_shot_runs.zip" in err and str(tmp_path) in err


def _workdir_with(tmp_path, config_name, *overrides):
  config = config_lib.apply_overrides(config_lib.load_config(config_name), list(overrides))
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(config_lib.config_to_dict(config)))
  return workdir


@pytest.mark.parametrize("config_name, overrides, expected", [
    ("omniglot_maml", (), r"maml.*task\.n_way=5.*task\.n_way=20"),
    ("omniglot_protonet", ("data.modalities=('image', 'text')",), r"image-only.*'text'"),
    ("tiny", ("data.modalities=('image',)",), r"1-channel.*'shapes'.*3-channel"),
])
def test_runs_refuse_models_they_cannot_evaluate(tmp_path, config_name, overrides, expected):
  workdir = _workdir_with(tmp_path, config_name, *overrides)
  code, _, err = _run(["eval", "--workdir", str(workdir), "--benchmark", "omniglot-runs"])
  assert code == 2
  assert len(err.strip().splitlines()) == 1
  assert re.search(expected, err), err


def test_runs_maml_at_20_way_passes_the_checks(tmp_path):
  workdir = _workdir_with(tmp_path, "omniglot_maml", "task.n_way=20")
  code, _, err = _run(["eval", "--workdir", str(workdir), "--benchmark", "omniglot-runs"])
  assert code == 2 and "no checkpoint" in err  # refused only for lack of a checkpoint


def test_runs_reject_episode_options(tmp_path):
  workdir = _workdir_with(tmp_path, "omniglot_protonet")
  code, _, err = _run(["eval", "--workdir", str(workdir), "--benchmark", "omniglot-runs",
                       "--episodes", "10"])
  assert code == 2 and "--episodes" in err


@pytest.mark.parametrize("name", ["omniglot_protonet", "omniglot_maml"])
def test_omniglot_configs_validate(name):
  config = config_lib.load_config(name)
  build.check_config(config)
  assert config.data.modalities == ("image",) and config.data.name == "omniglot"
  back = config_lib.config_from_dict(config_lib.config_to_dict(config))
  assert back.to_dict() == config.to_dict()
