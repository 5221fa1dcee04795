"""Configs and workdirs of the flat layout (before configs/base.py's sections) still work.

tests/data/workdir_v0_{protonet,maml}/ were made by the last version with flat config keys:

    mmfsl train --config tiny --workdir workdir_v0_protonet
    mmfsl eval --workdir workdir_v0_protonet --episodes 10
    mmfsl train --config tiny --workdir workdir_v0_maml method=maml inner_steps=2 \
        eval_inner_steps=3 'modalities=("image",)'
    mmfsl eval --workdir workdir_v0_maml --episodes 10

(their config.json is flat; metrics.jsonl, eval.json and the checkpoints are that version's).
"""
import json
import shutil
import warnings
from pathlib import Path

import pytest

from mmfsl_jax.cli import main
from mmfsl_jax.errors import CheckpointError, ConfigError
from mmfsl_jax.run import build, legacy
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
from mmfsl_jax.run.train import train_and_evaluate
from mmfsl_jax.run.workdir import workdir_config

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
OLD_RUNS = {"protonet": [], "maml": ["method=maml", "inner_steps=2", "eval_inner_steps=3",
                                     "modalities=('image',)"]}
NEW_RUNS = {"protonet": [], "maml": ["learner.name=maml", "inner.steps=2", "inner.eval_steps=3",
                                     "data.modalities=('image',)"]}


def records(path: Path) -> list[dict]:
  """metrics.jsonl without its wall-clock times."""
  return [{k: v for k, v in json.loads(line).items() if k != "time"}
          for line in path.read_text().splitlines()]


def close_records(a: list[dict], b: list[dict], rel: float) -> bool:
  if [sorted(r) for r in a] != [sorted(r) for r in b]:
    return False
  return all(r[k] == pytest.approx(s[k], rel=rel, abs=1e-7) if isinstance(r[k], float)
             else r[k] == s[k] for r, s in zip(a, b) for k in r)


def test_every_old_key_has_a_home_and_no_two_share_one():
  base_keys = set(config_lib.flat_keys(config_lib.base_config()))
  targets = [legacy.translate_key(k) for k in legacy.RENAMED if k not in ("shapes", "omniglot")]
  assert len(set(targets)) == len(targets)
  assert set(targets) <= base_keys
  grouped = {k for k in base_keys if k.startswith(("data.shapes.", "data.omniglot."))}
  # Keys added since the flat layout have no old name.
  added = {k for k in base_keys if k.startswith((
      "data.files.", "model.vector.", "learner.tip_adapter.", "learner.linear_probe.",
      "learner.lp_plus_plus."))} | {"learner.support_loss_weight"} | {
      f"model.image.{k}" for k in ("pretrained", "input_size", "trainable", "finetune", "head",
                                 "lora_rank", "compute_dtype")
  } | {"model.text.head", "model.text.prompts", "run.autotune"}
  assert set(targets) | grouped | added | {"seed", "smoke"} == base_keys


def test_old_flat_overrides_warn_and_equal_the_dotted_ones():
  old = ["method=anil", "n_way=3", "inner_params=.*", "shapes.seed=4", "omniglot.resize=bilinear",
         "learning_rate=0.01", "eval_inner_steps=2"]
  new = ["learner.name=anil", "task.n_way=3", "inner.params=", "data.shapes.seed=4",
         "data.omniglot.resize=bilinear", "optim.lr=0.01", "inner.eval_steps=2"]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    translated = config_lib.apply_overrides(config_lib.base_config(), old)
  assert [w.category for w in caught] == [FutureWarning] * len(old)
  assert "config key 'method' is now 'learner.name'" in str(caught[0].message)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    dotted = config_lib.apply_overrides(config_lib.base_config(), new)
  assert config_lib.config_to_dict(translated) == config_lib.config_to_dict(dotted)
  assert translated.inner.params == "" and translated.optim.lr == 0.01


def test_an_unknown_key_is_unknown_in_both_layouts():
  with pytest.raises(ConfigError, match="unknown config key 'n_wya'"):
    config_lib.apply_overrides(config_lib.base_config(), ["n_wya=3"])


@pytest.mark.parametrize("path", sorted(REPO.glob("experiments/**/config.json")),
                         ids=lambda p: str(p.parent.relative_to(REPO / "experiments")))
def test_checked_in_experiment_configs_translate_to_valid_sectioned_configs(path):
  saved = json.loads(path.read_text())
  config = config_lib.config_from_dict(config_lib.saved_config(saved))
  build.check_config(config)
  if legacy.is_flat(saved):   # runs made before the sections; newer ones are read as they are
    assert config.learner.name == saved["method"] and config.task.n_way == saved["n_way"]
    assert config.data.name == saved["dataset"] and config.run.num_steps == saved["num_steps"]
    assert tuple(config.data.modalities) == tuple(saved["modalities"])
  else:
    assert config_lib.config_to_dict(config) == config_lib.with_defaults(
        saved, config_lib.config_to_dict(config_lib.base_config()))


def test_a_saved_config_with_a_key_no_version_knows_is_refused():
  with pytest.raises(ConfigError, match="does not know: bogus"):
    config_lib.saved_config({"method": "maml", "bogus": 1})


