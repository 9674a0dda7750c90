"""The BlockSwap candidate menu: the 23 cheap block types and their names.

Pure Python (no JAX) so that parsing, accounting and sampling stay fast to
import. The Flax modules that build these types live in `bswap.blocks`.

Names follow the reference code (`Conv`, `DConvA4`, `G8B4`, ...): they are
file-safe and what published genotypes use. The paper's notation (`S`, `G(4)`,
`BG(4,M/8)`, ...) is accepted on input and used for display. SPEC section 3.
"""

from __future__ import annotations

import dataclasses
import re

BASIC = 'basic'
BOTTLENECK = 'bottleneck'


@dataclasses.dataclass(frozen=True)
class BlockType:
  """One entry of the menu.

  Attributes:
    name: reference alias, the identifier used in files (e.g. 'G8B4').
    paper: the paper's notation, for display (e.g. 'BG(4,M/8)').
    family: BASIC (two units) or BOTTLENECK (1x1 -> 3x3 -> 1x1).
    bottleneck: the divisor b of a bottleneck (M = out // b); 0 for basic.
    fixed_groups: q when the group count is a constant (1 for S and B(b)).
    group_divisor: d when q = c // d (c = the grouped conv's input width).
  """

  name: str
  paper: str
  family: str
  bottleneck: int = 0
  fixed_groups: int = 0
  group_divisor: int = 0

  @property
  def is_standard_conv(self) -> bool:
    """True for S, whose basic units are plain 3x3 convs (no pointwise)."""
    return self.family == BASIC and self.fixed_groups == 1

  def groups(self, channels: int) -> int:
    """Group count q of a grouped conv whose input width is `channels`."""
    if self.group_divisor:
      return channels // self.group_divisor
    return self.fixed_groups

  def grouped_widths(self, in_ch: int, out_ch: int) -> tuple[int, ...]:
    """Input widths of this type's grouped 3x3 convs in an in->out block."""
    if self.family == BASIC:
      return (in_ch, out_ch)  # unit_a reads `in`, unit_b reads `out`
    return (out_ch // self.bottleneck,)  # the 3x3 works at M = out // b

  def invalid_reason(self, in_ch: int, out_ch: int) -> str | None:
    """Why this type cannot build an in->out block, or None if it can."""
    for c in self.grouped_widths(in_ch, out_ch):
      q = self.groups(c)
      if c < 1:
        return f'its bottleneck width M = {out_ch} // {self.bottleneck} is 0'
      if q < 1:
        return f'its group count at width {c} is 0'
      if c % q:
        return f'{q} groups do not divide width {c}'
    return None


def _build_menu() -> tuple[BlockType, ...]:
  """The 23 types in the reference's candidate order."""
  t, bt = BlockType, BOTTLENECK
  return (
    t('Conv', 'S', BASIC, fixed_groups=1),
    *(t(f'DConvA{g}', f'G({g})', BASIC, fixed_groups=g) for g in (2, 4, 8, 16)),
    *(t(f'DConvG{d}', f'G(N/{d})', BASIC, group_divisor=d) for d in (16, 8, 4, 2)),
    t('DConv', 'G(N)', BASIC, group_divisor=1),
    t('ConvB2', 'B(2)', bt, bottleneck=2, fixed_groups=1),
    t('ConvB4', 'B(4)', bt, bottleneck=4, fixed_groups=1),
    *(t(f'A{g}B2', f'BG(2,{g})', bt, 2, fixed_groups=g) for g in (2, 4, 8, 16)),
    t('G16B2', 'BG(2,M/16)', bt, 2, group_divisor=16),
    t('G8B2', 'BG(2,M/8)', bt, 2, group_divisor=8),
    t('G8B4', 'BG(4,M/8)', bt, 4, group_divisor=8),
    t('G4B2', 'BG(2,M/4)', bt, 2, group_divisor=4),
    t('G2B2', 'BG(2,M/2)', bt, 2, group_divisor=2),
    t('G4B4', 'BG(4,M/4)', bt, 4, group_divisor=4),
    t('G2B4', 'BG(4,M/2)', bt, 4, group_divisor=2),
  )


MENU: tuple[BlockType, ...] = _build_menu()
NAMES: tuple[str, ...] = tuple(t.name for t in MENU)
BLOCK_TYPES: dict[str, BlockType] = {t.name: t for t in MENU}


def _key(text: str) -> str:
  return re.sub(r'\s+', '', text).lower()


# Both spellings, case- and space-insensitive, map to the reference name.
_LOOKUP: dict[str, str] = {}
for _t in MENU:
  _LOOKUP[_key(_t.name)] = _t.name
  _LOOKUP[_key(_t.paper)] = _t.name
assert len(_LOOKUP) == 2 * len(MENU), 'menu spellings collide'


def canonical_name(text: str) -> str:
  """Reference name of a block type given either spelling.

  Raises:
    ValueError: naming the unknown input and listing the valid names.
  """
  try:
    return _LOOKUP[_key(text)]
  except KeyError:
    valid = ', '.join(f'{t.name} ({t.paper})' for t in MENU)
    raise ValueError(f'unknown block type {text!r}; valid types: {valid}') from None


def get(name: str) -> BlockType:
  """The BlockType for a name in either spelling."""
  return BLOCK_TYPES[canonical_name(name)]


def paper_name(name: str) -> str:
  return get(name).paper


def split_names(text: str) -> list[str]:
  """Split a command-line list of names on commas outside parentheses.

  'Conv,BG(2,4), G(N/2)' -> ['Conv', 'BG(2,4)', 'G(N/2)'].
  """
  parts, depth, current = [], 0, []
  for char in text:
    if char == '(':
      depth += 1
    elif char == ')':
      depth -= 1
    if char == ',' and depth == 0:
      parts.append(''.join(current).strip())
      current = []
    else:
      current.append(char)
  parts.append(''.join(current).strip())
  if depth != 0:
    raise ValueError(f'unbalanced parentheses in block list {text!r}')
  if any(not p for p in parts):
    raise ValueError(f'empty block name in list {text!r} (check for stray commas)')
  return parts
