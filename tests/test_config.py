"""Configs: loading by name or file, key=value overrides, validation, dict round trips.

Fast: nothing here builds a model or touches JAX.
"""
from __future__ import annotations

import keyword
import math

import ml_collections
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run.config import (CHOICES, apply_overrides, base_config, config_differences,
                              config_from_dict, config_to_dict, flat_keys, load_config, validate)
from mmfsl_jax.errors import ConfigError, UserError

# Keys of the base config by the type of their value (leaves only, dotted for nested ones).
_BASE = base_config()


def _leaf(config, key):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _keys_of(kind):
  return sorted(k for k in flat_keys(_BASE) if type(_leaf(_BASE, k)) is kind)


INT_KEYS = _keys_of(int)
FLOAT_KEYS = _keys_of(float)
BOOL_KEYS = _keys_of(bool)
STR_KEYS = _keys_of(str)
TUPLE_KEYS = _keys_of(tuple)


def _message(excinfo) -> str:
  return str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# load_config


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_load_builtin_by_name(name):
  config = load_config(name)
  assert isinstance(config, ml_collections.ConfigDict)
  validate(config)
  assert name in config_lib.builtin_config_names()


def test_tiny_is_small():
  config = load_config("tiny")
  assert config.num_steps == 6
  assert tuple(config.shapes.classes_per_split) == (10, 6, 6)
  assert config.shapes.examples_per_class == 12


def test_load_from_python_file(tmp_path):
  path = tmp_path / "my_config.py"
  path.write_text(
      "from mmfsl_jax.run.config import base_config\n"
      "\n"
      "def get_config():\n"
      "  c = base_config()\n"
      "  c.n_way = 3\n"
      "  c.method = 'maml'\n"
      "  return c\n")
  config = load_config(str(path))
  assert config.n_way == 3
  assert config.method == "maml"
  validate(config)


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
  path.write_text("def get_config():\n  return {'n_way': 5}\n")
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
# apply_overrides: parsing


def test_override_int():
  config = apply_overrides(base_config(), ["n_way=3"])
  assert config.n_way == 3 and type(config.n_way) is int


@pytest.mark.parametrize("text,value", [("1e-4", 1e-4), ("1", 1.0), ("0.5", 0.5), ("-2", -2.0)])
def test_override_float_accepts_ints_and_exponents(text, value):
  config = apply_overrides(base_config(), [f"learning_rate={text}"])
  assert config.learning_rate == value
  assert type(config.learning_rate) is float


@pytest.mark.parametrize("text,value", [("true", True), ("True", True), ("TRUE", True),
                                        ("false", False), ("False", False)])
def test_override_bool(text, value):
  config = apply_overrides(base_config(), [f"first_order={text}"])
  assert config.first_order is value


@pytest.mark.parametrize("text", ["1", "0", "yes", "1.0"])
def test_override_bool_rejects_non_bools(text):
  with pytest.raises(ConfigError, match="first_order"):
    apply_overrides(base_config(), [f"first_order={text}"])


@pytest.mark.parametrize("text,value", [
    ("('image',)", ("image",)),
    ("['text']", ("text",)),
    ("image", ("image",)),              # a bare value becomes a 1-tuple
    ("('image', 'text')", ("image", "text")),
    ("()", ()),
])
def test_override_tuple(text, value):
  config = apply_overrides(base_config(), [f"modalities={text}"])
  assert config.modalities == value
  assert isinstance(config.modalities, tuple)


def test_override_tuple_of_numbers_without_parentheses():
  config = apply_overrides(base_config(), ["fuse_weights=0.25,0.75"])
  assert config.fuse_weights == (0.25, 0.75)


def test_override_string():
  config = apply_overrides(base_config(), ["method=maml", "text_model=some/dir"])
  assert config.method == "maml"
  assert config.text_model == "some/dir"


def test_override_string_with_quotes():
  config = apply_overrides(base_config(), ["distance='cosine'"])
  assert config.distance == "cosine"


def test_override_dotted_key():
  config = apply_overrides(base_config(), ["shapes.mention_prob=0.3",
                                           "shapes.classes_per_split=(8, 4, 4)"])
  assert config.shapes.mention_prob == 0.3
  assert config.shapes.classes_per_split == (8, 4, 4)
  assert "mention_prob" not in config  # a nested key does not leak to the top level


