"""A finished study's files: study.csv, table1.csv, table1.md and the figures.

  study.csv    one row per member (index order): index, kind, genotype, note,
               params, macs, every metric, final and best test error (%),
               train_seconds (the training steps' time; the one column that
               differs between two runs of the same study)
  table1.csv   per metric (and k): Spearman rho and Kendall tau of the metric
  table1.md    (sign applied: higher = predicted better) against final error,
               their 95% bootstrap intervals, rho within equal parameters
               (partial Spearman given params), and the error of the metric's
               top-1 pick and best of its top 5 against the population's best
  figure2.png  the paper's Figure 2, metrics.png, figure4.png (sensitivity)

Statistics are over the random members (the paper's population), or over
every member where there are none (a sensitivity study).
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np
from absl import logging

from bswap import files
from bswap.scoring import metrics as metrics_lib
from bswap.study import population as population_lib
from bswap.study import stats
from bswap.study import trained

TABLE_FIELDS = (
  'metric',
  'k',
  'sign',
  'n',
  'rho',
  'rho_low',
  'rho_high',
  'tau',
  'tau_low',
  'tau_high',
  'partial_rho',
  'top1_error',
  'top5_error',
  'regret1',
  'regret5',
)


def metric_columns(names, ks) -> list[tuple[str, str, int, int]]:
  """(column, metric, k, sign) of every metric: at initialisation (k 0), then after k steps."""
  cols = [(n, n, 0, metrics_lib.get(n).sign) for n in names]
  cols += [(trained.column(n, k), n, k, trained.SIGN) for k in ks for n in trained.NAMES]
  return cols


def study_csv(rows: list[dict]) -> str:
  fields = list(rows[0])
  out = io.StringIO()
  writer = csv.DictWriter(out, fields, lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
  return out.getvalue()


def population_rows(rows: list[dict]) -> list[dict]:
  randoms = [r for r in rows if r['kind'] == 'random']
  return randoms or rows


def table(rows: list[dict], columns, seed: int, samples: int) -> list[dict]:
  pop = population_rows(rows)
  error = np.array([r['final_error'] for r in pop])
  params = np.array([r['params'] for r in pop])
  out = []
  for col, name, k, sign in columns:
    score = sign * np.array([r[col] for r in pop], np.float64)
    rg = stats.regret(score, error, 1)
    out.append(
      {
        'metric': name,
        'k': k,
        'sign': sign,
        'n': len(pop),
        'rho': stats.spearman(score, error),
        **dict(
          zip(
            ('rho_low', 'rho_high'),
            stats.bootstrap_interval(stats.spearman, score, error, seed, samples),
          )
        ),
        'tau': stats.kendall(score, error),
        **dict(
          zip(
            ('tau_low', 'tau_high'),
            stats.bootstrap_interval(stats.kendall, score, error, seed, samples),
          )
        ),
        'partial_rho': stats.partial_spearman(score, error, params),
        'top1_error': rg.top1_error,
        'top5_error': rg.top5_error,
        'regret1': rg.regret1,
        'regret5': rg.regret5,
      }
    )
  return out


def table_csv(entries: list[dict]) -> str:
  out = io.StringIO()
  writer = csv.DictWriter(out, TABLE_FIELDS, lineterminator='\n')
  writer.writeheader()
  for e in entries:
    writer.writerow({k: f'{v:.6g}' if isinstance(v, float) else v for k, v in e.items()})
  return out.getvalue()


def _f(x, digits=3) -> str:
  return 'n/a' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.{digits}f}'


def reference_errors(rows: list[dict]) -> dict[str, float]:
  pop = population_rows(rows)
  error = [r['final_error'] for r in pop]
  singles = [r['final_error'] for r in rows if r['kind'] == 'single']
  out = {'best': min(error), 'mean': float(np.mean(error))}
  if singles:
    out['best single'] = min(singles)
  return out


def table_md(entries: list[dict], rows: list[dict]) -> str:
  ref = reference_errors(rows)
  n = entries[0]['n'] if entries else 0
  lines = [
    f'Rank correlation with final test error over {n} members (higher metric = predicted '
    'better, so a good metric has negative rho); 95% bootstrap intervals in brackets. '
    'Errors in %: ' + ', '.join(f'{k} {v:.2f}' for k, v in ref.items()) + '.',
    '',
    '| metric | k | Spearman rho | Kendall tau | rho given params | top-1 error | best of top 5 |',
    '|---|---|---|---|---|---|---|',
  ]
  for e in entries:
    lines.append(
      f'| {e["metric"]} | {e["k"] or "init"} '
      f'| {_f(e["rho"])} [{_f(e["rho_low"], 2)}, {_f(e["rho_high"], 2)}] '
      f'| {_f(e["tau"])} [{_f(e["tau_low"], 2)}, {_f(e["tau_high"], 2)}] '
      f'| {_f(e["partial_rho"])} | {_f(e["top1_error"], 2)} (+{_f(e["regret1"], 2)}) '
      f'| {_f(e["top5_error"], 2)} (+{_f(e["regret5"], 2)}) |'
    )
  return '\n'.join(lines) + '\n'


def _label(e: dict) -> str:
  return e['metric'] if not e['k'] else f'{e["metric"]}@{e["k"]}'


def summary(entries: list[dict]) -> str:
  by_rho = min((e for e in entries if np.isfinite(e['rho'])), key=lambda e: e['rho'], default=None)
  by_regret = min(entries, key=lambda e: (e['regret1'], e['regret5']), default=None)
  if by_rho is None or by_regret is None:
    return 'Study: no metric has a defined rank correlation (all errors equal?)'
  return (
    f'Study: best metric by rho {_label(by_rho)} (rho {by_rho["rho"]:.3f}, '
    f'[{by_rho["rho_low"]:.2f}, {by_rho["rho_high"]:.2f}]); by regret {_label(by_regret)} '
    f'(top-1 pick {by_regret["top1_error"]:.2f}% against the best '
    f'{by_regret["top1_error"] - by_regret["regret1"]:.2f}%)'
  )


def write(config, workdir: str, rows: list[dict], names, ks) -> dict[str, str]:
  """Renders every output in memory, then writes each whole; logs the summary line."""
  from bswap.study import figures  # matplotlib only when pictures are drawn

  columns = metric_columns(names, ks)
  entries = table(rows, columns, config.seed, config.study.bootstrap_samples)
  outputs = {
    'study.csv': study_csv(rows),
    'table1.csv': table_csv(entries),
    'table1.md': table_md(entries, rows),
  }
  if config.study.sensitivity:
    skel = population_lib.skeleton(config)
    outputs['figure4.png'] = figures.figure4(rows, skel, config.study.substitute)
  else:
    outputs['figure2.png'] = figures.figure2(rows, entries, columns)
  outputs['metrics.png'] = figures.metrics_figure(rows, entries, columns)
  paths = {n: files.write(os.path.join(workdir, n), d) for n, d in outputs.items()}
  line = summary(entries)
  logging.info('%s', line)
  for path in paths.values():
    logging.info('Wrote %s', path)
  return paths
