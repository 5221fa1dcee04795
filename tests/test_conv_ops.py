"""The patch-matmul convolution against XLA's, and Conv4/ResNet-12 under both."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfsl_jax.nn.encoders import conv4, conv_ops, resnet12
from mmfsl_jax.nn.encoders.conv_ops import (conv_same, image_patches, image_patches_transposed,
                                         max_pool_2x2, resolve_impl)


def test_image_patches_order_matches_kernel_layout():
  x = jnp.arange(2 * 4 * 5 * 3, dtype=jnp.float32).reshape(2, 4, 5, 3)
  patches = image_patches(x, (3, 3))
  assert patches.shape == (2, 4, 5, 27)
  # Pixel (1, 2): offset (i, j) of its neighbourhood is x[1 + i - 1, 2 + j - 1].
  neighbourhood = patches[0, 1, 2].reshape(3, 3, 3)
  np.testing.assert_array_equal(neighbourhood, x[0, 0:3, 1:4, :])
  # The corner sees zero padding above and to the left.
  corner = patches[1, 0, 0].reshape(3, 3, 3)
  assert float(jnp.abs(corner[0]).sum()) == 0 and float(jnp.abs(corner[:, 0]).sum()) == 0


def test_transposed_patches_are_the_patch_matrix_transposed():
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 5, 4, 3)), jnp.float32)
  np.testing.assert_array_equal(image_patches_transposed(x, (3, 3)),
                                image_patches(x, (3, 3)).reshape(-1, 27).T)


# (kernel, C_in, C_out): kh*kw*C_in >= C_out uses [n*H*W, K] patches, < C_out the
# transposed [K, n*H*W] ones (the first layer on grey or RGB images).
@pytest.mark.parametrize("kernel_size,c_in,c_out", [((3, 3), 4, 5), ((1, 1), 4, 5),
                                                    ((5, 5), 4, 5), ((3, 3), 1, 16),
                                                    ((3, 3), 3, 32)])
def test_matmul_conv_equals_xla_conv_values_and_gradients(kernel_size, c_in, c_out):
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 7, 6, c_in)))
    kernel = jnp.asarray(rng.normal(size=(*kernel_size, c_in, c_out)))

    def loss(impl):
      return lambda x, k: jnp.sum(jnp.sin(conv_same(x, k, impl)))

    np.testing.assert_allclose(conv_same(x, kernel, "matmul"), conv_same(x, kernel, "xla"),
                               rtol=1e-12, atol=1e-12)
    for g_matmul, g_xla in zip(jax.grad(loss("matmul"), (0, 1))(x, kernel),
                               jax.grad(loss("xla"), (0, 1))(x, kernel)):
      np.testing.assert_allclose(g_matmul, g_xla, rtol=1e-10, atol=1e-10)


# Wide patches ([n, H, W, K] patches @ kernel) and narrow ones (the transposed [K, n*H*W] ones).
@pytest.mark.parametrize("c_in,c_out", [(4, 5), (3, 32)], ids=["wide", "narrow"])
def test_matmul_conv_second_order_gradients_equal_xla_convs(c_in, c_out):
  """A MAML-shaped objective: the gradient through one inner gradient step on the kernel."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    support, query = (jnp.asarray(rng.normal(size=(2, 5, 5, c_in))) for _ in range(2))
    kernel = jnp.asarray(rng.normal(size=(3, 3, c_in, c_out)) * 0.3)

    def meta_grad(impl):
      inner_loss = lambda k: jnp.sum(jnp.sin(conv_same(support, k, impl)) ** 2)
      outer_loss = lambda k, q: jnp.sum(jnp.cos(conv_same(q, k - 0.1 * jax.grad(inner_loss)(k),
                                                           impl)))
      return jax.grad(outer_loss, (0, 1))(kernel, query)

    for g_matmul, g_xla in zip(meta_grad("matmul"), meta_grad("xla")):
      np.testing.assert_allclose(g_matmul, g_xla, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_matmul_conv_vmapped_per_task_kernels_equal_a_loop():
  rng = np.random.default_rng(1)
  for c_in, c_out in ((3, 8), (1, 16)):   # wide and narrow patches
    x = jnp.asarray(rng.normal(size=(4, 2, 6, 6, c_in)), jnp.float32)
    kernels = jnp.asarray(rng.normal(size=(4, 3, 3, c_in, c_out)), jnp.float32)
    batched = jax.vmap(lambda a, k: conv_same(a, k, "matmul"))(x, kernels)
    looped = jnp.stack([conv_same(x[t], kernels[t], "xla") for t in range(4)])
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)
    loss = lambda impl: lambda a, k: jnp.sum(jnp.tanh(conv_same(a, k, impl)))
    batched = jax.vmap(jax.grad(loss("matmul"), (0, 1)))(x, kernels)
    looped = [jax.grad(loss("xla"), (0, 1))(x[t], kernels[t]) for t in range(4)]
    for i in range(2):   # input and kernel gradients
      np.testing.assert_allclose(batched[i], jnp.stack([g[i] for g in looped]),
                                 rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [lambda impl: conv4(8, conv_impl=impl),
                                  lambda impl: resnet12((4, 6), conv_impl=impl)],
                         ids=["conv4", "resnet12"])
