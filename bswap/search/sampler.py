"""Budgeted sampling of genotypes (SPEC section 1, step 2).

Each position draws its type i.i.d. uniformly from the menu (or a sub-menu),
leaving out types invalid there; a genotype is kept when each `Limit` holds:
its parameter count (or another additive cost, such as MACs) lies strictly
inside (budget * (1 - band), budget * (1 + band)). Draws are vectorised in
fixed-size chunks, so the result depends only on the seed.

Per-position costs are independent, so the exact acceptance probability of a
limit is the convolution of their distributions: computed up front, it says
at once whether a budget is reachable and how long sampling will take.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from bswap.nets import accounting
from bswap.nets import arch as arch_lib
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu

CHUNK = 1 << 16  # genotypes drawn per vectorised step; fixed, so results depend only on the seed
DEFAULT_MAX_DRAWS = 100_000_000  # about 30 s of drawing on one 2026 CPU core


@dataclasses.dataclass(frozen=True)
class Menu:
  """The per-position choices of a skeleton under a (sub-)menu."""

  skeleton: arch_lib.Skeleton
  names: tuple[str, ...]
  choices: np.ndarray  # (B, K) index into names of the k-th valid type; -1 pads
  counts: np.ndarray  # (B,) number of valid types per position
  params: np.ndarray  # (B, K) parameter count of each choice; 0 pads
  fixed: int  # parameters outside the blocks

  def costs(self, table: np.ndarray) -> np.ndarray:
    """(B, K) cost of each choice from a (B, len(names)) table; 0 pads."""
    rows = np.arange(self.skeleton.num_blocks)[:, None]
    return np.where(self.choices >= 0, table[rows, np.maximum(self.choices, 0)], 0)

  def reachable(self, costs: np.ndarray | None = None, fixed: int | None = None):
    """(lowest, highest) total of `costs` (default: parameters) over the menu."""
    costs = self.params if costs is None else costs
    fixed = self.fixed if fixed is None else fixed
    lo = fixed + sum(int(costs[b, :n].min()) for b, n in enumerate(self.counts))
    hi = fixed + sum(int(costs[b, :n].max()) for b, n in enumerate(self.counts))
    return lo, hi


def build_menu(skel: arch_lib.Skeleton, names: Sequence[str] | None = None) -> Menu:
  names = tuple(dict.fromkeys(menu.canonical_name(n) for n in (names or menu.NAMES)))
  table = accounting.param_table(skel, names)
  valid = table >= 0
  counts = valid.sum(axis=1)
  for slot, n in zip(skel.slots, counts):
    if n == 0:
      raise ValueError(
        f'no type of the sub-menu {list(names)} is valid at position {slot.index} '
        f'(stage {slot.stage}, {slot.in_ch} -> {slot.out_ch} channels); widen the menu'
      )
  width = int(counts.max())
  choices = np.full((skel.num_blocks, width), -1, dtype=np.int64)
  params = np.zeros((skel.num_blocks, width), dtype=np.int64)
  for b in range(skel.num_blocks):
    idx = np.flatnonzero(valid[b])
    choices[b, : idx.size] = idx
    params[b, : idx.size] = table[b, idx]
  return Menu(skel, names, choices, counts, params, accounting.fixed_params(skel))


def band_limits(budget: float, band: float) -> tuple[float, float]:
  if budget <= 0:
    raise ValueError(f'budget must be a positive parameter count; got {budget}')
  if not 0 < band < 1:
    raise ValueError(f'band must be a fraction in (0, 1), e.g. 0.025 for +-2.5%; got {band}')
  return budget * (1 - band), budget * (1 + band)


def acceptance_probability(
  m: Menu, lo: float, hi: float, costs: np.ndarray | None = None, fixed: int | None = None
) -> float:
  """Exact P(lo < total < hi) for a uniform draw, by convolving per-position laws.

  The total is `fixed` plus each position's cost (default: parameters). Each
  position's costs are shifted by their minimum and divided by the gcd of all
  shifts, which keeps the dense distribution short (length ~ range / gcd).
  """
  costs = m.params if costs is None else costs
  fixed = m.fixed if fixed is None else fixed
  offsets = [costs[b, :n] - costs[b, :n].min() for b, n in enumerate(m.counts)]
  step = math.gcd(*(int(v) for o in offsets for v in o)) or 1
  dist = np.ones(1)
  for o in offsets:
    values, freq = np.unique(o // step, return_counts=True)
    new = np.zeros(dist.size + int(values[-1]))
    for v, f in zip(values, freq):
      new[v : v + dist.size] += dist * (f / o.size)
    dist = new
  base = fixed + sum(int(costs[b, :n].min()) for b, n in enumerate(m.counts))
  totals = base + step * np.arange(dist.size)
  return float(dist[(totals > lo) & (totals < hi)].sum())


@dataclasses.dataclass(frozen=True)
class Limit:
  """An additive cost that must lie strictly inside budget +- band.

  A genotype's cost is `fixed` plus, at each position, `table[position, type]`
  (a table over the menu's 23 names, -1 where a type is invalid): parameters
  and MACs are such sums (accounting.param_table, mac_table).
  """

  what: str  # 'parameters', 'MACs': for messages
  table: np.ndarray  # (B, len(menu.NAMES))
  fixed: int
  budget: float
  band: float

  def __post_init__(self):
    if self.budget is None or self.budget <= 0:
      raise ValueError(f'budget must be a positive count of {self.what}; got {self.budget}')
    band_limits(self.budget, self.band)


def params_limit(skel: arch_lib.Skeleton, budget: float, band: float = 0.025) -> Limit:
  """Parameters strictly inside budget +- band (SPEC section 1)."""
  return Limit(
    'parameters', accounting.param_table(skel), accounting.fixed_params(skel), budget, band
  )


@dataclasses.dataclass(frozen=True)
class Sample:
  genotypes: tuple[genotype_lib.Genotype, ...]
  params: np.ndarray  # (n,) parameter count of each genotype
  acceptance: float  # probability that one uniform draw is accepted (exact for one limit)
  draws: int  # genotypes drawn to accept n


def sample(
  skel: arch_lib.Skeleton,
  budget: float,
  num: int,
  seed: int,
  band: float = 0.025,
  names: Sequence[str] | None = None,
  max_draws: int = DEFAULT_MAX_DRAWS,
) -> Sample:
  """Draw `num` genotypes with parameters strictly inside budget +- band (duplicates allowed)."""
  band_limits(budget, band)
  return draw(skel, [params_limit(skel, budget, band)], num, seed, names, max_draws)


def draw(
  skel: arch_lib.Skeleton,
  limits: Sequence[Limit],
  num: int,
  seed: int,
  names: Sequence[str] | None = None,
  max_draws: int = DEFAULT_MAX_DRAWS,
) -> Sample:
  """Draw `num` genotypes inside every limit (duplicates allowed).

  Raises:
    ValueError: if a band misses its reachable range, or the expected number
      of draws (num / acceptance) exceeds `max_draws`; the message gives the
      reachable range and the acceptance probability.
  """
  if num < 1:
    raise ValueError(f'num must be at least 1; got {num}')
  if not limits:
    raise ValueError('at least one limit (e.g. a parameter budget) is needed')
  m = build_menu(skel, names)
  index = [menu.NAMES.index(n) for n in m.names]
  checks = []
  for limit in limits:
    costs = m.costs(limit.table[:, index])
    lo, hi = band_limits(limit.budget, limit.band)
    p = acceptance_probability(m, lo, hi, costs, limit.fixed)
    _check_feasible(skel, limit, num, p, m.reachable(costs, limit.fixed), max_draws)
    checks.append((costs, limit.fixed, lo, hi, p))
  rng = np.random.default_rng(seed)
  rows = np.arange(skel.num_blocks)
  picked, accepted, draws = [], 0, 0
  while accepted < num:
    if draws >= max_draws:
      raise ValueError(
        f'{draws:,} draws accepted only {accepted} of {num} genotypes inside all of '
        f'{", ".join(limit.what for limit in limits)}; widen the bands or ask for fewer'
      )
    k = rng.integers(0, m.counts, size=(CHUNK, skel.num_blocks))
    keep = np.ones(CHUNK, bool)
    for costs, fixed, lo, hi, _ in checks:
      totals = fixed + costs[rows, k].sum(axis=1)
      keep &= (totals > lo) & (totals < hi)
    picked.append(k[keep])
    accepted += int(keep.sum())
    draws += CHUNK
  k = np.concatenate(picked)[:num]
  type_idx = m.choices[rows, k]
  genos = tuple(
    genotype_lib.Genotype(tuple(m.names[j] for j in row), skel.arch, skel.depth, skel.width)
    for row in type_idx
  )
  params = m.fixed + m.params[rows, k].sum(axis=1)
  # Exact for one limit; with several, the joint rate is the one observed.
  acceptance = checks[0][-1] if len(checks) == 1 else accepted / draws
  return Sample(genos, params, acceptance, draws)


def _check_feasible(skel, limit: Limit, num, p, reach, max_draws):
  what, budget, band = limit.what, limit.budget, limit.band
  where = f'{skel.name} ({reach[0]:,} to {reach[1]:,} {what} with this menu)'
  if p == 0:
    raise ValueError(
      f'budget {budget:,.0f} +- {band:.1%} is unreachable for {where}; '
      f'choose a budget in that range or widen the band'
    )
  if num / p > max_draws:
    raise ValueError(
      f'budget {budget:,.0f} +- {band:.1%} for {where} accepts only a fraction {p:.3g} of '
      f'draws: {num} samples need about {num / p:,.0f} draws (limit {max_draws:,}); '
      f'widen the band, move the budget towards the middle of the range, or ask for fewer'
    )
