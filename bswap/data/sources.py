"""Data sources decoded into memory: one split as uint8 arrays.

`load(source, split)` returns one split as an in-memory `ArrayDataset` of
uint8 images and int32 labels. `source` is one of

  'synthetic'   seeded random images, for smoke runs, tests and benchmarks;
  'cifar10', 'cifar100'
                tensorflow-datasets' prepared copy if there is one, else the
                official python archive, downloaded once and checksummed;
  'tfds:NAME'   any prepared tensorflow-datasets image dataset;
  a path        a directory or .tar/.tar.gz/.tgz archive of class folders,
                train/<class>/<image> and test/<class>/<image>.

Decoding is done once: the arrays of both splits are cached as an .npz in
the cache directory (argument, else $BSWAP_CACHE_DIR, else ~/.cache/bswap),
keyed by the source's path, size and mtime, and written whole or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import json
import os
import pickle
import posixpath
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np
from absl import logging
from PIL import Image
from tqdm import tqdm

from bswap import files

SPLITS = ('train', 'test')

ARCHIVE_SUFFIXES = ('.tar.gz', '.tgz', '.tar')

_CACHE_VERSION = 1  # bump when the meaning of the cached arrays changes
_LAYOUT = 'train/<class>/<image> and test/<class>/<image>'
_SOURCES_HELP = (
  f'set --config.data.source to a directory or .tar.gz archive of {_LAYOUT}, '
  "'cifar10', 'cifar100', 'tfds:NAME' or 'synthetic'"
)


@dataclasses.dataclass(frozen=True)
class Cifar:
  """One official CIFAR python archive: where it is, and how its pickled batches are laid out."""

  name: str  # the source's name, and tensorflow-datasets' name of the dataset
  url: str
  md5: str
  file: str  # its name in the cache directory
  classes: tuple[str, ...]  # the class names, should the archive's meta file lack them
  train_batches: tuple[str, ...]  # member names of the pickled batches of each split
  test_batches: tuple[str, ...]
  meta: str  # the member holding the class names
  label_key: bytes  # the batches' key of the labels, and the meta file's of the names
  names_key: bytes


_CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
  bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
  couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house
  kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain
  mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate
  poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
  snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
  tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"""
CIFAR = {
  c.name: c
  for c in (
    Cifar(
      'cifar10',
      'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
      'c58f30108f718f92721af3b95e74349a',
      'cifar-10-python.tar.gz',
      tuple('airplane automobile bird cat deer dog frog horse ship truck'.split()),
      tuple(f'data_batch_{i}' for i in range(1, 6)),
      ('test_batch',),
      'batches.meta',
      b'labels',
      b'label_names',
    ),
    Cifar(  # the 100 fine labels; the 20 coarse ones are not used
      'cifar100',
      'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
      'eb9058c3a382ffc7106e4002c42a8d85',
      'cifar-100-python.tar.gz',
      tuple(_CIFAR100_CLASSES.split()),
      ('train',),
      ('test',),
      'meta',
      b'fine_labels',
      b'fine_label_names',
    ),
  )
}


class BatchSizeError(ValueError):
  """A batch size the data cannot fill; the caller names its --config flag."""


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: compare by identity
class ArrayDataset:
  """One split in memory: images (N, H, W, 3) uint8, labels (N,) int32."""

  images: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...]

  def __post_init__(self):
    images, labels = self.images, self.labels
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'images must be uint8 (N, H, W, 3); got {images.dtype} {images.shape}')
    if labels.dtype != np.int32 or labels.shape != (len(images),):
      raise ValueError(f'labels must be int32 ({len(images)},); got {labels.dtype} {labels.shape}')
    object.__setattr__(self, 'class_names', tuple(self.class_names))
    # An out-of-range label would reach the cross-entropy as a silent wrong target.
    bad = labels[(labels < 0) | (labels >= len(self.class_names))]
    if bad.size:
      raise ValueError(
        f'label {int(bad[0])} is outside 0..{len(self.class_names) - 1} (the data has '
        f'{len(self.class_names)} classes); the labels and class names of the source disagree'
      )

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def __len__(self) -> int:
    return len(self.labels)


