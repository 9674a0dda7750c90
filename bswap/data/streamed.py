"""The 'imagenet' pipeline: datasets streamed from the host, decoded batch by batch.

ImageNet's 1.28M JPEGs of assorted sizes cannot be held in memory as the
'cifar' pipeline holds its arrays (resident.py), so a split is only listed
(listing.py) and each batch is decoded when it is needed.

`train_batches` walks an epoch with ImageNet's training preprocessing
(imagenet_ops: random-resized crop and flip), dropping the last partial
batch; `eval_batches` covers every example once (resize and centre crop),
padding the last batch with masked-out rows; `fisher_batch` draws the one
augmented batch a search scores on. Batches are uint8 numpy arrays: they are
normalised on the devices.

Determinism: the order of epoch e is a permutation seeded by (seed, e), and
example i's crop and flip come from a generator seeded by (seed, e, i), so a
batch is a function of (seed, epoch, step) alone, whatever the number of
threads or their scheduling: a resumed run sees the batches it would have.

Loading: grain (the JAX ecosystem's input library) runs it. The examples a
process decodes, in order, are a grain MapDataset (random access: a resumed
epoch starts at any step without touching the steps before it); grain decodes
and crops them on `workers` threads (PIL releases the GIL while it decodes and
resizes), up to `prefetch` batches ahead of the consumer, and batches them.
Its iterator's state (`Stream.get_state`) is how far the stream has been
consumed; training stores it in the orbax checkpoint (bswap/train/checkpoint.py)
and checks it on resume. With several processes (multi-host), each decodes
only its rows of every global batch (`parallel.local_rows`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable
from collections.abc import Iterator

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bswap import parallel
from bswap.data import augment
from bswap.data import imagenet_ops as preprocess
from bswap.data import listing
from bswap.data import sources

# Tags of the numpy random streams (resident.py uses 1 and 3, listing.py 7).
_EPOCH_STREAM, _CROP_STREAM, _FISHER_STREAM = 4, 5, 6
Split = listing.Split
SUMMARY = 'streamed from the host'  # for messages that list the pipelines


def default_config() -> ml_collections.ConfigDict:
  """config.data of the 'imagenet' pipeline: ImageNet and its standard preprocessing."""
  data = ml_collections.ConfigDict()
  # 'tfds:imagenet2012' prepared by hand (README, "ImageNet"); a directory of
  # train/<class>/* and val/<class>/* images; or 'synthetic'.
  data.source = 'tfds:imagenet2012'
  data.image_size = 224
  data.synthetic_size = 1024  # examples per split when source = 'synthetic'
  data.mean = augment.IMAGENET.mean
  data.std = augment.IMAGENET.std
  # Training: torchvision's RandomResizedCrop (area fraction and aspect ratio
  # ranges) to image_size, and a horizontal flip.
  data.crop_area = preprocess.AREA
  data.crop_aspect = preprocess.ASPECT
  # Evaluation: shorter side resized to round(image_size * ratio), centre crop.
  data.eval_resize_ratio = preprocess.EVAL_RESIZE_RATIO
  data.workers = 0  # decoding threads per process; 0: one per CPU core
  data.prefetch = 4  # batches decoded ahead of the training step
  return data


@dataclasses.dataclass(frozen=True)
class Options:
  """The preprocessing and the loader's threads (config.data of an 'imagenet' config)."""

  image_size: int = 224
  area: tuple[float, float] = preprocess.AREA
  aspect: tuple[float, float] = preprocess.ASPECT
  resize_ratio: float = preprocess.EVAL_RESIZE_RATIO
  workers: int = 0  # decoding threads; 0: one per CPU core this process may use
  prefetch: int = 4  # batches decoded ahead of the one being consumed

  def __post_init__(self):
    area, aspect = tuple(self.area), tuple(self.aspect)
    object.__setattr__(self, 'area', area)
    object.__setattr__(self, 'aspect', aspect)
    if self.image_size < 1:
      raise ValueError(f'config.data.image_size must be positive; got {self.image_size}')
    if len(area) != 2 or not 0 < area[0] <= area[1] <= 1:
      raise ValueError(
        f'config.data.crop_area must be (low, high) in (0, 1], low <= high; got {area}'
      )
    if len(aspect) != 2 or not 0 < aspect[0] <= aspect[1]:
      raise ValueError(
        f'config.data.crop_aspect must be (low, high), 0 < low <= high; got {aspect}'
      )
    if self.resize_ratio < 1:
      raise ValueError(
        f'config.data.eval_resize_ratio must be at least 1 (the crop lies inside the resized '
        f'image); got {self.resize_ratio}. The usual value is 256 / 224'
      )
    if self.workers < 0 or self.prefetch < 0:
      raise ValueError(
        f'config.data.workers ({self.workers}) and prefetch ({self.prefetch}) must be >= 0'
      )

  @classmethod
  def from_config(cls, data) -> Options:
    return cls(
      image_size=data.image_size,
      area=data.crop_area,
      aspect=data.crop_aspect,
      resize_ratio=data.eval_resize_ratio,
      workers=data.workers,
      prefetch=data.prefetch,
    )

  @property
  def threads(self) -> int:
    if self.workers:
      return self.workers
    if hasattr(os, 'sched_getaffinity'):  # Linux: the cores this process may run on
      return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ----------------------------------------------------------------------------
