"""Grouped Fisher scoring under shared initialisation: one convolution per block type and level.

With `config.search.init = 'shared'` every candidate that has type t at block
position b has the same weights there (`bswap.nets.weights.shared_key`). So
the batched engine's grouping (a chunk scored level by level, its candidates
grouped by block type; `bswap.scoring.batched`) needs no vmap over weight
sets: a group runs as one block over its members' concatenated batches (k x N
images, one kernel), with batch norm's statistics per member, since the block
is vmapped over the activations only, with the weights closed over
unbatched. The activation-only backward is the pullback of that whole group
call: the loss it differentiates is the sum of the members' losses, and a
member's activations touch its own loss only, so each member gets exactly its
own dL/dx and its own Fisher terms. The stem is one call for the chunk when
the batch is shared (its weights and input are the same for all).

Exactness: each member computes what `engine.Engine` computes for it with
the same shared weights, up to float reordering in the larger kernels
(tests/scoring/shared_test.py: float64 to 1e-9, float32 within the noise
floor measured against float64). Buckets, padding and the chunk are the
batched engine's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bswap.nets import arch as arch_lib
from bswap.nets import blocks
from bswap.scoring import batched
from bswap.scoring import engine as engine_lib
from bswap.scoring import fisher


def _group_forward(module):
  """(variables, x_all, y_all, take, put) -> (y_all with the group's rows, probes, pullback)."""

  def one(variables, x, eps):
    perturbed = {**variables, 'perturbations': {blocks.PROBE: eps}}
    (y, probe), _ = module.apply(perturbed, x, train=True, mutable=['batch_stats'])
    return y, probe

  def piece(variables, x_all, y_all, take, put):
    xs = x_all[take]
    size = arch_lib.conv_out_size(xs.shape[2], 3, module.stride)
    eps = jnp.zeros((*xs.shape[:2], size, size, module.out_ch), xs.dtype)

    def apply(xs, eps):  # members vmapped over their activations; the weights are shared
      return jax.vmap(one, in_axes=(None, 0, 0))(variables, xs, eps)

    apply = jax.checkpoint(apply, policy=jax.checkpoint_policies.dots_saveable)
    ys, pullback, probes = jax.vjp(apply, xs, eps, has_aux=True)
    return y_all.at[put].set(ys, mode='drop'), probes, pullback

  return piece


def _group_backward(pullback, probes, dy_all, dx_all, take, put):
  """(dx_all with the group's rows, the members' block Fisher terms)."""
  dxs, dprobes = pullback(dy_all[take])
  return dx_all.at[put].set(dxs, mode='drop'), jax.vmap(fisher.block_fisher)(probes, dprobes)


def _group_first(pullback, probes, dy_all, take):
  """Block 0's Fisher terms: its dL/dx is never needed, and jit prunes it."""
  _, dprobes = pullback(dy_all[take])
  return jax.vmap(fisher.block_fisher)(probes, dprobes)


class Shared(batched.Batched):
  """Scores chunks of genotypes under shared initialisation, one kernel per group."""

  def __init__(self, skel, pieces, conv_impl='fast', chunk=128, max_bucket=None):
    super().__init__(skel, pieces, conv_impl, chunk, max_bucket)
    self.init = 'shared'

  def _stem_rows(self, module, variables, images, shared):
    """The stem's output: one row for a shared batch, else one per candidate row."""
    fn = engine_lib.stem_forward(module)
    if shared:
      key = ('stem', module, engine_lib.spec(images))
      return self._build(key, fn, (variables, images))(variables, images)[None]
    fn = jax.vmap(fn, in_axes=(None, 0))
    key = ('shared-stem', module, engine_lib.spec(images))
    return self._build(key, fn, (variables, images))(variables, images)

  def _head_rows(self, module, variables, x, labels, shared):
    fn = jax.vmap(engine_lib.head_gradient(module), in_axes=(None, 0, None if shared else 0))
    key = ('shared-head', module, engine_lib.spec(x), engine_lib.spec(labels), shared)
    return self._build(key, fn, (variables, x, labels))(variables, x, labels)

  def _group_forward(self, module, v, x, y, take, put):
    key = ('shared-forward', module, engine_lib.spec(x), len(take))
    return self._build(key, _group_forward(module), (v, x, y, take, put), donate=(2,))

  def _group_backward(self, module, x, forward, bucket: int, first: bool):
    def compile_piece():
      y_all, probes, pullback = forward.out_info
      take = jax.ShapeDtypeStruct(probes.shape[:1], np.int32)
      if first:
        return jax.jit(_group_first).lower(pullback, probes, y_all, take).compile()
      args = (pullback, probes, y_all, x, take, take)
      return jax.jit(_group_backward, donate_argnums=(3,)).lower(*args).compile()

    kind = 'shared-first' if first else 'shared-backward'
    # Keyed by `forward` too: its pullback's tree is that forward's (engine.Pieces).
    return self.pieces.get((kind, module, engine_lib.spec(x), bucket, forward), compile_piece)

  def _level_outputs(self, x, position: int) -> jax.Array:
    slot = self.skeleton.slots[position]
    shape = (self.chunk, x.shape[1], slot.out_size, slot.out_size, slot.out_ch)
    return jnp.zeros(shape, jnp.promote_types(x.dtype, jnp.float32))

  def _score(self, items, seed: int) -> list[tuple[float, np.ndarray]]:
    rows, n = self.chunk, len(items)
    variables = [self.variables(geno, seed, index) for geno, index, _, _ in items]
    modules = [self.modules(geno) for geno, *_ in items]
    images, labels, shared = self._batch(items)
    x = self._stem_rows(modules[0][0], variables[0][0], images, shared)
    # Forward, level by level; each group keeps its probes and pullback.
    levels, inputs = [], []
    for b in range(1, len(modules[0]) - 1):
      inputs.append(engine_lib.spec(x))
      y, level = self._level_outputs(x, b - 1), []
      for module, members in batched.groups(modules, b).items():
        v = variables[members[0]][b]  # the same for every member: shared init
        for start, bucket in batched._pieces(members, self.max_bucket):
          part = members[start : start + bucket]
          own, put = batched._indices(part, bucket, rows)  # the members' rows (dy, y)
          take = np.zeros_like(own) if x.shape[0] == 1 else own  # the stem's one row: all
          forward = self._group_forward(module, v, x, y, take, put)
          backward = self._group_backward(module, x, forward, bucket, first=b == 1)
          y, probes, pullback = forward(v, x, y, take, put)
          level.append((part, own, put, probes, pullback, backward))
      levels.append(level)
      x = y
    dy = self._head_rows(modules[0][-1], variables[0][-1], x, labels, shared)
    return batched.backward_levels(levels, inputs, dy, n)
