"""Pretrained Hugging Face vision models as frozen image encoders
(nn/encoders/pretrained_vision.py), on tiny randomly initialised CLIP, ViT, DINOv2 and ResNet
models saved to a temporary directory: the weights come back, the features are the model's
own outputs, preprocessing is the image processor's, jit = eager, vmapped = looped, and the
mistakes a user can make are named."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_models import CLIP_MEAN, CLIP_STD, SIZE, TINY
from tiny_models import save_processor as _processor
from tiny_models import tiny_model as _tiny

from mmfsl_jax.errors import UserError
from mmfsl_jax.nn.encoders.pretrained_vision import (load_pretrained_vision, preprocess,
                                                     pretrained_image_encoder, read_preprocessing)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """{model type: (its directory, the transformers model)}."""
  out = {}
  for model_type in ("clip", "vit", "dinov2", "resnet"):
    path = tmp_path_factory.mktemp(model_type)
    model = _tiny(model_type)
    model.save_pretrained(path)
    _processor(path)
    out[model_type] = (path, model)
  return out


def _images(n=3, h=SIZE, w=SIZE, seed=0):
  return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


def _reference(model_type, model, pixels):
  """The transformers model's own call on the same pixel values."""
  if model_type == "clip":
    return model.get_image_features(pixel_values=pixels)
  out = model(pixel_values=pixels)
  if model_type == "vit":
    return out.last_hidden_state[:, 0]
  if model_type == "dinov2":
    return out.pooler_output
  return out.pooler_output.reshape(pixels.shape[0], -1)


@pytest.mark.parametrize("model_type", ["clip", "vit", "dinov2", "resnet"])
def test_loaded_weights_give_the_models_own_features(saved, model_type):
  path, model = saved[model_type]
  vision = load_pretrained_vision(str(path))
  assert vision.model_type == model_type
  leaves = jax.tree_util.tree_leaves
  for a, b in zip(leaves(vision.params), leaves(model.params)):
    np.testing.assert_array_equal(a, b)   # the weights came back as saved
  encoder = pretrained_image_encoder(vision)
  images = _images()
  features = encoder.apply(encoder.init(), images)
  assert features.shape == (3, vision.dim)
  pixels = preprocess(jnp.asarray(images), vision.preprocessing)
  expected = _reference(model_type, model, jnp.transpose(pixels, (0, 3, 1, 2)))
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_normalisation_is_the_image_processors(saved):
  from transformers import CLIPImageProcessor
  path, _ = saved["clip"]
  pixels8 = np.round(_images(2) * 255).astype(np.uint8)   # the processor reads 8-bit images
  ours = preprocess(jnp.asarray(pixels8 / 255.0, jnp.float32), read_preprocessing(str(path)))
  theirs = CLIPImageProcessor.from_pretrained(path)(
      list(pixels8), do_resize=False, do_center_crop=False, return_tensors="np")["pixel_values"]
  np.testing.assert_allclose(jnp.transpose(ours, (0, 3, 1, 2)), theirs, rtol=1e-5, atol=1e-5)


def test_resize_shortest_side_then_centre_crop(tmp_path):
  _processor(tmp_path, shortest=16, crop=12)
  prep = read_preprocessing(str(tmp_path))
  images = np.zeros((1, 20, 40, 3), np.float32)
  images[:, :, 18:22] = 1.0   # a bright band in the middle survives the centre crop
  pixels = np.asarray(preprocess(jnp.asarray(images), prep))
  assert pixels.shape == (1, 12, 12, 3)   # 20x40 -> 16x32 -> centre 12x12
  centre = pixels[0, :, 6, 0] * CLIP_STD[0] + CLIP_MEAN[0]
  assert centre.min() > 0.9


def test_jit_equals_eager_and_vmapped_tasks_equal_a_loop(saved):
  encoder = pretrained_image_encoder(load_pretrained_vision(str(saved["vit"][0])))
  params = encoder.init()
  tasks = np.stack([_images(2, seed=s) for s in range(3)])   # [task, image, H, W, 3]
  vmapped = jax.jit(jax.vmap(lambda x: encoder.apply(params, x)))(tasks)
  for t in range(3):
    eager = encoder.apply(params, tasks[t])
    np.testing.assert_allclose(vmapped[t], eager, rtol=1e-5, atol=1e-5)
  grads = jax.grad(lambda p: encoder.apply(p, tasks[0]).sum())(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads))  # frozen


def test_mistakes_are_named(tmp_path, saved):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_pretrained_vision(str(tmp_path / "nowhere") + "/")
  with pytest.raises(FileNotFoundError, match="could not be downloaded"):
    load_pretrained_vision("no-such-org/no-such-model", local_files_only=True)
  bare = tmp_path / "bare"
  _tiny("vit").save_pretrained(bare)
  with pytest.raises(UserError, match="no preprocessor_config.json"):
    load_pretrained_vision(str(bare))
  from transformers import BertConfig, FlaxBertModel
  text = tmp_path / "bert"
  FlaxBertModel(BertConfig(vocab_size=20, **TINY), seed=0).save_pretrained(text)
  _processor(text)
  with pytest.raises(UserError, match="'bert' model; pretrained image encoders are clip"):
    load_pretrained_vision(str(text))
  encoder = pretrained_image_encoder(load_pretrained_vision(str(saved["vit"][0])))
  with pytest.raises(UserError, match=r"RGB images \[B, H, W, 3\]"):
    encoder.apply(encoder.init(), np.zeros((2, SIZE, SIZE, 1), np.float32))