# Batches.


def steps_per_epoch(split: Split, batch_size: int) -> int:
  """Whole global batches in an epoch: the last partial one is dropped."""
  if not 0 < batch_size <= len(split):
    raise sources.BatchSizeError(
      f'batch size {batch_size} must be in [1, {len(split)}], the examples of {split.name}; '
      'lower the batch size or use more data'
    )
  return len(split) // batch_size


def eval_steps(split: Split, batch_size: int) -> int:
  """Batches that cover every example once, the last one padded."""
  if batch_size < 1:
    raise ValueError(f'eval batch size must be positive; got {batch_size}')
  return -(-len(split) // batch_size)


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
  """The permutation of the examples that epoch `epoch` walks."""
  return np.random.default_rng((_EPOCH_STREAM, seed, epoch)).permutation(size)


def train_batches(
  split: Split,
  options: Options,
  batch_size: int,
  seed: int,
  epoch: int,
  *,
  start: int = 0,
  stop: int | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Steps [start, stop) of epoch `epoch`: {'image', 'label'}, this process's rows.

  Step s is examples order[s B : (s + 1) B] of `epoch_order` (B the global
  `batch_size`), each cropped and flipped by a generator seeded with (seed,
  epoch, example index); this process decodes only its rows of it,
  `parallel.local_rows(B)`. Images are uint8 (rows, size, size, 3), labels int32.
  """
  steps = steps_per_epoch(split, batch_size)
  stop = steps if stop is None else stop
  if not 0 <= start <= stop <= steps:
    raise ValueError(f'steps [{start}, {stop}) are outside the epoch of {steps} steps')
  order = epoch_order(len(split), seed, epoch)
  rows = parallel.local_rows(batch_size, process_index, process_count)
  batches = order[: steps * batch_size].reshape(steps, batch_size)[start:stop, rows]
  example = functools.partial(_train_example, split, options, (_CROP_STREAM, seed, epoch))
  return Stream(example, batches, options, mask=False)


def eval_batches(
  split: Split,
  options: Options,
  batch_size: int,
  *,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Every example once, in order: {'image', 'label', 'mask'}, this process's rows.

  Batch j holds examples [j B, (j + 1) B); rows past the last example are
  zeros with mask False.
  """
  size, steps = len(split), eval_steps(split, batch_size)
  rows = parallel.local_rows(batch_size, process_index, process_count)
  indices = np.arange(steps * batch_size).reshape(steps, batch_size)[:, rows]
  batches = np.where(indices < size, indices, -1)
  example = functools.partial(_eval_example, split, options)
  return Stream(example, batches, options, mask=True)


def fisher_batch(
  split: Split,
  options: Options,
  batch_size: int,
  seed: int,
  index: int | None = None,
  stats: augment.Stats = augment.IMAGENET,
) -> tuple[jax.Array, jax.Array]:
  """One training-preprocessed batch to score candidates on: (images, labels) on the device.

  As input_pipeline.fisher_batch: `batch_size` examples drawn without
  replacement by a generator seeded with (stream tag, seed, 0, 0) for the
  search's shared batch (index None), or (stream tag, seed, 1, index) for
  candidate `index`'s own; example i is then cropped and flipped by a
  generator seeded with that tuple and i. Only those examples are decoded.

  Returns:
    images (batch_size, size, size, 3) float32, normalised with `stats`, and
    labels (batch_size,) int32.
  """
  steps_per_epoch(split, batch_size)  # checks the batch size
  entropy = (_FISHER_STREAM, seed, 0, 0) if index is None else (_FISHER_STREAM, seed, 1, index)
  chosen = np.random.default_rng(entropy).choice(len(split), batch_size, replace=False)
  example = functools.partial(_train_example, split, options, entropy)
  with contextlib.closing(Stream(example, chosen[None], options, mask=False)) as stream:
    batch = next(stream)
  return augment.normalize(batch['image'], stats), jnp.asarray(batch['label'])


def _train_example(split: Split, options: Options, key: tuple, index: int):
  image, label = split.load(index)
  rng = np.random.default_rng((*key, index))
  o = options
  return preprocess.train_image(image, rng, o.image_size, o.area, o.aspect), label


def _eval_example(split: Split, options: Options, index: int):
  image, label = split.load(index)
  return preprocess.eval_image(image, options.image_size, options.resize_ratio), label


class Stream:
  """Batches of `example(i)` for each row of `batches` (-1: padding), in order, by grain.

  An iterator of {'image', 'label'[, 'mask']}; `get_state()` / `set_state()`
  are grain's iterator state (how many examples have been consumed), and
  `close()` stops the decoding threads.
  """

  def __init__(self, example: Callable, batches: np.ndarray, options: Options, mask: bool):
    self.rows = batches.shape[1]
    fill = functools.partial(_fill, example, options.image_size)
    examples = grain.MapDataset.source(batches.reshape(-1)).map(fill)
    # prefetch batches ahead of the one consumed: (prefetch + 1) batches in flight.
    read = grain.ReadOptions(
      num_threads=options.threads, prefetch_buffer_size=(options.prefetch + 1) * self.rows
    )
    collate = functools.partial(_collate, mask=mask)
    dataset = examples.to_iter_dataset(read).batch(self.rows, batch_fn=collate)
    self._iterator = iter(dataset)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iterator)

  def get_state(self) -> dict:
    return self._iterator.get_state()

  def set_state(self, state: dict) -> None:
    self._iterator.set_state(state)

  def close(self) -> None:
    close = getattr(self._iterator, 'close', None)
    if close is not None:
      close()


def _fill(example: Callable, size: int, index) -> tuple[np.ndarray, int, bool]:
  """(image, label, real) of example `index`; zeros for padding (-1)."""
  if index < 0:
    return np.zeros((size, size, 3), np.uint8), 0, False
  image, label = example(int(index))
  return image, label, True


def _collate(examples, mask: bool) -> dict[str, np.ndarray]:
  images, labels, real = zip(*examples, strict=True)
  batch = {'image': np.stack(images), 'label': np.asarray(labels, np.int32)}
  return {**batch, 'mask': np.asarray(real)} if mask else batch


# ----------------------------------------------------------------------------
# Feeds: one streamed batch per call, put on the mesh split along 'data'.


def batch_spec(mesh, batch_size: int, image_size: int, mask: bool = False) -> dict:
  """The shapes and shardings of a streamed batch, to compile for before the first arrives."""
  sharding = parallel.data_sharded(mesh)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  batch = {
    'image': spec((batch_size, image_size, image_size, 3), jnp.uint8),
    'label': spec((batch_size,), jnp.int32),
  }
  return {**batch, 'mask': spec((batch_size,), jnp.bool_)} if mask else batch


def put_batch(batch: dict, mesh) -> dict:
  """This process's rows of a global batch, put on the mesh split along 'data'."""
  return {key: parallel.put_sharded(value, mesh) for key, value in batch.items()}


def _the_batch(inputs, index):
  """A streamed call's inputs are its one batch, whatever the step."""
  del index
  return inputs


class Calls:
  """The calls of one epoch: (1, batch on the mesh) per step; `state()` is where the stream is."""

  def __init__(self, stream: Stream, mesh, epoch: int, step: int, stream_start: int):
    self.stream, self.mesh, self.epoch = stream, mesh, epoch
    self.step = step  # the next step of the epoch the stream yields
    self.stream_start = stream_start  # the step the stream (and its iterator state) began at

  def __iter__(self):
    for batch in self.stream:
      self.step += 1
      yield 1, put_batch(batch, self.mesh)

  def state(self) -> dict:
    """JSON for the checkpoint: the epoch, its next step, and the grain iterator's state."""
    return {
      'epoch': self.epoch,
      'step': self.step,
      'stream_start': self.stream_start,
      'iterator': self.stream.get_state(),
    }


def check_resume(saved: dict, epoch: int, step: int) -> None:
  """A ValueError unless `saved` (a Calls.state()) is the stream at `step` of `epoch`."""
  if (saved.get('epoch'), saved.get('step')) != (epoch, step):
    raise ValueError(
      f"the checkpoint's data stream is at epoch {saved.get('epoch')} step {saved.get('step')}, "
      f'but its training step means epoch {epoch} step {step}: the batch size, the number of '
      'processes or the data changed since it was saved; resume with the same settings, or '
      'start a new --workdir'
    )


@dataclasses.dataclass(frozen=True, eq=False)
class TrainFeed:
  """Step s of epoch e is batch s of train_batches(seed, e): a resumed run continues the stream."""

  mesh: jax.sharding.Mesh
  split: Split
  options: Options
  batch_size: int
  seed: int
  max_steps_per_call = 1  # each call takes one batch from the host
  take = staticmethod(_the_batch)

  @property
  def steps_per_epoch(self) -> int:
    devices = self.mesh.devices.size
    return (len(self.split) // devices) // (self.batch_size // devices)

  def epoch(
    self, order_key, epoch: int, start: int, stop: int, steps_per_call: int, resume=None
  ) -> Calls:
    """Steps [start, stop) of `epoch`; `resume`, a `Calls.state()` saved at step `start`
    of this epoch, restores its grain iterator instead (the checkpointed stream continued)."""
    del order_key, steps_per_call  # the order is the host's, from the seed; one step per call
    first = start
    if resume is not None and resume.get('step') == self.steps_per_epoch:
      # Saved at the end of its epoch: this epoch's stream starts afresh.
      check_resume({'epoch': resume.get('epoch', -2) + 1, 'step': 0}, epoch, start)
      resume = None
    if resume is not None:
      check_resume(resume, epoch, start)
      first = resume['stream_start']
    batches = train_batches(
      self.split, self.options, self.batch_size, self.seed, epoch, start=first, stop=stop
    )
    if resume is not None:
      batches.set_state(resume['iterator'])
    return Calls(batches, self.mesh, epoch, start, first)

  def inputs_spec(self):
    return batch_spec(self.mesh, self.batch_size, self.options.image_size)


@dataclasses.dataclass(frozen=True, eq=False)
class EvalFeed:
  """Every evaluation example once, one streamed batch per call, padding masked out."""

  mesh: jax.sharding.Mesh
  split: Split
  options: Options
  batch_size: int
  batches_per_call = 1
  take = staticmethod(_the_batch)

  @property
  def num_calls(self) -> int:
    return eval_steps(self.split, self.batch_size)

  def calls(self):
    batches = eval_batches(self.split, self.options, self.batch_size)
    return (put_batch(b, self.mesh) for b in batches)

  def inputs_spec(self):
    return batch_spec(self.mesh, self.batch_size, self.options.image_size, mask=True)


# ----------------------------------------------------------------------------
# The pipeline's Data.


class Data:
  """Listed splits, decoded and preprocessed on the host batch by batch (ImageNet-sized data)."""

  pipeline = 'imagenet'
  max_steps_per_call = 1

  def __init__(self, config):
    data = config.data
    self.source = data.source
    self.options = Options.from_config(data)  # checked now, before anything is listed
    self.stats = augment.Stats(data.mean, data.std)
    self._open = functools.partial(
      listing.open_split,
      data.source,
      num_classes=config.model.num_classes,
      synthetic_size=data.synthetic_size,
      image_size=data.image_size,
      seed=config.seed,
    )
    self._splits = {}

  def split(self, name: str) -> Split:
    """'train' or 'eval', listed when first asked for."""
    if name not in self._splits:
      self._splits[name] = self._open(name)
    return self._splits[name]

  @property
  def num_classes(self) -> int:
    return len(self.split('train').class_names)

  def fisher_batch(self, batch_size: int, seed: int, index: int | None = None):
    return fisher_batch(self.split('train'), self.options, batch_size, seed, index, self.stats)

  def train_transform(self, key, images):
    del key  # the host has cropped and flipped
    return augment.normalize(images, self.stats)

  def eval_transform(self, images):
    return augment.normalize(images, self.stats)

  def train_feed(self, mesh, batch_size: int, seed: int) -> TrainFeed:
    return TrainFeed(mesh, self.split('train'), self.options, batch_size, seed)

  def eval_feed(self, mesh, batch_size: int) -> EvalFeed:
    return EvalFeed(mesh, self.split('eval'), self.options, batch_size)
