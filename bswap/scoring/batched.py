"""Batched Fisher scoring: a chunk of candidates at a time, one vmapped call per block type.

The fast engine (`bswap.scoring.engine`) scores one candidate at a time: on a
GPU or TPU that is ~35 small kernels dispatched one after another, and the
device idles between them. Here a chunk of candidates (`search.chunk`) is
scored level by level:

  stem:        one vmapped call over the chunk's stem weights
  block b:     the chunk's candidates grouped by their block type at b (their
               shape class: the input shape is the skeleton's, so the module,
               type, width and stride, decides it); one vmapped forward per group
  head:        one vmapped dL/dx over the chunk
  block b..0:  one vmapped backward per group, on the way back

The pieces are the fast engine's (`block_forward`, `block_backward`, ...)
under `jax.vmap`, so each candidate computes the function the fast engine
computes; the weights are the seed contract's (`Engine.variables`), so every
candidate's score is the one the other engines give it, up to the float
reordering a batched kernel may do. Activations of a level live in one array
of `chunk` rows; a group gathers its members' rows and scatters its outputs
back inside its compiled piece. Group sizes are padded up to a bucket
(powers of 4 below `max_bucket`, and `max_bucket` itself; larger groups are
split), so the compiles are bounded by block types x shapes x buckets, never
by the number of candidates. Padding rows repeat the group's first member and
their outputs are dropped (scatter mode 'drop'), so they change no real row.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np

from bswap.nets import arch as arch_lib
from bswap.scoring import engine as engine_lib

BUCKET_BASE = 4


def buckets(size: int, max_bucket: int) -> list[int]:
  """The padded sizes `size` group members run as: max_bucket pieces, then the smallest fit."""
  out = [max_bucket] * (size // max_bucket)
  rest = size % max_bucket
  if rest:
    bucket = 1
    while bucket < rest:
      bucket *= BUCKET_BASE
    out.append(min(bucket, max_bucket))
  return out


def _stack(trees: list, size: int):
  """The trees stacked leafwise on a new axis, padded to `size` with copies of the first."""
  trees = trees + [trees[0]] * (size - len(trees))
  return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def _indices(members: list[int], bucket: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
  """(take, put): rows to gather (padding repeats the first member), rows to scatter to.

  A padding entry of `put` is `rows`, out of bounds: scatter mode 'drop' discards it.
  """
  pad = bucket - len(members)
  take = np.asarray(members + [members[0]] * pad, np.int32)
  put = np.asarray(members + [rows] * pad, np.int32)
  return take, put


def _group_forward(module):
  """(variables, x_all, y_all, take, put) -> (y_all with the group's rows, probe, pullback)."""
  forward = jax.vmap(engine_lib.block_forward(module))

  def piece(variables, x_all, y_all, take, put):
    y, probe, pullback = forward(variables, x_all[take])
    return y_all.at[put].set(y, mode='drop'), probe, pullback

  return piece


def _group_backward(pullback, probe, dy_all, dx_all, take, put):
  """(dx_all with the group's rows, the group's block Fisher terms)."""
  dx, score = jax.vmap(engine_lib.block_backward)(pullback, probe, dy_all[take])
  return dx_all.at[put].set(dx, mode='drop'), score


def _group_first(pullback, probe, dy_all, take):
  """Block 0's Fisher terms: its dL/dx is never needed, and jit prunes it."""
  return jax.vmap(engine_lib.first_block_fisher)(pullback, probe, dy_all[take])


class Batched(engine_lib.Engine):
  """Scores chunks of genotypes of one skeleton; compiles are shared across chunks."""

  def __init__(
    self,
    skel: arch_lib.Skeleton,
    pieces: engine_lib.Pieces,
    conv_impl: str = 'fast',
    chunk: int = 128,
    max_bucket: int | None = None,
  ):
    super().__init__(skel, pieces, conv_impl)
    if chunk < 1:
      raise ValueError(f'--config.search.chunk must be at least 1; got {chunk}')
    self.chunk = chunk
    self.max_bucket = min(max_bucket or chunk, chunk)

  def _build(self, key, fn, args, donate=()):
    return self.pieces.get(key, lambda: jax.jit(fn, donate_argnums=donate).lower(*args).compile())

  def score(self, geno, seed: int, index: int, images, labels):
    """(total, per_block) of one candidate (a chunk of one)."""
    return self.score_chunk([(geno, index, images, labels)], seed)[0]

  def score_chunk(self, items, seed: int) -> list[tuple[float, np.ndarray]]:
    """[(total, per_block)] of [(genotype, index, images, labels)], `chunk` at a time."""
    out = []
    for start in range(0, len(items), self.chunk):
      out += self._score(items[start : start + self.chunk], seed)
    return out

  def _batch(self, items):
    """(images, labels, shared): one batch for all, or one per row (padded to `chunk` rows)."""
    images, labels = items[0][2], items[0][3]
    if all(it[2] is images and it[3] is labels for it in items):
      return images, labels, True
    rows = [np.asarray(it[2]) for it in items], [np.asarray(it[3]) for it in items]
    pad = self.chunk - len(items)
    return tuple(np.stack(r + [r[0]] * pad) for r in rows) + (False,)

  def _stem(self, module, variables, images, shared):
    fn = jax.vmap(engine_lib.stem_forward(module), in_axes=(0, None if shared else 0))
    key = ('batched-stem', module, engine_lib.spec(images), shared, self.chunk)
    return self._build(key, fn, (variables, images))(variables, images)

  def _head(self, module, variables, x, labels, shared):
    fn = jax.vmap(engine_lib.head_gradient(module), in_axes=(0, 0, None if shared else 0))
    key = ('batched-head', module, engine_lib.spec(x), engine_lib.spec(labels), shared)
    return self._build(key, fn, (variables, x, labels))(variables, x, labels)

  def _forward(self, module, v, x, y, take, put):
    key = ('batched-forward', module, engine_lib.spec(x), len(take))
    return self._build(key, _group_forward(module), (v, x, y, take, put), donate=(2,))

  def _outputs(self, x, position: int) -> jax.Array:
    """Zero rows for the outputs of the blocks at `position` (their shape is the skeleton's)."""
    slot = self.skeleton.slots[position]
    shape = (*x.shape[:2], slot.out_size, slot.out_size, slot.out_ch)
    return jnp.zeros(shape, jnp.promote_types(x.dtype, jnp.float32))

  def _backward(self, module, x, forward, bucket: int, first: bool):
    """The group's backward piece for `forward`'s outputs (block 0: no dL/dx)."""

    def compile_piece():
      y_all, probe, pullback = forward.out_info
      take = jax.ShapeDtypeStruct(probe.shape[:1], np.int32)
      if first:
        return jax.jit(_group_first).lower(pullback, probe, y_all, take).compile()
      args = (pullback, probe, y_all, x, take, take)
      return jax.jit(_group_backward, donate_argnums=(3,)).lower(*args).compile()

    kind = 'batched-first' if first else 'batched-backward'
    # Keyed by `forward` too: its pullback's tree is that forward's (engine.Pieces).
    return self.pieces.get((kind, module, engine_lib.spec(x), bucket, forward), compile_piece)

  def _score(self, items, seed: int) -> list[tuple[float, np.ndarray]]:
    rows, n = self.chunk, len(items)
    variables = [self.variables(geno, seed, index) for geno, index, _, _ in items]
    modules = [self.modules(geno) for geno, *_ in items]
    images, labels, shared = self._batch(items)
    x = self._stem(modules[0][0], _stack([v[0] for v in variables], rows), images, shared)
    # Forward, level by level; each group keeps its probes and pullbacks.
    levels, inputs = [], []
    for b in range(1, len(modules[0]) - 1):
      inputs.append(engine_lib.spec(x))  # the shape only: the activation itself can go
      y, level = None, []
      for module, members in groups(modules, b).items():
        for start, bucket in _pieces(members, self.max_bucket):
          part = members[start : start + bucket]
          take, put = _indices(part, bucket, rows)
          v = _stack([variables[c][b] for c in part], bucket)
          if y is None:  # this level's output rows (the shape is the skeleton's)
            y = self._outputs(x, b - 1)
          forward = self._forward(module, v, x, y, take, put)
          backward = self._backward(module, x, forward, bucket, first=b == 1)
          y, probe, pullback = forward(v, x, y, take, put)
          level.append((part, take, put, probe, pullback, backward))
      levels.append(level)
      x = y
    dy = self._head(modules[0][-1], _stack([v[-1] for v in variables], rows), x, labels, shared)
    return backward_levels(levels, inputs, dy, n)


def groups(modules: list, b: int) -> dict:
  """Block module at position b -> the chunk's members that have it, first seen first."""
  out = collections.defaultdict(list)
  for c, blocks in enumerate(modules):
    out[blocks[b]].append(c)
  return out


def backward_levels(levels: list, inputs: list, dy, n: int) -> list[tuple[float, np.ndarray]]:
  """The activation-only backward, level by level and group by group, from the head's dy.

  `levels[b]` holds (part, take, put, probe, pullback, backward) per group piece;
  `inputs[b]` the shape of level b's input. Returns (total, per-block scores) per member.
  """
  found = []
  for b in range(len(levels) - 1, -1, -1):
    dx = None if b == 0 else jnp.zeros(inputs[b].shape, inputs[b].dtype)
    for part, take, put, probe, pullback, backward in levels[b]:
      if b == 0:
        found.append((b, part, backward(pullback, probe, dy, take)))
      else:
        dx, score = backward(pullback, probe, dy, dx, take, put)
        found.append((b, part, score))
    dy = dx
  per_block = np.zeros((n, len(levels)), np.float64)
  for b, part, score in jax.device_get(found):
    per_block[part, b] = np.asarray(score, np.float64)[: len(part)]
  return [(float(row.sum()), row) for row in per_block]


def _pieces(members: list[int], max_bucket: int) -> list[tuple[int, int]]:
  """(start, bucket) of each piece a group runs as."""
  out, start = [], 0
  for bucket in buckets(len(members), max_bucket):
    out.append((start, bucket))
    start += min(bucket, len(members) - start)
  return out
