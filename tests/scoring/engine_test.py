"""The fast engine against the reference path (`bswap.scoring.fisher`), and its compiles."""

import concurrent.futures
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap import bench
from bswap.nets import arch
from bswap.nets import models
from bswap.scoring import engine
from bswap.scoring import fisher
from bswap.search import sampler

SKEL = arch.wrn_skeleton(10, 1, image_size=16)  # 3 blocks: 16 -> 16, 16 -> 32/2, 32 -> 64/2
SEED = 3


# Every conv form the engine has (dense, depthwise, block-diagonal grouped) in
# both families; a sub-menu keeps the number of per-block compiles small for CI.
MENU = ('Conv', 'DConv', 'DConvA4', 'DConvG2', 'ConvB2', 'G8B2', 'A2B2')


def _genotypes():
  """20 genotypes over four budgets across WRN-10-1's reachable range."""
  out = []
  for k, budget in enumerate((14_000, 20_000, 28_000, 40_000)):
    out += sampler.sample(SKEL, budget, 5, seed=k, band=0.15, names=MENU).genotypes
  return out


GENOTYPES = _genotypes()


def _batch(dtype):
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 16, 16, 3), dtype)
  return x, jnp.arange(16) % 10


def _reference(geno, index, x, y, skel=SKEL):
  model = models.build(geno, skel.num_classes)
  variables = models.init_variables(model, SEED, index, skel.image_size)
  variables = jax.tree.map(lambda v: v.astype(x.dtype), variables)
  total, per_block = jax.device_get(fisher.jitted_fisher(model)(variables, x, y))
  return float(total), np.asarray(per_block, np.float64)


@pytest.mark.slow
def test_float64_scores_equal_the_reference_within_1e_9(pieces):
  with jax.enable_x64(True):
    x, y = _batch(jnp.float64)
    fast = engine.Engine(SKEL, pieces, 'fast')
    for i, geno in enumerate(GENOTYPES):
      total, per_block = fast.score(geno, SEED, i, x, y)
      ref_total, ref_per_block = _reference(geno, i, x, y)
      np.testing.assert_allclose(per_block, ref_per_block, rtol=1e-9, err_msg=str(geno.blocks))
      np.testing.assert_allclose(total, ref_total, rtol=1e-9)


@pytest.mark.slow
@pytest.mark.exhaustive
def test_float32_scores_match_and_pick_the_same_candidate(pieces):
  x, y = _batch(jnp.float32)
  fast = engine.Engine(SKEL, pieces, 'fast')
  totals, ref_totals = [], []
  for i, geno in enumerate(GENOTYPES):
    total, per_block = fast.score(geno, SEED, i, x, y)
    ref_total, ref_per_block = _reference(geno, i, x, y)
    np.testing.assert_allclose(per_block, ref_per_block, rtol=1e-3, err_msg=str(geno.blocks))
    np.testing.assert_allclose(total, ref_total, rtol=1e-4)
    totals.append(total)
    ref_totals.append(ref_total)
  assert np.argmax(totals) == np.argmax(ref_totals)


@pytest.mark.slow
def test_native_convs_match_the_reference_to_float32_rounding(pieces):
  # With conv_impl='xla' the block-by-block path runs the reference's ops, compiled
  # in separate pieces: XLA may fuse them differently, so not always bit for bit.
  x, y = _batch(jnp.float32)
  xla = engine.Engine(SKEL, pieces, 'xla')
  for i, geno in enumerate(GENOTYPES[:4]):
    _, per_block = xla.score(geno, SEED, i, x, y)
    np.testing.assert_allclose(per_block, _reference(geno, i, x, y)[1], rtol=1e-6)


def test_engine_weights_are_the_seed_contracts():
  geno = GENOTYPES[7]
  model = models.WideResNet(geno.depth, geno.width, geno.blocks)
  expected = models.init_variables(model, SEED, 7, SKEL.image_size)
  parts = engine.Engine(SKEL, engine.Pieces()).variables(geno, SEED, 7)
  names = ['stem', 'block_0', 'block_1', 'block_2', 'head']
  for name, variables in zip(names, parts):
    jax.tree.map(np.testing.assert_array_equal, variables['params'], expected['params'][name])