@pytest.mark.slow
def test_encoders_share_parameters_and_function_across_impls(make):
  x = jnp.asarray(np.random.default_rng(2).normal(size=(5, 12, 12, 3)), jnp.float32)
  fast, reference = make("matmul"), make("xla")
  key = jax.random.key(0, impl="rbg")   # threefry inits compile for tens of seconds here
  params = jax.jit(fast.init)(key, x)
  assert (jax.tree_util.tree_structure(params)
          == jax.tree_util.tree_structure(jax.eval_shape(reference.init, key, x)))
  # Jitted: one compile each, rather than one per primitive in eager mode.
  grad = lambda net: jax.jit(jax.grad(lambda p: jnp.sum(net.apply(p, x) ** 2)))
  np.testing.assert_allclose(jax.jit(fast.apply)(params, x), jax.jit(reference.apply)(params, x),
                             rtol=1e-4, atol=1e-4)
  g_fast, g_ref = grad(fast)(params), grad(reference)(params)
  for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("mode,round_up", [("same", 1), ("floor", 0)])
@pytest.mark.parametrize("size", [(6, 8), (7, 5)])
def test_reshape_max_pool_equals_reduce_window_pool(size, mode, round_up):
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, *size, 3)))
    np.testing.assert_array_equal(max_pool_2x2(x, "matmul", mode), max_pool_2x2(x, "xla", mode))
    assert max_pool_2x2(x, mode=mode).shape == (2, (size[0] + round_up) // 2,
                                                (size[1] + round_up) // 2, 3)
    grads = [jax.grad(lambda a: jnp.sum(jnp.sin(max_pool_2x2(a, impl, mode))))(x)
             for impl in ("matmul", "xla")]  # no ties in random data: same subgradient
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    if mode == "floor":  # a dropped last row/column gets no gradient
      assert float(jnp.abs(grads[0][:, size[0] - size[0] % 2:]).sum()) == 0
      assert float(jnp.abs(grads[0][:, :, size[1] - size[1] % 2:]).sum()) == 0


def test_floor_pooling_conv4_ends_at_one_pixel_on_28x28_as_pytorch_conv4():
  x = jnp.zeros((2, 28, 28, 1))
  for pool, features in (("same", 2 * 2 * 8), ("floor", 8)):
    net = conv4(8, pool=pool)
    params = jax.eval_shape(net.init, jax.random.key(0), x)
    assert jax.eval_shape(net.apply, params, x).shape == (2, features)
  with pytest.raises(ValueError, match="at least 2x2"):
    max_pool_2x2(jnp.zeros((1, 1, 4, 2)), mode="floor")


def test_reshape_max_pool_second_order_gradients_are_finite_and_match_on_odd_sizes():
  # MAML differentiates through gradients; -inf padding of an odd side once made these NaN.
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 7, 5, 3)))
    v = jnp.asarray(np.random.default_rng(5).normal(size=x.shape))

    def hvp(impl):
      inner = jax.grad(lambda a: jnp.sum(jnp.sin(max_pool_2x2(a * a, impl))))
      return jax.grad(lambda a: jnp.vdot(inner(a), v))(x)

    fast, reference = hvp("matmul"), hvp("xla")
    assert bool(jnp.isfinite(fast).all())
    np.testing.assert_allclose(fast, reference, rtol=1e-10, atol=1e-10)


def test_pool_gradient_goes_to_one_entry_a_window_the_first_of_ties_as_pytorchs():
  # The max's own rule splits a window's gradient among the entries equal to the max, by
  # their count: NaN when a recomputed entry misses the max by an ulp (XLA at -O0 did).
  with jax.enable_x64(True):
    x = np.random.default_rng(6).normal(size=(2, 6, 8, 3))
    x[:, 0:2, 0:2] = 1.0                          # a four-way tie
    x[:, 2, 2:4], x[:, 3, 3] = 0.5, 5.0          # ties lose to a larger later entry
    x[:, 4, 4], x[:, 4, 5], x[:, 5, 4], x[:, 5, 5] = -1.0, 3.0, -2.0, 3.0  # top right ties
    x[1, 0, 6, 2] = np.nan
    g = np.asarray(jax.grad(lambda a: jnp.sum(max_pool_2x2(a)))(jnp.asarray(x)))
    windows = g.reshape(2, 3, 2, 4, 2, 3)
    np.testing.assert_array_equal(windows.sum(axis=(2, 4)), 1.0)    # one entry a window...
    assert set(np.unique(g)) == {0.0, 1.0}                          # ...takes all of it
    assert (g[:, 0, 0] == 1).all() and (g[:, 3, 3] == 1).all() and (g[:, 4, 5] == 1).all()
    assert g[1, 0, 6, 2] == 1 and np.isnan(max_pool_2x2(jnp.asarray(x))[1, 0, 3, 2])
    # forward mode (jvp) agrees with reverse mode, and so do forward-over-reverse HVPs
    t = np.random.default_rng(7).normal(size=x.shape)
    _, tangent = jax.jvp(max_pool_2x2, (jnp.asarray(x),), (jnp.asarray(t),))
    np.testing.assert_allclose(tangent, (windows * t.reshape(windows.shape)).sum(axis=(2, 4)))
    x = jnp.asarray(np.random.default_rng(8).normal(size=(2, 7, 5, 3)))
    f = lambda a: jnp.sum(jnp.sin(max_pool_2x2(a * a)))
    v = jnp.asarray(np.random.default_rng(9).normal(size=x.shape))
    forward_over_reverse = jax.jvp(jax.grad(f), (x,), (v,))[1]
    reverse_over_reverse = jax.grad(lambda a: jnp.vdot(jax.grad(f)(a), v))(x)
    np.testing.assert_allclose(forward_over_reverse, reverse_over_reverse, rtol=1e-12, atol=1e-12)


