"""python -m bswap.report DIR... : compare runs, the paper's Figure 3.

Reads every run under the DIRs (a folder holding metrics.jsonl or eval.json:
students, teachers, comparators) and every search without a trained student
(best_genotype.json), groups the runs of one network and method (several
seeds), and writes to --out (default report/):

  report.md, report.csv  one row per group: method, network, dataset, params,
                         MACs, test error mean and std over the runs (seeds),
                         top-5 where evaluated, the last epoch, the runs
  figure3.png            test error against parameters, one line per method,
                         error bars of one std; the paper's numbers (Tables 2
                         and 6, bswap/paper.csv) dashed in the same colours

A run's method: 'teacher' (a teacher/ run); 'WRN' or 'ResNet-34' (standard
blocks throughout); '<block> throughout' (one other block type); 'BlockSwap'
(the genotype its workdir's search chose); 'random' (config.json says
train.genotype=random); else 'mixed'. Name it yourself with METHOD=DIR.
Its test error: eval.json's (--config.stage=eval) if there is one, else the
last one metrics.jsonl logged.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.resources
import io
import json
import os
import statistics
import sys

from bswap import files
from bswap import load
from bswap import plots
from bswap.nets import accounting
from bswap.nets import arch as arch_lib
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu
from bswap.train import loop
from bswap.train import metrics as metric_writers

SEARCH = 'best_genotype.json'  # bswap.search.record.FILE (the report reads it as JSON)
EVAL = 'eval.json'  # bswap.evaluate.FILE
CONFIG = 'config.json'
SKIP = {'checkpoints', 'tensorboard'}  # folders never holding runs
DATASET_OF_ARCH = {arch_lib.WRN: 'cifar10', arch_lib.RESNET34: 'imagenet'}


@dataclasses.dataclass(frozen=True)
class Run:
  """One run (or search) as a point of the figure."""

  path: str
  method: str
  network: str
  dataset: str
  params: int
  macs: int | None
  test_error: float | None
  top5_error: float | None
  epoch: float | None
  group: tuple  # runs of one group are seeds of one experiment


@dataclasses.dataclass(frozen=True)
class Row:
  method: str
  network: str
  dataset: str
  params: int
  macs: int | None
  error: float | None  # mean over the runs
  std: float | None  # sample standard deviation (0 for one run)
  top5: float | None
  epoch: float | None
  runs: tuple[str, ...]


# ----------------------------------------------------------------------------
# Reading runs.


def _json(path: str) -> dict | None:
  if not files.exists(path):
    return None
  try:
    return json.loads(files.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}); repair or delete it') from e


def _records(run_dir: str) -> list[dict]:
  path = os.path.join(run_dir, metric_writers.METRICS)
  if not files.exists(path):
    return []
  return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


def _config(run_dir: str) -> dict:
  """The run's config.json (in the run directory or its workdir), or {}."""
  for where in (run_dir, os.path.dirname(run_dir)):
    config = _json(os.path.join(where, CONFIG))
    if config is not None:
      return config
  return {}


def _search(run_dir: str, geno) -> dict | None:
  """The workdir's search record if it chose this genotype."""
  record = _json(os.path.join(os.path.dirname(run_dir), SEARCH))
  if record and genotype_lib.from_dict(record['genotype']) == geno:
    return record
  return None


def network_name(geno) -> str:
  base = f'WRN-{geno.depth}-{geno.width}' if geno.arch == arch_lib.WRN else 'ResNet-34'
  types = set(geno.blocks)
  if types == {'Conv'}:
    return base
  return f'{base} {menu.paper_name(types.pop())}' if len(types) == 1 else f'{base} mixed'


def method_of(run_dir: str, geno, search: dict | None, config: dict) -> str:
  types = set(geno.blocks)
  if os.path.basename(run_dir.rstrip('/')) == 'teacher':
    return 'teacher'
  if types == {'Conv'}:
    return 'WRN' if geno.arch == arch_lib.WRN else 'ResNet-34'
  if len(types) == 1:
    return f'{menu.paper_name(types.pop())} throughout'
  if search is not None:
    return 'BlockSwap'
  if config.get('train', {}).get('genotype') == 'random':
    return 'random'
  return 'mixed'


