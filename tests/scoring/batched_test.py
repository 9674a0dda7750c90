"""The batched engine against the fast one (checked against the reference), and its compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import bench
from bswap import defaults
from bswap.nets import arch
from bswap.nets import genotype as genotype_lib
from bswap.scoring import batched
from bswap.scoring import engine
from bswap.scoring import fisher_engines
from bswap.scoring import metrics
from bswap.search import record
from bswap.search import sampler

SKEL = arch.wrn_skeleton(10, 2, image_size=8)  # 3 blocks: 8 -> 8, 16 -> 4/2, 32 -> 2/2
SEED = 3
# Dense, depthwise and block-diagonal grouped convs, both families.
MENU = ('Conv', 'DConv', 'DConvG2', 'G8B2', 'A2B2')


def _genotypes():
  """15 sampled genotypes, then 3 more with block 0 a G8B2, so that the last chunk of 3
  has one type at a position (with ResNet-34's 2: 20 genotypes)."""
  out = list(sampler.sample(SKEL, 60_000, 15, seed=0, band=0.5, names=MENU).genotypes)
  out += [genotype_lib.Genotype(('G8B2', *g.blocks[1:]), 'wrn', 10, 2) for g in out[:3]]
  return out


GENOTYPES = _genotypes()


def _batch(dtype):
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3), dtype)
  return x, jnp.arange(4)


def _items(x, y, genotypes=GENOTYPES, first=0):
  return [(g, first + i, x, y) for i, g in enumerate(genotypes)]


def test_buckets_are_powers_of_4_capped_and_cover_the_group():
  assert batched.buckets(1, 64) == [1]
  assert batched.buckets(3, 64) == [4]
  assert batched.buckets(5, 64) == [16]
  assert batched.buckets(17, 32) == [32]
  assert batched.buckets(70, 32) == [32, 32, 16]  # past the largest bucket: split
  assert batched.buckets(4, 2) == [2, 2]
  for size in range(1, 40):
    pieces = batched.buckets(size, 8)
    assert sum(pieces) >= size and sum(pieces[:-1]) < size


def test_padding_rows_gather_a_member_and_scatter_nowhere():
  take, put = batched._indices([5, 2, 7], 4, rows=8)
  assert take.tolist() == [5, 2, 7, 5] and put.tolist() == [5, 2, 7, 8]  # 8: dropped


def _check_against_fast(pieces, dtype, block_rtol, total_rtol):
  # chunk 3, buckets of at most 2: chunks split the groups unevenly, groups pass
  # the largest bucket, and buckets carry padding rows.
  x, y = _batch(dtype)
  fast = engine.Engine(SKEL, pieces, 'fast')
  got = batched.Batched(SKEL, pieces, 'fast', chunk=3, max_bucket=2).score_chunk(_items(x, y), SEED)
  totals, fast_totals = [], []
  for i, geno in enumerate(GENOTYPES):
    total, per_block = fast.score(geno, SEED, i, x, y)
    np.testing.assert_allclose(got[i][1], per_block, rtol=block_rtol, err_msg=str(geno.blocks))
    np.testing.assert_allclose(got[i][0], total, rtol=total_rtol)
    totals.append(got[i][0])
    fast_totals.append(total)
  assert np.argmax(totals) == np.argmax(fast_totals)


@pytest.mark.slow
def test_float64_scores_equal_the_fast_engine_within_1e_9(pieces):
  with jax.enable_x64(True):
    _check_against_fast(pieces, jnp.float64, 1e-9, 1e-9)


@pytest.mark.slow
def test_float32_scores_match_the_fast_engine_and_pick_the_same_candidate(pieces):
  # The engine tests' float32 bounds (1e-3 per block, 1e-4 in total), which hold at
  # this size; at full size float32 rounding is larger (docs/benchmarks.md).
  _check_against_fast(pieces, jnp.float32, 1e-3, 1e-4)


@pytest.mark.slow
def test_the_chunk_size_does_not_change_the_scores(pieces):
  with jax.enable_x64(True):
    x, y = _batch(jnp.float64)
    items = _items(x, y, GENOTYPES[:5])
    one = batched.Batched(SKEL, pieces, 'fast', chunk=1).score_chunk(items, SEED)
    five = batched.Batched(SKEL, pieces, 'fast', chunk=5).score_chunk(items, SEED)
    for (total_1, blocks_1), (total_5, blocks_5) in zip(one, five):
      np.testing.assert_allclose(blocks_5, blocks_1, rtol=1e-9)
      np.testing.assert_allclose(total_5, total_1, rtol=1e-9)


