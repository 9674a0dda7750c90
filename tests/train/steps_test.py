"""Training and evaluation steps on one and four devices, the teacher frozen, mixed precision."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import losses
from bswap import parallel
from bswap.data import augment
from bswap.data import sources
from bswap.nets import models
from bswap.train import loop
from bswap.train import optim
from bswap.train import steps
from tests.train.helpers import TINY
from tests.train.helpers import assert_trees_close
from tests.train.helpers import tiny_config

# ----------------------------------------------------------------------------
# Steps.


def _setup(config, mesh, genotype=TINY, distil=False, pad=1, cutout=4):
  """The steps' static pieces, without data: the smoke config's augmentation by default."""
  schedule = optim.Schedule.from_config(config.train, 4)
  teacher = loop.model_of(loop.teacher_genotype(config), config, mesh) if distil else None
  return steps.Setup(
    model=loop.model_of(genotype, config, mesh),
    tx=optim.make_optimizer(config.train, schedule),
    mesh=mesh,
    batch_size=8,
    eval_batch_size=8,
    steps_per_epoch=4,
    train_transform=functools.partial(augment.augment, pad=pad, cutout=cutout),
    eval_transform=augment.normalize,
    take_train=None,
    take_eval=None,
    eval_batches_per_call=1,
    teacher=teacher,
    beta=config.train.beta,
    kd_alpha=config.train.kd_alpha,
    kd_temperature=config.train.kd_temperature,
    dtype=steps.DTYPES[config.train.dtype],
  )


def _batch(seed=0, n=8):
  ds = sources.synthetic(n, 8, 10, seed)
  return {'image': ds.images, 'label': ds.labels}


@pytest.mark.slow
def test_train_step_lowers_the_loss_on_a_fixed_batch():
  config = tiny_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  # No augmentation, so that the batch is the same every step.
  setup = _setup(config, mesh, pad=0, cutout=0)
  state = loop.init_state(setup, 0, 8)
  step = jax.jit(lambda s, b, r: steps.train_step(s, b, r, setup=setup))
  batch = jax.device_put(_batch(), parallel.data_sharded(mesh))
  rng = jax.random.PRNGKey(0)
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics['loss']))
  assert int(state.step) == 5
  assert losses[-1] < losses[0], losses
  assert all(np.isfinite(losses))


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters_and_statistics():
  config = tiny_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  batch = jax.device_put(_batch(), parallel.data_sharded(mesh))
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    config.train.dtype = dtype
    setup = _setup(config, mesh)
    state = loop.init_state(setup, 0, 8)
    state, metrics = jax.jit(functools.partial(steps.train_step, setup=setup))(
      state, batch, jax.random.PRNGKey(0)
    )
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
      assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    losses[dtype] = float(metrics['loss'])
  np.testing.assert_allclose(losses['bfloat16'], losses['float32'], rtol=0.05)


@pytest.mark.slow
@pytest.mark.devices(4)
def test_four_devices_match_one_in_loss_gradients_bn_statistics_and_logits():
  config = tiny_config()

  def grads_on(devices):
    mesh = parallel.make_mesh(devices)
    setup = _setup(config, mesh)
    state = loop.init_state(setup, 0, 8)
    batch = {k: parallel.put_sharded(v, mesh) for k, v in _batch().items()}
    assert batch['image'].sharding.spec == jax.sharding.PartitionSpec('data')
    fn = jax.jit(functools.partial(steps.compute_grads, setup=setup))
    grads, (loss, logits, batch_stats, _) = fn(state, batch, jax.random.PRNGKey(3))
    return jax.device_get((loss, grads, batch_stats, logits))

  one, four = grads_on(jax.devices()[:1]), grads_on(jax.devices()[:4])
  np.testing.assert_allclose(one[0], four[0], rtol=1e-5)
  assert_trees_close(one[1], four[1], rtol=2e-4, atol=1e-6)
  assert_trees_close(one[2], four[2], rtol=1e-5, atol=1e-6)  # BN stats of the global batch
  assert_trees_close(one[3], four[3], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_teacher_gets_no_gradient_and_runs_in_inference_mode():
  config = tiny_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  setup = _setup(config, mesh, TINY, distil=True)
  state = loop.init_state(setup, 0, 8)
  teacher_variables = models.init_variables(setup.teacher, 1, 0, 8)
  # Running statistics far from any batch's: only inference mode reads them.
  teacher_variables['batch_stats'] = jax.tree.map(
    lambda x: x + 3.0, teacher_variables['batch_stats']
  )
  images = augment.normalize(_batch()['image'])
  labels = jnp.asarray(_batch()['label'])

  @jax.jit
  def run(params, teacher_variables):
    loss = lambda p, t: steps.loss_fn(p, state.batch_stats, images, labels, t, setup)
    grads, (_, _, parts) = jax.grad(loss, argnums=(0, 1), has_aux=True)(params, teacher_variables)
    total, _ = loss(params, teacher_variables)
    student = {'params': params, 'batch_stats': state.batch_stats}
    (_, s_aux), _ = setup.model.apply(student, images, train=True, mutable=['batch_stats'])
    _, t_inference = setup.teacher.apply(teacher_variables, images, train=False)
    (_, t_training), _ = setup.teacher.apply(
      teacher_variables, images, train=True, mutable=['batch_stats']
    )
    at = lambda t_aux: sum(map(losses.at_loss, s_aux['stages'], t_aux['stages']))
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


@pytest.mark.slow
def test_knowledge_distillation_adds_the_teachers_soft_logits_in_inference_mode():
  config = tiny_config(kd_alpha=0.7, kd_temperature=3.0)
  mesh = parallel.make_mesh(jax.devices()[:1])
  setup = _setup(config, mesh, TINY, distil=True)
  state = loop.init_state(setup, 0, 8)
  teacher_variables = models.init_variables(setup.teacher, 1, 0, 8)
  teacher_variables['batch_stats'] = jax.tree.map(
    lambda x: x + 3.0, teacher_variables['batch_stats']
  )
  images = augment.normalize(_batch()['image'])
  labels = jnp.asarray(_batch()['label'])
  loss = jax.jit(lambda p, t: steps.loss_fn(p, state.batch_stats, images, labels, t, setup))
  total, (logits, _, parts) = loss(state.params, teacher_variables)
  teacher_logits, _ = setup.teacher.apply(teacher_variables, images, train=False)
  expected_kd = losses.kd_divergence(logits, teacher_logits, 3.0)
  np.testing.assert_allclose(parts['kd'], expected_kd, rtol=1e-5)
  assert float(parts['kd']) > 0
  np.testing.assert_allclose(
    total, 0.3 * parts['ce'] + 0.7 * 9.0 * parts['kd'] + setup.beta * parts['at'], rtol=1e-6
  )
  grad_teacher = jax.grad(lambda t: loss(state.params, t)[0])(teacher_variables)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grad_teacher))


class _Logits(nn.Module):
  """A 'network' whose logits are its input's pixels: eval_step on hand-made logits."""

  @nn.compact
  def __call__(self, x, train):
    return x.reshape(x.shape[0], -1), {}


