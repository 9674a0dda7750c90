"""Network skeletons: where the substitutable blocks sit, and their shapes.

A skeleton is everything about a network except the block types: the stem,
the head and, for each block position (a `Slot`), its stage, input and output
widths, stride and input resolution. Accounting, sampling and the Flax models
all read the same skeleton. Pure Python (no JAX).
"""

from __future__ import annotations

import dataclasses
import functools

WRN = 'wrn'
RESNET34 = 'resnet34'
ARCHS = (WRN, RESNET34)


def conv_out_size(size: int, kernel: int, stride: int) -> int:
  """Output size of a conv with symmetric padding kernel // 2 (PyTorch style)."""
  return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class Slot:
  """One substitutable block position."""

  index: int  # 0-based position in the genotype
  stage: int  # 1-based stage number
  in_ch: int
  out_ch: int
  stride: int
  in_size: int  # input height = width, in pixels

  @property
  def out_size(self) -> int:
    return conv_out_size(self.in_size, 3, self.stride)


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """A network with its block types left open."""

  arch: str
  depth: int
  width: int
  image_size: int
  num_classes: int
  stem_kernel: int
  stem_channels: int
  head_channels: int
  slots: tuple[Slot, ...]

  @property
  def num_blocks(self) -> int:
    return len(self.slots)

  @property
  def name(self) -> str:
    return f'WRN-{self.depth}-{self.width}' if self.arch == WRN else self.arch

  @property
  def stem_part(self) -> int:
    """Block index of the stem in the seed contract (SPEC section 4)."""
    return self.num_blocks

  @property
  def head_part(self) -> int:
    """Block index of the head in the seed contract."""
    return self.num_blocks + 1


def wrn_blocks_per_stage(depth: int) -> int:
  if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
    raise ValueError(
      f'WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...); got {depth!r}'
    )
  return (depth - 4) // 6


@functools.cache
def wrn_skeleton(
  depth: int = 40, width: int = 2, image_size: int = 32, num_classes: int = 10
) -> Skeleton:
  """Pre-activation WRN-depth-width (SPEC section 2): widths 16 -> 16k, 32k, 64k."""
  n = wrn_blocks_per_stage(depth)
  if not isinstance(width, int) or width < 1:
    raise ValueError(f'WideResNet width must be a positive integer; got {width!r}')
  if image_size < 4:
    raise ValueError(f'image_size must be at least 4 pixels; got {image_size}')
  widths = (16, 16 * width, 32 * width, 64 * width)
  slots, size, in_ch = [], image_size, widths[0]
  for stage in (1, 2, 3):
    for j in range(n):
      stride = 2 if stage > 1 and j == 0 else 1
      slot = Slot(len(slots), stage, in_ch, widths[stage], stride, size)
      slots.append(slot)
      in_ch, size = slot.out_ch, slot.out_size
  return Skeleton(
    WRN,
    depth,
    width,
    image_size,
    num_classes,
    stem_kernel=3,
    stem_channels=widths[0],
    head_channels=widths[3],
    slots=tuple(slots),
  )


def check_arch(arch: str) -> None:
  if arch == RESNET34:
    raise ValueError('arch "resnet34" is not supported yet (it comes with ImageNet support)')
  if arch != WRN:
    raise ValueError(f'unknown arch {arch!r}; valid: {", ".join(ARCHS)}')


def skeleton(
  arch: str = WRN, depth: int = 40, width: int = 2, image_size: int = 32, num_classes: int = 10
) -> Skeleton:
  """The skeleton of a named architecture."""
  check_arch(arch)
  return wrn_skeleton(depth, width, image_size, num_classes)


def wrn_depth_for_blocks(num_blocks: int) -> int:
  """Depth of the WRN with `num_blocks` blocks (3 stages of n): 18 -> 40."""
  if num_blocks < 3 or num_blocks % 3:
    raise ValueError(f'a WideResNet genotype has 3n block names (18 for WRN-40); got {num_blocks}')
  return 6 * (num_blocks // 3) + 4
