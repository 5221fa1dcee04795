"""Configs: loading by name or file, dotted key=value overrides, checks, dict round trips.

Loading, overrides and JSON are run/config.py; every check is run/build.py's check_config.
Old flat keys (`method=maml`) and their translation are tests/test_legacy.py's.
Fast: nothing here builds a model (one test steps an optax optimiser).
"""
from __future__ import annotations

import keyword
import math
import re

import ml_collections
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from mmfsl_jax.errors import ConfigError, UserError
from mmfsl_jax.run import build, legacy
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.build import CHOICES, POSITIVE, check_config, evaluation_shape
from mmfsl_jax.run.config import (apply_overrides, base_config, config_differences,
                                  config_from_dict, config_to_dict, flat_keys, load_config)

# Keys of the base config by the type of their value (leaves only, dotted).
_BASE = base_config()


def _leaf(config, key):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _set(config, key, value):
  *sections, name = key.split(".")
  node = config
  for part in sections:
    node = node[part]
  node[name] = value


def _keys_of(kind):
  return sorted(k for k in flat_keys(_BASE) if type(_leaf(_BASE, k)) is kind)


INT_KEYS = _keys_of(int)
FLOAT_KEYS = _keys_of(float)
BOOL_KEYS = _keys_of(bool)
STR_KEYS = _keys_of(str)
TUPLE_KEYS = _keys_of(tuple)
# Tuples whose elements may be ints: those with int elements by default, or empty ones.
INT_TUPLE_KEYS = [k for k in TUPLE_KEYS if all(isinstance(x, int) for x in _leaf(_BASE, k))]


def _message(excinfo) -> str:
  return str(excinfo.value)


def _checked(overrides):
  """base_config() with `overrides` applied, after check_config accepted it."""
  config = apply_overrides(base_config(), overrides)
  check_config(config)
  return config


def _refused(overrides, match):
  with pytest.raises(ConfigError, match=match):
    check_config(apply_overrides(base_config(), overrides))


def test_the_base_config_is_sectioned():
  assert {k for k, v in _BASE.items() if isinstance(v, ml_collections.ConfigDict)} == {
      "data", "task", "model", "learner", "inner", "optim", "run", "eval"}
  assert all("." in key for key in flat_keys(_BASE) if key not in ("seed", "smoke"))
  assert INT_KEYS and FLOAT_KEYS and BOOL_KEYS and STR_KEYS and TUPLE_KEYS


# ---------------------------------------------------------------------------------------------
# load_config


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_load_builtin_by_name(name):
  config = load_config(name)
  assert isinstance(config, ml_collections.ConfigDict)
  check_config(config)
  assert name in config_lib.builtin_config_names()


@pytest.mark.parametrize("name", config_lib.builtin_config_names())
def test_every_builtin_config_loads_and_passes_the_checks(name):
  config = load_config(name)
  check_config(config)
  assert sorted(flat_keys(config)) == sorted(flat_keys(_BASE))   # all start from base_config


def test_tiny_is_small():
  config = load_config("tiny")
  assert config.run.num_steps == 6
  assert tuple(config.data.shapes.classes_per_split) == (10, 6, 6)
  assert config.data.shapes.examples_per_class == 12


def test_load_from_python_file(tmp_path):
  path = tmp_path / "my_config.py"
  path.write_text(
      "from mmfsl_jax.configs.base import base_config\n"
      "\n"
      "def get_config():\n"
      "  c = base_config()\n"
      "  c.task.n_way = 3\n"
      "  c.learner.name = 'maml'\n"
      "  return c\n")
  config = load_config(str(path))
  assert config.task.n_way == 3
  assert config.learner.name == "maml"
  check_config(config)


def test_base_config_is_reexported_by_run_config():
  from mmfsl_jax.configs.base import base_config as the_base
  assert config_lib.base_config is the_base


def test_unknown_name_lists_builtin_names():
  with pytest.raises(ConfigError) as excinfo:
    load_config("no_such_config")
  message = _message(excinfo)
  assert "no_such_config" in message
  for name in config_lib.builtin_config_names():
    assert name in message
  assert "default" in message and "tiny" in message


