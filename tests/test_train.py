"""Training loop: exact resume, determinism under a seed, NaN detection."""
import json
import shutil

import jax
import numpy as np
import pytest

from mmfsl_jax import config as config_lib
from mmfsl_jax.checkpoint import Checkpoints
from mmfsl_jax.train import NonFiniteLossError, train_and_evaluate


def tiny(**overrides):
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, [f"{k}={v!r}" for k, v in overrides.items()])
  return config


def final_params(workdir):
  manager = Checkpoints(workdir, create=False).latest
  step = manager.latest_step()
  restored = manager.restore(step)
  return step, jax.tree_util.tree_leaves(restored["params"])


def train_records(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(l) for l in lines if json.loads(l)["split"] == "train"]


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
  whole, crashed = tmp_path / "whole", tmp_path / "crashed"
  config = tiny(checkpoint_every=2, eval_every=2, log_every=1)
  train_and_evaluate(config, whole, progress=False)
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


def test_extending_a_finished_run_continues_it(tmp_path):
  train_and_evaluate(tiny(num_steps=3), tmp_path, progress=False)
  record = train_and_evaluate(tiny(num_steps=5), tmp_path, progress=False)
  assert record["step"] == 5
  steps = [r["step"] for r in train_records(tmp_path)]
  assert steps == sorted(set(steps)) and steps[-1] == 5


def test_different_seed_gives_different_run(tmp_path):
  a = train_and_evaluate(tiny(num_steps=2), tmp_path / "a", progress=False)
  b = train_and_evaluate(tiny(num_steps=2, seed=1), tmp_path / "b", progress=False)
  assert a["loss"] != b["loss"]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_good_checkpoint(tmp_path):
  config = tiny(learning_rate=1e30, grad_clip=0.0, num_steps=6, checkpoint_every=1)
  with pytest.raises(NonFiniteLossError, match=r"non-finite .* at step \d"):
    train_and_evaluate(config, tmp_path, progress=False)
  step, params = final_params(tmp_path)
  assert all(np.isfinite(p).all() for p in params)
