"""Datasets resident on the devices, and batches drawn from them inside jit.

Training at tens of thousands of images per second leaves no room for a host
round-trip per step, so the uint8 images live on the devices, split along the
mesh's 'data' axis: each device holds `rows` examples of its own. Every epoch
each device shuffles its rows (a permutation from the run key, the epoch and
the device's position) and step i of the epoch gathers its local slice of the
global batch from its own rows, with no communication. Each process loads only
its devices' rows (`parallel.local_rows`).

Before the split the training set is shuffled once by a fixed seeded
permutation, so that every device holds a random share of the classes even
when the source lists its images class by class.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from bswap import parallel
from bswap.data import arrays as input_pipeline

_SPLIT_STREAM = 3  # numpy stream tag of the one-off shuffle before the split


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


def train_split(ds: input_pipeline.ArrayDataset, mesh, seed: int) -> DeviceSplit:
  """The training set shuffled once, cut to a multiple of the device count, and placed.

  At most devices - 1 examples are left out (none for CIFAR-10 on 1, 2, 4 or 8 devices).
  """
  devices = mesh.devices.size
  if len(ds) < devices:
    raise ValueError(f'{len(ds)} training examples cannot be split across {devices} devices')
  order = np.random.default_rng((_SPLIT_STREAM, seed)).permutation(len(ds))
  order = order[: devices * (len(ds) // devices)]
  return _place(ds.images[order], ds.labels[order], np.ones(len(order), bool), mesh)


def test_split(ds: input_pipeline.ArrayDataset, mesh, batch_size: int) -> DeviceSplit:
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