def test_python_file_without_get_config_is_an_error(tmp_path):
  path = tmp_path / "empty_config.py"
  path.write_text("X = 1\n")
  with pytest.raises(ConfigError, match="get_config"):
    load_config(str(path))


def test_python_file_returning_a_dict_is_an_error(tmp_path):
  path = tmp_path / "dict_config.py"
  path.write_text("def get_config():\n  return {'task': {'n_way': 5}}\n")
  with pytest.raises(ConfigError, match="ConfigDict"):
    load_config(str(path))


def test_missing_python_file_is_an_error(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    load_config(str(tmp_path / "nowhere.py"))


def test_config_errors_are_user_errors():
  # The CLI turns UserError (a ValueError) into a one-line message and exit status 2.
  assert issubclass(ConfigError, UserError)
  assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------------------
# apply_overrides: values parsed by the type of the field they replace


def test_override_int():
  config = apply_overrides(base_config(), ["task.n_way=3"])
  assert config.task.n_way == 3 and type(config.task.n_way) is int


@pytest.mark.parametrize("text,value", [("1e-4", 1e-4), ("1", 1.0), ("0.5", 0.5), ("-2", -2.0)])
def test_override_float_accepts_ints_and_exponents(text, value):
  config = apply_overrides(base_config(), [f"optim.lr={text}"])
  assert config.optim.lr == value
  assert type(config.optim.lr) is float


@pytest.mark.parametrize("text,value", [("true", True), ("True", True), ("TRUE", True),
                                        ("false", False), ("False", False)])
def test_override_bool(text, value):
  config = apply_overrides(base_config(), [f"inner.first_order={text}"])
  assert config.inner.first_order is value


@pytest.mark.parametrize("text", [
    "1",
    "0",
    "yes", "1.0", "on", "2"])
def test_override_bool_rejects_non_bools(text):
  config = base_config()
  with pytest.raises(ConfigError, match="inner.first_order"):
    apply_overrides(config, [f"inner.first_order={text}"])
  assert config.inner.first_order is False


@pytest.mark.parametrize("text,value", [
    ("('image',)", ("image",)),
    ("['text']", ("text",)),
    ("image", ("image",)),              # a bare value becomes a 1-tuple
    ("text", ("text",)),
    ("('image', 'text')", ("image", "text")),
    ("()", ()),
])
def test_override_tuple(text, value):
  config = apply_overrides(base_config(), [f"data.modalities={text}"])
  assert config.data.modalities == value
  assert isinstance(config.data.modalities, tuple)


def test_override_tuple_of_numbers_without_parentheses():
  config = apply_overrides(base_config(), ["model.fuse_weights=0.25,0.75"])
  assert config.model.fuse_weights == (0.25, 0.75)


def test_override_string():
  config = apply_overrides(base_config(), ["learner.name=maml", "model.text.pretrained=some/dir"])
  assert config.learner.name == "maml"
  assert config.model.text.pretrained == "some/dir"


@pytest.mark.parametrize("text", ["'cosine'", '"cosine"'])
def test_override_string_with_quotes(text):
  config = apply_overrides(base_config(), [f"learner.distance={text}"])
  assert config.learner.distance == "cosine"


def test_override_string_may_be_empty():
  # inner.params "" is "the method's own default" (configs/base.py)
  config = apply_overrides(base_config(), ["inner.params=head/.*", "inner.params="])
  assert config.inner.params == ""


def test_override_dotted_key():
  config = apply_overrides(base_config(), ["data.shapes.mention_prob=0.3",
                                           "data.shapes.classes_per_split=(8, 4, 4)"])
  assert config.data.shapes.mention_prob == 0.3
  assert config.data.shapes.classes_per_split == (8, 4, 4)
  # a nested key does not leak to the top level or to its section
  assert "mention_prob" not in config and "mention_prob" not in config.data


def test_override_top_level_keys():
  config = apply_overrides(base_config(), ["seed=3", "smoke=true"])
  assert config.seed == 3 and config.smoke is True


def test_override_value_may_contain_equals_sign():
  config = apply_overrides(base_config(), ["model.text.pretrained=a=b"])
  assert config.model.text.pretrained == "a=b"


def test_override_key_whitespace_is_stripped():
  config = apply_overrides(base_config(), [" task.n_way =4"])
  assert config.task.n_way == 4


def test_overrides_apply_in_order_and_return_the_same_config():
  config = base_config()
  result = apply_overrides(config, ["task.n_way=3", "task.n_way=7"])
  assert result is config
  assert config.task.n_way == 7


def test_no_overrides_changes_nothing():
  config = base_config()
  apply_overrides(config, [])
  assert config_to_dict(config) == config_to_dict(base_config())


def test_overrides_do_not_touch_absl_global_flags():
  from absl import flags
  config = base_config()
  apply_overrides(config, ["task.n_way=3"])
  apply_overrides(config, ["task.k_shot=2"])   # a second call defines its flags afresh
  assert (config.task.n_way, config.task.k_shot) == (3, 2)
  assert "config" not in flags.FLAGS


# ---------------------------------------------------------------------------------------------
# apply_overrides: errors


def test_unknown_key_lists_valid_keys():
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), ["task.n_wya=3"])
  message = _message(excinfo)
  assert "unknown config key 'task.n_wya'" in message
  assert "valid keys:" in message
  for key in ("task.n_way", "task.k_shot", "optim.lr", "data.shapes.mention_prob"):
    assert key in message
  for section in ("data", "task", "model", "learner", "inner", "optim", "run", "eval"):
    assert section in message


