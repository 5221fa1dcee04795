"""`mmfsl bench` on tiny shapes: it runs, prints every field, and computes peer ratios
(the peer here is a stand-in script that prints a fixed JSON line, not PyTorch)."""
import contextlib
import io
import json
import os
import subprocess
import sys
import types

import jax
import pytest

from mmfsl_jax.bench import runner as bench
from mmfsl_jax.cli import main
from mmfsl_jax.run import config as config_lib
from omniglot_data import DATA_DIR, needs_data

TINY = ["task.meta_batch=2", "model.image.channels=4", "model.embed_dim=8", "task.n_way=2",
        "task.q_query=1", "data.image_size=12"]
FIELDS = {"variant", "backend", "meta_batch", "inner_steps", "tasks_per_s", "median_step_s",
          "compile_s", "compiled_memory_mb", "peak_device_memory_mb", "compiles", "devices",
          "peers",
          "ratios", "peer_device", "pipeline_tasks_per_s", "pipeline_headroom", "gflop_per_task",
          "gflop_per_s", "gemm_gflop_per_s", "page_faults_per_step", "machine", "settings"}
FAKE_PEER = '''import json, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print("warming up")
print(json.dumps({"peer": "torch-" + args["--variant"], "tasks_per_s": 4.0,
                  "meta_batch": int(args["--meta-batch"]), "steps": int(args["--steps"])}))
'''


def _run(argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(argv)
  return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_bench_prints_every_field_and_ratios_against_a_peer(tmp_path, compilation_cache):
  (tmp_path / "torch_maml_bench.py").write_text(FAKE_PEER)
  code, out, err = _run(["bench", "--variants", "maml,fomaml", "--iters", "2", "--peer-python",
                         sys.executable, "--peers-dir", str(tmp_path), *TINY])
  assert code == 0, err
  records = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
  assert [r["variant"] for r in records] == ["maml", "fomaml"]
  for r in records:
    assert set(r) == FIELDS
    assert r["tasks_per_s"] > 0 and r["compile_s"] > 0 and r["compiled_memory_mb"] > 0
    assert r["compiles"] == 1 and r["meta_batch"] == 2
    assert r["gemm_gflop_per_s"] > 0
    assert r["page_faults_per_step"] >= 0
    assert r["gflop_per_s"] == pytest.approx(r["gflop_per_task"] * r["tasks_per_s"])
  # First order drops the second-order products, so it counts fewer FLOPs than MAML.
  assert 0 < records[1]["gflop_per_task"] < records[0]["gflop_per_task"]
  assert "GFLOP/task" in out and "one large matmul" in out and "page faults/step" in out
  # learn2learn is not importable by this interpreter: only the plain loops are compared.
  assert "learn2learn is not importable" in out
  assert records[0]["peers"] == {"torch-loop": 4.0}
  assert records[1]["peers"] == {"torch-loop_fo": 4.0}
  assert records[0]["peer_device"] == "cpu"
  assert records[0]["ratios"]["torch-loop"] == pytest.approx(records[0]["tasks_per_s"] / 4.0)
  assert "ratio" in out and "tasks/s" in out
  # every line names the machine and the step's machine-dependent choices (CPU here:
  # convolutions as patch matmuls, one task at a time)
  machine = bench.machine_name()
  assert machine and machine.endswith(f"{os.cpu_count()} cores")
  for r in records:
    assert r["machine"] == machine
    assert r["settings"]["conv_impl"] == "matmul" and r["settings"]["task_chunk"] == 1
  lines = [l for l in out.splitlines() if l.startswith(("maml ", "fomaml "))]
  assert len(lines) == 2
  assert all(l.endswith(f"| {machine}; conv_impl=matmul compute_dtype=float32 task_chunk=1 "
                        f"huge_pages={records[0]['settings']['huge_pages']} autotune=off")
             for l in lines), lines
  assert any(l.startswith("one large matmul") and f"({machine})" in l for l in out.splitlines())


def test_a_peer_on_another_device_runs_through_the_device_launcher(tmp_path, monkeypatch):
  commands = []

  def fake_run(command, **kwargs):
    commands.append(command)
    line = '{"peer": "torch-loop", "tasks_per_s": 9.0}\n'
    return subprocess.CompletedProcess(command, 0, stdout=line, stderr="")

  monkeypatch.setattr(bench.subprocess, "run", fake_run)
  extra = bench.BENCH_SCRIPTS / "torch_peer_extra.py"
  (tmp_path / "torch_maml_bench.py").write_text("")
  on_cpu = bench.run_peer("maml", "loop", "py", tmp_path, extra, iters=2, overrides=TINY)
  on_gpu = bench.run_peer("maml", "loop", "py", tmp_path, extra, iters=2, overrides=TINY,
                          device="cuda")
  assert on_cpu == on_gpu == {"peer": "torch-loop", "tasks_per_s": 9.0}
  script = str(tmp_path / "torch_maml_bench.py")
  assert commands[0][:2] == ["py", script]
  launcher = str(bench.BENCH_SCRIPTS / "torch_on_device.py")
  assert commands[1][:5] == ["py", launcher, "--device", "cuda", script]
  assert commands[1][5:] == commands[0][2:]
  assert (bench.BENCH_SCRIPTS / "torch_on_device.py").is_file()


def _leaf(config, dotted):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


@pytest.mark.parametrize("variant", list(bench.VARIANTS))
def test_every_variant_builds_and_its_meta_step_traces(variant, compilation_cache):
  config, step, state, batch = bench.build_variant(variant, TINY)
  new_state, metrics = jax.eval_shape(step, state, batch)
  assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
  assert metrics["loss"].shape == () and batch["query"]["label"].shape[0] == config.task.meta_batch
  # The variant tables name existing dotted keys (a ConfigDict would take a misspelt one as a
  # new field), and each change is in the config the variant builds, unless TINY replaces it.
  keys, replaced = config_lib.flat_keys(config_lib.base_config()), {o.split("=")[0] for o in TINY}
  for key, value in {**bench.CANONICAL, **bench.VARIANTS[variant][0]}.items():
    assert key in keys, key
    if key not in replaced:
      expected = config.task.meta_batch if value == "meta_batch" else value
      assert _leaf(config, key) == expected, key
  assert config_lib.flat_keys(config) == keys


def test_feature_text_without_the_training_split_is_a_clear_error():
  from mmfsl_jax.run.data import Encoding
  from mmfsl_jax.errors import ConfigError
  from mmfsl_jax.run.build import build_model
  config = bench.variant_config("maml_fused", TINY)
  with pytest.raises(ConfigError, match="training split"):
    build_model(config, {"text": Encoding("features", feature_dim=8)}, None)


@pytest.mark.slow
def test_a_diverging_variant_is_an_error_not_a_timing(compilation_cache):
  code, out, err = _run(["bench", "--variants", "maml", "--iters", "1", *TINY, "inner.lr=1e30"])
  assert code == 2 and "non-finite loss" in err and "inner.lr=1e+30" in err
  assert "tasks/s" not in out


def test_bench_refuses_unknown_variants_and_a_peer_without_its_directory(tmp_path):
  code, _, err = _run(["bench", "--variants", "mamll"])
  assert code == 2 and "maml_b8" in err
  code, _, err = _run(["bench", "--peer-python", sys.executable, "--peers-dir", str(tmp_path)])
  assert code == 2 and "torch_maml_bench.py" in err


@pytest.mark.slow
@needs_data
def test_bench_puts_the_input_pipeline_beside_the_meta_step(tmp_path, monkeypatch,
                                                           compilation_cache):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))   # the decoded-Omniglot cache
  # maml with TINY: the program the test above compiled (a compilation-cache hit).
  code, out, err = _run(["bench", "--variants", "maml", "--iters", "1", "--pipeline",
                         f"data.dir={DATA_DIR}", *TINY])
  assert code == 0, err
  (record,) = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
  assert record["pipeline_tasks_per_s"] > 0
  assert record["pipeline_headroom"] == pytest.approx(
      record["pipeline_tasks_per_s"] / record["tasks_per_s"])
  assert "input pipeline" in out and "the meta-step's" in out


