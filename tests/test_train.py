"""Training loop: exact resume, determinism under a seed, non-finite steps.

Signals, kills, corrupt checkpoints and disk space are in test_faults.py.
"""
from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.checkpoint import Checkpoints
from mmfsl_jax.run.faults import describe_nonfinite
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.step import init_train_state, make_meta_step, param_groups
from mmfsl_jax.run.train import NonFiniteLossError, train_and_evaluate


def tiny(overrides=None):
  """The tiny config with {dotted key: value} overrides."""
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, [f"{k}={v!r}" for k, v in (overrides or {}).items()])
  return config


def final_params(workdir):
  manager = Checkpoints(workdir, create=False).latest
  step = manager.latest_step()
  restored = manager.restore(step)
  return step, jax.tree_util.tree_leaves(restored["params"])


def train_records(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(l) for l in lines if json.loads(l)["split"] == "train"]


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
  whole, crashed = tmp_path / "whole", tmp_path / "crashed"
  # a step schedule: its step count lives in the optimiser state, so resuming continues it
  config = tiny({"run.checkpoint_every": 2, "run.eval_every": 2, "run.log_every": 1,
                 "optim.schedule": "step", "optim.decay_every": 2, "optim.decay_factor": 0.5})
  train_and_evaluate(config, whole, progress=False)
  rates = [json.loads(l).get("learning_rate") for l in
           (whole / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
  lr = config.optim.lr
  assert rates == pytest.approx([lr, lr, lr / 2, lr / 2, lr / 4, lr / 4])
  shutil.copytree(whole, crashed)
  # as if killed just before the step-6 checkpoint: it and its log lines are lost or stale
  shutil.rmtree(crashed / "checkpoints" / "6")
  assert Checkpoints(crashed, create=False).latest.latest_step() == 4
  train_and_evaluate(config, crashed, progress=False)
  step_a, params_a = final_params(whole)
  step_b, params_b = final_params(crashed)
  assert step_a == step_b == 6
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)
  records = lambda d: [{k: v for k, v in json.loads(l).items() if k != "time"}
                       for l in (d / "metrics.jsonl").read_text().splitlines()]
  assert records(whole) == records(crashed)


@pytest.mark.parametrize("model", [{}, {"data.modalities": ("image",), "model.embed_dim": 0}],
                         ids=["projected", "no_projection"])
@pytest.mark.slow
def test_extending_a_finished_run_continues_it(tmp_path, model):
  # without a projection the "align" parameters are an empty subtree, which must round-trip
  train_and_evaluate(tiny({"run.num_steps": 3, **model}), tmp_path, progress=False)
  # as if written by an older version without the eval.seed field (it had the default)
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["eval"]["seed"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  record = train_and_evaluate(tiny({"run.num_steps": 5, **model}), tmp_path, progress=False)
  assert record["step"] == 5
  steps = [r["step"] for r in train_records(tmp_path)]
  assert steps == sorted(set(steps)) and steps[-1] == 5


def _records(workdir):
  return [{k: v for k, v in json.loads(l).items() if k != "time"}
          for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_same_seed_gives_identical_metrics_and_another_seed_different_ones(tmp_path):
  overrides = {"run.num_steps": 4, "run.log_every": 1, "run.eval_every": 2,
               "run.checkpoint_every": 4}
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    train_and_evaluate(tiny({"seed": seed, **overrides}), tmp_path / name, progress=False)
  a, b, c = (_records(tmp_path / n) for n in "abc")
  assert a == b
  train = lambda records: [r for r in records if r["split"] == "train"]
  assert len(train(a)) == 4
  assert all(ra["loss"] != rc["loss"] for ra, rc in zip(train(a), train(c)))
  (_, pa), (_, pb), (_, pc) = (final_params(tmp_path / n) for n in "abc")
  for x, y in zip(pa, pb):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(pa, pc))


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_keeps_the_good_checkpoint(tmp_path):
  config = tiny({"optim.lr": 1e30, "optim.grad_clip": 0.0, "run.num_steps": 6,
                 "run.checkpoint_every": 1})
  with pytest.raises(NonFiniteLossError, match=r"non-finite .* at step \d"):
    train_and_evaluate(config, tmp_path, progress=False)
  step, params = final_params(tmp_path)
  assert all(np.isfinite(p).all() for p in params)


# ---------------------------------------------------------------------------------------------
# non-finite steps: which part, and skipping


def _poison_images(monkeypatch, indices):
  """Makes the train sampler put a NaN in the support images of the batches at `indices`."""
  make = build.training_samplers

  def make_poisoned(config, splits):
    train, val = make(config, splits)
    sample = train.sample

    def poisoned(index):
      batch = sample(index)
      if index in indices:
        image = np.array(batch["support"]["image"], dtype=np.float32)
        image[0, 0] = np.nan
        batch = {**batch, "support": {**batch["support"], "image": image}}
      return batch

    train.sample = poisoned
    return train, val

  monkeypatch.setattr(build, "training_samplers", make_poisoned)


def test_nan_in_the_data_names_the_step_and_the_parts(tmp_path, monkeypatch):
  _poison_images(monkeypatch, {3})
  with pytest.raises(NonFiniteLossError) as error:
    train_and_evaluate(tiny({"run.checkpoint_every": 1}), tmp_path, progress=False)
  message = str(error.value)
  assert "at step 3" in message
  assert "outer loss (loss, objective" in message
  groups = message.split("gradients of parameter groups ")[1].split(";")[0].split(", ")
  # every learner's params are {"model": ...} (+ its own): the model's groups are opened
  assert "model/encoder/image" in groups and "model/align" in groups
  assert "last good checkpoint (step 3)" in message
  assert "run.skip_nonfinite_steps=True" in message
  step, params = final_params(tmp_path)
  assert step == 3 and all(np.isfinite(p).all() for p in params)
  assert max(r["step"] for r in train_records(tmp_path)) <= 3


@pytest.mark.slow
def test_skip_nonfinite_steps_skips_and_counts_them(tmp_path, monkeypatch):
  _poison_images(monkeypatch, {2, 3})
  config = tiny({"run.log_every": 2, "run.checkpoint_every": 3,
                 "run.skip_nonfinite_steps": True})
  record = train_and_evaluate(config, tmp_path, progress=False)
  assert record["step"] == 6
  by_step = {r["step"]: r for r in train_records(tmp_path)}
  assert {s: r["skipped_steps"] for s, r in by_step.items()} == {2: 0, 4: 2, 6: 0}
  assert by_step[4]["loss"] is None and by_step[4]["steps"] == 2
  assert np.isfinite(by_step[6]["loss"])
  step, params = final_params(tmp_path)
  assert step == 6 and all(np.isfinite(p).all() for p in params)


def _toy_learner():
  """Loss is finite; with task["poison"] set, the gradient of "align" (only) is NaN."""

  def init(key, task):
    del key, task
    return {"encoder": {"image": jnp.ones(3), "text": jnp.ones(3)}, "align": jnp.ones(2),
            "head": jnp.ones(2)}

  def task_loss(params, task, key):
    del key
    sign = jnp.where(task["poison"] > 0, -1.0, 1.0)
    never = task["x"].sum() > 1e9    # the classic where-NaN: the value is 0, the gradient NaN
    hidden = jnp.where(never, jnp.sqrt(params["align"] * sign), 0.0).sum()
    loss = ((params["encoder"]["image"] * task["x"]).sum() + params["encoder"]["text"].sum()
            + params["head"].sum() + hidden)
    return loss, {"loss": loss}

  return MetaLearner(init, task_loss, lambda p, t, k: None)


def _toy_batch(poison):
  return {"x": jnp.ones((2, 3)), "poison": jnp.array([0.0, float(poison)])}


@pytest.mark.parametrize("skip", [False, True])
def test_meta_step_reports_finiteness_per_parameter_group(skip):
  learner, optimizer = _toy_learner(), optax.adam(0.1)
  task = jax.tree_util.tree_map(lambda x: x[0], _toy_batch(False))
  step = make_meta_step(learner, optimizer, check_finite=True, skip_nonfinite=skip)
  state = init_train_state(learner, optimizer, task, seed=0)
  state, _, finite = step(state, _toy_batch(False))
  assert all(bool(v) for v in finite.values())
  before = jax.device_get((state.params, state.opt_state))
  state, metrics, finite = step(state, _toy_batch(True))
  bad = sorted(k for k, v in finite.items() if not v)
  assert np.isfinite(float(metrics["loss"]))
  assert bad == ["grads/align", "metrics/grad_norm", "params/align"]  # the proposed update
  assert int(state.step) == 2
  after = jax.device_get((state.params, state.opt_state))
  if skip:   # the update is dropped: params and optimizer state as before
    for x, y in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
      np.testing.assert_array_equal(x, y)
  else:
    assert not np.isfinite(after[0]["align"]).all()
    np.testing.assert_array_equal(np.isfinite(after[0]["head"]), True)


def test_describe_nonfinite_names_inner_and_outer_losses_and_groups():
  text = describe_nonfinite(["metrics/inner_loss", "metrics/loss", "metrics/grad_norm",
                             "grads/model/encoder/image", "grads/head", "params/head"])
  assert text == ("inner loss (inner_loss); outer loss (loss); gradients of parameter groups "
                  "model/encoder/image, head; parameters of group head after the update")
  assert describe_nonfinite(["metrics/grad_norm"]) == "gradient norm"


def test_param_groups_open_model_and_encoder():
  params = {"model": {"encoder": {"image": {"w": 1}, "text": {"w": 2}}, "align": {"w": 3},
                      "fuse": {}}, "head": {"kernel": 4}}
  assert list(param_groups(params)) == ["model/encoder/image", "model/encoder/text",
                                        "model/align", "model/fuse", "head"]
  assert list(param_groups({"encoder": {"image": 1}, "align": 2})) == ["encoder/image", "align"]


@pytest.mark.slow
def test_validation_and_eval_use_the_evaluation_way_and_shot(tmp_path):
  from mmfsl_jax.run.data import prepare_splits
  from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
  config = tiny({"task.n_way": 4, "eval.n_way": 3, "eval.k_shot": 2, "run.num_steps": 2,
                 "run.eval_every": 2})
  train_sampler, val_sampler = build.training_samplers(config, prepare_splits(config)[0])
  assert (train_sampler.n_way, val_sampler.n_way, val_sampler.k_shot) == (4, 3, 2)
  assert val_sampler.sample(0)["support"]["label"].shape[1:] == (3 * 2,)
  train_and_evaluate(config, tmp_path, progress=False)
  val = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
         if json.loads(l)["split"] == "val"]
  assert len(val) == 1 and 0.0 <= val[0]["accuracy"]["mean"] <= 1.0
  settings = lambda **kw: evaluate_workdir(tmp_path, episodes=2, write=False, **kw)["settings"]
  default, flags = settings(), settings(n_way=5, k_shot=1)
  assert (default["n_way"], default["k_shot"]) == (3, 2)   # the config's evaluation way and shot
  assert (flags["n_way"], flags["k_shot"]) == (5, 1)


def test_a_run_without_validation_trains_and_evaluates_its_last_checkpoint(tmp_path, monkeypatch):
  from mmfsl_jax.run.evaluators import episodic as evaluate_module
  from mmfsl_jax.errors import CheckpointError, UserError
  config = tiny({"run.val_episodes": 0, "run.num_steps": 3, "run.checkpoint_every": 3,
                 "run.eval_every": 1})
  assert build.training_samplers(
      config, evaluate_module.prepare_splits(config)[0])[1] is None
  train_and_evaluate(config, tmp_path, progress=False)
  splits = {json.loads(l)["split"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()}
  assert splits == {"train"}                       # no validation records
  checkpoints = Checkpoints(tmp_path, create=False)
  assert checkpoints.best.best_step() is None and checkpoints.latest_step() == 3
  checkpoints.close()
  result = evaluate_module.evaluate_workdir(tmp_path, episodes=2, write=False)
  assert 0.0 <= result["accuracy"]["mean"] <= 1.0   # from the last checkpoint
  # Validation cannot be switched on on resume: "best" would mean something else.
  with pytest.raises(CheckpointError, match="holds a run without validation"):
    train_and_evaluate(tiny({"run.num_steps": 4, "run.checkpoint_every": 3,
                             "run.eval_every": 1}), tmp_path, progress=False)
  # Data without the split asked for (e.g. Omniglot with data.omniglot.test_alphabets=()) is
  # a clear error.
  real = evaluate_module.prepare_splits
  monkeypatch.setattr(evaluate_module, "prepare_splits", lambda c: (
      {k: v for k, v in real(c)[0].items() if k != "test"}, real(c)[1]))
  with pytest.raises(UserError, match="the run's data has no test split"):
    evaluate_module.evaluate_workdir(tmp_path, episodes=2, write=False)