def load(
  source: str,
  split: str,
  *,
  image_size: int | None = None,
  num_classes: int = 10,
  synthetic_size: int = 1024,
  seed: int = 0,
  cache_dir: str | None = None,
) -> ArrayDataset:
  """One split ('train' or 'test') of the data `source` names (see the module doc).

  Args:
    source: 'synthetic', 'cifar10', 'cifar100', 'tfds:NAME', or a class-folder directory or
      archive.
    split: 'train' or 'test'.
    image_size: resize (bilinear) to image_size x image_size where images differ
      from it; None keeps the stored size (32 for 'synthetic').
    num_classes: classes of 'synthetic' data; other sources have their own (read
      `num_classes` of the result).
    synthetic_size: examples of 'synthetic' data.
    seed: seed of 'synthetic' data; the split is folded in, so train and test differ.
    cache_dir: where decoded arrays and downloads go; None: $BSWAP_CACHE_DIR or
      ~/.cache/bswap.

  Raises:
    ValueError: with what to do, whenever the data cannot be had.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}; got {split!r}')
  if source == 'synthetic':
    return synthetic(synthetic_size, image_size or 32, num_classes, (seed, SPLITS.index(split)))
  cache_dir = os.path.expanduser(cache_dir or os.environ.get('BSWAP_CACHE_DIR') or '~/.cache/bswap')
  if source in CIFAR:
    return _cifar(CIFAR[source], split, image_size, cache_dir)
  if source.startswith('tfds:'):
    return _from_tfds(source.removeprefix('tfds:'), split, image_size, cache_dir)
  return _class_folders(source, split, image_size, cache_dir)


def synthetic(
  num: int, image_size: int, num_classes: int, seed: int | Sequence[int]
) -> ArrayDataset:
  """`num` uniformly random images and labels; `seed` is anything np.random.default_rng takes."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num, image_size, image_size, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, num, dtype=np.int32)
  return ArrayDataset(images, labels, tuple(f'class_{i}' for i in range(num_classes)))


# ----------------------------------------------------------------------------
# Class folders: a directory or a tar archive of train/<class>/<image>.


def _class_folders(source: str, split: str, image_size, cache_dir: str) -> ArrayDataset:
  path = os.path.abspath(os.path.expanduser(source))
  if not os.path.exists(path):
    raise ValueError(f'data source {source!r}: no such file or directory ({path}); {_SOURCES_HELP}')
  if not os.path.isdir(path) and not path.endswith(ARCHIVE_SUFFIXES):
    raise ValueError(f'{path} is neither a directory nor a .tar, .tar.gz or .tgz archive')
  build = lambda: _decode_class_folders(path, image_size)
  return _cached(path, image_size, cache_dir, split, build)


def _decode_class_folders(path: str, image_size: int | None):
  """Both splits' arrays, in sorted file order whatever the archive order.

  Returns:
    The arrays, and the size they were resized to: None where all images
    share one size and are kept as they are.
  """
  files, folders = _list_directory(path) if os.path.isdir(path) else _list_archive(path)
  files, folders = _strip_enclosing_folder(files, folders)
  class_names, items = _layout(path, files, folders)
  names = [name for split in SPLITS for name, _ in items[split]]
  logging.info('Decoding %d images from %s (once: then from the cache)', len(names), path)
  desc = f'decoding {os.path.basename(path)}'
  # disable=None: a bar on a terminal, nothing in log files.
  bar = tqdm(names, desc=desc, unit='img', file=sys.stderr, disable=None)
  images = [_decode_image(files[name], name, path) for name in bar]
  images, resized_to = _uniform(images, names, path, image_size)
  arrays = {'class_names': np.array(class_names)}
  start = 0
  for split in SPLITS:
    stop = start + len(items[split])
    arrays[f'{split}_images'] = np.stack(images[start:stop])
    arrays[f'{split}_labels'] = np.array([label for _, label in items[split]], np.int32)
    start = stop
  return arrays, resized_to


def visible(name: str) -> bool:
  """False for hidden files such as .DS_Store and the ._* files macOS puts in archives."""
  return not any(part.startswith('.') for part in name.split('/'))


def unreadable_folder(e: OSError):
  """os.walk's onerror: a folder it cannot list is an error, not an empty folder."""
  raise ValueError(
    f'cannot read the folder {e.filename} ({e.strerror}); check its permissions'
  ) from None


def _list_directory(path: str) -> tuple[dict[str, str], set[str]]:
  """Files (relative name -> file path) and folders under a directory."""
  files, folders = {}, set()
  for root, dirs, names in os.walk(path, onerror=unreadable_folder):
    rel = os.path.relpath(root, path)
    prefix = '' if rel == '.' else rel.replace(os.sep, '/') + '/'
    folders.update(prefix + d for d in dirs)
    files.update((prefix + n, os.path.join(root, n)) for n in names)
  return {k: v for k, v in files.items() if visible(k)}, set(filter(visible, folders))


