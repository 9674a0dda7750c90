"""Genotypes: one block type per block position, and their file formats.

Two formats (SPEC section 3):
  * bswap's JSON: {"arch": "wrn", "depth": 40, "width": 2, "blocks": [...]};
    a file that nests this under a "genotype" key (search output) also loads.
  * the reference code's pandas CSV: header `,index,convs,fisher`, first row's
    `convs` a Python list literal of reference names.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import json
import os

from bswap import files
from bswap.nets import arch as arch_lib
from bswap.nets import menu


@dataclasses.dataclass(frozen=True)
class Genotype:
  """A validated, immutable genotype. Block names are stored as reference names.

  depth and width default to the family's: WRN-40-2, or (34, 1) for ResNet-34.
  """

  blocks: tuple[str, ...]
  arch: str = arch_lib.WRN
  depth: int | None = None
  width: int | None = None

  def __post_init__(self):
    if isinstance(self.blocks, str):
      raise TypeError('blocks must be a sequence of names; use menu.split_names for a string')
    arch_lib.check_arch(self.arch)
    depth, width = arch_lib.default_depth_width(self.arch)
    object.__setattr__(self, 'depth', depth if self.depth is None else self.depth)
    object.__setattr__(self, 'width', width if self.width is None else self.width)
    names = tuple(menu.canonical_name(b) for b in self.blocks)
    object.__setattr__(self, 'blocks', names)
    skel = self.skeleton()
    if len(names) != skel.num_blocks:
      raise ValueError(
        f'{skel.name} has {skel.num_blocks} blocks but the genotype names {len(names)}; '
        f'give exactly one block type per position'
      )
    for slot, name in zip(skel.slots, names):
      check_valid_at(name, slot)

  def skeleton(self, image_size: int | None = None, num_classes: int | None = None):
    """The network's skeleton (None: the family's default image size and classes)."""
    return arch_lib.skeleton(self.arch, self.depth, self.width, image_size, num_classes)

  @property
  def paper_names(self) -> tuple[str, ...]:
    return tuple(menu.paper_name(b) for b in self.blocks)

  def to_dict(self) -> dict:
    return {
      'arch': self.arch,
      'depth': self.depth,
      'width': self.width,
      'blocks': list(self.blocks),
    }


def check_valid_at(name: str, slot: arch_lib.Slot) -> None:
  """Raise a ValueError if block type `name` cannot be built at `slot`."""
  reason = menu.get(name).invalid_reason(slot.in_ch, slot.out_ch)
  if reason:
    valid = [t.name for t in menu.MENU if t.invalid_reason(slot.in_ch, slot.out_ch) is None]
    raise ValueError(
      f'block type {name} is invalid at position {slot.index} (stage {slot.stage}, '
      f'{slot.in_ch} -> {slot.out_ch} channels): {reason}. '
      f'Valid types there: {", ".join(valid)}'
    )


def uniform(
  name: str, depth: int | None = None, width: int | None = None, arch: str = arch_lib.WRN
) -> Genotype:
  """One block type throughout, e.g. the teachers: uniform('Conv', arch='resnet34')."""
  skel = arch_lib.skeleton(arch, *_depth_width(arch, depth, width))
  return Genotype((name,) * skel.num_blocks, arch, skel.depth, skel.width)


def _depth_width(arch: str, depth: int | None, width: int | None) -> tuple[int, int]:
  default_depth, default_width = arch_lib.default_depth_width(arch)
  return (default_depth if depth is None else depth, default_width if width is None else width)


# ----------------------------------------------------------------------------- JSON


def from_dict(
  data: dict,
  arch: str | None = None,
  depth: int | None = None,
  width: int | None = None,
  source: str = 'genotype',
) -> Genotype:
  """A Genotype from the JSON object, or one that nests it under "genotype".

  Explicit arch/depth/width fill in what `data` lacks; contradicting it is an error.
  """
  if isinstance(data, dict) and 'blocks' not in data and 'genotype' in data:
    data = data['genotype']
  if not isinstance(data, dict):
    raise ValueError(f'{source}: expected a JSON object, got {type(data).__name__}')
  if 'blocks' not in data:
    raise ValueError(
      f'{source}: no "blocks" list (expected {{"arch", "depth", "width", '
      f'"blocks"}}, optionally nested under "genotype")'
    )
  blocks = data['blocks']
  if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
    raise ValueError(f'{source}: "blocks" must be a list of block-type names')
  given = {'arch': arch, 'depth': depth, 'width': width}
  for key, flag in given.items():
    if flag is not None and key in data and data[key] != flag:
      raise ValueError(
        f'{source} says {key}={data[key]!r} but {key}={flag!r} was given; '
        f'drop the flag or fix the file'
      )
  fields = {key: data.get(key, flag) for key, flag in given.items()}
  if fields['arch'] is None:  # ResNet-34 is the family with 16 blocks; WRNs have 3n
    fields['arch'] = arch_lib.RESNET34 if len(blocks) == 16 else arch_lib.WRN
  arch_lib.check_arch(fields['arch'])
  if fields['depth'] is None and fields['arch'] == arch_lib.WRN:
    fields['depth'] = arch_lib.wrn_depth_for_blocks(len(blocks))
  fields['depth'], fields['width'] = _depth_width(fields['arch'], fields['depth'], fields['width'])
  for key in ('depth', 'width'):
    value = fields[key]
    if not isinstance(value, int) or isinstance(value, bool):
      raise ValueError(f'{source}: "{key}" must be an integer, got {value!r}')
  return Genotype(tuple(blocks), fields['arch'], fields['depth'], fields['width'])


def dumps_json(genotype: Genotype) -> str:
  return json.dumps(genotype.to_dict(), indent=2) + '\n'


# ------------------------------------------------------------------------------ CSV

_CSV_HEADER = ['', 'index', 'convs', 'fisher']


def parse_reference_csv(text: str, source: str = 'csv') -> list[str]:
  """Block names from the reference's CSV (the first data row's `convs` column)."""
  rows = list(csv.DictReader(io.StringIO(text)))
  if not rows or 'convs' not in rows[0]:
    raise ValueError(
      f'{source}: not a reference genotype CSV (need a "convs" column and '
      f'at least one row, e.g. ",index,convs,fisher")'
    )
  try:
    names = ast.literal_eval(rows[0]['convs'])
  except (ValueError, SyntaxError) as e:
    raise ValueError(f'{source}: the "convs" cell is not a Python list literal: {e}') from None
  if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
    raise ValueError(f'{source}: the "convs" cell must be a list of block-type names')
  return names


def dumps_reference_csv(genotype: Genotype, score: float = 0.0) -> str:
  """The reference's format: pandas' index column, then index, convs, fisher."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(_CSV_HEADER)
  writer.writerow([0, 0, repr(list(genotype.blocks)), repr(float(score))])
  return out.getvalue()