def test_unknown_key_suggests_close_keys():
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), ["task.way=3"])
  assert "Did you mean task.n_way" in _message(excinfo)


@pytest.mark.parametrize("key,dotted", [("mention_prob", "data.shapes.mention_prob"),
                                        ("steps", "inner.steps"), ("num_step", "run.num_steps")])
def test_unknown_leaf_suggests_its_dotted_key(key, dotted):
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), [f"{key}=3"])
  assert re.search(rf"Did you mean [^?]*\b{re.escape(dotted)}\b", _message(excinfo))


@pytest.mark.parametrize("override,intended", [
    ("task.n_wya=3", "task.n_way"),
    ("inner.step=3", "inner.steps"),
    ("model.image.encoderr=resnet12", "model.image.encoder"),
    ("n_wya=3", "task.n_way"),
])
def test_unknown_key_with_typo_suggests_the_intended_key(override, intended):
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), [override])
  message = _message(excinfo)
  assert re.search(rf"Did you mean {re.escape(intended)}\b", message), message


@pytest.mark.parametrize("key", ["data", "data.shapes", "model.image", "learner.reptile"])
def test_a_section_is_not_a_key(key):
  with pytest.raises(ConfigError, match=f"unknown config key '{re.escape(key)}'"):
    apply_overrides(base_config(), [f"{key}=1"])


@pytest.mark.parametrize("override,key,kind", [
    ("task.n_way=abc", "task.n_way", "int"),
    ("task.n_way=3.5", "task.n_way", "int"),
    ("task.n_way=True", "task.n_way", "int"),
    ("optim.lr=fast", "optim.lr", "float"),
    ("optim.lr=True", "optim.lr", "float"),
    ("inner.first_order=yes", "inner.first_order", "boolean"),
    ("data.shapes.image_size=big", "data.shapes.image_size", "int"),
    ("data.modalities=True", "data.modalities", "tuple"),
])
def test_type_mismatch_is_an_error(override, key, kind):
  config = base_config()
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(config, [override])
  message = _message(excinfo)
  assert message.startswith(f"bad override: {override}:")
  assert key in message and kind in message
  assert config_to_dict(config) == config_to_dict(base_config())


def test_type_mismatch_names_the_value_and_the_type():
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), ["task.n_way=abc"])
  message = _message(excinfo)
  assert "task.n_way" in message and "'abc'" in message and "int" in message
  assert "configs/base.py" in message   # where the types are


@pytest.mark.parametrize("override,key,message", [
    # A string field takes any text; check_config then names the key of a bad choice.
    ("learner.name=True", "learner.name", "learner.name='True' is not valid"),
    ("learner.name=[1]", "learner.name", r"learner.name='\[1\]' is not valid"),
])
def test_values_that_parse_but_no_run_can_use_are_refused_by_check_config(override, key,
                                                                          message):
  config = apply_overrides(base_config(), [override])
  with pytest.raises(ConfigError, match=message):
    check_config(config)


