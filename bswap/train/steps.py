"""Pure training and evaluation steps: the teacher with cross-entropy, students with
attention transfer (SPEC section 5) and optionally knowledge distillation.

A step is pure: `train_step(state, batch, rng) -> (state, metrics)`, its
randomness `fold_in(rng, step)`. `train_call` runs `length` steps in one
jitted call (a `lax.scan` when more than one), taking each step's batch from
the call's inputs with the data feed's `take` (bswap.data: gathered from the
device-resident split, or the one batch streamed from the host), so the host
only dispatches calls and reads metrics a few calls behind the devices.
XLA:CPU runs convolutions inside a loop many times slower than outside one (a
WRN-10-2 step at 32 px: docs/benchmarks.md, "Training"), hence one step per
call by default. `eval_call` adds a call's test batches to running
sums of loss, errors and examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bswap import losses

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds. The teacher is no part of it: it is never optimised."""

  step: jax.Array  # int32 scalar: steps taken
  params: Any
  batch_stats: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: one per run
class Setup:
  """The static pieces of a run's steps."""

  model: nn.Module  # models.WideResNet or models.ResNet34
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  batch_size: int
  eval_batch_size: int
  steps_per_epoch: int
  # The data's device-side transforms of uint8 batches (bswap.data.Data).
  train_transform: Callable[[jax.Array, jax.Array], jax.Array]
  eval_transform: Callable[[jax.Array], jax.Array]
  # The feeds' `take`: (call inputs, index) -> batch, and test batches per call.
  take_train: Callable
  take_eval: Callable
  eval_batches_per_call: int
  teacher: nn.Module | None = None
  beta: float = 0.0
  kd_alpha: float = 0.0  # knowledge distillation on the logits (losses.distillation); 0: off
  kd_temperature: float = 4.0
  dtype: Any = jnp.float32  # compute dtype; parameters and BN statistics stay float32


def _cast(tree, dtype):
  """Floating leaves in the compute dtype: the mixed-precision copy of the float32 masters."""
  cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree.map(cast, tree)


def loss_fn(params, batch_stats, images, labels, teacher_variables, setup: Setup):
  """The objective and (logits, new batch_stats, parts) of one augmented batch."""
  variables = {'params': _cast(params, setup.dtype), 'batch_stats': batch_stats}
  x = images.astype(setup.dtype)
  (logits, aux), updates = setup.model.apply(variables, x, train=True, mutable=['batch_stats'])
  if setup.teacher is None:
    loss = losses.cross_entropy(logits, labels)
    parts = {'ce': loss}
  else:
    # Inference mode (running statistics), and no gradient reaches the teacher.
    frozen = jax.lax.stop_gradient(_cast(teacher_variables, setup.dtype))
    teacher_logits, teacher_aux = setup.teacher.apply(frozen, x, train=False)
    stages = teacher_aux['stages']
    loss, parts = losses.student_loss(
      logits,
      labels,
      aux['stages'],
      stages,
      setup.beta,
      teacher_logits,
      setup.kd_alpha,
      setup.kd_temperature,
    )
  return loss, (logits, updates['batch_stats'], parts)


def compute_grads(state: TrainState, batch, rng, teacher_variables=None, *, setup: Setup):
  """Gradients of the objective w.r.t. the parameters, and (loss, logits, batch_stats, parts)."""
  key = jax.random.fold_in(rng, state.step)
  images = setup.train_transform(key, batch['image'])
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, aux), grads = grad_fn(
    state.params, state.batch_stats, images, batch['label'], teacher_variables, setup
  )
  return grads, (loss, *aux)


def error_percent(logits, labels):
  return 100.0 * jnp.mean(jnp.argmax(logits, -1) != labels)


def train_step(state: TrainState, batch, rng, teacher_variables=None, *, setup: Setup):
  """One SGD step on a uint8 batch {'image', 'label'}: augment, forward, backward, update."""
  grads, (loss, logits, batch_stats, parts) = compute_grads(
    state, batch, rng, teacher_variables, setup=setup
  )
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  metrics = {'loss': loss, 'error': error_percent(logits, batch['label']), **parts}
  return new_state, metrics


def eval_step(state: TrainState, batch, *, setup: Setup):
  """Sums over the real (mask) examples of a test batch: loss, wrong (top-1 and top-5), count."""
  variables = {'params': _cast(state.params, setup.dtype), 'batch_stats': state.batch_stats}
  images = setup.eval_transform(batch['image']).astype(setup.dtype)
  logits, _ = setup.model.apply(variables, images, train=False)
  per_example = optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.float32), batch['label']
  )
  mask = batch['mask']
  wrong = (jnp.argmax(logits, -1) != batch['label']) & mask
  # Top-5: wrong when 5 or more classes score strictly higher than the label.
  label_logit = jnp.take_along_axis(logits, batch['label'][:, None], axis=-1)
  wrong5 = (jnp.sum(logits > label_logit, axis=-1) >= 5) & mask
  return {
    'loss': jnp.sum(jnp.where(mask, per_example, 0.0)),
    'wrong': jnp.sum(wrong),
    'wrong5': jnp.sum(wrong5),
    'count': jnp.sum(mask),
  }


def streams(rng):
  """Independent keys for the augmentation and the data order."""
  augment_rng, order_rng = jax.random.split(rng)
  return augment_rng, order_rng


def train_call(state, inputs, rng, teacher_variables, *, setup: Setup, length: int):
  """`length` steps inside one epoch, each on the batch the feed takes from `inputs`.

  Returns the state and per-step metrics (arrays of shape (length,)).
  """

  def body(state, _):
    batch = setup.take_train(inputs, state.step % setup.steps_per_epoch)
    return train_step(state, batch, streams(rng)[0], teacher_variables, setup=setup)

  if length == 1:  # no loop: see the module doc
    state, metrics = body(state, None)
    return state, jax.tree.map(lambda x: x[None], metrics)
  return jax.lax.scan(body, state, length=length)


def eval_call(sums, state, inputs, *, setup: Setup):
  """`sums` (loss, wrong, count) plus those of the call's test batches."""
  add = lambda sums, batch: jax.tree.map(jnp.add, sums, eval_step(state, batch, setup=setup))
  if setup.eval_batches_per_call == 1:
    return add(sums, setup.take_eval(inputs, 0))

  def body(sums, index):
    return add(sums, setup.take_eval(inputs, index)), None

  sums, _ = jax.lax.scan(body, sums, jnp.arange(setup.eval_batches_per_call))
  return sums


def zero_sums() -> dict:
  return {
    'loss': jnp.float32(0),
    'wrong': jnp.int32(0),
    'wrong5': jnp.int32(0),
    'count': jnp.int32(0),
  }
