"""Rank statistics against scipy and closed forms, ties included."""

import numpy as np
import pytest
from scipy import stats as sp

from bswap.study import stats

TIED_X = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0]
TIED_Y = [2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0, 2.0, 8.0, 4.0]


def _data(n=40, seed=0, ties=False):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=n)
  y = -0.6 * x + rng.normal(size=n)
  if ties:
    x, y = np.round(x), np.round(y * 2) / 2
  return x, y


def test_ranks_average_ties_as_scipy_does():
  np.testing.assert_array_equal(stats.rankdata(TIED_X), sp.rankdata(TIED_X))
  np.testing.assert_array_equal(stats.rankdata([2.0, 2.0, 2.0]), [2.0, 2.0, 2.0])


@pytest.mark.parametrize('ties', [False, True])
def test_spearman_and_kendall_tau_b_equal_scipy(ties):
  for x, y in [_data(ties=ties), (TIED_X, TIED_Y)]:
    assert stats.spearman(x, y) == pytest.approx(sp.spearmanr(x, y).statistic, abs=1e-12)
    assert stats.kendall(x, y) == pytest.approx(sp.kendalltau(x, y).statistic, abs=1e-12)


def test_closed_forms_and_degenerate_inputs():
  x = np.arange(10.0)
  assert stats.spearman(x, x**3) == pytest.approx(1.0)
  assert stats.kendall(x, -np.exp(x)) == pytest.approx(-1.0)
  # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1)).
  y = np.array([2, 1, 4, 3, 6, 5, 8, 7, 10, 9], float)
  d = stats.rankdata(x) - stats.rankdata(y)
  assert stats.spearman(x, y) == pytest.approx(1 - 6 * np.sum(d**2) / (10 * 99))
  assert np.isnan(stats.spearman(x, np.ones(10))) and np.isnan(stats.kendall(x, np.ones(10)))


def test_partial_spearman_is_the_correlation_of_rank_residuals():
  rng = np.random.default_rng(1)
  z = rng.normal(size=50)
  x, y = z + rng.normal(size=50), z + rng.normal(size=50)
  rx, ry, rz = sp.rankdata(x), sp.rankdata(y), sp.rankdata(z)
  design = np.c_[np.ones(50), rz]
  res = lambda r: r - design @ np.linalg.lstsq(design, r, rcond=None)[0]
  expected = np.corrcoef(res(rx), res(ry))[0, 1]
  assert stats.partial_spearman(x, y, z) == pytest.approx(expected, abs=1e-12)
  # z explains the whole of the raw correlation here, so the partial one is much smaller.
  assert abs(stats.partial_spearman(x, y, z)) < stats.spearman(x, y)


def test_bootstrap_is_deterministic_under_a_seed_and_brackets_the_estimate():
  x, y = _data(ties=True)
  first = stats.bootstrap_interval(stats.spearman, x, y, seed=3, samples=300)
  assert first == stats.bootstrap_interval(stats.spearman, x, y, seed=3, samples=300)
  assert first != stats.bootstrap_interval(stats.spearman, x, y, seed=4, samples=300)
  low, high = first
  assert low < stats.spearman(x, y) < high < 0  # a clear negative correlation
  # The percentile interval of the resampled statistics, recomputed by hand.
  idx = np.random.default_rng(3).integers(0, x.size, size=(300, x.size))
  values = [sp.spearmanr(x[i], y[i]).statistic for i in idx]
  np.testing.assert_allclose(first, np.percentile(values, [2.5, 97.5]), atol=1e-12)


def test_picks_and_regret_follow_the_sign_with_ties_by_position():
  score = np.array([0.5, 2.0, 2.0, -1.0, 0.0, 3.0])
  error = np.array([10.0, 8.0, 7.0, 5.0, 9.0, 12.0])
  np.testing.assert_array_equal(stats.picks(score, +1, 3), [5, 1, 2])
  np.testing.assert_array_equal(stats.picks(score, -1, 2), [3, 4])
  r = stats.regret(score, error, +1)
  assert (r.top1_error, r.regret1) == (12.0, 7.0)
  assert (r.top5_error, r.regret5) == (7.0, 2.0)  # the best of indices 5, 1, 2, 0, 4
  assert stats.regret(score, error, -1).top1_error == 5.0
