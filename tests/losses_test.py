"""Attention maps and losses against their closed forms (SPEC section 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import losses as distill


def _activations(seed, shape=(4, 8, 8, 16)):
  return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _numpy_at_loss(s, t):
  def att(x):
    a = (np.asarray(x, np.float64) ** 2).mean(axis=-1).reshape(x.shape[0], -1)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

  return ((att(s) - att(t)) ** 2).mean()


def test_attention_map_is_unit_norm_per_example_and_flattened():
  a = distill.attention_map(_activations(0))
  assert a.shape == (4, 64)
  np.testing.assert_allclose(jnp.linalg.norm(a, axis=1), 1.0, rtol=1e-6)


def test_attention_map_of_zeros_is_zero_not_nan():
  a = distill.attention_map(jnp.zeros((2, 4, 4, 3)))
  assert np.all(np.asarray(a) == 0)


def test_at_loss_is_zero_for_identical_activations():
  x = _activations(1)
  assert float(distill.at_loss(x, x)) == 0.0


@pytest.mark.parametrize('scale', [1e-3, 0.5, 7.0, 1e3])
def test_at_loss_is_invariant_to_positive_scaling(scale):
  s, t = _activations(2), _activations(3)
  at_loss = jax.jit(distill.at_loss)
  np.testing.assert_allclose(at_loss(scale * s, t), at_loss(s, t), rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(at_loss(s, scale * t), at_loss(s, t), rtol=1e-5, atol=1e-12)


def test_at_loss_matches_numpy_and_ignores_channel_counts():
  s = _activations(4, (3, 4, 4, 8))
  t = _activations(5, (3, 4, 4, 32))  # teacher wider than the student: maps still compare
  np.testing.assert_allclose(distill.at_loss(s, t), _numpy_at_loss(s, t), rtol=1e-5)


def test_at_loss_of_different_spatial_shapes_is_a_clear_error():
  with pytest.raises(ValueError, match='equal batch and spatial shapes'):
    distill.at_loss(jnp.ones((2, 4, 4, 3)), jnp.ones((2, 8, 8, 3)))


def test_attention_map_is_float32_for_bfloat16_activations():
  assert distill.attention_map(jnp.asarray(_activations(6), jnp.bfloat16)).dtype == jnp.float32


def test_cross_entropy_matches_numpy():
  logits = _activations(7, (5, 10))
  labels = jnp.array([0, 3, 9, 1, 1])
  x = np.asarray(logits, np.float64)
  log_softmax = x - x.max(1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
  expected = -log_softmax[np.arange(5), np.asarray(labels)].mean()
  np.testing.assert_allclose(distill.cross_entropy(logits, labels), expected, rtol=1e-5)


def test_student_loss_is_ce_plus_beta_times_the_summed_at_losses():
  logits = _activations(8, (4, 10))
  labels = jnp.arange(4)
  student = [_activations(10 + i, (4, 8 >> i, 8 >> i, 4)) for i in range(3)]
  teacher = [_activations(20 + i, (4, 8 >> i, 8 >> i, 16)) for i in range(3)]
  loss, parts = jax.jit(distill.student_loss)(logits, labels, student, teacher, 1000.0)
  at = sum(_numpy_at_loss(s, t) for s, t in zip(student, teacher))
  ce = distill.cross_entropy(logits, labels)
  np.testing.assert_allclose(parts['at'], at, rtol=1e-5)
  np.testing.assert_allclose(loss, ce + 1000.0 * at, rtol=1e-5)
  np.testing.assert_allclose(parts['ce'], ce, rtol=1e-6)
