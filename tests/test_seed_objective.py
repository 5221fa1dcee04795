"""The seed objective (issue 21): + lambda x the support loss at the initial parameters, for
ProtoNet and the MAML family, against closed forms on a linear model in float64."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfsl_jax.configs.base import base_config
from mmfsl_jax.core.component import Component
from mmfsl_jax.core.model import multimodal_model
from mmfsl_jax.errors import ConfigError, UserError
from mmfsl_jax.meta import InnerLoop, anil, maml, metasgd, protonet
from mmfsl_jax.nn import align, fuse
from mmfsl_jax.run import build

N_WAY, K, Q, F, D = 3, 2, 2, 4, 3
LAMBDA = 0.7
SUPPORTED = ("protonet", "maml", "anil", "metasgd")


def linear_model():
  """One modality "x" through x @ w (no bias), no projection, a fixed fuser: fused = x @ w."""
  w0 = np.random.default_rng(1).normal(size=(F, D))
  encoder = Component(lambda key, x: {"w": jnp.asarray(w0, x.dtype)},
                      lambda params, x, *, train=False, key=None: x @ params["w"])
  return multimodal_model({"x": encoder}, align.identity(("x",)),
                          fuse.make_fuser("weighted", ("x",), weights=(1.0,)))


def linear_task(seed=0):
  rng = np.random.default_rng(seed)

  def split(per_class):
    labels = np.repeat(np.arange(N_WAY), per_class).astype(np.int32)
    return {"x": rng.normal(size=(N_WAY * per_class, F)) + labels[:, None], "label": labels}

  return {"support": split(K), "query": split(Q)}


def learner_of(name, **kwargs):
  model = linear_model()
  inner = InnerLoop(steps=2, lr=0.3, first_order=name == "maml_first_order")
  if name == "protonet":
    return protonet(model, n_way=N_WAY, **kwargs)
  constructor = {"maml": maml, "maml_first_order": maml, "anil": anil, "metasgd": metasgd}[name]
  return constructor(model, n_way=N_WAY, inner=inner, head_init="normal", **kwargs)


def init64(learner, task):
  params = learner.init(jax.random.PRNGKey(0), task)
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)


def loss_and_grad(learner, params, task):
  (loss, metrics), grads = jax.jit(jax.value_and_grad(learner.task_loss, has_aux=True))(
      params, task, None)
  return loss, metrics, grads


# Closed forms, in numpy: the support loss at theta and its gradient.


def softmax_ce(logits, labels):
  """(mean cross-entropy, its gradient in the logits)."""
  shifted = logits - logits.max(-1, keepdims=True)
  p = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
  loss = -np.mean(np.log(p[np.arange(len(labels)), labels]))
  return loss, (p - np.eye(logits.shape[1])[labels]) / len(labels)


def protonet_support_closed_form(w, x, labels):
  """The support examples against prototypes that include them: logits -|e_i - p_c|^2."""
  e = x @ w
  a = np.eye(N_WAY)[labels].T
  a = a / a.sum(1, keepdims=True)                      # [N, n]: p = a e
  p = a @ e
  logits = -((e[:, None, :] - p[None, :, :]) ** 2).sum(-1)
  loss, g = softmax_ce(logits, labels)
  # d/de_i of -|e_i - p_c|^2 summed with g: -2 e_i sum_c g_ic + 2 (g p)_i, and sum_c g_ic = 0.
  de = 2 * g @ p
  dp = 2 * g.T @ e - 2 * g.sum(0)[:, None] * p
  de = de + a.T @ dp
  return loss, {"model": {"encoder": {"x": {"w": x.T @ de}}, "align": {}, "fuse": {}}}


def head_support_closed_form(w, kernel, bias, x, labels):
  """Cross-entropy of the head on the support embeddings: logits = x w kernel + bias."""
  e = x @ w
  loss, g = softmax_ce(e @ kernel + bias, labels)
  return loss, {"model": {"encoder": {"x": {"w": x.T @ (g @ kernel.T)}}, "align": {},
                          "fuse": {}},
                "head": {"kernel": e.T @ g, "bias": g.sum(0)}}


def support_closed_form(name, params, task):
  w = np.asarray(params["model"]["encoder"]["x"]["w"])
  x, labels = task["support"]["x"], task["support"]["label"]
  if name == "protonet":
    return protonet_support_closed_form(w, x, labels)
  head = params["head"]
  loss, grads = head_support_closed_form(w, np.asarray(head["kernel"]), np.asarray(head["bias"]),
                                         x, labels)
  if "inner_lr" in params:   # Meta-SGD: the support loss at theta does not depend on the rates
    grads["inner_lr"] = jax.tree_util.tree_map(np.zeros_like, params["inner_lr"])
  return loss, grads


def assert_trees_close(a, b, rtol=1e-10, atol=1e-12):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["protonet", "maml", "maml_first_order", "anil", "metasgd"])
def test_gradient_is_the_query_gradient_plus_lambda_times_the_support_gradient(name):
  with jax.enable_x64(True):
    task = linear_task()
    base = learner_of(name)
    params = init64(base, task)
    loss0, metrics0, grads0 = loss_and_grad(base, params, task)
    loss, metrics, grads = loss_and_grad(learner_of(name, support_loss_weight=LAMBDA), params,
                                         task)
    support, support_grads = support_closed_form(name, params, task)
    np.testing.assert_allclose(metrics["support_loss"], support, rtol=1e-12)
    np.testing.assert_allclose(loss, loss0 + LAMBDA * support, rtol=1e-12)
    np.testing.assert_allclose(metrics["loss"], metrics0["loss"], rtol=1e-12)  # the query's
    expected = jax.tree_util.tree_map(lambda g, s: g + LAMBDA * s, grads0, support_grads)
    assert_trees_close(grads, expected)
    assert float(np.abs(support_grads["model"]["encoder"]["x"]["w"]).max()) > 1e-3


@pytest.mark.parametrize("name", ["protonet", "maml"])
def test_weight_zero_is_exactly_the_learner_without_it(name):
  with jax.enable_x64(True):
    task = linear_task(seed=3)
    before, zero = learner_of(name), learner_of(name, support_loss_weight=0.0)
    params = init64(before, task)
    loss_b, metrics_b, grads_b = loss_and_grad(before, params, task)
    loss_z, metrics_z, grads_z = loss_and_grad(zero, params, task)
    assert float(loss_b) == float(loss_z)
    assert sorted(metrics_z) == sorted(metrics_b) and "support_loss" not in metrics_z
    for a, b in zip(jax.tree_util.tree_leaves(grads_b), jax.tree_util.tree_leaves(grads_z)):
      np.testing.assert_array_equal(a, b)
    # The same program: no extra forward pass for the support loss.
    program = lambda learner: str(jax.make_jaxpr(
        jax.value_and_grad(learner.task_loss, has_aux=True))(params, task, None))
    assert program(zero) == program(before)


@pytest.mark.parametrize("name", SUPPORTED)
def test_negative_weights_are_user_errors(name):
  with pytest.raises(UserError, match="support_loss_weight must be 0"):
    learner_of(name, support_loss_weight=-0.1)


@pytest.mark.parametrize("overrides, message", [
    ({"learner.name": "reptile", "learner.support_loss_weight": 0.5},
     r"learner.support_loss_weight applies to .*\(protonet, maml, anil, metasgd\), not "
     r"learner.name=reptile"),
    ({"learner.name": "baselinepp", "learner.support_loss_weight": 0.5},
     "learner.name=baselinepp"),
    ({"learner.name": "am3", "data.modalities": ("image", "text"),
      "learner.support_loss_weight": 0.5}, "learner.name=am3"),
    ({"learner.name": "protonet", "learner.support_loss_weight": -0.5},
     r"learner.support_loss_weight must be 0 \(off\) or positive, got -0.5"),
    ({"learner.name": "maml", "learner.support_loss_weight": -1.0},
     "learner.support_loss_weight must be 0"),
])
def test_check_config_refuses_other_learners_and_negative_weights(overrides, message):
  config = base_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ConfigError, match=message):
    build.check_config(config)


def test_check_config_accepts_a_positive_weight_for_the_learners_that_take_it():
  for name in SUPPORTED:
    config = base_config()
    config.update_from_flattened_dict({"learner.name": name, "learner.support_loss_weight": 0.5})
    build.check_config(config)


@pytest.mark.parametrize("name", ["protonet", "maml"])
def test_build_learner_passes_the_config_weight_through(name):
  with jax.enable_x64(True):
    task = linear_task(seed=5)
    losses = {}
    for weight in (0.0, 0.5):
      config = base_config()
      config.update_from_flattened_dict({"learner.name": name, "learner.support_loss_weight":
                                         weight, "inner.steps": 1})
      build.check_config(config)
      learner = build.build_learner(config, linear_model(), n_way=N_WAY)
      params = init64(learner, task)
      if name == "maml":   # a non-zero head, so the support loss is not just log(N)
        params["head"]["kernel"] = jnp.asarray(
            np.random.default_rng(2).normal(size=(D, N_WAY)))
      losses[weight], metrics = jax.jit(learner.task_loss)(params, task, None)
    support, _ = support_closed_form(name, params, task)
    np.testing.assert_allclose(metrics["support_loss"], support, rtol=1e-12)
    np.testing.assert_allclose(losses[0.5] - losses[0.0], 0.5 * support, rtol=1e-10)
