"""What a student must fit: the registry `config.search.constraints` names.

A constraint turns the config into a `sampler.Limit`: an additive cost, one
table entry per (block position, block type) plus the cost of the stem and
the head, that must lie strictly inside budget +- band. The sampler keeps a
genotype only when every configured limit holds. A new constraint (latency
from a measured per-block table, say) is one function here and one line in
`CONSTRAINTS`.
"""

from __future__ import annotations

from collections.abc import Callable

from bswap.nets import accounting
from bswap.nets import arch as arch_lib
from bswap.search import sampler


def params(config, skel: arch_lib.Skeleton) -> sampler.Limit:
  """Parameters inside config.search.budget +- band (SPEC section 1)."""
  return sampler.params_limit(skel, config.search.budget, config.search.band)


def macs(config, skel: arch_lib.Skeleton) -> sampler.Limit:
  """Multiply-accumulates per image inside config.search.mac_budget +- mac_band (SPEC section 3)."""
  if config.search.get('mac_budget') is None:
    raise ValueError(
      "the 'macs' constraint needs a budget: set --config.search.mac_budget=N (MACs per image)"
    )
  table, fixed = accounting.mac_table(skel), accounting.fixed_macs(skel)
  return sampler.Limit('MACs', table, fixed, config.search.mac_budget, config.search.mac_band)


CONSTRAINTS: dict[str, Callable[..., sampler.Limit]] = {
  'params': params,
  'macs': macs,
}


def names(config) -> tuple[str, ...]:
  """The constraints of `config.search.constraints` (comma-separated), checked."""
  chosen = tuple(n.strip() for n in config.search.constraints.split(',') if n.strip())
  unknown = [n for n in chosen if n not in CONSTRAINTS]
  if unknown or not chosen:
    raise ValueError(
      f'--config.search.constraints={config.search.constraints!r}: choose one or more of '
      f'{", ".join(CONSTRAINTS)}, comma-separated'
    )
  return chosen


def limits(config, skel: arch_lib.Skeleton) -> list[sampler.Limit]:
  """The limits every sampled genotype must satisfy."""
  return [CONSTRAINTS[name](config, skel) for name in names(config)]
