"""Training runs: resume after a stop or a kill, divergence, a student from its teacher.

Tiny networks (WRN-10-1 at 8 px, batch 8), on the 4 fake CPU devices of conftest where
a test needs them (`devices(4)`).
"""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from bswap import parallel
from bswap.nets import genotype as genotype_lib
from bswap.train import loop
from tests.train.helpers import TINY
from tests.train.helpers import assert_trees_close
from tests.train.helpers import saved_variables
from tests.train.helpers import tiny_config

# ----------------------------------------------------------------------------
# Failing early.


@pytest.mark.devices(4)
def test_a_batch_that_does_not_divide_across_devices_is_a_clear_error(tmp_path):
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match='batch size 6 does not divide across 4 devices'):
    parallel.check_divisible(6, mesh)
  with pytest.raises(ValueError, match=r'batch size 6 does not divide across 4 devices.*4 or 8'):
    loop.fit(tiny_config(batch_size=6), str(tmp_path), TINY)


def test_bad_dtype_or_conv_impl_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="'float16' is not one of float32, bfloat16"):
    loop.fit(tiny_config(dtype='float16'), str(tmp_path), TINY)
  with pytest.raises(ValueError, match="conv_impl must be 'auto', 'xla' or 'fast'"):
    loop.fit(tiny_config(conv_impl='cudnn'), str(tmp_path), TINY)


@pytest.mark.platform('cpu')
def test_auto_conv_impl_is_fast_on_cpu():
  mesh = parallel.make_mesh()
  assert loop.conv_impl(tiny_config(), mesh) == 'fast'
  assert loop.conv_impl(tiny_config(conv_impl='xla'), mesh) == 'xla'


# ----------------------------------------------------------------------------
# Whole runs: resume, divergence, teacher then student.


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """3 epochs of 4 steps without interruption: the reference for the resume tests."""
  config = tiny_config(epochs=3, steps_per_call=2)  # 2 steps per call: the lax.scan path
  workdir = tmp_path_factory.mktemp('uninterrupted')
  summary = loop.fit(config, str(workdir / 'run'), TINY)
  return summary, saved_variables(workdir / 'run'), workdir / 'run'


