"""Convolutions: the 'fast' forms against the native conv, their pieces, and `resolve`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bswap.nets import convs


@pytest.mark.slow
@pytest.mark.parametrize(
  'channels,groups,stride',
  [(16, 16, 1), (32, 32, 2), (16, 2, 1), (32, 8, 2), (32, 16, 1), (8, 4, 1), (16, 1, 2)],
)
def test_fast_convs_match_native_convs_and_their_input_gradients_within_1e_5(
  channels, groups, stride
):
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 9, channels))
  kernel = jax.random.normal(jax.random.PRNGKey(2), (3, 3, channels // groups, channels))
  native = convs.conv2d(x, kernel, stride, groups, 'xla')
  fast = convs.conv2d(x, kernel, stride, groups, 'fast')
  np.testing.assert_allclose(fast, native, rtol=1e-5, atol=1e-5)
  # Input gradients (what Fisher needs) agree too.
  grad = lambda impl: jax.grad(lambda x: convs.conv2d(x, kernel, stride, groups, impl).sum())(x)
  np.testing.assert_allclose(grad('fast'), grad('xla'), rtol=1e-5, atol=1e-5)


def test_unknown_conv_impl_is_an_error():
  with pytest.raises(ValueError, match="conv impl must be 'xla' or 'fast'"):
    convs.conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 1, 2)), 1, 2, 'cudnn')


@pytest.mark.slow
def test_xla_conv_is_lax_conv_with_symmetric_padding():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 4))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 6))
  expected = lax.conv_general_dilated(
    x,
    kernel,
    (2, 2),
    ((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    feature_group_count=2,
  )
  np.testing.assert_array_equal(convs.conv2d(x, kernel, 2, 2, 'xla'), expected)
  assert convs.conv2d(x, kernel, 2, 2, 'fast').shape == expected.shape == (1, 4, 4, 6)


def test_block_diagonal_kernel_holds_each_group_on_its_diagonal_block_and_zeros_elsewhere():
  groups, per_group, out = 4, 3, 8  # 12 input channels, 2 outputs per group
  kernel = jax.random.normal(jax.random.PRNGKey(0), (3, 3, per_group, out))
  dense = np.asarray(convs.block_diagonal_kernel(kernel, groups))
  assert dense.shape == (3, 3, groups * per_group, out)
  per_out = out // groups
  for g in range(groups):
    rows, cols = slice(g * per_group, (g + 1) * per_group), slice(g * per_out, (g + 1) * per_out)
    np.testing.assert_array_equal(dense[:, :, rows, cols], kernel[:, :, :, cols])
    off = np.ones(out, bool)
    off[cols] = False
    assert not dense[:, :, rows][..., off].any()


@pytest.mark.parametrize('k, stride', [(3, 1), (3, 2), (1, 2)])
def test_shifted_slices_are_the_taps_a_conv_reads(k, stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 3))
  taps = convs.shifted_slices(x, k, stride)
  assert len(taps) == k * k
  out = (7 + 2 * (k // 2) - k) // stride + 1
  assert all(t.shape == (2, out, out, 3) for t in taps)
  # Tap (i, j) times a one-hot kernel at (i, j) is the depthwise conv with that kernel.
  for t, tap in enumerate(taps):
    one_hot = jnp.zeros((k, k, 1, 3)).at[t // k, t % k].set(1.0)
    np.testing.assert_allclose(tap, convs.conv2d(x, one_hot, stride, 3, 'xla'), atol=1e-6)


@pytest.mark.parametrize('platform, expected', [('cpu', 'fast'), ('gpu', 'xla'), ('tpu', 'xla')])
def test_auto_resolves_to_fast_on_cpus_and_native_elsewhere(platform, expected):
  assert convs.resolve('auto', platform) == expected


@pytest.mark.parametrize('impl', convs.IMPLS)
@pytest.mark.parametrize('platform', ['cpu', 'gpu'])
def test_an_explicit_impl_is_kept_on_every_platform(impl, platform):
  assert convs.resolve(impl, platform) == impl


def test_an_unknown_impl_names_the_config_flag():
  with pytest.raises(ValueError, match=r"--config\.search\.conv_impl must be 'auto', 'xla'"):
    convs.resolve('cudnn', 'cpu', 'search.conv_impl')
  with pytest.raises(ValueError, match=r"--config\.conv_impl .*got 'Fast'"):
    convs.resolve('Fast', 'cpu')
