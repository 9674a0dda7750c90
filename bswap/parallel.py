"""Devices: the mesh, the shardings, and moving host data onto them.

The only module that knows about devices. One `Mesh` with a single 'data'
axis over every device of every process; batches and datasets are split along
it (`P('data')`), the training state is replicated (`P()`). Steps are plain
`jax.jit` functions of such arrays: XLA partitions them, and a batch-norm mean
over a sharded batch is a mean over the global batch (no axis_name, no pmap).
The same code runs on one CPU, eight GPUs, or a multi-host TPU pod, where each
process holds only its own rows of the data (`local_rows`) and
`jax.make_array_from_process_local_data` stitches them into global arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = 'data'


def initialize(distributed: bool) -> None:
  """Joins the processes of a multi-host job (TPU pod, multi-node GPU); no-op when False.

  Must run before any other JAX call. On Cloud TPU and SLURM the coordinator
  address and process ids are found automatically.
  """
  if distributed:
    jax.distributed.initialize()
    logging.info('Process %d of %d joined', jax.process_index(), jax.process_count())


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all devices of all processes).

  Auto axis types: jit decides how to partition what the batch sharding
  implies. (jax.make_mesh defaults to Explicit axes, whose sharding-in-types
  rules the model code does not need.)
  """
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA,), (jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Split the leading (batch or example) axis across the 'data' axis."""
  return NamedSharding(mesh, P(DATA))


def check_divisible(size: int, mesh: Mesh, what: str = 'batch size') -> None:
  """A ValueError naming both numbers, before JAX raises a less helpful one deep inside."""
  n = mesh.devices.size
  if size % n:
    lower, higher = n * (size // n), n * (size // n + 1)
    suggestion = f'{lower} or {higher}' if lower else str(higher)
    raise ValueError(
      f'{what} {size} does not divide across {n} devices; use a multiple of {n} '
      f'(e.g. {suggestion}) or fewer devices'
    )


def local_rows(
  total: int, process_index: int | None = None, process_count: int | None = None
) -> slice:
  """A process's contiguous share of `total` rows, `total` divisible by the process count.

  The process and the count default to this one's, jax.process_index() and
  jax.process_count(); tests of multi-host data loading pass others.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f'process index {index} is outside [0, {count}), the process count')
  share, rest = divmod(total, count)
  if rest:
    raise ValueError(f'{total} rows do not split evenly across {count} processes')
  return slice(index * share, (index + 1) * share)


def put_sharded(local: np.ndarray, mesh: Mesh) -> jax.Array:
  """One global array split along 'data' from this process's rows of it."""
  return jax.make_array_from_process_local_data(data_sharded(mesh), np.asarray(local))


def put_replicated(tree, mesh: Mesh):
  """Every leaf copied to every device; every process passes the same values."""
  sharding = replicated(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
  )


def abstract_replicated(tree, mesh: Mesh):
  """ShapeDtypeStructs of `tree`'s leaves, replicated on `mesh` (restore targets)."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def per_device(fn: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
  """`fn` run on each device's own block of its inputs (shard_map over 'data').

  Inside `fn`, `device_index()` says which block it holds. For work that must
  stay on the device that has the data, e.g. gathering a batch from a
  sharded dataset without moving the dataset.
  """
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def device_index() -> jax.Array:
  """The position along 'data' of the device running a `per_device` function."""
  return jax.lax.axis_index(DATA)


def describe(mesh: Mesh) -> str:
  kinds = sorted({d.device_kind for d in mesh.devices.flat})
  return (
    f'{mesh.devices.size} devices ({", ".join(kinds)}) in {jax.process_count()} '
    f'process(es); this is process {jax.process_index()}'
  )
