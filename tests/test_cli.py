"""The `mmfsl` command: train, resume, extend, eval, and clear errors for bad requests.

One module-scoped `tiny` training run (6 steps) is shared by the tests of train/resume/eval;
tests that continue training work on copies of its workdir. One real subprocess run of the
console script covers the end-to-end path. The bad-input cases fail before any training step
and run in-process.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmfsl_jax.run import config as config_lib
from mmfsl_jax.cli import main
from mmfsl_jax.errors import UserError

TINY_STEPS = 6          # configs/tiny.py: run.num_steps
TINY_TRAIN_STEPS = {2, 4, 6}   # run.log_every=2
TINY_VAL_STEPS = {3, 6}        # run.eval_every=3, and the last step
METRIC_NAMES = ("accuracy", "macro_recall", "macro_f1")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
  monkeypatch.delenv("MMFSL_DEBUG", raising=False)


def _train_argv(workdir, *overrides, config="tiny"):
  return ["train", "--config", config, "--workdir", str(workdir), "--no-progress", *overrides]


def _metrics(workdir) -> list[dict]:
  return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()
          if line]


def _steps(path: Path) -> set[int]:
  return {int(p.name) for p in path.iterdir() if p.name.isdigit()}


def _last_json_line(text: str) -> dict:
  return json.loads([line for line in text.splitlines() if line.strip()][-1])


def _copy_run(src: Path, dst: Path) -> Path:
  shutil.copytree(src, dst)
  return dst


@pytest.fixture(scope="module")
def trained(tmp_path_factory, compilation_cache):
  """The tiny config trained for its 6 steps: (workdir, stdout of the run)."""
  workdir = tmp_path_factory.mktemp("cli_train") / "run"
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(_train_argv(workdir))
  assert code == 0, err.getvalue()
  return workdir, out.getvalue()


# ---------------------------------------------------------------------------------------------
# train


def test_train_prints_final_record(trained):
  _, stdout = trained
  record = _last_json_line(stdout)
  assert record["step"] == TINY_STEPS
  assert record["split"] == "train"
  assert math.isfinite(record["loss"])


def test_train_writes_metrics_jsonl(trained):
  workdir, _ = trained
  records = _metrics(workdir)
  assert records
  for record in records:
    assert isinstance(record["step"], int) and 1 <= record["step"] <= TINY_STEPS
    assert record["split"] in ("train", "val")
  train = [r for r in records if r["split"] == "train"]
  val = [r for r in records if r["split"] == "val"]
  assert {r["step"] for r in train} == TINY_TRAIN_STEPS
  assert {r["step"] for r in val} == TINY_VAL_STEPS
  keys = [(r["step"], r["split"]) for r in records]
  assert len(keys) == len(set(keys))
  for r in train:
    for name in ("loss", "accuracy", "grad_norm"):
      assert math.isfinite(r[name])
    assert 0.0 <= r["accuracy"] <= 1.0
  for r in val:
    for name in METRIC_NAMES:
      assert 0.0 <= r[name]["mean"] <= 1.0
      assert r[name]["n"] == config_lib.load_config("tiny").run.val_episodes


def test_train_writes_checkpoints_and_config(trained):
  workdir, _ = trained
  assert (workdir / "checkpoints").is_dir()
  assert (workdir / "best").is_dir()
  assert TINY_STEPS in _steps(workdir / "checkpoints")
  best = _steps(workdir / "best")
  assert len(best) == 1 and best <= TINY_VAL_STEPS
  saved = json.loads((workdir / "config.json").read_text())
  assert saved == config_lib.config_to_dict(config_lib.load_config("tiny"))
  assert not (workdir / ".write_test").exists()


def test_train_again_resumes_and_does_nothing_more(trained, tmp_path, capsys):
  workdir = _copy_run(trained[0], tmp_path / "run")
  before = (workdir / "metrics.jsonl").read_text()
  checkpoints_before = _steps(workdir / "checkpoints")
  assert main(_train_argv(workdir)) == 0
  out, err = capsys.readouterr()
  assert f"resuming from step {TINY_STEPS}" in out + err
  assert _last_json_line(out) == {"step": TINY_STEPS}
  assert (workdir / "metrics.jsonl").read_text() == before
  assert _steps(workdir / "checkpoints") == checkpoints_before


@pytest.mark.slow
def test_train_with_more_steps_extends_the_run(trained, tmp_path, capsys):
  # Steps 7..8 of the same run (run.num_steps may change on resume; the workdir is a copy).
  workdir = _copy_run(trained[0], tmp_path / "run")
  before = _metrics(workdir)
  assert main(_train_argv(workdir, "run.num_steps=8")) == 0
  out, err = capsys.readouterr()
  assert f"resuming from step {TINY_STEPS}" in out + err
  record = _last_json_line(out)
  assert record["step"] == 8 and record["split"] == "train"

  after = _metrics(workdir)
  assert after[:len(before)] == before                     # the first 6 steps are kept as is
  added = after[len(before):]
  assert added and all(TINY_STEPS < r["step"] <= 8 for r in added)
  keys = [(r["step"], r["split"]) for r in after]
  assert len(keys) == len(set(keys))                       # nothing logged twice
  assert (8, "train") in keys and (8, "val") in keys
  assert 8 in _steps(workdir / "checkpoints")
  assert json.loads((workdir / "config.json").read_text())["run"]["num_steps"] == 8


def test_train_with_a_different_config_is_refused(trained, capsys):
  workdir, _ = trained
  config_before = (workdir / "config.json").read_text()
  metrics_before = (workdir / "metrics.jsonl").read_text()
  assert main(_train_argv(workdir, "task.n_way=3")) == 2
  out, err = capsys.readouterr()
  assert "Traceback" not in out + err
  assert "different config" in err
  assert "task.n_way: 5 -> 3" in err
  assert str(workdir) in err
  assert (workdir / "config.json").read_text() == config_before
  assert (workdir / "metrics.jsonl").read_text() == metrics_before


# ---------------------------------------------------------------------------------------------
# eval


def test_eval_writes_eval_json(trained, capsys):
  workdir, _ = trained
  assert main(["eval", "--workdir", str(workdir), "--episodes", "10"]) == 0
  out, _ = capsys.readouterr()
  assert "eval.json" in out
  for name in METRIC_NAMES:
    assert name in out and "(10 episodes)" in out
  result = json.loads((workdir / "eval.json").read_text())
  for name in METRIC_NAMES:
    assert set(result[name]) >= {"mean", "ci95", "n"}
    assert result[name]["n"] == 10
    assert 0.0 <= result[name]["mean"] <= 1.0
    assert 0.0 <= result[name]["ci95"] <= 1.0
  settings = result["settings"]
  tiny = config_lib.load_config("tiny")
  assert settings["episodes"] == 10
  assert settings["n_way"] == tiny.task.n_way
  assert settings["k_shot"] == tiny.task.k_shot
  assert settings["q_query"] == tiny.eval.q_query
  assert settings["split"] == "test"
  assert settings["checkpoint_step"] in _steps(workdir / "best")


@pytest.mark.slow
def test_eval_with_the_training_population_batch_norm(trained, capsys):
  workdir, _ = trained
  assert main(["eval", "--workdir", str(workdir), "--episodes", "4", "--batch-norm",
               "population", "--population-batches", "2", "--output", "eval_pop.json"]) == 0
  result = json.loads((workdir / "eval_pop.json").read_text())
  tiny = config_lib.load_config("tiny")
  images = tiny.task.n_way * (tiny.task.k_shot + tiny.task.q_query)
  assert result["settings"]["batch_norm"] == f"population (2 training batches of {images} images)"
  assert result["accuracy"]["n"] == 4
  assert json.loads((workdir / "eval.json").read_text())["settings"]["batch_norm"] == "transductive"
  capsys.readouterr()
  assert main(["eval", "--workdir", str(workdir), "--batch-norm", "population",
               "--population-batches", "0"]) == 2
  assert "--population-batches must be at least 1, got 0" in capsys.readouterr().err


def test_eval_on_the_validation_split_reproduces_training_validation(trained, capsys):
  from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
  workdir, _ = trained
  tiny = config_lib.load_config("tiny")
  validation = {r["step"]: r["accuracy"]["mean"] for r in _metrics(workdir)
                if r.get("split") == "val"}
  # the training's validation tasks: the same split, seed and number of episodes
  result = evaluate_workdir(workdir, episodes=tiny.run.val_episodes, seed=tiny.eval.seed + 1,
                            split="val", write=False)
  assert result["settings"]["split"] == "val"
  assert math.isclose(result["accuracy"]["mean"], validation[result["settings"]["checkpoint_step"]],
                      rel_tol=1e-6)
  assert main(["eval", "--workdir", str(workdir), "--episodes", str(tiny.run.val_episodes),
               "--split", "val", "--output", "eval_val.json"]) == 0
  assert json.loads((workdir / "eval_val.json").read_text())["settings"]["split"] == "val"
  with pytest.raises(UserError, match="'test' or 'val'"):
    evaluate_workdir(workdir, split="train")


# ---------------------------------------------------------------------------------------------
# the console script, end to end


def _console_script() -> str:
  script = Path(sys.executable).parent / "mmfsl"
  return str(script) if script.exists() else shutil.which("mmfsl")


@pytest.mark.slow
def test_console_script_trains(tmp_path, trained, compilation_cache):
  # `trained` first, so that the subprocess finds the tiny model in the compilation cache.
  workdir = tmp_path / "run"
  result = subprocess.run(
      [_console_script(), "train", "--config", "tiny", "--workdir", str(workdir),
       "--no-progress", "run.num_steps=2"],
      capture_output=True, text=True, env={**os.environ, **compilation_cache}, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert _last_json_line(result.stdout)["step"] == 2
  keys = {(r["step"], r["split"]) for r in _metrics(workdir)}
  assert keys == {(2, "train"), (2, "val")}
  assert 2 in _steps(workdir / "checkpoints")


def test_console_script_error_exit_status(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "MMFSL_DEBUG"}
  result = subprocess.run(
      [_console_script(), "train", "--config", "no_such_config", "--workdir", str(tmp_path / "r")],
      capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert "unknown config 'no_such_config'" in result.stderr


# ---------------------------------------------------------------------------------------------
# bad inputs: exit status 2, one message on stderr, no traceback


def _fails(capsys, argv, *needles) -> str:
  code = main(argv)
  out, err = capsys.readouterr()
  assert code == 2, (out, err)
  assert "Traceback" not in out + err
  assert err.startswith("mmfsl: error: "), err
  for needle in needles:
    assert needle in err, (needle, err)
  return err


def test_unknown_key(tmp_path, capsys):
  workdir = tmp_path / "run"
  _fails(capsys, _train_argv(workdir, "task.n_wya=3"), "unknown config key 'task.n_wya'",
         "Did you mean task.n_way")
  assert not workdir.exists()       # nothing is created for a bad config


def test_bad_value_type(tmp_path, capsys):
  _fails(capsys, _train_argv(tmp_path / "run", "task.n_way=abc"), "task.n_way=abc", "'abc'",
         "int")


def test_override_without_equals_sign(tmp_path, capsys):
  _fails(capsys, _train_argv(tmp_path / "run", "task.n_way"), "'task.n_way'", "key=value")


def test_bad_choice(tmp_path, capsys):
  workdir = tmp_path / "run"
  _fails(capsys, _train_argv(workdir, "learner.name=foo"), "learner.name='foo'", "protonet",
         "maml")
  assert not workdir.exists()


def test_bad_modalities(tmp_path, capsys):
  _fails(capsys, _train_argv(tmp_path / "run", "data.modalities=('audio',)"), "data.modalities",
         "image", "text")


def test_no_projection_for_modalities_of_different_widths(tmp_path, capsys):
  # tiny: Conv4 gives 8 image features, the text encoder 16
  _fails(capsys, _train_argv(tmp_path / "run", "model.embed_dim=0"), "one width", "'image': 8",
         "'text': 16")


def test_n_way_larger_than_the_train_split(tmp_path, capsys):
  err = _fails(capsys, _train_argv(tmp_path / "run", "task.n_way=30"), "n_way=30", "10",
               "train")
  assert "classes" in err


def test_k_shot_larger_than_the_classes(tmp_path, capsys):
  _fails(capsys, _train_argv(tmp_path / "run", "task.k_shot=10"), "k_shot", "13", "12")


def test_failed_start_does_not_pin_the_workdir_config(tmp_path, capsys):
  workdir = tmp_path / "run"
  _fails(capsys, _train_argv(workdir, "task.n_way=30"), "n_way=30")
  _fails(capsys, _train_argv(workdir, "task.k_shot=10"), "13", "12")


def test_unwritable_workdir(tmp_path, capsys):
  blocker = tmp_path / "file.txt"
  blocker.write_text("not a directory")
  workdir = blocker / "run"
  _fails(capsys, _train_argv(workdir), "not writable", str(workdir))
  assert blocker.read_text() == "not a directory"


def test_unknown_config_name(tmp_path, capsys):
  _fails(capsys, _train_argv(tmp_path / "run", config="no_such_config"),
         "unknown config 'no_such_config'", "default", "tiny")


def test_config_file_without_get_config(tmp_path, capsys):
  path = tmp_path / "cfg.py"
  path.write_text("X = 1\n")
  _fails(capsys, _train_argv(tmp_path / "run", config=str(path)), "get_config")


def test_missing_config_file(tmp_path, capsys):
  _fails(capsys, _train_argv(tmp_path / "run", config=str(tmp_path / "missing.py")),
         "does not exist")


def test_eval_on_an_empty_dir(tmp_path, capsys):
  _fails(capsys, ["eval", "--workdir", str(tmp_path), "--episodes", "10"], "no config.json",
         "mmfsl train")
  assert not (tmp_path / "eval.json").exists()


def test_eval_on_a_missing_dir(tmp_path, capsys):
  _fails(capsys, ["eval", "--workdir", str(tmp_path / "nowhere")], "no config.json")


def _workdir_without_checkpoint(path: Path) -> Path:
  path.mkdir()
  config = config_lib.load_config("tiny")
  (path / "config.json").write_text(json.dumps(config_lib.config_to_dict(config)))
  return path


def test_eval_without_checkpoint(tmp_path, capsys):
  workdir = _workdir_without_checkpoint(tmp_path / "run")
  _fails(capsys, ["eval", "--workdir", str(workdir), "--episodes", "10"], "no checkpoint",
         "mmfsl train")
  assert not (workdir / "eval.json").exists()


@pytest.mark.parametrize("flag", [["--split", "val"], ["--k-shot", "5"]])
def test_omniglot_runs_refuses_episodic_flags(tmp_path, capsys, flag):
  _fails(capsys, ["eval", "--workdir", str(tmp_path), "--benchmark", "omniglot-runs", *flag],
         "do not apply", "20-way 1-shot")


def test_eval_with_negative_episodes(tmp_path, capsys):
  workdir = _workdir_without_checkpoint(tmp_path / "run")
  _fails(capsys, ["eval", "--workdir", str(workdir), "--episodes", "-1"], "episodes", "-1")


def test_eval_with_zero_episodes(tmp_path, capsys):
  workdir = _workdir_without_checkpoint(tmp_path / "run")
  _fails(capsys, ["eval", "--workdir", str(workdir), "--episodes", "0"], "episodes", "positive")


@pytest.mark.parametrize("argv", [["train", "--bogus"], ["eval", "--episodes", "many"],
                                  ["frobnicate"]])
def test_argparse_errors_exit_2(argv, capsys):
  with pytest.raises(SystemExit) as excinfo:
    main(argv)
  assert excinfo.value.code == 2
  assert "usage: mmfsl" in capsys.readouterr().err


def test_debug_env_shows_the_exception(tmp_path, monkeypatch):
  monkeypatch.setenv("MMFSL_DEBUG", "1")
  with pytest.raises(UserError, match="unknown config key"):
    main(_train_argv(tmp_path / "run", "task.n_wya=3"))


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "localhost:1234"], "need --distributed"),
    (["--distributed", "--num-processes", "2"], "give all of --coordinator"),
])
def test_distributed_flags_are_checked_before_anything_runs(tmp_path, capsys, flags, message):
  assert main(_train_argv(tmp_path / "run") + flags) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


def test_distributed_outside_a_detected_cluster_says_what_to_give(tmp_path):
  done = subprocess.run(   # a fresh interpreter: joining touches JAX's global state
      [sys.executable, "-c", "import sys; from mmfsl_jax.cli import main; sys.exit(main())",
       *_train_argv(tmp_path / "run"), "--distributed"], capture_output=True, text=True,
      env={k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))},
      timeout=300)
  assert done.returncode == 2
  assert "could not join the distributed run" in done.stderr
  assert "host:port" in done.stderr and not (tmp_path / "run").exists()