@pytest.mark.slow
def test_a_run_writes_metrics_curves_and_checkpoints(uninterrupted):
  summary, _, run_dir = uninterrupted
  assert summary.step == 12 and summary.epoch == 3
  records = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['epoch'] for r in records] == [1, 2, 3]
  for r in records:
    for key in ('train_loss', 'train_error', 'test_loss', 'test_error', 'lr', 'images_per_sec'):
      assert np.isfinite(r[key]), (key, r)
    assert r['test_error'] in {100 * k / 32 for k in range(33)}  # all 32 test images scored
  assert summary.test_error == records[-1]['test_error']
  assert (run_dir / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert sorted(os.listdir(run_dir / 'checkpoints')) == ['12', '8']  # keep_checkpoints = 2
  assert genotype_lib.load(run_dir / 'genotype.json') == TINY


@pytest.mark.slow
def test_runs_stopped_mid_epoch_or_killed_resume_to_the_uninterrupted_parameters_within_1e_6(
  uninterrupted, tmp_path, monkeypatch
):
  _, expected, _ = uninterrupted
  run_dir = str(tmp_path / 'run')
  checkpoints = lambda: sorted(map(int, os.listdir(os.path.join(run_dir, 'checkpoints'))))
  # A graceful stop in the middle of epoch 2 checkpoints step 6.
  stopped = loop.fit(tiny_config(epochs=3, max_steps=6, steps_per_call=2), run_dir, TINY)
  assert (stopped.step, stopped.epoch) == (6, 1.5)
  assert checkpoints() == [4, 6]

  # A kill after epoch 3's steps, before its checkpoint: step 8 is the latest.
  real, calls = loop.test_metrics, []

  def killed_in_epoch_3(run, state):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt('simulated kill')
    return real(run, state)

  monkeypatch.setattr(loop, 'test_metrics', killed_in_epoch_3)
  with pytest.raises(KeyboardInterrupt):
    loop.fit(tiny_config(epochs=3, steps_per_call=2), run_dir, TINY)
  assert checkpoints() == [6, 8]
  monkeypatch.setattr(loop, 'test_metrics', real)

  summary = loop.fit(tiny_config(epochs=3, steps_per_call=2), run_dir, TINY)
  assert summary.step == 12
  assert_trees_close(saved_variables(run_dir), expected, rtol=1e-6, atol=1e-7)
  records = (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(r)['epoch'] for r in records] == [1, 1.5, 2, 3]  # epoch 3 once


@pytest.mark.slow
def test_a_non_finite_loss_stops_and_keeps_the_last_checkpoint(uninterrupted, tmp_path):
  _, good, finished = uninterrupted
  run_dir = str(tmp_path / 'run')
  shutil.copytree(finished, run_dir)
  # One more epoch at an infinite learning rate: step 12 is finite, step 13 is not.
  with pytest.raises(ValueError, match=r'non-finite loss nan at epoch 4, step 13.*step 12'):
    loop.fit(tiny_config(epochs=4, lr=float('inf')), run_dir, TINY)
  assert sorted(os.listdir(os.path.join(run_dir, 'checkpoints'))) == ['12', '8']
  assert_trees_close(saved_variables(run_dir), good, rtol=0, atol=0)


@pytest.mark.slow
def test_a_student_learns_from_the_teacher_checkpoint(uninterrupted, tmp_path):
  # The uninterrupted run trained WRN-10-1, the teacher tiny_config describes.
  _, teacher_variables, teacher_run = uninterrupted
  config = tiny_config(epochs=1)
  student_dir = str(tmp_path / 'student')
  student = loop.fit(config, student_dir, genotype_lib.uniform('DConv', 10, 1), str(teacher_run))
  assert student.run_dir == student_dir
  record = json.loads((tmp_path / 'student' / 'metrics.jsonl').read_text())
  assert record['train_at'] > 0
  np.testing.assert_allclose(
    record['train_loss'], record['train_ce'] + 1000.0 * record['train_at'], rtol=1e-4
  )
  assert_trees_close(saved_variables(teacher_run), teacher_variables, rtol=0, atol=0)


def test_distillation_settings_are_checked_before_any_work(tmp_path):
  with pytest.raises(ValueError, match=r'kd_alpha=0.5 distils from a teacher.*teacher_checkpoint'):
    loop.fit(tiny_config(kd_alpha=0.5), str(tmp_path), TINY)
  with pytest.raises(ValueError, match=r'kd_alpha must be in \[0, 1\].*got 1.5'):
    loop.fit(tiny_config(kd_alpha=1.5), str(tmp_path), TINY)
  with pytest.raises(ValueError, match='kd_temperature must be positive; got 0'):
    loop.fit(tiny_config(kd_temperature=0.0), str(tmp_path), TINY)


# ----------------------------------------------------------------------------
# Nothing non-finite is saved; SIGTERM saves and stops (issue 12).


def test_a_divergence_at_a_save_boundary_saves_and_records_nothing(uninterrupted, tmp_path):
  _, good, finished = uninterrupted
  run_dir = str(tmp_path / 'run')
  shutil.copytree(finished, run_dir)
  records = (tmp_path / 'run' / 'metrics.jsonl').read_text()
  # Step 13's loss is computed before its update (finite); the update makes the parameters
  # non-finite, and step 13 is where max_steps saves.
  config = tiny_config(epochs=4, max_steps=13, lr=float('inf'))
  message = r'after step 13 are non-finite.*last good checkpoint is step 12'
  with pytest.raises(ValueError, match=message):
    loop.fit(config, run_dir, TINY)
  assert sorted(os.listdir(os.path.join(run_dir, 'checkpoints'))) == ['12', '8']
  assert (tmp_path / 'run' / 'metrics.jsonl').read_text() == records
  assert_trees_close(saved_variables(run_dir), good, rtol=0, atol=0)
  # A rerun resumes the good step 12 and refuses again, naming it.
  with pytest.raises(ValueError, match=r'non-finite.*last good checkpoint is step 12'):
    loop.fit(config, run_dir, TINY)


def test_a_run_without_a_checkpoint_says_so_when_it_diverges(tmp_path):
  with pytest.raises(ValueError, match=r'non-finite.*No checkpoint has been saved in .* yet'):
    loop.fit(tiny_config(epochs=1, lr=float('inf')), str(tmp_path / 'run'), TINY)


def test_sigterm_mid_epoch_saves_and_the_rerun_ends_bitwise_equal(
  uninterrupted, tmp_path, monkeypatch
):
  _, expected, _ = uninterrupted
  run_dir = str(tmp_path / 'run')
  real, calls = loop.Run.train_call, []

  def train_call(self, state, length):
    fn = real(self, state, length)

    def call(*args):
      calls.append(length)
      if len(calls) == 3:  # the first call of epoch 2 (2 steps per call, 4 per epoch)
        os.kill(os.getpid(), signal.SIGTERM)
      return fn(*args)

    return call

  monkeypatch.setattr(loop.Run, 'train_call', train_call)
  config = tiny_config(epochs=3, steps_per_call=2)
  with pytest.raises(loop.Stopped, match=r'stopped by SIGTERM at step 6: saved a checkpoint'):
    loop.fit(config, run_dir, TINY)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is undone
  assert sorted(map(int, os.listdir(os.path.join(run_dir, 'checkpoints')))) == [4, 6]
  monkeypatch.setattr(loop.Run, 'train_call', real)
  summary = loop.fit(config, run_dir, TINY)
  assert summary.step == 12
  assert_trees_close(saved_variables(run_dir), expected, rtol=0, atol=0)


def test_the_run_directory_records_command_config_and_versions(uninterrupted):
  _, _, run_dir = uninterrupted
  config = json.loads((run_dir / 'config.json').read_text())
  assert config['train']['epochs'] == 3 and config['model']['width'] == 1
  (start,) = [json.loads(line) for line in (run_dir / 'starts.jsonl').read_text().splitlines()]
  assert start['step'] == 0 and start['pid'] == os.getpid() and start['config_changes'] == {}
  assert set(start['versions']) == {'python', 'bswap', 'jax', 'flax', 'optax'}
  assert 'pytest' in start['command'] or 'python' in start['command']
