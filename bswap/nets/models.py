"""Mixed-blocktype networks built from a genotype (SPEC sections 2 and 6).

`WideResNet(depth, width, genotype)` (pre-activation, CIFAR-10) and
`ResNet34(genotype)` (post-activation, ImageNet) return `(logits, aux)` with
`aux = {'stages': (s1, ..., sS)}`: the stage outputs, the attention-transfer
points (3 for a WRN, 4 for ResNet-34). Each block's Fisher probe, its
residual-branch output before the add, is sown under 'intermediates'.
`build(genotype)` picks the class from the genotype's arch.

Initialise with `init_variables(model, seed, index)`, not `model.init`: it
implements the seed contract of SPEC section 4 (`bswap.weights`), drawing block
b's weights from `fold_in(fold_in(PRNGKey(seed), index), b)` (stem b = B, head
b = B + 1), so a candidate's weights depend only on the seed, its index and the
block index, and the distributions are SPEC section 2's.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bswap.nets import arch as arch_lib
from bswap.nets import blocks
from bswap.nets import genotype as genotype_lib
from bswap.nets import weights


class Stem(nn.Module):
  """WRN: 3x3 conv, 3 -> 16, stride 1; no BN or ReLU after it (pre-activation net)."""

  features: int
  kernel: int = 3

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    return blocks.conv(self.features, self.kernel, name='conv')(x)


class PoolStem(nn.Module):
  """ResNet-34: 7x7/2 conv (padding 3), BN, ReLU, 3x3/2 max pool (padding 1)."""

  features: int = 64
  kernel: int = 7

  @nn.compact
  def __call__(self, x, train: bool):
    x = blocks.conv(self.features, self.kernel, stride=2, name='conv')(x)
    x = blocks.bn_relu(self, x, train, name='bn')
    # Padded with -inf, as PyTorch's MaxPool2d pads; the padding apart from the pool
    # (the same op) so that ONNX export (bswap/export.py), which replaces
    # nn.max_pool with its own, sees only 'VALID' and keyword arguments.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='VALID')
    self.sow(blocks.TAPS, blocks.STEM_OUT, x)
    return x


class PreActHead(nn.Module):
  """WRN: BN -> ReLU -> global average pool -> dense with bias."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    return pool_and_classify(self, blocks.bn_relu(self, x, train, name='bn'), self.num_classes)


class PoolHead(nn.Module):
  """ResNet-34: global average pool -> dense with bias."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    return pool_and_classify(self, x, self.num_classes)


def pool_and_classify(module: nn.Module, x, num_classes: int):
  """Global average pool, then a dense layer named 'dense' in the calling `module`.

  Dense init as SPEC section 2 gives it: weights Uniform(+-1/sqrt(fan_in)), bias
  0 (torchvision's ResNet draws its bias uniformly too; the bias never reaches a
  Fisher score, which is taken at the blocks).
  """
  module.sow(blocks.TAPS, blocks.POOL_IN, x)
  x = jnp.mean(x, axis=(1, 2))
  logits = nn.Dense(num_classes, kernel_init=blocks.DENSE_INIT, name='dense')(x)
  return blocks.tap_layer_output(module, logits)


class _MixedNet(nn.Module):
  """The forward pass shared by both families; subclasses fix arch, depth and width."""

  arch = arch_lib.WRN  # class constants, not fields: overridden per family

  @nn.compact
  def __call__(self, x, train: bool):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'expected images of shape (N, H, W, 3); got {x.shape}')
    geno = genotype_of(self)
    skel = geno.skeleton(x.shape[1], self.num_classes)
    parts = build_parts(geno, skel, named=True, conv_impl=self.conv_impl)
    x = parts[0][1](x, train)
    last_of_stage = {slot.stage: slot.index for slot in skel.slots}
    stages = []
    for (_, block, _, _), slot in zip(parts[1:-1], skel.slots):
      x, _ = block(x, train)  # the probe is sown
      if last_of_stage[slot.stage] == slot.index:
        stages.append(x)
    logits = parts[-1][1](x, train)
    return logits, {'stages': tuple(stages)}


class WideResNet(_MixedNet):
  """Pre-activation WRN-depth-width with one block type per position."""

  depth: int = 40
  width: int = 2
  genotype: Sequence[str] = ()
  num_classes: int = 10
  conv_impl: str = 'xla'  # 'fast': same function and parameters, faster on XLA:CPU


class ResNet34(_MixedNet):
  """Post-activation ResNet-34 with one block type per position (16 blocks)."""

  genotype: Sequence[str] = ()
  num_classes: int = 1000
  conv_impl: str = 'xla'

  arch = arch_lib.RESNET34
  depth = arch_lib.RESNET34_DEPTH
  width = arch_lib.RESNET34_WIDTH


def build(
  geno: genotype_lib.Genotype, num_classes: int | None = None, conv_impl: str = 'xla'
) -> _MixedNet:
  """The model of a genotype: a WideResNet or a ResNet34 (num_classes None: 10 or 1000)."""
  num_classes = num_classes or arch_lib.DEFAULT_NUM_CLASSES[geno.arch]
  if geno.arch == arch_lib.RESNET34:
    return ResNet34(geno.blocks, num_classes, conv_impl)
  return WideResNet(geno.depth, geno.width, geno.blocks, num_classes, conv_impl)


def build_parts(
  geno: genotype_lib.Genotype, skel: arch_lib.Skeleton, named: bool, conv_impl: str = 'xla'
):
  """[(name, module, part_index, input_shape)] for stem, blocks and head, in order.

  Shared by the networks' `__call__` (named=True, as submodules) and
  `init_variables` (standalone modules), so both build identical modules.
  """
  name = (lambda n: n) if named else (lambda n: None)
  size = skel.image_size
  stem_cls = PoolStem if skel.stem_pool else Stem
  stem = stem_cls(skel.stem_channels, skel.stem_kernel, name=name('stem'))
  parts = [('stem', stem, skel.stem_part, (size, size, 3))]
  for slot, block_name in zip(skel.slots, geno.blocks):
    module = blocks.block_class(slot.post_activation)(
      block_name, slot.out_ch, slot.stride, conv_impl, name=name(f'block_{slot.index}')
    )
    parts.append(
      (f'block_{slot.index}', module, slot.index, (slot.in_size, slot.in_size, slot.in_ch))
    )
  final = skel.slots[-1]
  head_cls = PoolHead if skel.post_activation else PreActHead
  head = head_cls(skel.num_classes, name=name('head'))
  parts.append(('head', head, skel.head_part, (final.out_size, final.out_size, skel.head_channels)))
  return parts


def genotype_of(model: _MixedNet) -> genotype_lib.Genotype:
  return genotype_lib.Genotype(tuple(model.genotype), model.arch, model.depth, model.width)


def init_variables(model: _MixedNet, seed: int, index: int = 0, image_size: int | None = None):
  """Variables {'params', 'batch_stats'} of candidate `index` by the seed contract.

  Each part (stem, block b, head) is drawn on its own by `bswap.weights`
  from `part_key(seed, index, part)`.
  """
  params, batch_stats = {}, {}
  geno = genotype_of(model)
  skel = geno.skeleton(image_size, model.num_classes)
  for name, module, part, shape in build_parts(geno, skel, named=False):
    variables = weights.part_variables(module, shape[2], weights.part_key(seed, index, part))
    params[name] = variables['params']
    if 'batch_stats' in variables:
      batch_stats[name] = variables['batch_stats']
  return {'params': params, 'batch_stats': batch_stats}
