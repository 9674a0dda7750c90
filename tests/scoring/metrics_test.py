"""The metric registry: lookups, one scorer per engine, and the engines agreeing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import defaults
from bswap.scoring import metrics
from bswap.search import run as search
from bswap.search import sampler

MENU = ('Conv', 'DConv', 'G8B2')  # dense, depthwise and block-diagonal grouped convs


def _config(engine_name='fast', seed=0):
  """WRN-10-1 at 16 px: three blocks. (At 8 px stage 3 is 2 px, and batch norm over
  so few values amplifies float64 rounding past 1e-9.)"""
  config = defaults.smoke(defaults.cifar_config(20_000))
  config.model.width = 1
  config.data.image_size = 16
  config.search.engine = engine_name
  config.seed = seed
  return config


def _genotypes(skel, num=2):
  return sampler.sample(skel, 20_000, num, seed=0, band=0.3, names=MENU).genotypes


def _batch(dtype):
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 3), dtype)
  return x, jnp.arange(8) % 10


def test_every_metric_has_a_label_a_definition_a_sign_and_a_reference_path():
  assert metrics.METRICS
  for name, metric in metrics.METRICS.items():
    assert metric.name == name and metrics.get(name) is metric
    assert metric.label and metric.definition and metric.sign in (1, -1)
    if metrics.per_candidate(name):
      assert 'reference' in metric.engines and metric.passes
  assert set(metrics.get('fisher_potential').engines) == {'fast', 'batched', 'reference'}


def test_the_registry_holds_nas_bench_suite_zeros_13_and_bswaps_own():
  assert len(metrics.NB_ZERO) == 13
  expected = {*metrics.NB_ZERO, 'zico', 'meco', 'fisher_potential', 'rank_aggregate'}
  assert set(metrics.METRICS) == expected
  assert metrics.get('jacob_cov') is metrics.get('jacov')  # Samsung's name


def test_an_unknown_metric_names_the_flag_and_lists_the_metrics():
  with pytest.raises(ValueError) as error:
    metrics.get('snap')
  assert "--config.search.metric='snap' is unknown" in str(error.value)
  assert all(name in str(error.value) for name in metrics.METRICS)


@pytest.mark.parametrize(
  'ranking, record, expected',
  [
    ('fisher_potential', '', ()),
    ('snip', 'synflow,snip,nwot', ('synflow', 'nwot')),  # the ranking one is not repeated
    # rank_aggregate is recorded by pool; its members by candidate, each once.
    ('fisher_potential', 'jacov,rank_aggregate', ('jacov', 'rank_aggregate', 'synflow', 'snip')),
    ('rank_aggregate', '', ('synflow', 'jacov', 'snip')),
  ],
)
def test_recorded_metrics_lists_each_metric_once_beside_the_ranking_one(ranking, record, expected):
  config = _config()
  config.search.metric, config.search.record_metrics = ranking, record
  config.search.aggregate_metrics = 'synflow,jacov,snip'
  assert metrics.recorded_metrics(config) == expected


@pytest.mark.parametrize(
  'ranking, record, expected',
  [
    ('fisher_potential', '', metrics.FISHER_ALONE_BATCH),  # the measured case
    ('fisher', '', metrics.PAPER_BATCH),  # NASLib's fisher: not measured at 16
    ('jacov', '', metrics.PAPER_BATCH),
    ('fisher_potential', 'synflow', metrics.PAPER_BATCH),  # synflow shares the batch
    ('fisher_potential', 'fisher_potential', metrics.FISHER_ALONE_BATCH),
  ],
)
def test_the_default_scoring_batch_is_small_only_for_fisher_potential_alone(
  ranking, record, expected
):
  config = defaults.cifar_config(400_000)
  config.search.metric, config.search.record_metrics = ranking, record
  assert config.search.batch_size is None
  assert metrics.batch_size_of(config) == expected
  config.search.batch_size = 128  # SPEC's batch, restored by the flag
  assert metrics.batch_size_of(config) == 128


def test_the_default_scoring_batch_of_resnet34_and_of_a_study_of_many_metrics_is_128():
  config = defaults.imagenet_config(3_000_000)  # ResNet-34: unmeasured at 16
  assert metrics.batch_size_of(config) == metrics.PAPER_BATCH
  cifar = defaults.cifar_config(400_000)
  assert metrics.batch_size_of(cifar, ['fisher_potential', 'jacov']) == metrics.PAPER_BATCH
  assert metrics.batch_size_of(cifar, ['fisher_potential']) == metrics.FISHER_ALONE_BATCH
  assert metrics.PAPER_BATCH == 128 and metrics.FISHER_ALONE_BATCH < metrics.PAPER_BATCH


def test_an_unknown_engine_names_the_flag_and_lists_the_engines(pieces):
  config = _config('tpu-special')
  error = r"--config\.search\.engine='tpu-special' .*fast, batched, reference or auto"
  with pytest.raises(ValueError, match=error):
    metrics.make_scorer(config, search.skeleton(config), pieces)


def test_an_unknown_conv_impl_names_the_search_flag(pieces):
  config = _config()
  config.search.conv_impl = 'cudnn'
  with pytest.raises(ValueError, match=r'--config\.search\.conv_impl'):
    metrics.make_scorer(config, search.skeleton(config), pieces)


@pytest.mark.slow
def test_fast_and_reference_scorers_agree_within_1e_9_in_float64(pieces):
  config = _config()
  skel = search.skeleton(config)
  fast = metrics.make_scorer(_config('fast'), skel, pieces)
  reference = metrics.make_scorer(_config('reference'), skel, pieces)
  with jax.enable_x64(True):
    x, y = _batch(jnp.float64)
    for index, geno in enumerate(_genotypes(skel)):
      total, per_block = fast(geno, index, x, y)
      ref_total, ref_per_block = reference(geno, index, x, y)
      assert len(per_block) == skel.num_blocks and total > 0
      np.testing.assert_allclose(per_block, ref_per_block, rtol=1e-9)
      np.testing.assert_allclose(total, ref_total, rtol=1e-9)
      np.testing.assert_allclose(total, np.sum(per_block), rtol=1e-12)


@pytest.mark.parametrize('engine_name', ['fast', 'reference'])
def test_a_scorer_draws_the_weights_of_config_seed_and_the_candidate_index(engine_name, pieces):
  skel = search.skeleton(_config())
  (geno,) = _genotypes(skel, 1)

  def score(seed, index):
    scorer = metrics.make_scorer(_config(engine_name, seed), skel, pieces)
    return scorer(geno, index, *_batch(jnp.float64))[0]

  with jax.enable_x64(True):  # the float64 pieces the test above compiled
    base = score(0, 0)
    assert score(0, 0) == base  # deterministic
    assert score(1, 0) != base and score(0, 1) != base
