"""Attention transfer and the student objective (SPEC section 5): pure functions on arrays.

Zagoruyko & Komodakis (2017), "Paying more attention to attention", as the
BlockSwap reference code computes it:

  a(x)        = normalise(mean over channels of x^2, flattened to (N, H*W))
  at_loss     = mean over (example, position) of (a(student) - a(teacher))^2
  student     = CE + beta * sum over the stage outputs of at_loss

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


def student_loss(
  logits: jax.Array,
  labels: jax.Array,
  student_stages: Sequence[jax.Array],
  teacher_stages: Sequence[jax.Array],
  beta: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CE + beta * sum_i at_loss(student stage i, teacher stage i).

  Returns:
    The loss and its parts {'ce', 'at'} ('at' is the unweighted sum).
  """
  if len(student_stages) != len(teacher_stages):
    raise ValueError(
      f'student has {len(student_stages)} attention points, teacher {len(teacher_stages)}'
    )
  ce = cross_entropy(logits, labels)
  at = sum(at_loss(s, t) for s, t in zip(student_stages, teacher_stages))
  return ce + beta * at, {'ce': ce, 'at': at}
