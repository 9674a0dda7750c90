"""Datasets streamed from the host: images decoded, cropped and flipped batch by batch.

The 'imagenet' pipeline (config.data.pipeline). ImageNet's 1.28M JPEGs of
assorted sizes cannot be held in memory as the 'cifar' pipeline holds its
arrays (input_pipeline, device_data), so a split is only listed here, and
each batch is decoded when it is needed. `open_split(source, split)` lists
one split, 'train' or 'eval', of

  'tfds:NAME'  a tensorflow-datasets dataset prepared as ArrayRecord, e.g.
               'tfds:imagenet2012' (splits 'train' and 'validation'), read
               without TensorFlow by `tfds.data_source`, which skips its own
               image decoding: the JPEG bytes are decoded here;
  a directory  train/<class>/<image> and val/<class>/<image> (or validation/,
               or test/), images of any size and mode, listed by path;
  'synthetic'  seeded random images of assorted sizes, made on demand.

`train_batches` walks an epoch with ImageNet's training preprocessing
(imagenet_preprocess: random-resized crop and flip), dropping the last partial
batch; `eval_batches` covers every example once (resize and centre crop),
padding the last batch with masked-out rows; `fisher_batch` draws the one
augmented batch a search scores on. Batches are uint8 numpy arrays: they are
normalised on the devices.

Determinism: the order of epoch e is a permutation seeded by (seed, e), and
example i's crop and flip come from a generator seeded by (seed, e, i), so a
batch is a function of (seed, epoch, step) alone, whatever the number of
threads or their scheduling: a resumed run sees the batches it would have.

Speed: examples are decoded and cropped on `workers` threads (PIL releases the
GIL while it decodes and resizes), `prefetch` batches ahead of the consumer.
With several processes (multi-host), each decodes only its rows of every
global batch (`parallel.local_rows`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from bswap import parallel
from bswap.data import arrays as input_pipeline
from bswap.data import imagenet_ops as preprocess

SPLITS = ('train', 'eval')
EVAL_FOLDERS = ('val', 'validation', 'test')  # a directory's eval split, the first present
TFDS_EVAL_SPLITS = ('validation', 'test')  # a tfds dataset's eval split, the first prepared
# Tags of the numpy random streams (input_pipeline uses 1 and 2, device_data 3).
_EPOCH_STREAM, _CROP_STREAM, _FISHER_STREAM, _SYNTHETIC_STREAM = 4, 5, 6, 7
_LAYOUT = 'train/<class>/<image> and val/<class>/<image>'
_SOURCES_HELP = (
  "the 'imagenet' pipeline reads 'tfds:NAME' (e.g. tfds:imagenet2012, prepared as the README "
  f"says), a directory of {_LAYOUT}, or 'synthetic'"
)


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
# Splits: listed up front, decoded one example at a time.


@dataclasses.dataclass(frozen=True, eq=False)
class FolderSplit:
  """A split of a class-folder directory: file paths (relative to root) and labels."""

  root: str
  files: list[str]
  labels: np.ndarray  # (N,) int32
  class_names: tuple[str, ...]

  @property
  def name(self) -> str:
    return self.root

  def __len__(self) -> int:
    return len(self.files)

  def load(self, index: int) -> tuple[Image.Image, int]:
    """Example `index`: its RGB image and its label."""
    name = self.files[index]
    path = os.path.join(self.root, *name.split('/'))
    return input_pipeline.open_rgb(path, name, self.root), int(self.labels[index])


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsSplit:
  """A split of a prepared tensorflow-datasets dataset: a random-access source of records."""

  name: str  # 'tfds:NAME[split]', for messages
  source: object  # tfds.data_source(...): __len__ and __getitem__
  class_names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.source)

  def load(self, index: int) -> tuple[Image.Image, int]:
    record = self.source[index]
    if 'image' not in record or 'label' not in record:
      raise ValueError(f"{self.name} records have {sorted(record)}, not 'image' and 'label'")
    return _record_image(record['image'], index, self.name), int(record['label'])


@dataclasses.dataclass(frozen=True)
class SyntheticSplit:
  """`size` seeded random images, each of its own size around `image_size`; for smoke runs."""

  size: int
  num_classes: int
  image_size: int
  seed: tuple[int, ...]

  @property
  def name(self) -> str:
    return 'synthetic'

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(f'class_{i}' for i in range(self.num_classes))

  def __len__(self) -> int:
    return self.size

  def load(self, index: int) -> tuple[Image.Image, int]:
    rng = np.random.default_rng((_SYNTHETIC_STREAM, *self.seed, index))
    low, high = max(1, self.image_size * 3 // 4), self.image_size * 3 // 2 + 1
    height, width = rng.integers(low, high, 2)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels), int(rng.integers(self.num_classes))


Split = FolderSplit | TfdsSplit | SyntheticSplit


def open_split(
  source: str,
  split: str,
  *,
  num_classes: int = 1000,
  synthetic_size: int = 1024,
  image_size: int = 224,
  seed: int = 0,
) -> Split:
  """One split ('train' or 'eval') of `source` (see the module doc), listed, not decoded.

  num_classes, synthetic_size, image_size and seed shape 'synthetic' data
  only; other sources have their own classes (read `class_names`).

  Raises:
    ValueError: with what to do, whenever the data cannot be had.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}; got {split!r}')
  if source == 'synthetic':
    return SyntheticSplit(synthetic_size, num_classes, image_size, (seed, SPLITS.index(split)))
  if source.startswith('tfds:'):
    return _tfds_split(source.removeprefix('tfds:'), split)
  return _folder_split(source, split)