@pytest.mark.slow
def test_eval_step_counts_top_1_and_top_5_errors_of_the_real_examples():
  labels = np.array([0, 0, 0, 0, 3], np.int32)
  logits = np.zeros((5, 1, 1, 8), np.float32)
  logits[0, ..., 0] = 1  # first: right
  logits[1, ..., :5] = [0, 1, 2, 3, 4]  # label 0 below 4 classes: top-5 right, top-1 wrong
  logits[2, ..., :6] = [0, 1, 2, 3, 4, 5]  # below 5 classes: both wrong
  logits[3, ..., :7] = [0, 1, 2, 3, 4, 5, 6]  # both wrong, but padding (masked out)
  logits[4, ..., 3] = 2  # right
  setup = dataclasses.replace(
    _setup(tiny_config(), parallel.make_mesh(jax.devices()[:1])),
    model=_Logits(),
    eval_transform=lambda x: x,
  )
  state = steps.TrainState(jnp.int32(0), {}, {}, None)
  batch = {'image': logits, 'label': labels, 'mask': np.array([1, 1, 1, 0, 1], bool)}
  sums = jax.device_get(steps.eval_step(state, batch, setup=setup))
  assert (int(sums['wrong']), int(sums['wrong5']), int(sums['count'])) == (2, 1, 4)
