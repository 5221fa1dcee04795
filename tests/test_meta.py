"""Numerical tests of the meta-learners on tiny models (vector features, no convolutions)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from mmfsl_jax.nn import align

from mmfsl_jax.nn import fuse
from mmfsl_jax.nn.encoders import vector_encoder
from mmfsl_jax.run.evaluators.episodic import make_batched_predict
from mmfsl_jax.meta import (InnerLoop, batch_loss, class_means, init_train_state, make_meta_step,
                            maml, path_mask, prototype_logits, protonet)
from mmfsl_jax.meta.base import MetaLearner
from mmfsl_jax.meta.step import batch_loss_and_grad
from mmfsl_jax.core.model import multimodal_model

N_WAY, K, Q, F = 3, 2, 2, 4


def tiny_model(modalities=("a", "b"), fuser="weighted"):
  encoders = {m: vector_encoder(np.zeros(F), np.ones(F), hidden=(5,), out_dim=4)
              for m in modalities}
  return multimodal_model(encoders, align.projections(modalities, 4),
                          fuse.make_fuser(fuser, modalities))


def tiny_tasks(batch=3, seed=0, modalities=("a", "b")):
  rng = np.random.default_rng(seed)
  def split(per_class):
    labels = np.tile(np.repeat(np.arange(N_WAY), per_class), (batch, 1)).astype(np.int32)
    out = {m: (rng.normal(size=(batch, N_WAY * per_class, F))
               + labels[..., None]).astype(np.float32)
           for m in modalities}
    out["label"] = labels
    return out
  return {"support": split(K), "query": split(Q)}


def first(batch):
  return jax.tree_util.tree_map(lambda x: x[0], batch)


def test_prototypes_and_logits_closed_form():
  emb = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
  labels = jnp.array([0, 0, 1, 1])
  protos = class_means(emb, labels, 2)
  np.testing.assert_allclose(protos, [[1.0, 0.0], [0.0, 3.0]])
  q = jnp.array([[1.0, 1.0]])
  np.testing.assert_allclose(prototype_logits(q, protos, "euclidean"), [[-1.0, -5.0]], rtol=1e-6)
  cos = prototype_logits(q, protos, "cosine", cosine_scale=2.0)
  np.testing.assert_allclose(cos, [[2 / np.sqrt(2), 2 / np.sqrt(2)]], rtol=1e-6)


def _meta_loss(learner, task):
  """The task loss as a jitted function of params (eager op-by-op dispatch is slow)."""
  return jax.jit(lambda p: learner.task_loss(p, task, None)[0])


@pytest.mark.slow
def test_maml_meta_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    model = tiny_model()
    learner = maml(model, n_way=N_WAY, inner=InnerLoop(steps=2, lr=0.3), head_init="normal")
    task = jax.tree_util.tree_map(
        lambda x: np.asarray(x, np.float64) if x.dtype == np.float32 else x,
                                  first(tiny_tasks()))
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                    learner.init(jax.random.PRNGKey(0), task))
    check_grads(_meta_loss(learner, task), (params,), order=1, modes=["rev"], eps=1e-5,
                atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_first_order_drops_the_second_order_term():
  model = tiny_model()
  task = first(tiny_tasks())
  second = maml(model, n_way=N_WAY, inner=InnerLoop(steps=1, lr=0.5), head_init="normal")
  first_order = maml(model, n_way=N_WAY, inner=InnerLoop(steps=1, lr=0.5, first_order=True),
                     head_init="normal")
  params = second.init(jax.random.PRNGKey(0), task)
  g2 = jax.jit(jax.grad(_meta_loss(second, task)))(params)
  g1 = jax.jit(jax.grad(_meta_loss(first_order, task)))(params)
  # first order: the gradient of the query loss taken at the adapted parameters
  support_grad = jax.jit(jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
      _head_logits(model, p, task["support"]), task["support"]["label"]).mean()))(params)
  adapted = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, support_grad)
  g_query = jax.jit(jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
      _head_logits(model, p, task["query"]), task["query"]["label"]).mean()))(adapted)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g_query)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)))
  assert diff > 1e-3  # the Hessian term is not negligible here


def _head_logits(model, params, split):
  fused, _ = model.apply(params["model"], {m: v for m, v in split.items() if m != "label"},
                         train=True)
  return fused @ params["head"]["kernel"] + params["head"]["bias"]


def test_scan_and_fori_inner_loops_agree():
  model, task = tiny_model(), first(tiny_tasks())
  scan = maml(model, n_way=N_WAY, inner=InnerLoop(steps=3, loop="scan"), head_init="normal")
  fori = maml(model, n_way=N_WAY, inner=InnerLoop(steps=3, loop="fori"), head_init="normal")
  params = scan.init(jax.random.PRNGKey(2), task)
  for a, b in zip(jax.tree_util.tree_leaves(jax.grad(_meta_loss(scan, task))(params)),
                  jax.tree_util.tree_leaves(jax.grad(_meta_loss(fori, task))(params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_inner_params_pattern_adapts_only_matching_subtree():
  model, task = tiny_model(), first(tiny_tasks())
  head_only = maml(model, n_way=N_WAY, inner=InnerLoop(steps=1), inner_params="head/.*",
                   head_init="normal")
  params = head_only.init(jax.random.PRNGKey(0), task)
  mask = path_mask(params, "head/.*")
  assert all(jax.tree_util.tree_leaves(mask["head"]))
  assert not any(jax.tree_util.tree_leaves(mask["model"]))
  with pytest.raises(ValueError, match="matches no parameter"):
    path_mask(params, "nothing/.*")


LEARNERS = {
    "protonet": lambda m: protonet(m, n_way=N_WAY),
    "protonet_cosine_class_gated": lambda m: protonet(m, n_way=N_WAY, distance="cosine",
                                                      fuse_level="class", align_weight=0.5),
    "maml": lambda m: maml(m, n_way=N_WAY, inner=InnerLoop(steps=2), head_init="normal",
                           align_weight=0.5),
}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_vmapped_batch_loss_equals_loop_over_tasks(name):
  fuser = "gated" if "gated" in name else "weighted"
  learner = LEARNERS[name](tiny_model(fuser=fuser))
  batch = tiny_tasks(batch=3)
  params = learner.init(jax.random.PRNGKey(0), first(batch))
  key = jax.random.PRNGKey(5)
  loss, metrics = jax.jit(lambda p, b, k: batch_loss(learner, p, b, k))(params, batch, key)
  keys = jax.random.split(key, 3)
  task_loss = jax.jit(learner.task_loss)
  looped = [task_loss(params, jax.tree_util.tree_map(lambda x: x[i], batch), keys[i])
            for i in range(3)]
  np.testing.assert_allclose(loss, np.mean([l for l, _ in looped]), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], np.mean([m["accuracy"] for _, m in looped]),
                             rtol=1e-6)


@pytest.mark.parametrize("modalities", [("a",), ("b",), ("a", "b")])
def test_learners_run_unimodal_and_fused(modalities):
  learner = protonet(tiny_model(modalities), n_way=N_WAY)
  batch = tiny_tasks(modalities=modalities)
  params = learner.init(jax.random.PRNGKey(0), first(batch))
  logits = jax.jit(learner.predict)(params, first(batch))
  assert logits.shape == (N_WAY * Q, N_WAY)


@pytest.mark.slow
def test_meta_step_learns_and_does_not_recompile():
  traces = []
  base = protonet(tiny_model(), n_way=N_WAY)

  def counting_loss(params, task, key):
    traces.append(1)
    return base.task_loss(params, task, key)

  learner = MetaLearner(base.init, counting_loss, base.predict)
  optimizer = optax.adam(1e-2)
  state = init_train_state(learner, optimizer, first(tiny_tasks()), seed=0)
  step = make_meta_step(learner, optimizer)
  losses = []
  for i in range(30):
    state, metrics = step(state, tiny_tasks(seed=i % 5))
    losses.append(float(metrics["loss"]))
  assert len(traces) == 1, "the meta-step recompiled"
  assert int(state.step) == 30
  assert np.mean(losses[-5:]) < np.mean(losses[:5])


def key_dependent(learner):
  """The learner with each task's loss scaled by a draw from its key (so a task paired with
  another task's key gives a different gradient), and a metric that is not a scalar."""
  def task_loss(params, task, key):
    loss, metrics = learner.task_loss(params, task, key)
    scaled = loss * (1 + jax.random.uniform(key))
    return scaled, dict(metrics, pair=jnp.stack([scaled, 3 * loss]))
  return MetaLearner(learner.init, task_loss, learner.predict)


