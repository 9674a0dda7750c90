"""launch/accelerator_check.sh: its plan (--dry-run), and a whole --quick run on this CPU."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'launch' / 'accelerator_check.sh'
STEPS = [
  'tests',
  'bench_fast_cold',
  'bench_fast_warm',
  'bench_batched_cold',
  'bench_batched_warm',
  'train_teacher_float32',
  'train_teacher_bfloat16',
  'train_student_at',
]

pytestmark = pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')


def _run(tmp_path, *args):
  # The repository under test first on the path, whatever is installed.
  env = {**os.environ, 'PYTHON': sys.executable, 'PYTHONPATH': str(ROOT)}
  out = tmp_path / 'out'
  result = subprocess.run(
    ['bash', str(SCRIPT), *args, str(out)], capture_output=True, text=True, env=env, cwd=ROOT
  )
  return result, json.loads((out / 'summary.json').read_text())


def test_dry_run_prints_the_plan_and_a_summary_of_planned_steps(tmp_path):
  result, summary = _run(tmp_path, '--dry-run')
  assert result.returncode == 0, result.stderr
  plan = [line for line in result.stdout.splitlines() if line.startswith('+ [')]
  assert [line[3:].split(',')[0] for line in plan] == STEPS
  assert '--candidates 1000 --budget 400000 --batch 128 --engine batched' in result.stdout
  assert '--chunk' not in result.stdout
  assert '--config.train.dtype=bfloat16' in result.stdout
  assert summary['dry_run'] and list(summary['steps']) == STEPS
  assert {s['status'] for s in summary['steps'].values()} == {'planned'}
  assert summary['misses'] == []


def test_an_unknown_option_is_refused():
  result = subprocess.run(['bash', str(SCRIPT), '--fast'], capture_output=True, text=True)
  assert result.returncode == 2 and 'unknown option --fast' in result.stderr


# About 7.5 minutes on a 2-core CPU (it runs the engine tests, four benchmarks and
# three trainings): more than CI's whole budget, so it runs when asked for.
@pytest.mark.slow
@pytest.mark.skipif(
  os.environ.get('BSWAP_ACCELERATOR_CHECK') != '1',
  reason='a whole accelerator_check.sh --quick run; set BSWAP_ACCELERATOR_CHECK=1 to run it',
)
def test_quick_runs_every_step_on_the_cpu_and_the_engines_agree(tmp_path):
  result, summary = _run(tmp_path, '--quick')
  assert result.returncode == 0, result.stdout + result.stderr
  assert summary['misses'] == [], result.stdout
  assert {s['status'] for s in summary['steps'].values()} == {'ok'}
  assert summary['tests']['tests'] > 0 and summary['tests']['failures'] == 0
  fast, batched = summary['bench']['fast'], summary['bench']['batched']
  assert fast['warm']['candidates'] == batched['warm']['candidates'] == 4
  assert batched['warm']['best_score'] == pytest.approx(fast['warm']['best_score'], rel=1e-4)
  assert fast['warm']['compile_count'] < fast['cold']['compile_count']  # the cache is used
  assert all(v > 0 for v in summary['train_images_per_s'].values())
