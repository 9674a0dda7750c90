"""The mesh and shardings, on the 4 fake CPU devices of conftest."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bswap import parallel


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh()


@pytest.mark.devices(4)
def test_mesh_has_one_data_axis_over_every_device(mesh):
  assert mesh.axis_names == ('data',)
  assert mesh.devices.size == jax.device_count() == 4
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  assert parallel.make_mesh(jax.devices()[:1]).devices.size == 1


@pytest.mark.devices(4)
@pytest.mark.parametrize('size, suggestion', [(6, '4 or 8'), (2, '4'), (130, '128 or 132')])
def test_a_size_that_does_not_divide_names_both_numbers(mesh, size, suggestion):
  with pytest.raises(ValueError, match=f'batch size {size} does not divide across 4 devices'):
    parallel.check_divisible(size, mesh)
  with pytest.raises(ValueError, match=f'e.g. {suggestion}'):
    parallel.check_divisible(size, mesh)
  parallel.check_divisible(128, mesh)


def test_one_process_owns_every_row():
  assert parallel.local_rows(12) == slice(0, 12)


@pytest.mark.devices(4)
def test_put_sharded_splits_the_leading_axis(mesh):
  x = parallel.put_sharded(np.arange(8 * 3).reshape(8, 3), mesh)
  assert x.sharding.spec == P('data')
  assert [s.data.shape for s in x.addressable_shards] == [(2, 3)] * 4
  y = parallel.put_replicated({'a': np.ones(3)}, mesh)['a']
  assert y.sharding.is_fully_replicated
