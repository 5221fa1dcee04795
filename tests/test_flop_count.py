"""flop_count: closed-form FLOPs of products and convolutions, loops multiplied out."""
import jax
import jax.numpy as jnp
import pytest

from mmfsl_jax.nn.encoders.conv_ops import conv_same
from mmfsl_jax.bench.flop_count import matmul_flops

A, B = jnp.ones((6, 5)), jnp.ones((5, 3))


def test_a_matrix_product_is_two_flops_per_multiply_add():
  assert matmul_flops(jnp.matmul, A, B) == 2 * 6 * 5 * 3
  # vmapped over 4 pairs: a batched dot_general, four times the work
  assert matmul_flops(jax.vmap(jnp.matmul), jnp.ones((4, 6, 5)), jnp.ones((4, 5, 3))) == 4 * 180
  # elementwise work is not counted
  assert matmul_flops(lambda a: jnp.tanh(a) * 2 + a, A) == 0


def test_its_gradient_costs_two_more_products():
  loss = lambda a, b: jnp.sum(a @ b)
  assert matmul_flops(jax.grad(loss, argnums=(0, 1)), A, B) == 3 * 180


@pytest.mark.parametrize("impl", ["xla", "matmul"])
def test_a_convolution_and_its_gradients_count_alike_in_both_implementations(impl):
  x, kernel = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
  forward = 2 * (2 * 5 * 5 * 4) * (3 * 3 * 3)   # every output element: a 3x3x3 window
  assert matmul_flops(lambda x, k: conv_same(x, k, impl), x, kernel) == forward
  loss = lambda x, k: jnp.sum(conv_same(x, k, impl))
  assert matmul_flops(jax.grad(loss, argnums=(0, 1)), x, kernel) == 3 * forward


def test_a_grouped_convolution_counts_each_group_once():
  x, kernel = jnp.ones((1, 4, 4, 6)), jnp.ones((3, 3, 2, 6))   # 3 groups of 2 input channels
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3)
  assert matmul_flops(conv, x, kernel) == 2 * (4 * 4 * 6) * (3 * 3 * 2)


def test_loops_count_every_iteration():
  def scanned(a):
    return jax.lax.scan(lambda c, _: (c, c @ B), a, None, length=7)[1]
  assert matmul_flops(scanned, A) == 7 * 180
  nested = lambda a: jax.lax.scan(lambda c, _: (c, scanned(c)), a, None, length=2)[1]
  assert matmul_flops(nested, A) == 2 * 7 * 180
  assert matmul_flops(jax.jit(scanned), A) == 7 * 180
  # a fori_loop with static bounds is a scan; one with traced bounds is a while loop
  assert matmul_flops(lambda a: jax.lax.fori_loop(0, 3, lambda i, c: c @ jnp.ones((5, 5)), a),
                      A) == 3 * 2 * 6 * 5 * 5
  dynamic = lambda a, n: jax.lax.fori_loop(0, n, lambda i, c: c @ jnp.ones((5, 5)), a)
  with pytest.raises(ValueError, match="no static trip count"):
    matmul_flops(dynamic, A, 3)


def test_a_conditional_counts_its_costlier_branch():
  branchy = lambda p, a: jax.lax.cond(p, lambda a: (a @ B) @ B.T, lambda a: a, a)
  assert matmul_flops(branchy, True, A) == 180 + 2 * 6 * 3 * 5
