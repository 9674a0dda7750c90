"""A candidate as the zero-cost proxies see it: its genotype, weights and batch, and its passes.

`Candidate.run(pass)` computes one pass of PROXIES.md section 2 on the block
engine (proxies/blockwise.py) when it has one, else on the whole network
(proxies/passes.py). Moved from metrics.py unchanged.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from bswap.nets import arch as arch_lib
from bswap.nets import models
from bswap.scoring.proxies import blockwise
from bswap.scoring.proxies import passes as passes_lib


@dataclasses.dataclass
class Candidate:
  """One genotype, initialised by the seed contract, and the batch it is scored on."""

  model: object
  variables: dict
  images: jax.Array
  labels: jax.Array
  seed: int
  index: int
  skeleton: arch_lib.Skeleton
  genotype: object = None
  # The block engine, for the passes it runs (blockwise.PASSES); None: whole network.
  engine: blockwise.ProxyEngine | None = None
  wanted: tuple[str, ...] = ()  # the metrics asked for: the engine computes only what they read

  @classmethod
  def build(cls, geno, skel: arch_lib.Skeleton, seed: int, index: int, images, labels, engine=None):
    """With an engine, whole-network passes use its convs ('fast' on CPUs: same function)."""
    model = models.build(geno, skel.num_classes, engine.base.conv_impl if engine else 'xla')
    variables = None if engine else models.init_variables(model, seed, index, skel.image_size)
    return cls(model, variables, images, labels, seed, index, skel, geno, engine)

  def _variables(self):
    if self.variables is None:  # the engine draws its own per part; the whole net's on demand
      self.variables = models.init_variables(
        self.model, self.seed, self.index, self.skeleton.image_size
      )
    return self.variables

  def zen_key(self) -> jax.Array:
    return passes_lib.zen_key(self.seed, self.index, self.skeleton.num_blocks)

  def run_passes(self, names) -> dict:
    """{pass: outputs} of each pass in `names`, each run once. On the block engine, a loss
    pass also gives the codes and jac passes from its forward sweep (`run_loss`)."""
    out = {}
    if self.engine is not None and 'loss' in names:
      also = tuple(p for p in ('codes', 'jac') if p in names)
      out = self.engine.run_loss(*self._engine_args(), also=also)
    return {p: out[p] if p in out else self.run(p) for p in names}

  def _engine_args(self) -> tuple:
    """(genotype, seed, index, images, labels, loss outputs) of the block engine's passes."""
    outputs = blockwise.loss_outputs(self.wanted)
    return (self.genotype, self.seed, self.index, self.images, self.labels, outputs)

  def run(self, name: str):
    """The outputs of pass `name` (passes.py), on the host."""
    if self.engine is not None and name in blockwise.PASSES:
      return self.engine.run(name, *self._engine_args())
    m, v, x, y = self.model, self._variables(), self.images, self.labels
    if name == 'static':
      return {**_counts(m, x.shape[1:]), 'l2_norm': passes_lib.l2_norms(v)}
    if name == 'syn':
      with jax.enable_x64(True):  # synflow's products overflow float32 (PROXIES.md 1)
        return np.asarray(passes_lib.jitted('syn', m)(v, x.shape))
    if name == 'meco':
      return jax.device_get(passes_lib.jitted('meco', m)(v, x[:1]))
    if name == 'zen':
      k_weights, x1, x2 = passes_lib.zen_draws(self.zen_key(), x.shape, passes_lib.network_dtype(x))
      gaussian = passes_lib.gaussian_kernels(v, k_weights)
      return jax.device_get(passes_lib.jitted('zen', m)(gaussian, x1, x2))
    if name == 'zico':
      grads = passes_lib.jitted('kernel_gradients', m)
      per_batch = [grads(v, xb, yb) for xb, yb in passes_lib.halves(x, y)]
      return np.asarray(_zico_sums(per_batch))
    if name in ('jac', 'codes'):
      return np.asarray(passes_lib.jitted(name, m)(v, x))
    return jax.device_get(passes_lib.jitted(name, m)(v, x, y))  # loss, hvp


@functools.lru_cache(maxsize=256)
def _counts(model, image_shape: tuple[int, ...]) -> dict:
  return passes_lib.counts(model, image_shape)


_zico_sums = jax.jit(passes_lib.zico_sums)