@pytest.mark.slow
@pytest.mark.parametrize("task_chunk", [1, 2, 3])
def test_chunked_meta_gradient_equals_the_whole_batch_one(task_chunk):
  learner = key_dependent(maml(tiny_model(), n_way=N_WAY, inner=InnerLoop(steps=1)))
  batch = tiny_tasks(batch=6)
  params = learner.init(jax.random.PRNGKey(0), first(batch))
  key = jax.random.PRNGKey(3)
  whole = jax.jit(lambda p: batch_loss_and_grad(learner, p, batch, key))(params)
  chunked = jax.jit(lambda p: batch_loss_and_grad(learner, p, batch, key, task_chunk))(params)
  assert set(chunked[0][1]) == set(whole[0][1])
  for a, b in zip(jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(whole)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
  # The whole-batch path is batch_loss's value and gradient.
  value = batch_loss(learner, params, batch, key)[0]
  np.testing.assert_allclose(whole[0][0], value, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("task_chunk", [None, 1])
def test_a_meta_batch_of_one_task_runs_unvmapped_with_batch_loss_gradient(task_chunk):
  # One task takes the chunked path (no vmap: a vmap of one task made XLA's CPU backend
  # transpose the first layers' output gradients, ~20% of a 600-image ProtoNet step).
  learner = key_dependent(maml(tiny_model(), n_way=N_WAY, inner=InnerLoop(steps=1)))
  tracers = []

  def task_loss(params, task, key):
    tracers.append(type(jax.tree_util.tree_leaves(task)[0]).__name__)
    return learner.task_loss(params, task, key)

  batch = tiny_tasks(batch=1)
  params = learner.init(jax.random.PRNGKey(0), first(batch))
  key = jax.random.PRNGKey(3)
  (loss, metrics), grads = jax.jit(lambda p: batch_loss_and_grad(
      learner._replace(task_loss=task_loss), p, batch, key, task_chunk))(params)
  assert tracers and "BatchTracer" not in tracers, tracers
  (ref_loss, ref_metrics), ref_grads = jax.jit(jax.value_and_grad(
      lambda p: batch_loss(learner, p, batch, key), has_aux=True))(params)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  assert set(metrics) == set(ref_metrics)
  for a, b in zip(jax.tree_util.tree_leaves((metrics, grads)),
                  jax.tree_util.tree_leaves((ref_metrics, ref_grads))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_chunked_meta_step_updates_like_the_unchunked_one_and_rejects_a_bad_chunk():
  learner = maml(tiny_model(), n_way=N_WAY, inner=InnerLoop(steps=1))
  optimizer = optax.adam(1e-2)
  batch = tiny_tasks(batch=4)
  results = []
  for chunk in (4, 2):   # the whole batch at once, then two chunks
    state = init_train_state(learner, optimizer, first(batch), seed=0)
    state, metrics = make_meta_step(learner, optimizer, task_chunk=chunk)(state, batch)
    results.append((jax.tree_util.tree_leaves(state.params), float(metrics["loss"])))
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
  for a, b in zip(results[0][0], results[1][0]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  state = init_train_state(learner, optimizer, first(batch), seed=0)
  with pytest.raises(ValueError, match="task_chunk=3 does not divide the meta-batch of 4"):
    make_meta_step(learner, optimizer, task_chunk=3)(state, batch)


@pytest.mark.slow
def test_batched_predict_gives_every_task_the_same_logits_whatever_the_chunk():
  learner = maml(tiny_model(), n_way=N_WAY, inner=InnerLoop(steps=2))
  batch = tiny_tasks(batch=5)
  params = learner.init(jax.random.PRNGKey(0), first(batch))
  looped = np.stack([learner.predict(params, jax.tree_util.tree_map(lambda x: x[t], batch), None)
                     for t in range(5)])
  for chunk in (1, 2, 5):   # 2 leaves a remainder of one task
    np.testing.assert_allclose(make_batched_predict(learner, chunk)(params, batch), looped,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_meta_step_is_deterministic_under_a_seed():
  learner = maml(tiny_model(), n_way=N_WAY, inner=InnerLoop(steps=1))
  optimizer = optax.adam(1e-2)
  batch = tiny_tasks()
  results = []
  step = make_meta_step(learner, optimizer)
  for seed in (0, 0, 1):
    state = init_train_state(learner, optimizer, first(batch), seed=seed)
    state, _ = step(state, batch)
    results.append(jax.tree_util.tree_leaves(state.params))
  for a, b in zip(results[0], results[1]):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(results[0], results[2]))


@pytest.mark.slow
@pytest.mark.parametrize("fuser", ["weighted", "concat", "gated", "attention"])
@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_every_fuser_trains_with_every_learner(fuser, method):
  model = tiny_model(fuser=fuser)
  learner = (protonet(model, n_way=N_WAY, fuse_level="class") if method == "protonet"
             else maml(model, n_way=N_WAY, inner=InnerLoop(steps=1, first_order=True)))
  task = first(tiny_tasks())
  params = learner.init(jax.random.PRNGKey(0), task)
  (loss, _), grads = jax.jit(jax.value_and_grad(learner.task_loss, has_aux=True))(
      params, task, jax.random.PRNGKey(1))
  assert np.isfinite(float(loss))
  norms = {k: float(optax.tree.norm(g)) for k, g in grads["model"].items()}
  assert all(np.isfinite(v) for v in norms.values())
  assert norms["encoder"] > 0 and norms["align"] > 0 and norms["fuse"] > 0