@pytest.fixture
def old_workdir(tmp_path):
  def copy(name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / f"workdir_v0_{name}", target)
    return target
  return copy


@pytest.mark.slow
@pytest.mark.parametrize("name", ["protonet", "maml"])
def test_an_old_workdir_evaluates_as_it_did(old_workdir, name):
  workdir = old_workdir(name)
  with pytest.warns(FutureWarning, match="flat config layout of an earlier version"):
    config = workdir_config(workdir)
  assert config.learner.name == name and config.run.num_steps == 6
  before = json.loads((workdir / "eval.json").read_text())
  after = evaluate_workdir(workdir, episodes=10, write=False)
  assert after["settings"]["inner_steps"] == before["settings"]["inner_steps"]
  for metric in ("accuracy", "macro_recall", "macro_f1"):
    assert after[metric]["n"] == before[metric]["n"] == 10
    assert after[metric]["mean"] == pytest.approx(before[metric]["mean"], abs=1e-6)


@pytest.mark.slow
def test_old_and_new_layouts_train_the_same_run_as_the_old_version(tmp_path):
  # Same seed, same settings: the flat keys (translated), the dotted keys and the old version's
  # own run (tests/data) give the same metrics. Old vs new layout: exactly, in one process.
  # Against the stored run: to float tolerance, since it may come from another CPU.
  for layout, runs in (("old", OLD_RUNS), ("new", NEW_RUNS)):
    assert main(["train", "--config", "tiny", "--workdir", str(tmp_path / layout / "maml"),
                 "--no-progress", *runs["maml"]]) == 0
  old, new = (records(tmp_path / layout / "maml" / "metrics.jsonl") for layout in ("old", "new"))
  assert old == new
  assert len(new) == 5 and {r["split"] for r in new} == {"train", "val"}
  stored = records(DATA / "workdir_v0_maml" / "metrics.jsonl")
  assert close_records(new, stored, rel=1e-4), (new, stored)
  saved = json.loads((tmp_path / "new" / "maml" / "config.json").read_text())
  assert not legacy.is_flat(saved) and saved["inner"]["eval_steps"] == 3


@pytest.mark.slow
def test_an_old_workdir_resumes_where_it_stopped_and_continues_as_a_new_run(old_workdir,
                                                                            tmp_path, capsys):
  workdir = old_workdir("protonet")
  # The old command, extended by two steps (run.num_steps may change on resume).
  assert main(["train", "--config", "tiny", "--workdir", str(workdir), "--no-progress",
               "num_steps=8"]) == 0
  printed = capsys.readouterr()
  assert "resuming from step 6" in printed.out + printed.err
  saved = json.loads((workdir / "config.json").read_text())
  assert not legacy.is_flat(saved) and saved["run"]["num_steps"] == 8
  metadata = json.loads((workdir / "checkpoints" / "8" / "_CHECKPOINT_METADATA").read_text())
  assert metadata["custom_metadata"]["params_layout"] == 2   # saved in this version's layout
  fresh = tmp_path / "fresh"
  train_and_evaluate(config_lib.apply_overrides(config_lib.load_config("tiny"),
                                                ["run.num_steps=8"]), fresh, progress=False)
  resumed_records, fresh_records = records(workdir / "metrics.jsonl"), records(
      fresh / "metrics.jsonl")
  assert [r["step"] for r in resumed_records] == [r["step"] for r in fresh_records]
  assert close_records(resumed_records, fresh_records, rel=1e-4)


def test_protonet_checkpoints_of_the_first_params_layout_are_read_into_the_new_one(old_workdir):
  # Layout 1 kept ProtoNet's params as the model's own; now every learner's are {"model": ...}.
  from mmfsl_jax.run.checkpoint import PARAMS_LAYOUT, Checkpoints
  from mmfsl_jax.run.data import prepare_splits
  from mmfsl_jax.run.workdir import restore_for
  import jax
  import numpy as np
  workdir = old_workdir("protonet")
  saved = json.loads((workdir / "checkpoints" / "6" / "_CHECKPOINT_METADATA").read_text())
  assert "params_layout" not in saved["custom_metadata"] and PARAMS_LAYOUT == 2
  config = workdir_config(workdir)
  splits, encoding = prepare_splits(config)
  learner = build.build_learner(config, build.build_model(config, encoding, splits["train"]))
  sampler = build.task_sampler(config, splits["test"], role="test", batch_size=1)
  example = jax.tree_util.tree_map(lambda x: x[0], sampler.sample(0))
  state = restore_for(workdir, learner, config, example)
  assert set(state.params) == {"model"} and int(state.step) == 6
  # Without the translation the same checkpoints do not fit the new layout.
  like = jax.eval_shape(lambda: state)
  plain = Checkpoints(workdir, create=False)
  try:
    with pytest.warns(Warning), pytest.raises(CheckpointError):
      plain.restore_best(like)
  finally:
    plain.close()
  # The restored leaves are the saved ones: their fingerprints match (checked on restore),
  # and the prototypes they give are the old run's (test_an_old_workdir_evaluates_as_it_did).
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.params))
