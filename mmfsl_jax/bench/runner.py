"""`mmfsl bench`: meta-step speed and memory on the canonical MAML workload and its variants.

The canonical workload is the one of the PyTorch peer script (torch_maml_bench.py): Conv4 with
64 filters and batch-statistics batch norm on 28x28x1 random inputs, 5-way 1-shot, 15 queries
per class, meta-batch 32, one inner SGD step of lr 0.4, second-order meta-gradient, Adam.
Each variant changes one thing. The library's own meta-step runs (`make_meta_step` over the
learner `factory.build_learner` builds, image projection and head included), so the figures
are those of training, not of a stripped-down copy.

With several devices (and `shard_tasks`, the default) each meta-batch's tasks are split over
all of them, as in training. For each variant: tasks/s (median over `iters` meta-steps after
one warm-up step), compile time (lowering + XLA compilation of the meta-step), XLA's memory
estimate of the compiled step (arguments + outputs + temporaries), the device's peak memory
where the backend reports it, whether the jitted step compiled more than once, and the
step's matrix-product FLOPs a task and the rate it sustains, beside one large matmul's rate
on the same device in the same run. With
`peer_python` (an interpreter with torch) it runs the peer script on the same variant in the
same process tree, one after the other, and prints the ratio of tasks/s; the peer runs on
the CPU unless `peer_device` names another torch device (peer_scripts/torch_on_device.py
runs it there). With
`pipeline`, it also times the input pipeline producing the same variant's tasks from the real
Omniglot files (data/pipeline.py's `measure_pipeline`, one thread, as training's prefetch
thread runs it) and prints its tasks/s beside the meta-step's, and their ratio: above 1, the
pipeline keeps ahead of the meta-step.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import os
from pathlib import Path
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmfsl_jax.bench.flop_count import jaxpr_flops
from mmfsl_jax.errors import UserError
from mmfsl_jax.meta.step import init_train_state, make_meta_step, resolve_task_chunk
from mmfsl_jax.nn.encoders import efficientnet_lite
from mmfsl_jax.nn.encoders.conv_ops import resolve_impl
from mmfsl_jax.run import build, legacy
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.autotune import machine_name, timed_steps, tuned_choices
from mmfsl_jax.run.data import Encoding, uses_frozen_features
from mmfsl_jax.run.faults import NonFiniteLossError
from mmfsl_jax.run.sharding import replicate, shard_tasks

# The peer's workload, as config overrides (dotted keys of configs/base.py).
CANONICAL = {"data.name": "omniglot", "data.modalities": ("image",), "data.image_size": 28,
             "model.image.encoder": "conv4", "model.image.channels": 64,
             "model.embed_dim": 64, "learner.name": "maml", "inner.steps": 1, "inner.lr": 0.4,
             "inner.first_order": False, "task.n_way": 5, "task.k_shot": 1,
             "task.q_query": 15, "task.meta_batch": 32, "optim.lr": 1e-3,
             "optim.grad_clip": 0.0}
TEXT_LENGTH, VOCAB_SIZE = 12, 200
FROZEN_FEATURE_DIM = efficientnet_lite.FEATURE_DIM   # the default backbone's features
# The peer helpers (torch_peer_extra.py, torch_on_device.py) ship inside the package, so
# `mmfsl bench --peer-python` works from an installed wheel as from a checkout.
BENCH_SCRIPTS = Path(__file__).resolve().parent / "peer_scripts"

# name -> (config changes, the peer variants it is compared with). "l2l" runs only where
# learn2learn is importable by the peer's interpreter.
MAML_PEERS = ("l2l", "loop")
VARIANTS = {
    "maml": ({}, MAML_PEERS),
    "maml_b8": ({"task.meta_batch": 8}, MAML_PEERS),
    "maml_b128": ({"task.meta_batch": 128}, MAML_PEERS),
    # All tasks of the meta-batch vmapped at once, whatever meta_batch is (variant_config).
    "maml_whole_batch": ({"run.task_chunk": "meta_batch"}, MAML_PEERS),
    "maml_steps5": ({"inner.steps": 5}, MAML_PEERS),
    # Ten SGD steps of lr 0.4 diverge on this network (the inner loss passes 1e18: its
    # flattened 2x2x64 features and the projection before the head make the inner problem
    # stiffer than the peer's 1x1x64 -> linear head), so this variant, and its peers, use 0.1.
    "maml_steps10": ({"inner.steps": 10, "inner.lr": 0.1}, MAML_PEERS),
    "fomaml": ({"inner.first_order": True}, ("loop_fo",)),
    "anil": ({"learner.name": "anil"}, ("anil",)),
    "protonet": ({"learner.name": "protonet"}, ("protonet",)),
    "maml_fused": ({"data.modalities": ("image", "text"), "model.fuser": "weighted"}, ()),
    # bfloat16 activations and products (float32 parameters, optimiser state and losses)
    "maml_bf16": ({"model.image.compute_dtype": "bfloat16"}, MAML_PEERS),
    # ProtoNet on a frozen EfficientNet-Lite0's cached features (random [1280] vectors here,
    # as training reads them once computed), and with that backbone fine-tuned inside the
    # meta-step (every weight; 64x64 inputs and 2 tasks a meta-batch keep a CPU step short).
    "protonet_frozen_features": ({"learner.name": "protonet",
                                  "model.image.encoder": "pretrained",
                                  "model.image.head": "none"}, ()),
    "protonet_finetune": ({"learner.name": "protonet", "model.image.encoder": "pretrained",
                           "model.image.trainable": True, "model.image.input_size": 64,
                           "task.meta_batch": 2}, ()),
}
# Peer variants the extra script (torch_peer_extra.py) provides rather than the peer's own.
EXTRA_PEER_VARIANTS = ("anil", "protonet")


@dataclasses.dataclass
class BenchResult:
  variant: str
  backend: str
  meta_batch: int
  inner_steps: int
  tasks_per_s: float
  median_step_s: float
  compile_s: float
  compiled_memory_mb: float
  peak_device_memory_mb: float | None
  compiles: int
  devices: int = 1                             # the meta-batch's tasks split over this many
  peers: dict = dataclasses.field(default_factory=dict)    # peer name -> tasks/s
  ratios: dict = dataclasses.field(default_factory=dict)   # peer name -> ours / theirs
  peer_device: str | None = None               # the torch device the peers ran on
  pipeline_tasks_per_s: float | None = None    # the input pipeline alone, same tasks
  pipeline_headroom: float | None = None       # pipeline tasks/s / meta-step tasks/s
  # Matrix-product and convolution FLOPs a task (flop_count.py; None where a loop's trip count
  # is not static), the rate the step sustains, and this machine's rate on one large float32
  # matmul measured in the same run: how near the step is to the hardware's arithmetic limit.
  gflop_per_task: float | None = None
  gflop_per_s: float | None = None
  gemm_gflop_per_s: float | None = None
  # Minor page faults a timed step (None where the OS does not count them): tens to hundreds
  # of thousands where each step's fresh buffers come in 4 KB pages, hundreds to a few
  # thousand with huge pages (host_memory.py).
  page_faults_per_step: float | None = None
  # What ran it, so that figures from different machines can be told apart: the CPU model
  # (or accelerator kind), and the machine-dependent choices the step was built with.
  machine: str = ""
  settings: dict = dataclasses.field(default_factory=dict)


def variant_config(name: str, overrides: Sequence[str] = ()):
  if name not in VARIANTS:
    raise UserError(f"unknown bench variant {name!r}; choose from {', '.join(VARIANTS)}")
  changes = {**CANONICAL, **VARIANTS[name][0]}
  whole_batch = changes.get("run.task_chunk") == "meta_batch"
  if whole_batch:
    del changes["run.task_chunk"]
  config = config_lib.base_config()
  unknown = sorted(set(changes) - set(config_lib.flat_keys(config)))
  if unknown:   # a slip in the tables above, not the user's
    raise ValueError(f"bench variant {name!r} sets keys the config does not have: {unknown}")
  for key, value in changes.items():
    section, _, leaf = key.rpartition(".")
    config_lib.get_value(config, section)[leaf] = value
  overrides = [legacy.translate_override(o) for o in overrides]
  config_lib.apply_overrides(config, overrides)
  if whole_batch and not any(o.partition("=")[0].strip() == "run.task_chunk" for o in overrides):
    config.run.task_chunk = config.task.meta_batch
  build.check_config(config)
  return config


def random_batch(config, seed: int = 0) -> dict:
  """A task batch shaped like the sampler's: support/query images (and word ids) and labels."""
  rng = np.random.default_rng(seed)
  b, n = config.task.meta_batch, config.task.n_way

  def split(per_class):
    labels = np.tile(np.repeat(np.arange(n), per_class), (b, 1)).astype(np.int32)
    part = {"label": labels}
    if "image" in config.data.modalities and uses_frozen_features(config):
      part["image"] = rng.normal(size=(b, n * per_class, FROZEN_FEATURE_DIM)).astype(np.float32)
    elif "image" in config.data.modalities:
      size = config.data.image_size
      part["image"] = rng.normal(size=(b, n * per_class, size, size,
                                       1)).astype(np.float32)
    if "text" in config.data.modalities:
      part["text"] = rng.integers(1, VOCAB_SIZE, size=(b, n * per_class, TEXT_LENGTH),
                                  dtype=np.int32)
    return part

  return {"support": split(config.task.k_shot), "query": split(config.task.q_query)}