@pytest.mark.parametrize("override", ["task.n_way", "task.n_way:3", ""])
def test_missing_equals_sign_is_an_error(override):
  with pytest.raises(ConfigError, match="key=value"):
    apply_overrides(base_config(), [override])


def test_a_failed_override_applies_none_of_them():
  config = base_config()
  with pytest.raises(ConfigError, match="task.k_shot"):
    apply_overrides(config, ["task.n_way=3", "task.k_shot=abc"])
  assert config.task.n_way == 5 and config.task.k_shot == 1
  with pytest.raises(ConfigError, match="data.modalities"):
    apply_overrides(config, ["task.n_way=3", "data.modalities=(1, 2)"])
  assert config.task.n_way == 5 and config.data.modalities == ("image", "text")


def test_an_unknown_key_is_refused_before_any_override_is_applied():
  config = base_config()
  with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
    apply_overrides(config, ["task.n_way=3", "bogus=1"])
  assert config.task.n_way == 5


# ---------------------------------------------------------------------------------------------
# apply_overrides: properties


_finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(INT_KEYS), value=st.integers(min_value=-10**12, max_value=10**12))
def test_property_int_override_sets_exactly_that_value(key, value):
  config = apply_overrides(base_config(), [f"{key}={value!r}"])
  got = _leaf(config, key)
  assert got == value and type(got) is int


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(FLOAT_KEYS), value=_finite_floats)
def test_property_float_override_sets_exactly_that_value(key, value):
  config = apply_overrides(base_config(), [f"{key}={value!r}"])
  got = _leaf(config, key)
  assert type(got) is float
  assert got == value and math.copysign(1.0, got) == math.copysign(1.0, value)


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(FLOAT_KEYS), value=st.integers(min_value=-10**6, max_value=10**6))
def test_property_int_given_to_float_key_becomes_float(key, value):
  config = apply_overrides(base_config(), [f"{key}={value!r}"])
  got = _leaf(config, key)
  assert type(got) is float and got == float(value)


@settings(max_examples=20, deadline=None)
@given(key=st.sampled_from(BOOL_KEYS), value=st.booleans(),
       spelling=st.sampled_from(["repr", "lower", "upper"]))
def test_property_bool_override_sets_exactly_that_value(key, value, spelling):
  text = {"repr": repr(value), "lower": repr(value).lower(), "upper": repr(value).upper()}[spelling]
  config = apply_overrides(base_config(), [f"{key}={text}"])
  assert _leaf(config, key) is value


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(INT_KEYS),
       value=_finite_floats.filter(lambda x: not float(x).is_integer()))
def test_property_non_integral_float_never_sets_an_int_key(key, value):
  config = base_config()
  with pytest.raises(ConfigError, match=rf"^bad override: {re.escape(key)}=.*int\(\)"):
    apply_overrides(config, [f"{key}={value!r}"])
  assert _leaf(config, key) == _leaf(_BASE, key)


_words = st.from_regex(r"[A-Za-z_][A-Za-z0-9_/.\-]{0,20}", fullmatch=True).filter(
    lambda s: s not in ("True", "False", "None") and not keyword.iskeyword(s))


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(STR_KEYS), value=_words, quoted=st.booleans())
def test_property_string_override_sets_exactly_that_value(key, value, quoted):
  text = repr(value) if quoted else value
  config = apply_overrides(base_config(), [f"{key}={text}"])
  got = _leaf(config, key)
  assert got == value and type(got) is str


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(INT_TUPLE_KEYS),
       value=st.lists(st.integers(min_value=0, max_value=1000), max_size=5).map(tuple))
def test_property_tuple_override_sets_exactly_that_value(key, value):
  config = apply_overrides(base_config(), [f"{key}={value!r}"])
  got = _leaf(config, key)
  assert got == value and isinstance(got, tuple)


_VALID = set(flat_keys(_BASE))


def _unknown(key: str) -> bool:
  """Neither a key now nor an old flat one (those are translated: tests/test_legacy.py)."""
  return key.strip() not in _VALID and legacy.translate_key(key.strip()) is None


@settings(max_examples=100, deadline=None)
@given(key=st.text(alphabet=st.characters(blacklist_characters="=",
                                          blacklist_categories=("Cs",)), max_size=30)
       .filter(_unknown),
       value=st.text(max_size=10))