def read_run(run_dir: str, method: str | None = None) -> Run:
  """A run directory as a Run; `method` overrides the inferred one."""
  geno = genotype_lib.load(os.path.join(run_dir, loop.GENOTYPE))
  evaluated, config = _json(os.path.join(run_dir, EVAL)), _config(run_dir)
  search = _search(run_dir, geno)
  settings = (search or {}).get('settings', {})
  data = config.get('data') or settings.get('data') or {}
  records = [r for r in _records(run_dir) if 'test_error' in r]
  dataset = (evaluated or {}).get('data') or data.get('source') or DATASET_OF_ARCH[geno.arch]
  if evaluated:
    params, macs = evaluated['params'], evaluated['macs']
    error, top5 = evaluated['test_error'], evaluated.get('test_top5_error')
  else:
    classes = config.get('model', {}).get('num_classes') or settings.get('num_classes')
    classes = classes or _checkpoint_classes(run_dir, geno)
    cost = accounting.count(geno, data.get('image_size'), classes)
    params, macs = cost.params, cost.macs
    error, top5 = (records[-1]['test_error'] if records else None), None
  method = method or method_of(run_dir, geno, search, config)
  budget = settings.get('budget') or config.get('search', {}).get('budget')
  same = ('budget', budget) if method in ('BlockSwap', 'random') and budget else ('net', geno)
  epoch = records[-1]['epoch'] if records else None
  group = (method, dataset, same)
  return Run(run_dir, method, network_name(geno), dataset, params, macs, error, top5, epoch, group)


def _checkpoint_classes(run_dir: str, geno) -> int:
  try:
    return load.checkpoint_classes(load.locate(run_dir))
  except ValueError:  # no checkpoint (yet): the family's default
    return arch_lib.DEFAULT_NUM_CLASSES[geno.arch]


def read_search(workdir: str, method: str | None = None) -> Run:
  """A search without a trained student: a point without an error."""
  record = _json(os.path.join(workdir, SEARCH))
  geno = genotype_lib.from_dict(record['genotype'])
  settings = record.get('settings', {})
  dataset = settings.get('data', {}).get('source') or DATASET_OF_ARCH[geno.arch]
  method = method or 'BlockSwap (search)'
  group = (method, dataset, ('budget', settings.get('budget') or record['params']))
  network = network_name(geno)
  return Run(
    workdir, method, network, dataset, record['params'], record.get('macs'), None, None, None, group
  )


def discover(root: str) -> list[tuple[str, str]]:
  """(kind, folder) of every run ('run') and untrained search ('search') under `root`."""
  found = []
  for folder, dirs, names in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in SKIP)
    if loop.GENOTYPE in names and (metric_writers.METRICS in names or EVAL in names):
      found.append(('run', folder))
    elif SEARCH in names and not any(
      os.path.exists(os.path.join(folder, d, metric_writers.METRICS)) for d in dirs
    ):
      found.append(('search', folder))
  return found


def read_all(args: list[str]) -> list[Run]:
  """The runs and searches under each argument, DIR or METHOD=DIR."""
  runs = []
  for arg in args:
    method, _, path = arg.rpartition('=') if '=' in arg else (None, '', arg)
    if not os.path.isdir(path):
      raise ValueError(f'{path} is not a directory; give run directories or their workdirs')
    found = discover(path)
    if not found:
      raise ValueError(
        f'{path} holds no run (a folder with {loop.GENOTYPE} and {metric_writers.METRICS} '
        f'or {EVAL}) and no search ({SEARCH})'
      )
    for kind, folder in found:
      runs.append(read_run(folder, method) if kind == 'run' else read_search(folder, method))
  return runs


# ----------------------------------------------------------------------------
# The table.


def _mean(values):
  values = [v for v in values if v is not None]
  return statistics.fmean(values) if values else None