@pytest.mark.slow
def test_per_candidate_batches_equal_a_shared_one(pieces):
  # Fresh batches per candidate are stacked; equal batches give the shared batch's scores.
  x, y = _batch(jnp.float32)
  copies = [(g, i, np.array(x), np.array(y)) for g, i, _, _ in _items(x, y, GENOTYPES[:2])]
  engine_ = batched.Batched(SKEL, pieces, 'fast', chunk=2)
  shared = engine_.score_chunk(_items(x, y, GENOTYPES[:2]), SEED)
  stacked = engine_.score_chunk(copies, SEED)
  for (a, _), (b, _) in zip(shared, stacked):
    np.testing.assert_allclose(b, a, rtol=1e-6)


@pytest.mark.slow
def test_twice_the_candidates_compile_nothing_once_the_buckets_are_warm(pieces):
  x, y = _batch(jnp.float32)
  scorer = batched.Batched(SKEL, pieces, 'fast', chunk=4, max_bucket=4)
  genotypes = GENOTYPES[:4]
  scorer.score_chunk(_items(x, y, genotypes), SEED)  # warm
  built = pieces.builds
  # Twice the candidates (other indices: other weights), chunks of the same block types.
  with bench.CompileCounter() as counter:
    scorer.score_chunk(_items(x, y, genotypes * 2, first=100), SEED)
  assert counter.compiles == 0 and pieces.builds == built


@pytest.mark.slow
@pytest.mark.exhaustive
def test_resnet34_scores_equal_the_fast_engine_within_1e_9_in_float64(pieces):
  # Post-activation blocks: block 0's Fisher term comes from its pullback. 64 px as in
  # the fast engine's test (batch norm over 1-px stages amplifies float64 rounding).
  skel = arch.skeleton('resnet34', image_size=64, num_classes=10)
  genotypes = sampler.sample(skel, 3_000_000, 2, seed=0, band=0.2, names=('Conv', 'G8B2'))
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 64, 64, 3), jnp.float64)
    y = jnp.arange(4)
    items = [(g, i, x, y) for i, g in enumerate(genotypes.genotypes)]
    got = batched.Batched(skel, pieces, 'fast', chunk=2).score_chunk(items, SEED)
    fast = engine.Engine(skel, pieces, 'fast')
    for (geno, i, _, _), (total, per_block) in zip(items, got):
      want_total, want = fast.score(geno, SEED, i, x, y)
      np.testing.assert_allclose(per_block, want, rtol=1e-9, err_msg=str(geno.blocks))
      np.testing.assert_allclose(total, want_total, rtol=1e-9)


def test_auto_is_fast_on_cpus_and_batched_on_accelerators():
  config = defaults.cifar_config(400_000)
  assert config.search.engine == 'auto'
  assert metrics.resolve_engine(config, 'cpu') == 'fast'
  assert metrics.resolve_engine(config, 'gpu') == metrics.resolve_engine(config, 'tpu') == 'batched'
  config.search.engine = 'reference'
  assert metrics.resolve_engine(config, 'gpu') == 'reference'


def test_the_search_record_stores_the_engine_that_ran():
  # 'auto' is recorded resolved, so a record of an explicit 'fast' search on
  # this CPU matches an 'auto' config, and a 'batched' one does not.
  config = defaults.cifar_config(400_000)
  assert record.search_settings(config)['engine'] == metrics.resolve_engine(
    config, jax.default_backend()
  )
  explicit = defaults.cifar_config(400_000)
  explicit.search.engine = record.search_settings(config)['engine']
  assert record.search_settings(explicit) == record.search_settings(config)
  explicit.search.engine = 'batched' if jax.default_backend() == 'cpu' else 'fast'
  assert record.search_settings(explicit)['engine'] != record.search_settings(config)['engine']


def test_the_registry_scores_a_chunk_through_the_batched_engine(pieces):
  config = defaults.cifar_config(400_000)
  config.search.engine, config.search.chunk = 'batched', 5
  scorer = metrics.make_scorer(config, SKEL, pieces)
  assert scorer.chunk == 5 and callable(scorer.score_chunk)


def test_a_cpu_chunk_is_capped_for_memory_and_an_accelerator_chunk_is_not(pieces):
  config = defaults.cifar_config(400_000)
  config.search.engine, config.search.chunk = 'batched', 32
  assert fisher_engines.chunk_of(config, 'cpu') == fisher_engines.CPU_CHUNK < 32
  assert fisher_engines.chunk_of(config, 'gpu') == fisher_engines.chunk_of(config, 'tpu') == 32
  scorer = metrics.make_scorer(config, SKEL, pieces)
  assert scorer.chunk == fisher_engines.chunk_of(config, jax.default_backend())