def _folder_split(source: str, split: str) -> FolderSplit:
  root = os.path.abspath(os.path.expanduser(source))
  if not os.path.isdir(root):
    what = 'is not a directory' if os.path.exists(root) else 'does not exist'
    raise ValueError(f'data source {source!r} ({root}) {what}; {_SOURCES_HELP}')
  class_names = tuple(_subfolders(root, 'train'))
  if not class_names:
    raise ValueError(f'{root}/train/ holds no class folders; expected {_LAYOUT}')
  folder = 'train' if split == 'train' else _eval_folder(root)
  classes = _subfolders(root, folder)
  unknown = sorted(set(classes) - set(class_names))
  if unknown:
    raise ValueError(
      f'{root}: {folder}/ has class folders that train/ lacks: {unknown[:5]}; '
      'give both the same class folders'
    )
  label = {name: i for i, name in enumerate(class_names)}
  files, labels, empty = [], [], []
  for name in classes:
    found = _images_under(root, f'{folder}/{name}')
    files += found
    labels += [label[name]] * len(found)
    empty += [] if found else [f'{folder}/{name}/']
  if empty:
    empty = ', '.join(empty[:5])
    raise ValueError(f'{root}: empty class folder(s) {empty}; add images or remove them')
  return FolderSplit(root, files, np.array(labels, np.int32), class_names)


def _eval_folder(root: str) -> str:
  present = [f for f in EVAL_FOLDERS if os.path.isdir(os.path.join(root, f))]
  if not present:
    raise ValueError(f'{root} has no val/ (or validation/, test/) folder; expected {_LAYOUT}')
  if len(present) > 1:
    raise ValueError(f'{root} holds {" and ".join(present)}/: keep one evaluation folder')
  return present[0]


def _subfolders(root: str, folder: str) -> list[str]:
  """The sorted visible folders in root/folder; a clear error if it is missing."""
  path = os.path.join(root, folder)
  if not os.path.isdir(path):
    raise ValueError(f'{root} has no {folder}/ folder; expected class folders {_LAYOUT}')
  with os.scandir(path) as entries:
    return sorted(e.name for e in entries if e.is_dir() and input_pipeline.visible(e.name))


def _images_under(root: str, folder: str) -> list[str]:
  """Sorted 'folder/.../file' names of the visible files at any depth under root/folder."""
  names = []
  for parent, dirs, files in os.walk(os.path.join(root, folder)):
    rel = os.path.relpath(parent, root).replace(os.sep, '/')
    dirs[:] = [d for d in dirs if input_pipeline.visible(d)]
    names += [f'{rel}/{f}' for f in files if input_pipeline.visible(f)]
  return sorted(names)


def _tfds_split(name: str, split: str) -> TfdsSplit:
  tfds = input_pipeline.import_tfds(name, _SOURCES_HELP)
  errors = []
  for tfds_split in ('train',) if split == 'train' else TFDS_EVAL_SPLITS:
    try:
      # The image bytes as stored: decoding them here with PIL, on the loader's
      # threads, is faster than tfds's decoding and needs no TensorFlow.
      decoders = {'image': tfds.decode.SkipDecoding()}
      source = tfds.data_source(name, split=tfds_split, download=False, decoders=decoders)
    except Exception as e:  # tfds raises assorted types (AssertionError, DatasetNotFoundError...)
      errors.append(f'{tfds_split!r}: {e}')
      continue
    full = f'tfds:{name}[{tfds_split}]'
    return TfdsSplit(full, source, _tfds_class_names(source, full))
  raise ValueError(
    f'tensorflow-datasets has no prepared {name!r} {split} split ({"; ".join(errors)}); '
    f'prepare it with `tfds build {name} --file_format=array_record` (ImageNet: see the '
    f'README), or {_SOURCES_HELP}'
  )