def test_property_garbage_keys_never_silently_succeed(key, value):
  config = base_config()
  before = config_to_dict(config)
  with pytest.raises(ConfigError, match="unknown config key"):
    apply_overrides(config, [f"{key}={value}"])
  assert config_to_dict(config) == before


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(sorted(_VALID)), suffix=st.from_regex(r"[a-z_]{1,6}", fullmatch=True))
def test_property_near_miss_keys_are_rejected(key, suffix):
  bad = key + suffix
  assume(_unknown(bad))
  with pytest.raises(ConfigError, match="unknown config key"):
    apply_overrides(base_config(), [f"{bad}=1"])


# ---------------------------------------------------------------------------------------------
# build.check_config


def test_choices_are_dotted_keys_of_string_fields():
  for key, choices in CHOICES.items():
    assert key in _VALID and type(_leaf(_BASE, key)) is str, key
    assert _leaf(_BASE, key) in choices and len(set(choices)) == len(choices), key


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_check_bad_choice_names_valid_choices(key):
  config = base_config()
  _set(config, key, "not_a_choice")
  with pytest.raises(ConfigError) as excinfo:
    check_config(config)
  message = _message(excinfo)
  assert key in message and "not_a_choice" in message
  for choice in CHOICES[key]:
    assert choice in message
  assert message == (f"{key}='not_a_choice' is not valid; choose one of "
                     f"{', '.join(CHOICES[key])}")


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_check_accepts_every_choice(key):
  for choice in CHOICES[key]:
    config = base_config()
    _set(config, key, choice)
    config.optim.decay_every = 10   # optim.schedule="step" needs its period
    check_config(config)


@pytest.mark.parametrize("modalities", [(), ("audio",), ("image", "audio"), ("image", "image")])
def test_check_bad_modalities(modalities):
  config = base_config()
  config.data.modalities = modalities
  with pytest.raises(ConfigError) as excinfo:
    check_config(config)
  message = _message(excinfo)
  assert "data.modalities" in message and "image" in message and "text" in message


@pytest.mark.parametrize("modalities",
                         [("image",), ("text",), ("image", "text"), ("text", "image")])
def test_check_good_modalities(modalities):
  config = base_config()
  config.data.modalities = modalities
  check_config(config)


@pytest.mark.parametrize("weights", [(1.0,), (0.3, 0.3, 0.4)])
def test_check_fuse_weights_of_wrong_length(weights):
  config = base_config()
  config.model.fuse_weights = weights
  with pytest.raises(ConfigError, match="model.fuse_weights=.* needs one weight per modality"):
    check_config(config)


def test_check_fuse_weights_length_follows_modalities():
  config = _checked(["data.modalities=('image',)", "model.fuse_weights=(1.0,)"])
  config.model.fuse_weights = (0.5, 0.5)
  with pytest.raises(ConfigError, match="one weight per modality"):
    check_config(config)


@pytest.mark.parametrize("weights", [(-1.0, 2.0), (0.0, 0.0)])
def test_check_fuse_weights_negative_or_zero_sum(weights):
  config = base_config()
  config.model.fuse_weights = weights
  with pytest.raises(ConfigError, match="model.fuse_weights must be non-negative"):
    check_config(config)


def test_check_good_fuse_weights():
  config = base_config()
  config.model.fuse_weights = (0.0, 1.0)
  check_config(config)


@pytest.mark.parametrize("n_way", [1, 0, -3])
def test_check_n_way_below_two(n_way):
  config = base_config()
  config.task.n_way = n_way
  with pytest.raises(ConfigError, match=f"task.n_way must be at least 2, got {n_way}"):
    check_config(config)


@pytest.mark.parametrize("key", POSITIVE)
def test_check_counts_and_rates_must_be_positive(key):
  assert {"task.k_shot", "task.q_query", "task.meta_batch", "run.num_steps",
          "eval.episodes", "optim.lr", "inner.lr"} <= set(POSITIVE)
  config = base_config()
  zero = type(_leaf(config, key))(0)
  _set(config, key, zero)
  with pytest.raises(ConfigError, match=f"^{re.escape(key)} must be positive, got {zero}$"):
    check_config(config)