def _compiled_memory_mb(compiled) -> float:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return float("nan")
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
           + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
  return total / 2**20


def _peak_device_memory_mb() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def gemm_size() -> int:
  """2048 on a CPU (~0.1-0.2 s a product); 8192 on accelerators, where 2048 takes well under
  a millisecond and dispatch overhead would hide the rate."""
  return 2048 if jax.default_backend() == "cpu" else 8192


def gemm_gflop_per_s(size: int = 2048, iters: int = 5) -> float:
  """GFLOP/s of one jitted [size, size] @ [size, size] float32 product on the default device
  (median of `iters`; JAX's default matmul precision, as in the meta-step): the practical
  arithmetic peak the bench's figures are read against."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  product = jax.jit(jnp.matmul)
  jax.block_until_ready(product(a, a))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(product(a, a))
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times) / 1e9


def step_settings(config) -> dict:
  """The machine-dependent choices of a variant's step: convolution implementation, tasks
  vmapped at once (None: all), XLA flags and the host allocator's huge pages."""
  return {"conv_impl": resolve_impl(config.model.image.conv_impl),
          "compute_dtype": build.compute_dtype(config),
          "task_chunk": resolve_task_chunk(config.run.task_chunk),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "huge_pages": "glibc.malloc.hugetlb=1" in os.environ.get("GLIBC_TUNABLES", "")}


