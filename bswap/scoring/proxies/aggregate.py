"""Pool-level rank aggregates (PROXIES.md section 9) and NASLib's post-processing.

An aggregate ranks a whole pool of candidates, so it is recomputed whenever
the pool changes; it is not a per-candidate score.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np

METHODS = ('log_rank', 'rank_sum', 'vote')


def rankdata(values: np.ndarray) -> np.ndarray:
  """Ascending ranks in [1, L], ties averaged (scipy.stats.rankdata's 'average')."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind='stable')
  sorted_values = values[order]
  ranks = np.empty(len(values), np.float64)
  start = 0
  while start < len(values):
    end = start
    while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
      end += 1
    ranks[order[start : end + 1]] = (start + end) / 2 + 1
    start = end + 1
  return ranks


def _oriented(scores: Sequence[float], sign: int) -> np.ndarray:
  """Higher is better; a non-finite score becomes the worst (-inf)."""
  s = sign * np.asarray(scores, np.float64)
  return np.where(np.isfinite(s), s, -np.inf)


def rank_aggregate(
  scores: Mapping[str, Sequence[float]], signs: Mapping[str, int], method: str = 'log_rank'
) -> np.ndarray:
  """One aggregate per candidate of the pool (higher = predicted better).

  log_rank: sum_m ln(r_m / L) (AZ-NAS); rank_sum: sum_m r_m (TE-NAS); vote:
  the Copeland count of Samsung's pairwise majority (i beats j iff at least
  half the proxies score i strictly higher).
  """
  if method not in METHODS:
    raise ValueError(
      f'--config.search.aggregate={method!r} is unknown; choose one of {", ".join(METHODS)}'
    )
  oriented = [_oriented(v, signs[name]) for name, v in scores.items()]
  if not oriented:
    raise ValueError('rank_aggregate needs at least one member metric')
  size = len(oriented[0])
  if method == 'vote':
    wins = sum((s[:, None] - s[None, :] > 0).astype(np.int64) for s in oriented)
    beats = wins * 2 >= len(oriented)
    np.fill_diagonal(beats, False)
    return beats.sum(axis=1).astype(np.float64)
  ranks = [rankdata(s) for s in oriented]
  if method == 'rank_sum':
    return np.sum(ranks, axis=0)
  return np.sum([np.log(r / size) for r in ranks], axis=0)


def nbzero_postprocess(name: str, score: float) -> float:
  """NASLib's ZeroCost.query rules: non-finite -> -1e8; synflow S > 0 -> ln S."""
  if not np.isfinite(score):
    return -1e8
  if name == 'synflow' and score > 0:
    return float(np.log(score))
  return float(score)
