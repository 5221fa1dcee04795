"""The meta-batch split over devices (mmfsl_jax/run/sharding.py), on fake CPU devices.

XLA fixes the number of host devices when the backend starts, so each check runs in a fresh
interpreter with --xla_force_host_platform_device_count (as optax's sharding tests do).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from mmfsl_jax.run import sharding


def run_on_devices(count: int, code: str, env_extra: dict) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}",
             JAX_PLATFORMS="cpu", **env_extra)
  done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                        text=True, env=env, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return dict(json.loads(done.stdout.strip().splitlines()[-1]), stdout=done.stdout)


@pytest.mark.slow
def test_a_sharded_meta_step_equals_the_one_device_step(compilation_cache):
  result = run_on_devices(4, """
    import json, jax, numpy as np
    from jax.sharding import PartitionSpec
    from mmfsl_jax.bench import runner as bench
    from mmfsl_jax.run import sharding
    from mmfsl_jax.errors import UserError
    tiny = ["task.meta_batch=4", "model.image.channels=4", "model.embed_dim=8",
            "task.n_way=2", "task.q_query=2", "data.image_size=12",
            # SGD: Adam's first update is lr * sign(gradient), which turns summation-order
            # noise in a near-zero gradient component into a full-size difference
            "optim.name=sgd", "optim.lr=0.1"]
    mesh = sharding.task_mesh()
    diffs = []
    for chunk in (4, 2):   # all tasks at once; two strided chunks of two (one per 2 devices)
      config, step, state, batch = bench.build_variant("maml", tiny + [f"run.task_chunk={chunk}"])
      state = jax.device_get(state)                       # the step donates its input
      one_state, one_metrics = step(state, batch)         # plain jit: one device
      split = sharding.shard_tasks(batch, mesh)
      images = split["query"]["image"]
      sharded_state, sharded_metrics = step(sharding.replicate(state, mesh), split)
      diffs += jax.tree_util.tree_leaves(jax.tree_util.tree_map(
          lambda a, b: float(np.max(np.abs(np.asarray(a) - b))),
          one_state.params, sharded_state.params))
    try:
      sharding.shard_tasks(jax.tree_util.tree_map(lambda x: x[:3], batch), mesh)
      error = None
    except UserError as e:
      error = str(e)
    timed = bench.run_variant("maml", iters=1, overrides=tiny)    # `mmfsl bench` splits too
    print(json.dumps({
        "devices": mesh.size, "spec": str(images.sharding.spec),
        "shard_rows": sorted({s.data.shape[0] for s in images.addressable_shards}),
        "replicated": all(x.sharding.is_fully_replicated
                          for x in jax.tree_util.tree_leaves(sharded_state.params)),
        "max_param_diff": max(diffs),
        "param_change": float(sum(np.abs(np.asarray(a) - b).sum() for a, b in zip(
            jax.tree_util.tree_leaves(state.params),
            jax.tree_util.tree_leaves(one_state.params)))),
        "loss": [float(one_metrics["loss"]), float(sharded_metrics["loss"])],
        "error": error, "bench_devices": timed.devices, "bench_tasks_per_s": timed.tasks_per_s}))
  """, compilation_cache)
  assert result["devices"] == 4
  assert result["spec"] == str(sharding.PartitionSpec(sharding.TASK_AXIS))
  assert result["shard_rows"] == [1]           # each device holds one of the 4 tasks
  assert result["replicated"]
  assert result["param_change"] > 1e-3         # the step did update the parameters...
  assert result["max_param_diff"] < 1e-6       # ...identically on one device and on four
  assert result["loss"][0] == pytest.approx(result["loss"][1], rel=1e-5)
  assert "3 tasks" in result["error"] and "4 devices" in result["error"]
  assert result["bench_devices"] == 4 and result["bench_tasks_per_s"] > 0


@pytest.mark.slow
def test_training_and_evaluation_split_tasks_over_devices(tmp_path, compilation_cache):
  result = run_on_devices(2, f"""
    import json, pathlib
    from mmfsl_jax.run import config as config_lib
    from mmfsl_jax.errors import UserError
    from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
    from mmfsl_jax.run.train import train_and_evaluate
    workdir = pathlib.Path({str(tmp_path)!r})
    config = config_lib.load_config("tiny")
    config.run.num_steps, config.run.val_episodes = 4, 3  # 3 validation tasks: padded to 4
    train_and_evaluate(config, workdir / "run", progress=False)
    config.run.num_steps, config.run.shard_tasks = 6, False  # the same run, on one device
    final = train_and_evaluate(config, workdir / "run", progress=False)
    evals = {{}}
    for shard in (True, False):                          # 5 test tasks, 2 devices: padded
      saved = json.loads((workdir / "run" / "config.json").read_text())
      saved["run"]["shard_tasks"] = shard
      (workdir / "run" / "config.json").write_text(json.dumps(saved))
      evals[shard] = evaluate_workdir(workdir / "run", episodes=5, write=False)
    odd = config_lib.load_config("tiny")
    odd.task.meta_batch = 3
    try:
      train_and_evaluate(odd, workdir / "odd", progress=False)
      error = None
    except UserError as e:
      error = str(e)
    records = [json.loads(l) for l in (workdir / "run" / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps({{"final_step": final["step"], "error": error,
                      "train_steps": [r["step"] for r in records if r["split"] == "train"],
                      "val_n": [r["accuracy"]["n"] for r in records if r["split"] == "val"],
                      "eval": {{str(k): v["accuracy"] for k, v in evals.items()}}}}))
  """, compilation_cache)
  assert "meta-batch of 2 tasks split over 2 devices" in result["stdout"]
  assert result["final_step"] == 6
  assert result["train_steps"] == [2, 4, 6]
  assert result["val_n"] == [3, 3, 3]            # the padding task is not counted
  sharded, single = result["eval"]["True"], result["eval"]["False"]
  assert sharded["n"] == single["n"] == 5
  assert sharded["mean"] == pytest.approx(single["mean"]) and sharded == pytest.approx(single)
  assert "task.meta_batch" in result["error"] and "run.shard_tasks=False" in result["error"]


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train_in_processes(workdir, overrides, env_extra, processes=2):
  """`mmfsl train --distributed` as `processes` local processes of one device each."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env_extra)
  env.pop("XLA_FLAGS", None)
  runs = [subprocess.Popen(
      [sys.executable, "-c", "import sys; from mmfsl_jax.cli import main; sys.exit(main())",
       "train", "--config", "tiny", "--workdir", str(workdir), "--no-progress", "--distributed",
       "--coordinator", f"localhost:{port}", "--num-processes", str(processes),
       "--process-id", str(i), *overrides],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
      for i in range(processes)]
  outputs = [run.communicate(timeout=600) for run in runs]
  for run, (_, err) in zip(runs, outputs):
    assert run.returncode == 0, err[-3000:]
  return [out for out, _ in outputs]


@pytest.mark.slow
def test_training_across_processes_equals_one_process(tmp_path, compilation_cache):
  """Two processes (as two hosts would be) share the meta-batch, write one log, and resume;
  the parameters match a one-process run's."""
  import jax
  import numpy as np
  from mmfsl_jax.run import config as config_lib
  from mmfsl_jax.run.checkpoint import Checkpoints
  from mmfsl_jax.run.train import train_and_evaluate
  settings = ["optim.name='sgd'", "optim.lr=0.1", "run.log_every=2", "run.eval_every=2",
              "run.checkpoint_every=2"]
  outputs = _train_in_processes(tmp_path / "two", settings + ["run.num_steps=4"],
                                compilation_cache)
  assert "split over 2 devices of 2 processes" in outputs[0]
  assert "split over" not in outputs[1]                   # only process 0 reports
  _train_in_processes(tmp_path / "two", settings + ["run.num_steps=6"],
                      compilation_cache)  # resume
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, settings + ["run.num_steps=6"])
  train_and_evaluate(config, tmp_path / "one", progress=False)

  records = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
  two, one = records(tmp_path / "two"), records(tmp_path / "one")
  assert [(r["step"], r["split"]) for r in two] == [(r["step"], r["split"]) for r in one]
  for a, b in zip(two, one):
    assert a["accuracy"] == pytest.approx(b["accuracy"], rel=1e-4, abs=1e-5)
  import orbax.checkpoint as ocp
  one_state = Checkpoints(tmp_path / "one", create=False).latest.restore(6)
  like = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, one_state)  # one device here
  two_state = Checkpoints(tmp_path / "two", create=False).latest.restore(
      6, args=ocp.args.StandardRestore(like))
  assert int(two_state["step"]) == 6
  for a, b in zip(jax.tree_util.tree_leaves(two_state["params"]),
                  jax.tree_util.tree_leaves(one_state["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # one process reads the two's checkpoints
  from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
  assert evaluate_workdir(tmp_path / "two", episodes=2, write=False)["accuracy"]["n"] == 2