def _gflop_per_task(jaxpr, meta_batch: int) -> float | None:
  try:
    return jaxpr_flops(jaxpr) / meta_batch / 1e9
  except ValueError:   # a while loop around products (flop_count.py): not countable
    return None


def build_variant(name: str, overrides: Sequence[str] = ()):
  """(config, jitted meta-step, initial state, random task batch) of a variant."""
  config = variant_config(name, overrides)
  encodings = ({"text": Encoding("ids", vocab_size=VOCAB_SIZE)}
               if "text" in config.data.modalities else {})
  if uses_frozen_features(config):
    encodings["image"] = Encoding("features", feature_dim=FROZEN_FEATURE_DIM)
  model = build.build_model(config, encodings, None)
  learner = build.build_learner(config, model)
  optimizer = build.build_optimizer(config)
  batch = jax.tree_util.tree_map(jnp.asarray, random_batch(config))
  one_task = jax.tree_util.tree_map(lambda x: x[0], batch)
  state = init_train_state(learner, optimizer, one_task, config.seed)
  return config, make_meta_step(learner, optimizer, task_chunk=config.run.task_chunk), state, batch


def _choice_overrides(choice: dict) -> list[str]:
  keys = {"conv_impl": "model.image.conv_impl", "task_chunk": "run.task_chunk"}
  return [f"{keys[k]}={v}" for k, v in choice.items()]


def tuned_overrides(name: str, overrides: Sequence[str] = (), *, cache_dir=None) -> list[str]:
  """`overrides` plus the variant's autotuned choices (run/autotune.py): cached, or measured
  now (each candidate's step timed once after its compiling step) and cached."""
  config = variant_config(name, overrides)
  config.run.autotune = "on"

  def measure(choice, best) -> float:
    del best   # one timed step each already
    return run_variant(name, iters=1, overrides=[*overrides, *_choice_overrides(choice)]
                       ).tasks_per_s

  choice = tuned_choices(config, measure, cache_dir=cache_dir,
                         say=lambda message: print(f"{name}: {message}", flush=True))
  return [*overrides, *_choice_overrides(choice)]


