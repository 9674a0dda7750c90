"""Fast Fisher scoring: block by block, with compiles shared by every candidate.

The reference path (`bswap.fisher`) compiles a whole network per candidate:
on a CPU that is tens of seconds each. Here a candidate is scored as

  stem -> block_0 -> ... -> block_{B-1} -> head          (forward, saving residuals)
  dL/dx_head -> block_{B-1} -> ... -> block_0             (activation-only backward)

with one compiled forward and one compiled backward per (block type, input
shape, stride), reused by every candidate, so the number of compiles is
bounded by the menu and the skeleton, not by the number of candidates.

Why this is exact: each block's pullback returns dL/d(probe) next to dL/dx
(the probe's zero perturbation is an input of the differentiated function,
as in the reference path; in a pre-activation block it is just the cotangent
of the block's output, since the probe is added straight to the skip). No
weight gradient is ever formed (the weights are closed over as constants),
and the weights themselves come from `models.init_part_fn`, the seed
contract's generator, so candidate i has bit-for-bit the weights the
reference path gives it.

Convolutions use `convs.conv2d(impl='fast')` by default: the same function
with kernels XLA:CPU runs faster (grouped convs as block-diagonal GEMMs,
depthwise as shifted multiply-adds). Scores match the reference up to float
reordering; `tests/engine_test.py` checks it in float32 and float64.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bswap import arch as arch_lib
from bswap import blocks
from bswap import distill
from bswap import fisher
from bswap import genotype as genotype_lib
from bswap import host_memory
from bswap import models


@functools.cache
def _block_forward(module: nn.Module):
  """jit: (variables, x) -> (y, probe, pullback); the pullback holds the residuals.

  The pullback maps dL/dy to (dL/dx, dL/dprobe): the probe's zero perturbation
  is a second input of the differentiated function, as in the reference path.
  """

  def forward(variables, x):
    size = arch_lib.conv_out_size(x.shape[1], 3, module.stride)
    eps = jnp.zeros((x.shape[0], size, size, module.out_ch), x.dtype)

    def apply(x, eps):
      perturbed = {**variables, 'perturbations': {blocks.PROBE: eps}}
      (y, probe), _ = module.apply(perturbed, x, train=True, mutable=['batch_stats'])
      return y, probe

    y, pullback, probe = jax.vjp(apply, x, eps, has_aux=True)
    return y, probe, pullback

  return jax.jit(forward)


@jax.jit
def _block_backward(pullback, probe, dy):
  """(dL/dx, block Fisher) from the block's saved pullback and dL/dy."""
  dx, dprobe = pullback(dy)
  return dx, fisher.block_fisher(probe, dprobe)


@jax.jit
def _first_block_fisher(pullback, probe, dy):
  """Block 0's Fisher term: its dL/dx is never needed, and jit prunes it."""
  _, dprobe = pullback(dy)
  return fisher.block_fisher(probe, dprobe)


# Pre-activation blocks add the probe straight to the skip: dL/dprobe = dL/dy.
_block_fisher = jax.jit(fisher.block_fisher)


@functools.cache
def _stem_forward(module: nn.Module):
  """jit: (variables, images) -> the stem's output (batch statistics in training mode)."""

  def forward(variables, images):
    return module.apply(variables, images, train=True, mutable=['batch_stats'])[0]

  return jax.jit(forward)


@functools.cache
def _head_gradient(module: nn.Module):
  """jit: (variables, x, labels) -> dL/dx for the mean cross-entropy of the head."""

  def loss(x, variables, labels):
    logits, _ = module.apply(variables, x, train=True, mutable=['batch_stats'])
    return distill.cross_entropy(logits, labels)

  return jax.jit(jax.grad(loss))


class Engine:
  """Scores genotypes of one skeleton; compiled pieces are shared across calls."""

  def __init__(self, skel: arch_lib.Skeleton, conv_impl: str = 'fast', low_memory: bool = False):
    self.skeleton = skel
    self.conv_impl = conv_impl
    # Else the process keeps what every compile freed (bswap/host_memory.py).
    host_memory.return_freed_memory(low=low_memory)

  def variables(self, geno: genotype_lib.Genotype, seed: int, index: int):
    """Per-part variables of candidate `index`, exactly as `models.init_variables`."""
    parts = models.build_parts(geno, self.skeleton, named=False)  # the canonical modules
    return [
      models.init_part_fn(module, shape[2])(models.block_key(seed, index, part))
      for _, module, part, shape in parts
    ]

  def score(self, geno: genotype_lib.Genotype, seed: int, index: int, images, labels):
    """(total, per_block) Fisher potential, as numpy float values."""
    per_block = self.score_async(geno, seed, index, images, labels)
    per_block = np.asarray(jax.device_get(per_block), dtype=np.float64)
    return float(per_block.sum()), per_block

  def score_async(self, geno, seed, index, images, labels) -> jax.Array:
    """Per-block scores as a device array, without waiting for the result."""
    variables = self.variables(geno, seed, index)
    parts = models.build_parts(geno, self.skeleton, named=False, conv_impl=self.conv_impl)
    stem, *block_parts, head = [module for _, module, _, _ in parts]
    # Forward: block by block, keeping each block's probe and pullback.
    x = _stem_forward(stem)(variables[0], images)
    saved = []
    for module, v in zip(block_parts, variables[1:-1]):
      x, probe, pullback = _block_forward(module)(v, x)
      saved.append((probe, pullback))
    # Backward, activation-only; the first block needs no dL/dx.
    dy = _head_gradient(head)(x, variables[-1], labels)
    scores = []
    for b in range(len(saved) - 1, -1, -1):
      probe, pullback = saved[b]
      if b > 0:
        dy, score = _block_backward(pullback, probe, dy)
      elif self.skeleton.post_activation:  # a ReLU lies between the probe and the output
        score = _first_block_fisher(pullback, probe, dy)
      else:
        score = _block_fisher(probe, dy)
      scores.append(score)
    return jnp.stack(scores[::-1])
