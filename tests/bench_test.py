"""`python -m bswap.bench`: a timed search on a tiny config, its JSON, its flags and errors."""

import dataclasses
import json
import math

import jax
import pytest
from absl import flags

from bswap import bench
from bswap.nets import accounting
from bswap.nets import genotype as genotype_lib

# What the module's docstring promises in the JSON.
DOCUMENTED = {
  'device',
  'jax_version',
  'engine',
  'candidates',
  'wall_seconds',
  'candidates_per_second',
  'compile_count',
  'cache_hits',
  'compile_seconds',
  'peak_rss_bytes',
  'cpu_seconds',
  'init',
}
# WRN-10-2 at 8 px, 2 candidates; Cutout 4 (16 would blank an 8 px image and
# score every candidate 0); no persistent compile cache.
TINY = ['--budget', '50000', '--depth', '10', '--image-size', '8', '--batch', '8', '--cutout', '4']
TINY += ['--cache-dir', '']


@pytest.fixture(autouse=True)
def absl_flags_as_found():
  """bench.main marks absl's global flags parsed (for plain log lines); undone after."""
  parsed = flags.FLAGS.is_parsed()
  yield
  if not parsed:
    flags.FLAGS.unparse_flags()


def _main(capsys, *argv):
  code = bench.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.slow
def test_a_tiny_benchmark_writes_the_documented_json(capsys, tmp_path):
  path = tmp_path / 'out' / 'bench.json'
  code, out, _ = _main(capsys, '--candidates', '2', *TINY, '--json', str(path))
  assert code == 0
  result = json.loads(path.read_text())
  assert DOCUMENTED <= set(result)
  assert (result['candidates'], result['budget'], result['batch']) == (2, 50_000, 8)
  assert (result['network'], result['engine'], result['metric']) == (
    'WRN-10-2',
    'fast',
    'fisher_potential',
  )
  assert result['device_count'] == jax.device_count()
  assert result['jax_version'] == jax.__version__
  for key in ('wall_seconds', 'candidates_per_second', 'compile_seconds'):
    assert math.isfinite(result[key]) and result[key] >= 0, key
  assert result['wall_seconds'] >= result['search_seconds'] > 0
  assert isinstance(result['compile_count'], int) and result['peak_rss_bytes'] > 0
  # The best candidate is a WRN-10-2 inside the budget, scored on a visible batch.
  best = genotype_lib.Genotype(tuple(result['best_blocks']), 'wrn', 10, 2)
  assert 48_750 < accounting.count(best, 8).params < 51_250
  assert math.isfinite(result['best_score']) and result['best_score'] > 0
  assert out.startswith('fast engine on ')
  assert '2 WRN-10-2 candidates at 50,000 params, batch 8, fisher_potential' in out
  assert sorted(p.name for p in path.parent.iterdir()) == ['bench.json']


def test_a_config_file_with_flag_and_field_overrides(capsys, tmp_path):
  path = tmp_path / 'bench.json'
  code, _, _ = _main(
    capsys,
    '--config=configs/cifar_400k.py:smoke',
    '--config.search.threads=1',
    '--candidates',
    '1',
    '--json',
    str(path),
  )
  assert code == 0
  result = json.loads(path.read_text())
  # The smoke config's search (WRN-10-2, 50K, batch 8), with the two overrides.
  assert (result['network'], result['budget'], result['batch']) == ('WRN-10-2', 50_000, 8)
  assert (result['candidates'], result['threads']) == (1, 1)


@pytest.mark.parametrize(
  'argv, message',
  [
    (['--candidates', '0'], 'candidates'),
    (['--engine', 'turbo'], 'engine'),
    (['--no-such-flag'], 'no-such-flag'),
    (['--budget', '50000', 'extra'], 'unexpected arguments: extra'),
  ],
)
def test_a_bad_flag_returns_2_with_a_message(capsys, argv, message):
  code, out, err = _main(capsys, *argv)
  assert code == 2 and out == ''
  assert err.startswith('error: ') and message in err


@pytest.mark.parametrize(
  'argv, message',
  [
    (['--arch', 'resnet34', '--cutout', '4'], r'--cutout does not apply to this config'),
    (['--config=configs/teacher_wrn40_2.py'], 'must have a search section'),
    (['--config=configs/teacher_wrn40_2.py', '--candidates', '2'], 'must have a search section'),
  ],
)
def test_an_override_or_config_that_does_not_apply_is_a_clear_error(capsys, argv, message):
  code, out, err = _main(capsys, *argv)
  assert code == 2 and out == ''
  assert message in err and 'Traceback' not in err


def test_json_into_an_unwritable_place_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(bench, 'run', lambda *a: pytest.fail('benchmarked anyway'))
  (tmp_path / 'file').write_text('')
  code, _, err = _main(capsys, '--json', str(tmp_path / 'file' / 'out.json'))
  assert code == 2
  assert err.strip().startswith('error: cannot write to ') and 'is a file, not a folder' in err


@pytest.mark.slow
def test_verify_rescores_the_best_and_others_on_the_reference_path(capsys, tmp_path):
  path = tmp_path / 'bench.json'
  argv = ['--candidates', '4', *TINY, '--engine', 'batched', '--verify', '3', '--json', str(path)]
  code, out, _ = _main(capsys, *argv)
  assert code == 0
  result = json.loads(path.read_text())
  check = result['verify']
  assert (check['engine'], check['candidates']) == ('reference', 3)
  assert len(set(check['indices'])) == 3 and all(0 <= i < 4 for i in check['indices'])
  # float32 rounding only: the batched engine scores what the reference path does.
  assert check['max_relative_difference'] < 1e-5
  assert check['best_rescored'] == pytest.approx(result['best_score'], rel=1e-5)
  assert 'verified 3 candidates (the best and 2 others) on the reference path' in out


def test_verify_finds_a_wrong_score_and_names_its_candidate():
  from bswap import defaults
  from bswap.search import run as search_lib

  config = defaults.cifar_config(50_000)
  config.model.depth, config.data.image_size, config.data.cutout = 10, 8, 4
  config.data.source, config.data.synthetic_size = 'synthetic', 256
  config.search.batch_size, config.search.num_candidates = 8, 3
  config.search.compilation_cache_dir = ''
  ranked = search_lib.search(config).ranked
  wrong = ranked[1].index
  ranked[1] = dataclasses.replace(ranked[1], score=ranked[1].score * 1.01)
  check = bench.verify_scores(config, ranked, 3)
  assert check['worst_index'] == wrong
  assert check['max_relative_difference'] == pytest.approx(0.01, rel=1e-3)
  assert check['median_relative_difference'] < 1e-5


def test_verify_of_a_pool_metric_is_refused_before_the_work(capsys, monkeypatch):
  monkeypatch.setattr(bench, 'run', lambda *a: pytest.fail('benchmarked anyway'))
  code, _, err = _main(capsys, '--metric', 'rank_aggregate', '--verify', '2')
  assert code == 2
  assert '--verify: rank_aggregate has no reference path' in err