def summarise(runs: list[Run]) -> list[Row]:
  """One row per group, sorted by method and parameters."""
  groups: dict[tuple, list[Run]] = {}
  for run in runs:
    groups.setdefault(run.group, []).append(run)
  rows = []
  for members in groups.values():
    errors = [r.test_error for r in members if r.test_error is not None]
    macs = _mean([r.macs for r in members])
    first = members[0]
    rows.append(
      Row(
        first.method,
        first.network if len({r.network for r in members}) == 1 else 'several',
        first.dataset,
        round(statistics.fmean(r.params for r in members)),
        None if macs is None else round(macs),
        statistics.fmean(errors) if errors else None,
        (statistics.stdev(errors) if len(errors) > 1 else 0.0) if errors else None,
        _mean([r.top5_error for r in members]),
        _mean([r.epoch for r in members]),
        tuple(sorted(r.path for r in members)),
      )
    )
  return sorted(rows, key=lambda r: (r.dataset, r.method, r.params))


COLUMNS = ('method', 'network', 'dataset', 'params', 'MACs', 'test error %', 'std', 'seeds')


def _cells(row: Row) -> list[str]:
  number = lambda x, f: '-' if x is None else format(x, f)
  return [
    row.method,
    row.network,
    row.dataset,
    f'{row.params:,}',
    number(row.macs, ','),
    number(row.error, '.2f'),
    number(row.std, '.2f'),
    str(len(row.runs)),
  ]


def markdown(rows: list[Row]) -> str:
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  lines += ['| ' + ' | '.join(_cells(row)) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def to_csv(rows: list[Row]) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  fields = ('method', 'network', 'dataset', 'params', 'macs', 'test_error_mean')
  writer.writerow((*fields, 'test_error_std', 'top5_error_mean', 'epoch', 'seeds', 'runs'))
  for r in rows:
    writer.writerow(
      (r.method, r.network, r.dataset, r.params, r.macs, r.error, r.std, r.top5, r.epoch)
      + (len(r.runs), ' '.join(r.runs))
    )
  return out.getvalue()


def paper_rows(datasets) -> list[dict]:
  """The paper's numbers (bswap/paper.csv) for the given datasets."""
  text = importlib.resources.files('bswap').joinpath('paper.csv').read_text()
  lines = [line for line in text.splitlines() if line and not line.startswith('#')]
  rows = list(csv.DictReader(lines))
  for row in rows:
    row['params'], row['test_error'] = int(row['params']), float(row['test_error'])
  return [row for row in rows if row['dataset'] in datasets]


# ----------------------------------------------------------------------------
# The command.


def report(args: list[str], out: str, paper: str = 'auto') -> list[Row]:
  """Reads the runs under `args`, writes report.md, report.csv and figure3.png to `out`."""
  rows = summarise(read_all(args))
  datasets = {r.dataset for r in rows} if paper == 'auto' else {paper} - {'none'}
  overlay = paper_rows(datasets)
  files.write(os.path.join(out, 'report.md'), markdown(rows))
  files.write(os.path.join(out, 'report.csv'), to_csv(rows))
  points = [r for r in rows if r.error is not None]
  files.write(os.path.join(out, 'figure3.png'), plots.figure3(points, overlay))
  return rows


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m bswap.report', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('dirs', nargs='+', metavar='DIR', help='run directories or workdirs')
  parser.add_argument('--out', default='report', help='output directory (default: report)')
  parser.add_argument(
    '--paper',
    default='auto',
    choices=('auto', 'none', 'cifar10', 'imagenet'),
    help="the paper's numbers to overlay (auto: those of the runs' datasets)",
  )
  args = parser.parse_args(argv)
  try:
    rows = report(args.dirs, args.out, args.paper)
  except (ValueError, OSError) as e:
    print(f'error: {files.describe_error(e)}', file=sys.stderr)
    return 2
  print(markdown(rows), end='')
  print(f'Wrote {args.out}/report.md, report.csv and figure3.png ({len(rows)} rows)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