# ---------------------------------------------------------------------- any format


def load(
  path: str | os.PathLike,
  arch: str | None = None,
  depth: int | None = None,
  width: int | None = None,
) -> Genotype:
  """Read a JSON or reference-CSV genotype file.

  Values stored in the file win; a flag that contradicts one is an error. A CSV
  stores only names: 16 make a ResNet-34, 3n a WRN of depth 6n + 4 and width 2.
  """
  path = os.fspath(path)
  if not files.exists(path) or os.path.isdir(path):
    raise ValueError(f'genotype file {path!r} does not exist')
  try:
    text = files.read_text(path)
  except UnicodeDecodeError as e:
    raise ValueError(
      f'{path} is not UTF-8 text (byte {e.start}): a genotype file is JSON or the reference '
      'CSV; check the path'
    ) from None
  if path.endswith('.csv') or not text.lstrip().startswith(('{', '[')):
    data = {'blocks': parse_reference_csv(text, path)}
  else:
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: malformed JSON: {e}') from None
  return from_dict(data, arch, depth, width, source=path)


def parse(
  text: str, arch: str | None = None, depth: int | None = None, width: int | None = None
) -> Genotype:
  """A genotype from a file path or a comma-separated list of block names."""
  if files.is_url(text) or os.path.exists(text) or text.endswith(('.json', '.csv')):
    return load(text, arch, depth, width)
  return from_dict({'blocks': menu.split_names(text)}, arch, depth, width, source='block list')
