"""Shared by the scoring tests."""

import pytest

from bswap.scoring import engine


@pytest.fixture(scope='module')
def pieces():
  """One search's compiled pieces, shared by a module's tests as a search shares them."""
  with engine.Pieces() as table:
    yield table