def test_compiles_do_not_grow_with_the_number_of_candidates(pieces):
  x, y = _batch(jnp.float32)
  fast = engine.Engine(SKEL, pieces, 'fast')
  for i, geno in enumerate(GENOTYPES):  # warm: every (type, shape) these use
    fast.score(geno, SEED, i, x, y)
  built = pieces.builds
  # 20 new candidates (other indices: other weights) built from the same block choices.
  rng = np.random.default_rng(0)
  with bench.CompileCounter() as counter:  # its listeners end with the block
    for i in range(20):
      blocks = tuple(GENOTYPES[rng.integers(20)].blocks[b] for b in range(3))
      fast.score(type(GENOTYPES[0])(blocks, 'wrn', 10, 1), SEED, 100 + i, x, y)
  assert counter.compiles == 0 and pieces.builds == built


@pytest.mark.slow
@pytest.mark.exhaustive
def test_resnet34_scores_equal_the_reference_within_1e_9_in_float64(pieces):
  # Post-activation blocks: a ReLU sits between the probe and the block output,
  # so dL/dprobe comes from the pullback (block 0 included), not from dL/dy.
  # 64 px: blocks see 16 -> 2 px. (At 32 px stage 4 is 1 px, and batch norm over
  # 4 values per channel amplifies float64 rounding to ~2e-8.)
  skel = arch.skeleton('resnet34', image_size=64, num_classes=10)
  names = ('Conv', 'DConv', 'G8B2')
  genotypes = sampler.sample(skel, 3_000_000, 3, seed=0, band=0.2, names=names).genotypes
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 64, 64, 3), jnp.float64)
    y = jnp.arange(4)
    fast = engine.Engine(skel, pieces, 'fast')
    for i, geno in enumerate(genotypes):
      total, per_block = fast.score(geno, SEED, i, x, y)
      ref_total, ref_per_block = _reference(geno, i, x, y, skel)
      assert (per_block > 0).all()
      np.testing.assert_allclose(per_block, ref_per_block, rtol=1e-9, err_msg=str(geno.blocks))
      np.testing.assert_allclose(total, ref_total, rtol=1e-9)


def test_pieces_are_built_once_when_threads_ask_together():
  table, built = engine.Pieces(), []

  def build():
    time.sleep(0.05)  # long enough for every thread to ask while it runs
    built.append(1)
    return object()

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(lambda _: table.get('k', build), range(8)))
  assert len(built) == 1 and all(r is results[0] for r in results)

  def fail():
    raise RuntimeError('compile failed')

  with pytest.raises(RuntimeError, match='compile failed'):
    table.get('bad', fail)
  assert table.get('bad', lambda: 'retried') == 'retried'  # a failure is not cached


def test_pieces_are_bounded_and_released():
  table = engine.Pieces(limit=3)
  for key in range(5):
    table.get(key, lambda key=key: f'piece {key}')
  assert len(table) == 3 and table.builds == 5
  assert table.get(4, lambda: 'rebuilt') == 'piece 4'  # the newest are kept
  assert table.get(0, lambda: 'rebuilt') == 'rebuilt'  # the oldest were dropped
  with table:
    pass
  assert len(table) == 0


def test_candidates_on_two_threads_score_as_on_one(pieces):
  x, y = _batch(jnp.float32)
  fast = engine.Engine(SKEL, pieces, 'fast')
  items = list(enumerate(GENOTYPES[:6]))
  one = [fast.score(g, SEED, i, x, y)[1] for i, g in items]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    two = list(pool.map(lambda item: fast.score(item[1], SEED, item[0], x, y)[1], items))
  for a, b in zip(one, two):
    np.testing.assert_array_equal(a, b)
