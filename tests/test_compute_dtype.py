"""bfloat16 compute (`model.image.compute_dtype`, core/component.py's `with_compute_dtype`):
the image encoder's products run in bfloat16 while parameters, gradients, optimiser state and
losses stay float32; features and MAML's meta-gradient match float32's within bfloat16's
precision, and a short training run follows the float32 one."""
from __future__ import annotations

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from mmfsl_jax.core.component import with_compute_dtype
from mmfsl_jax.meta.step import init_train_state, make_meta_step
from mmfsl_jax.nn.encoders.image import conv4
from mmfsl_jax.run import build
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run import data as run_data


def _images(n=10, size=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).random((n, size, size, 3)), jnp.float32)


def _equations(jaxpr):
  """Every equation of a jaxpr and of the jaxprs inside it (custom VJPs, conds, scans)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for inner in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(inner, jax.extend.core.ClosedJaxpr):
          yield from _equations(inner.jaxpr)
        elif isinstance(inner, jax.extend.core.Jaxpr):
          yield from _equations(inner)


def test_the_encoder_computes_in_bfloat16_and_returns_float32_features_near_float32s():
  encoder = conv4(8, conv_impl="matmul")
  images = _images()
  params = encoder.init(jax.random.PRNGKey(0), images)
  low = with_compute_dtype(encoder, "bfloat16")
  full, half = encoder.apply(params, images), low.apply(params, images)
  assert half.dtype == jnp.float32
  relative = float(jnp.linalg.norm(half - full) / jnp.linalg.norm(full))
  assert 0 < relative < 3e-2      # bfloat16 has an 8-bit mantissa: ~0.4% a rounding
  products = [e for e in _equations(jax.make_jaxpr(lambda p: low.apply(p, images))(params).jaxpr)
              if e.primitive.name == "dot_general"]
  assert products and all(v.aval.dtype == jnp.bfloat16 for e in products for v in e.invars)
  assert with_compute_dtype(encoder, "float32") is encoder
  with pytest.raises(ValueError, match="unknown compute dtype"):
    with_compute_dtype(encoder, "float16")


def _tiny(*overrides):
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, ["data.modalities=('image',)", "task.meta_batch=2",
                                      *overrides])
  return build.effective_config(config)


def _setup(config):
  splits, encodings = run_data.prepare_splits(config)
  model = build.build_model(config, encodings, splits["train"])
  learner = build.build_learner(config, model)
  optimizer = build.build_optimizer(config)
  sampler = build.training_samplers(config, splits)[0]
  return learner, optimizer, sampler


# bfloat16 meta-gradients of the tiny MAML against float32's, over 4 tasks: cosine
# 0.980-0.996 and relative error 0.10-0.20 on a 2-core Zen 5 (XLA's own pooling the same), so
# the bounds below; dropping the second-order term moves float32's own by cosine 0.16-0.57.
TASKS, MIN_COSINE, MAX_RELATIVE = 4, 0.97, 0.25


def test_maml_meta_gradients_in_bfloat16_match_float32s():
  grads = {}
  for dtype in ("float32", "bfloat16"):
    learner, optimizer, sampler = _setup(_tiny("learner.name=maml",
                                               f"model.image.compute_dtype={dtype}"))
    meta_gradient = jax.jit(jax.grad(
        lambda p, task: learner.task_loss(p, task, jax.random.PRNGKey(1))[0]))
    for index in range(TASKS):
      task = jax.tree_util.tree_map(lambda x: x[0], sampler.sample(index))
      state = init_train_state(learner, optimizer, task, 0)
      g = meta_gradient(state.params, task)
      assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(g))
      grads[dtype, index] = jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(g)])
  for index in range(TASKS):
    full, half = grads["float32", index], grads["bfloat16", index]
    cosine = float(full @ half / (jnp.linalg.norm(full) * jnp.linalg.norm(half)))
    relative = float(jnp.linalg.norm(half - full) / jnp.linalg.norm(full))
    assert cosine > MIN_COSINE and relative < MAX_RELATIVE, (index, cosine, relative)


@pytest.mark.slow
def test_a_bfloat16_training_run_follows_the_float32_one():
  curves = {}
  for dtype in ("float32", "bfloat16"):
    learner, optimizer, sampler = _setup(_tiny("learner.name=protonet",
                                               f"model.image.compute_dtype={dtype}"))
    state = init_train_state(learner, optimizer,
                             jax.tree_util.tree_map(lambda x: x[0], sampler.sample(0)), 0)
    step = make_meta_step(learner, optimizer)
    losses = []
    for i in range(40):
      state, metrics = step(state, sampler.sample(i))
      losses.append(float(metrics["loss"]))
    floats = [leaf for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state))
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
    curves[dtype] = np.asarray(losses)
  full, half = curves["float32"], curves["bfloat16"]
  assert full[-10:].mean() < full[:10].mean() and half[-10:].mean() < half[:10].mean()
  np.testing.assert_allclose(half[:5], full[:5], rtol=0.05)        # the same start
  assert abs(half[-10:].mean() - full[-10:].mean()) < 0.1 * full[-10:].mean()


def test_auto_is_float32_on_cpus_and_bfloat16_on_accelerators(monkeypatch):
  config = _tiny()
  assert build.compute_dtype(config) == "float32"
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert build.compute_dtype(config) == "bfloat16"
  config.model.image.compute_dtype = "float32"
  assert build.compute_dtype(config) == "float32"
