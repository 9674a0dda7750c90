"""Print a genotype's blocks, parameters and MACs.

  python -m bswap.show GENOTYPE [--arch wrn|resnet34] [--depth D --width W] [--json]

GENOTYPE is a JSON genotype file (also one nesting it under "genotype", as the
search writes), a reference CSV file, or a comma-separated list of block names
in either spelling ("Conv,DConvA2,..." or "S,G(2),BG(2,M/4),..."). Depth and
width come from the file when it has them; a list of 16 names is a ResNet-34,
any other list defaults to a WRN of width 2 (18 names: WRN-40-2). `--json`
prints one JSON object: {"params", "macs", "blocks": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bswap import files
from bswap.nets import accounting
from bswap.nets import arch as arch_lib
from bswap.nets import genotype as genotype_lib
from bswap.search import record as record_lib


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog='python -m bswap.show',
    description='Per-block types, parameters and MACs of a BlockSwap genotype.',
  )
  parser.add_argument('genotype', help='JSON or reference-CSV file, or comma-separated names')
  parser.add_argument(
    '--arch',
    choices=arch_lib.ARCHS,
    default=None,
    help='network family (default: from the file; 16 names: resnet34, else wrn)',
  )
  parser.add_argument(
    '--depth', type=int, default=None, help='WRN depth (default 40; ResNet-34: 34)'
  )
  parser.add_argument('--width', type=int, default=None, help='WRN width (default 2; ResNet-34: 1)')
  parser.add_argument(
    '--image-size',
    type=int,
    default=None,
    help="input resolution for MACs (default: the search output's, else 32 for a WRN, 224 for "
    'ResNet-34)',
  )
  parser.add_argument('--json', action='store_true', help='print one JSON object')
  return parser


def report(geno: genotype_lib.Genotype, image_size: int | None = None) -> dict:
  """The JSON-ready description of a genotype that `--json` prints."""
  count = accounting.count(geno, image_size)
  skel = geno.skeleton(image_size)
  return {
    'genotype': geno.to_dict(),
    'network': skel.name,
    'image_size': skel.image_size,
    'params': count.params,
    'macs': count.macs,
    'stem': {'params': count.stem[0], 'macs': count.stem[1]},
    'head': {'params': count.head[0], 'macs': count.head[1]},
    'blocks': [
      {
        'position': b.index,
        'stage': b.stage,
        'type': b.name,
        'paper': b.paper,
        'in_channels': s.in_ch,
        'out_channels': s.out_ch,
        'stride': s.stride,
        'params': b.params,
        'macs': b.macs,
      }
      for b, s in zip(count.blocks, skel.slots)
    ],
  }


def format_table(rep: dict) -> str:
  header = (
    f'{"pos":>3}  {"stage":>5}  {"type":<10} {"paper":<11} {"in->out":>9}  '
    f'{"params":>10}  {"MACs":>13}'
  )
  lines = [
    f'{rep["network"]} at {rep["image_size"]}x{rep["image_size"]}',
    header,
    '-' * len(header),
  ]
  for b in rep['blocks']:
    shape = f'{b["in_channels"]}->{b["out_channels"]}' + ('/2' if b['stride'] == 2 else '')
    lines.append(
      f'{b["position"]:>3}  {b["stage"]:>5}  {b["type"]:<10} {b["paper"]:<11} '
      f'{shape:>9}  {b["params"]:>10,}  {b["macs"]:>13,}'
    )
  lines.append('-' * len(header))
  for part in ('stem', 'head'):
    lines.append(f'{part:<42}  {rep[part]["params"]:>10,}  {rep[part]["macs"]:>13,}')
  lines.append(f'{"total":<42}  {rep["params"]:>10,}  {rep["macs"]:>13,}')
  return '\n'.join(lines)


def recorded_image_size(path: str) -> int | None:
  """The resolution a search record (best_genotype.json) was scored at, if `path` is one."""
  if not (path.endswith('.json') and os.path.isfile(path)):
    return None
  try:
    record = record_lib.SearchRecord.from_json(files.read_text(path), source=path)
  except (OSError, ValueError):
    return None  # not a search record; genotype_lib.parse reports any other problem
  size = record.settings.get('data', {}).get('image_size')
  return size if isinstance(size, int) else None


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    geno = genotype_lib.parse(args.genotype, args.arch, args.depth, args.width)
    size = args.image_size if args.image_size is not None else recorded_image_size(args.genotype)
    rep = report(geno, size)
  except (ValueError, OSError) as e:
    print(f'error: {files.describe_error(e)}', file=sys.stderr)
    return 2
  print(json.dumps(rep) if args.json else format_table(rep))
  return 0


if __name__ == '__main__':
  sys.exit(main())
