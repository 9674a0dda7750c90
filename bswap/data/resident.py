"""The 'cifar' pipeline: datasets held in memory and resident on the devices.

Both splits are decoded once into uint8 arrays (`sources.load`, cached on
disk) and the training set lives on the devices, split along the mesh's 'data'
axis: each device holds `rows` examples of its own. Training at tens of
thousands of images per second leaves no room for a host round-trip per step,
so every epoch each device shuffles its rows (a permutation from the run key,
the epoch and the device's position) and step i of the epoch gathers its
local slice of the global batch from its own rows, with no communication,
then augments it there (`augment`: crop, flip, Cutout). Each process loads
only its devices' rows (`parallel.local_rows`).

Before the split the training set is shuffled once by a fixed seeded
permutation, so that every device holds a random share of the classes even
when the source lists its images class by class.
"""

from __future__ import annotations

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_dict

from bswap import parallel
from bswap.data import augment
from bswap.data import sources

# Tags of the numpy random streams, so that draws from one seed never coincide
# (stream 2 was an epoch order of the host; streamed.py uses 4 to 7).
_FISHER_STREAM, _SPLIT_STREAM = 1, 3
SUMMARY = 'in-memory arrays on the devices'  # for messages that list the pipelines


def default_config() -> ml_collections.ConfigDict:
  """config.data of the 'cifar' pipeline: CIFAR-10 and SPEC section 5's augmentation."""
  data = ml_collections.ConfigDict()
  # 'cifar10' (tensorflow-datasets if prepared, else the official archive,
  # downloaded once and checksummed), a class-folder directory or .tar.gz,
  # 'tfds:NAME', or 'synthetic'.
  data.source = 'cifar10'
  data.image_size = 32
  data.synthetic_size = 1024  # examples per split when source = 'synthetic'
  data.cache_dir = config_dict.placeholder(str)  # default ~/.cache/bswap
  # Normalisation of pixels scaled to [0, 1]: the dataset's per-channel statistics.
  data.mean = augment.CIFAR10.mean
  data.std = augment.CIFAR10.std
  # Training augmentation (SPEC section 5): pad-4 random crop, flip, Cutout 16.
  data.crop_pad = 4
  data.cutout = 16
  # A seeded random subset of each split (None: all of it), for studies at CPU scale.
  data.train_examples = config_dict.placeholder(int)
  data.test_examples = config_dict.placeholder(int)
  return data


@flax.struct.dataclass
class DeviceSplit:
  """One split on the mesh: (devices * rows) examples, sharded along 'data'."""

  images: jax.Array  # (devices * rows, H, W, 3) uint8
  labels: jax.Array  # (devices * rows,) int32
  mask: jax.Array  # (devices * rows,) bool: False on padding rows
  rows: int = flax.struct.field(pytree_node=False)  # examples per device
  count: int = flax.struct.field(pytree_node=False)  # real examples, all devices


def _place(images, labels, mask, mesh) -> DeviceSplit:
  mine = parallel.local_rows(len(labels))
  return DeviceSplit(
    parallel.put_sharded(images[mine], mesh),
    parallel.put_sharded(labels[mine], mesh),
    parallel.put_sharded(mask[mine], mesh),
    rows=len(labels) // mesh.devices.size,
    count=int(mask.sum()),
  )


