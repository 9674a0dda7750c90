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


# ----------------------------------------------------------------------------
# Knowledge distillation.


def _log_softmax64(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize('temperature', [1.0, 4.0])
def test_kd_divergence_matches_the_closed_form_in_float64(temperature):
  s, t = 3 * _activations(30, (6, 10)), 3 * _activations(31, (6, 10))
  log_p, log_q = _log_softmax64(s / temperature), _log_softmax64(t / temperature)
  expected = (np.exp(log_q) * (log_q - log_p)).sum(-1).mean()
  np.testing.assert_allclose(distill.kd_divergence(s, t, temperature), expected, rtol=1e-5)
  assert float(distill.kd_divergence(s, s, temperature)) == pytest.approx(0, abs=1e-7)


@pytest.mark.parametrize('temperature', [1.0, 4.0])
def test_distillation_with_alpha_0_is_cross_entropy(temperature):
  s, t = _activations(32, (6, 10)), _activations(33, (6, 10))
  labels = jnp.array([0, 1, 2, 3, 4, 9])
  loss, parts = distill.distillation(s, t, labels, temperature, 0.0)
  np.testing.assert_allclose(loss, distill.cross_entropy(s, labels), rtol=1e-6)
  assert float(parts['kd']) > 0  # computed, weighted 0


@pytest.mark.parametrize('alpha', [0.3, 1.0])
def test_distillation_at_t_1_from_a_one_hot_teacher_is_cross_entropy(alpha):
  # KL(one-hot || p) = -log p[label] = CE: the soft term of a certain teacher is the hard one.
  s = _activations(34, (6, 10))
  labels = jnp.array([0, 1, 2, 3, 4, 9])
  teacher = 200.0 * jax.nn.one_hot(labels, 10)
  loss, _ = distill.distillation(s, teacher, labels, 1.0, alpha)
  np.testing.assert_allclose(loss, distill.cross_entropy(s, labels), rtol=1e-5)


@pytest.mark.parametrize('temperature', [1.0, 2.0, 8.0])
def test_the_soft_terms_gradient_is_alpha_t_times_the_softmax_difference(temperature):
  # d/ds [alpha T^2 KL] = alpha T (softmax(s/T) - softmax(t/T)) / N: T^2 keeps the gradient's
  # scale as T grows (Hinton et al. 2015), as the reference's T*T factor does.
  s, t = _activations(35, (5, 10)), 2 * _activations(36, (5, 10))
  labels = jnp.zeros(5, jnp.int32)
  soft = lambda s: distill.distillation(s, t, labels, temperature, 0.5)[0]
  hard = lambda s: 0.5 * distill.cross_entropy(s, labels)
  grad = jax.grad(soft)(s) - jax.grad(hard)(s)
  p, q = np.exp(_log_softmax64(s / temperature)), np.exp(_log_softmax64(t / temperature))
  np.testing.assert_allclose(grad, 0.5 * temperature * (p - q) / 5, rtol=1e-4, atol=1e-7)


def test_student_loss_with_kd_adds_the_soft_term_and_its_part():
  logits, teacher = _activations(37, (4, 10)), _activations(38, (4, 10))
  labels = jnp.arange(4)
  student = [_activations(40 + i, (4, 4, 4, 4)) for i in range(3)]
  stages = [_activations(50 + i, (4, 4, 4, 8)) for i in range(3)]
  loss, parts = distill.student_loss(logits, labels, student, stages, 10.0, teacher, 0.25, 2.0)
  kd = distill.kd_divergence(logits, teacher, 2.0)
  ce = distill.cross_entropy(logits, labels)
  np.testing.assert_allclose(parts['kd'], kd, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.75 * ce + 0.25 * 4.0 * kd + 10.0 * parts['at'], rtol=1e-6)
  _, plain = distill.student_loss(logits, labels, student, stages, 10.0, teacher)
  assert sorted(plain) == ['at', 'ce']  # kd_alpha 0: no 'kd' part, metrics unchanged
