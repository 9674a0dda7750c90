"""Checkpoints: save and restore, keep the last N, find a run's checkpoints, load a teacher."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import parallel
from bswap.train import checkpoint


def _state(scale=1.0):
  return {
    'params': {'dense': {'kernel': scale * jnp.arange(6.0).reshape(2, 3)}},
    'batch_stats': {'bn': {'mean': scale * jnp.ones(3)}},
    'step': jnp.int32(7),
  }


def _save(directory, steps, keep=3):
  ckpts = checkpoint.Checkpoints(str(directory), keep)
  for step in steps:
    ckpts.save(step, _state(step))
  ckpts.close()
  return ckpts


def _steps(directory):
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def test_the_latest_save_is_restored_shaped_like_the_target(tmp_path):
  _save(tmp_path / 'ckpt', [1, 2])
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'ckpt'), 3)
  assert ckpts.latest_step() == 2
  restored = ckpts.restore_latest(_state(0.0))
  ckpts.close()
  jax.tree.map(np.testing.assert_array_equal, restored, _state(2.0))
  assert restored['params']['dense']['kernel'].dtype == jnp.float32


def test_a_directory_without_checkpoints_restores_nothing(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'empty'), 2)
  assert ckpts.latest_step() is None and ckpts.restore_latest(_state()) is None
  ckpts.close()


def test_only_the_last_n_checkpoints_are_kept(tmp_path):
  _save(tmp_path / 'ckpt', [1, 2, 3, 4, 5], keep=2)
  assert _steps(tmp_path / 'ckpt') == [4, 5]


def test_saving_a_step_twice_keeps_the_first_save(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'ckpt'), 2)
  ckpts.save(3, _state(1.0))
  ckpts.save(3, _state(5.0))  # skipped, not an error
  ckpts.close()
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'ckpt'), 2)
  jax.tree.map(np.testing.assert_array_equal, ckpts.restore_latest(_state(0.0)), _state(1.0))
  ckpts.close()


def test_keeping_no_checkpoint_is_an_error(tmp_path):
  with pytest.raises(ValueError, match='keep_checkpoints must be at least 1; got 0'):
    checkpoint.Checkpoints(str(tmp_path), 0)


def test_a_run_is_found_from_its_checkpoints_its_run_dir_or_its_workdir(tmp_path):
  directory = tmp_path / 'work' / 'teacher' / checkpoint.SUBDIR
  _save(directory, [1])
  for path in (directory, tmp_path / 'work' / 'teacher', tmp_path / 'work'):
    assert checkpoint.find_run_checkpoints(str(path)) == str(directory)
  other_run = tmp_path / 'work2' / 'student' / checkpoint.SUBDIR
  _save(other_run, [1])
  assert checkpoint.find_run_checkpoints(str(tmp_path / 'work2'), run='student') == str(other_run)


def test_no_checkpoint_found_says_where_it_looked_and_what_to_pass(tmp_path):
  (tmp_path / 'work' / 'teacher').mkdir(parents=True)  # a run that never saved
  with pytest.raises(ValueError) as error:
    checkpoint.find_run_checkpoints(str(tmp_path / 'work'))
  message = str(error.value)
  assert f'no checkpoint found in {tmp_path / "work"}' in message
  assert '--config.train.teacher_checkpoint' in message


def _variables(width):
  return {
    'params': {'dense': {'kernel': jnp.ones((width, 3))}},
    'batch_stats': {'bn': {'mean': jnp.zeros(width)}},
  }


def test_load_variables_restores_params_and_batch_stats_replicated(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'teacher' / checkpoint.SUBDIR), 1)
  ckpts.save(5, {**_variables(4), 'opt_state': jnp.zeros(2)})
  ckpts.close()
  mesh = parallel.make_mesh()
  template = jax.eval_shape(lambda: _variables(4))
  loaded = checkpoint.load_variables(str(tmp_path), template, mesh)
  assert set(loaded) == {'params', 'batch_stats'}  # the optimiser state stays behind
  jax.tree.map(np.testing.assert_array_equal, loaded, _variables(4))
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(loaded))


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / checkpoint.SUBDIR), 1)
  ckpts.save(1, _variables(4))
  ckpts.close()
  template = jax.eval_shape(lambda: _variables(8))
  with pytest.raises(ValueError, match='holds a different network than the teacher'):
    checkpoint.load_variables(str(tmp_path), template, parallel.make_mesh())


def test_a_checkpoint_without_variables_is_refused(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / checkpoint.SUBDIR), 1)
  ckpts.save(1, {'params': {'w': jnp.ones(2)}})
  ckpts.close()
  template = jax.eval_shape(lambda: _variables(2))
  with pytest.raises(
    ValueError, match=r"has no \['batch_stats'\]: not a bswap training checkpoint"
  ):
    checkpoint.load_variables(str(tmp_path), template, parallel.make_mesh())


def test_a_non_finite_state_is_never_saved_nor_restored_as_good(tmp_path):
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'ckpt'), 3)
  ckpts.save(1, _state())
  with pytest.raises(ValueError, match=r'state after step 2 holds non-finite values.*step 1'):
    ckpts.save(2, _state(float('nan')))
  # One written by an older bswap, which saved without looking.
  ckpts.manager.save(3, args=checkpoint.ocp.args.StandardSave(_state(float('inf'))))
  ckpts.close()
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'ckpt'), 3)
  assert _steps(tmp_path / 'ckpt') == [1, 3]
  with pytest.raises(ValueError, match=r'checkpoint step 3 in .* holds non-finite values.*delete'):
    ckpts.restore_latest(_state())
  ckpts.close()
