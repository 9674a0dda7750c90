"""bswap.defaults' builders: the sections each returns, registered names, and what smoke shrinks.

tests/configs_test.py checks the configs/ files built from them; these check the
builders themselves, which `python -m bswap.bench` uses without configs/.
"""

import pytest

from bswap import data as data_lib
from bswap import defaults
from bswap import pipeline
from bswap.scoring import metrics
from bswap.search import constraints
from bswap.search import run as search
from bswap.search import sampler
from bswap.search import strategies

COMMON = {'stage', 'seed', 'model', 'data', 'distributed', 'train', 'log_every_seconds'}


def test_the_stages_are_the_pipelines():
  assert set(defaults.STAGES) == set(pipeline.STAGES)


@pytest.mark.parametrize(
  'build, stage, searches, data_pipeline',
  [
    (lambda: defaults.cifar_config(400_000), 'search', True, 'cifar'),
    (lambda: defaults.teacher(None), 'teacher', False, 'cifar'),
    (lambda: defaults.fixed_student('DConv', 40, 2, None), 'student', False, 'cifar'),
    (lambda: defaults.random_student(400_000, None), 'student', True, 'cifar'),
    (lambda: defaults.imagenet_config(3_000_000), 'search', True, 'imagenet'),
    (lambda: defaults.imagenet_teacher(None), 'teacher', False, 'imagenet'),
  ],
)
def test_each_builder_returns_only_the_sections_its_stage_reads(
  build, stage, searches, data_pipeline
):
  config = build()
  assert config.stage == stage
  assert set(config) == COMMON | ({'search'} if searches else set())
  assert config.data.pipeline == data_pipeline
  assert set(config.data) == set(data_lib.default_config(data_pipeline))


def test_the_search_defaults_name_registered_entries():
  config = defaults.cifar_config(400_000)
  assert metrics.get(config.search.metric).name == 'fisher_potential'
  assert strategies.get(config.search.strategy) is strategies.random
  assert constraints.names(config) == ('params',)
  engines = metrics.get(config.search.metric).engines
  assert config.search.engine == 'auto'
  assert {metrics.resolve_engine(config, p) for p in ('cpu', 'gpu', 'tpu')} <= set(engines)
  assert config.search.conv_impl == 'auto'


@pytest.mark.parametrize(
  'full, smoke',
  [
    (lambda: defaults.cifar_config(400_000), lambda: defaults.get(400_000, 'smoke')),
    (
      lambda: defaults.imagenet_config(3_000_000),
      lambda: defaults.imagenet_get(3_000_000, 'smoke'),
    ),
  ],
)
def test_smoke_shrinks_the_network_data_search_and_training(full, smoke):
  full, smoke = full(), smoke()
  assert smoke.data.source == 'synthetic' and full.data.source != 'synthetic'
  assert smoke.data.image_size < full.data.image_size
  assert smoke.search.num_candidates < full.search.num_candidates
  assert metrics.batch_size_of(smoke) < metrics.batch_size_of(full)
  assert smoke.search.compilation_cache_dir == ''  # a smoke run leaves nothing behind
  assert smoke.train.epochs < full.train.epochs
  assert smoke.train.batch_size < full.train.batch_size
  sizes = lambda c: (c.model.depth, c.model.num_classes, c.data.image_size)
  assert sizes(smoke) != sizes(full)


def test_the_smoke_budget_is_reachable_by_the_smoke_network():
  config = defaults.get(400_000, 'smoke')
  m = sampler.build_menu(search.skeleton(config))
  band = sampler.band_limits(config.search.budget, config.search.band)
  assert sampler.acceptance_probability(m, *band) > 0.01


def test_smoke_adds_no_search_to_a_teacher():
  config = defaults.teacher('smoke')
  assert 'search' not in config and config.model.depth == 10 and config.train.epochs == 2


def test_an_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="unknown config variant 'big'"):
    defaults.get(400_000, 'big')
