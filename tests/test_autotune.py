"""The autotuned step choices (run/autotune.py): measured once per machine and step shape,
cached on disk and reused, kept where the config sets them, the fixed rules where tuning is
off or the run short, and a training run that tunes uses (and prints) the faster choice."""
from __future__ import annotations

import contextlib
import io
import json
import warnings

import pytest

from mmfsl_jax.run import autotune
from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib


def _config(*overrides):
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, ["run.autotune=on", "data.modalities=('image',)",
                                      *overrides])
  return build.effective_config(config)


class FakeMeasure:
  """tasks/s by choice: xla and whole batches fast, as no CPU has it, so a choice that differs
  from the rules shows it came from the measurement."""
  def __init__(self):
    self.calls, self.bests = [], []

  def __call__(self, choice, best=None):
    self.calls.append(dict(choice))
    self.bests.append(best)
    return (2.0 if choice.get("conv_impl") == "xla" else 1.0) + (
        0.5 if choice.get("task_chunk", 1) > 1 else 0.0)


def test_the_choice_is_measured_once_then_read_from_the_cache(tmp_path):
  config, measure = _config(), FakeMeasure()
  messages = []
  choice = autotune.tuned_choices(config, measure, cache_dir=tmp_path, say=messages.append)
  assert choice == {"conv_impl": "xla", "task_chunk": 2}
  # the rules' choice (a CPU's) first, each setting changed alone, then both changes that
  # helped together; each measurement knows the best rate before it
  assert measure.calls == [{"conv_impl": "matmul", "task_chunk": 1},
                           {"conv_impl": "xla", "task_chunk": 1},
                           {"conv_impl": "matmul", "task_chunk": 2},
                           {"conv_impl": "xla", "task_chunk": 2}]
  assert measure.bests == [None, 1.0, 2.0, 2.0]
  assert "-> conv_impl=xla task_chunk=2" in messages[-1]
  stored = json.loads((tmp_path / autotune.CACHE_FILE).read_text())
  assert list(stored) == [autotune.shape_key(config)]
  assert autotune.machine_name() in next(iter(stored))

  again = FakeMeasure()
  assert autotune.tuned_choices(config, again, cache_dir=tmp_path, say=messages.append) == choice
  assert again.calls == [] and "measured before" in messages[-1]
  # another step shape is measured anew, beside the first in the same file
  other = _config("task.meta_batch=4")
  autotune.tuned_choices(other, again, cache_dir=tmp_path)
  assert len(again.calls) == 4 and again.calls[-1] == {"conv_impl": "xla", "task_chunk": 4}
  assert len(json.loads((tmp_path / autotune.CACHE_FILE).read_text())) == 2


def test_a_setting_slower_alone_is_not_timed_again_beside_the_other(tmp_path):
  calls = []

  def measure(choice, best=None):   # XLA's convolutions far slower, as on a CPU
    calls.append(dict(choice))
    return (0.05 if choice["conv_impl"] == "xla" else 1.0) * (2 if choice["task_chunk"] > 1 else 1)

  assert autotune.tuned_choices(_config(), measure, cache_dir=tmp_path) == {
      "conv_impl": "matmul", "task_chunk": 2}
  assert calls == [{"conv_impl": "matmul", "task_chunk": 1}, {"conv_impl": "xla", "task_chunk": 1},
                   {"conv_impl": "matmul", "task_chunk": 2}]


def test_settings_the_config_makes_are_kept_and_not_measured(tmp_path):
  measure = FakeMeasure()
  chosen = autotune.tuned_choices(_config("model.image.conv_impl=matmul"), measure,
                                  cache_dir=tmp_path)
  assert chosen == {"task_chunk": 2} and {tuple(c) for c in measure.calls} == {("task_chunk",)}
  config = _config("model.image.conv_impl=matmul", "run.task_chunk=1")
  assert autotune.tuned_choices(config, measure, cache_dir=tmp_path) == {}
  step_config = autotune.with_choices(_config(), {"conv_impl": "xla", "task_chunk": 2})
  assert (step_config.model.image.conv_impl, step_config.run.task_chunk) == ("xla", 2)


def test_off_and_short_runs_use_the_rules_without_measuring(tmp_path):
  measure = FakeMeasure()
  rules = {"conv_impl": "matmul", "task_chunk": 1}   # a CPU's
  for overrides in (["run.autotune=off"], ["run.autotune=auto", "run.num_steps=10"]):
    assert autotune.tuned_choices(_config(*overrides), measure, cache_dir=tmp_path) == rules
  assert measure.calls == [] and not (tmp_path / autotune.CACHE_FILE).exists()
  assert autotune.wants_measurement(_config("run.autotune=auto",
                                            f"run.num_steps={autotune.MIN_STEPS}"))
  with pytest.raises(Exception, match="run.autotune='sometimes' is not valid"):
    _config("run.autotune=sometimes")


def test_an_unreadable_cache_is_measured_again_with_a_warning(tmp_path):
  (tmp_path / autotune.CACHE_FILE).write_text("{not json")
  measure = FakeMeasure()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert autotune.tuned_choices(_config(), measure, cache_dir=tmp_path)["conv_impl"] == "xla"
  assert any("unreadable autotune cache" in str(w.message) for w in caught)
  assert json.loads((tmp_path / autotune.CACHE_FILE).read_text())   # rewritten whole


@pytest.mark.slow
def test_a_tuning_training_run_measures_prints_and_trains(tmp_path, monkeypatch):
  from mmfsl_jax.run.train import train_and_evaluate
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  # one task a meta-batch: only the convolutions are tuned (two candidates), to keep it short
  config = _config("run.num_steps=2", "run.val_episodes=0", "run.checkpoint_every=2",
                   "task.meta_batch=1")
  out = io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    train_and_evaluate(config, tmp_path / "run", progress=False)
  line = next(l for l in out.getvalue().splitlines() if l.startswith("autotune:"))
  assert line.count("tasks/s") == 2 and "conv_impl=xla" in line and "stored in" in line
  stored = json.loads((tmp_path / "cache" / "mmfsl_jax" / autotune.CACHE_FILE).read_text())
  (entry,) = stored.values()
  rates = {json.dumps(o): r for o, r in entry["tasks_per_s"]}
  assert rates[json.dumps(entry["choice"])] == max(rates.values())   # the fastest is chosen