@pytest.mark.parametrize("key", ["optim.lr", "inner.lr"])
def test_check_rates_must_be_positive(key):
  for rate in (0.0, -0.1):
    config = base_config()
    _set(config, key, rate)
    with pytest.raises(ConfigError, match=f"{re.escape(key)} must be positive"):
      check_config(config)


@pytest.mark.parametrize("task_chunk", [-1, 3])
def test_check_task_chunk_must_divide_the_meta_batch(task_chunk):
  config = apply_overrides(base_config(), ["task.meta_batch=4", f"run.task_chunk={task_chunk}"])
  with pytest.raises(ConfigError, match=f"run.task_chunk={task_chunk} must be 0 .automatic., "
                                        f"divide task.meta_batch=4, or be at least it"):
    check_config(config)
  for fine in (0, 1, 2, 4, 64):
    check_config(apply_overrides(config, [f"run.task_chunk={fine}"]))


@pytest.mark.parametrize("overrides, message", [
    ({"eval.n_way": 1}, "eval.n_way must be 0"), ({"eval.k_shot": -1}, "eval.k_shot"),
    ({"eval.n_way": -2}, "eval.n_way must be 0"),
    ({"learner.name": "maml", "eval.n_way": 3},
     "trained 5-way with learner.name=maml.*cannot be evaluated 3-way")])
def test_check_evaluation_way_and_shot(overrides, message):
  config = base_config()
  for key, value in overrides.items():
    _set(config, key, value)
  with pytest.raises(ConfigError, match=message):
    check_config(config)


def test_evaluation_shape_takes_the_evaluation_way_and_shot_and_leaves_the_config_alone():
  config = apply_overrides(base_config(), ["task.n_way=20", "task.k_shot=5", "eval.n_way=5",
                                           "eval.k_shot=1"])
  before = config_to_dict(config)
  check_config(config)   # protonet evaluates any way
  assert evaluation_shape(config) == (5, 1)
  assert (config.task.n_way, config.task.k_shot) == (20, 5)
  assert config_to_dict(config) == before
  apply_overrides(config, ["eval.n_way=0", "eval.k_shot=0"])
  assert evaluation_shape(config) == (20, 5)
  apply_overrides(config, ["learner.name=maml", "eval.n_way=20"])   # its own way is allowed
  check_config(config)
  assert evaluation_shape(config) == (20, 5)


def test_check_gated_fuser_needs_text_last():
  _refused(["model.fuser=gated", "data.modalities=('text', 'image')"],
           r"gated fuser .* data.modalities as \('image', 'text'\)")
  _checked(["model.fuser=gated", "data.modalities=('image', 'text')"])


# ---------------------------------------------------------------------------------------------
# dict round trip, defaults and differences


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_config_dict_round_trip_preserves_tuples(name):
  config = load_config(name)
  values = config_to_dict(config)
  assert isinstance(values["data"]["modalities"], list)          # JSON-able
  back = config_from_dict(values)
  assert back.to_dict() == config.to_dict()
  assert isinstance(back.data.modalities, tuple)
  assert isinstance(back.model.image.resnet_channels, tuple)
  assert isinstance(back.model.projection_hidden, tuple) and back.model.projection_hidden == ()
  assert isinstance(back.data.shapes.classes_per_split, tuple)
  for section in ("data", "data.shapes", "data.omniglot", "model", "model.image", "learner",
                  "learner.am3", "inner", "optim", "run", "eval"):
    assert isinstance(_leaf(back, section), ml_collections.ConfigDict), section
  assert config_to_dict(back) == values


def test_config_dict_round_trip_after_overrides():
  config = apply_overrides(base_config(), ["data.modalities=('image',)",
                                           "model.fuse_weights=(1.0,)",
                                           "data.shapes.mention_prob=0.3",
                                           "inner.first_order=true"])
  back = config_from_dict(config_to_dict(config))
  assert back.data.modalities == ("image",)
  assert back.model.fuse_weights == (1.0,)
  assert back.data.shapes.mention_prob == 0.3
  assert back.inner.first_order is True
  check_config(back)
  # The round-tripped config still accepts overrides with type checks.
  apply_overrides(back, ["task.n_way=3"])
  assert back.task.n_way == 3
  with pytest.raises(ConfigError, match="task.n_way"):
    apply_overrides(back, ["task.n_way=abc"])


