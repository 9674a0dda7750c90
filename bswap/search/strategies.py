"""How candidates are proposed: the registry `config.search.strategy` names.

A strategy is `run(config, skeleton, score) -> Outcome`: it proposes
genotypes inside the configured limits (`constraints`), each with its seed
contract candidate index, and has them scored by `score([(index, genotype), ...]) -> [Scored, ...]`,
which it may call as often as it likes (an evolutionary search would score a
generation at a time). 'random' is BlockSwap's: sample N genotypes uniformly
inside the budget, score them all (SPEC section 1). A new strategy is one
function here and one line in `STRATEGIES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from absl import logging

from bswap.nets import arch as arch_lib
from bswap.nets import menu
from bswap.search import constraints
from bswap.search import record
from bswap.search import sampler

Score = Callable[[list], list[record.Scored]]


@dataclasses.dataclass(frozen=True)
class Outcome:
  scored: list[record.Scored]  # every candidate scored, in the order proposed
  acceptance: float  # share of uniform draws inside the limits (exact for one limit)
  draws: int


def sample_candidates(config, skel: arch_lib.Skeleton, num: int | None = None) -> sampler.Sample:
  """`num` (default config.search.num_candidates) genotypes drawn inside the configured limits."""
  limits = constraints.limits(config, skel)
  names = config.search.menu
  sample = sampler.draw(
    skel,
    limits,
    num or config.search.num_candidates,
    seed=config.seed,
    names=tuple(menu.split_names(names)) if names else None,
    max_draws=config.search.max_draws,
  )
  bands = ', '.join(f'{x.what} {x.budget:,} +- {100 * x.band:.1f}%' for x in limits)
  logging.info(
    'Sampled %d genotypes of %s within %s: acceptance %.3g, %d draws.',
    len(sample.genotypes),
    skel.name,
    bands,
    sample.acceptance,
    sample.draws,
  )
  return sample


def random(config, skel: arch_lib.Skeleton, score: Score) -> Outcome:
  """BlockSwap's search: N genotypes uniform inside the limits, every one scored."""
  sample = sample_candidates(config, skel)
  return Outcome(score(list(enumerate(sample.genotypes))), sample.acceptance, sample.draws)


STRATEGIES: dict[str, Callable[..., Outcome]] = {
  'random': random,
}


def get(name: str) -> Callable[..., Outcome]:
  if name not in STRATEGIES:
    raise ValueError(
      f'--config.search.strategy={name!r} is unknown; choose one of {", ".join(STRATEGIES)}'
    )
  return STRATEGIES[name]
