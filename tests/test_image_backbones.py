"""One front door to the pretrained image backbones (nn/encoders/image_backbones.py): the
packaged EfficientNet-Lite0 and Hugging Face directories by name, the input sizes each model
takes, ink images as dark strokes on white, features computed once per distinct image, and
fine-tuning that reaches only the weights chosen."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import save_tiny

from mmfsl_jax.errors import UserError
from mmfsl_jax.nn.encoders import image_backbones as ib


@pytest.fixture(scope="module")
def lite():
  return ib.load_image_backbone("efficientnet_lite0", input_size=32)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
  out = {}
  for model_type in ("vit", "dinov2", "resnet"):
    out[model_type] = tmp_path_factory.mktemp(model_type)
    save_tiny(model_type, out[model_type])
  return out


def _images(n, size=16, channels=3, seed=0):
  return np.random.default_rng(seed).random((n, size, size, channels)).astype(np.float32)


def test_the_packaged_backbone_by_name_and_its_key_names_the_weights_and_size(lite):
  assert (lite.name, lite.dim) == ("efficientnet_lite0", 1280)
  assert lite.key[-1] == 32 and lite.key[1][0][0].endswith((".pth", ".pt", ".bin", ".tar"))
  other = ib.load_image_backbone("efficientnet_lite0", input_size=64)
  assert other.key != lite.key    # another size, other features: another cache entry


def test_input_sizes_a_model_refuses_are_named(tiny_dirs):
  with pytest.raises(UserError, match="at least 32 pixels"):
    ib.load_image_backbone("efficientnet_lite0", input_size=16)
  with pytest.raises(UserError, match=r"takes 32x32 images .*position embeddings"):
    ib.load_image_backbone(str(tiny_dirs["vit"]), input_size=64)
  with pytest.raises(UserError, match="multiple of 8"):
    ib.load_image_backbone(str(tiny_dirs["dinov2"]), input_size=20)
  dinov2 = ib.load_image_backbone(str(tiny_dirs["dinov2"]), input_size=48)  # it interpolates
  assert dinov2.apply(dinov2.params, ib.as_rgb(_images(2))).shape == (2, 16)
  with pytest.raises(UserError, match="0 .the model's own. or a positive side"):
    ib.load_image_backbone("efficientnet_lite0", input_size=-1)


def test_ink_images_are_seen_as_dark_strokes_on_white():
  ink = np.zeros((1, 4, 4, 1), np.float32)
  ink[0, 1, 2, 0] = 1.0
  rgb = np.asarray(ib.as_rgb(ink))
  assert rgb.shape == (1, 4, 4, 3) and rgb[0, 0, 0].tolist() == [1.0, 1.0, 1.0]
  assert rgb[0, 1, 2].tolist() == [0.0, 0.0, 0.0]
  with pytest.raises(UserError, match="1 .ink. or 3 .RGB. channels"):
    ib.as_rgb(np.zeros((1, 4, 4, 2)))


def test_features_are_computed_once_per_distinct_image_and_equal_the_backbone(lite):
  cache = ib.ImageFeatureCache(lite, batch_size=4)
  images = _images(5)
  repeated = np.concatenate([images, images[[0, 3]]])
  features = cache(repeated)
  assert features.shape == (7, 1280) and cache.computed == 5 and len(cache) == 5
  direct = np.asarray(jax.jit(lite.apply)(lite.params, ib.as_rgb(images)))
  np.testing.assert_allclose(features[:5], direct, rtol=1e-5, atol=1e-5)  # padded batches
  np.testing.assert_array_equal(features[5:], features[[0, 3]])
  cache(images[::-1])
  assert cache.computed == 5
  assert cache(images[:0]).shape == (0, 1280)


def _leaf_paths(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_only_the_chosen_weights_are_fine_tuned(tiny_dirs):
  resnet = ib.load_image_backbone(str(tiny_dirs["resnet"]))
  images = _images(3)

  def gradients(encoder):
    params = encoder.init(None, images)
    return _leaf_paths(jax.grad(lambda p: jnp.sum(encoder.apply(p, images) ** 2))(params))

  frozen = gradients(ib.backbone_encoder(resnet))
  assert all(not np.any(np.asarray(g)) for g in frozen.values())
  every = gradients(ib.backbone_encoder(resnet, trainable=True))
  moved = {p for p, g in every.items() if np.any(np.asarray(g))}
  assert any("stages/1" in p for p in moved) and any("embedder" in p for p in moved)
  last = gradients(ib.backbone_encoder(resnet, trainable=True, finetune=r"stages/1/"))
  moved = {p for p, g in last.items() if np.any(np.asarray(g))}
  assert moved and all("stages/1/" in p for p in moved)
  with pytest.raises(UserError, match="matches none of the backbone's"):
    ib.backbone_encoder(resnet, trainable=True, finetune="no_such_layer")
  with pytest.raises(UserError, match="needs model.image.trainable=True"):
    ib.backbone_encoder(resnet, finetune="stages")


def test_lora_starts_as_the_pretrained_model_and_trains_only_its_adapters(tiny_dirs):
  vit = ib.load_image_backbone(str(tiny_dirs["vit"]))
  encoder = ib.lora_encoder(vit, rank=2)
  images = _images(3, size=32)
  params = encoder.init(jax.random.PRNGKey(0), images)
  assert sorted(n.rsplit("/", 2)[-2] for n in params["lora"]) == ["key", "query", "value"]
  np.testing.assert_allclose(encoder.apply(params, images),
                             vit.apply(vit.params, ib.as_rgb(images)), rtol=1e-6, atol=1e-6)
  grads = jax.grad(lambda p: jnp.sum(encoder.apply(p, images) ** 2))(params)
  assert all(not np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads["backbone"]))
  assert all(np.any(np.asarray(g["b"])) for g in grads["lora"].values())

  # the adapted kernel is W + A B: a step on B changes the features as that kernel would
  name = next(iter(params["lora"]))
  moved = jax.tree_util.tree_map(lambda x: x, params)
  moved["lora"][name]["b"] = jnp.ones_like(moved["lora"][name]["b"])
  kernel_path = name.split("/")
  by_hand = jax.tree_util.tree_map(jnp.asarray, vit.params)
  node = by_hand
  for part in kernel_path[:-1]:
    node = node[part]
  assert not np.allclose(encoder.apply(moved, images), encoder.apply(params, images))
  adapter = moved["lora"][name]
  node[kernel_path[-1]] = node[kernel_path[-1]] + adapter["a"] @ adapter["b"]
  np.testing.assert_allclose(encoder.apply(moved, images),
                             vit.apply(by_hand, ib.as_rgb(images)), rtol=1e-5, atol=1e-5)
  with pytest.raises(UserError, match="matches none of the backbone.s"):
    ib.lora_encoder(ib.load_image_backbone(str(tiny_dirs["resnet"])), rank=2)
  with pytest.raises(UserError, match="positive int"):
    ib.lora_encoder(vit, rank=0)
