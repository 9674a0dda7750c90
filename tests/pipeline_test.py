"""The stages: which network each trains, where, and the search-then-train pipeline."""

import json
import shutil
import subprocess
import sys

import pytest

from bswap import pipeline
from bswap.nets import genotype as genotype_lib
from bswap.search import record as record_lib
from configs import cifar_400k
from tests.train.helpers import TINY
from tests.train.helpers import tiny_config


def test_a_student_without_a_genotype_says_to_run_the_search(tmp_path):
  config = tiny_config(genotype=None)
  config.stage = 'student'
  with pytest.raises(ValueError, match='run the search first'):
    pipeline.run(config, str(tmp_path))


def test_a_missing_teacher_checkpoint_is_a_clear_error(tmp_path):
  config = tiny_config(teacher_checkpoint=str(tmp_path / 'nowhere'))
  config.stage = 'student'
  with pytest.raises(ValueError, match='no checkpoint found'):
    pipeline.run(config, str(tmp_path))


@pytest.mark.slow
def test_the_teacher_stage_trains_in_workdir_teacher(tmp_path):
  config = tiny_config(epochs=1, max_steps=1)
  config.stage = 'teacher'
  summary = pipeline.run(config, str(tmp_path))
  assert summary.run_dir == str(tmp_path / 'teacher') and summary.step == 1
  assert genotype_lib.load(tmp_path / 'teacher' / 'genotype.json') == TINY


@pytest.mark.slow
def test_smoke_pipeline_runs_as_a_module(tmp_path):
  """The README's pipeline command on the smoke config: search, then train the winner."""
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'bswap.main',
      '--config=configs/cifar_400k.py:smoke',
      '--config.stage=pipeline',
      f'--workdir={tmp_path}',
      '--config.search.num_candidates=1',
    ],
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  best = genotype_lib.load(tmp_path / 'best_genotype.json')
  assert genotype_lib.load(tmp_path / 'student' / 'genotype.json') == best
  for name in ('metrics.jsonl', 'curves.png', 'checkpoints/8'):
    assert (tmp_path / 'student' / name).exists(), name
  records = (tmp_path / 'student' / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(r)['epoch'] for r in records] == [1, 2]
  assert 'Finished' in result.stderr and 'Traceback' not in result.stderr
  # A rerun of the pipeline (after a preemption) reuses this search...
  config = cifar_400k.get_config('smoke')
  config.search.num_candidates = 1
  assert pipeline.search_done(config, str(tmp_path))
  # ... but not one with other settings.
  config.search.budget = 60_000
  assert not pipeline.search_done(config, str(tmp_path))


# ----------------------------------------------------------------------------
# Refusals come before any file is written (issue 12, cases 2 and 7).


def _tree(path):
  return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob('*')) if p.is_file()}


def test_a_pipeline_rerun_with_another_search_setting_is_refused_before_writing(tmp_path):
  # A finished pipeline's workdir: its search record and the student trained from it.
  config = tiny_config(genotype=None)
  config.stage = 'pipeline'
  best = record_lib.Scored(0, TINY, 1, 1, 1.0, (1.0,))
  (tmp_path / 'best_genotype.json').write_text(
    record_lib.SearchRecord.of(config, best, 1.0).to_json()
  )
  (tmp_path / 'student').mkdir()
  (tmp_path / 'student' / 'genotype.json').write_text(genotype_lib.dumps_json(TINY))
  before = _tree(tmp_path)
  config.seed = 1
  message = r'student holds the student of an earlier search \(settings seed: 0 -> 1\)'
  with pytest.raises(ValueError, match=message):
    pipeline.run(config, str(tmp_path))
  assert _tree(tmp_path) == before
  # A teacher that is not there is refused before the search too.
  config.seed = 0
  config.train.teacher_checkpoint = str(tmp_path / 'nowhere')
  shutil.rmtree(tmp_path / 'student')
  with pytest.raises(ValueError, match='no checkpoint found'):
    pipeline.run(config, str(tmp_path / 'new'))
  assert not (tmp_path / 'new').exists()


def test_a_failed_student_run_leaves_nothing_behind(tmp_path):
  config = tiny_config(teacher_checkpoint=str(tmp_path / 'no-teacher'))
  config.stage = 'student'
  with pytest.raises(ValueError, match='no checkpoint found'):
    pipeline.run(config, str(tmp_path / 'work'))
  config = tiny_config()
  config.stage = 'student'
  config.data.source = str(tmp_path / 'no-data')
  with pytest.raises(ValueError, match='no such file or directory'):
    pipeline.run(config, str(tmp_path / 'work'))
  # No student/genotype.json (nor anything else) to make a run of another genotype refuse.
  assert not (tmp_path / 'work').exists()
