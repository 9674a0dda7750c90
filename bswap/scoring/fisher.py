"""Fisher potential of a network at initialisation (SPEC section 4).

For each block, A is the residual branch's output before the add (the probe
sown by `bswap.blocks`) and g = dL/dA for the batch-mean cross-entropy L, with
batch norm in training mode. Per channel (Theis et al. 2018, "Faster gaze
prediction with dense networks and Fisher pruning", eq. 2 with the brackets
the BlockSwap paper lost):

    s[n, c] = sum_{h, w} A[n, h, w, c] * g[n, h, w, c]
    F[c]    = 0.5 * mean_n s[n, c] ** 2

A block's potential is sum_c F[c]; the network's is the sum over blocks.
These are pure functions of (model, variables, batch); `jax.jit` them with
the model static. This is the plain reference path: one compile per
architecture.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from bswap import losses
from bswap.nets import blocks


def _forward(model: nn.Module, variables, images):
  """Training-mode forward: (logits, probes), the probes read from what blocks sow."""
  (logits, _), state = model.apply(
    variables, images, train=True, mutable=['batch_stats', 'intermediates']
  )
  sown = state['intermediates']
  probes = tuple(sown[f'block_{b}'][blocks.PROBE][-1] for b in range(len(sown)))
  return logits, probes


def zero_perturbations(model: nn.Module, variables, images: jax.Array):
  """Zero perturbations shaped like the probes *at this batch size*.

  Built from the real batch: perturbations created at another batch size
  would broadcast and return the batch-summed gradient without any error.
  In the probes' dtype: float32 zeros would round dL/dA to float32 under x64.
  """
  shapes = jax.eval_shape(lambda v, x: _forward(model, v, x)[1], variables, images)
  return {f'block_{b}': {blocks.PROBE: jnp.zeros(s.shape, s.dtype)} for b, s in enumerate(shapes)}


def probe_gradients(model: nn.Module, variables, images, labels):
  """(probes, dL/dprobes): each a tuple of (N, H, W, C) arrays, one per block."""
  # Any perturbations passed in (e.g. made by init at another batch size) are dropped.
  variables = {k: v for k, v in variables.items() if k not in ('perturbations', 'intermediates')}
  perturbations = zero_perturbations(model, variables, images)

  def loss(perturbations):
    logits, probes = _forward(model, {**variables, 'perturbations': perturbations}, images)
    return losses.cross_entropy(logits, labels), probes

  # Only the perturbations are differentiated: no weight gradients are formed.
  grads, probes = jax.grad(loss, has_aux=True)(perturbations)
  return probes, tuple(grads[f'block_{b}'][blocks.PROBE] for b in range(len(probes)))


def block_fisher(activation: jax.Array, gradient: jax.Array) -> jax.Array:
  """sum_c 0.5 * mean_n (sum_hw A * g)^2 for one block, in float32 at least."""
  dtype = jnp.promote_types(jnp.result_type(activation, gradient), jnp.float32)
  a, g = activation.astype(dtype), gradient.astype(dtype)
  per_channel = jnp.sum(a * g, axis=(1, 2))  # (N, C)
  return jnp.sum(0.5 * jnp.mean(per_channel**2, axis=0))


def fisher_potential(model: nn.Module, variables, images, labels):
  """(total, per_block): the network's Fisher potential and each block's (B,)."""
  probes, grads = probe_gradients(model, variables, images, labels)
  per_block = jnp.stack([block_fisher(a, g) for a, g in zip(probes, grads)])
  return jnp.sum(per_block), per_block


# Few: a whole network's executable holds hundreds of memory maps (memory_maps.py).
@functools.lru_cache(maxsize=16)
def jitted_fisher(model: nn.Module):
  """`fisher_potential` compiled for one architecture (cached per model)."""
  return jax.jit(functools.partial(fisher_potential, model))
