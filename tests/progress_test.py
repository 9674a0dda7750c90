"""Progress off a terminal: plain log lines at the interval, with images/s and ETA, no '\\r'."""

import io
import logging as pylogging
import re

import pytest

from bswap import evaluate
from bswap import logs
from bswap import progress
from bswap.train import loop
from tests.train.helpers import TINY
from tests.train.helpers import tiny_config


class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class Terminal(io.StringIO):
  def isatty(self):
    return True


def _lines(caplog, prefix):
  return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def test_off_a_terminal_a_line_comes_every_interval_with_rate_and_eta(caplog):
  caplog.set_level(pylogging.INFO)
  clock, stream = Clock(), io.StringIO()
  shown = progress.Progress(
    100,
    desc='epoch 1/3',
    images_per_unit=8,
    after=200,
    every_seconds=10,
    stream=stream,
    clock=clock,
  )
  for _ in range(100):
    clock.now += 1.0  # one step a second
    shown.update(1, loss='0.5000')
  shown.close()
  lines = _lines(caplog, 'epoch 1/3')
  assert len(lines) == 10  # at 10, 20, ... 100 s
  assert lines[0] == 'epoch 1/3: step 10/100 | 8 images/s | loss 0.5000 | ETA 0:01:30 (run 0:04:50)'
  assert lines[-1].startswith('epoch 1/3: step 100/100 | 8 images/s')
  assert stream.getvalue() == ''  # no bar drawn off a terminal


def test_on_a_terminal_a_bar_and_no_lines(caplog):
  caplog.set_level(pylogging.INFO)
  stream = Terminal()
  with progress.Progress(5, desc='scoring', unit='candidate', every_seconds=0, stream=stream) as p:
    for _ in range(5):
      p.update(1)
  assert 'scoring' in stream.getvalue() and not _lines(caplog, 'scoring')


def test_a_resumed_loop_counts_its_rate_from_where_it_started(caplog):
  caplog.set_level(pylogging.INFO)
  clock = Clock()
  shown = progress.Progress(
    10, desc='e', initial=6, every_seconds=0, stream=io.StringIO(), clock=clock
  )
  clock.now = 2.0
  shown.update(2)
  assert _lines(caplog, 'e:') == ['e: step 8/10 | 1.00 steps/s | ETA 0:00:02']


def test_disabled_progress_is_silent_and_bad_intervals_are_refused(caplog):
  caplog.set_level(pylogging.INFO)
  with progress.Progress(3, desc='x', every_seconds=0, enabled=False, stream=Terminal()) as p:
    p.update(3)
  assert not _lines(caplog, 'x')
  with pytest.raises(ValueError, match='log_every_seconds must be >= 0'):
    progress.every_seconds({'log_every_seconds': -1})


def test_library_noise_is_recognised_and_bswap_lines_are_not():
  def record(path, level, msg):
    return pylogging.LogRecord('x', level, path, 1, msg, None, None)

  orbax = '/site-packages/orbax/checkpoint/checkpoint_manager.py'
  assert logs.is_noise(record(orbax, pylogging.INFO, 'Found %d checkpoint steps'))
  assert logs.is_noise(record(orbax, pylogging.WARNING, 'Given directory is read only=%s'))
  assert not logs.is_noise(record(orbax, pylogging.WARNING, 'Something is wrong'))
  tpu = "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so"
  assert logs.is_noise(record('/jax/_src/xla_bridge.py', pylogging.INFO, tpu))
  assert not logs.is_noise(record('/bswap/train/loop.py', pylogging.INFO, 'epoch 1/2 step 4'))


@pytest.mark.slow
def test_training_and_evaluation_log_plain_progress_lines_off_a_terminal(tmp_path, capfd, caplog):
  """A tiny run and its eval stage with stderr captured (not a terminal)."""
  caplog.set_level(pylogging.INFO)
  config = tiny_config(epochs=1)
  config.log_every_seconds = 0.0  # a line at every update
  loop.fit(config, str(tmp_path / 'student'), TINY)
  evaluate.evaluate(config, str(tmp_path))
  steps = _lines(caplog, 'epoch 1/1: step')
  assert len(steps) == 4  # 32 examples, batch 8
  pattern = r'epoch 1/1: step \d/4 \| [\d,]+ images/s \| loss \d+\.\d{4} \| ETA \d+:\d\d:\d\d'
  assert all(re.fullmatch(pattern, line) for line in steps), steps
  evaluations = _lines(caplog, 'evaluation: batch')
  assert len(evaluations) >= 2 and all('ETA' in line for line in evaluations)  # training, eval
  assert evaluations[-1].startswith('evaluation: batch 4/4')
  assert '\r' not in capfd.readouterr().err
