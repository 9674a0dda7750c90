"""Fast Fisher scoring: block by block, with compiles shared by every candidate.

The reference path (`bswap.scoring.fisher`) compiles a whole network per candidate:
on a CPU that is tens of seconds each. Here a candidate is scored as

  stem -> block_0 -> ... -> block_{B-1} -> head          (forward, saving residuals)
  dL/dx_head -> block_{B-1} -> ... -> block_0             (activation-only backward)

with one compiled forward and one compiled backward per (block type, input
shape, stride), reused by every candidate, so the number of compiles is
bounded by the menu and the skeleton, not by the number of candidates. The
pieces are compiled ahead of time, once each even when several candidates are
scored on threads at the same time (`search.threads`), and the weights come
from a generator that needs no per-shape compile (`bswap.nets.weights`).

Why this is exact: each block's pullback returns dL/d(probe) next to dL/dx
(the probe's zero perturbation is an input of the differentiated function,
as in the reference path; in a pre-activation block it is just the cotangent
of the block's output, since the probe is added straight to the skip). No
weight gradient is ever formed (the weights are closed over as constants),
and the weights themselves come from `bswap.nets.weights`, the seed
contract's generator, so candidate i has bit-for-bit the weights the
reference path gives it.

Convolutions use `convs.conv2d(impl='fast')` by default: the same function
with kernels XLA:CPU runs faster (grouped convs as block-diagonal GEMMs,
depthwise as shifted multiply-adds). Scores match the reference up to float
reordering; `tests/scoring/engine_test.py` checks it in float32 and float64.
"""

from __future__ import annotations

import concurrent.futures
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bswap import losses
from bswap.nets import arch as arch_lib
from bswap.nets import blocks
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.nets import weights
from bswap.scoring import fisher
from bswap.scoring import memory_maps


def block_forward(module: nn.Module):
  """(variables, x) -> (y, probe, pullback); the pullback holds the residuals.

  The pullback maps dL/dy to (dL/dx, dL/dprobe): the probe's zero perturbation
  is a second input of the differentiated function, as in the reference path.
  Only conv outputs are kept for the backward pass (`dots_saveable`); batch
  norms, ReLUs and depthwise multiply-adds are recomputed there from them.
  That keeps 2 activations per block instead of 6.5-13 (3.25 per BN-ReLU:
  input, centred input, output, mask), so two candidates in flight need less
  memory than one did, at no measurable cost in time (docs/benchmarks.md).
  """

  def forward(variables, x):
    size = arch_lib.conv_out_size(x.shape[1], 3, module.stride)
    eps = jnp.zeros((x.shape[0], size, size, module.out_ch), x.dtype)

    def apply(x, eps):
      perturbed = {**variables, 'perturbations': {blocks.PROBE: eps}}
      (y, probe), _ = module.apply(perturbed, x, train=True, mutable=['batch_stats'])
      return y, probe

    apply = jax.checkpoint(apply, policy=jax.checkpoint_policies.dots_saveable)
    y, pullback, probe = jax.vjp(apply, x, eps, has_aux=True)
    return y, probe, pullback

  return forward


def block_backward(pullback, probe, dy):
  """(dL/dx, block Fisher) from the block's saved pullback and dL/dy."""
  dx, dprobe = pullback(dy)
  return dx, fisher.block_fisher(probe, dprobe)


def first_block_fisher(pullback, probe, dy):
  """Block 0's Fisher term: its dL/dx is never needed, and jit prunes it."""
  _, dprobe = pullback(dy)
  return fisher.block_fisher(probe, dprobe)


def stem_forward(module: nn.Module):
  """(variables, images) -> the stem's output (batch statistics in training mode)."""

  def forward(variables, images):
    return module.apply(variables, images, train=True, mutable=['batch_stats'])[0]

  return forward


def head_gradient(module: nn.Module):
  """(variables, x, labels) -> dL/dx for the mean cross-entropy of the head."""

  def loss(x, variables, labels):
    logits, _ = module.apply(variables, x, train=True, mutable=['batch_stats'])
    return losses.cross_entropy(logits, labels)

  return lambda variables, x, labels: jax.grad(loss)(x, variables, labels)


