"""Closed-form parameter and MAC counts against the real Flax networks.

Parameters are checked against the parameter tree of `jax.eval_shape(init)`
(no compute); MACs against an independent count read off the convolution and
dot shapes in the traced jaxpr.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap.nets import accounting
from bswap.nets import arch
from bswap.nets import blocks
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu
from bswap.nets import models


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(v, 'eqns'):
        yield v
      elif hasattr(v, 'jaxpr') and hasattr(v.jaxpr, 'eqns'):
        yield v.jaxpr


def jaxpr_macs(jaxpr, batch: int) -> int:
  """MACs per example of every conv and dot in a jaxpr, from their operand shapes."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape
      out = eqn.outvars[0].aval.shape
      dn = eqn.params['dimension_numbers']
      kernel_taps = math.prod(rhs[d] for d in dn.rhs_spec[2:])
      per_group_in, c_out = rhs[dn.rhs_spec[1]], rhs[dn.rhs_spec[0]]
      spatial_out = math.prod(out[d] for d in dn.out_spec[2:])
      total += kernel_taps * per_group_in * c_out * spatial_out * out[dn.out_spec[0]]
    elif name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += math.prod(lhs[d] for d in contract) * math.prod(eqn.outvars[0].aval.shape)
    for sub in _subjaxprs(eqn):
      total += jaxpr_macs(sub, 1)  # the whole batch's MACs inside the sub-jaxpr
  assert total % batch == 0
  return total // batch


def param_count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@functools.cache
def flax_block_cost(name: str, in_ch: int, out_ch: int, stride: int, size: int, post=False):
  """(params, MACs) of one PreActBlock (post: PostActBlock), read off the Flax module itself."""
  block = blocks.block_class(post)(name, out_ch, stride)
  x = jnp.zeros((2, size, size, in_ch))
  variables = jax.eval_shape(lambda: block.init(jax.random.PRNGKey(0), x, train=False))
  closed = jax.make_jaxpr(lambda v: block.apply(v, x, train=False))(
    {k: variables[k] for k in ('params', 'batch_stats')}
  )
  return param_count(variables['params']), jaxpr_macs(closed.jaxpr, 2)


def test_teacher_wrn_40_2_counts():
  count = accounting.count(genotype_lib.uniform('Conv', 40, 2))
  assert count.params == 2_243_546
  assert count.macs == 327_599_360


@pytest.mark.parametrize('depth', [40, 16])
@pytest.mark.parametrize('name', menu.NAMES)
def test_block_counts_match_flax_at_every_position(name, depth):
  skel = arch.wrn_skeleton(depth, 2)
  for slot in skel.slots:
    expected = flax_block_cost(name, slot.in_ch, slot.out_ch, slot.stride, slot.in_size)
    assert accounting.block_cost(name, slot) == expected, (name, slot)


def flax_network_cost(model, image_size: int):
  """(params, MACs) of a whole network, read off its Flax tree and jaxpr."""
  x = jnp.zeros((2, image_size, image_size, 3))
  variables = jax.eval_shape(lambda: models.init_variables(model, 0, 0, image_size))
  closed = jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables)
  return param_count(variables['params']), jaxpr_macs(closed.jaxpr, 2)


@pytest.mark.parametrize('name', menu.NAMES)
def test_whole_network_counts_match_flax(name):
  geno = genotype_lib.uniform(name, 16, 2)
  count = accounting.count(geno, image_size=16)
  model = models.WideResNet(16, 2, geno.blocks)
  assert (count.params, count.macs) == flax_network_cost(model, 16)
  assert count.params == sum(b.params for b in count.blocks) + count.stem[0] + count.head[0]
  assert count.macs == sum(b.macs for b in count.blocks) + count.stem[1] + count.head[1]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_random_mixed_genotypes_match_flax(seed):
  names = tuple(np.random.default_rng(seed).choice(menu.NAMES, size=6))
  count = accounting.count(genotype_lib.Genotype(names, 'wrn', 16, 2))
  assert (count.params, count.macs) == flax_network_cost(models.WideResNet(16, 2, names), 32)


def test_width_one_counts_and_invalid_types():
  skel = arch.wrn_skeleton(10, 1)
  table = accounting.param_table(skel)
  stage1 = {menu.NAMES[j] for j in np.flatnonzero(table[0] < 0)}
  assert stage1 == {'A16B2', 'G16B2', 'G8B4'}
  assert (table[1:] >= 0).all()
  for j, name in enumerate(menu.NAMES):
    for slot in skel.slots:
      if table[slot.index, j] >= 0:
        assert (
          table[slot.index, j]
          == flax_block_cost(name, slot.in_ch, slot.out_ch, slot.stride, slot.in_size)[0]
        )


def test_tables_agree_with_block_cost():
  skel = arch.wrn_skeleton(40, 2)
  params, macs = accounting.param_table(skel), accounting.mac_table(skel)
  for slot in skel.slots:
    for j, name in enumerate(menu.NAMES):
      assert (params[slot.index, j], macs[slot.index, j]) == accounting.block_cost(name, slot)


# ---------------------------------------------------------------------------- ResNet-34


def test_teacher_resnet34_has_torchvisions_parameter_count():
  geno = genotype_lib.uniform('Conv', arch='resnet34')
  count = accounting.count(geno)
  assert count.params == 21_797_672
  # torchvision's figure for ResNet-34 at 224 px: 3.6 GMACs ("3.66 GFLOPS").
  assert count.macs == 3_663_761_408
  model = models.build(geno)
  params = jax.eval_shape(lambda: models.init_variables(model, 0, 0))['params']
  assert param_count(params) == 21_797_672


@pytest.mark.parametrize('name', menu.NAMES)
def test_resnet34_block_counts_match_flax_at_every_position(name):
  # Parameters do not depend on the resolution, MACs scale with it: check both at
  # a small image (64 px: blocks see 16 -> 2 px) where the jaxpr is cheap to trace.
  skel = arch.skeleton('resnet34', image_size=64)
  for slot in skel.slots:
    expected = flax_block_cost(name, slot.in_ch, slot.out_ch, slot.stride, slot.in_size, True)
    assert accounting.block_cost(name, slot) == expected, (name, slot)


@pytest.mark.parametrize('seed', [0, 1])
def test_random_resnet34_genotypes_match_flax(seed):
  names = tuple(np.random.default_rng(seed).choice(menu.NAMES, size=16))
  geno = genotype_lib.Genotype(names, 'resnet34')
  count = accounting.count(geno, image_size=64)
  model = models.build(geno)
  assert (count.params, count.macs) == flax_network_cost(model, 64)
  assert count.params == accounting.count(geno).params  # the same at 224 px
