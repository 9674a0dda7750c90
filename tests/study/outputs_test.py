"""A study's tables and pictures from made-up rows (no training): they agree with the stats."""

import csv
import io

import numpy as np
import pytest
from PIL import Image

from bswap.study import outputs
from bswap.study import stats
from bswap.study import trained
from configs import study_400k
from configs import study_sensitivity


def _rows(kinds, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for i, kind in enumerate(kinds):
    error = float(rng.uniform(5, 10))
    row = {
      'index': i,
      'kind': kind,
      'genotype': 'Conv DConv Conv',
      'note': {'single': 'DConv', 'substituted': str(max(i - 1, 0))}.get(kind, ''),
      'params': int(rng.integers(40_000, 60_000)),
      'macs': 1,
      'fisher_potential': float(-error + rng.normal()),  # a good metric: higher, lower error
    }
    row.update({c: float(rng.normal()) for c in trained.columns((1, 2))})
    row.update({'final_error': error, 'best_error': error - 0.1, 'train_seconds': 1.0})
    rows.append(row)
  return rows


def test_a_population_study_table_agrees_with_the_statistics(tmp_path, caplog):
  config = study_400k.get_config('smoke')
  rows = _rows(['random'] * 12 + ['single', 'named'])
  caplog.set_level('INFO')
  paths = outputs.write(config, str(tmp_path), rows, ['fisher_potential'], [1, 2])
  assert set(paths) == {'study.csv', 'table1.csv', 'table1.md', 'figure2.png', 'metrics.png'}
  table = list(csv.DictReader(io.StringIO((tmp_path / 'table1.csv').read_text())))
  assert len(table) == 1 + 2 * len(trained.NAMES)
  first = table[0]
  randoms = rows[:12]  # the statistics are over the random members only
  score = [r['fisher_potential'] for r in randoms]
  error = [r['final_error'] for r in randoms]
  assert int(first['n']) == 12
  assert float(first['rho']) == pytest.approx(stats.spearman(score, error), rel=1e-5)
  assert float(first['rho']) < -0.5 and float(first['rho_low']) <= float(first['rho'])
  assert float(first['top1_error']) == pytest.approx(error[int(np.argmax(score))], rel=1e-5)
  assert 'best metric by rho fisher_potential' in caplog.text
  study = list(csv.DictReader(io.StringIO((tmp_path / 'study.csv').read_text())))
  assert [float(r['final_error']) for r in study] == [r['final_error'] for r in rows]
  md = (tmp_path / 'table1.md').read_text()
  assert 'best single' in md and '| fisher_potential | init |' in md
  for name in ('figure2.png', 'metrics.png'):
    with Image.open(tmp_path / name) as image:
      assert image.format == 'PNG'


def test_a_sensitivity_study_draws_figure4(tmp_path):
  config = study_sensitivity.get_config('smoke')
  rows = _rows(['single', 'substituted', 'substituted', 'substituted'])
  paths = outputs.write(config, str(tmp_path), rows, ['fisher_potential'], [1, 2])
  assert 'figure4.png' in paths and 'figure2.png' not in paths
  with Image.open(tmp_path / 'figure4.png') as image:
    assert image.format == 'PNG'
  assert int(next(csv.DictReader(open(tmp_path / 'table1.csv')))['n']) == 4  # every member