def run_variant(name: str, *, iters: int = 5, overrides: Sequence[str] = ()) -> BenchResult:
  config, step, state, batch = build_variant(name, overrides)
  mesh = build.task_mesh(config)
  if mesh is not None:   # several devices: the tasks split over them, as `mmfsl train` does
    state, batch = replicate(state, mesh), shard_tasks(batch, mesh)

  start = time.perf_counter()
  traced = step.trace(state, batch)   # traced once: compiled, and its FLOPs counted
  compiled = traced.lower().compile()
  compile_s = time.perf_counter() - start
  memory_mb = _compiled_memory_mb(compiled)

  state, metrics = step(state, batch)  # warm-up (and the jit cache's one compilation)
  jax.block_until_ready(metrics)
  faults_before = _minor_page_faults()
  state, metrics, times = timed_steps(step, state, batch, iters)
  faults = None if faults_before is None else (_minor_page_faults() - faults_before) / iters
  if not np.isfinite(float(metrics["loss"])):
    raise NonFiniteLossError(
        f"bench variant {name}: the meta-step gave a non-finite loss, so its timings mean "
        f"nothing (inner.steps={config.inner.steps}, inner.lr={config.inner.lr}, "
        f"optim.lr={config.optim.lr}); a smaller inner.lr=... override usually "
        f"keeps the inner loop from diverging")
  median = statistics.median(times)
  gflop = _gflop_per_task(traced.jaxpr, config.task.meta_batch)
  return BenchResult(name, jax.default_backend(), config.task.meta_batch, config.inner.steps,
                     config.task.meta_batch / median, median, compile_s, memory_mb,
                     _peak_device_memory_mb(), step._cache_size(),
                     devices=1 if mesh is None else mesh.size, gflop_per_task=gflop,
                     gflop_per_s=None if gflop is None else gflop * config.task.meta_batch / median,
                     page_faults_per_step=faults, machine=machine_name(),
                     settings=step_settings(config))


def _minor_page_faults() -> int | None:
  try:
    import resource
  except ImportError:   # not a Unix system
    return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def pipeline_tasks_per_s(name: str, *, batches: int, overrides: Sequence[str] = ()) -> float:
  """Tasks/s of the input pipeline sampling this variant's tasks from the real Omniglot files.

  Image only (Omniglot has no text; the fused variant's text inputs are random ids anyway).
  The Omniglot directory is the `data.dir` override or $MMFSL_OMNIGLOT_DIR.
  """
  from mmfsl_jax.run.throughput import measure_pipeline
  config = variant_config(name, overrides)
  config.data.modalities = ("image",)
  return measure_pipeline(config, batches=batches)["tasks_per_second"]


def has_learn2learn(python: str) -> bool:
  probe = "import importlib.util as u; print(u.find_spec('learn2learn') is not None)"
  done = subprocess.run([python, "-c", probe], capture_output=True, text=True)
  return done.stdout.strip() == "True"