def _list_archive(path: str) -> tuple[dict[str, bytes], set[str]]:
  """Files (name -> contents) and folders of a tar archive, read in one pass."""
  files, folders = {}, set()
  try:
    with tarfile.open(path) as tar:
      for member in tar:
        name = posixpath.normpath(member.name).lstrip('/')
        if member.isdir():
          folders.add(name)
        elif member.isfile():
          files[name] = tar.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError) as e:
    raise ValueError(f'cannot read the archive {path} ({e}); is it a whole .tar or .tar.gz?') from e
  return {k: v for k, v in files.items() if visible(k)}, set(filter(visible, folders))


def _strip_enclosing_folder(files: dict, folders: set[str]) -> tuple[dict, set[str]]:
  """Drops one folder enclosing train/ and test/, as in `tar czf x.tgz cifar10/`."""
  names = set(files) | folders
  tops = {name.split('/')[0] for name in names}
  if tops & set(SPLITS) or len(tops) != 1:
    return files, folders
  prefix = tops.pop() + '/'
  inner = {k.removeprefix(prefix): v for k, v in files.items() if k.startswith(prefix)}
  return inner, {f.removeprefix(prefix) for f in folders if f.startswith(prefix)}


def _layout(path: str, files: Mapping, folders: set[str]):
  """Sorted class names and, per split, the sorted (file name, label) pairs."""
  classes = {split: _split_classes(path, split, files, folders) for split in SPLITS}
  train, test = set(classes['train']), set(classes['test'])
  if train != test:
    raise ValueError(
      f'{path}: train/ and test/ hold different classes (only in train/: '
      f'{sorted(train - test)}; only in test/: {sorted(test - train)}); '
      'give both the same class folders'
    )
  class_names = tuple(sorted(train))
  label = {name: i for i, name in enumerate(class_names)}
  items = {
    split: sorted((f, label[c]) for c, names in classes[split].items() for f in names)
    for split in SPLITS
  }
  return class_names, items


def _split_classes(path: str, split: str, files: Mapping, folders: set[str]):
  """{class: [file names]} of one split; a clear error for a missing or empty folder."""
  if not any(n == split or n.startswith(split + '/') for n in (*files, *folders)):
    raise ValueError(f'{path} has no {split}/ folder; expected class folders {_LAYOUT}')
  by_class = {}
  for name in folders:
    parts = name.split('/')
    if len(parts) == 2 and parts[0] == split:
      by_class.setdefault(parts[1], [])
  for name in files:
    parts = name.split('/')
    if len(parts) >= 3 and parts[0] == split:  # files right in train/ are not examples
      by_class.setdefault(parts[1], []).append(name)
  if not by_class:
    raise ValueError(f'{path}: {split}/ holds no class folders; expected {_LAYOUT}')
  empty = sorted(f'{split}/{c}/' for c, names in by_class.items() if not names)
  if empty:
    raise ValueError(f'{path}: empty class folder(s) {", ".join(empty)}; add images or remove them')
  return by_class


def _decode_image(entry: str | bytes, name: str, path: str) -> np.ndarray:
  """RGB uint8 pixels of one image file (a path, or the bytes of an archive member)."""
  return np.asarray(open_rgb(entry, name, path), np.uint8)


def open_rgb(entry: str | bytes, name: str, where: str) -> Image.Image:
  """One image file (a path, or encoded bytes) decoded and converted to RGB.

  Any mode PIL reads (grayscale, palette, RGBA, CMYK...) becomes RGB; an
  unreadable file is a ValueError naming it (`name`, in `where`).
  """
  try:
    with Image.open(io.BytesIO(entry) if isinstance(entry, bytes) else entry) as image:
      return image.convert('RGB')
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f'{where}: cannot decode {name} ({e}); replace or delete that file') from e


def _rgb(image: Image.Image, image_size: int | None) -> np.ndarray:
  rgb = image.convert('RGB')
  if image_size is not None and rgb.size != (image_size, image_size):
    rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
  return np.asarray(rgb, np.uint8)


