"""Fixtures of the data tests: the class-folder tree (tests/data/folders.py) and its splits."""

import pytest

from bswap.data import listing
from tests.data import folders


@pytest.fixture(scope='session')
def tree(tmp_path_factory):
  """The tiny class-folder dataset, written once; tests that change it copy it first."""
  return folders.make_tree(tmp_path_factory.mktemp('data') / 'imagenet')


@pytest.fixture(scope='module')
def splits(tree):
  """Its 'train' and 'eval' splits, listed."""
  return listing.open_split(str(tree), 'train'), listing.open_split(str(tree), 'eval')
