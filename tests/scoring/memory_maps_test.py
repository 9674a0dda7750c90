"""Compiled pieces keep the process's memory maps under their budget (Linux caps them)."""

import gc

import jax
import jax.numpy as jnp
import pytest

from bswap.scoring import engine
from bswap.scoring import memory_maps


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
