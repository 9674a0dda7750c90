"""The mesh, shardings and device-resident data on the 4 fake CPU devices of conftest."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bswap import parallel
from bswap.data import arrays as input_pipeline
from bswap.data import resident as device_data


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh()


def test_mesh_has_one_data_axis_over_every_device(mesh):
  assert mesh.axis_names == ('data',)
  assert mesh.devices.size == jax.device_count() == 4
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  assert parallel.make_mesh(jax.devices()[:1]).devices.size == 1


@pytest.mark.parametrize('size, suggestion', [(6, '4 or 8'), (2, '4'), (130, '128 or 132')])
def test_a_size_that_does_not_divide_names_both_numbers(mesh, size, suggestion):
  with pytest.raises(ValueError, match=f'batch size {size} does not divide across 4 devices'):
    parallel.check_divisible(size, mesh)
  with pytest.raises(ValueError, match=f'e.g. {suggestion}'):
    parallel.check_divisible(size, mesh)
  parallel.check_divisible(128, mesh)


def test_one_process_owns_every_row():
  assert parallel.local_rows(12) == slice(0, 12)


def test_put_sharded_splits_the_leading_axis(mesh):
  x = parallel.put_sharded(np.arange(8 * 3).reshape(8, 3), mesh)
  assert x.sharding.spec == P('data')
  assert [s.data.shape for s in x.addressable_shards] == [(2, 3)] * 4
  y = parallel.put_replicated({'a': np.ones(3)}, mesh)['a']
  assert y.sharding.is_fully_replicated


def test_train_split_keeps_a_multiple_of_the_device_count(mesh):
  ds = input_pipeline.synthetic(30, 4, 10, seed=0)
  split = device_data.train_split(ds, mesh, seed=0)
  assert (split.rows, split.count) == (7, 28)
  # A shuffled subset of the examples, each at most once.
  images = np.asarray(split.images).reshape(28, -1)
  originals = {row.tobytes(): i for i, row in enumerate(ds.images.reshape(30, -1))}
  picked = [originals[row.tobytes()] for row in images]
  assert len(set(picked)) == 28 and picked != sorted(picked)
  np.testing.assert_array_equal(np.asarray(split.labels), ds.labels[picked])


def test_an_epoch_gathers_each_device_own_rows_without_repeats(mesh):
  ds = input_pipeline.synthetic(32, 4, 10, seed=1)
  split = device_data.train_split(ds, mesh, seed=0)
  order = device_data.epoch_order(mesh, jax.random.PRNGKey(0), split)
  blocks = np.asarray(order).reshape(4, 8)
  for block in blocks:
    assert sorted(block) == list(range(8))  # a permutation of the device's own rows
  other = device_data.epoch_order(mesh, jax.random.PRNGKey(1), split)
  assert not np.array_equal(np.asarray(other), np.asarray(order))
  labels = np.asarray(split.labels).reshape(4, 8)
  seen = []
  for index in range(2):  # 2 batches of 16 = 4 per device
    batch = device_data.train_batch(mesh, split, order, index, 16)
    assert batch['image'].shape == (16, 4, 4, 3) and batch['label'].sharding.spec == P('data')
    got = np.asarray(batch['label']).reshape(4, 4)
    for d in range(4):
      np.testing.assert_array_equal(got[d], labels[d][blocks[d][index * 4 : index * 4 + 4]])
      seen.extend((d, r) for r in blocks[d][index * 4 : index * 4 + 4])
  assert len(set(seen)) == 32  # the epoch visits every example once


def test_the_test_split_scores_every_example_once(mesh):
  ds = input_pipeline.synthetic(21, 4, 10, seed=2)
  split = device_data.test_split(ds, mesh, batch_size=8)
  assert (split.rows, split.count) == (6, 21)  # padded to 24 = 3 batches of 8
  labels, images, mask = [], [], []
  for index in range(3):
    batch = device_data.eval_batch(mesh, split, index, 8)
    labels.append(np.asarray(batch['label']))
    images.append(np.asarray(batch['image']))
    mask.append(np.asarray(batch['mask']))
  mask = np.concatenate(mask)
  assert mask.sum() == 21
  # Batch j holds examples [8 j, 8 j + 8), in order; the padding comes last.
  np.testing.assert_array_equal(np.concatenate(labels)[mask], ds.labels)
  np.testing.assert_array_equal(np.concatenate(images)[mask], ds.images)
  assert not mask[21:].any()


def test_an_eval_batch_that_does_not_divide_is_a_clear_error(mesh):
  ds = input_pipeline.synthetic(8, 4, 10, seed=3)
  with pytest.raises(ValueError, match='eval batch size 6 does not divide across 4 devices'):
    device_data.test_split(ds, mesh, batch_size=6)
