"""Training: schedules, the optimiser, steps on one and four devices, resume, failures.

Tiny networks (WRN-10-1 at 8 px, batch 8) on the 4 fake CPU devices of conftest.
"""

import functools
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bswap import losses as distill
from bswap import parallel
from bswap.data import arrays as input_pipeline
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.train import checkpoint
from bswap.train import loop as train
from configs import base
from configs import cifar_400k

TINY = genotype_lib.uniform('Conv', 10, 1)


def tiny_config(**train_overrides):
  """WRN-10-1 teacher at 8 px: 32 synthetic examples, 4 steps of 8 per epoch, 2 epochs."""
  config = base.smoke(base.cifar_config(50_000))
  config.model.width = 1
  config.data.synthetic_size = 32
  config.train.batch_size = 8
  config.train.eval_batch_size = 8
  config.train.genotype = 'Conv,Conv,Conv'
  config.train.genotype_width = 1
  config.train.tensorboard = False
  config.train.update(train_overrides)
  return config


def saved_variables(run_dir, genotype=TINY):
  model = models.WideResNet(genotype.depth, genotype.width, genotype.blocks)
  template = jax.eval_shape(lambda: models.init_variables(model, 0, 0, 8))
  variables = checkpoint.load_variables(str(run_dir), template, parallel.make_mesh())
  return jax.device_get(variables)


def assert_trees_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


# ----------------------------------------------------------------------------
# Schedules and the optimiser.


@pytest.mark.parametrize(
  'name, epoch, factor',
  [
    ('paper', 0, 1.0),
    ('paper', 59, 1.0),
    ('paper', 60, 0.2),
    ('paper', 119, 0.2),
    ('paper', 120, 0.04),
    ('paper', 160, 0.04),
    ('paper', 179, 0.04),
    ('paper', 180, 0.008),
    ('paper', 199, 0.008),
    ('code2019', 59, 1.0),
    ('code2019', 60, 0.2),
    ('code2019', 120, 0.04),
    ('code2019', 159, 0.04),
    ('code2019', 160, 0.008),
    ('code2019', 199, 0.008),
    ('cosine', 0, 1.0),
    ('cosine', 50, 0.5 * (1 + math.cos(math.pi / 4))),
    ('cosine', 100, 0.5),
    ('cosine', 199, 0.5 * (1 + math.cos(math.pi * 199 / 200))),
  ],
)
def test_learning_rate_at_epoch_boundaries(name, epoch, factor):
  schedule = train.Schedule(name, lr=0.1, decay=0.2, epochs=200, steps_per_epoch=390)
  assert schedule.at_epoch(epoch) == pytest.approx(0.1 * factor, rel=1e-6)
  # The optax schedule is the same, constant through the epoch.
  for step in (390 * epoch, 390 * epoch + 389):
    assert float(schedule(jnp.int32(step))) == pytest.approx(0.1 * factor, rel=1e-4)


def test_unknown_schedule_lists_the_valid_ones():
  with pytest.raises(ValueError, match='paper, code2019, cosine'):
    train.Schedule('linear', 0.1, 0.2, 200, 390)


def test_optimizer_is_torch_sgd_with_l2_weight_decay():
  config = tiny_config()
  schedule = train.Schedule('paper', 0.1, 0.2, 200, 10)
  tx = train.make_optimizer(config.train, schedule)
  params = {'w': jnp.array([1.0, -2.0])}
  grads = [{'w': jnp.array([0.5, 0.25])}, {'w': jnp.array([-1.0, 2.0])}]
  state = tx.init(params)
  p, buf = np.array([1.0, -2.0]), np.zeros(2)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    # torch.optim.SGD: d = g + wd * p; buf = momentum * buf + d; p -= lr * buf.
    buf = 0.9 * buf + (np.asarray(g['w']) + 5e-4 * p)
    p = p - 0.1 * buf
  np.testing.assert_allclose(params['w'], p, rtol=1e-6)


# ----------------------------------------------------------------------------
# Steps.


def _setup(config, mesh, genotype=TINY, distil=False):
  setup, _ = train.make_setup(config, genotype, mesh, rows_per_device=32, distil=distil)
  return setup


def _batch(seed=0, n=8):
  ds = input_pipeline.synthetic(n, 8, 10, seed)
  return {'image': ds.images, 'label': ds.labels}


def test_train_step_lowers_the_loss_on_a_fixed_batch():
  config = tiny_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  setup = _setup(config, mesh)
  state = train.init_state(setup, 0, 8)
  # No augmentation, so that the batch is the same every step.
  setup = train.Setup(**{**setup.__dict__, 'crop_pad': 0, 'cutout': 0})
  step = jax.jit(lambda s, b, r: train.train_step(s, b, r, setup=setup))
  batch = jax.device_put(_batch(), parallel.data_sharded(mesh))
  rng = jax.random.PRNGKey(0)
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics['loss']))
  assert int(state.step) == 5
  assert losses[-1] < losses[0], losses
  assert all(np.isfinite(losses))


