"""python -m bswap.report: the table from fake run directories, and figure3.png."""

import csv
import io
import json
import statistics

import pytest

from bswap import report
from bswap.nets import accounting
from bswap.nets import genotype as genotype_lib
from tests import fake_runs

WRN_16_1 = genotype_lib.uniform('Conv', 16, 1)
WRN_16_2 = genotype_lib.uniform('Conv', 16, 2)
GN = genotype_lib.uniform('DConv', 40, 2)
SEARCHED = [  # what two seeds' searches at 400K chose
  genotype_lib.Genotype(('DConvG2',) * 9 + ('DConv',) * 9, 'wrn', 40, 2),
  genotype_lib.Genotype(('DConvG4',) * 9 + ('G4B2',) * 9, 'wrn', 40, 2),
]
RANDOM = genotype_lib.Genotype(('ConvB4',) * 9 + ('A2B2',) * 9, 'wrn', 40, 2)


def _search_record(workdir, genotype, budget):
  count = accounting.count(genotype)
  record = {
    'genotype': genotype.to_dict(),
    'params': count.params,
    'macs': count.macs,
    'score': 1.0,
    'settings': {'budget': budget, 'num_classes': 10, 'data': {'source': 'cifar10'}},
  }
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'best_genotype.json').write_text(json.dumps(record))


@pytest.fixture
def runs(tmp_path):
  """Comparators with 3 and 2 seeds, two BlockSwap seeds, a random student, an evaluated
  G(N) student, a teacher, and a search nobody trained."""
  root = tmp_path / 'runs'
  errors = {'wrn_16_1': [7.5, 7.1, 7.3], 'wrn_16_2': [4.9, 4.7], 'blockswap': [4.3, 4.1]}
  for seed, error in enumerate(errors['wrn_16_1']):
    fake_runs.write_metrics(root / f'wrn_16_1_s{seed}' / 'student', [50.0, error], WRN_16_1)
  for seed, error in enumerate(errors['wrn_16_2']):
    fake_runs.write_metrics(root / f'wrn_16_2_s{seed}' / 'student', [40.0, error], WRN_16_2)
  for seed, (genotype, error) in enumerate(zip(SEARCHED, errors['blockswap'])):
    _search_record(root / f'cifar_400k_s{seed}', genotype, 400_000)
    fake_runs.write_metrics(root / f'cifar_400k_s{seed}' / 'student', [30.0, error], genotype)
  fake_runs.write_metrics(root / 'random' / 'student', [4.8], RANDOM)
  config = {'train': {'genotype': 'random'}, 'search': {'budget': 400_000}}
  (root / 'random' / 'config.json').write_text(json.dumps(config))
  fake_runs.write_metrics(root / 'gn' / 'student', [6.0], GN)
  evaluated = {'params': 1234, 'macs': 5678, 'test_error': 5.5, 'data': 'cifar10'}
  (root / 'gn' / 'student' / 'eval.json').write_text(json.dumps(evaluated))
  fake_runs.write_metrics(root / 'teacher' / 'teacher', [4.0], genotype_lib.uniform('Conv'))
  _search_record(root / 'cifar_200k', SEARCHED[0], 200_000)
  return root, errors


def test_the_table_groups_seeds_and_gives_mean_and_std(runs, tmp_path):
  root, errors = runs
  rows = report.report([str(root)], str(tmp_path / 'out'), paper='cifar10')
  by = {(r.method, r.network): r for r in rows}
  assert set(by) == {
    ('WRN', 'WRN-16-1'),
    ('WRN', 'WRN-16-2'),
    ('BlockSwap', 'WRN-40-2 mixed'),
    ('BlockSwap (search)', 'WRN-40-2 mixed'),
    ('random', 'WRN-40-2 mixed'),
    ('G(N) throughout', 'WRN-40-2 G(N)'),
    ('teacher', 'WRN-40-2'),
  }
  for key, name in ((('WRN', 'WRN-16-1'), 'wrn_16_1'), (('WRN', 'WRN-16-2'), 'wrn_16_2')):
    row = by[key]
    assert row.error == pytest.approx(statistics.fmean(errors[name]))
    assert row.std == pytest.approx(statistics.stdev(errors[name]))
    assert len(row.runs) == len(errors[name])
  assert by['WRN', 'WRN-16-1'].params == accounting.count(WRN_16_1).params == 175_066
  assert by['WRN', 'WRN-16-1'].macs == accounting.count(WRN_16_1).macs
  blockswap = by['BlockSwap', 'WRN-40-2 mixed']  # two seeds' searches: two networks, one budget
  assert blockswap.error == pytest.approx(4.2) and len(blockswap.runs) == 2
  counts = [accounting.count(g).params for g in SEARCHED]
  assert blockswap.params == round(statistics.fmean(counts))
  assert by['random', 'WRN-40-2 mixed'].error == 4.8
  gn = by['G(N) throughout', 'WRN-40-2 G(N)']  # eval.json wins over metrics.jsonl
  assert (gn.params, gn.macs, gn.error, gn.std) == (1234, 5678, 5.5, 0.0)
  search = by['BlockSwap (search)', 'WRN-40-2 mixed']
  assert search.error is None and search.params == counts[0]
  assert by['teacher', 'WRN-40-2'].params == 2_243_546


def test_report_writes_the_table_csv_and_figure(runs, tmp_path, capsys):
  root, _ = runs
  out = tmp_path / 'out'
  assert report.main([str(root), '--out', str(out)]) == 0
  printed = capsys.readouterr().out
  assert '| WRN | WRN-16-1 | cifar10 | 175,066 |' in printed
  assert (out / 'report.md').read_text() in printed
  table = list(csv.DictReader(io.StringIO((out / 'report.csv').read_text())))
  assert len(table) == 7 and {r['seeds'] for r in table} == {'1', '2', '3'}
  png = (out / 'figure3.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 20_000


def test_the_papers_numbers_are_bundled_for_both_datasets():
  cifar = report.paper_rows({'cifar10'})
  assert {(r['network'], r['test_error']) for r in cifar} >= {
    ('WRN-16-2', 4.78),
    ('WRN-40-2', 3.96),
  }
  assert [r['test_error'] for r in cifar if r['method'] == 'BlockSwap'] == [
    5.17,
    4.68,
    4.45,
    4.21,
    4.17,
    3.79,
  ]
  imagenet = report.paper_rows({'imagenet'})
  assert {r['network'] for r in imagenet} == {
    'ResNet-34',
    'BlockSwap 3.1M',
    'BlockSwap 8.1M',
    'ResNet-18',
    'ResNet-34-G(N)',
  }
  assert report.paper_rows(set()) == []


def test_a_method_given_by_name_wins_and_bad_dirs_are_clear_errors(runs, tmp_path, capsys):
  root, _ = runs
  rows = report.report([f'plain={root / "wrn_16_2_s0"}'], str(tmp_path / 'out'), paper='none')
  assert [r.method for r in rows] == ['plain']
  (tmp_path / 'empty').mkdir()
  assert report.main([str(tmp_path / 'empty'), '--out', str(tmp_path / 'o')]) == 2
  assert 'holds no run' in capsys.readouterr().err
  assert report.main([str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]) == 2
  assert 'is not a directory' in capsys.readouterr().err