def _tfds_class_names(source, name: str) -> tuple[str, ...]:
  try:
    label = source.dataset_info.features['label']
  except (AttributeError, KeyError, TypeError) as e:
    raise ValueError(f"{name} has no 'label' feature with class names ({e})") from e
  names = getattr(label, 'names', None) or [str(i) for i in range(label.num_classes)]
  return tuple(names)


def _record_image(image, index: int, name: str) -> Image.Image:
  """A record's image: encoded bytes (tfds's SkipDecoding) or decoded pixels, as RGB."""
  if isinstance(image, np.ndarray) and image.dtype == object:
    image = image.item()
  if isinstance(image, bytes | np.bytes_):
    return input_pipeline.open_rgb(bytes(image), f'record {index}', name)
  pixels = np.asarray(image, np.uint8)
  pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels
  return Image.fromarray(pixels).convert('RGB')


# ----------------------------------------------------------------------------
# Batches.


def steps_per_epoch(split: Split, batch_size: int) -> int:
  """Whole global batches in an epoch: the last partial one is dropped."""
  if not 0 < batch_size <= len(split):
    raise ValueError(
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
  batches = (order[s * batch_size : (s + 1) * batch_size][rows] for s in range(start, stop))
  example = functools.partial(_train_example, split, options, (_CROP_STREAM, seed, epoch))
  return _stream(example, batches, options, mask=False)


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
  indices = (np.arange(j * batch_size, (j + 1) * batch_size)[rows] for j in range(steps))
  batches = (np.where(i < size, i, -1) for i in indices)
  example = functools.partial(_eval_example, split, options)
  return _stream(example, batches, options, mask=True)


def fisher_batch(
  split: Split, options: Options, batch_size: int, seed: int, index: int | None = None
) -> tuple[jax.Array, jax.Array]:
  """One training-preprocessed batch to score candidates on: (images, labels) on the device.

  As input_pipeline.fisher_batch: `batch_size` examples drawn without
  replacement by a generator seeded with (stream tag, seed, 0, 0) for the
  search's shared batch (index None), or (stream tag, seed, 1, index) for
  candidate `index`'s own; example i is then cropped and flipped by a
  generator seeded with that tuple and i. Only those examples are decoded.

  Returns:
    images (batch_size, size, size, 3) float32, normalised with ImageNet's
    mean and std, and labels (batch_size,) int32.
  """
  steps_per_epoch(split, batch_size)  # checks the batch size
  entropy = (_FISHER_STREAM, seed, 0, 0) if index is None else (_FISHER_STREAM, seed, 1, index)
  chosen = np.random.default_rng(entropy).choice(len(split), batch_size, replace=False)
  example = functools.partial(_train_example, split, options, entropy)
  with contextlib.closing(_stream(example, [chosen], options, mask=False)) as stream:
    batch = next(stream)
  return preprocess.normalize(batch['image']), jnp.asarray(batch['label'])


def _train_example(split: Split, options: Options, key: tuple, index: int):
  image, label = split.load(index)
  rng = np.random.default_rng((*key, index))
  o = options
  return preprocess.train_image(image, rng, o.image_size, o.area, o.aspect), label


def _eval_example(split: Split, options: Options, index: int):
  image, label = split.load(index)
  return preprocess.eval_image(image, options.image_size, options.resize_ratio), label


def _stream(
  example: Callable, batches: Iterable[np.ndarray], options: Options, mask: bool
) -> Iterator[dict[str, np.ndarray]]:
  """`example(i)` for every index i (-1: padding) of every batch, on threads, in order.

  Up to `options.prefetch` batches are submitted ahead of the one yielded;
  closing the iterator cancels the work not yet started.
  """
  pool = concurrent.futures.ThreadPoolExecutor(options.threads, thread_name_prefix='host_data')
  pending = collections.deque()
  try:
    for indices in batches:
      pending.append(_submit(pool, example, indices, options.image_size))
      if len(pending) > options.prefetch:
        yield _collect(*pending.popleft(), mask)
    while pending:
      yield _collect(*pending.popleft(), mask)
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool, example: Callable, indices: np.ndarray, size: int):
  """Starts filling one batch's arrays, one task per example; returns them and the tasks."""
  images = np.zeros((len(indices), size, size, 3), np.uint8)
  labels = np.zeros(len(indices), np.int32)

  def fill(row: int, index: int):
    images[row], labels[row] = example(index)

  tasks = [pool.submit(fill, row, int(i)) for row, i in enumerate(indices) if i >= 0]
  return images, labels, np.asarray(indices) >= 0, tasks


def _collect(images, labels, real, tasks, mask: bool) -> dict[str, np.ndarray]:
  for task in tasks:
    task.result()  # raises what the example raised
  batch = {'image': images, 'label': labels}
  return {**batch, 'mask': real} if mask else batch
