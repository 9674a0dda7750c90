"""Fisher potential against hand-derived gradients, finite differences and invariances."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import losses as distill
from bswap.nets import blocks
from bswap.nets import models
from bswap.scoring import fisher

# Jitted once per model: eager execution compiles every op and is far slower.
probe_gradients = jax.jit(fisher.probe_gradients, static_argnums=0)
fisher_potential = jax.jit(fisher.fisher_potential, static_argnums=0)


class _Probe(nn.Module):
  """A 1x1 conv whose output is the probe, as a block marks it."""

  @nn.compact
  def __call__(self, x):
    a = nn.Conv(3, (1, 1), use_bias=False, name='conv')(x)
    return blocks.mark_probe(self, a)


class TinyNet(nn.Module):
  """x -> 1x1 conv (probe A) -> global mean -> dense: small enough to differentiate by hand."""

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    a = _Probe(name='block_0')(x)
    logits = nn.Dense(4, name='dense')(jnp.mean(a, axis=(1, 2)))
    return logits, {'probes': (a,), 'stages': ()}


def test_fisher_of_a_tiny_net_matches_numpy_by_hand_within_1e_5():
  model = TinyNet()
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 3, 2))
  labels = jnp.array([0, 1, 2, 3, 1])
  variables = {'params': model.init(jax.random.PRNGKey(1), x, train=True)['params']}
  total, per_block = fisher_potential(model, variables, x, labels)

  p = jax.tree.map(np.asarray, variables['params'])
  xn = np.asarray(x, np.float64)
  a = xn @ p['block_0']['conv']['kernel'][0, 0]  # (N, H, W, 3)
  logits = a.mean(axis=(1, 2)) @ p['dense']['kernel'] + p['dense']['bias']
  softmax = np.exp(logits - logits.max(1, keepdims=True))
  softmax /= softmax.sum(1, keepdims=True)
  dlogits = (softmax - np.eye(4)[np.asarray(labels)]) / 5  # mean over the batch
  g = np.broadcast_to((dlogits @ p['dense']['kernel'].T)[:, None, None, :] / 9, a.shape)
  s = (a * g).sum(axis=(1, 2))  # (N, C)
  expected = (0.5 * (s**2).mean(axis=0)).sum()
  np.testing.assert_allclose(per_block[0], expected, rtol=1e-5)
  np.testing.assert_allclose(total, expected, rtol=1e-5)


def _small_wrn(names=('G2B2', 'DConv', 'Conv')):
  model = models.WideResNet(10, 2, names)
  variables = models.init_variables(model, 0, 0, image_size=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
  y = jnp.array([0, 3, 7, 3])
  return model, variables, x, y


@pytest.mark.slow
def test_gradients_have_the_probe_shape_not_a_batch_one_broadcast():
  model, variables, x, y = _small_wrn()
  probes, grads = probe_gradients(model, variables, x, y)
  assert [g.shape for g in grads] == [a.shape for a in probes]
  assert all(g.shape[0] == 4 for g in grads)
  # The trap: perturbations created at batch 1 (e.g. by init) broadcast and
  # silently return the gradient summed over the batch.
  _, state = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats', 'perturbations'])
  )(variables, x[:1])

  @jax.jit
  def loss(perturbations):
    (logits, _), _ = model.apply(
      {**variables, 'perturbations': perturbations}, x, train=True, mutable=['batch_stats']
    )
    return distill.cross_entropy(logits, y)

  summed = jax.grad(loss)(state['perturbations'])
  for b, g in enumerate(grads):
    broadcast = summed[f'block_{b}'][blocks.PROBE]
    assert broadcast.shape[0] == 1
    np.testing.assert_allclose(broadcast[0], g.sum(axis=0), rtol=1e-4, atol=1e-8)


def test_probe_gradient_matches_finite_differences():
  model, variables, x, y = _small_wrn()
  probes, grads = probe_gradients(model, variables, x, y)
  perts = fisher.zero_perturbations(model, variables, x)

  @jax.jit
  def loss(perturbations):
    (logits, _), _ = model.apply(
      {**variables, 'perturbations': perturbations}, x, train=True, mutable=['batch_stats']
    )
    return distill.cross_entropy(logits, y)

  rng = np.random.default_rng(0)
  eps = 1e-2
  for b in range(3):
    shape = probes[b].shape
    for _ in range(3):
      idx = tuple(int(rng.integers(0, n)) for n in shape)
      bump = jnp.zeros(shape).at[idx].set(eps)

      def shifted(sign, b=b, bump=bump):
        return loss({**perts, f'block_{b}': {blocks.PROBE: sign * bump}})

      numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
      np.testing.assert_allclose(grads[b][idx], numeric, rtol=0.05, atol=2e-5)


@pytest.mark.slow
def test_permuting_the_batch_changes_the_score_by_under_1e_5():
  model, variables, x, y = _small_wrn(('ConvB4', 'G8B2', 'DConvA4'))
  perm = np.array([2, 0, 3, 1])
  total, per_block = fisher_potential(model, variables, x, y)
  total_p, per_block_p = fisher_potential(model, variables, x[perm], y[perm])
  np.testing.assert_allclose(per_block_p, per_block, rtol=1e-5)
  np.testing.assert_allclose(total_p, total, rtol=1e-5)
  assert total > 0 and np.isclose(total, per_block.sum(), rtol=1e-6)


@pytest.mark.slow
def test_jitted_fisher_is_cached_per_architecture():
  model, variables, x, y = _small_wrn()
  fn = fisher.jitted_fisher(model)
  assert fn is fisher.jitted_fisher(models.WideResNet(10, 2, ('G2B2', 'DConv', 'Conv')))
  assert fn is not fisher.jitted_fisher(models.WideResNet(10, 2, ('G2B2', 'DConv', 'G2B2')))
  np.testing.assert_allclose(fn(variables, x, y)[1], fisher_potential(model, variables, x, y)[1])


@pytest.mark.slow
@pytest.mark.parametrize('batch', [2, 6])
def test_score_depends_on_the_data(batch):
  model, variables, x, y = _small_wrn()
  x2 = jax.random.normal(jax.random.PRNGKey(9), (batch, 8, 8, 3))
  y2 = jnp.arange(batch) % 10
  t1, _ = fisher_potential(model, variables, x[:batch], y[:batch])
  t2, _ = fisher_potential(model, variables, x2, y2)
  assert not np.isclose(t1, t2)
