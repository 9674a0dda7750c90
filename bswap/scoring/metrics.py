"""Ranking metrics: the registry that `config.search.metric` names.

An entry gives the metric's name, a one-line definition with its citation,
its sign (+1: a higher score predicts a better network, -1: a lower one), the
label plots and logs use, and one scorer factory per engine:

  make(config, skeleton, pieces) -> score(genotype, index, images, labels) -> (total, per_block)

'fast' is the block-by-block engine (engine.py: compiles shared by every
candidate, held in the search's `pieces`); 'batched' the same pieces vmapped
over a chunk of candidates, block type by block type (batched.py; its scorer
also has `chunk` and `score_chunk(items)`, which the search uses); 'reference'
the plain whole-network path (one compile per candidate; the equivalence
target of the tests). 'auto' (`resolve_engine`) is 'fast' on CPUs and
'batched' on GPUs and TPUs. A new metric is one module with its functions and
one entry here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping

import jax

from bswap.nets import arch as arch_lib
from bswap.nets import convs
from bswap.nets import models
from bswap.scoring import batched as batched_lib
from bswap.scoring import engine as engine_lib
from bswap.scoring import fisher

Scorer = Callable[..., tuple[float, object]]


@dataclasses.dataclass(frozen=True)
class Metric:
  name: str
  label: str  # for plots and logs
  definition: str  # one line, with its citation
  sign: int  # +1: higher predicts better; -1: lower does
  engines: Mapping[str, Callable[..., Scorer]]  # engine name -> make(config, skeleton, pieces)


def _fisher_fast(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  impl = convs.resolve(config.search.conv_impl, jax.default_backend(), 'search.conv_impl')
  engine = engine_lib.Engine(skel, pieces, impl)
  return lambda geno, index, images, labels: engine.score(geno, config.seed, index, images, labels)


class ChunkScorer:
  """A scorer that also scores a chunk of candidates at once (`score_chunk`)."""

  def __init__(self, engine: batched_lib.Batched, seed: int):
    self.engine, self.seed = engine, seed

  @property
  def chunk(self) -> int:
    return self.engine.chunk

  def __call__(self, geno, index, images, labels):
    return self.engine.score(geno, self.seed, index, images, labels)

  def score_chunk(self, items) -> list[tuple[float, object]]:
    """[(total, per_block)] of [(genotype, index, images, labels)], in their order."""
    return self.engine.score_chunk(items, self.seed)


def _fisher_batched(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  impl = convs.resolve(config.search.conv_impl, jax.default_backend(), 'search.conv_impl')
  return ChunkScorer(batched_lib.Batched(skel, pieces, impl, config.search.chunk), config.seed)


def _fisher_reference(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  del pieces  # one compile per candidate, cached by fisher.jitted_fisher

  def score(geno, index, images, labels):
    model = models.build(geno, skel.num_classes)
    variables = models.init_variables(model, config.seed, index, skel.image_size)
    total, per_block = jax.device_get(fisher.jitted_fisher(model)(variables, images, labels))
    return float(total), per_block

  return score


METRICS = {
  'fisher_potential': Metric(
    'fisher_potential',
    'Fisher potential',
    'Sum over blocks of the Fisher saliency of the residual branch output at '
    'initialisation (Turner et al. 2020, after Theis et al. 2018); SPEC section 4',
    +1,
    {'fast': _fisher_fast, 'batched': _fisher_batched, 'reference': _fisher_reference},
  ),
}


def get(name: str) -> Metric:
  if name not in METRICS:
    raise ValueError(
      f'--config.search.metric={name!r} is unknown; choose one of {", ".join(METRICS)}'
    )
  return METRICS[name]


def resolve_engine(config, platform: str) -> str:
  """config.search.engine for a backend: 'auto' is 'fast' on CPUs, 'batched' elsewhere.

  On a CPU one candidate at a time is fastest (vmapped convolutions over weight
  sets become slower grouped ones there; docs/benchmarks.md); on a GPU or TPU
  a chunk's candidates of one block type share each kernel launch. A metric
  without a batched engine gets its fast one.
  """
  engine = config.search.engine
  if engine != 'auto':
    return engine
  metric = METRICS.get(config.search.metric)  # unknown: make_scorer names it
  return 'batched' if platform != 'cpu' and metric and 'batched' in metric.engines else 'fast'


def make_scorer(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  """The scorer of config.search.metric on config.search.engine (resolved for this backend)."""
  metric = get(config.search.metric)
  engine = resolve_engine(config, jax.default_backend())
  if engine not in metric.engines:
    raise ValueError(
      f'--config.search.engine={engine!r} cannot score {metric.name}; choose one of '
      f'{", ".join(metric.engines)} or auto'
    )
  return metric.engines[engine](config, skel, pieces)