def train_split(ds: sources.ArrayDataset, mesh, seed: int) -> DeviceSplit:
  """The training set shuffled once, cut to a multiple of the device count, and placed.

  At most devices - 1 examples are left out (none for CIFAR-10 on 1, 2, 4 or 8 devices).
  """
  devices = mesh.devices.size
  if len(ds) < devices:
    raise ValueError(f'{len(ds)} training examples cannot be split across {devices} devices')
  order = np.random.default_rng((_SPLIT_STREAM, seed)).permutation(len(ds))
  order = order[: devices * (len(ds) // devices)]
  return _place(ds.images[order], ds.labels[order], np.ones(len(order), bool), mesh)


def test_split(ds: sources.ArrayDataset, mesh, batch_size: int) -> DeviceSplit:
  """The whole test set, zero-padded to whole batches; `mask` marks the real examples."""
  parallel.check_divisible(batch_size, mesh, 'eval batch size')
  padded = -(-len(ds) // batch_size) * batch_size
  pad = padded - len(ds)
  images = np.concatenate([ds.images, np.zeros((pad, *ds.images.shape[1:]), np.uint8)])
  labels = np.concatenate([ds.labels, np.zeros(pad, np.int32)])
  mask = np.arange(padded) < len(ds)
  # Device d's rows [j b, (j + 1) b) are examples j B + d b + [0, b) (b = B / devices):
  # batch j is then examples [j B, (j + 1) B) in order, and the padding comes last.
  devices = mesh.devices.size
  local = batch_size // devices
  order = np.arange(padded).reshape(-1, devices, local).transpose(1, 0, 2).reshape(-1)
  return _place(images[order], labels[order], mask[order], mesh)


def epoch_order(mesh, key: jax.Array, split: DeviceSplit) -> jax.Array:
  """Each device's permutation of its own rows: (devices * rows,) int32, sharded."""

  def permute(key):
    return jax.random.permutation(jax.random.fold_in(key, parallel.device_index()), split.rows)

  spec = jax.sharding.PartitionSpec(parallel.DATA)
  return parallel.per_device(permute, mesh, jax.sharding.PartitionSpec(), spec)(key)


def train_batch(mesh, split: DeviceSplit, order: jax.Array, index, batch_size: int) -> dict:
  """Batch `index` of the epoch `order` describes: {'image', 'label'}, sharded along 'data'."""
  local = batch_size // mesh.devices.size

  def take(images, labels, order, index):
    rows = jax.lax.dynamic_slice_in_dim(order, index * local, local)
    return images[rows], labels[rows]

  spec, same = jax.sharding.PartitionSpec(parallel.DATA), jax.sharding.PartitionSpec()
  images, labels = parallel.per_device(take, mesh, (spec, spec, spec, same), (spec, spec))(
    split.images, split.labels, order, jnp.asarray(index, jnp.int32)
  )
  return {'image': images, 'label': labels}


def eval_batch(mesh, split: DeviceSplit, index, batch_size: int) -> dict:
  """Test batch `index`: {'image', 'label', 'mask'}, sharded along 'data'."""
  local = batch_size // mesh.devices.size

  def take(images, labels, mask, index):
    cut = lambda x: jax.lax.dynamic_slice_in_dim(x, index * local, local)
    return cut(images), cut(labels), cut(mask)

  spec, same = jax.sharding.PartitionSpec(parallel.DATA), jax.sharding.PartitionSpec()
  images, labels, mask = parallel.per_device(take, mesh, (spec,) * 3 + (same,), (spec,) * 3)(
    split.images, split.labels, split.mask, jnp.asarray(index, jnp.int32)
  )
  return {'image': images, 'label': labels, 'mask': mask}


# ----------------------------------------------------------------------------
# The Fisher batch: drawn on the host from the in-memory training split.


def fisher_batch(
  ds: sources.ArrayDataset,
  batch_size: int,
  seed: int,
  index: int | None = None,
  *,
  pad: int = 4,
  cutout: int = 16,
  stats: augment.Stats = augment.CIFAR10,
) -> tuple[jax.Array, jax.Array]:
  """One augmented training minibatch to score candidates on: (images, labels).

  Examples are drawn without replacement by numpy's default_rng, seeded with
  (stream tag, seed, 0, 0) for index=None, the one batch every candidate of a
  search shares, or (stream tag, seed, 1, index) for candidate `index`'s own
  fresh batch (the reference code draws a new batch per candidate). The same
  generator then draws the augmentation key, so equal arguments give
  identical arrays. The augmentation is `augment.augment` with pad and cutout.

  Returns:
    images (batch_size, H, W, 3) float32, normalised and augmented, and
    labels (batch_size,) int32.
  """
  if not 0 < batch_size <= len(ds):
    raise sources.BatchSizeError(
      f'batch size {batch_size} must be in [1, {len(ds)}], the number of examples; '
      'lower the batch size or use more data (e.g. --config.data.synthetic_size)'
    )
  entropy = (_FISHER_STREAM, seed, 0, 0) if index is None else (_FISHER_STREAM, seed, 1, index)
  rng = np.random.default_rng(entropy)
  chosen = np.asarray(rng.choice(len(ds), batch_size, replace=False))
  images, labels = ds.images[chosen], ds.labels[chosen]
  key = jax.random.PRNGKey(int(rng.integers(2**31)))
  images = augment.augment(key, images, pad=pad, cutout=cutout, stats=stats)
  return images, jnp.asarray(labels)


# ----------------------------------------------------------------------------
# Feeds: what training reads, one call per `steps_per_call` steps.


def _spec(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainFeed:
  """The training split on the devices; a call's inputs are (split, the epoch's order)."""

  mesh: jax.sharding.Mesh
  split: DeviceSplit
  batch_size: int
  max_steps_per_call = None  # any number of steps can run in one call (a lax.scan)

  @property
  def steps_per_epoch(self) -> int:
    return self.split.rows // (self.batch_size // self.mesh.devices.size)

  @functools.cached_property
  def _order(self):
    """Compiled once: the epoch's order from (split, order key, epoch)."""
    fn = lambda split, key, epoch: epoch_order(self.mesh, jax.random.fold_in(key, epoch), split)
    return jax.jit(fn, out_shardings=parallel.data_sharded(self.mesh))

  def epoch(self, order_key, epoch: int, start: int, stop: int, steps_per_call: int, resume=None):
    del resume  # the order is a function of the key and the epoch: nothing to restore
    order = self._order(self.split, order_key, np.int32(epoch))  # every process passes the same
    inputs = (self.split, order)
    return [(min(steps_per_call, stop - s), inputs) for s in range(start, stop, steps_per_call)]

  def inputs_spec(self):
    size = self.split.images.shape[0]
    order = jax.ShapeDtypeStruct((size,), jnp.int32, sharding=parallel.data_sharded(self.mesh))
    return _spec(self.split), order

  @property
  def take(self):
    return functools.partial(_take_train, self.mesh, self.batch_size)


def _take_train(mesh, batch_size: int, inputs, index):
  split, order = inputs
  return train_batch(mesh, split, order, index, batch_size)


@dataclasses.dataclass(frozen=True, eq=False)
class EvalFeed:
  """The test split on the devices; call j's inputs are (split, j), one test batch each.

  One batch per call (rather than the whole split in one call) lets the host
  log an evaluation's progress; the dispatches cost little next to a batch.
  """

  mesh: jax.sharding.Mesh
  split: DeviceSplit
  batch_size: int
  batches_per_call = 1

  @property
  def num_calls(self) -> int:
    return self.split.rows // (self.batch_size // self.mesh.devices.size)

  def calls(self):
    put = lambda j: parallel.put_replicated(np.int32(j), self.mesh)
    return ((self.split, put(j)) for j in range(self.num_calls))

  def inputs_spec(self):
    index = jax.ShapeDtypeStruct((), jnp.int32, sharding=parallel.replicated(self.mesh))
    return _spec(self.split), index

  @property
  def take(self):
    return functools.partial(_take_eval, self.mesh, self.batch_size)


def _take_eval(mesh, batch_size: int, inputs, index):
  split, first = inputs
  return eval_batch(mesh, split, first + index, batch_size)


# ----------------------------------------------------------------------------
# The pipeline's Data.


def subset(ds: sources.ArrayDataset, size: int | None, seed: int, split: str):
  """`size` examples of `ds` drawn without replacement (seeded), in their stored order.

  Stored order can be sorted by class (class folders), hence a random draw
  rather than the first `size`. None, or a size of at least len(ds): all of it.
  """
  if size is None or size >= len(ds):
    return ds
  tag = {'train': 0, 'test': 1}[split]
  rng = np.random.default_rng((0x5B5E7, seed, tag))
  keep = np.sort(rng.choice(len(ds), size, replace=False))
  return sources.ArrayDataset(ds.images[keep], ds.labels[keep], ds.class_names)


class Data:
  """In-memory arrays, resident on the devices and augmented there (CIFAR-sized data)."""

  pipeline = 'cifar'
  max_steps_per_call = None

  def __init__(self, config):
    data = config.data
    self.source = data.source
    self.stats = augment.Stats(data.mean, data.std)  # checked now, before any decoding
    self.pad, self.cutout = data.crop_pad, data.cutout
    if self.cutout >= 2 * data.image_size:  # the square then covers every image whole
      raise ValueError(
        f'--config.data.cutout={self.cutout} blanks every {data.image_size} px image whole; '
        f'use at most {data.image_size} (SPEC: 16 at 32 px), or 0 for no Cutout'
      )
    self._load = functools.partial(
      sources.load,
      data.source,
      image_size=data.image_size,
      num_classes=config.model.num_classes,
      synthetic_size=data.synthetic_size,
      seed=config.seed,
      cache_dir=data.cache_dir,
    )
    self._subset = {'train': data.train_examples, 'test': data.test_examples}
    for name, size in self._subset.items():
      if size is not None and size < 1:
        raise ValueError(
          f'--config.data.{name}_examples must be positive or None (all); got {size}'
        )
    self._seed = config.seed
    self._splits = {}

  def split(self, name: str) -> sources.ArrayDataset:
    """'train' or 'test', decoded (or read from the cache) when first asked for."""
    if name not in self._splits:
      self._splits[name] = subset(self._load(name), self._subset[name], self._seed, name)
    return self._splits[name]

  @property
  def num_classes(self) -> int:
    return self.split('train').num_classes

  def fisher_batch(self, batch_size: int, seed: int, index: int | None = None):
    train = self.split('train')
    return fisher_batch(
      train, batch_size, seed, index, pad=self.pad, cutout=self.cutout, stats=self.stats
    )

  def train_transform(self, key, images):
    return augment.augment(key, images, pad=self.pad, cutout=self.cutout, stats=self.stats)

  def eval_transform(self, images):
    return augment.normalize(images, self.stats)

  def train_feed(self, mesh, batch_size: int, seed: int) -> TrainFeed:
    return TrainFeed(mesh, train_split(self.split('train'), mesh, seed), batch_size)

  def eval_feed(self, mesh, batch_size: int) -> EvalFeed:
    return EvalFeed(mesh, test_split(self.split('test'), mesh, batch_size), batch_size)
