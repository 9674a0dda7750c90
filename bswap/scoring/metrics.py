"""Ranking metrics: the registry that `config.search.metric` names.

An entry gives the metric's name, a one-line definition with its citation,
its sign (+1: a higher score predicts a better network, -1: a lower one), the
label plots and logs use, and one scorer factory per engine:

  make(config, skeleton, pieces) -> score(genotype, index, images, labels) -> (total, per_block)

'fast' is the block-by-block engine (engine.py: compiles shared by every
candidate, held in the search's `pieces`); 'reference' the plain
whole-network path (one compile per candidate; the equivalence target of the
tests). A new metric is one module with its functions and one entry here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping

import jax

from bswap.nets import arch as arch_lib
from bswap.nets import convs
from bswap.nets import models
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
    {'fast': _fisher_fast, 'reference': _fisher_reference},
  ),
}


def get(name: str) -> Metric:
  if name not in METRICS:
    raise ValueError(
      f'--config.search.metric={name!r} is unknown; choose one of {", ".join(METRICS)}'
    )
  return METRICS[name]


def make_scorer(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  """The scorer of config.search.metric on config.search.engine."""
  metric = get(config.search.metric)
  engine = config.search.engine
  if engine not in metric.engines:
    raise ValueError(
      f'--config.search.engine={engine!r} cannot score {metric.name}; choose one of '
      f'{", ".join(metric.engines)}'
    )
  return metric.engines[engine](config, skel, pieces)


def score_all(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces, names):
  """score(geno, index, images, labels) -> {name: total} for every metric in `names`.

  Each metric on config.search.engine where it has that engine, else on its
  first. (A minimal version; the proxies work supplies the shared-pass one.)
  """
  scorers = {}
  for name in names:
    metric = get(name)
    engine = config.search.engine if config.search.engine in metric.engines else None
    make = metric.engines[engine or next(iter(metric.engines))]
    scorers[name] = make(config, skel, pieces)

  def score(geno, index, images, labels) -> dict[str, float]:
    return {name: float(s(geno, index, images, labels)[0]) for name, s in scorers.items()}

  return score
