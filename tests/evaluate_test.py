"""--config.stage=eval: a smoke run's checkpoint evaluated alone gives what its training logged."""

import json

import numpy as np
import pytest

from bswap import evaluate
from bswap import pipeline
from bswap.nets import accounting
from bswap.train import loop
from tests.train.helpers import TINY
from tests.train.helpers import tiny_config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """One epoch (4 steps) of WRN-10-1 in workdir/student, tested on 32 synthetic images."""
  workdir = tmp_path_factory.mktemp('workdir')
  summary = loop.fit(tiny_config(epochs=1), str(workdir / 'student'), TINY)
  return workdir, summary


@pytest.mark.slow
def test_eval_reproduces_the_test_error_and_loss_training_logged(trained):
  workdir, summary = trained
  result = pipeline.run(_eval_config(), str(workdir))  # --config.stage=eval
  logged = json.loads((workdir / 'student' / 'metrics.jsonl').read_text().splitlines()[-1])
  assert result['test_error'] == logged['test_error'] == summary.test_error
  np.testing.assert_allclose(result['test_loss'], logged['test_loss'], rtol=1e-6)
  assert result['logged_test_error'] == logged['test_error']
  assert (result['step'], result['examples']) == (4, 32)
  assert 0 <= result['test_top5_error'] <= result['test_error']
  count = accounting.count(TINY, 8, 10)
  assert (result['params'], result['macs']) == (count.params, count.macs)
  assert result['images_per_sec'] > 0
  written = json.loads((workdir / 'student' / evaluate.FILE).read_text())
  assert written == result


def _eval_config(**train):
  config = tiny_config(epochs=1, **train)
  config.stage = 'eval'
  return config


def test_eval_names_its_run_by_the_workdir_and_refuses_other_data(trained, tmp_path):
  workdir, _ = trained
  step = evaluate.evaluate(_eval_config(), str(workdir / 'student' / 'checkpoints' / '4'))
  assert step['run_dir'] == str(workdir / 'student')
  config = _eval_config()
  config.model.num_classes = 5  # synthetic data: 5 classes
  with pytest.raises(ValueError, match=r'trained on 10 classes but synthetic has 5'):
    evaluate.evaluate(config, str(workdir))
  with pytest.raises(ValueError, match='no bswap checkpoint'):
    evaluate.evaluate(_eval_config(), str(tmp_path))
