"""Who a study trains: seed-contract indices, singles in the band, named genotypes, shards."""

import pytest

from bswap.nets import accounting
from bswap.search import strategies
from bswap.study import population
from configs import study_400k
from configs import study_sensitivity


def _config(**study):
  config = study_400k.get_config('smoke')
  for key, value in study.items():
    config.study[key] = value
  return config


def test_random_members_are_the_searchs_first_candidates_with_the_same_seed():
  config = _config(num_random=5, single_band=0.01)
  members = population.population(config)
  search = strategies.sample_candidates(config, population.skeleton(config), num=50)
  assert [m.genotype for m in members if m.kind == 'random'] == list(search.genotypes[:5])
  assert [m.index for m in members] == list(range(len(members)))
  lo, hi = 50_000 * 0.975, 50_000 * 1.025
  assert all(lo < m.params < hi for m in members if m.kind == 'random')


def test_singles_are_every_uniform_type_within_the_wider_band():
  config = _config(num_random=0, single_band=0.3)
  members = population.population(config)
  assert {m.kind for m in members} == {'single'} and len(members) >= 3
  for m in members:
    assert set(m.genotype.blocks) == {m.note}
    assert 35_000 <= m.params <= 65_000
    assert m.params == accounting.count(m.genotype, 8, 10).params
  wider = population.population(_config(num_random=0, single_band=0.6))
  assert {m.note for m in members} < {m.note for m in wider}


def test_named_members_come_from_lists_and_the_top_k_of_candidates_csv(tmp_path):
  csv = tmp_path / 'candidates.csv'
  csv.write_text(
    'rank,fisher_potential,params,macs,blocks\n'
    '1,0.5,50000,1,Conv Conv DConv\n'
    '2,0.4,50000,1,DConv DConv DConv\n'
    '3,0.3,50000,1,Conv Conv Conv\n'
  )
  config = _config(num_random=1, single_band=0.01, named='G(N),G(N),Conv', candidates=str(csv))
  config.study.top_k = 2
  named = [m for m in population.population(config) if m.kind == 'named']
  assert [m.genotype.blocks for m in named] == [
    ('DConv', 'DConv', 'Conv'),
    ('Conv', 'Conv', 'DConv'),
    ('DConv', 'DConv', 'DConv'),
  ]
  assert named[0].index == 1 and named[2].note == f'{csv} rank 2'
  config.study.candidates = ''
  with pytest.raises(ValueError, match='needs --config.study.candidates'):
    population.population(config)


def test_the_sensitivity_study_replaces_one_block_at_a_time():
  config = study_sensitivity.get_config('smoke')
  members = population.population(config)
  assert [m.kind for m in members] == ['single', 'substituted', 'substituted', 'substituted']
  for i, m in enumerate(members[1:]):
    assert m.genotype.blocks[i] == 'DConv' and m.note == str(i)
    assert set(m.genotype.blocks[:i] + m.genotype.blocks[i + 1 :]) == {'Conv'}
    assert m.params < members[0].params


def test_shards_partition_the_members():
  members = population.population(_config(num_random=7, single_band=0.01))
  parts = [population.shard(members, f'{i}/3') for i in range(3)]
  assert sorted(m.index for p in parts for m in p) == [m.index for m in members]
  with pytest.raises(ValueError, match='must be i/n'):
    population.shard(members, '1')


def test_an_empty_population_is_refused():
  with pytest.raises(ValueError, match='no members'):
    population.population(_config(num_random=0, single_band=0.0001))