def _uniform(images: list[np.ndarray], names: Sequence[str], where: str, image_size: int | None):
  """(images, None) if they share one size, else (images resized to image_size, image_size)."""
  first_of_shape = {}
  for image, name in zip(images, names):
    first_of_shape.setdefault(image.shape, name)
  if len(first_of_shape) == 1:
    return images, None
  if image_size is None:
    examples = ', '.join(f'{n} is {s[1]}x{s[0]}' for s, n in list(first_of_shape.items())[:3])
    raise ValueError(
      f'{where}: images differ in size ({examples}); pass image_size '
      '(--config.data.image_size) to resize them all'
    )
  return [_rgb(Image.fromarray(image), image_size) for image in images], image_size


def _fit(ds: ArrayDataset, image_size: int | None) -> ArrayDataset:
  """`ds` with its images resized (bilinear) to image_size x image_size where they differ."""
  if image_size is None or ds.images.shape[1:3] == (image_size, image_size):
    return ds
  images = np.stack([_rgb(Image.fromarray(image), image_size) for image in ds.images])
  return ArrayDataset(images, ds.labels, ds.class_names)


# ----------------------------------------------------------------------------
# The decoded-array cache.


def _cached(path: str, image_size, cache_dir: str, split: str, build: Callable) -> ArrayDataset:
  """`split` of what `build()` decodes from `path`, fitted to image_size; decoded once.

  `build` returns (arrays, the size it resized them to or None). Images that
  share one size are cached at that size, whatever image_size asks, and
  resized after loading: image_size None and 32 share CIFAR-10's cache.
  """
  fingerprint = _fingerprint(path)
  for size in dict.fromkeys((None, image_size)):
    ds = _read_cache(_cache_file(path, fingerprint, size, cache_dir), split)
    if ds is not None:
      return _fit(ds, image_size)
  arrays, size = build()
  cache_file = _cache_file(path, fingerprint, size, cache_dir)
  try:
    os.makedirs(cache_dir, exist_ok=True)
    with files.open_write(cache_file) as f:
      np.savez(f, **arrays)
    logging.info('Cached the decoded %s as %s', path, cache_file)
  except OSError as e:  # a read-only or full disk: the cache only saves time
    logging.warning(
      'Cannot write the data cache (%s): continuing without it, decoding again next time; '
      'set --config.data.cache_dir to a writable folder',
      files.describe_error(e),
    )
  return _fit(_dataset(arrays, split), image_size)


def _read_cache(cache_file: str, split: str) -> ArrayDataset | None:
  if not os.path.exists(cache_file):
    return None
  try:
    with np.load(cache_file) as arrays:
      return _dataset(arrays, split)
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
    # Caches are written atomically, so this is outside damage: decoding again repairs it.
    logging.warning('Ignoring the unreadable cache %s (%s)', cache_file, e)
    return None


def _dataset(arrays: Mapping[str, np.ndarray], split: str) -> ArrayDataset:
  names = tuple(str(n) for n in arrays['class_names'])
  return ArrayDataset(arrays[f'{split}_images'], arrays[f'{split}_labels'], names)


def _cache_file(path: str, fingerprint: list, size: int | None, cache_dir: str) -> str:
  """The cache file, named by everything the decoded arrays depend on."""
  key = json.dumps([_CACHE_VERSION, path, fingerprint, size])
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  stem = os.path.basename(path.rstrip(os.sep))
  for suffix in ARCHIVE_SUFFIXES:
    stem = stem.removesuffix(suffix)
  return os.path.join(cache_dir, f'{stem}-{digest}.npz')


def _fingerprint(path: str) -> list:
  """Size and mtime of a file; of a directory, those of every file and folder in it.

  A directory's own mtime misses edits to the files inside, so all are listed
  (a few hundred milliseconds for 60,000 files).
  """
  if not os.path.isdir(path):
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]
  entries = []
  for root, dirs, names in os.walk(path):
    entries.extend([os.path.relpath(os.path.join(root, d), path), -1, 0] for d in dirs)
    for name in names:
      stat = os.stat(os.path.join(root, name))
      entries.append(
        [os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns]
      )
  return sorted(entries)


# ----------------------------------------------------------------------------
# CIFAR-10, CIFAR-100 and tensorflow-datasets.


def _cifar(spec: Cifar, split: str, image_size: int | None, cache_dir: str) -> ArrayDataset:
  """tensorflow-datasets' prepared copy if there is one, else the official archive."""
  try:
    return _from_tfds(spec.name, split, image_size, cache_dir)
  except ValueError as e:
    logging.info('Using the official %s archive: %s', spec.name, e)
  archive = download_cifar(spec, cache_dir)
  build = lambda: (_decode_cifar(spec, archive), None)
  return _cached(archive, image_size, cache_dir, split, build)