def test_with_defaults_fills_missing_keys_recursively_and_copies():
  defaults = {"a": 1, "sub": {"x": 1, "y": [1, 2]}, "new": {"z": 3}}
  saved = {"a": 5, "sub": {"x": 7}}
  merged = config_lib.with_defaults(saved, defaults)
  assert merged == {"a": 5, "sub": {"x": 7, "y": [1, 2]}, "new": {"z": 3}}
  assert saved == {"a": 5, "sub": {"x": 7}}
  merged["sub"]["y"].append(3)
  assert defaults["sub"]["y"] == [1, 2]


def test_saved_config_fills_keys_a_sectioned_config_json_lacks():
  values = config_to_dict(apply_overrides(load_config("tiny"), ["learner.name=maml"]))
  del values["inner"]["checkpoint"]
  del values["eval"]
  full = config_lib.saved_config(values)
  config = config_from_dict(full)
  check_config(config)
  assert config.learner.name == "maml" and config.run.num_steps == 6
  assert config.inner.checkpoint is False and config.eval.episodes == _BASE.eval.episodes
  assert sorted(flat_keys(config)) == sorted(flat_keys(_BASE))


def test_saved_config_refuses_keys_no_version_knows():
  values = config_to_dict(base_config())
  values["task"]["bogus"] = 1
  with pytest.raises(ConfigError, match="does not know: task.bogus"):
    config_lib.saved_config(values)


def test_shrink_for_smoke_returns_a_small_copy():
  config = base_config()
  small = config_lib.shrink_for_smoke(config)
  assert config_to_dict(config) == config_to_dict(base_config())
  assert small.run.num_steps == 4 and small.data.shapes.classes_per_split == (10, 6, 6)
  assert small.task.meta_batch == 2 and small.eval.episodes == 4
  check_config(small)


def test_effective_config_checks_and_shrinks_only_smoke_runs():
  config = base_config()
  assert build.effective_config(config) is config
  smoke = build.effective_config(apply_overrides(base_config(), ["smoke=true"]))
  assert smoke.run.num_steps == 4
  with pytest.raises(ConfigError, match="task.n_way must be at least 2"):
    build.effective_config(apply_overrides(base_config(), ["smoke=true", "task.n_way=1"]))


def test_config_differences_equal_is_empty():
  values = config_to_dict(load_config("tiny"))
  assert config_differences(values, values) == []


def test_config_differences_lists_changed_keys():
  a = config_to_dict(load_config("tiny"))
  b = config_to_dict(apply_overrides(load_config("tiny"),
                                     ["task.n_way=3", "data.shapes.mention_prob=0.3",
                                      "run.num_steps=8"]))
  diffs = config_differences(a, b)
  assert diffs == ["data.shapes.mention_prob: 0.5 -> 0.3", "run.num_steps: 6 -> 8",
                   "task.n_way: 5 -> 3"]


def test_config_differences_absent_keys():
  diffs = config_differences({"a": 1, "sub": {"x": 1}}, {"b": 2, "sub": {"x": 1, "y": [1]}})
  assert diffs == ["a: 1 -> '<absent>'", "b: '<absent>' -> 2", "sub.y: '<absent>' -> [1]"]


def test_config_differences_between_default_and_tiny():
  diffs = config_differences(config_to_dict(load_config("default")),
                             config_to_dict(load_config("tiny")))
  keys = {d.split(":")[0] for d in diffs}
  assert {"run.num_steps", "task.q_query", "data.shapes.examples_per_class",
          "data.shapes.image_size"} <= keys
  assert "task.n_way" not in keys


# ---------------------------------------------------------------------------------------------
# check_config: schedules, validation, projection, pooling, data


@pytest.mark.parametrize("changes", [["optim.schedule=step"],   # optim.decay_every 0
                                     ["optim.schedule=step", "optim.decay_every=10",
                                      "optim.decay_factor=1.5"]])
