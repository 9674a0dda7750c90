"""Constraints: 'params' and 'macs' limits, their combination, and configuration errors."""

import numpy as np
import pytest

from bswap import defaults
from bswap.nets import accounting
from bswap.search import constraints
from bswap.search import run as search
from bswap.search import sampler
from bswap.search import strategies


def _config(names='params', **search_fields):
  """The smoke search: WRN-10-2 at 8 px, parameters inside 50K +- 2.5%."""
  config = defaults.smoke(defaults.cifar_config(50_000))
  config.search.constraints = names
  config.search.num_candidates = 40
  config.search.update(search_fields)
  return config


def _mac_range(config):
  """(lowest, highest) MACs of config's network over the whole menu."""
  skel = search.skeleton(config)
  m = sampler.build_menu(skel)
  return m.reachable(m.costs(accounting.mac_table(skel)), accounting.fixed_macs(skel))


def _count(config, geno):
  return accounting.count(geno, config.data.image_size, config.model.num_classes)


@pytest.mark.parametrize(
  'text, names',
  [('params', ('params',)), ('macs', ('macs',)), (' params , macs ', ('params', 'macs'))],
)
def test_constraints_are_read_comma_separated(text, names):
  assert constraints.names(_config(text)) == names


@pytest.mark.parametrize('text', ['latency', 'params,latency', '', ' , '])
def test_unknown_or_missing_constraints_name_the_flag_and_list_the_known_ones(text):
  with pytest.raises(ValueError) as error:
    constraints.names(_config(text))
  message = str(error.value)
  assert message.startswith(f'--config.search.constraints={text!r}')
  assert all(name in message for name in constraints.CONSTRAINTS)


def test_the_params_limit_is_the_samplers_parameter_limit():
  config = _config()
  skel = search.skeleton(config)
  (limit,) = constraints.limits(config, skel)
  expected = sampler.params_limit(skel, 50_000, config.search.band)
  np.testing.assert_array_equal(limit.table, expected.table)
  assert (limit.what, limit.fixed, limit.budget, limit.band) == (
    expected.what,
    expected.fixed,
    50_000,
    0.025,
  )


def test_the_macs_limit_counts_macs_per_block_at_the_configs_resolution():
  config = _config('macs', mac_budget=1_000_000, mac_band=0.1)
  skel = search.skeleton(config)
  (limit,) = constraints.limits(config, skel)
  assert (limit.what, limit.budget, limit.band) == ('MACs', 1_000_000, 0.1)
  np.testing.assert_array_equal(limit.table, accounting.mac_table(skel))
  assert limit.fixed == accounting.fixed_macs(skel)


def test_the_macs_constraint_without_a_budget_names_the_flag():
  with pytest.raises(
    ValueError, match=r"'macs' constraint needs a budget: set --config\.search\.mac_budget"
  ):
    constraints.limits(_config('macs'), search.skeleton(_config()))


def test_a_macs_constrained_sample_lies_inside_its_mac_band():
  low, high = _mac_range(_config())
  budget = (low + high) // 2
  config = _config('macs', mac_budget=budget, mac_band=0.05)
  sample = strategies.sample_candidates(config, search.skeleton(config))
  assert len(sample.genotypes) == 40
  macs = [_count(config, geno).macs for geno in sample.genotypes]
  assert all(budget * 0.95 < m < budget * 1.05 for m in macs)
  # Parameters are free: the parameter budget of the config is not applied.
  params = [_count(config, geno).params for geno in sample.genotypes]
  assert not all(50_000 * 0.975 < p < 50_000 * 1.025 for p in params)


def test_params_and_macs_together_keep_only_genotypes_inside_both_bands():
  params_only = strategies.sample_candidates(_config(), search.skeleton(_config()))
  budget = int(np.median([_count(_config(), g).macs for g in params_only.genotypes]))
  config = _config('params,macs', mac_budget=budget, mac_band=0.1)
  sample = strategies.sample_candidates(config, search.skeleton(config))
  assert len(sample.genotypes) == 40
  for geno in sample.genotypes:
    count = _count(config, geno)
    assert 50_000 * 0.975 < count.params < 50_000 * 1.025
    assert budget * 0.9 < count.macs < budget * 1.1
  # Two limits accept a subset of what the parameter limit alone accepts.
  assert 0 < sample.acceptance < params_only.acceptance


def test_an_unreachable_mac_budget_fails_with_the_reachable_range():
  low, high = _mac_range(_config())
  config = _config('macs', mac_budget=2 * high, mac_band=0.025)
  with pytest.raises(ValueError, match=rf'unreachable for WRN-10-2 \({low:,} to {high:,} MACs'):
    strategies.sample_candidates(config, search.skeleton(config))
