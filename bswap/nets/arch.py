"""Network skeletons: where the substitutable blocks sit, and their shapes.

A skeleton is everything about a network except the block types: the stem,
the head and, for each block position (a `Slot`), its stage, input and output
widths, stride, input resolution and activation order. Accounting, sampling
and the Flax models all read the same skeleton. Pure Python (no JAX).

Two families (SPEC sections 2 and 6): the pre-activation WideResNet of
CIFAR-10 (`wrn`, any depth 6n + 4 and width k) and the post-activation
ResNet-34 of ImageNet (`resnet34`, 16 blocks).
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
  # False: pre-activation block (WRN); True: post-activation block (ResNet-34),
  # with a BN closing the branch and a ReLU after the add.
  post_activation: bool = False

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
  stem_stride: int = 1
  stem_pool: bool = False  # a 3x3/2 max pool (padding 1) after the stem (ResNet)

  @property
  def num_blocks(self) -> int:
    return len(self.slots)

  @property
  def name(self) -> str:
    return f'WRN-{self.depth}-{self.width}' if self.arch == WRN else 'ResNet-34'

  @property
  def post_activation(self) -> bool:
    return self.arch == RESNET34

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


def wrn_skeleton(
  depth: int = 40, width: int = 2, image_size: int = 32, num_classes: int = 10
) -> Skeleton:
  """Pre-activation WRN-depth-width (SPEC section 2): widths 16 -> 16k, 32k, 64k."""
  # Checked before the cache: 16.0 == 16 would otherwise find 16's entry.
  wrn_blocks_per_stage(depth)
  if not isinstance(width, int) or width < 1:
    raise ValueError(f'WideResNet width must be a positive integer; got {width!r}')
  return _wrn_skeleton(depth, width, image_size, num_classes)


@functools.cache
def _wrn_skeleton(depth: int, width: int, image_size: int, num_classes: int) -> Skeleton:
  n = wrn_blocks_per_stage(depth)
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


RESNET34_DEPTH, RESNET34_WIDTH = 34, 1  # what a resnet34 genotype records
_RESNET34_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))  # (blocks, width)


@functools.cache
def resnet34_skeleton(image_size: int = 224, num_classes: int = 1000) -> Skeleton:
  """Post-activation ResNet-34 (SPEC section 6): stem 7x7/2 + max pool 3/2, 16 blocks."""
  if image_size < 32:
    raise ValueError(f'ResNet-34 needs images of at least 32 pixels; got {image_size}')
  size = conv_out_size(conv_out_size(image_size, 7, 2), 3, 2)  # the stem conv, then the pool
  slots, in_ch = [], 64
  for stage, (blocks, width) in enumerate(_RESNET34_STAGES, start=1):
    for j in range(blocks):
      stride = 2 if stage > 1 and j == 0 else 1
      slot = Slot(len(slots), stage, in_ch, width, stride, size, post_activation=True)
      slots.append(slot)
      in_ch, size = slot.out_ch, slot.out_size
  return Skeleton(
    RESNET34,
    RESNET34_DEPTH,
    RESNET34_WIDTH,
    image_size,
    num_classes,
    stem_kernel=7,
    stem_channels=64,
    head_channels=512,
    slots=tuple(slots),
    stem_stride=2,
    stem_pool=True,
  )


def check_arch(arch: str) -> None:
  if arch not in ARCHS:
    raise ValueError(f'unknown arch {arch!r}; valid: {", ".join(ARCHS)}')


# Defaults per family: CIFAR-10 for the WRN, ImageNet for ResNet-34.
DEFAULT_IMAGE_SIZE = {WRN: 32, RESNET34: 224}
DEFAULT_NUM_CLASSES = {WRN: 10, RESNET34: 1000}


def skeleton(
  arch: str = WRN,
  depth: int | None = None,
  width: int | None = None,
  image_size: int | None = None,
  num_classes: int | None = None,
) -> Skeleton:
  """The skeleton of a named architecture (None: the family's defaults)."""
  check_arch(arch)
  default_depth, default_width = default_depth_width(arch)
  depth = default_depth if depth is None else depth
  width = default_width if width is None else width
  image_size = DEFAULT_IMAGE_SIZE[arch] if image_size is None else image_size
  num_classes = num_classes or DEFAULT_NUM_CLASSES[arch]
  if arch == RESNET34:
    if (depth, width) != (RESNET34_DEPTH, RESNET34_WIDTH):
      raise ValueError(
        f'arch resnet34 has depth 34 and width 1; got depth={depth!r}, width={width!r} '
        '(leave them out, or set --config.model.depth=34 --config.model.width=1)'
      )
    return resnet34_skeleton(image_size, num_classes)
  return wrn_skeleton(depth, width, image_size, num_classes)


def default_depth_width(arch: str) -> tuple[int, int]:
  """(depth, width) when a genotype names none: WRN-40-2, or ResNet-34's (34, 1)."""
  return (RESNET34_DEPTH, RESNET34_WIDTH) if arch == RESNET34 else (40, 2)


def wrn_depth_for_blocks(num_blocks: int) -> int:
  """Depth of the WRN with `num_blocks` blocks (3 stages of n): 18 -> 40."""
  if num_blocks < 3 or num_blocks % 3:
    raise ValueError(
      f'a WideResNet genotype has 3n block names (18 for WRN-40), a ResNet-34 one 16; '
      f'got {num_blocks}'
    )
  return 6 * (num_blocks // 3) + 4