def test_override_value_may_contain_equals_sign():
  config = apply_overrides(base_config(), ["text_model=a=b"])
  assert config.text_model == "a=b"


def test_override_key_whitespace_is_stripped():
  config = apply_overrides(base_config(), [" n_way =4"])
  assert config.n_way == 4


def test_overrides_apply_in_order_and_return_the_same_config():
  config = base_config()
  result = apply_overrides(config, ["n_way=3", "n_way=7"])
  assert result is config
  assert config.n_way == 7


def test_no_overrides_changes_nothing():
  config = base_config()
  apply_overrides(config, [])
  assert config_to_dict(config) == config_to_dict(base_config())


# ---------------------------------------------------------------------------------------------
# apply_overrides: errors


def test_unknown_key_lists_valid_keys():
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), ["n_wya=3"])
  message = _message(excinfo)
  assert "'n_wya'" in message
  assert "Valid keys" in message
  for key in ("n_way", "k_shot", "learning_rate", "shapes.mention_prob"):
    assert key in message


def test_unknown_key_suggests_close_keys():
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), ["way=3"])
  assert "Did you mean n_way" in _message(excinfo)


def test_unknown_nested_leaf_suggests_dotted_key():
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), ["mention_prob=0.3"])
  assert "Did you mean shapes.mention_prob" in _message(excinfo)


def test_unknown_key_with_typo_suggests_the_intended_key():
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), ["n_wya=3"])
  assert "Did you mean n_way" in _message(excinfo)


def test_a_section_is_not_a_key():
  with pytest.raises(ConfigError, match="unknown config key 'shapes'"):
    apply_overrides(base_config(), ["shapes=1"])


@pytest.mark.parametrize("override,key", [
    ("n_way=abc", "n_way"),
    ("n_way=3.5", "n_way"),
    ("n_way=True", "n_way"),
    ("learning_rate=fast", "learning_rate"),
    ("learning_rate=True", "learning_rate"),
    ("method=True", "method"),
    ("method=[1]", "method"),
    ("modalities=True", "modalities"),
    ("shapes.image_size=big", "shapes.image_size"),
])
def test_type_mismatch_is_an_error(override, key):
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), [override])
  message = _message(excinfo)
  assert key in message
  assert "expected a value of type" in message


def test_type_mismatch_names_the_expected_type():
  with pytest.raises(ConfigError) as excinfo:
    apply_overrides(base_config(), ["n_way=abc"])
  message = _message(excinfo)
  assert "'abc'" in message and "int" in message and "5" in message


@pytest.mark.parametrize("override", ["n_way", "n_way:3", ""])
def test_missing_equals_sign_is_an_error(override):
  with pytest.raises(ConfigError, match="key=value"):
    apply_overrides(base_config(), [override])


def test_failed_override_leaves_earlier_ones_applied_but_raises():
  config = base_config()
  with pytest.raises(ConfigError):
    apply_overrides(config, ["n_way=3", "bogus=1"])
  assert config.n_way == 3


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
  with pytest.raises(ConfigError, match="expected a value of type int"):
    apply_overrides(base_config(), [f"{key}={value!r}"])


_words = st.from_regex(r"[A-Za-z_][A-Za-z0-9_/.\-]{0,20}", fullmatch=True).filter(
    lambda s: s not in ("True", "False", "None") and not keyword.iskeyword(s))


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(STR_KEYS), value=_words)
def test_property_string_override_sets_exactly_that_value(key, value):
  config = apply_overrides(base_config(), [f"{key}={value!r}"])
  assert _leaf(config, key) == value


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(TUPLE_KEYS),
       value=st.lists(st.integers(min_value=0, max_value=1000), max_size=5).map(tuple))
def test_property_tuple_override_sets_exactly_that_value(key, value):
  config = apply_overrides(base_config(), [f"{key}={value!r}"])
  got = _leaf(config, key)
  assert got == value and isinstance(got, tuple)


_VALID = set(flat_keys(_BASE))


