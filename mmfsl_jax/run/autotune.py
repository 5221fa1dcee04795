"""The meta-step's machine-dependent choices, measured once per machine and step shape and
cached (as cuDNN's benchmark mode and XLA's autotuner do).

    choices = tuned_choices(config, measure)    # {"conv_impl": ..., "task_chunk": ...}
    step_config = with_choices(config, choices)

The choices: how convolutions run (`model.image.conv_impl`: patch matmuls or XLA's own) and
how many tasks are vmapped at once (`run.task_chunk`: one, or the whole meta-batch). Only
those the config leaves automatic ("auto", 0) are tuned; a value it sets is kept. With
`run.autotune=on` (or `auto`, for runs of at least `MIN_STEPS` steps, which a measurement of
a few steps per candidate would not slow noticeably), candidate meta-steps are compiled
and timed on one batch of the run's own tasks the first time (the rules' choice, each
setting changed alone, and the changes that helped together), and the fastest is stored in
`<cache dir>/autotune.json` under a key naming the machine (CPU model and cores, or the
accelerator), the JAX and mmfsl_jax versions and the step's shape; later runs read it.
Otherwise the fixed rules apply (conv_ops.resolve_impl, step.resolve_task_chunk: matmuls and
one task at a time on CPUs, XLA convolutions and all tasks at once on accelerators). The
choices change speed only: every candidate computes the same step (tests/test_conv_ops.py,
tests/test_meta.py check them equal).
"""
from __future__ import annotations

from collections.abc import Callable
import json
import os
import platform
import tempfile
import time
import warnings

import jax

import mmfsl_jax
from mmfsl_jax.data.cache import default_cache_dir
from mmfsl_jax.meta.step import init_train_state, make_meta_step, resolve_task_chunk
from mmfsl_jax.nn.encoders.conv_ops import resolve_impl

MODES = ("auto", "on", "off")
MIN_STEPS = 200
CACHE_FILE = "autotune.json"
_CONV_ENCODERS = ("conv4", "resnet12")


def machine_name() -> str:
  """The CPU's model name on a CPU backend (/proc/cpuinfo, else the platform's), with its
  core count; the device kind of an accelerator."""
  if jax.default_backend() != "cpu":
    return f"{jax.devices()[0].device_kind} x{jax.device_count()}"
  model = ""
  try:
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), "")
  except OSError:
    pass
  return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _has_convolutions(config) -> bool:
  from mmfsl_jax.data.modalities import kind_of
  return (config.model.image.encoder in _CONV_ENCODERS
          and any(kind_of(m) == "image" for m in config.data.modalities))


def candidate_options(config) -> dict[str, tuple]:
  """Each automatic setting's options (the rules' choice among them)."""
  options = {}
  if _has_convolutions(config) and config.model.image.conv_impl == "auto":
    options["conv_impl"] = ("matmul", "xla")
  batch = int(config.task.meta_batch)
  if config.run.task_chunk == 0 and batch > 1:
    options["task_chunk"] = (1, batch)
  return options


def rule_choices(config) -> dict:
  """The fixed rules' choices (no measurement), for the settings the config leaves automatic."""
  out = {}
  if _has_convolutions(config) and config.model.image.conv_impl == "auto":
    out["conv_impl"] = resolve_impl("auto")
  if config.run.task_chunk == 0:
    chunk = resolve_task_chunk(0)
    out["task_chunk"] = int(config.task.meta_batch) if chunk is None else chunk
  return out


def shape_key(config) -> str:
  """What the cached choice is valid for: machine, versions, and the step's shape."""
  from mmfsl_jax.run.build import compute_dtype
  from mmfsl_jax.run.data import dataset_image_size, image_channels
  c = config
  shape = {
      "learner": c.learner.name, "modalities": list(c.data.modalities),
      "encoder": c.model.image.encoder, "channels": c.model.image.channels,
      "resnet_channels": list(c.model.image.resnet_channels),
      "image": [dataset_image_size(c), image_channels(c)], "pool": c.model.image.pool,
      "compute_dtype": compute_dtype(c), "embed_dim": c.model.embed_dim,
      "task": [c.task.n_way, c.task.k_shot, c.task.q_query, c.task.meta_batch],
      "inner": [c.inner.steps, bool(c.inner.first_order), bool(c.inner.checkpoint)],
      "text": c.model.text.encoder, "fuser": c.model.fuser}
  return json.dumps([machine_name(), jax.__version__, mmfsl_jax.__version__, shape],
                    sort_keys=True)