def test_bfloat16_compute_keeps_float32_parameters_and_statistics():
  config = tiny_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  batch = jax.device_put(_batch(), parallel.data_sharded(mesh))
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    config.train.dtype = dtype
    setup = _setup(config, mesh)
    state = train.init_state(setup, 0, 8)
    state, metrics = jax.jit(functools.partial(train.train_step, setup=setup))(
      state, batch, jax.random.PRNGKey(0)
    )
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
      assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    losses[dtype] = float(metrics['loss'])
  np.testing.assert_allclose(losses['bfloat16'], losses['float32'], rtol=0.05)


def test_four_devices_give_the_loss_and_gradients_of_one():
  config = tiny_config()

  def grads_on(devices):
    mesh = parallel.make_mesh(devices)
    setup = _setup(config, mesh)
    state = train.init_state(setup, 0, 8)
    batch = {k: parallel.put_sharded(v, mesh) for k, v in _batch().items()}
    assert batch['image'].sharding.spec == jax.sharding.PartitionSpec('data')
    fn = jax.jit(functools.partial(train.compute_grads, setup=setup))
    grads, (loss, logits, batch_stats, _) = fn(state, batch, jax.random.PRNGKey(3))
    return jax.device_get((loss, grads, batch_stats, logits))

  one, four = grads_on(jax.devices()[:1]), grads_on(jax.devices()[:4])
  np.testing.assert_allclose(one[0], four[0], rtol=1e-5)
  assert_trees_close(one[1], four[1], rtol=2e-4, atol=1e-6)
  assert_trees_close(one[2], four[2], rtol=1e-5, atol=1e-6)  # BN stats of the global batch
  assert_trees_close(one[3], four[3], rtol=1e-4, atol=1e-5)


def test_the_teacher_gets_no_gradient_and_runs_in_inference_mode():
  config = tiny_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  setup = _setup(config, mesh, TINY, distil=True)
  state = train.init_state(setup, 0, 8)
  teacher_variables = models.init_variables(setup.teacher, 1, 0, 8)
  # Running statistics far from any batch's: only inference mode reads them.
  teacher_variables['batch_stats'] = jax.tree.map(
    lambda x: x + 3.0, teacher_variables['batch_stats']
  )
  images = input_pipeline.normalize(_batch()['image'])
  labels = jnp.asarray(_batch()['label'])

  @jax.jit
  def run(params, teacher_variables):
    loss = lambda p, t: train.loss_fn(p, state.batch_stats, images, labels, t, setup)
    grads, (_, _, parts) = jax.grad(loss, argnums=(0, 1), has_aux=True)(params, teacher_variables)
    total, _ = loss(params, teacher_variables)
    student = {'params': params, 'batch_stats': state.batch_stats}
    (_, s_aux), _ = setup.model.apply(student, images, train=True, mutable=['batch_stats'])
    _, t_inference = setup.teacher.apply(teacher_variables, images, train=False)
    (_, t_training), _ = setup.teacher.apply(
      teacher_variables, images, train=True, mutable=['batch_stats']
    )
    at = lambda t_aux: sum(map(distill.at_loss, s_aux['stages'], t_aux['stages']))
    return grads, parts, total, at(t_inference), at(t_training)

  (grad_student, grad_teacher), parts, total, inference, training = run(
    state.params, teacher_variables
  )
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grad_teacher))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grad_student))
  assert float(parts['at']) > 0
  np.testing.assert_allclose(total, parts['ce'] + setup.beta * parts['at'], rtol=1e-6)
  np.testing.assert_allclose(parts['at'], inference, rtol=1e-5)
  assert not np.isclose(float(parts['at']), float(training))


# ----------------------------------------------------------------------------
# Failing early.


def test_a_batch_that_does_not_divide_across_devices_is_a_clear_error(tmp_path):
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match='batch size 6 does not divide across 4 devices'):
    parallel.check_divisible(6, mesh)
  config = tiny_config(batch_size=6)
  config.stage = 'teacher'
  with pytest.raises(ValueError, match=r'batch size 6 does not divide across 4 devices.*4 or 8'):
    train.train_and_evaluate(config, str(tmp_path))


def test_a_student_without_a_genotype_says_to_run_the_search(tmp_path):
  config = tiny_config(genotype=None)
  config.stage = 'student'
  with pytest.raises(ValueError, match='run the search first'):
    train.train_and_evaluate(config, str(tmp_path))


def test_a_missing_teacher_checkpoint_is_a_clear_error(tmp_path):
  config = tiny_config(teacher_checkpoint=str(tmp_path / 'nowhere'))
  config.stage = 'student'
  with pytest.raises(ValueError, match='no checkpoint found'):
    train.train_and_evaluate(config, str(tmp_path))


