"""Fisher potential's scorer on each engine, and what the engines' settings resolve to.

  make(config, skeleton, pieces) -> score(genotype, index, images, labels) -> (total, per_block)

`fast` scores one candidate at a time block by block (engine.py), `batched` a
chunk at a time (batched.py; shared.py under shared init), `reference` whole
networks with plain jax.grad (fisher.py). The registry (metrics.py) lists them
as fisher_potential's engines. Moved from metrics.py unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from absl import logging

from bswap.nets import arch as arch_lib
from bswap.nets import convs
from bswap.nets import models
from bswap.nets import weights
from bswap.scoring import batched as batched_lib
from bswap.scoring import engine as engine_lib
from bswap.scoring import fisher
from bswap.scoring import shared as shared_lib

Scorer = Callable[..., tuple[float, object]]


def init_of(config) -> str:
  """config.search.init ('per_candidate' when absent: configs written before it existed)."""
  return weights.check_init(config.search.get('init', 'per_candidate'))


def fast(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  impl = convs.resolve(config.search.conv_impl, jax.default_backend(), 'search.conv_impl')
  engine = engine_lib.Engine(skel, pieces, impl, init_of(config))
  return lambda geno, index, images, labels: engine.score(geno, config.seed, index, images, labels)


# Candidates per batched or grouped call on a CPU: each holds its saved
# activations (~350 MB for WRN-40-2 at batch 128), times search.threads calls
# in flight, and vmapped convolutions add XLA:CPU working memory on top (the
# batched engine at chunk 32 passed 18 GiB resident: docs/benchmarks.md).
CPU_CHUNK = 8


def chunk_of(config, platform: str) -> int:
  """Candidates per batched call: search.chunk, at most CPU_CHUNK on a CPU."""
  return min(config.search.chunk, CPU_CHUNK) if platform == 'cpu' else config.search.chunk


class ChunkScorer:
  """A scorer that also scores a chunk of candidates at once (`score_chunk`)."""

  def __init__(self, engine: batched_lib.Batched, seed: int, threads: int = 1):
    self.engine, self.seed = engine, seed
    self.chunk_threads = threads  # chunks scored concurrently

  @property
  def chunk(self) -> int:
    return self.engine.chunk

  def __call__(self, geno, index, images, labels):
    return self.engine.score(geno, self.seed, index, images, labels)

  def score_chunk(self, items) -> list[tuple[float, object]]:
    """[(total, per_block)] of [(genotype, index, images, labels)], in their order."""
    return self.engine.score_chunk(items, self.seed)


def batched(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  impl = convs.resolve(config.search.conv_impl, jax.default_backend(), 'search.conv_impl')
  # On a CPU a chunk holds at most CPU_CHUNK candidates (memory; larger chunks
  # amortise dispatch, which a CPU's milliseconds-long kernels do not need).
  cpu = jax.default_backend() == 'cpu'
  chunk = chunk_of(config, jax.default_backend())
  if chunk < config.search.chunk:
    logging.info(
      'On a CPU the batched engine scores %d candidates per call, not %d',
      chunk,
      config.search.chunk,
    )
  if init_of(config) == 'shared':  # one kernel per group over the members' batches
    # On a CPU one call keeps about one core busy: chunks run on search.threads
    # threads, as the fast engine's candidates do.
    engine = shared_lib.Shared(skel, pieces, impl, chunk)
    return ChunkScorer(engine, config.seed, config.search.threads if cpu else 1)
  return ChunkScorer(batched_lib.Batched(skel, pieces, impl, chunk), config.seed)


def reference(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  del pieces  # one compile per candidate, cached by fisher.jitted_fisher
  if init_of(config) != 'per_candidate':
    raise ValueError(
      "--config.search.init='shared' is scored by the fast and batched engines only; "
      'set --config.search.engine=fast or batched (or auto)'
    )

  def score(geno, index, images, labels):
    model = models.build(geno, skel.num_classes)
    variables = models.init_variables(model, config.seed, index, skel.image_size)
    total, per_block = jax.device_get(fisher.jitted_fisher(model)(variables, images, labels))
    return float(total), per_block

  return score
