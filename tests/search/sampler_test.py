"""The budgeted sampler: band, determinism, exact acceptance, clear failures."""

import itertools

import numpy as np
import pytest

from bswap.nets import accounting
from bswap.nets import arch
from bswap.nets import menu
from bswap.search import sampler

WRN40 = arch.wrn_skeleton(40, 2)


def test_same_seed_same_samples_and_all_inside_the_band():
  a = sampler.sample(WRN40, 400_000, 200, seed=1)
  b = sampler.sample(WRN40, 400_000, 200, seed=1)
  c = sampler.sample(WRN40, 400_000, 200, seed=2)
  assert a.genotypes == b.genotypes
  np.testing.assert_array_equal(a.params, b.params)
  assert a.genotypes != c.genotypes
  assert len(a.genotypes) == 200
  for geno, params in zip(a.genotypes, a.params):
    assert accounting.count(geno).params == params
    assert 390_000 < params < 410_000


def test_band_is_configurable_and_strict():
  s = sampler.sample(WRN40, 300_000, 100, seed=0, band=0.005)
  assert ((s.params > 298_500) & (s.params < 301_500)).all()


def test_acceptance_probability_is_exact_by_enumeration():
  skel = arch.wrn_skeleton(10, 1)  # 3 positions: 20 x 23 x 23 genotypes
  m = sampler.build_menu(skel)
  table = accounting.param_table(skel)
  fixed = accounting.fixed_params(skel)
  columns = [table[b][table[b] >= 0] for b in range(3)]
  totals = np.array([fixed + sum(c) for c in itertools.product(*columns)])
  for lo, hi in [(15_000, 20_000), (20_000, 30_000), (10_000, 10_500), (0, 1e9)]:
    expected = np.mean((totals > lo) & (totals < hi))
    assert sampler.acceptance_probability(m, lo, hi) == pytest.approx(expected, rel=1e-12)
  assert m.reachable() == (totals.min(), totals.max())


def test_reported_acceptance_matches_the_observed_rate():
  s = sampler.sample(WRN40, 200_000, 2000, seed=3)
  assert 0 < s.acceptance < 1
  # 2000 acceptances: the observed rate is within ~7% (3 sigma) of the exact one.
  observed = 2000 / s.draws  # draws overshoot by < one chunk: an upper bound on it
  assert observed <= s.acceptance * 1.07
  assert s.draws - sampler.CHUNK < 2000 / (s.acceptance * 0.93)


@pytest.mark.slow
def test_a_150k_budget_accepts_1e_5_to_1e_3_of_draws_and_samples_1000_inside_it():
  s = sampler.sample(WRN40, 150_000, 1000, seed=0)
  assert 1e-5 < s.acceptance < 1e-3
  assert len(s.genotypes) == 1000
  assert (np.abs(s.params - 150_000) < 3_750).all()


@pytest.mark.parametrize('budget', [50_000, 3_000_000])
def test_unreachable_budget_fails_at_once_with_the_range(budget):
  with pytest.raises(ValueError, match=r'unreachable for WRN-40-2 \(84,410 to 2,243,546'):
    sampler.sample(WRN40, budget, 10, seed=0)


def test_tiny_acceptance_fails_with_the_probability():
  with pytest.raises(ValueError, match=r'accepts only a fraction 7\.\d+e-05 of draws'):
    sampler.sample(WRN40, 150_000, 1000, seed=0, max_draws=1_000_000)


def test_sub_menu_is_respected_and_invalid_types_are_left_out():
  skel = arch.wrn_skeleton(16, 1)
  s = sampler.sample(skel, 60_000, 300, seed=0, names=['S', 'G16B2', 'BG(2,16)', 'DConv'])
  used = {name for g in s.genotypes for name in g.blocks}
  assert used <= {'Conv', 'G16B2', 'A16B2', 'DConv'}
  stage1 = {g.blocks[b] for g in s.genotypes for b in (0, 1)}
  assert not stage1 & {'G16B2', 'A16B2'}  # invalid at 16 -> 16 channels, M = 8
  assert {'G16B2', 'A16B2'} <= used


def test_sub_menu_with_nothing_valid_at_a_position_is_an_error():
  with pytest.raises(ValueError, match='no type of the sub-menu .* valid at position 0'):
    sampler.sample(arch.wrn_skeleton(16, 1), 60_000, 10, seed=0, names=['A16B2'])


@pytest.mark.parametrize(
  'kwargs,error',
  [
    (dict(budget=-5, num=1), 'budget must be a positive'),
    (dict(budget=400_000, num=0), 'num must be at least 1'),
    (dict(budget=400_000, num=1, band=1.5), 'band must be a fraction'),
    (dict(budget=400_000, num=1, names=['Nope']), "unknown block type 'Nope'"),
  ],
)
def test_bad_arguments_are_clear_errors(kwargs, error):
  with pytest.raises(ValueError, match=error):
    sampler.sample(WRN40, seed=0, **kwargs)


def test_uniform_over_the_menu():
  s = sampler.sample(WRN40, 1_000_000, 1, seed=0, band=0.99)
  assert s.acceptance == pytest.approx(1.0)
  counts = {name: 0 for name in menu.NAMES}
  s = sampler.sample(WRN40, 1_000_000, 4000, seed=0, band=0.99)
  for g in s.genotypes:
    counts[g.blocks[5]] += 1
  assert min(counts.values()) > 4000 / 23 * 0.6