def run_peer(name: str, peer_variant: str, python: str, peers_dir: Path, extra_script: Path, *,
             iters: int, overrides: Sequence[str] = (), device: str = "cpu") -> dict:
  """The peer's result for one of its variants on this bench variant (its JSON line), run on
  the torch `device`."""
  config = variant_config(name, overrides)
  script = (extra_script if peer_variant in EXTRA_PEER_VARIANTS
            else peers_dir / "torch_maml_bench.py")
  if not script.is_file():
    raise UserError(f"peer script {script} not found (give --peers-dir)")
  launcher = ([] if device == "cpu" else
              [str(BENCH_SCRIPTS / "torch_on_device.py"), "--device", device])
  command = [python, *launcher, str(script), "--variant", peer_variant,
             "--ways", str(config.task.n_way),
             "--shots", str(config.task.k_shot), "--queries", str(config.task.q_query),
             "--meta-batch", str(config.task.meta_batch), "--steps", str(config.inner.steps),
             "--inner-lr", str(config.inner.lr), "--iters", str(iters)]
  if script == extra_script:
    command += ["--peers-dir", str(peers_dir)]
  done = subprocess.run(command, capture_output=True, text=True)
  lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
  if done.returncode != 0 or not lines:
    raise RuntimeError(f"peer run failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
  return json.loads(lines[-1])


def format_result(r: BenchResult) -> str:
  peak = "-" if r.peak_device_memory_mb is None else f"{r.peak_device_memory_mb:.0f}"
  devices = f"devices={r.devices} " if r.devices > 1 else ""
  line = (f"{r.variant:<13} B={r.meta_batch:<4} steps={r.inner_steps:<3} {devices}"
          f"{r.tasks_per_s:8.2f} tasks/s  step {r.median_step_s:7.3f} s  "
          f"compile {r.compile_s:6.1f} s  compiled mem {r.compiled_memory_mb:8.1f} MB  "
          f"peak dev mem {peak} MB  compiles {r.compiles}")
  if r.gflop_per_task is not None:
    line += f"  {r.gflop_per_task:.2f} GFLOP/task = {r.gflop_per_s:.1f} GFLOP/s"
    if r.gemm_gflop_per_s:
      line += f" ({r.gflop_per_s / r.gemm_gflop_per_s:.0%} of one large matmul's)"
  if r.page_faults_per_step is not None:
    line += f"  {r.page_faults_per_step:.0f} page faults/step"
  where = "" if r.peer_device in (None, "cpu") else f" on {r.peer_device}"
  for peer, tasks_per_s in r.peers.items():
    line += f"  | {peer}{where} {tasks_per_s:.2f} tasks/s, ratio {r.ratios[peer]:.2f}x"
  if r.pipeline_tasks_per_s is not None:
    line += (f"  | input pipeline {r.pipeline_tasks_per_s:.1f} tasks/s = "
             f"{r.pipeline_headroom:.1f}x the meta-step's")
  if r.machine:
    chosen = " ".join(f"{k}={'all' if v is None else v}" for k, v in r.settings.items()
                      if k != "xla_flags" or v)
    line += f"  | {r.machine}; {chosen}"
  return line


def bench(variants: Sequence[str], *, iters: int = 5, overrides: Sequence[str] = (),
          peer_python: str | None = None, peers_dir: str | None = None,
          peer_iters: int | None = None, peer_device: str = "cpu", pipeline: bool = False,
          autotune: bool = False,
          pipeline_batches: int = 20) -> list[BenchResult]:
  """Runs each variant (its peer on `peer_device`, when `peer_python` is given, and the input
  pipeline on the same tasks, when `pipeline`); prints one line each."""
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown:
    raise UserError(f"unknown bench variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
  if iters < 1:
    raise UserError(f"--iters must be at least 1, got {iters}")
  extra_script = BENCH_SCRIPTS / "torch_peer_extra.py"
  peers = Path(peers_dir) if peers_dir else None
  if peer_python and (peers is None or not (peers / "torch_maml_bench.py").is_file()):
    raise UserError(f"--peer-python needs --peers-dir, the directory of torch_maml_bench.py "
                    f"(got {peers_dir!r})")
  with_l2l = bool(peer_python) and has_learn2learn(peer_python)
  if peer_python and not with_l2l:
    print(f"note: learn2learn is not importable by {peer_python}; comparing with the peer's "
          f"plain per-task loop only", flush=True)
  size = gemm_size()
  gemm = gemm_gflop_per_s(size)
  print(f"one large matmul on {jax.default_backend()} ({machine_name()}): {gemm:.1f} GFLOP/s "
        f"(float32, {size}^3)", flush=True)
  results = []
  for name in variants:
    chosen = tuned_overrides(name, overrides) if autotune else list(overrides)
    result = run_variant(name, iters=iters, overrides=chosen)
    result.settings["autotune"] = "on" if autotune else "off"
    result.gemm_gflop_per_s = gemm
    if peer_python and VARIANTS[name][1]:
      result.peer_device = peer_device
    for peer_variant in VARIANTS[name][1] if peer_python else ():
      if peer_variant == "l2l" and not with_l2l:
        continue
      peer = run_peer(name, peer_variant, peer_python, peers, extra_script,
                      iters=peer_iters or iters, overrides=overrides, device=peer_device)
      result.peers[peer["peer"]] = peer["tasks_per_s"]
      result.ratios[peer["peer"]] = result.tasks_per_s / peer["tasks_per_s"]
    if pipeline:
      result.pipeline_tasks_per_s = pipeline_tasks_per_s(name, batches=pipeline_batches,
                                                         overrides=overrides)
      result.pipeline_headroom = result.pipeline_tasks_per_s / result.tasks_per_s
    print(format_result(result), flush=True)
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    results.append(result)
  return results
