"""Strategies: the random strategy proposes the seeded sample and scores all of it."""

import pytest

from bswap import defaults
from bswap.nets import accounting
from bswap.nets import menu
from bswap.search import constraints
from bswap.search import record
from bswap.search import run as search
from bswap.search import sampler
from bswap.search import strategies


def _config(**search_fields):
  config = defaults.smoke(defaults.cifar_config(50_000))
  config.search.update(search_fields)
  return config


def test_random_scores_every_sampled_candidate_once_with_its_seed_contract_index():
  config = _config(num_candidates=7)
  skel = search.skeleton(config)
  calls = []

  def score(items):
    calls.append(list(items))
    return [record.Scored(i, geno, 0, 0, float(i), ()) for i, geno in items]

  outcome = strategies.get('random')(config, skel, score)
  expected = sampler.draw(skel, constraints.limits(config, skel), 7, seed=config.seed)
  # One call with every candidate; candidate i is the i-th genotype of the sample.
  assert calls == [list(enumerate(expected.genotypes))]
  assert [s.index for s in outcome.scored] == list(range(7))
  assert [s.genotype for s in outcome.scored] == list(expected.genotypes)
  assert (outcome.acceptance, outcome.draws) == (expected.acceptance, expected.draws)


def test_sample_candidates_follows_seed_count_and_sub_menu():
  config = _config(num_candidates=30, menu='S,G(N),BG(2,M/4)')
  skel = search.skeleton(config)
  sample = strategies.sample_candidates(config, skel)
  assert len(sample.genotypes) == 30
  assert {b for g in sample.genotypes for b in g.blocks} <= {'Conv', 'DConv', 'G4B2'}
  for geno in sample.genotypes:
    params = accounting.count(geno, config.data.image_size).params
    assert 50_000 * 0.975 < params < 50_000 * 1.025
  assert strategies.sample_candidates(config, skel).genotypes == sample.genotypes
  assert len(strategies.sample_candidates(config, skel, num=3).genotypes) == 3
  config.seed = 1
  assert strategies.sample_candidates(config, skel).genotypes != sample.genotypes


def test_an_empty_menu_means_the_whole_menu():
  config = _config(num_candidates=200, menu='')
  sample = strategies.sample_candidates(config, search.skeleton(config))
  used = {b for g in sample.genotypes for b in g.blocks}
  assert len(used) > len(menu.NAMES) // 2


def test_an_unknown_strategy_names_the_flag_and_lists_the_strategies():
  with pytest.raises(ValueError) as error:
    strategies.get('evolution')
  assert "--config.search.strategy='evolution' is unknown" in str(error.value)
  assert all(name in str(error.value) for name in strategies.STRATEGIES)