def test_the_whole_batch_variant_vmaps_every_task_at_any_meta_batch():
  chunk = lambda name, overrides=(): bench.variant_config(name, overrides).run.task_chunk
  assert chunk("maml_whole_batch") == 32
  assert chunk("maml_whole_batch", ["task.meta_batch=64"]) == 64
  assert chunk("maml_whole_batch", ["task.meta_batch=64", "run.task_chunk=8"]) == 8
  assert chunk("maml", ["task.meta_batch=64"]) == 0   # automatic


def test_bench_autotune_times_each_candidate_once_and_then_reads_the_cache(tmp_path,
                                                                           monkeypatch):
  timed = []

  def fake_run_variant(name, *, iters=5, overrides=()):
    assert iters == 1
    timed.append(tuple(overrides))
    fast = "model.image.conv_impl=xla" in overrides and "run.task_chunk=1" in overrides
    return types.SimpleNamespace(tasks_per_s=3.0 if fast else 1.0)

  monkeypatch.setattr(bench, "run_variant", fake_run_variant)
  chosen = bench.tuned_overrides("maml", TINY, cache_dir=tmp_path)
  assert chosen[-2:] == ["model.image.conv_impl=xla", "run.task_chunk=1"]
  # the rules' choice, then each setting changed alone (chunking alone did not help, so no
  # combination)
  assert len(timed) == 3 and chosen[:len(TINY)] == list(TINY)
  assert bench.tuned_overrides("maml", TINY, cache_dir=tmp_path) == chosen and len(timed) == 3
