"""Parameter and MAC counts from closed forms (SPEC section 3).

Parameters: conv kernels, BN scale and bias, shortcut convs, dense weight and
bias (BN running statistics are not parameters). MACs per image: a conv costs
kh * kw * (c_in / groups) * c_out * H_out * W_out (padding taps included), the
dense layer c_in * c_out; BN, ReLU, pooling and additions cost nothing.

Written independently of the Flax modules in `bswap.blocks`: the tests check
one against the other for every block type at every position. Pure Python and
NumPy, cached per skeleton, so the sampler can price millions of genotypes by
table lookup.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from bswap.nets import arch as arch_lib
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu


@dataclasses.dataclass(frozen=True)
class Conv:
  kernel: int
  in_ch: int
  out_ch: int
  groups: int = 1
  stride: int = 1

  @property
  def params(self) -> int:
    return self.kernel * self.kernel * (self.in_ch // self.groups) * self.out_ch

  def macs(self, in_size: int) -> int:
    out = arch_lib.conv_out_size(in_size, self.kernel, self.stride)
    return self.params * out * out


def _unit(t: menu.BlockType, c: int, c_out: int, stride: int):
  """Convs and BN widths of one basic unit (S: a 3x3 conv; G: grouped 3x3, BN, 1x1)."""
  if t.is_standard_conv:
    return [Conv(3, c, c_out, 1, stride)], []
  return [Conv(3, c, c, t.groups(c), stride), Conv(1, c, c_out)], [c]


def branch_layers(t: menu.BlockType, slot: arch_lib.Slot):
  """The residual branch of type t at slot, in order: (convs, BN widths).

  A post-activation branch (ResNet-34) ends in a BN of the output width.
  """
  cin, cout, s = slot.in_ch, slot.out_ch, slot.stride
  closing = [cout] if slot.post_activation else []
  if t.family == menu.BASIC:
    convs_a, bns_a = _unit(t, cin, cout, s)
    convs_b, bns_b = _unit(t, cout, cout, 1)
    return convs_a + convs_b, bns_a + [cout] + bns_b + closing
  m = cout // t.bottleneck
  convs = [Conv(1, cin, m), Conv(3, m, m, t.groups(m), s), Conv(1, m, cout)]
  return convs, [m, m] + closing


def _needs_shortcut(slot: arch_lib.Slot) -> bool:
  return slot.in_ch != slot.out_ch or slot.stride != 1


@functools.cache
def block_cost(name: str, slot: arch_lib.Slot) -> tuple[int, int]:
  """(params, MACs) of a block of type `name` at `slot`.

  Pre-activation (WRN) blocks add their input BN and a bare 1x1 shortcut conv;
  post-activation (ResNet-34) ones a 1x1 downsample conv followed by a BN.
  """
  t = menu.get(name)
  genotype_lib.check_valid_at(t.name, slot)
  convs, bns = branch_layers(t, slot)
  size, macs = slot.in_size, 0
  for conv in convs:  # only the strided conv changes the size along the branch
    macs += conv.macs(size)
    size = arch_lib.conv_out_size(size, conv.kernel, conv.stride)
  params = sum(c.params for c in convs) + 2 * sum(bns)
  if not slot.post_activation:
    params += 2 * slot.in_ch  # the input BN
  if _needs_shortcut(slot):
    shortcut = Conv(1, slot.in_ch, slot.out_ch, 1, slot.stride)
    params += shortcut.params + (2 * slot.out_ch if slot.post_activation else 0)
    macs += shortcut.macs(slot.in_size)
  return params, macs


def stem_cost(skel: arch_lib.Skeleton) -> tuple[int, int]:
  """The stem conv (WRN: 3x3/1, no BN; ResNet-34: 7x7/2 and a BN; the pool costs nothing)."""
  conv = Conv(skel.stem_kernel, 3, skel.stem_channels, 1, skel.stem_stride)
  bn = 2 * skel.stem_channels if skel.post_activation else 0
  return conv.params + bn, conv.macs(skel.image_size)


def head_cost(skel: arch_lib.Skeleton) -> tuple[int, int]:
  """Dense with bias, after the final BN of a pre-activation net (none in ResNet-34)."""
  c, k = skel.head_channels, skel.num_classes
  bn = 0 if skel.post_activation else 2 * c
  return bn + c * k + k, c * k


@dataclasses.dataclass(frozen=True)
class BlockCount:
  index: int
  stage: int
  name: str
  paper: str
  params: int
  macs: int


@dataclasses.dataclass(frozen=True)
class Count:
  """Totals and per-block counts of one genotype."""

  params: int
  macs: int
  blocks: tuple[BlockCount, ...]
  stem: tuple[int, int]
  head: tuple[int, int]


def count(
  genotype: genotype_lib.Genotype, image_size: int | None = None, num_classes: int | None = None
) -> Count:
  """Parameters and MACs of a genotype, per block and in total (None: the family's defaults)."""
  skel = genotype.skeleton(image_size, num_classes)
  blocks = []
  for slot, name in zip(skel.slots, genotype.blocks):
    params, macs = block_cost(name, slot)
    blocks.append(BlockCount(slot.index, slot.stage, name, menu.paper_name(name), params, macs))
  stem, head = stem_cost(skel), head_cost(skel)
  return Count(
    params=stem[0] + head[0] + sum(b.params for b in blocks),
    macs=stem[1] + head[1] + sum(b.macs for b in blocks),
    blocks=tuple(blocks),
    stem=stem,
    head=head,
  )


def fixed_params(skel: arch_lib.Skeleton) -> int:
  """Parameters outside the substitutable blocks (stem and head)."""
  return stem_cost(skel)[0] + head_cost(skel)[0]


def fixed_macs(skel: arch_lib.Skeleton) -> int:
  """MACs outside the substitutable blocks (stem and head)."""
  return stem_cost(skel)[1] + head_cost(skel)[1]


def param_table(skel: arch_lib.Skeleton, names: tuple[str, ...] = menu.NAMES) -> np.ndarray:
  """(num_blocks, len(names)) int64 parameter counts; -1 where a type is invalid."""
  return _table(skel, tuple(menu.canonical_name(n) for n in names), 0)


def mac_table(skel: arch_lib.Skeleton, names: tuple[str, ...] = menu.NAMES) -> np.ndarray:
  """Like param_table, for MACs."""
  return _table(skel, tuple(menu.canonical_name(n) for n in names), 1)


@functools.lru_cache(maxsize=64)
def _table(skel: arch_lib.Skeleton, names: tuple[str, ...], which: int) -> np.ndarray:
  table = np.full((skel.num_blocks, len(names)), -1, dtype=np.int64)
  for slot in skel.slots:
    for j, name in enumerate(names):
      if menu.get(name).invalid_reason(slot.in_ch, slot.out_ch) is None:
        table[slot.index, j] = block_cost(name, slot)[which]
  table.setflags(write=False)  # cached: callers must not mutate it
  return table
