"""Splits listed, not decoded: the sources of the 'imagenet' (streamed) pipeline.

`open_split(source, split)` lists one split, 'train' or 'eval', of

  'tfds:NAME'  a tensorflow-datasets dataset prepared as ArrayRecord, e.g.
               'tfds:imagenet2012' (splits 'train' and 'validation'), read
               without TensorFlow by `tfds.data_source`, which skips its own
               image decoding: the JPEG bytes are decoded by the loader;
  a directory  train/<class>/<image> and val/<class>/<image> (or validation/,
               or test/), images of any size and mode, listed by path;
  'synthetic'  seeded random images of assorted sizes, made on demand.

A split is a sequence: `len(split)` examples, `split.load(i)` -> (RGB PIL
image, label), and `class_names`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from bswap.data import sources

SPLITS = ('train', 'eval')
EVAL_FOLDERS = ('val', 'validation', 'test')  # a directory's eval split, the first present
TFDS_EVAL_SPLITS = ('validation', 'test')  # a tfds dataset's eval split, the first prepared
_SYNTHETIC_STREAM = 7  # numpy stream tag (resident.py uses 1 and 3, streamed.py 4 to 6)
LAYOUT = 'train/<class>/<image> and val/<class>/<image>'
SOURCES_HELP = (
  "the 'imagenet' pipeline reads 'tfds:NAME' (e.g. tfds:imagenet2012, prepared as the README "
  f"says), a directory of {LAYOUT}, or 'synthetic'"
)


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
    return sources.open_rgb(path, name, self.root), int(self.labels[index])


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
    raise ValueError(f'data source {source!r} ({root}) {what}; {SOURCES_HELP}')
  class_names = tuple(_subfolders(root, 'train'))
  if not class_names:
    raise ValueError(f'{root}/train/ holds no class folders; expected {LAYOUT}')
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
    raise ValueError(f'{root} has no val/ (or validation/, test/) folder; expected {LAYOUT}')
  if len(present) > 1:
    raise ValueError(f'{root} holds {" and ".join(present)}/: keep one evaluation folder')
  return present[0]


def _subfolders(root: str, folder: str) -> list[str]:
  """The sorted visible folders in root/folder; a clear error if it is missing."""
  path = os.path.join(root, folder)
  if not os.path.isdir(path):
    raise ValueError(f'{root} has no {folder}/ folder; expected class folders {LAYOUT}')
  with os.scandir(path) as entries:
    return sorted(e.name for e in entries if e.is_dir() and sources.visible(e.name))


def _images_under(root: str, folder: str) -> list[str]:
  """Sorted 'folder/.../file' names of the visible files at any depth under root/folder."""
  names = []
  for parent, dirs, files in os.walk(os.path.join(root, folder), onerror=sources.unreadable_folder):
    rel = os.path.relpath(parent, root).replace(os.sep, '/')
    dirs[:] = [d for d in dirs if sources.visible(d)]
    names += [f'{rel}/{f}' for f in files if sources.visible(f)]
  return sorted(names)


def _tfds_split(name: str, split: str) -> TfdsSplit:
  tfds = sources.import_tfds(name, SOURCES_HELP)
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
    f'README), or {SOURCES_HELP}'
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
    return sources.open_rgb(bytes(image), f'record {index}', name)
  pixels = np.asarray(image, np.uint8)
  pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels
  return Image.fromarray(pixels).convert('RGB')