def test_bad_dtype_or_conv_impl_is_a_clear_error(tmp_path):
  config = tiny_config(dtype='float16')
  config.stage = 'teacher'
  with pytest.raises(ValueError, match="'float16' is not one of float32, bfloat16"):
    train.train_and_evaluate(config, str(tmp_path))
  config = tiny_config(conv_impl='cudnn')
  config.stage = 'teacher'
  with pytest.raises(ValueError, match="conv_impl must be 'auto', 'xla' or 'fast'"):
    train.train_and_evaluate(config, str(tmp_path))


def test_auto_conv_impl_is_fast_on_cpu():
  mesh = parallel.make_mesh()
  assert train.conv_impl(tiny_config(), mesh) == 'fast'
  assert train.conv_impl(tiny_config(conv_impl='xla'), mesh) == 'xla'


# ----------------------------------------------------------------------------
# Whole runs: resume, divergence, teacher then student.


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """3 epochs of 4 steps without interruption: the reference for the resume tests."""
  config = tiny_config(epochs=3, steps_per_call=2)  # 2 steps per call: the lax.scan path
  workdir = tmp_path_factory.mktemp('uninterrupted')
  summary = train.fit(config, str(workdir / 'run'), TINY)
  return summary, saved_variables(workdir / 'run'), workdir / 'run'


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


def test_runs_stopped_mid_epoch_or_killed_resume_to_the_same_parameters(
  uninterrupted, tmp_path, monkeypatch
):
  _, expected, _ = uninterrupted
  run_dir = str(tmp_path / 'run')
  checkpoints = lambda: sorted(map(int, os.listdir(os.path.join(run_dir, 'checkpoints'))))
  # A graceful stop in the middle of epoch 2 checkpoints step 6.
  stopped = train.fit(tiny_config(epochs=3, max_steps=6, steps_per_call=2), run_dir, TINY)
  assert (stopped.step, stopped.epoch) == (6, 1.5)
  assert checkpoints() == [4, 6]

  # A kill after epoch 3's steps, before its checkpoint: step 8 is the latest.
  real, calls = train.test_metrics, []

  def killed_in_epoch_3(run, state):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt('simulated kill')
    return real(run, state)

  monkeypatch.setattr(train, 'test_metrics', killed_in_epoch_3)
  with pytest.raises(KeyboardInterrupt):
    train.fit(tiny_config(epochs=3, steps_per_call=2), run_dir, TINY)
  assert checkpoints() == [6, 8]
  monkeypatch.setattr(train, 'test_metrics', real)

  summary = train.fit(tiny_config(epochs=3, steps_per_call=2), run_dir, TINY)
  assert summary.step == 12
  assert_trees_close(saved_variables(run_dir), expected, rtol=1e-6, atol=1e-7)
  records = (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(r)['epoch'] for r in records] == [1, 1.5, 2, 3]  # epoch 3 once


def test_a_non_finite_loss_stops_and_keeps_the_last_checkpoint(uninterrupted, tmp_path):
  _, good, finished = uninterrupted
  run_dir = str(tmp_path / 'run')
  shutil.copytree(finished, run_dir)
  # One more epoch at an infinite learning rate: step 12 is finite, step 13 is not.
  with pytest.raises(ValueError, match=r'non-finite loss nan at epoch 4, step 13.*step 12'):
    train.fit(tiny_config(epochs=4, lr=float('inf')), run_dir, TINY)
  assert sorted(os.listdir(os.path.join(run_dir, 'checkpoints'))) == ['12', '8']
  assert_trees_close(saved_variables(run_dir), good, rtol=0, atol=0)


def test_a_student_learns_from_the_teacher_checkpoint(uninterrupted, tmp_path):
  # The uninterrupted run trained WRN-10-1, the teacher tiny_config describes.
  _, teacher_variables, teacher_run = uninterrupted
  config = tiny_config(epochs=1, genotype='DConv,DConv,DConv', teacher_checkpoint=str(teacher_run))
  config.stage = 'student'
  student = train.train_and_evaluate(config, str(tmp_path))
  assert student.run_dir == str(tmp_path / 'student')
  record = json.loads((tmp_path / 'student' / 'metrics.jsonl').read_text())
  assert record['train_at'] > 0
  np.testing.assert_allclose(
    record['train_loss'], record['train_ce'] + 1000.0 * record['train_at'], rtol=1e-4
  )
  assert_trees_close(saved_variables(teacher_run), teacher_variables, rtol=0, atol=0)


def test_the_teacher_stage_trains_in_workdir_teacher(tmp_path):
  config = tiny_config(epochs=1, max_steps=1)
  config.stage = 'teacher'
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary.run_dir == str(tmp_path / 'teacher') and summary.step == 1
  assert genotype_lib.load(tmp_path / 'teacher' / 'genotype.json') == TINY


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
  assert train.search_done(config, str(tmp_path))
  # ... but not one with other settings.
  config.search.budget = 60_000
  assert not train.search_done(config, str(tmp_path))
