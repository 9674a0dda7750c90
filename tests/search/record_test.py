"""best_genotype.json: the search record round-trips, and `mismatches` notices every setting."""

import json

import pytest

from bswap import defaults
from bswap import pipeline
from bswap.nets import genotype as genotype_lib
from bswap.search import record

GENO = genotype_lib.Genotype(('Conv', 'DConv', 'G4B2'), 'wrn', 10, 2)


def _smoke():
  return defaults.smoke(defaults.cifar_config(50_000))


def _imagenet_smoke():
  return defaults.imagenet_smoke(defaults.imagenet_config(3_000_000))


def _record(config):
  best = record.Scored(4, GENO, 49_321, 1_234_567, 0.125, (0.0625, 0.03125, 0.03125))
  return record.SearchRecord.of(config, best, acceptance=0.05)


@pytest.mark.parametrize('make_config', [_smoke, _imagenet_smoke])
def test_a_record_round_trips_through_json_and_matches_its_config(make_config):
  config = make_config()
  original = _record(config)
  text = original.to_json()
  again = record.SearchRecord.from_json(text)
  assert again == original
  assert again.to_json() == text
  assert again.mismatches(config) == [] and again.matches(config)


def test_the_json_names_the_metric_and_the_chosen_candidate():
  data = json.loads(_record(_smoke()).to_json())
  assert data['genotype'] == GENO.to_dict()
  assert data['paper_names'] == list(GENO.paper_names)
  assert (data['metric'], data['score'], data['candidate_index']) == ('fisher_potential', 0.125, 4)
  assert (data['params'], data['macs'], data['acceptance']) == (49_321, 1_234_567, 0.05)
  assert data['block_scores'] == [0.0625, 0.03125, 0.03125]
  assert set(data['versions']) == {'jax', 'flax', 'optax'}


def test_the_genotype_reader_finds_the_genotype_in_a_record(tmp_path):
  path = tmp_path / record.FILE
  path.write_text(_record(_smoke()).to_json())
  assert genotype_lib.load(path) == GENO


# (config path, new value): each changes which candidate a search picks.
CHANGES = [
  (('search', 'budget'), 60_000),
  (('search', 'band'), 0.05),
  (('search', 'menu'), 'Conv,DConv'),
  (('search', 'metric'), 'synflow'),
  (('search', 'engine'), 'reference'),
  (('seed',), 1),
  (('search', 'batch_size'), 16),
  (('data', 'pipeline'), 'imagenet'),
  (('data', 'source'), '/data/cifar10'),
  (('data', 'image_size'), 16),
  (('data', 'cutout'), 2),
  (('data', 'crop_pad'), 2),
  (('data', 'mean'), (0.5, 0.5, 0.5)),
  (('data', 'synthetic_size'), 128),  # synthetic data: its size changes the batch
  (('model', 'num_classes'), 100),
  (('search', 'constraints'), 'params,macs'),
  (('model', 'arch'), 'resnet34'),
  (('model', 'depth'), 16),
  (('model', 'width'), 1),
  (('search', 'num_candidates'), 7),
  (('search', 'strategy'), 'evolution'),
  (('search', 'fresh_batch_per_candidate'), True),
]


def _set(config, path, value):
  section = config
  for key in path[:-1]:
    section = section[key]
  section[path[-1]] = value


@pytest.mark.parametrize('path, value', CHANGES, ids=['.'.join(p) for p, _ in CHANGES])
def test_mismatches_notice_each_setting_that_changes_the_result(path, value):
  config = _smoke()
  saved = record.SearchRecord.from_json(_record(config).to_json())
  _set(config, path, value)
  changed = saved.mismatches(config)
  assert changed and not saved.matches(config)
  key = 'data' if path[0] == 'data' else path[-1]  # config.data is recorded as one setting
  assert any(line.startswith(f'{key}: ') for line in changed), changed


def test_the_mac_budget_and_band_count_only_under_the_macs_constraint():
  config = _smoke()
  config.search.update(constraints='params,macs', mac_budget=1_000_000, mac_band=0.05)
  saved = record.SearchRecord.from_json(_record(config).to_json())
  assert saved.matches(config)
  config.search.mac_budget = 2_000_000
  assert [line.split(':')[0] for line in saved.mismatches(config)] == ['mac_budget']
  config.search.update(mac_budget=1_000_000, mac_band=0.1)
  assert [line.split(':')[0] for line in saved.mismatches(config)] == ['mac_band']
  params_only = _smoke()
  params_only.search.mac_budget = 5  # unused without the 'macs' constraint
  assert record.SearchRecord.from_json(_record(_smoke()).to_json()).matches(params_only)


@pytest.mark.parametrize(
  'path, value',
  [
    (('search', 'threads'), 1),
    (('search', 'low_memory'), True),
    (('search', 'compilation_cache_dir'), '/elsewhere'),
    (('search', 'max_draws'), 10**9),
    (('data', 'cache_dir'), '/elsewhere'),
    (('train', 'epochs'), 1),
    (('stage',), 'pipeline'),
  ],
)
def test_settings_that_change_no_score_are_not_mismatches(path, value):
  config = _smoke()
  saved = record.SearchRecord.from_json(_record(config).to_json())
  _set(config, path, value)
  assert saved.mismatches(config) == []


def test_synthetic_size_matters_only_for_synthetic_data():
  config = _smoke()
  config.data.source = '/data/cifar10'
  saved = record.SearchRecord.from_json(_record(config).to_json())
  config.data.synthetic_size = 4096
  assert saved.matches(config)


def test_an_unset_optional_data_field_is_not_recorded_so_older_records_match():
  config = _smoke()
  assert config.data.train_examples is None
  saved = record.SearchRecord.from_json(_record(config).to_json())
  assert 'train_examples' not in saved.settings['data']
  config.data.train_examples = 100  # a subset changes the Fisher batch
  (mismatch,) = saved.mismatches(config)
  assert mismatch.startswith('data: ') and mismatch.endswith("'train_examples': 100}")


def test_a_mismatch_says_what_was_recorded_and_what_the_config_wants():
  config = _smoke()
  saved = record.SearchRecord.from_json(_record(config).to_json())
  config.search.budget = 60_000
  assert saved.mismatches(config) == ['budget: 50000 -> 60000']


@pytest.mark.parametrize(
  'edit',
  [
    lambda text: text[:-10],  # cut short: not JSON
    lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != 'settings'}),
    lambda text: text.replace('"DConv"', '"Bogus"'),
    lambda text: text.replace('"score": 0.125', '"score": "high"'),
    lambda text: '[1, 2]',
  ],
  ids=['truncated', 'no-settings', 'unknown-block', 'text-score', 'a-list'],
)
def test_a_malformed_record_is_a_value_error_naming_the_file(edit):
  text = edit(_record(_smoke()).to_json())
  with pytest.raises(ValueError, match=r'^/w/best_genotype\.json is not a search record'):
    record.SearchRecord.from_json(text, source='/w/best_genotype.json')


def test_a_malformed_record_in_a_workdir_stops_the_pipeline_naming_it(tmp_path):
  (tmp_path / record.FILE).write_text('{"genotype": ')
  with pytest.raises(ValueError, match=f'{tmp_path / record.FILE} is not a search record'):
    pipeline.search_done(_smoke(), str(tmp_path))
