"""Flax modules for the block menu (SPEC sections 2-3).

A block is a wrapper around a residual *branch*. The branch is chosen per
block from the block type's family (basic: two units; bottleneck: 1x1 -> 3x3
-> 1x1) through the `BRANCHES` registry. The wrapper fixes the activation
order: `PreActBlock` is the WideResNet's (BN-ReLU first, shortcut on the
pre-activated input); `PostActBlock` is ResNet-34's (the same branches with
`final_norm=True`, a BN after the last conv, then add and ReLU).

Every block sows its branch output (the Fisher probe) under 'intermediates'
and marks it with `perturb`, so that `jax.grad` with respect to the
'perturbations' collection gives dL/d(probe).

The zero-cost proxies (`bswap.scoring.proxies`) read more: every conv output
(sown under 'taps' and perturbed in 'layer_perturbations', for layer-level
Fisher), every BN's input and output, every ReLU's input, and each block's
output. Sowing and perturbing are no-ops unless the caller asks for those
collections, so the networks compute exactly what they computed without them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bswap.nets import convs
from bswap.nets import menu

# Reference init: Normal(0, sqrt(2 / (kh * kw * out_channels))), not truncated,
# fan-out *not* divided by groups. variance_scaling computes exactly that.
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's Linear default: Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
DENSE_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

PROBE = 'probe'
# Zero-cost proxy taps (bswap.scoring.proxies): collections and the names sown in them.
TAPS = 'taps'
LAYER_PERTURBATIONS = 'layer_perturbations'
# Prefixed: a sown name may not be a submodule's name (e.g. the BN 'bn_in').
LAYER_OUT = 'tap_layer_out'  # every conv's output, and the dense layer's (the logits)
BN_IN, BN_OUT = 'tap_bn_in', 'tap_bn_out'
RELU_IN = 'tap_relu_in'
BLOCK_OUT = 'tap_block_out'  # a block's output, after the add (and a post-act block's ReLU)
POOL_IN = 'tap_pool_in'  # the tensor entering global average pooling
STEM_OUT = 'tap_stem_out'  # a pooling stem's output (a plain stem's is its conv's)


def tap_layer_output(module: nn.Module, y: jax.Array) -> jax.Array:
  """Mark a conv or dense output: perturbed (for dL/dy) and sown (for y)."""
  y = module.perturb(LAYER_OUT, y, collection=LAYER_PERTURBATIONS)
  module.sow(TAPS, LAYER_OUT, y)
  return y


def conv(features: int, kernel: int, stride: int = 1, groups: int = 1, impl='xla', name=None):
  """Bias-free conv with PyTorch's symmetric padding kernel // 2.

  Flax's 'SAME' pads (0, 1) at stride 2, a different network.
  """
  return Conv(features, kernel, stride, groups, impl, name=name)


class Conv(nn.Module):
  """A conv with the parameter tree of `nn.Conv` and a choice of implementation.

  'xla' is `lax.conv_general_dilated` (what `nn.Conv` runs). 'fast' gives the
  same function with kernels XLA:CPU runs far faster (`bswap.convs`); the
  parameters, their names and their initial values are the same either way.
  """

  features: int
  kernel: int
  stride: int = 1
  groups: int = 1
  impl: str = 'xla'

  @nn.compact
  def __call__(self, x):
    shape = (self.kernel, self.kernel, x.shape[-1] // self.groups, self.features)
    kernel = self.param('kernel', CONV_INIT, shape, jnp.float32)
    y = convs.conv2d(x, kernel.astype(x.dtype), self.stride, self.groups, self.impl)
    return tap_layer_output(self, y)


def batch_norm(train: bool, name=None):
  """PyTorch's BatchNorm defaults: eps 1e-5, running = 0.9 running + 0.1 batch.

  Flax updates the running variance with the biased batch variance, PyTorch with
  the unbiased one: a factor N / (N - 1), negligible at batch 128.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def norm(module: nn.Module, x, train: bool, name=None):
  """`batch_norm` applied inside `module`, its input and output sown as taps."""
  module.sow(TAPS, BN_IN, x)
  y = batch_norm(train, name)(x)
  module.sow(TAPS, BN_OUT, y)
  return y


def relu(module: nn.Module, x):
  """ReLU applied inside `module`, its input sown as a tap (the activation code's source)."""
  module.sow(TAPS, RELU_IN, x)
  return nn.relu(x)


def bn_relu(module: nn.Module, x, train: bool, name=None):
  return relu(module, norm(module, x, train, name))