@settings(max_examples=100, deadline=None)
@given(key=st.text(alphabet=st.characters(blacklist_characters="=",
                                          blacklist_categories=("Cs",)), max_size=30)
       .filter(lambda k: k.strip() not in _VALID),
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
  assume(bad not in _VALID)
  with pytest.raises(ConfigError, match="unknown config key"):
    apply_overrides(base_config(), [f"{bad}=1"])


# ---------------------------------------------------------------------------------------------
# validate


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_validate_bad_choice_names_valid_choices(key):
  config = base_config()
  config[key] = "not_a_choice"
  with pytest.raises(ConfigError) as excinfo:
    validate(config)
  message = _message(excinfo)
  assert key in message and "not_a_choice" in message
  for choice in CHOICES[key]:
    assert choice in message


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_validate_accepts_every_choice(key):
  for choice in CHOICES[key]:
    config = base_config()
    config[key] = choice
    config.lr_decay_every = 10   # lr_schedule="step" needs its period
    validate(config)


@pytest.mark.parametrize("modalities", [(), ("audio",), ("image", "audio"), ("image", "image")])
def test_validate_bad_modalities(modalities):
  config = base_config()
  config.modalities = modalities
  with pytest.raises(ConfigError) as excinfo:
    validate(config)
  message = _message(excinfo)
  assert "modalities" in message and "image" in message and "text" in message


@pytest.mark.parametrize("modalities", [("image",), ("text",), ("image", "text"), ("text", "image")])
def test_validate_good_modalities(modalities):
  config = base_config()
  config.modalities = modalities
  validate(config)


@pytest.mark.parametrize("weights", [(1.0,), (0.3, 0.3, 0.4)])
def test_validate_fuse_weights_of_wrong_length(weights):
  config = base_config()
  config.fuse_weights = weights
  with pytest.raises(ConfigError, match="one weight per modality"):
    validate(config)


def test_validate_fuse_weights_length_follows_modalities():
  config = apply_overrides(base_config(), ["modalities=('image',)", "fuse_weights=(1.0,)"])
  validate(config)
  config.fuse_weights = (0.5, 0.5)
  with pytest.raises(ConfigError, match="one weight per modality"):
    validate(config)


@pytest.mark.parametrize("weights", [(-1.0, 2.0), (0.0, 0.0)])
def test_validate_fuse_weights_negative_or_zero_sum(weights):
  config = base_config()
  config.fuse_weights = weights
  with pytest.raises(ConfigError, match="non-negative"):
    validate(config)


def test_validate_good_fuse_weights():
  config = base_config()
  config.fuse_weights = (0.0, 1.0)
  validate(config)


@pytest.mark.parametrize("n_way", [1, 0, -3])
def test_validate_n_way_below_two(n_way):
  config = base_config()
  config.n_way = n_way
  with pytest.raises(ConfigError, match="n_way must be at least"):
    validate(config)


@pytest.mark.parametrize("key", ["k_shot", "q_query", "meta_batch", "num_steps", "eval_episodes"])
def test_validate_counts_must_be_positive(key):
  config = base_config()
  config[key] = 0
  with pytest.raises(ConfigError, match=f"{key} must be at least 1, got 0"):
    validate(config)


@pytest.mark.parametrize("task_chunk", [-1, 3])
def test_validate_task_chunk_must_divide_the_meta_batch(task_chunk):
  config = apply_overrides(base_config(), ["meta_batch=4", f"task_chunk={task_chunk}"])
  with pytest.raises(ConfigError, match=f"task_chunk={task_chunk} must be 0 .automatic., "
                                        f"divide meta_batch=4, or be at least it"):
    validate(config)
  for fine in (0, 1, 2, 4, 64):
    validate(apply_overrides(config, [f"task_chunk={fine}"]))


@pytest.mark.parametrize("key", ["learning_rate", "inner_lr"])
def test_validate_rates_must_be_positive(key):
  config = base_config()
  config[key] = 0.0
  with pytest.raises(ConfigError, match="must be positive"):
    validate(config)


@pytest.mark.parametrize("overrides, message", [
    ({"eval_n_way": 1}, "eval_n_way must be 0"), ({"eval_k_shot": -1}, "eval_k_shot"),
    ({"method": "maml", "eval_n_way": 3}, "trained 5-way with method=maml.*cannot be evaluated 3-way")])
def test_validate_evaluation_way_and_shot(overrides, message):
  config = base_config()
  config.update(overrides)
  with pytest.raises(ConfigError, match=message):
    validate(config)


def test_evaluation_config_takes_the_evaluation_way_and_shot_and_leaves_the_config_alone():
  from mmfsl_jax.run.config import evaluation_config
  config = base_config()
  config.update({"n_way": 20, "k_shot": 5, "eval_n_way": 5, "eval_k_shot": 1})
  validate(config)   # protonet evaluates any way
  evaluated = evaluation_config(config)
  assert (evaluated.n_way, evaluated.k_shot) == (5, 1) and (config.n_way, config.k_shot) == (20, 5)
  config.update({"eval_n_way": 0, "eval_k_shot": 0})
  assert (evaluation_config(config).n_way, evaluation_config(config).k_shot) == (20, 5)
  config.update({"method": "maml", "eval_n_way": 20})   # its own way is always allowed
  validate(config)


def test_validate_gated_fuser_needs_text_last():
  config = apply_overrides(base_config(), ["fuser=gated", "modalities=('text', 'image')"])
  with pytest.raises(ConfigError, match="gated"):
    validate(config)


# ---------------------------------------------------------------------------------------------
# dict round trip and differences


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_config_dict_round_trip_preserves_tuples(name):
  config = load_config(name)
  values = config_to_dict(config)
  assert isinstance(values["modalities"], list)          # JSON-able
  back = config_from_dict(values)
  assert back.to_dict() == config.to_dict()
  assert isinstance(back.modalities, tuple)
  assert isinstance(back.resnet_channels, tuple)
  assert isinstance(back.projection_hidden, tuple) and back.projection_hidden == ()
  assert isinstance(back.shapes.classes_per_split, tuple)
  assert isinstance(back.shapes, ml_collections.ConfigDict)
  assert config_to_dict(back) == values


def test_config_dict_round_trip_after_overrides():
  config = apply_overrides(base_config(), ["modalities=('image',)", "fuse_weights=(1.0,)",
                                           "shapes.mention_prob=0.3", "first_order=true"])
  back = config_from_dict(config_to_dict(config))
  assert back.modalities == ("image",)
  assert back.fuse_weights == (1.0,)
  assert back.shapes.mention_prob == 0.3
  assert back.first_order is True
  validate(back)
  # The round-tripped config still accepts overrides with type checks.
  apply_overrides(back, ["n_way=3"])
  with pytest.raises(ConfigError):
    apply_overrides(back, ["n_way=abc"])


def test_config_differences_equal_is_empty():
  values = config_to_dict(load_config("tiny"))
  assert config_differences(values, values) == []


def test_config_differences_lists_changed_keys():
  a = config_to_dict(load_config("tiny"))
  b = config_to_dict(apply_overrides(load_config("tiny"),
                                     ["n_way=3", "shapes.mention_prob=0.3", "num_steps=8"]))
  diffs = config_differences(a, b)
  assert diffs == ["n_way: 5 -> 3", "num_steps: 6 -> 8", "shapes.mention_prob: 0.5 -> 0.3"]


def test_config_differences_absent_keys():
  diffs = config_differences({"a": 1, "sub": {"x": 1}}, {"b": 2, "sub": {"x": 1, "y": [1]}})
  assert diffs == ["a: 1 -> '<absent>'", "b: '<absent>' -> 2", "sub.y: '<absent>' -> [1]"]


def test_config_differences_between_default_and_tiny():
  diffs = config_differences(config_to_dict(load_config("default")),
                             config_to_dict(load_config("tiny")))
  keys = {d.split(":")[0] for d in diffs}
  assert {"num_steps", "q_query", "shapes.examples_per_class", "shapes.image_size"} <= keys
  assert "n_way" not in keys


@pytest.mark.parametrize("changes", [["lr_schedule=step"],   # lr_decay_every 0
                                     ["lr_schedule=step", "lr_decay_every=10",
                                      "lr_decay_factor=1.5"]])
def test_a_step_schedule_needs_a_period_and_a_factor_in_0_1(changes):
  with pytest.raises(ConfigError, match="lr_schedule='step' needs lr_decay_every >= 1"):
    validate(apply_overrides(base_config(), changes))
  with pytest.raises(ConfigError, match="lr_schedule"):
    validate(apply_overrides(base_config(), ["lr_schedule=linear"]))


@pytest.mark.parametrize("schedule, rates", [
    ("constant", [1.0, 1.0, 1.0, 1.0]),
    ("step", [1.0, 1.0, 0.5, 0.5]),          # halved every 2 steps
    ("cosine", [1.0, 0.5, 0.0, 0.0]),        # 0.5 (1 + cos(pi t / num_steps)), num_steps 2
])
def test_adam_steps_follow_the_learning_rate_schedule(schedule, rates):
  import jax.numpy as jnp
  from mmfsl_jax.run.build import build_optimizer
  config = apply_overrides(base_config(), [f"lr_schedule={schedule}", "lr_decay_every=2",
                                           "num_steps=2", "learning_rate=0.1", "grad_clip=0.0"])
  validate(config)
  optimizer = build_optimizer(config)
  params = {"w": jnp.zeros(3)}
  state = optimizer.init(params)
  steps = []
  for _ in rates:   # a constant gradient: each Adam update is -rate (to float32 rounding)
    updates, state = optimizer.update({"w": jnp.ones(3)}, state, params)
    steps.append(float(-updates["w"][0]))
  np.testing.assert_allclose(steps, [0.1 * r for r in rates], rtol=1e-4, atol=1e-9)


def test_val_episodes_zero_means_no_validation_and_omniglot_without_val_alphabets_needs_it():
  validate(apply_overrides(base_config(), ["val_episodes=0"]))
  with pytest.raises(ConfigError, match="val_episodes must be 0 .no validation. or positive"):
    validate(apply_overrides(base_config(), ["val_episodes=-1"]))
  no_val = ["dataset=omniglot", "omniglot.val_alphabets=()"]
  with pytest.raises(ConfigError, match=r"val_alphabets=\(\) leaves no validation classes: set "
                                        r"val_episodes=0"):
    validate(apply_overrides(base_config(), no_val))
  validate(apply_overrides(base_config(), no_val + ["val_episodes=0"]))
  tfds_small = ["dataset=tfds_omniglot", "omniglot.tfds_splits=small", "omniglot.val_alphabets=()"]
  with pytest.raises(ConfigError, match=r"val_alphabets=\(\) leaves no validation classes"):
    validate(apply_overrides(base_config(), tfds_small))
  # TFDS's full splits hold out by its own background/evaluation sets: the alphabets do not apply
  validate(apply_overrides(base_config(), ["dataset=tfds_omniglot", "omniglot.val_alphabets=()"]))


def test_embed_dim_zero_means_no_projection_and_takes_no_hidden_widths():
  validate(apply_overrides(base_config(), ["embed_dim=0"]))
  with pytest.raises(ConfigError, match="embed_dim must be 0 .no projection. or positive"):
    validate(apply_overrides(base_config(), ["embed_dim=-1"]))
  with pytest.raises(ConfigError, match=r"projection_hidden=\(32,\) needs a projection"):
    validate(apply_overrides(base_config(), ["embed_dim=0", "projection_hidden=(32,)"]))


def test_floor_pooling_needs_images_of_sixteen_pixels():
  for size_key in ("image_size", "shapes.image_size"):
    with pytest.raises(ConfigError, match="conv_pool='floor' halves the image 4 times"):
      validate(apply_overrides(base_config(), ["conv_pool=floor", f"{size_key}=12"]))
  validate(apply_overrides(base_config(), ["conv_pool=floor", "image_size=16"]))
  validate(apply_overrides(base_config(), ["conv_pool=same", "image_size=12"]))
  # ResNet-12 pools once a block: three blocks need 8 pixels, five need 32
  resnet = ["image_encoder=resnet12", "conv_pool=floor"]
  validate(apply_overrides(base_config(), resnet + ["resnet_channels=(8, 16, 32)", "image_size=12"]))
  with pytest.raises(ConfigError, match="halves the image 5 times.*at least 32 pixels"):
    validate(apply_overrides(base_config(),
                             resnet + ["resnet_channels=(8, 16, 32, 64, 128)", "image_size=28"]))
  with pytest.raises(ConfigError, match="conv_pool='ceil' is not valid; choose one of same, floor"):
    validate(apply_overrides(base_config(), ["conv_pool=ceil"]))


def test_omniglot_resize_filter_is_checked():
  validate(apply_overrides(base_config(), ["omniglot.resize=bilinear"]))
  with pytest.raises(ConfigError, match="omniglot.resize='area' is not valid; choose one of box, "
                                        "bilinear"):
    validate(apply_overrides(base_config(), ["omniglot.resize=area"]))


def test_conv_init_choices():
  validate(apply_overrides(base_config(), ["conv_init=torch"]))
  with pytest.raises(ConfigError, match="conv_init='xavier' is not valid; choose one of "
                                        "lecun_normal, torch"):
    validate(apply_overrides(base_config(), ["conv_init=xavier"]))
