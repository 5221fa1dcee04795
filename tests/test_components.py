"""Contracts of the pure components: shapes, jit == no-jit, determinism, closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfsl_jax.nn import align

from mmfsl_jax.nn import fuse
from mmfsl_jax.nn.encoders import conv4, resnet12, token_text_encoder, vector_encoder
from mmfsl_jax.nn.encoders.batch_norm import BatchStatNorm
from mmfsl_jax.nn.encoders.vector import fit_standardizer

KEY = jax.random.PRNGKey(0)
# Encoder inits draw from XLA's RngBitGenerator: threefry compiles for ~60 s in ResNet-12's init
RBG_KEY, OTHER_RBG_KEY = jax.random.key(0, impl="rbg"), jax.random.key(1, impl="rbg")


def _images(n=6, size=16, channels=3):
  return jax.random.uniform(jax.random.PRNGKey(1), (n, size, size, channels))


ENCODERS = {
    "conv4": (lambda: conv4(channels=8), _images, (6, 8)),
    "resnet12": (lambda: resnet12(channels=(4, 6, 8, 10)), _images, (6, 10)),
    "bow": (lambda: token_text_encoder(20, dim=5), lambda: jnp.array([[2, 3, 0], [4, 0, 0]] * 3),
            (6, 5)),
    "gru": (lambda: token_text_encoder(20, dim=5, pooling="gru"),
            lambda: jnp.array([[2, 3, 0], [4, 0, 0]] * 3), (6, 5)),
    "vector": (lambda: vector_encoder(np.zeros(7), np.ones(7), hidden=(9,), out_dim=4),
               lambda: jax.random.normal(KEY, (6, 7)), (6, 4)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_contract(name):
  make, inputs, shape = ENCODERS[name]
  encoder, x = make(), inputs()
  init, apply = jax.jit(encoder.init), jax.jit(encoder.apply)
  params = init(RBG_KEY, x)
  out = apply(params, x)
  assert out.shape == shape and bool(jnp.all(jnp.isfinite(out)))
  if name != "resnet12":  # op-by-op ResNet-12 takes over a minute; Conv4 covers its layers
    with jax.disable_jit():
      eager = encoder.apply(params, x)
    np.testing.assert_allclose(eager, out, rtol=1e-4, atol=1e-5)
  again = init(RBG_KEY, x)
  same = jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), params, again)
  assert jax.tree_util.tree_all(same)
  other = init(OTHER_RBG_KEY, x)
  assert not np.allclose(apply(other, x), out)


def test_batch_stat_norm_normalises_with_batch_statistics():
  x = jax.random.normal(KEY, (10, 3)) * 5 + 2
  params = {"scale": jnp.array([1.0, 2.0, 1.0]), "bias": jnp.array([0.0, 0.0, 3.0])}
  y = BatchStatNorm().apply({"params": params}, x)
  expected = (x - x.mean(0)) / jnp.sqrt(x.var(0) + 1e-5) * params["scale"] + params["bias"]
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_bow_is_masked_mean_of_embeddings():
  encoder = token_text_encoder(10, dim=4)
  ids = jnp.array([[2, 3, 0, 0], [5, 0, 0, 0]])
  params = encoder.init(KEY, ids)
  table = params["Embed_0"]["embedding"]
  out = encoder.apply(params, ids)
  np.testing.assert_allclose(out[0], (table[2] + table[3]) / 2, rtol=1e-6)
  np.testing.assert_allclose(out[1], table[5], rtol=1e-6)


@pytest.mark.slow
def test_gru_ignores_padding():
  encoder = token_text_encoder(10, dim=4, pooling="gru")
  short, padded = jnp.array([[2, 3]]), jnp.array([[2, 3, 0, 0, 0]])
  params = encoder.init(KEY, padded)
  np.testing.assert_allclose(encoder.apply(params, short), encoder.apply(params, padded), atol=1e-6)


def test_vector_encoder_standardises_with_given_statistics():
  train = np.random.default_rng(0).normal(3.0, 2.0, (100, 5))
  mean, std = fit_standardizer(train)
  np.testing.assert_allclose(mean, train.mean(0), rtol=1e-5)
  shifted = vector_encoder(mean, std, hidden=(), out_dim=3)
  plain = vector_encoder(np.zeros(5), np.ones(5), hidden=(), out_dim=3)
  x = jnp.asarray(train[:4], jnp.float32)
  params = plain.init(KEY, x)
  np.testing.assert_allclose(shifted.apply(params, x), plain.apply(params, (x - mean) / std),
                             rtol=1e-5, atol=1e-5)


def _aligned(n=4, d=8):
  k1, k2 = jax.random.split(KEY)
  return {"image": jax.random.normal(k1, (n, d)), "text": jax.random.normal(k2, (n, d))}


@pytest.mark.slow
@pytest.mark.parametrize("name", fuse.FUSERS)
def test_fuser_contract_and_missing_modality(name):
  fuser = fuse.make_fuser(name, ("image", "text"))
  z = _aligned()
  params = fuser.init(KEY, z)
  out = fuser.apply(params, z)
  assert out.shape == (4, 8)
  np.testing.assert_allclose(jax.jit(fuser.apply)(params, z), out, rtol=1e-5, atol=1e-5)
  for present in ("image", "text"):
    alone = fuser.apply(params, {present: z[present]})
    assert alone.shape == (4, 8) and bool(jnp.all(jnp.isfinite(alone)))
  with pytest.raises(ValueError, match="at least one"):
    fuser.apply(params, {})


def test_weighted_fixed_and_learned():
  z = _aligned()
  fixed = fuse.weighted(("image", "text"), weights=(3.0, 1.0))
  np.testing.assert_allclose(fixed.apply({}, z), 0.75 * z["image"] + 0.25 * z["text"], rtol=1e-6)
  np.testing.assert_allclose(fixed.apply({}, {"text": z["text"]}), z["text"], rtol=1e-6)
  learned = fuse.weighted(("image", "text"))
  params = {"logits": jnp.array([0.3, -1.2])}
  w = jax.nn.softmax(params["logits"])
  np.testing.assert_allclose(learned.apply(params, z), w[0] * z["image"] + w[1] * z["text"],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="non-negative"):
    fuse.weighted(("image", "text"), weights=(1.0, -1.0))


def test_gated_is_convex_mix_driven_by_text():
  gated = fuse.gated("image", "text", hidden=8)
  z = _aligned()
  params = gated.init(KEY, z)
  out = gated.apply(params, z)
  lam = jax.nn.sigmoid(gated_h := fuse._Gate(hidden=8).apply({"params": params}, z["text"]))
  np.testing.assert_allclose(out, lam * z["image"] + (1 - lam) * z["text"], rtol=1e-5, atol=1e-6)
  assert gated_h.shape == (4, 1)
  np.testing.assert_array_equal(gated.apply(params, {"image": z["image"]}), z["image"])


def test_attention_masks_absent_modality():
  att = fuse.attention(("image", "text"))
  z = _aligned()
  params = att.init(KEY, z)
  alone = att.apply(params, {"image": z["image"]})
  assert not np.allclose(alone, att.apply(params, z))
  # an absent modality's slot is masked: garbage there changes nothing
  module = fuse._Attention(num_modalities=2)
  present = jnp.array([True, False])
  zeros = jnp.stack([z["image"], jnp.zeros_like(z["text"])], 1)
  garbage = jnp.stack([z["image"], z["text"] * 100.0], 1)
  np.testing.assert_allclose(module.apply({"params": params}, zeros, present), alone, rtol=1e-5)
  np.testing.assert_allclose(module.apply({"params": params}, garbage, present), alone, rtol=1e-5)


def test_projections_per_modality():
  proj = align.projections(("image", "text"), 5)
  feats = {"image": jnp.ones((3, 7)), "text": jnp.ones((3, 2))}
  params = proj.init(KEY, feats)
  out = proj.apply(params, feats)
  assert out["image"].shape == (3, 5) and out["text"].shape == (3, 5)
  assert set(proj.apply(params, {"text": feats["text"]})) == {"text"}


def test_projection_of_dim_zero_is_the_identity():
  proj = align.projections(("image", "text"), 0)
  feats = {"image": jnp.arange(6.0).reshape(3, 2), "text": jnp.ones((3, 2))}
  params = proj.init(KEY, feats)
  assert jax.tree_util.tree_leaves(params) == []
  out = proj.apply(params, feats)
  assert set(out) == {"image", "text"}
  np.testing.assert_array_equal(out["image"], feats["image"])
  assert set(proj.apply(params, {"text": feats["text"]})) == {"text"}


def test_projection_of_dim_zero_needs_features_of_one_width():
  proj = align.projections(("image", "text"), 0)
  with pytest.raises(ValueError, match=r"one width.*'image': 7, 'text': 2"):
    proj.init(KEY, {"image": jnp.ones((3, 7)), "text": jnp.ones((3, 2))})
  with pytest.raises(ValueError, match="need a projection"):
    align.projections(("image",), 0, hidden=(8,))


def test_info_nce_matches_closed_form():
  z_a, z_b = _aligned(5, 3).values()
  t = 0.5
  a = np.asarray(z_a) / np.linalg.norm(z_a, axis=1, keepdims=True)
  b = np.asarray(z_b) / np.linalg.norm(z_b, axis=1, keepdims=True)
  logits = a @ b.T / t
  def ce(l):
    l = l - l.max(1, keepdims=True)
    return np.mean(np.log(np.exp(l).sum(1)) - np.diag(l))
  expected = 0.5 * (ce(logits) + ce(logits.T))
  np.testing.assert_allclose(align.info_nce(z_a, z_b, t), expected, rtol=1e-5)
  # perfectly aligned orthogonal views score lower than random ones
  eye = jnp.eye(5)
  assert align.info_nce(eye, eye, t) < align.info_nce(z_a, z_b, t)