def test_unknown_impl_is_refused_with_the_choices():
  with pytest.raises(ValueError, match="matmul, xla"):
    resolve_impl("winograd")
  with pytest.raises(ValueError, match="conv_impl"):
    conv4(8, conv_impl="fft")
  assert resolve_impl("auto") in ("matmul", "xla")
  with pytest.raises(ValueError, match="same, floor"):
    conv4(8, pool="ceil")
  with pytest.raises(ValueError, match="same, floor"):
    max_pool_2x2(jnp.zeros((1, 4, 4, 2)), mode="valid")


def test_torch_init_is_pytorchs_conv2d_default_and_lecun_normal_stays_flaxs():
  x = jnp.zeros((1, 8, 8, 64))
  fan_in = 3 * 3 * 64
  torch_params = conv4(64, num_blocks=2, conv_init="torch").init(jax.random.key(0), x)
  flax_params = conv4(64, num_blocks=2).init(jax.random.key(0), x)
  kernel, bias = torch_params["Conv_1"]["kernel"], torch_params["Conv_1"]["bias"]
  bound = fan_in ** -0.5
  assert float(jnp.abs(kernel).max()) <= bound and float(jnp.abs(bias).max()) <= bound
  # uniform in +-bound: standard deviation bound / sqrt(3), over 36,864 draws
  assert float(kernel.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.03)
  assert float(jnp.abs(bias).min()) > 0
  assert float(flax_params["Conv_1"]["kernel"].std()) == pytest.approx(bound, rel=0.1)
  assert float(jnp.abs(flax_params["Conv_1"]["bias"]).max()) == 0
  with pytest.raises(ValueError, match="lecun_normal, torch"):
    conv4(8, conv_init="xavier")


@pytest.mark.parametrize("key,choices", [("model.image.conv_impl", conv_ops.IMPLS),
                                         ("model.image.pool", conv_ops.POOL_MODES),
                                         ("model.image.init", conv_ops.INITS)])
def test_the_config_takes_exactly_the_implemented_choices(key, choices):
  # run/build.py checks these keys against conv_ops' own tuples: no list is kept twice.
  from mmfsl_jax.configs.base import base_config
  from mmfsl_jax.errors import ConfigError
  from mmfsl_jax.run import build
  from mmfsl_jax.run.config import apply_overrides
  for choice in choices:
    build.check_config(apply_overrides(base_config(), [f"{key}={choice}"]))
  with pytest.raises(ConfigError, match=f"{key}='bogus' is not valid; choose one of "
                                        f"{', '.join(choices)}$"):
    build.check_config(apply_overrides(base_config(), [f"{key}=bogus"]))


def test_the_patch_products_own_gradient_rule_equals_autodiff_of_the_product():
  """patch_product's custom VJP (shaped for the CPU's matrix kernels) against autodiff of
  the plain product: jitted, vmapped, and through a first element that is NaN (the
  predicate its identity `cond` branches on)."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    patches = jnp.asarray(rng.normal(size=(2, 3, 4, 12)))
    kernel = jnp.asarray(rng.normal(size=(12, 5)))

    def grads(product, p, k):
      return jax.grad(lambda p, k: jnp.sum(jnp.sin(product(p, k)) ** 2), (0, 1))(p, k)

    plain = lambda p, k: p @ k
    for p in (patches, patches.at[0, 0, 0, 0].set(jnp.nan)):
      for mine, reference in zip(jax.jit(grads, static_argnums=0)(conv_ops.patch_product, p,
                                                                  kernel),
                                 grads(plain, p, kernel)):
        np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=1e-12)
    tasks = jnp.stack([patches, 2 * patches])
    for mine, reference in zip(
        jax.jit(jax.vmap(lambda p: grads(conv_ops.patch_product, p, kernel)))(tasks),
        jax.vmap(lambda p: grads(plain, p, kernel))(tasks)):
      np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=1e-12)
