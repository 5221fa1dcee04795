"""Batch norm's statistics: recorded, fixed, and the training population's (test-time)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfsl_jax.nn import align

from mmfsl_jax.nn import fuse
from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.nn.encoders import conv4, resnet12
from mmfsl_jax.nn.encoders.batch_norm import (BatchStatNorm, batch_stats_from, fixed_batch_moments,
                                           recording_batch_moments)
from mmfsl_jax.errors import UserError
from mmfsl_jax.run.evaluators.episodic import make_batched_predict
from mmfsl_jax.meta.maml import maml
from mmfsl_jax.meta.protonet import protonet
from mmfsl_jax.core.model import multimodal_model
from mmfsl_jax.run.evaluators.population_norm import estimate_population_moments

_KEY = jax.random.key(0, impl="rbg")   # threefry inits compile for tens of seconds here


def _images(n, seed=0, size=16):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, size, size, 1)), jnp.float32)


def _recorded(apply, *args):
  with recording_batch_moments() as recorded:
    apply(*args)
  return recorded


def test_recorded_moments_are_the_batch_mean_and_biased_variance():
  x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, size=(6, 5, 4)), jnp.float32)
  params = BatchStatNorm().init(_KEY, x)
  recorded = _recorded(BatchStatNorm().apply, params, x)
  (mean, var), = recorded[""]          # the module is the root: an empty path
  np.testing.assert_allclose(mean, x.reshape(-1, 4).mean(0), rtol=1e-5)
  np.testing.assert_allclose(var, x.reshape(-1, 4).var(0), rtol=1e-5)
  with batch_stats_from(2):            # inductive mode records the support rows' moments
    (mean, _), = _recorded(BatchStatNorm().apply, params, x)[""]
  np.testing.assert_allclose(mean, x[:2].reshape(-1, 4).mean(0), rtol=1e-5)


@pytest.mark.parametrize("make,paths", [
    (lambda: conv4(4), [f"BatchStatNorm_{i}" for i in range(4)]),
    (lambda: resnet12((4, 6)), [f"ResidualBlock12_{b}/BatchStatNorm_{i}" for b in range(2)
                                for i in range(4)])], ids=["conv4", "resnet12"])
@pytest.mark.slow
def test_fixing_a_batch_its_own_moments_reproduces_it_and_frees_each_example(make, paths):
  net, x = make(), _images(6)
  params = net.init(_KEY, x)
  recorded = _recorded(net.apply, params, x)
  assert sorted(recorded) == sorted(paths) and all(len(c) == 1 for c in recorded.values())
  moments = {path: calls[0] for path, calls in recorded.items()}
  with fixed_batch_moments(moments):
    fixed = net.apply(params, x)
    # ... and with fixed moments an example's features no longer depend on the others
    alone = net.apply(params, x[:1])
  np.testing.assert_allclose(fixed, net.apply(params, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(alone, fixed[:1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(net.apply(params, x[:2])[:1], fixed[:1], atol=1e-3)  # batch stats do


def test_fixed_moments_name_a_missing_layer_and_a_wrong_width():
  net, x = conv4(4), _images(3)
  params = net.init(_KEY, x)
  moments = {f"BatchStatNorm_{i}": (jnp.zeros(4), jnp.ones(4)) for i in range(3)}
  with pytest.raises(ValueError, match="no batch-norm moments for layer 'BatchStatNorm_3'"):
    with fixed_batch_moments(moments):
      net.apply(params, x)
  moments["BatchStatNorm_3"] = (jnp.zeros(5), jnp.ones(5))
  with pytest.raises(ValueError, match="the layer has 4 channels"):
    with fixed_batch_moments(moments):
      net.apply(params, x)


def _model_and_tasks(image_size=16):
  rng = np.random.default_rng(3)
  images = rng.normal(size=(8 * 6, image_size, image_size, 1)).astype(np.float32)
  images += np.repeat(rng.normal(size=(8, 1, 1, 1)), 6, axis=0).astype(np.float32)  # class shift
  dataset = ClassDataset(examples={"image": images}, labels=np.repeat(np.arange(8), 6),
                         class_names=tuple(map(str, range(8))), class_texts={})
  model = multimodal_model({"image": conv4(4)}, align.identity(("image",)),
                           fuse.make_fuser("weighted", ("image",)))
  return model, dataset


@pytest.mark.slow
def test_population_moments_average_the_batches_of_training_tasks():
  model, dataset = _model_and_tasks()
  sampler = EpisodeSampler(dataset, n_way=3, k_shot=1, q_query=2, seed=5)
  params = model.init(_KEY, {"image": jnp.asarray(dataset.examples["image"][:4])})
  population = estimate_population_moments(model, params, sampler, num_batches=3)
  per_batch = []
  for i in range(3):   # the same batches by hand: task i's support and query images
    task = sampler.sample(i)
    images = jnp.concatenate([task["support"]["image"][0], task["query"]["image"][0]])
    assert images.shape[0] == 3 * (1 + 2)
    per_batch.append(_recorded(model.apply, params, {"image": images}))
  for path, (mean, var) in population.items():
    np.testing.assert_allclose(mean, np.mean([r[path][0][0] for r in per_batch], 0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(var, np.mean([r[path][0][1] for r in per_batch], 0), rtol=1e-5,
                               atol=1e-6)
  assert sorted(population) == [f"BatchStatNorm_{i}" for i in range(4)]
  with pytest.raises(UserError, match="at least 1 batch"):
    estimate_population_moments(model, params, sampler, num_batches=0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_population_moments_classify_each_query_on_its_own(method):
  # Under the population's moments a query's logits do not depend on the other queries; under
  # the task's own statistics (the default, transductive) they do. MAML's inner loop is a
  # lax.scan: the fixed moments reach inside it too.
  model, dataset = _model_and_tasks()
  sampler = EpisodeSampler(dataset, n_way=3, k_shot=1, q_query=2, seed=5)
  learner = protonet(model, n_way=3) if method == "protonet" else maml(model, n_way=3)
  task = sampler.sample(0)
  params = learner.init(_KEY, jax.tree_util.tree_map(lambda a: a[0], task))
  moments = estimate_population_moments(model, params["model"], sampler, 2)
  images = np.array(task["query"]["image"])
  images[:, 1:] *= 3.0                      # every query but the first
  changed = dict(task, query=dict(task["query"], image=images))
  for given, independent in ((moments, True), (None, False)):
    predict = make_batched_predict(learner, 1, given)
    first = lambda t: np.asarray(predict(params, t))[0, 0]
    assert np.allclose(first(task), first(changed), rtol=1e-5, atol=1e-5) == independent


def test_population_moments_need_an_image_encoder():
  text_only = multimodal_model({"text": conv4(4)}, align.identity(("text",)),
                               fuse.make_fuser("weighted", ("text",)))
  _, dataset = _model_and_tasks()
  sampler = EpisodeSampler(dataset, n_way=3, k_shot=1, q_query=2)
  with pytest.raises(UserError, match="for image encoders"):
    estimate_population_moments(text_only, {}, sampler, 1)
