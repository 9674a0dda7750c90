"""Rank statistics of a study: does a metric order students as their errors do?

Pure numpy, float64. Ties get average ranks; Kendall's tau is tau-b (ties
corrected), both as scipy.stats computes them (tests/study/stats_test.py
checks against scipy). The bootstrap resamples members with replacement from
a seeded generator, so the same data and seed give the same interval.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def rankdata(x) -> np.ndarray:
  """1-based ranks, ties given the mean of the ranks they span."""
  x = np.asarray(x, dtype=np.float64)
  order = np.argsort(x, kind='stable')
  sorted_x = x[order]
  # Start of each run of equal values, and each run's average rank.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], x.size]
  average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
  ranks = np.empty(x.size)
  ranks[order] = np.repeat(average, ends - starts)
  return ranks


def pearson(x, y) -> float:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  dx, dy = x - x.mean(), y - y.mean()
  denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
  return float(np.sum(dx * dy) / denom) if denom > 0 else float('nan')


def spearman(x, y) -> float:
  return pearson(rankdata(x), rankdata(y))


def kendall(x, y) -> float:
  """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties x) (n0 - ties y))."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  i, j = np.triu_indices(x.size, k=1)
  sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
  n0 = i.size
  untied_x, untied_y = np.count_nonzero(sx), np.count_nonzero(sy)
  denom = np.sqrt(float(untied_x) * float(untied_y))
  return float(np.sum(sx * sy) / denom) if denom > 0 and n0 else float('nan')


def partial_spearman(x, y, z) -> float:
  """Spearman's rho of x and y with z's ranks partialled out (here z: parameters)."""
  rx, ry, rz = rankdata(x), rankdata(y), rankdata(z)
  rxy, rxz, ryz = pearson(rx, ry), pearson(rx, rz), pearson(ry, rz)
  denom = np.sqrt((1 - rxz**2) * (1 - ryz**2))
  return float((rxy - rxz * ryz) / denom) if denom > 0 else float('nan')


def bootstrap_interval(stat, x, y, seed: int, samples: int = 1000, level: float = 0.95):
  """(low, high): the percentile interval of stat(x[idx], y[idx]) over resampled members."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, x.size, size=(samples, x.size))
  values = np.array([stat(x[i], y[i]) for i in idx])
  values = values[np.isfinite(values)]  # a resample of all-equal values has no correlation
  if values.size == 0:
    return float('nan'), float('nan')
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(values, [tail, 100 - tail])
  return float(low), float(high)


def picks(score, sign: int, k: int) -> np.ndarray:
  """Indices of the k best by the metric (sign +1: highest first); ties by position."""
  score = sign * np.asarray(score, np.float64)
  order = np.lexsort((np.arange(score.size), -score))
  return order[:k]


@dataclasses.dataclass(frozen=True)
class Regret:
  top1_error: float  # error of the metric's pick
  top5_error: float  # best error among its top 5 (as if those were trained and the best kept)
  regret1: float  # top1_error - the population's best
  regret5: float


def regret(score, error, sign: int) -> Regret:
  error = np.asarray(error, np.float64)
  best = float(error.min())
  top1 = float(error[picks(score, sign, 1)][0])
  top5 = float(error[picks(score, sign, 5)].min())
  return Regret(top1, top5, top1 - best, top5 - best)
