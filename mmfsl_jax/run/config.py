"""Configs in and out: loading by name or file, `key=value` overrides, JSON, comparison.

A config is a built-in name (a module of `mmfsl_jax.configs`) or a Python file with a
`get_config()` returning an `ml_collections.ConfigDict` in the sections of
configs/base.py. Overrides are ml_collections' own command-line overrides
(`config_flags`): dotted keys, values parsed by the type of the field they replace, an
unknown key an error that names the close ones. Old flat keys are translated
(run/legacy.py). This module reads no setting; run/build.py does.
"""
from __future__ import annotations

from collections.abc import Sequence
import ast
import copy
import difflib
import importlib
import importlib.util
import json
from pathlib import Path
import pkgutil

import ml_collections

from mmfsl_jax import configs as _configs_pkg
from mmfsl_jax.configs.base import base_config
from mmfsl_jax.errors import ConfigError
from mmfsl_jax.run import legacy

__all__ = ["apply_overrides", "base_config", "builtin_config_names", "config_differences",
           "config_from_dict", "config_to_dict", "flat_keys", "get_value", "load_config",
           "saved_config", "shrink_for_smoke", "with_defaults"]


def builtin_config_names() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(_configs_pkg.__path__))


def load_config(name_or_path: str) -> ml_collections.ConfigDict:
  """A built-in config by name, or `get_config()` of a Python file."""
  path = Path(name_or_path)
  if path.suffix == ".py":
    if not path.is_file():
      raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"_mmfsl_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  elif name_or_path in builtin_config_names():
    module = importlib.import_module(f"mmfsl_jax.configs.{name_or_path}")
  else:
    raise ConfigError(f"unknown config {name_or_path!r}: give a built-in name "
                      f"({', '.join(builtin_config_names())}) or a .py file with get_config()")
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config {name_or_path!r} has no get_config() function")
  config = module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() of {name_or_path!r} must return an ml_collections.ConfigDict")
  return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf's dotted key."""
  keys = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys += flat_keys(v, f"{prefix}{k}.")
    else:
      keys.append(prefix + k)
  return keys


# The sections in the order configs/base.py lists them (training settings before eval's).
SECTIONS = ("data", "task", "model", "learner", "inner", "optim", "run", "eval")


def _section_rank(key: str) -> int:
  section = key.split(".")[0]
  return SECTIONS.index(section) if section in SECTIONS else -1


def _check_key(key: str, valid: list[str]) -> None:
  if key in valid:
    return
  close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6) if key else []
  if not close and key:   # a typo of a leaf given without its section: n_wya -> task.n_way
    by_leaf: dict[str, list[str]] = {}
    for k in valid:
      by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    leaf = key.rsplit(".", 1)[-1]
    close = [k for name in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6)
             for k in sorted(by_leaf[name], key=_section_rank)][:3]
  hint = f" Did you mean {', '.join(close)}?" if close else ""
  sections = sorted({k.split(".")[0] for k in valid if "." in k})
  raise ConfigError(f"unknown config key {key!r}.{hint} Keys are dotted names in the sections "
                    f"{', '.join(sections)} (configs/base.py); valid keys: {', '.join(valid)}")


def get_value(config, key: str):
  """The value at a dotted key."""
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _unquoted(text: str) -> str:
  """'maml' or "maml" (a Python string literal, as in a list of overrides) -> maml."""
  if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
    return value if isinstance(value, str) else text
  return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]):
  """Sets each 'key=value' (dotted keys; old flat keys are translated); returns the config,
  changed in place."""
  from absl import flags
  from ml_collections import config_flags

  valid = flat_keys(config)
  argv, given = ["mmfsl"], []
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = legacy.translate_override(item).split("=", 1)
    key, text = key.strip(), text.strip()
    _check_key(key, valid)
    default = get_value(config, key)
    if isinstance(default, str):
      text = _unquoted(text)
    elif isinstance(default, bool) and text.lower() not in ("true", "false"):
      _bad(key, text, "expected a boolean: true or false")
    argv.append(f"--config.{key}={text}")
    given.append((key, text, default))
  if not given:
    return config
  work = copy.deepcopy(config)   # all or nothing: `config` changes only if every item is good
  holder = flags.FlagValues()   # private: nothing reaches absl's global FLAGS
  config_flags.DEFINE_config_dict("config", work, flag_values=holder, sys_argv=argv)
  try:
    holder(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    message = str(error).replace("flag --config.", "").replace("--config.", "")
    raise ConfigError(f"bad override: {message} (types follow configs/base.py: e.g. "
                      f"data.modalities=\"('image',)\", task.n_way=20, learner.name=maml)") \
        from None
  for key, text, default in given:
    if isinstance(default, tuple) and default:
      _check_elements(key, text, get_value(work, key), type(default[0]))
  config.update(work)
  return config


def _bad(key: str, text: str, what: str):
  raise ConfigError(f"bad override: {key}={text}: {what} (types follow configs/base.py)")


def _check_elements(key: str, text: str, value: tuple, kind: type) -> None:
  """The elements of a parsed tuple are of the default's element type (ints for floats)."""
  def fits(x):
    if isinstance(x, bool):
      return kind is bool
    return isinstance(x, kind) or (kind is float and isinstance(x, int))
  if not all(fits(x) for x in value):
    _bad(key, text, f"expected a tuple of {kind.__name__} values, got {value!r}")


def shrink_for_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `smoke=True` switch: a run of a few seconds with the same code paths."""
  config = config.copy_and_resolve_references()
  config.data.shapes.examples_per_class = 12
  config.data.shapes.classes_per_split = (10, 6, 6)
  config.run.num_steps = min(config.run.num_steps, 4)
  config.run.eval_every = config.run.checkpoint_every = 2
  config.run.log_every = 1
  config.run.val_episodes = config.eval.episodes = 4
  config.task.q_query = config.eval.q_query = 2
  config.task.meta_batch = 2
  return config


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json())


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
  """Inverse of `config_to_dict` (JSON lists come back as tuples)."""
  return ml_collections.ConfigDict(_tuples(values))


def with_defaults(saved: dict, defaults: dict) -> dict:
  """`saved` with the keys it lacks taken from `defaults` (recursively)."""
  merged = copy.deepcopy(saved)
  for key, value in defaults.items():
    if key not in merged:
      merged[key] = copy.deepcopy(value)
    elif isinstance(value, dict) and isinstance(merged[key], dict):
      merged[key] = with_defaults(merged[key], value)
  return merged


def saved_config(values: dict) -> dict:
  """A config.json's dict as a full config dict of this version: old flat layouts
  translated, keys added since then at their base_config defaults, unknown keys refused."""
  if legacy.is_flat(values):
    values = legacy.translate_dict(values)
  defaults = config_to_dict(base_config())
  merged = with_defaults(values, defaults)
  unknown = sorted(set(_dict_keys(merged)) - set(_dict_keys(defaults)))
  if unknown:
    raise ConfigError(f"the saved config has keys this version does not know: "
                      f"{', '.join(unknown)}")
  return merged


def _dict_keys(values: dict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in values.items():
    keys += _dict_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
  return keys


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
  """Keys whose values differ between two config dicts, as 'key: a -> b'."""
  diffs = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
    if isinstance(va, dict) and isinstance(vb, dict):
      diffs += config_differences(va, vb, f"{prefix}{key}.")
    elif va != vb:
      diffs.append(f"{prefix}{key}: {va!r} -> {vb!r}")
  return diffs
