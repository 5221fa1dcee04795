"""The methods of the shared image-text space (zeroshot, linear_probe, tip_adapter,
tip_adapter_f, lp_plus_plus): their closed forms on hand-made unit features, their fitting
(every step lowers the loss; the curvature bounds hold), and as learners: vmapped = looped,
jit = eager, meta-gradients against finite differences."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfsl_jax.configs.base import base_config
from mmfsl_jax.core.model import multimodal_model
from mmfsl_jax.errors import ConfigError, UserError
from mmfsl_jax.meta import (METHODS, class_means, linear_probe, lp_plus_plus, prototype_logits,
                            tip_adapter, tip_adapter_f, zeroshot)
from mmfsl_jax.meta.base import cross_entropy
from mmfsl_jax.meta.linear_probe import curvature_bound, fit_logistic_regression
from mmfsl_jax.meta.lp_plus_plus import blend_logits, fit_blend, lp_plus_plus_logits
from mmfsl_jax.meta.shared_space import TaskFeatures
from mmfsl_jax.meta.tip_adapter import fine_tuned_keys, tip_adapter_logits
from mmfsl_jax.meta.zeroshot import text_logits
from mmfsl_jax.nn import align, fuse
from mmfsl_jax.nn.align import info_nce, unit_rows
from mmfsl_jax.nn.encoders import vector_encoder
from mmfsl_jax.run import build

N, K, Q, D = 3, 2, 4, 6


def features(seed=0, dtype=np.float32) -> tuple[TaskFeatures, np.ndarray]:
  """Unit features whose classes cluster around their class text; support labels [N*K]."""
  rng = np.random.default_rng(seed)
  text = unit_rows(jnp.asarray(rng.normal(size=(N, D)), dtype))
  labels = np.repeat(np.arange(N), K).astype(np.int32)
  query_labels = np.repeat(np.arange(N), Q)
  noisy = lambda rows: unit_rows(rows + 0.8 * jnp.asarray(rng.normal(size=rows.shape), dtype))
  return TaskFeatures(noisy(text[labels]), noisy(text[query_labels]), text), labels


# ---------------------------------------------------------------------------------------------
# closed forms


def test_tip_adapter_is_the_zero_shot_classifier_plus_its_cache():
  f, labels = features()
  scale, alpha, beta = 100.0, 0.7, 5.5
  np.testing.assert_allclose(tip_adapter_logits(f, labels, scale=scale, alpha=0.0, beta=beta),
                             text_logits(f, scale), rtol=1e-6)
  np.testing.assert_allclose(text_logits(f, scale),
                             scale * np.asarray(f.query) @ np.asarray(f.text).T, rtol=1e-5)
  # the cache term, written out query by query and key by key
  cache = np.zeros((len(f.query), N))
  for m, q in enumerate(np.asarray(f.query)):
    for s, key in enumerate(np.asarray(f.support)):
      cache[m, labels[s]] += np.exp(-beta * (1.0 - q @ key))
  np.testing.assert_allclose(tip_adapter_logits(f, labels, scale=scale, alpha=alpha, beta=beta),
                             text_logits(f, scale) + alpha * cache, rtol=1e-5, atol=1e-5)


def test_tip_adapter_f_without_steps_is_tip_adapter_and_its_steps_lower_the_support_loss():
  f, labels = features(1)
  settings = dict(scale=10.0, alpha=1.0, beta=5.5)
  keys0 = fine_tuned_keys(f, labels, **settings, steps=0, lr=0.01)
  np.testing.assert_array_equal(keys0, f.support)

  def leave_one_out_loss(keys):
    one_hot = jax.nn.one_hot(labels, N)
    affinity = jnp.exp(-settings["beta"] * (1 - f.support @ keys.T)) * (1 - jnp.eye(N * K))
    logits = text_logits(f._replace(query=f.support), settings["scale"]) \
        + settings["alpha"] * affinity @ one_hot
    return float(cross_entropy(logits, labels))

  losses = [leave_one_out_loss(fine_tuned_keys(f, labels, **settings, steps=s, lr=0.01))
            for s in (0, 10, 50)]
  assert losses[0] > losses[1] > losses[2], losses


def test_lp_plus_plus_with_text_weight_zero_and_no_steps_is_the_prototype_classifier():
  f, labels = features(2)
  prototypes = class_means(f.support, labels, N)
  np.testing.assert_allclose(
      lp_plus_plus_logits(f, labels, scale=10.0, alpha_init=0.0, steps=0),
      10.0 * np.asarray(f.query) @ np.asarray(prototypes).T, rtol=1e-5, atol=1e-6)
  # and with a text weight a, the text adds a * scale * f . w_c to class c
  a = 0.5
  np.testing.assert_allclose(
      lp_plus_plus_logits(f, labels, scale=10.0, alpha_init=a, steps=0),
      10.0 * np.asarray(f.query) @ (np.asarray(prototypes) + a * np.asarray(f.text)).T,
      rtol=1e-5, atol=1e-5)


def test_lp_plus_plus_block_steps_never_raise_the_support_loss():
  f, labels = features(3)
  def support_loss(steps):
    v, a = fit_blend(f, labels, scale=10.0, alpha_init=1.0, steps=steps)
    return float(cross_entropy(blend_logits(f.support, v, a, f.text, 10.0), labels))
  losses = [support_loss(s) for s in range(0, 12)]
  assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < 0.9 * losses[0], losses


def test_logistic_regression_curvature_bound_holds_and_the_fit_reaches_its_optimum():
  with jax.enable_x64(True):
    f, labels = features(4, np.float64)
    x, decay = f.support, 1e-2
    loss = lambda flat: cross_entropy(x @ flat[:D * N].reshape(D, N) + flat[D * N:], labels)
    hessian = jax.hessian(loss)(jnp.zeros(D * N + N))
    largest = np.linalg.eigvalsh(np.asarray(hessian)).max()
    bound = float(curvature_bound(jnp.concatenate([x, jnp.ones((len(x), 1))], 1)))
    assert largest <= bound + 1e-12, (largest, bound)
    # gradient descent at 1/L converges: the regularised objective's gradient vanishes
    w, b = fit_logistic_regression(x, labels, N, steps=3000, weight_decay=decay)
    objective = lambda w, b: cross_entropy(x @ w + b, labels) + decay * jnp.sum(w**2)
    grads = jax.grad(objective, argnums=(0, 1))(w, b)
    assert max(float(jnp.abs(g).max()) for g in grads) < 1e-6
    assert (np.argmax(np.asarray(x @ w + b), -1) == labels).all()


# ---------------------------------------------------------------------------------------------
# as learners


def model():
  """Linear encoders (no ReLU): smooth, so finite differences apply, and no feature row is
  zero."""
  encoders = {m: vector_encoder(np.zeros(D), np.ones(D), hidden=(), out_dim=5)
              for m in ("image", "text")}
  return multimodal_model(encoders, align.projections(("image", "text"), 4),
                          fuse.make_fuser("weighted", ("image", "text")))


def tasks(batch=2, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(batch, N, D))

  def split(per_class):
    labels = np.tile(np.repeat(np.arange(N), per_class), (batch, 1)).astype(np.int32)
    points = (np.take_along_axis(centres, labels[..., None], 1)
              + rng.normal(size=labels.shape + (D,)))
    return {"image": points.astype(dtype), "text": np.zeros_like(points, dtype), "label": labels}

  return {"support": split(K), "query": split(Q),
          "class": {"text": (centres + 0.3 * rng.normal(size=centres.shape)).astype(dtype)}}


LEARNERS = {
    "zeroshot": lambda m: zeroshot(m, n_way=N, cosine_scale=10.0),
    "linear_probe": lambda m: linear_probe(m, n_way=N, steps=20),
    "tip_adapter": lambda m: tip_adapter(m, n_way=N, cosine_scale=10.0),
    "tip_adapter_f": lambda m: tip_adapter_f(m, n_way=N, cosine_scale=10.0, finetune_steps=5),
    "lp_plus_plus": lambda m: lp_plus_plus(m, n_way=N, steps=5),
}


def test_unit_rows_keep_a_zero_row_zero_with_a_finite_gradient_in_every_cosine():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(unit_rows(x), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
  assert np.isfinite(jax.grad(lambda x: unit_rows(x).sum())(x)).all()
  # and so every cosine in the library: ProtoNet's logits, InfoNCE
  cosine = lambda x: prototype_logits(x, jnp.ones((2, 2)), "cosine", 10.0).sum()
  assert np.isfinite(jax.grad(cosine)(x)).all()
  assert np.isfinite(jax.grad(lambda x: info_nce(x, jnp.eye(2)))(x)).all()


def test_every_shared_space_method_is_registered():
  assert sorted(LEARNERS) == sorted(n for n, m in METHODS.items() if m.shared_space)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_vmapped_equals_looped_and_jit_equals_eager(name):
  learner = LEARNERS[name](model())
  batch = tasks()
  task = lambda b: jax.tree_util.tree_map(lambda x: x[b], batch)
  params = learner.init(jax.random.key(0), task(0))
  vmapped = jax.jit(jax.vmap(learner.predict, in_axes=(None, 0)))(params, batch)
  for b in range(2):
    np.testing.assert_allclose(vmapped[b], learner.predict(params, task(b)), rtol=2e-5, atol=2e-5)
  loss, metrics = learner.task_loss(params, task(0))
  jitted, _ = jax.jit(learner.task_loss)(params, task(0))
  np.testing.assert_allclose(jitted, loss, rtol=2e-5)
  assert np.isfinite(float(loss)) and 0 <= float(metrics["accuracy"]) <= 1


@pytest.mark.parametrize("name", ["lp_plus_plus", "tip_adapter_f", "linear_probe"])
def test_meta_gradient_through_the_per_task_fit_matches_finite_differences(name):
  with jax.enable_x64(True):
    learner = LEARNERS[name](model())
    task = jax.tree_util.tree_map(lambda x: x[0], tasks(dtype=np.float64))
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64),
                                    learner.init(jax.random.key(0), task))
    loss = jax.jit(lambda p: learner.task_loss(p, task)[0])
    grads = jax.jit(jax.grad(loss))(params)
    direction = jax.tree_util.tree_map(
        lambda x: jnp.asarray(np.random.default_rng(1).normal(size=x.shape)), params)
    along = sum(float(jnp.sum(g * d)) for g, d in zip(jax.tree_util.tree_leaves(grads),
                                                      jax.tree_util.tree_leaves(direction)))
    eps = 1e-6
    shifted = lambda s: float(loss(jax.tree_util.tree_map(lambda p, d: p + s * eps * d,
                                                          params, direction)))
    numeric = (shifted(1) - shifted(-1)) / (2 * eps)
    assert along == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_a_task_without_class_text_is_an_error_naming_it():
  learner = LEARNERS["tip_adapter"](model())
  task = jax.tree_util.tree_map(lambda x: x[0], tasks())
  params = learner.init(jax.random.key(0), task)
  del task["class"]
  with pytest.raises(UserError, match="tip_adapter needs class-level 'text'"):
    learner.predict(params, task)


@pytest.mark.parametrize("overrides, message", [
    ({"learner.name": "zeroshot", "data.modalities": ("image",)}, r"must include \['text'\]"),
    ({"learner.name": "linear_probe", "data.modalities": ("text",)}, r"must include \['image'\]"),
    ({"learner.name": "tip_adapter", "learner.tip_adapter.beta": -1.0}, "alpha, beta"),
    ({"learner.name": "linear_probe", "learner.linear_probe.steps": 0}, "steps >= 1"),
    ({"learner.name": "lp_plus_plus", "learner.align_weight": 0.1}, "align_weight applies"),
])
def test_settings_no_run_could_use_are_config_errors(overrides, message):
  config = base_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ConfigError, match=message):
    build.check_config(config)
