"""Attention transfer, knowledge distillation and the student objective (SPEC section 5):
pure functions on arrays.

Zagoruyko & Komodakis (2017), "Paying more attention to attention", as the
BlockSwap reference code computes it:

  a(x)        = normalise(mean over channels of x^2, flattened to (N, H*W))
  at_loss     = mean over (example, position) of (a(student) - a(teacher))^2
  student     = CE + beta * sum over the stage outputs of at_loss

Optionally with classic knowledge distillation (Hinton et al. 2015) on the
logits, as the reference code's earlier versions offered (`distillation`,
temperature T, weight alpha; alpha = 0, their default, turns it off):

  student     = (1 - alpha) CE + alpha T^2 KL(p_teacher^T || p_student^T)
                + beta * sum over the stage outputs of at_loss

where p^T = softmax(logits / T) and KL is averaged over the examples. The
T^2 keeps the gradients of the soft term at the scale of the hard one as T
changes, as in the reference. The reference took torch's `F.kl_div` default,
which also averages over the classes, and doubled it: its alpha weighs the KL
as 2 alpha T^2 / C where this one weighs it as alpha T^2 (C classes).

The maps are computed in float32 whatever the activations' dtype: squaring
bfloat16 activations and normalising them loses too much precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

EPS = 1e-12  # torch.nn.functional.normalize's default


def attention_map(x: jax.Array) -> jax.Array:
  """(N, H, W, C) activations -> (N, H*W) L2-normalised spatial attention.

  Normalised as torch's F.normalize does: a / max(||a||, EPS), so an all-zero
  map stays zero instead of dividing by zero.
  """
  if x.ndim != 4:
    raise ValueError(f'attention maps need (N, H, W, C) activations; got shape {x.shape}')
  a = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1).reshape(x.shape[0], -1)
  norm = jnp.linalg.norm(a, axis=1, keepdims=True)
  return a / jnp.maximum(norm, EPS)


def at_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Mean over (example, position) of the squared difference of the attention maps."""
  if student.shape[:3] != teacher.shape[:3]:
    raise ValueError(
      f'attention transfer needs equal batch and spatial shapes; student {student.shape} '
      f'vs teacher {teacher.shape} (train both at the same image size)'
    )
  return jnp.mean(jnp.square(attention_map(student) - attention_map(teacher)))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy against integer labels, in float32 at least.

  bfloat16 logits are computed in float32; float64 ones (equivalence tests
  under jax_enable_x64) stay float64.
  """
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.mean(losses)


def kd_divergence(logits: jax.Array, teacher_logits: jax.Array, temperature: float) -> jax.Array:
  """KL(softmax(teacher / T) || softmax(student / T)), averaged over the examples, in float32+."""
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  log_p = jax.nn.log_softmax(logits.astype(dtype) / temperature, axis=-1)
  log_q = jax.nn.log_softmax(teacher_logits.astype(dtype) / temperature, axis=-1)
  return jnp.mean(jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1))


def distillation(
  logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  temperature: float,
  alpha: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(1 - alpha) CE + alpha T^2 KL: classic knowledge distillation (the module doc).

  Returns:
    The loss and its parts {'ce', 'kd'} ('kd' is the unweighted KL at temperature T).
  """
  ce = cross_entropy(logits, labels)
  kd = kd_divergence(logits, teacher_logits, temperature)
  return (1.0 - alpha) * ce + alpha * temperature**2 * kd, {'ce': ce, 'kd': kd}


def student_loss(
  logits: jax.Array,
  labels: jax.Array,
  student_stages: Sequence[jax.Array],
  teacher_stages: Sequence[jax.Array],
  beta: float,
  teacher_logits: jax.Array | None = None,
  kd_alpha: float = 0.0,
  kd_temperature: float = 4.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CE + beta * sum_i at_loss(student stage i, teacher stage i), CE -> `distillation` if kd_alpha.

  Returns:
    The loss and its parts {'ce', 'at'} ('at' is the unweighted sum), and 'kd'
    (the unweighted KL) when kd_alpha > 0.
  """
  if len(student_stages) != len(teacher_stages):
    raise ValueError(
      f'student has {len(student_stages)} attention points, teacher {len(teacher_stages)}: '
      'attention transfer pairs the stages of one architecture (WRN: 3, ResNet-34: 4); give a '
      "student genotype of the teacher's architecture (config.model.arch), or a teacher of "
      "the student's"
    )
  if kd_alpha:
    loss, parts = distillation(logits, teacher_logits, labels, kd_temperature, kd_alpha)
  else:
    ce = cross_entropy(logits, labels)
    loss, parts = ce, {'ce': ce}
  at = sum(at_loss(s, t) for s, t in zip(student_stages, teacher_stages))
  return loss + beta * at, {**parts, 'at': at}
