"""The study stage end to end on a tiny smoke study: outputs, resume after SIGKILL, shards.

Each study runs as `python -m bswap.main` in a subprocess (a real process to
kill), all sharing one persistent XLA cache so that only the first compiles.
"""

import csv
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from bswap.study import run as study_run
from configs import study_400k

ROOT = pathlib.Path(__file__).resolve().parents[2]
METRICS = 'fisher_potential,snip,synflow,zen'
FLAGS = [
  '--config=configs/study_400k.py:smoke',
  '--config.study.num_random=2',
  '--config.study.single_band=0.02',  # one single-blocktype student: G(N), 49,354 params
  '--config.study.ks=1,2',
  '--config.study.epochs=3',
  '--config.study.bootstrap_samples=50',
  # One metric of each path (Fisher's engine, the proxies' loss and forward-only block
  # pieces, a whole network): 'all' would add minutes of per-member compiles to CI.
  f'--config.study.metrics={METRICS}',
]


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  cache = tmp_path_factory.mktemp('xla')
  return {
    **os.environ,
    'JAX_COMPILATION_CACHE_DIR': str(cache),
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
    'PYTHONPATH': str(ROOT),
  }


def _start(workdir, env, *extra):
  command = [sys.executable, '-m', 'bswap.main', *FLAGS, f'--workdir={workdir}', *extra]
  return subprocess.Popen(
    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def _study(workdir, env, *extra) -> str:
  process = _start(workdir, env, *extra)
  out, _ = process.communicate(timeout=900)
  assert process.returncode == 0, out[-3000:]
  return out


def _rows(workdir):
  """study.csv's rows without the training time, the one column that varies run to run."""
  rows = list(csv.DictReader(io.StringIO((workdir / 'study.csv').read_text())))
  for row in rows:
    assert float(row.pop('train_seconds')) > 0
  return rows


@pytest.fixture(scope='module')
def reference(tmp_path_factory, env):
  workdir = tmp_path_factory.mktemp('study')
  log = _study(workdir, env)
  return workdir, log


@pytest.mark.slow
def test_a_study_writes_every_output_and_they_parse(reference):
  workdir, log = reference
  rows = _rows(workdir)
  assert [r['kind'] for r in rows] == ['random', 'random', 'single']
  assert [int(r['index']) for r in rows] == [0, 1, 2]
  assert rows[2]['genotype'] == 'DConv DConv DConv'
  for row in rows:
    errors = float(row['final_error']), float(row['best_error'])
    assert 0 <= errors[1] <= errors[0] <= 100
    assert np.isfinite(
      [float(row[c]) for c in ('fisher_potential', 'l2@2', 'grad_norm_abs@1')]
    ).all()
  table = list(csv.DictReader(io.StringIO((workdir / 'table1.csv').read_text())))
  config = study_400k.get_config('smoke')
  config.study.metrics = METRICS
  at_init = study_run.metric_names(config)
  assert at_init == METRICS.split(',')
  assert [(t['metric'], int(t['k'])) for t in table][: len(at_init) + 1] == [
    *((name, 0) for name in at_init),
    ('train_accuracy', 1),
  ]
  assert len(table) == len(at_init) + 4 * 2 and {t['n'] for t in table} == {'2'}
  assert all(row[name] != '' for row in rows for name in at_init)
  md = (workdir / 'table1.md').read_text()
  table_lines = [line for line in md.splitlines() if line.startswith('|')]
  assert len(table_lines) == 2 + len(table)  # header, rule, one line per entry
  for name in ('figure2.png', 'metrics.png'):
    with Image.open(workdir / name) as image:
      assert image.format == 'PNG' and image.size[0] > 200
  assert 'Study: best metric by rho' in log
  assert json.loads((workdir / 'study.json').read_text())['study']['num_random'] == 2


@pytest.mark.slow
def test_a_rerun_skips_finished_members_and_a_changed_config_is_refused(reference, env):
  workdir, _ = reference
  before = (workdir / 'study.csv').read_text()
  log = _study(workdir, env)
  assert '3 of them are done already: skipped' in log and 'Training' not in log
  assert (workdir / 'study.csv').read_text() == before
  process = _start(workdir, env, '--config.study.ks=1,3')
  out, _ = process.communicate(timeout=300)
  assert process.returncode != 0
  assert 'holds a study with other settings (study.ks)' in out


def _kill_during_training(workdir, env):
  """Starts a study and SIGKILLs it once a member has a checkpoint but no member.json."""
  process = _start(workdir, env)
  deadline = time.monotonic() + 600
  while time.monotonic() < deadline and process.poll() is None:
    for member in (workdir / 'members').glob('*'):
      steps = [p for p in (member / 'checkpoints').glob('*') if p.name.isdigit()]
      if steps and not (member / study_run.RESULT).exists():
        process.send_signal(signal.SIGKILL)
        process.communicate()
        return member
    time.sleep(0.02)
  process.kill()
  pytest.fail('the study ended before a member was caught between checkpoints')


@pytest.mark.slow
def test_sigkill_during_a_members_training_then_rerun_gives_the_same_study_csv(
  reference, env, tmp_path
):
  member = _kill_during_training(tmp_path, env)
  assert not (tmp_path / 'study.csv').exists()
  log = _study(tmp_path, env)
  # The killed member resumed from its checkpoint.
  assert re.search(rf'Restoring step \d+ from {re.escape(str(member / "checkpoints"))}', log), log
  assert _rows(tmp_path) == _rows(reference[0])


@pytest.mark.slow
def test_two_shards_give_the_same_study_csv_as_one_process(reference, env, tmp_path):
  log = _study(tmp_path, env, '--config.study.shard=0/2')
  assert 'not done yet' in log and not (tmp_path / 'study.csv').exists()
  assert sorted(p.name for p in (tmp_path / 'members').glob('*')) == ['0000', '0002']
  _study(tmp_path, env, '--config.study.shard=1/2')
  assert _rows(tmp_path) == _rows(reference[0])


def test_bad_shards_and_metric_names_fail_with_the_fix(tmp_path):
  from bswap.study import population

  with pytest.raises(ValueError, match='must be i/n'):
    population.shard([], '2/2')
  config = study_400k.get_config('smoke')
  config.study.metrics = 'fisher_potential,nope'
  with pytest.raises(ValueError, match="names 'nope'"):
    study_run.metric_names(config)
  config.study.metrics = 'rank_aggregate'  # a pool's ranking, not a member's score
  with pytest.raises(ValueError, match="'rank_aggregate', which is not a per-member metric"):
    study_run.metric_names(config)
  config.study.metrics = 'all'
  names = study_run.metric_names(config)
  assert 'rank_aggregate' not in names and {'fisher_potential', 'synflow', 'zico'} <= set(names)
  config.study.ks = '1,x'
  with pytest.raises(ValueError, match='positive step counts'):
    study_run.ks(config)


def test_the_settings_ignore_how_a_study_runs_but_not_what_it_computes(tmp_path):
  config = study_400k.get_config('smoke')
  study_run.check_settings(config, str(tmp_path))
  config.study.shard = '1/3'
  config.search.threads = 1
  study_run.check_settings(config, str(tmp_path))
  config.study.epochs = 5
  with pytest.raises(ValueError, match=r'other settings \(study.epochs\)'):
    study_run.check_settings(config, str(tmp_path))