def download_cifar(spec: Cifar, cache_dir: str) -> str:
  """The path of the official python archive in `cache_dir`, downloaded if missing.

  The download goes to a temporary file that is renamed into place only once
  its md5 matches, so a failed or corrupt download leaves nothing behind.
  """
  dest = os.path.join(cache_dir, spec.file)
  if os.path.exists(dest):
    return dest
  os.makedirs(cache_dir, exist_ok=True)
  logging.info('Downloading %s to %s', spec.url, dest)
  try:
    with urllib.request.urlopen(spec.url, timeout=60) as response, files.open_write(dest) as f:
      digest = _copy_with_md5(response, f, spec.name)
      if digest != spec.md5:
        raise ValueError(
          f'{spec.url} has md5 {digest}, not {spec.md5}: the download is corrupt or '
          'the file changed; nothing was kept. Try again, or ' + _SOURCES_HELP
        )
  except (OSError, http.client.HTTPException) as e:
    raise ValueError(
      f'downloading {spec.name} from {spec.url} failed ({e}). Without internet, use '
      '--config.data.source=/path/to/class-folders-or-archive (a directory or .tar.gz of '
      f'{_LAYOUT}) or --config.data.source=synthetic'
    ) from e
  return dest


def _copy_with_md5(response, f, what: str) -> str:
  md5 = hashlib.md5(usedforsecurity=False)
  total = int(response.headers.get('Content-Length') or 0) or None
  with tqdm(
    total=total, unit='B', unit_scale=True, desc=what, file=sys.stderr, disable=None
  ) as bar:
    while chunk := response.read(1 << 20):
      md5.update(chunk)
      f.write(chunk)
      bar.update(len(chunk))
  return md5.hexdigest()


def _decode_cifar(spec: Cifar, archive: str) -> dict[str, np.ndarray]:
  """Both splits of an official python archive (pickled batches of CHW rows)."""
  batches = _read_cifar_batches(spec, archive)
  meta = batches.get(spec.meta, {})
  names = tuple(n.decode() for n in meta.get(spec.names_key, ())) or spec.classes
  arrays = {'class_names': np.array(names)}
  for split, keys in (('train', spec.train_batches), ('test', spec.test_batches)):
    data = np.concatenate([np.asarray(batches[k][b'data'], np.uint8) for k in keys])
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are CHW
    labels = np.concatenate([batches[k][spec.label_key] for k in keys])
    arrays[f'{split}_images'] = np.ascontiguousarray(images)
    arrays[f'{split}_labels'] = labels.astype(np.int32)
  return arrays


# What unpickling a CIFAR batch may construct: dicts, lists, bytes and ints
# need no globals; numpy arrays need these (numpy 1 and 2 spell them apart).
_PICKLE_GLOBALS = {
  ('numpy.core.multiarray', '_reconstruct'): ('numpy._core.multiarray', '_reconstruct'),
  ('numpy._core.multiarray', '_reconstruct'): ('numpy._core.multiarray', '_reconstruct'),
  ('numpy.core.numeric', '_frombuffer'): ('numpy._core.numeric', '_frombuffer'),
  ('numpy._core.numeric', '_frombuffer'): ('numpy._core.numeric', '_frombuffer'),
  ('numpy', 'ndarray'): ('numpy', 'ndarray'),
  ('numpy', 'dtype'): ('numpy', 'dtype'),
  ('_codecs', 'encode'): ('_codecs', 'encode'),  # bytes pickled by Python 3 at protocol 2
}


class _ArraysOnly(pickle.Unpickler):
  """Unpickles plain data and numpy arrays; any other global (code to run) is refused."""

  def find_class(self, module: str, name: str):
    if (module, name) not in _PICKLE_GLOBALS:
      raise pickle.UnpicklingError(f'it asks for {module}.{name}, which a CIFAR batch never does')
    import importlib

    real_module, real_name = _PICKLE_GLOBALS[module, name]
    return getattr(importlib.import_module(real_module), real_name)


