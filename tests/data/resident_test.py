"""The 'cifar' pipeline: the Fisher batch, device-resident splits and their feeds."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bswap import data as data_lib
from bswap import parallel
from bswap.data import augment
from bswap.data import resident
from bswap.data import sources


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh()


def _labelled(n=64, size=32):
  """Images filled with 200 + 5 * label, so an augmented image still shows its label."""
  labels = np.arange(n, dtype=np.int32) % 10
  images = np.broadcast_to(
    (200 + 5 * labels).astype(np.uint8)[:, None, None, None], (n, size, size, 3)
  )
  return sources.ArrayDataset(np.array(images), labels, tuple(str(i) for i in range(10)))


def test_fisher_batch_is_seeded_per_search_or_per_candidate():
  ds = _labelled()
  images, labels = resident.fisher_batch(ds, 16, seed=0)
  assert images.shape == (16, 32, 32, 3) and images.dtype == np.float32
  assert labels.shape == (16,) and labels.dtype == np.int32
  # The brightest pixel (never padding or cutout) tells which example was drawn.
  brightest = np.asarray(images[..., 0]).max(axis=(1, 2))
  np.testing.assert_allclose(
    brightest,
    ((200 + 5 * labels) / 255 - augment.CIFAR10.mean[0]) / augment.CIFAR10.std[0],
    rtol=1e-5,
  )
  same = resident.fisher_batch(ds, 16, seed=0)
  np.testing.assert_array_equal(images, same[0])
  np.testing.assert_array_equal(labels, same[1])
  first, second = (
    resident.fisher_batch(ds, 16, 0, index=1),
    resident.fisher_batch(ds, 16, 0, index=2),
  )
  np.testing.assert_array_equal(first[0], resident.fisher_batch(ds, 16, 0, index=1)[0])
  assert not np.array_equal(first[0], second[0])
  assert not np.array_equal(first[0], images)
  assert not np.array_equal(resident.fisher_batch(ds, 16, seed=1)[0], images)
  with pytest.raises(ValueError, match='batch size 65 must be in'):
    resident.fisher_batch(ds, 65, seed=0)


def test_fisher_batch_takes_the_augmentation_sizes():
  # Cutout 16 zeroes an 8 px image whole; smoke configs pass smaller sizes.
  ds = sources.load('synthetic', 'train', image_size=8, synthetic_size=16)
  images, _ = resident.fisher_batch(ds, 16, seed=0)
  assert (np.asarray(images) == 0).all()
  images, _ = resident.fisher_batch(ds, 16, seed=0, pad=1, cutout=4)
  assert (np.asarray(images) != 0).all(-1).mean(axis=(1, 2)).min() >= 0.75


@pytest.mark.devices(4)
def test_train_split_keeps_a_multiple_of_the_device_count(mesh):
  ds = sources.synthetic(30, 4, 10, seed=0)
  split = resident.train_split(ds, mesh, seed=0)
  assert (split.rows, split.count) == (7, 28)
  # A shuffled subset of the examples, each at most once.
  images = np.asarray(split.images).reshape(28, -1)
  originals = {row.tobytes(): i for i, row in enumerate(ds.images.reshape(30, -1))}
  picked = [originals[row.tobytes()] for row in images]
  assert len(set(picked)) == 28 and picked != sorted(picked)
  np.testing.assert_array_equal(np.asarray(split.labels), ds.labels[picked])


@pytest.mark.devices(4)
def test_an_epoch_gathers_each_device_own_rows_without_repeats(mesh):
  ds = sources.synthetic(32, 4, 10, seed=1)
  split = resident.train_split(ds, mesh, seed=0)
  order = resident.epoch_order(mesh, jax.random.PRNGKey(0), split)
  blocks = np.asarray(order).reshape(4, 8)
  for block in blocks:
    assert sorted(block) == list(range(8))  # a permutation of the device's own rows
  other = resident.epoch_order(mesh, jax.random.PRNGKey(1), split)
  assert not np.array_equal(np.asarray(other), np.asarray(order))
  labels = np.asarray(split.labels).reshape(4, 8)
  seen = []
  for index in range(2):  # 2 batches of 16 = 4 per device
    batch = resident.train_batch(mesh, split, order, index, 16)
    assert batch['image'].shape == (16, 4, 4, 3) and batch['label'].sharding.spec == P('data')
    got = np.asarray(batch['label']).reshape(4, 4)
    for d in range(4):
      np.testing.assert_array_equal(got[d], labels[d][blocks[d][index * 4 : index * 4 + 4]])
      seen.extend((d, r) for r in blocks[d][index * 4 : index * 4 + 4])
  assert len(set(seen)) == 32  # the epoch visits every example once


@pytest.mark.devices(4)
def test_the_test_split_scores_every_example_once(mesh):
  ds = sources.synthetic(21, 4, 10, seed=2)
  split = resident.test_split(ds, mesh, batch_size=8)
  assert (split.rows, split.count) == (6, 21)  # padded to 24 = 3 batches of 8
  labels, images, mask = [], [], []
  for index in range(3):
    batch = resident.eval_batch(mesh, split, index, 8)
    labels.append(np.asarray(batch['label']))
    images.append(np.asarray(batch['image']))
    mask.append(np.asarray(batch['mask']))
  mask = np.concatenate(mask)
  assert mask.sum() == 21
  # Batch j holds examples [8 j, 8 j + 8), in order; the padding comes last.
  np.testing.assert_array_equal(np.concatenate(labels)[mask], ds.labels)
  np.testing.assert_array_equal(np.concatenate(images)[mask], ds.images)
  assert not mask[21:].any()


@pytest.mark.devices(4)
def test_an_eval_batch_that_does_not_divide_is_a_clear_error(mesh):
  ds = sources.synthetic(8, 4, 10, seed=3)
  with pytest.raises(ValueError, match='eval batch size 6 does not divide across 4 devices'):
    resident.test_split(ds, mesh, batch_size=6)


def _config(**data):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = ml_collections.ConfigDict({'num_classes': 10})
  config.data = data_lib.default_config('cifar')
  config.data.update(source='synthetic', image_size=4, synthetic_size=32, crop_pad=1, cutout=0)
  config.data.update(data)
  return config


@pytest.mark.slow
def test_the_data_interface_over_resident_splits(mesh):
  data = data_lib.open_data(_config())
  assert data.num_classes == 10 and data.max_steps_per_call is None
  feed = data.train_feed(mesh, 16, seed=0)
  assert feed.steps_per_epoch == 2  # 32 examples, 8 per device, 4 per device per batch
  calls = feed.epoch(jax.random.PRNGKey(0), 0, 0, 2, steps_per_call=1)
  assert [length for length, _ in calls] == [1, 1]
  labels = [np.asarray(feed.take(inputs, step)['label']) for step, (_, inputs) in enumerate(calls)]
  all_labels = np.sort(np.concatenate(labels))
  np.testing.assert_array_equal(all_labels, np.sort(data.split('train').labels))
  # Two steps per call: one call with the same inputs.
  assert [length for length, _ in feed.epoch(jax.random.PRNGKey(0), 0, 0, 2, 2)] == [2]
  evaluation = data.eval_feed(mesh, 8)
  assert evaluation.batches_per_call == 1 and evaluation.num_calls == 4
  calls = list(evaluation.calls())
  assert len(calls) == 4
  batches = [evaluation.take(inputs, 0) for inputs in calls]
  assert np.concatenate([np.asarray(b['mask']) for b in batches]).all()  # 32 images, no padding
  labels = np.concatenate([np.asarray(b['label']) for b in batches])
  np.testing.assert_array_equal(np.sort(labels), np.sort(data.split('test').labels))
  images = data.split('test').images[:4]
  np.testing.assert_array_equal(data.eval_transform(images), augment.normalize(images))


def test_the_config_statistics_normalise_the_fisher_batch():
  plain = data_lib.open_data(_config())
  other = data_lib.open_data(_config(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
  a, labels_a = plain.fisher_batch(8, seed=0)
  b, labels_b = other.fisher_batch(8, seed=0)
  np.testing.assert_array_equal(labels_a, labels_b)
  mean, std = np.array(augment.CIFAR10.mean), np.array(augment.CIFAR10.std)
  np.testing.assert_allclose(np.asarray(a) * std + mean, np.asarray(b), rtol=1e-5, atol=1e-6)


def test_a_subset_is_a_seeded_random_draw_of_each_split():
  ds = _labelled(n=64)
  sub = resident.subset(ds, 20, seed=0, split='train')
  assert len(sub) == 20 and len(set(sub.labels.tolist())) > 1  # not the first 20 of a sorted split
  again = resident.subset(ds, 20, seed=0, split='train')
  np.testing.assert_array_equal(sub.labels, again.labels)
  other = resident.subset(ds, 20, seed=0, split='test')
  assert not np.array_equal(sub.images, other.images) or not np.array_equal(
    sub.labels, other.labels
  )
  assert resident.subset(ds, None, 0, 'train') is ds and resident.subset(ds, 99, 0, 'train') is ds
  config = _config()
  config.data.train_examples, config.data.test_examples = 8, 4
  data = data_lib.open_data(config)
  assert (len(data.split('train')), len(data.split('test'))) == (8, 4)
  config.data.test_examples = 0
  with pytest.raises(ValueError, match='test_examples must be positive'):
    data_lib.open_data(config)
