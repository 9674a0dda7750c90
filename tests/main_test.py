"""`python -m bswap.main`: the README's main command on the smoke config."""

import json
import os
import re
import subprocess
import sys

import pytest

from bswap import main


def run_main(workdir, *flags):
  """`python -m bswap.main` on the 200K smoke config in a subprocess."""
  command = [sys.executable, '-m', 'bswap.main', '--config=configs/cifar_200k.py:smoke']
  command += [f'--workdir={workdir}', *flags]
  return subprocess.run(command, capture_output=True, text=True)


def test_default_workdir_follows_the_config_name():
  assert main.default_workdir('configs/cifar_400k.py') == os.path.join('workdir', 'cifar_400k')
  assert main.default_workdir('configs/cifar_200k.py:smoke') == os.path.join(
    'workdir', 'cifar_200k_smoke'
  )


@pytest.mark.slow
def test_smoke_search_runs_as_a_module(tmp_path):
  result = run_main(tmp_path, '--config.search.num_candidates=3', '--config.log_every_seconds=0')
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((tmp_path / 'best_genotype.json').read_text())
  assert record['settings']['num_candidates'] == 3
  assert 'Best of 3' in result.stderr
  # Off a terminal: plain progress lines, no bar, no library noise, no config dump.
  assert '\r' not in result.stderr
  assert re.search(r'scoring: candidate 3/3 \| [\d.]+ candidates/s \| ETA', result.stderr)
  assert "Unable to initialize backend 'tpu'" not in result.stderr
  assert 'num_candidates: 3' not in result.stderr


def test_the_config_is_logged_at_debug_verbosity(tmp_path):
  # An unknown stage fails right after the config is logged: no search needed.
  result = run_main(tmp_path, '--config.search.num_candidates=3', '--config.stage=x', '-v=1')
  assert 'num_candidates: 3' in result.stderr


def test_unknown_stage_is_a_clear_error(tmp_path):
  result = run_main(tmp_path, '--config.stage=distill')
  assert result.returncode != 0
  assert "--config.stage='distill' is not available; choose one of" in result.stderr
  assert 'search' in result.stderr.split('choose one of')[-1]


def test_bad_input_exits_with_the_message_not_a_traceback(tmp_path):
  result = run_main(tmp_path, f'--config.data.source={tmp_path / "missing"}')
  assert result.returncode == 1
  assert 'error: data source' in result.stderr and 'no such file or directory' in result.stderr
  assert 'Traceback' not in result.stderr
