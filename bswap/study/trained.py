"""The paper's Table 1 metrics after k minibatches of training (PROXIES.md section 7).

From the student's initial weights theta_0, for t = 1..K: minibatch t gives
the loss L_t and the gradient g_t at theta_{t-1} (batch norm in training
mode), then one step of the training's optimiser (SGD, momentum, L2 decay
added to the gradient; the configured constant learning rate). After step k,
for every k in `ks`:

  train_accuracy@k   mean over t <= k of minibatch t's top-1 accuracy before its step
  l2@k               ||theta_k||_2 over all trainable parameters (no BN statistics)
  grad_norm_abs@k    sum_i |sum_{t<=k} g_t,i|: the raw gradients, before momentum and decay
  fisher_potential@k sum_{t<=k} FP(theta_{t-1}; minibatch t), SPEC section 4

Every one is "higher predicts better" (PROXIES.md section 1). One jitted step
per architecture computes the weight gradients and the Fisher probes'
gradients from the same backward pass; `tests/study/trained_test.py` checks
the result against a plain loop of k optimiser steps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bswap import losses
from bswap.nets import blocks
from bswap.scoring import fisher

KS = (1, 10, 100)
NAMES = ('train_accuracy', 'l2', 'grad_norm_abs', 'fisher_potential')
SIGN = 1  # PROXIES.md section 1: every score is used raw, higher predicts better


def column(name: str, k: int) -> str:
  return f'{name}@{k}'


def columns(ks: Sequence[int]) -> list[str]:
  return [column(name, k) for k in ks for name in NAMES]


def optimizer(lr: float, momentum: float, weight_decay: float) -> optax.GradientTransformation:
  """torch's SGD at a constant rate: decay joins the gradient before the momentum."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum))


def _step(model: nn.Module, tx: optax.GradientTransformation, carry, images, labels):
  """One training step that also returns (accuracy, Fisher potential, gradients) at theta_{t-1}."""
  params, batch_stats, opt_state = carry
  variables = {'params': params, 'batch_stats': batch_stats}
  perturbations = fisher.zero_perturbations(model, variables, images)

  def loss(params, perturbations):
    (logits, _), state = model.apply(
      {'params': params, 'batch_stats': batch_stats, 'perturbations': perturbations},
      images,
      train=True,
      mutable=['batch_stats', 'intermediates'],
    )
    sown = state['intermediates']
    probes = [sown[f'block_{b}'][blocks.PROBE][-1] for b in range(len(sown))]
    return losses.cross_entropy(logits, labels), (logits, probes, state['batch_stats'])

  grad_fn = jax.grad(loss, argnums=(0, 1), has_aux=True)
  (grads, dprobes), (logits, probes, new_stats) = grad_fn(params, perturbations)
  fp = sum(
    fisher.block_fisher(a, dprobes[f'block_{b}'][blocks.PROBE]) for b, a in enumerate(probes)
  )
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return (params, new_stats, opt_state), accuracy, fp, grads


@functools.lru_cache(maxsize=8)
def _jitted_step(model: nn.Module, tx):
  return jax.jit(functools.partial(_step, model, tx))


def global_l2(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def l1(tree) -> jax.Array:
  return sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree))


def after_k(
  model: nn.Module,
  variables,
  tx: optax.GradientTransformation,
  batch: Callable[[int], tuple[jax.Array, jax.Array]],
  ks: Sequence[int] = KS,
) -> dict[str, float]:
  """{'<name>@<k>': value} for every k in ks, from one run of max(ks) steps.

  batch(t) gives minibatch t (t = 1..max(ks)) as (images, labels).
  """
  ks = sorted(set(ks))
  if not ks or ks[0] < 1:
    raise ValueError(f'--config.study.ks must be positive step counts; got {list(ks)}')
  step = _jitted_step(model, tx)
  params = variables['params']
  carry = (params, variables['batch_stats'], tx.init(params))
  summed = jax.tree.map(jnp.zeros_like, params)
  accuracy, fp, out = 0.0, 0.0, {}
  for t in range(1, ks[-1] + 1):
    carry, acc, fp_t, grads = step(carry, *batch(t))
    summed = jax.tree.map(jnp.add, summed, grads)
    accuracy, fp = accuracy + acc, fp + fp_t
    if t in ks:
      values = {
        'train_accuracy': accuracy / t,
        'l2': global_l2(carry[0]),
        'grad_norm_abs': l1(summed),
        'fisher_potential': fp,
      }
      out.update({column(n, t): float(v) for n, v in values.items()})
  return out
