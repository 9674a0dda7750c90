"""WideResNet and ResNet-34: structure, initialisation, seed contract and auxiliary outputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bswap.nets import blocks
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu
from bswap.nets import models
from bswap.nets import weights

SMALL = dict(depth=10, width=2)  # 3 blocks, one per stage: fast on a CPU


def _random_names(rng, n):
  return tuple(rng.choice(menu.NAMES, size=n))


def test_teacher_parameter_tree_has_2_243_546_parameters():
  model = models.WideResNet(40, 2, genotype_lib.uniform('Conv').blocks)
  variables = jax.eval_shape(lambda: models.init_variables(model, 0, 0))
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(variables['params'])) == 2_243_546


def test_init_variables_has_the_same_tree_as_flax_init():
  names = ('DConv', 'G8B4', 'ConvB2', 'Conv', 'A16B2', 'DConvA2')
  model = models.WideResNet(16, 2, names)
  x = jnp.zeros((1, 32, 32, 3))
  ours = jax.eval_shape(lambda: models.init_variables(model, 0, 0))
  flax_init = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  for collection in ('params', 'batch_stats'):
    a = jax.tree.map(lambda v: (v.shape, v.dtype), ours[collection])
    b = jax.tree.map(lambda v: (v.shape, v.dtype), flax_init[collection])
    assert a == b
  assert set(ours) == {'params', 'batch_stats'}  # no perturbations, no intermediates


def test_seed_contract_block_weights_depend_on_seed_index_and_block_only():
  base = ('Conv', 'DConv', 'G4B2')
  changed = ('ConvB4', 'DConv', 'G4B2')  # block 0 differs
  v1 = models.init_variables(models.WideResNet(**SMALL, genotype=base), seed=3, index=7)
  v2 = models.init_variables(models.WideResNet(**SMALL, genotype=changed), seed=3, index=7)
  for part in ('block_1', 'block_2', 'stem', 'head'):
    jax.tree.map(np.testing.assert_array_equal, v1['params'][part], v2['params'][part])
  # Each part is the standalone part drawn from the contract's key.
  block = blocks.PreActBlock('DConv', 64, 2)
  alone = weights.part_variables(block, 32, weights.part_key(3, 7, 1))
  jax.tree.map(np.testing.assert_array_equal, alone['params'], v1['params']['block_1'])
  head = weights.part_variables(models.PreActHead(10), 128, weights.part_key(3, 7, 4))
  jax.tree.map(np.testing.assert_array_equal, head['params'], v1['params']['head'])
  # The tree is Flax's own: same paths, shapes and dtypes as `module.init`.
  flax_init = block.init(weights.part_key(3, 7, 1), jnp.zeros((1, 4, 4, 32)), train=False)
  assert jax.tree.structure(flax_init['params']) == jax.tree.structure(alone['params'])
  shape_of = lambda x: (x.shape, x.dtype)
  assert jax.tree.map(shape_of, flax_init['params']) == jax.tree.map(shape_of, alone['params'])
  # Another candidate index or seed draws other weights.
  v3 = models.init_variables(models.WideResNet(**SMALL, genotype=base), seed=3, index=8)
  v4 = models.init_variables(models.WideResNet(**SMALL, genotype=base), seed=4, index=7)
  kernel = lambda v: v['params']['block_1']['branch']['unit_a']['grouped']['kernel']
  assert not np.allclose(kernel(v1), kernel(v3))
  assert not np.allclose(kernel(v1), kernel(v4))


def test_seed_contract_is_independent_of_image_size():
  model = models.WideResNet(**SMALL, genotype=('G2B4', 'Conv', 'DConvA8'))
  a = models.init_variables(model, 0, 5, image_size=32)
  b = models.init_variables(model, 0, 5, image_size=8)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_initialisation_matches_the_reference():
  model = models.WideResNet(**SMALL, genotype=('Conv', 'DConv', 'Conv'))
  params = models.init_variables(model, 0, 0)['params']
  # Stage-3 S block: 3x3 conv 128 -> 128, std sqrt(2 / (9 * 128)), normal (not truncated).
  kernel = np.asarray(params['block_2']['branch']['unit_b']['conv']['kernel'])
  std = math.sqrt(2 / (9 * 128))
  assert abs(kernel.std() / std - 1) < 0.02
  assert abs(kernel.mean()) < 0.02 * std
  assert np.abs(kernel).max() > 2.5 * std  # a truncated normal would stop at 2 std
  # Depthwise 3x3 (64 groups, 64 outputs): fan-out not divided by groups.
  dw = np.asarray(params['block_1']['branch']['unit_b']['grouped']['kernel'])
  assert dw.shape == (3, 3, 1, 64)
  assert abs(dw.std() / math.sqrt(2 / (9 * 64)) - 1) < 0.1
  dense = params['head']['dense']
  bound = 1 / math.sqrt(128)
  assert np.abs(dense['kernel']).max() <= bound
  assert np.abs(dense['kernel']).max() > 0.95 * bound
  np.testing.assert_array_equal(dense['bias'], 0)
  bn = params['block_0']['bn_in']
  np.testing.assert_array_equal(bn['scale'], 1)
  np.testing.assert_array_equal(bn['bias'], 0)


def test_stride_two_conv_pads_symmetrically_like_pytorch():
  # Only row 2 of the input is non-zero. With padding (1, 1) output row 0 reads
  # rows -1..1 and sees nothing; Flax's 'SAME' (0, 1) would read rows 0..2.
  x = jnp.zeros((1, 8, 8, 1)).at[:, 2].set(1.0)
  layer = blocks.conv(1, 3, stride=2)
  variables = {'params': {'kernel': jnp.ones((3, 3, 1, 1))}}
  y = layer.apply(variables, x)[0, :, 3, 0]
  expected = lax.conv_general_dilated(
    x, jnp.ones((3, 3, 1, 1)), (2, 2), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )[0, :, 3, 0]
  np.testing.assert_array_equal(y, expected)
  assert y[0] == 0 and y[1] == 3


@pytest.mark.slow
def test_batch_norm_uses_pytorch_momentum_and_eps():
  model = models.WideResNet(**SMALL, genotype=('Conv', 'Conv', 'Conv'))
  variables = models.init_variables(model, 0, 0, image_size=8)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3)) * 3 + 1
  _, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
  # The first BN reads the stem output; its running mean moves 10% towards the batch mean.
  stem = jax.lax.conv_general_dilated(
    x,
    variables['params']['stem']['conv']['kernel'],
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  np.testing.assert_allclose(
    state['batch_stats']['block_0']['bn_in']['mean'],
    0.1 * stem.mean(axis=(0, 1, 2)),
    rtol=1e-5,
    atol=1e-6,
  )


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_forward_returns_logits_stages_and_probes(seed):
  names = _random_names(np.random.default_rng(seed), 3)
  model = models.WideResNet(**SMALL, genotype=names)
  variables = models.init_variables(model, seed, 0, image_size=8)
  x = jax.random.normal(jax.random.PRNGKey(seed), (2, 8, 8, 3))
  (logits, aux), state = model.apply(
    variables, x, train=True, mutable=['batch_stats', 'intermediates']
  )
  assert logits.shape == (2, 10)
  assert np.isfinite(np.asarray(logits)).all()
  assert [s.shape for s in aux['stages']] == [(2, 8, 8, 32), (2, 4, 4, 64), (2, 2, 2, 128)]
  assert set(aux) == {'stages'}  # the probes leave through `sow` alone
  sown = [state['intermediates'][f'block_{b}'][blocks.PROBE] for b in range(3)]
  assert [p.shape for (p,) in sown] == [s.shape for s in aux['stages']]
  # Inference mode leaves the state untouched and needs no mutable collections.
  logits_eval, _ = model.apply(variables, x, train=False)
  assert logits_eval.shape == (2, 10)


def test_probe_is_the_branch_output_before_the_identity_add():
  model = models.WideResNet(16, 2, genotype=('Conv', 'G8B2', 'DConv', 'A4B2', 'ConvB4', 'S'))
  variables = models.init_variables(model, 0, 0, image_size=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  (_, aux), state = model.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'])
  # Block 1 keeps 32 channels at stride 1, so its skip is the identity:
  # output - probe must give back the block's input.
  block = blocks.PreActBlock('G8B2', 32, 1)
  inp = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 32))
  v = {'params': variables['params']['block_1'], 'batch_stats': variables['batch_stats']['block_1']}
  out, probe = block.apply(v, inp, train=False)
  np.testing.assert_allclose(out - probe, inp, atol=1e-5)
  assert len(state['intermediates']) == 6  # one probe per block


@pytest.mark.slow
def test_perturbation_gradient_has_the_probe_shape():
  model = models.WideResNet(**SMALL, genotype=('G2B2', 'DConvG4', 'Conv'))
  variables = models.init_variables(model, 0, 0, image_size=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
  _, state = model.apply(
    variables, x, train=True, mutable=['batch_stats', 'intermediates', 'perturbations']
  )
  perturbations = state['perturbations']

  def loss(p):
    (logits, _), _ = model.apply(
      {**variables, 'perturbations': p}, x, train=True, mutable=['batch_stats']
    )
    return logits.sum()

  grads = jax.grad(loss)(perturbations)
  for b in range(3):
    assert grads[f'block_{b}'][blocks.PROBE].shape[0] == 4


def test_bad_genotype_is_a_clear_error():
  model = models.WideResNet(**SMALL, genotype=('Conv', 'Conv'))
  with pytest.raises(ValueError, match='WRN-10-2 has 3 blocks but the genotype names 2'):
    models.init_variables(model, 0, 0)
  model = models.WideResNet(10, 1, genotype=('A16B2', 'Conv', 'Conv'))
  with pytest.raises(ValueError, match='A16B2 is invalid at position 0'):
    models.init_variables(model, 0, 0)


# ---------------------------------------------------------------------------- ResNet-34


@pytest.mark.slow
@pytest.mark.parametrize('seed', [0, 1])
def test_resnet34_forward_and_backward_at_64_px(seed):
  names = _random_names(np.random.default_rng(seed), 16)
  model = models.build(genotype_lib.Genotype(names, 'resnet34'))
  variables = models.init_variables(model, seed, 0, image_size=64)
  x = jax.random.normal(jax.random.PRNGKey(seed), (4, 64, 64, 3))
  labels = jnp.arange(4)

  def loss(params):
    (logits, aux), _ = model.apply(
      {**variables, 'params': params}, x, train=True, mutable=['batch_stats']
    )
    ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])
    return ce, (logits, aux)

  grads, (logits, aux) = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
  assert logits.shape == (4, 1000)
  # Stem 64 -> 32 (conv /2) -> 16 (pool /2); stages 16, 8, 4, 2 px.
  expected = [(4, 16, 16, 64), (4, 8, 8, 128), (4, 4, 4, 256), (4, 2, 2, 512)]
  assert [s.shape for s in aux['stages']] == expected
  flat = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in flat)
  # Every block's weights get a gradient (the ReLU after the add passes some).
  for b in range(16):
    assert any(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads[f'block_{b}']))


def test_post_activation_block_adds_the_probe_to_the_skip_then_relus():
  rng = jax.random.PRNGKey(0)
  # Identity skip: out = ReLU(probe + x).
  block = blocks.PostActBlock('G4B2', 64, 1)
  x = jax.random.normal(rng, (2, 6, 6, 64))
  variables = block.init(rng, x, train=False)
  out, probe = block.apply(variables, x, train=False)
  np.testing.assert_allclose(out, jax.nn.relu(probe + x), atol=1e-6)
  # A downsampling block: 1x1 conv (stride 2) and a BN on the skip; the branch closes on a BN.
  block = blocks.PostActBlock('Conv', 128, 2)
  params = block.init(rng, x, train=False)['params']
  assert params['downsample']['kernel'].shape == (1, 1, 64, 128)
  assert params['downsample_bn']['scale'].shape == (128,)
  assert params['branch']['bn_out']['scale'].shape == (128,)
  out, probe = block.apply(block.init(rng, x, train=False), x, train=False)
  assert out.shape == probe.shape == (2, 3, 3, 128)
  assert (np.asarray(out) >= 0).all()


def test_resnet34_stem_pads_like_pytorch():
  # Max pool 3/2 with padding 1 pads with -inf: an all-negative map keeps its values.
  stem = models.PoolStem()
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16, 3))
  variables = stem.init(jax.random.PRNGKey(1), x, train=False)
  out = stem.apply(variables, x, train=False)
  assert out.shape == (1, 4, 4, 64)  # 16 -> 8 (conv 7x7/2, pad 3) -> 4 (pool 3/2, pad 1)
  pooled = models.nn.max_pool(
    -jnp.ones((1, 4, 4, 1)) - jnp.arange(16.0).reshape(1, 4, 4, 1),
    (3, 3),
    strides=(2, 2),
    padding=((1, 1), (1, 1)),
  )
  assert float(pooled[0, 0, 0, 0]) == -1.0  # max over the real pixels, not a zero pad


def test_resnet34_uses_the_seed_contract_and_rejects_other_depths():
  geno = genotype_lib.uniform('DConv', arch='resnet34')
  model = models.build(geno, num_classes=10)
  a = models.init_variables(model, 5, 2, image_size=64)
  b = models.init_variables(model, 5, 2, image_size=224)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  stem = weights.part_variables(models.PoolStem(), 3, weights.part_key(5, 2, 16))  # stem: B = 16
  jax.tree.map(np.testing.assert_array_equal, a['params']['stem'], stem['params'])
  assert a['params']['head']['dense']['kernel'].shape == (512, 10)
  with pytest.raises(ValueError, match='resnet34 has depth 34 and width 1'):
    genotype_lib.Genotype(geno.blocks, 'resnet34', 18, 1)
