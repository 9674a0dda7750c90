"""The learning-rate schedules and the optimiser (torch's SGD with L2 decay)."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bswap.train import optim
from tests.train.helpers import tiny_config

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
  schedule = optim.Schedule(name, lr=0.1, decay=0.2, epochs=200, steps_per_epoch=390)
  assert schedule.at_epoch(epoch) == pytest.approx(0.1 * factor, rel=1e-6)
  # The optax schedule is the same, constant through the epoch.
  for step in (390 * epoch, 390 * epoch + 389):
    assert float(schedule(jnp.int32(step))) == pytest.approx(0.1 * factor, rel=1e-4)


def test_unknown_schedule_lists_the_valid_ones():
  with pytest.raises(ValueError, match='paper, code2019, cosine'):
    optim.Schedule('linear', 0.1, 0.2, 200, 390)


def test_optimizer_is_torch_sgd_with_l2_weight_decay():
  config = tiny_config()
  schedule = optim.Schedule('paper', 0.1, 0.2, 200, 10)
  tx = optim.make_optimizer(config.train, schedule)
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
