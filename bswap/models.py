"""Mixed-blocktype networks built from a genotype (SPEC section 2).

`WideResNet(depth, width, genotype)` returns `(logits, aux)` with
`aux = {'stages': (s1, s2, s3), 'probes': (p_0, ..., p_{B-1})}`: the stage
outputs are the attention-transfer points, the probes are each block's
residual-branch output before the add (also sown under 'intermediates').

Initialise with `init_variables(model, seed, index)`, not `model.init`: it
implements the seed contract of SPEC section 4, drawing block b's weights from
`fold_in(fold_in(PRNGKey(seed), index), b)` (stem b = B, head b = B + 1), so a
candidate's weights depend only on the seed, its index and the block index.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bswap import arch as arch_lib
from bswap import blocks
from bswap import genotype as genotype_lib


class Stem(nn.Module):
  """3x3 conv, 3 -> 16, stride 1; no BN or ReLU after it (pre-activation net)."""

  features: int
  kernel: int = 3

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    return blocks.conv(self.features, self.kernel, name='conv')(x)


class PreActHead(nn.Module):
  """BN -> ReLU -> global average pool -> dense with bias."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = blocks.bn_relu(x, train, name='bn')
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=blocks.DENSE_INIT, name='dense')(x)


def block_key(seed: int, index: int, part: int) -> jax.Array:
  """The seed contract: the key of part `part` of candidate `index`."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), index), part)


class WideResNet(nn.Module):
  """Pre-activation WRN-depth-width with one block type per position."""

  depth: int = 40
  width: int = 2
  genotype: Sequence[str] = ()
  num_classes: int = 10
  conv_impl: str = 'xla'  # 'fast': same function and parameters, faster on XLA:CPU

  @nn.compact
  def __call__(self, x, train: bool):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'expected images of shape (N, H, W, 3); got {x.shape}')
    geno = genotype_of(self)
    skel = geno.skeleton(x.shape[1], self.num_classes)
    parts = build_parts(geno, skel, named=True, conv_impl=self.conv_impl)
    x = parts[0][1](x, train)
    last_of_stage = {slot.stage: slot.index for slot in skel.slots}
    stages, probes = [], []
    for (_, block, _, _), slot in zip(parts[1:-1], skel.slots):
      x, probe = block(x, train)
      probes.append(probe)
      if last_of_stage[slot.stage] == slot.index:
        stages.append(x)
    logits = parts[-1][1](x, train)
    return logits, {'stages': tuple(stages), 'probes': tuple(probes)}


def build_parts(
  geno: genotype_lib.Genotype, skel: arch_lib.Skeleton, named: bool, conv_impl: str = 'xla'
):
  """[(name, module, part_index, input_shape)] for stem, blocks and head, in order.

  Shared by `WideResNet.__call__` (named=True, as submodules) and
  `init_variables` (standalone modules), so both build identical modules.
  """
  name = (lambda n: n) if named else (lambda n: None)
  size = skel.image_size
  stem = Stem(skel.stem_channels, skel.stem_kernel, name=name('stem'))
  parts = [('stem', stem, skel.stem_part, (size, size, 3))]
  for slot, block_name in zip(skel.slots, geno.blocks):
    module = blocks.PreActBlock(
      block_name, slot.out_ch, slot.stride, conv_impl, name=name(f'block_{slot.index}')
    )
    parts.append(
      (f'block_{slot.index}', module, slot.index, (slot.in_size, slot.in_size, slot.in_ch))
    )
  final = skel.slots[-1]
  head = PreActHead(skel.num_classes, name=name('head'))
  parts.append(('head', head, skel.head_part, (final.out_size, final.out_size, skel.head_channels)))
  return parts


def genotype_of(model: WideResNet) -> genotype_lib.Genotype:
  return genotype_lib.Genotype(tuple(model.genotype), arch_lib.WRN, model.depth, model.width)


@functools.cache
def init_part_fn(module: nn.Module, in_channels: int):
  """Jitted `key -> variables` of one standalone part, cached per module and width.

  Parameter values depend neither on the input's values nor on its spatial
  size, so a 4x4 dummy stands in; compiled once per (part type, shape), the
  init costs milliseconds instead of the ~1 s per new op shape of eager init.
  This function *is* the seed contract's weight generator: every path that
  needs a candidate's weights must come through it.
  """

  def init(key):
    dummy = jnp.zeros((1, 4, 4, in_channels), jnp.float32)
    variables = module.init(key, dummy, train=False)
    return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}

  return jax.jit(init)


def init_variables(model: WideResNet, seed: int, index: int = 0, image_size: int = 32):
  """Variables {'params', 'batch_stats'} of candidate `index` by the seed contract.

  Each part (stem, block b, head) is initialised on its own from
  `block_key(seed, index, part)`.
  """
  params, batch_stats = {}, {}
  geno = genotype_of(model)
  skel = geno.skeleton(image_size, model.num_classes)
  for name, module, part, shape in build_parts(geno, skel, named=False):
    variables = init_part_fn(module, shape[2])(block_key(seed, index, part))
    params[name] = variables['params']
    if 'batch_stats' in variables:
      batch_stats[name] = variables['batch_stats']
  return {'params': params, 'batch_stats': batch_stats}
