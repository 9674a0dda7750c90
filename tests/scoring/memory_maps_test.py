"""Compiled pieces keep the process's memory maps under their budget (Linux caps them)."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bswap.nets import arch
from bswap.scoring import engine
from bswap.scoring import memory_maps
from bswap.scoring import metrics
from bswap.scoring.proxies import blockwise
from bswap.scoring.proxies import candidate as candidate_lib
from bswap.search import sampler


def _build(i):
  x = jnp.ones((4,))
  return lambda: jax.jit(lambda x: jnp.sin(x) * (i + 1.0) + jnp.cos(x) ** i).lower(x).compile()


def test_the_budget_is_a_share_of_the_kernel_limit():
  if memory_maps.limit() is None:
    pytest.skip('no vm.max_map_count here')
  assert memory_maps.budget() == int(memory_maps.SHARE * memory_maps.limit())
  assert 0 < memory_maps.in_use() < memory_maps.limit()


def test_pieces_past_the_map_budget_drop_the_least_recently_used():
  if memory_maps.in_use() is None:
    pytest.skip('no /proc/self/maps here')
  _build(99)()  # the process's first compile maps the compiler itself
  gc.collect()  # earlier tests' executables, freed now rather than during this one
  used = memory_maps.in_use()
  # Room for a few of these one-kernel executables (3 maps each on jax 0.10.2), not 13.
  pieces = engine.Pieces(map_budget=used + 10, check_every=1)
  first = pieces.get('kept', _build(0))
  for i in range(1, 13):
    pieces.get(i, _build(i))
    pieces.get('kept', _build(0))  # used after every build: never the least recent
  keys = pieces.keys()
  assert memory_maps.in_use() < used + 13 * 3  # what keeping all 13 would have taken
  assert pieces.dropped > 0 and len(keys) == 13 - pieces.dropped
  assert 'kept' in keys and 1 not in keys and 12 in keys
  assert pieces.builds == 13  # 'kept' was built once
  again = pieces.get(1, _build(1))  # a dropped piece is built again, and works
  assert pieces.builds == 14
  x = jnp.ones((4,))
  assert jnp.allclose(again(x), jnp.sin(x) * 2.0 + jnp.cos(x)) and first(x).shape == (4,)


def test_pieces_without_a_budget_keep_everything():
  pieces = engine.Pieces(map_budget=None, check_every=1)
  for i in range(6):
    pieces.get(i, _build(i))
  assert pieces.dropped == 0 and len(pieces) == 6


@pytest.mark.slow
def test_engines_score_the_same_when_the_table_keeps_dropping_pieces():
  # A budget of 0 drops the least recently used quarter after every build, so forward
  # pieces are dropped and rebuilt under backward pieces compiled for their pullbacks.
  if memory_maps.in_use() is None:
    pytest.skip('no /proc/self/maps here')
  skel = arch.wrn_skeleton(10, 1, image_size=8)
  genotypes = sampler.sample(skel, 30_000, 3, seed=1, band=0.5).genotypes
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
  y = jnp.arange(4) % 3
  names = ['snip', 'jacov', 'nwot', 'zico', 'fisher_potential']

  def scores(pieces):
    fisher = engine.Engine(skel, pieces, 'fast')
    proxies = blockwise.ProxyEngine(skel, pieces, 'fast')
    out = []
    for i, geno in enumerate(genotypes * 2):  # twice: the second round reuses and rebuilds
      cand = candidate_lib.Candidate.build(geno, skel, 3, i % 3, x, y, proxies)
      out.append((fisher.score(geno, 3, i % 3, x, y)[0], metrics.evaluate(cand, names)))
    return out

  churning = engine.Pieces(map_budget=0, check_every=1)
  got, want = scores(churning), scores(engine.Pieces(map_budget=None))
  assert churning.dropped > 0
  for (f_got, m_got), (f_want, m_want) in zip(got, want):
    np.testing.assert_allclose(f_got, f_want, rtol=1e-6)
    for name in names:
      np.testing.assert_allclose(m_got[name], m_want[name], rtol=1e-5, err_msg=name)
