"""Blocks: branch layouts per family, the two wrappers' skips, the probe, and BN settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap.nets import blocks
from bswap.nets import menu

KEY = jax.random.PRNGKey(0)


def _params(module, x):
  return module.init(KEY, x, train=False)['params']


def _shapes(tree):
  return jax.tree.map(lambda v: v.shape, tree)


def test_a_standard_unit_is_one_3x3_conv():
  params = _params(blocks.Unit(menu.get('Conv'), 24, 2), jnp.zeros((1, 8, 8, 16)))
  assert _shapes(params) == {'conv': {'kernel': (3, 3, 16, 24)}}


def test_a_grouped_unit_is_a_grouped_3x3_bn_and_a_pointwise_conv():
  t = menu.get('DConvA4')  # G(4): a basic unit with 4 groups
  assert t.family == menu.BASIC and not t.is_standard_conv
  c = 32
  params = _params(blocks.Unit(t, 48), jnp.zeros((1, 8, 8, c)))
  assert _shapes(params) == {
    'grouped': {'kernel': (3, 3, c // t.groups(c), c)},
    'bn': {'scale': (c,), 'bias': (c,)},
    'pointwise': {'kernel': (1, 1, c, 48)},
  }


@pytest.mark.slow
def test_a_bottleneck_branch_reduces_convolves_in_groups_and_expands():
  t = menu.get('ConvB4')
  assert t.family == menu.BOTTLENECK
  branch = blocks.BottleneckBranch(t, 64, stride=2)
  x = jnp.zeros((1, 8, 8, 32))
  params = _params(branch, x)
  m = 64 // t.bottleneck
  assert params['reduce']['kernel'].shape == (1, 1, 32, m)
  assert params['grouped']['kernel'].shape == (3, 3, m // t.groups(m), m)
  assert params['expand']['kernel'].shape == (1, 1, m, 64)
  assert 'bn_out' not in params  # only a post-activation block closes its branch with a BN
  out = branch.apply({'params': params, 'batch_stats': _stats(branch, x)}, x, False)
  assert out.shape == (1, 4, 4, 64)
  closed = blocks.BottleneckBranch(t, 64, stride=2, final_norm=True)
  assert _params(closed, x)['bn_out']['scale'].shape == (64,)


def _stats(module, x):
  return module.init(KEY, x, train=False)['batch_stats']


def test_every_menu_type_builds_the_branch_of_its_family():
  for name in menu.NAMES:
    t = menu.get(name)
    branch = blocks.BRANCHES[t.family]
    expected = blocks.BottleneckBranch if t.family == menu.BOTTLENECK else blocks.BasicBranch
    assert branch is expected, name
  assert blocks.block_class(True) is blocks.PostActBlock
  assert blocks.block_class(False) is blocks.PreActBlock


@pytest.mark.slow
def test_fast_convs_keep_the_parameter_tree_and_the_function():
  x = jax.random.normal(KEY, (2, 8, 8, 32))
  xla, fast = (blocks.PreActBlock('G8B2', 64, 2, conv_impl=impl) for impl in ('xla', 'fast'))
  variables = xla.init(KEY, x, train=False)
  assert _shapes(fast.init(KEY, x, train=False)) == _shapes(variables)
  out_xla, probe_xla = xla.apply(variables, x, train=False)
  out_fast, probe_fast = fast.apply(variables, x, train=False)
  np.testing.assert_allclose(out_fast, out_xla, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(probe_fast, probe_xla, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_pre_activation_shortcut_reads_the_pre_activated_input():
  # Fresh batch statistics (mean 0, variance 1; scale 1, bias 0): in inference
  # mode the first BN-ReLU is ReLU(x / sqrt(1 + eps)).
  block = blocks.PreActBlock('DConv', 64, 2)
  x = jax.random.normal(KEY, (2, 8, 8, 32))
  variables = block.init(KEY, x, train=False)
  out, probe = block.apply(variables, x, train=False)
  assert out.shape == probe.shape == (2, 4, 4, 64)
  x_act = jax.nn.relu(x / np.sqrt(1 + 1e-5))
  kernel = variables['params']['shortcut']['kernel']
  skip = jax.lax.conv_general_dilated(
    x_act, kernel, (2, 2), ((0, 0), (0, 0)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  np.testing.assert_allclose(out - probe, skip, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('cls', [blocks.PreActBlock, blocks.PostActBlock])
def test_a_block_keeping_its_shape_has_no_shortcut_conv(cls):
  params = _params(cls('Conv', 32, 1), jnp.zeros((1, 4, 4, 32)))
  assert not {'shortcut', 'downsample', 'downsample_bn'} & set(params)
  params = _params(cls('Conv', 64, 1), jnp.zeros((1, 4, 4, 32)))  # more channels: a conv
  assert {'shortcut', 'downsample'} & set(params)


def _probe_gradient(block, variables, x):
  """d sum(block output) / d probe, through the 'perturbations' collection."""
  _, state = block.apply(variables, x, train=False, mutable=['perturbations', 'intermediates'])

  def total(perturbations):
    out, _ = block.apply({**variables, 'perturbations': perturbations}, x, train=False)
    return out.sum()

  return state, jax.grad(total)(state['perturbations'])[blocks.PROBE]


def test_the_probe_is_sown_and_its_gradient_is_the_output_cotangent_in_a_pre_act_block():
  block = blocks.PreActBlock('G2B2', 32, 1)
  x = jax.random.normal(KEY, (2, 6, 6, 32))
  variables = block.init(KEY, x, train=False)
  state, grad = _probe_gradient(block, variables, x)
  _, probe = block.apply(variables, x, train=False)
  (sown,) = state['intermediates'][blocks.PROBE]
  np.testing.assert_array_equal(sown, probe)
  np.testing.assert_array_equal(grad, np.ones(probe.shape))  # out = probe + x


def test_a_post_act_probe_gradient_passes_the_relu_after_the_add():
  block = blocks.PostActBlock('DConv', 32, 1)
  x = jax.random.normal(KEY, (2, 6, 6, 32))
  variables = block.init(KEY, x, train=False)
  _, grad = _probe_gradient(block, variables, x)
  out, _ = block.apply(variables, x, train=False)
  np.testing.assert_array_equal(grad, (np.asarray(out) > 0).astype(np.float32))


def test_batch_norm_has_pytorchs_momentum_and_eps_and_follows_train():
  train, infer = blocks.batch_norm(True), blocks.batch_norm(False)
  assert (train.momentum, train.epsilon) == (infer.momentum, infer.epsilon) == (0.9, 1e-5)
  assert (train.use_running_average, infer.use_running_average) == (False, True)


def test_conv_refuses_an_unknown_implementation():
  with pytest.raises(ValueError, match="conv impl must be 'xla' or 'fast'"):
    blocks.conv(8, 3, groups=2, impl='cudnn').init(KEY, jnp.zeros((1, 4, 4, 8)))