def _read(path) -> dict:
  try:
    with open(path) as f:
      stored = json.load(f)
    return stored if isinstance(stored, dict) else {}
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as error:
    warnings.warn(f"ignoring the unreadable autotune cache {path}: {error}", stacklevel=3)
    return {}


def _write(path, stored: dict) -> None:
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(handle, "w") as f:
      json.dump(stored, f, indent=1, sort_keys=True)
    os.replace(temporary, path)
  except OSError as error:
    warnings.warn(f"could not write the autotune cache {path}: {error}", stacklevel=3)


def wants_measurement(config) -> bool:
  mode = config.run.autotune
  return mode == "on" or (mode == "auto" and config.run.num_steps >= MIN_STEPS)


def tuned_choices(config, measure: Callable[[dict, float | None], float], *, cache_dir=None,
                  say: Callable[[str], None] = lambda message: None) -> dict:
  """The choices for the config's automatic settings: the cached measurement, else (when
  `wants_measurement`) a new one, stored; else the rules'. {} when the config sets them all.
  `measure(choice, best)` returns the choice's tasks/s; `best` is the fastest rate measured so
  far (None at first: the rules' choice is measured first), below half of which it may stop
  timing and return the rate it has."""
  options = candidate_options(config)
  if not options:
    return {}
  if not wants_measurement(config):
    return rule_choices(config)
  path = os.path.join(cache_dir or default_cache_dir(), CACHE_FILE)
  key = shape_key(config)
  stored = _read(path)
  if key in stored and all(k in stored[key]["choice"] for k in options):
    choice = {k: stored[key]["choice"][k] for k in options}
    say(f"autotune: {_describe(choice)} (measured before, {path})")
    return choice
  rates = _search(options, {k: rule_choices(config)[k] for k in options}, measure)
  best = max(rates, key=lambda rate_option: rate_option[0])[1]
  stored = _read(path)   # again: another run may have written meanwhile
  stored[key] = {"choice": best, "tasks_per_s": [[o, round(r, 3)] for r, o in rates]}
  _write(path, stored)
  say("autotune: " + ", ".join(f"{_describe(o)} {r:.2f} tasks/s" for r, o in rates)
      + f" -> {_describe(best)} (stored in {path})")
  return best


def _search(options: dict[str, tuple], rule: dict, measure) -> list[tuple[float, dict]]:
  """[(tasks/s, choice)]: the rules' choice, then each setting changed alone, then the
  changes that beat the rules' choice together (when two or more did). Not the whole product:
  a setting far slower alone (XLA's convolutions on a CPU: ~37x, the bench's MAML) is not
  timed again beside every other."""
  def timed(choice):
    rates.append((measure(choice, max((r for r, _ in rates), default=None)), choice))
    return rates[-1][0]

  rates: list[tuple[float, dict]] = []
  base = timed(dict(rule))
  better = {}
  for key, values in options.items():
    for value in values:
      if value != rule[key] and timed({**rule, key: value}) > base:
        better[key] = value
  if len(better) > 1:
    timed({**rule, **better})
  return rates


def timed_steps(step, state, batch, count: int, *, stop_after: float | None = None):
  """(state, metrics, seconds of each step): `count` calls of the jitted `step` on `batch`,
  each waited for; fewer when one took longer than `stop_after` seconds. The caller has run
  a compiling step first."""
  times, metrics = [], None
  for _ in range(count):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
    if stop_after is not None and times[-1] > stop_after:
      break
  return state, metrics, times


def tasks_per_second(learner, optimizer, example_task, batch, *, seed: int, task_chunk: int,
                     steps: int = 3, give_up_below: float | None = None) -> float:
  """Tasks per second of `learner`'s meta-step on `batch` (the median of `steps` after a
  compiling one, chunked by `task_chunk`); after one step when that is already below
  `give_up_below`."""
  state = init_train_state(learner, optimizer, example_task, seed)
  step = make_meta_step(learner, optimizer, task_chunk=task_chunk)
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  tasks = batch["query"]["label"].shape[0]
  _, _, times = timed_steps(step, state, batch, steps,
                            stop_after=tasks / give_up_below if give_up_below else None)
  return tasks / sorted(times)[len(times) // 2]


def _describe(choice: dict) -> str:
  return " ".join(f"{k}={v}" for k, v in choice.items())


def with_choices(config, choices: dict):
  """A copy of `config` with the choices set (conv_impl, task_chunk)."""
  config = config.copy_and_resolve_references()
  if "conv_impl" in choices:
    config.model.image.conv_impl = choices["conv_impl"]
  if "task_chunk" in choices:
    config.run.task_chunk = int(choices["task_chunk"])
  return config
