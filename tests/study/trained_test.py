"""The Table 1 metrics after k minibatches equal a plain loop of k steps, then the metric."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import losses
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.scoring import fisher
from bswap.study import trained

LR, MOMENTUM, DECAY = 0.1, 0.9, 5e-4


def _batches(n=4, size=8, steps=3):
  rng = np.random.default_rng(0)
  return [
    (
      jnp.asarray(rng.normal(size=(n, size, size, 3)), jnp.float32),
      jnp.asarray(rng.integers(0, 10, n), jnp.int32),
    )
    for _ in range(steps)
  ]


def _plain_loop(model, variables, batches, k):
  """k SGD steps written out: torch's SGD (decay into the gradient, then momentum)."""
  params, stats = variables['params'], variables['batch_stats']
  velocity = None
  accuracy, fp, summed = [], 0.0, None

  def loss(p, stats, images, labels):
    (logits, _), state = model.apply(
      {'params': p, 'batch_stats': stats}, images, train=True, mutable=['batch_stats']
    )
    return losses.cross_entropy(logits, labels), (logits, state['batch_stats'])

  gradient = jax.jit(jax.value_and_grad(loss, has_aux=True))
  for images, labels in batches[:k]:
    variables = {'params': params, 'batch_stats': stats}
    fp += float(fisher.jitted_fisher(model)(variables, images, labels)[0])
    (_, (logits, new_stats)), grads = gradient(params, stats, images, labels)
    accuracy.append(float(np.mean(np.argmax(logits, -1) == labels)))
    summed = grads if summed is None else jax.tree.map(jnp.add, summed, grads)
    decayed = jax.tree.map(lambda g, p: g + DECAY * p, grads, params)
    velocity = (
      decayed
      if velocity is None
      else jax.tree.map(lambda v, g: MOMENTUM * v + g, velocity, decayed)
    )
    params = jax.tree.map(lambda p, v: p - LR * v, params, velocity)
    stats = new_stats
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
  return {
    'train_accuracy': np.mean(accuracy),
    'l2': np.sqrt(sum(np.sum(x**2) for x in leaves)),
    'grad_norm_abs': sum(
      np.sum(np.abs(np.asarray(g, np.float64))) for g in jax.tree.leaves(summed)
    ),
    'fisher_potential': fp,
  }


@pytest.mark.slow  # compiles: about 10 s of CPU
def test_metrics_after_k_steps_equal_a_plain_loop():
  geno = genotype_lib.Genotype(('Conv', 'DConvG4', 'A2B2'), 'wrn', 10, 1)
  model = models.build(geno, 10)
  variables = models.init_variables(model, 0, 0, 8)
  batches = _batches()
  tx = trained.optimizer(LR, MOMENTUM, DECAY)
  got = trained.after_k(model, variables, tx, lambda t: batches[t - 1], ks=(1, 3))
  assert set(got) == set(trained.columns((1, 3)))
  for k in (1, 3):
    want = _plain_loop(model, variables, batches, k)
    for name, value in want.items():
      assert got[trained.column(name, k)] == pytest.approx(value, rel=2e-4), (name, k)
  # At k = 1 the summed gradient's L1 is the first gradient's; the weights have moved by then.
  assert got['l2@1'] != got['l2@3']


def test_steps_must_be_positive():
  geno = genotype_lib.uniform('Conv', 10, 1)
  model = models.build(geno, 10)
  with pytest.raises(ValueError, match='positive step counts'):
    trained.after_k(model, models.init_variables(model, 0, 0, 8), None, None, ks=(0, 1))