class Unit(nn.Module):
  """One basic unit: S is a 3x3 conv; G is grouped 3x3 (c -> c), BN-ReLU, 1x1 (c -> out)."""

  block_type: menu.BlockType
  out_ch: int
  stride: int = 1
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train: bool):
    t, c, impl = self.block_type, x.shape[-1], self.conv_impl
    if t.is_standard_conv:
      return conv(self.out_ch, 3, self.stride, impl=impl, name='conv')(x)
    x = conv(c, 3, self.stride, t.groups(c), impl, name='grouped')(x)
    x = bn_relu(self, x, train, name='bn')
    return conv(self.out_ch, 1, impl=impl, name='pointwise')(x)


class BasicBranch(nn.Module):
  """unit_a (in -> out, stride), BN-ReLU, unit_b (out -> out)."""

  block_type: menu.BlockType
  out_ch: int
  stride: int = 1
  final_norm: bool = False
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train: bool):
    t, impl = self.block_type, self.conv_impl
    x = Unit(t, self.out_ch, self.stride, impl, name='unit_a')(x, train)
    x = bn_relu(self, x, train, name='bn_mid')
    x = Unit(t, self.out_ch, conv_impl=impl, name='unit_b')(x, train)
    return norm(self, x, train, 'bn_out') if self.final_norm else x


class BottleneckBranch(nn.Module):
  """1x1 (in -> M), BN-ReLU, 3x3 (M -> M, q groups, stride), BN-ReLU, 1x1 (M -> out)."""

  block_type: menu.BlockType
  out_ch: int
  stride: int = 1
  final_norm: bool = False
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train: bool):
    t, impl = self.block_type, self.conv_impl
    m = self.out_ch // t.bottleneck
    x = conv(m, 1, impl=impl, name='reduce')(x)
    x = bn_relu(self, x, train, name='bn_reduce')
    x = conv(m, 3, self.stride, t.groups(m), impl, name='grouped')(x)
    x = bn_relu(self, x, train, name='bn_grouped')
    x = conv(self.out_ch, 1, impl=impl, name='expand')(x)
    return norm(self, x, train, 'bn_out') if self.final_norm else x


BRANCHES = {menu.BASIC: BasicBranch, menu.BOTTLENECK: BottleneckBranch}


def mark_probe(module: nn.Module, x: jax.Array) -> jax.Array:
  """Expose a branch output as the Fisher probe: perturb (for dL/dx) and sow (for x)."""
  x = module.perturb(PROBE, x)
  module.sow('intermediates', PROBE, x)
  return x


def probed_branch(block: nn.Module, x, train: bool, final_norm: bool):
  """The residual branch of `block`'s type (a submodule 'branch'), marked as its probe."""
  t = menu.get(block.block_name)
  branch_cls = BRANCHES[t.family]
  branch = branch_cls(
    t, block.out_ch, block.stride, final_norm=final_norm, conv_impl=block.conv_impl, name='branch'
  )
  return mark_probe(block, branch(x, train))


class PreActBlock(nn.Module):
  """Pre-activation block: x' = ReLU(BN(x)); out = branch(x') + skip.

  Returns (out, probe), the probe being the branch output before the add.

  skip = x when the shape is kept, else a strided 1x1 conv of x' (the shortcut
  reads the pre-activated input, as the reference WRN does).
  """

  block_name: str
  out_ch: int
  stride: int = 1
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train: bool):
    x_act = bn_relu(self, x, train, name='bn_in')
    branch = probed_branch(self, x_act, train, final_norm=False)
    if x.shape[-1] == self.out_ch and self.stride == 1:
      out = branch + x
    else:
      shortcut = conv(self.out_ch, 1, self.stride, impl=self.conv_impl, name='shortcut')
      out = branch + shortcut(x_act)
    self.sow(TAPS, BLOCK_OUT, out)
    return out, branch


class PostActBlock(nn.Module):
  """Post-activation block (ResNet-34, SPEC section 6): out = ReLU(branch(x) + skip).

  Returns (out, probe), the probe being the branch output after its closing BN,
  before the add. skip = x when the shape is kept, else a strided 1x1 conv of
  x followed by a BN (torchvision's downsample).
  """

  block_name: str
  out_ch: int
  stride: int = 1
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train: bool):
    branch = probed_branch(self, x, train, final_norm=True)
    skip = x
    if x.shape[-1] != self.out_ch or self.stride != 1:
      skip = conv(self.out_ch, 1, self.stride, impl=self.conv_impl, name='downsample')(x)
      skip = norm(self, skip, train, 'downsample_bn')
    out = relu(self, branch + skip)
    self.sow(TAPS, BLOCK_OUT, out)
    return out, branch


def block_class(post_activation: bool) -> type[nn.Module]:
  """The wrapper of a skeleton slot: PostActBlock (ResNet-34) or PreActBlock (WRN)."""
  return PostActBlock if post_activation else PreActBlock