def _check_md5(spec: Cifar, archive: str) -> None:
  """A ValueError unless `archive` is byte for byte the official one (checked at every read)."""
  md5 = hashlib.md5(usedforsecurity=False)
  with open(archive, 'rb') as f:
    while chunk := f.read(1 << 20):
      md5.update(chunk)
  if md5.hexdigest() != spec.md5:
    raise ValueError(
      f'{archive} has md5 {md5.hexdigest()}, not {spec.md5} ({spec.url}): it is damaged or not '
      'the official archive, and was not read; delete it and bswap downloads it again'
    )


def _read_cifar_batches(spec: Cifar, archive: str) -> dict[str, dict]:
  """{batch name: {b'data': ..., label_key: ...}, ..., meta name: {names_key: ...}}."""
  wanted = {*spec.train_batches, *spec.test_batches, spec.meta}
  batches = {}
  try:
    _check_md5(spec, archive)  # every time: a file in the cache may have been replaced
    with tarfile.open(archive) as tar:
      for member in tar:
        base = posixpath.basename(member.name)
        if member.isfile() and base in wanted:
          # Even so, nothing but data is unpickled: no code runs whatever the file holds.
          unpickler = _ArraysOnly(tar.extractfile(member), encoding='bytes')
          batches[base] = unpickler.load()
  except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as e:
    raise ValueError(f'cannot read {archive} ({e}); delete it to download it again') from e
  missing = sorted(wanted - set(batches) - {spec.meta})  # the class names have a default
  if missing:
    raise ValueError(f'{archive} lacks {missing}; delete it to download it again')
  return batches


def import_tfds(name: str, sources_help: str = _SOURCES_HELP):
  """The tensorflow_datasets module (optional, slow to import: only when a source needs it)."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ValueError(
      f"data source 'tfds:{name}' needs tensorflow-datasets (pip install tensorflow-datasets "
      f'array-record); or {sources_help}'
    ) from e
  return tfds


def _from_tfds(name: str, split: str, image_size: int | None, cache_dir: str) -> ArrayDataset:
  """A split of a prepared tensorflow-datasets dataset, read without TensorFlow.

  Both splits are decoded once and cached like class folders (`_cached`), keyed
  by the prepared files' sizes and mtimes and by image_size.
  """
  tfds = import_tfds(name)
  opened = {s: _tfds_source(tfds, name, s) for s in SPLITS}
  path = str(opened['train'].dataset_info.data_dir)  # .../NAME/VERSION

  def build():
    arrays = {}
    for s, source in opened.items():
      ds = _from_records(source, f'{name}[{s}]', image_size)
      arrays[f'{s}_images'], arrays[f'{s}_labels'] = ds.images, ds.labels
      if s == 'train':  # numbered from its labels where tfds has no names: the most classes
        arrays['class_names'] = np.array(ds.class_names)
    return arrays, image_size

  return _cached(path, image_size, cache_dir, split, build)


def _tfds_source(tfds, name: str, split: str):
  try:
    return tfds.data_source(name, split=split, download=False)
  except Exception as e:  # tfds raises assorted types (AssertionError, DatasetNotFoundError...)
    raise ValueError(
      f'tensorflow-datasets has no prepared {name!r} split {split!r} in the ArrayRecord format '
      f'({e}); prepare it with `python -m bswap.prepare_tfds` (class folders, no TensorFlow) '
      f'or `tfds build {name} --file_format=array_record` (needs TensorFlow), or {_SOURCES_HELP}'
    ) from e


def _from_records(source, name: str, image_size: int | None) -> ArrayDataset:
  """An ArrayDataset from a random-access source of {'image', 'label'} records."""
  images, labels = [], []
  for i in tqdm(
    range(len(source)), desc=f'reading {name}', unit='img', file=sys.stderr, disable=None
  ):
    record = source[i]
    if 'image' not in record or 'label' not in record:
      raise ValueError(f"tfds:{name} records have {sorted(record)}, not 'image' and 'label'")
    pixels = np.asarray(record['image'], np.uint8)
    pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels
    images.append(_rgb(Image.fromarray(pixels), None))
    labels.append(int(record['label']))
  names = [f'record {i}' for i in range(len(images))]
  images, _ = _uniform(images, names, f'tfds:{name}', image_size)
  try:
    class_names = list(source.dataset_info.features['label'].names)
  except (AttributeError, KeyError, TypeError):  # not a ClassLabel: number the classes
    class_names = [str(i) for i in range(max(labels) + 1)]
  ds = ArrayDataset(np.stack(images), np.array(labels, np.int32), tuple(class_names))
  return _fit(ds, image_size)