class Pieces:
  """The compiled pieces of one search: built once each, thread-safe, released at the end.

  With candidates scored on several threads, two of them often need the same
  new executable at once; jit's own cache would let both compile it, so
  concurrent askers of a key wait for one build. The search owns the table
  (`with Pieces() as pieces:`) and drops it when it ends, so no executable
  outlives the search (a pipeline trains next). The keys are bounded by the
  menu, the skeleton's shapes and the kinds of piece, not by the number of
  candidates; past `limit` entries, or when the process's memory maps pass
  `map_budget` (`memory_maps`: each executable maps tens of regions, and
  Linux caps them), the least recently used are dropped (and rebuilt, or read
  from the persistent cache, if asked for again). A piece compiled for another
  piece's outputs (a backward taking a forward's pullback) has that piece in
  its key: the pullback's tree names the forward's own trace.
  """

  def __init__(self, limit: int = 4096, map_budget: int | None | str = 'auto', check_every=16):
    self._lock = threading.Lock()
    self._futures: dict = {}  # the least recently used first
    self.limit = limit
    # 'auto': a share of vm.max_map_count; None: no budget. Checked every few builds.
    self.map_budget = memory_maps.budget() if map_budget == 'auto' else map_budget
    self.check_every = check_every
    self.builds = 0
    self.dropped = 0

  def get(self, key, build):
    with self._lock:
      future = self._futures.pop(key, None)
      owner = future is None
      if owner:
        future = concurrent.futures.Future()
        self.builds += 1
      self._futures[key] = future  # now the most recently used
      while len(self._futures) > self.limit:  # waiters hold their futures
        del self._futures[next(iter(self._futures))]
    if owner:
      try:
        future.set_result(build())
      except BaseException as e:
        future.set_exception(e)
        with self._lock:
          self._futures.pop(key, None)  # a later call may retry
        raise
      if self.map_budget is not None and self.builds % self.check_every == 0:
        self._keep_maps_under_budget()
    return future.result()

  def _keep_maps_under_budget(self) -> None:
    """Past the map budget, drop the least recently used quarter of the built pieces."""
    used = memory_maps.in_use()
    if used is None or used <= self.map_budget:
      return
    with self._lock:
      built = [k for k, f in self._futures.items() if f.done()]
      drop = built[: max(1, len(built) // 4)]
      for k in drop:
        del self._futures[k]
      self.dropped += len(drop)
    logging.info(
      'The process maps %d memory regions, past its budget of %d (of vm.max_map_count %s): '
      'dropped the %d least recently used of %d compiled pieces (rebuilt, or read from the '
      'persistent cache, when needed again)',
      used,
      self.map_budget,
      memory_maps.limit(),
      len(drop),
      len(built),
    )

  def __len__(self) -> int:
    return len(self._futures)

  def keys(self) -> list:
    with self._lock:
      return list(self._futures)

  def clear(self) -> None:
    with self._lock:
      self._futures.clear()

  def __enter__(self) -> Pieces:
    return self

  def __exit__(self, *exc) -> None:
    self.clear()


def spec(x) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


class Engine:
  """Scores genotypes of one skeleton; compiled pieces are shared across calls and threads."""

  def __init__(
    self,
    skel: arch_lib.Skeleton,
    pieces: Pieces,
    conv_impl: str = 'fast',
    init: str = 'per_candidate',
  ):
    self.skeleton = skel
    self.pieces = pieces
    self.conv_impl = conv_impl
    self.init = weights.check_init(init)
    self._shared: dict = {}  # (seed, part, type) -> variables, under shared init

  def _compiled(self, key, fn, *args):
    """`fn` compiled ahead of time for the shapes of `args` (arrays or specs), once per key."""
    return self.pieces.get(key, lambda: jax.jit(fn).lower(*args).compile())

  def variables(self, geno: genotype_lib.Genotype, seed: int, index: int):
    """Per-part variables of candidate `index`: `models.init_variables`'s, or the shared ones.

    Under shared init a part's variables depend on (seed, part, type) only, so
    they are drawn once and reused by every candidate (the same arrays).
    """
    parts = models.build_parts(geno, self.skeleton, named=False)  # the canonical modules
    if self.init == 'per_candidate':
      return [
        weights.part_variables(module, shape[2], weights.part_key(seed, index, part))
        for _, module, part, shape in parts
      ]
    types = ['stem', *geno.blocks, 'head']
    out = []
    for (_, module, part, shape), type_name in zip(parts, types):
      key = (seed, part, type_name)
      if key not in self._shared:  # a race only draws the same values twice
        self._shared[key] = weights.part_variables(
          module, shape[2], weights.shared_key(seed, part, type_name)
        )
      out.append(self._shared[key])
    return out

  def modules(self, geno):
    parts = models.build_parts(geno, self.skeleton, named=False, conv_impl=self.conv_impl)
    return [module for _, module, _, _ in parts]

  def _stem(self, module, v, images):
    return self._compiled(('stem', module, spec(images)), stem_forward(module), v, images)

  def _forward(self, module, v, x):
    return self._compiled(('forward', module, spec(x)), block_forward(module), v, x)

  def _backward(self, module, x, forward, first: bool):
    """The backward piece of a block (for `forward`'s outputs); block 0 needs no dL/dx.

    Called as (pullback, probe, dy), except a pre-activation block 0: (probe, dy).
    """

    def build(fn, with_pullback=True):
      def compile_piece():  # out_info costs ~0.2 ms: read it only to compile
        y, probe, pullback = forward.out_info  # the pullback's tree is the one forward returns
        args = (pullback, probe, y) if with_pullback else (probe, y)
        return jax.jit(fn).lower(*args).compile()

      return compile_piece

    # Keyed by `forward` too: its pullback's tree names the forward's trace, so a forward
    # rebuilt after the table dropped it needs its own backward.
    if not first:
      return self.pieces.get(('backward', module, spec(x), forward), build(block_backward))
    if self.skeleton.post_activation:  # a ReLU lies between the probe and the output
      return self.pieces.get(('first', module, spec(x), forward), build(first_block_fisher))
    # Pre-activation: the probe is added straight to the skip, dL/dprobe = dL/dy.
    # One piece per probe shape (batch, size, size, out_ch), whatever the block type.
    size = arch_lib.conv_out_size(x.shape[1], 3, module.stride)
    key = ('fisher', x.shape[0], size, module.out_ch, x.dtype)
    return self.pieces.get(key, build(fisher.block_fisher, with_pullback=False))

  def _head(self, module, v, x, labels):
    key = ('head', module, spec(x), spec(labels))
    return self._compiled(key, head_gradient(module), v, x, labels)

  def score(self, geno: genotype_lib.Genotype, seed: int, index: int, images, labels):
    """(total, per_block) Fisher potential, as numpy float values."""
    per_block = self.score_async(geno, seed, index, images, labels)
    per_block = np.asarray(jax.device_get(per_block), dtype=np.float64)
    return float(per_block.sum()), per_block

  def score_async(self, geno, seed, index, images, labels) -> jax.Array:
    """Per-block scores as a device array, without waiting for the result."""
    variables = self.variables(geno, seed, index)
    stem, *block_modules, head = self.modules(geno)
    # Forward: block by block, keeping each block's probe and pullback.
    x = self._stem(stem, variables[0], images)(variables[0], images)
    saved = []
    for module, v in zip(block_modules, variables[1:-1]):
      forward = self._forward(module, v, x)
      backward = self._backward(module, x, forward, first=not saved)
      x, probe, pullback = forward(v, x)
      saved.append((probe, pullback, backward))
    # Backward, activation-only; the first block needs no dL/dx.
    dy = self._head(head, variables[-1], x, labels)(variables[-1], x, labels)
    scores = []
    for b in range(len(saved) - 1, -1, -1):
      probe, pullback, backward = saved[b]
      if b > 0:
        dy, score = backward(pullback, probe, dy)
      elif self.skeleton.post_activation:
        score = backward(pullback, probe, dy)
      else:
        score = backward(probe, dy)
      scores.append(score)
    return jnp.stack(scores[::-1])