def test_a_step_schedule_needs_a_period_and_a_factor_in_0_1(changes):
  _refused(changes, "optim.schedule='step' needs optim.decay_every >= 1")
  _refused(["optim.schedule=linear"], "optim.schedule='linear' is not valid")
  _checked(["optim.schedule=step", "optim.decay_every=10", "optim.decay_factor=1.0"])


@pytest.mark.parametrize("schedule, rates", [
    ("constant", [1.0, 1.0, 1.0, 1.0]),
    ("step", [1.0, 1.0, 0.5, 0.5]),          # halved every 2 steps
    ("cosine", [1.0, 0.5, 0.0, 0.0]),        # 0.5 (1 + cos(pi t / num_steps)), num_steps 2
])
def test_adam_steps_follow_the_learning_rate_schedule(schedule, rates):
  import jax.numpy as jnp
  config = _checked([f"optim.schedule={schedule}", "optim.decay_every=2", "run.num_steps=2",
                     "optim.lr=0.1", "optim.grad_clip=0.0"])
  optimizer = build.build_optimizer(config)
  params = {"w": jnp.zeros(3)}
  state = optimizer.init(params)
  steps = []
  for _ in rates:   # a constant gradient: each Adam update is -rate (to float32 rounding)
    updates, state = optimizer.update({"w": jnp.ones(3)}, state, params)
    steps.append(float(-updates["w"][0]))
  np.testing.assert_allclose(steps, [0.1 * r for r in rates], rtol=1e-4, atol=1e-9)


def test_val_episodes_zero_means_no_validation_and_omniglot_without_val_alphabets_needs_it():
  _checked(["run.val_episodes=0"])
  _refused(["run.val_episodes=-1"], "run.val_episodes must be 0 .no validation. or positive")
  no_val = ["data.name=omniglot", "data.omniglot.val_alphabets=()"]
  _refused(no_val, r"data\.omniglot\.val_alphabets=\(\) leaves no validation classes: set "
                   r"run\.val_episodes=0")
  _checked(no_val + ["run.val_episodes=0"])
  tfds_small = ["data.name=tfds_omniglot", "data.omniglot.tfds_splits=small",
                "data.omniglot.val_alphabets=()"]
  _refused(tfds_small, r"data\.omniglot\.val_alphabets=\(\) leaves no validation classes")
  # TFDS's full splits hold out by its own background/evaluation sets: the alphabets do not apply
  _checked(["data.name=tfds_omniglot", "data.omniglot.val_alphabets=()"])


def test_embed_dim_zero_means_no_projection_and_takes_no_hidden_widths():
  _checked(["model.embed_dim=0"])
  _refused(["model.embed_dim=-1"], "model.embed_dim must be 0 .no projection. or positive")
  _refused(["model.embed_dim=0", "model.projection_hidden=(32,)"],
           r"model\.projection_hidden=\(32,\) needs a projection")
  _checked(["model.embed_dim=8", "model.projection_hidden=(32,)"])


def test_floor_pooling_needs_images_of_sixteen_pixels():
  for size_key in ("data.image_size", "data.shapes.image_size"):
    _refused(["model.image.pool=floor", f"{size_key}=12"],
             "model.image.pool='floor' halves the image 4 times")
  _checked(["model.image.pool=floor", "data.image_size=16"])
  _checked(["model.image.pool=same", "data.image_size=12"])
  # ResNet-12 pools once a block: three blocks need 8 pixels, five need 32
  resnet = ["model.image.encoder=resnet12", "model.image.pool=floor"]
  _checked(resnet + ["model.image.resnet_channels=(8, 16, 32)", "data.image_size=12"])
  _refused(resnet + ["model.image.resnet_channels=(8, 16, 32, 64, 128)", "data.image_size=28"],
           "halves the image 5 times.*at least 32 pixels")
  _refused(["model.image.pool=ceil"],
           "model.image.pool='ceil' is not valid; choose one of same, floor")


def test_omniglot_resize_filter_is_checked():
  _checked(["data.omniglot.resize=bilinear"])
  _refused(["data.omniglot.resize=area"],
           "data.omniglot.resize='area' is not valid; choose one of box, bilinear")


def test_conv_init_choices():
  _checked(["model.image.init=torch"])
  _refused(["model.image.init=xavier"],
           "model.image.init='xavier' is not valid; choose one of lecun_normal, torch")
