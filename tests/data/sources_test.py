"""Data sources decoded into memory, and the decoded-array cache."""

import dataclasses
import hashlib
import io
import os
import pickle
import random
import shutil
import sys
import tarfile
import types

import numpy as np
import pytest
from PIL import Image

from bswap.data import sources as ip

CLASSES = {'zebra': 3, 'ant': 2, 'mole': 2}  # train images per class; deliberately unsorted


def _write_image(path, color, size=(8, 8), mode='RGB'):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new(mode, size, color).save(path)


def _make_tree(root):
  """train/ and test/ class folders, written in unsorted order.

  Red encodes the class's sorted index, green the file's index, so the
  expected arrays can be rebuilt from labels alone.
  """
  for split, per_class in (('train', CLASSES), ('test', dict.fromkeys(CLASSES, 1))):
    for name, count in per_class.items():
      label = sorted(CLASSES).index(name)
      for i in reversed(range(count)):
        _write_image(root / split / name / f'{i:02d}.png', (40 * label + 20, 10 * i, 7))
  return root


def _expected(split):
  per_class = CLASSES if split == 'train' else dict.fromkeys(CLASSES, 1)
  labels = [sorted(CLASSES).index(c) for c in sorted(per_class) for _ in range(per_class[c])]
  files = [i for c in sorted(per_class) for i in range(per_class[c])]
  colors = [(40 * label + 20, 10 * i, 7) for label, i in zip(labels, files)]
  images = np.broadcast_to(np.array(colors, np.uint8)[:, None, None, :], (len(labels), 8, 8, 3))
  return images, np.array(labels, np.int32)


def _make_tar(root, dest):
  """An archive of the tree, files and folders in shuffled order (as the real one is)."""
  names = [str(p.relative_to(root)) for p in sorted(root.rglob('*'))]
  random.Random(0).shuffle(names)
  with tarfile.open(dest, 'w:gz' if dest.suffix == '.gz' else 'w') as tar:
    for name in names:
      tar.add(root / name, arcname=name, recursive=False)
  return dest


@pytest.fixture
def no_tfds(monkeypatch):
  """Makes `import tensorflow_datasets` fail, whether or not it is installed."""
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)


def test_class_folders_load_from_directory_and_archive_alike(tmp_path):
  root = _make_tree(tmp_path / 'data')
  archive = _make_tar(root, tmp_path / 'data.tar.gz')
  cache = str(tmp_path / 'cache')
  for split in ('train', 'test'):
    images, labels = _expected(split)
    for source in (str(root), str(archive)):
      ds = ip.load(source, split, cache_dir=cache)
      assert ds.class_names == ('ant', 'mole', 'zebra')
      assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
      assert ds.images.shape == images.shape and len(ds) == len(labels)
      np.testing.assert_array_equal(ds.images, images)
      np.testing.assert_array_equal(ds.labels, labels)
  assert ds.num_classes == 3


def test_archive_with_an_enclosing_folder_loads(tmp_path):
  _make_tree(tmp_path / 'wrap' / 'cifar')
  archive = _make_tar(tmp_path / 'wrap', tmp_path / 'wrapped.tgz')
  ds = ip.load(str(archive), 'train', cache_dir=str(tmp_path / 'cache'))
  np.testing.assert_array_equal(ds.labels, _expected('train')[1])


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
  archive = _make_tar(_make_tree(tmp_path / 'data'), tmp_path / 'data.tar.gz')
  cache = tmp_path / 'cache'
  first = ip.load(str(archive), 'train', cache_dir=str(cache))
  (cache_file,) = cache.glob('*.npz')
  mtime = cache_file.stat().st_mtime_ns
  assert not [p for p in cache.iterdir() if p.suffix != '.npz']  # no temporary left

  def no_decoding(*args, **kwargs):
    raise AssertionError('decoded an image although the cache holds it')

  monkeypatch.setattr(Image, 'open', no_decoding)
  again = ip.load(str(archive), 'train', cache_dir=str(cache))
  test = ip.load(str(archive), 'test', cache_dir=str(cache))  # one decode serves both splits
  np.testing.assert_array_equal(again.images, first.images)
  assert again.class_names == first.class_names and len(test) == 3
  assert cache_file.stat().st_mtime_ns == mtime
  # A changed source (here its mtime) is decoded again, into a new cache file.
  os.utime(archive, ns=(1, 1))
  with pytest.raises(AssertionError, match='decoded an image'):
    ip.load(str(archive), 'train', cache_dir=str(cache))


def test_one_cache_serves_every_image_size_when_images_share_one(tmp_path, monkeypatch):
  root = str(_make_tree(tmp_path / 'data'))
  cache = tmp_path / 'cache'
  native = ip.load(root, 'train', cache_dir=str(cache))
  monkeypatch.setattr(Image, 'open', None)  # from here on, nothing may be decoded
  same = ip.load(root, 'train', image_size=8, cache_dir=str(cache))
  np.testing.assert_array_equal(same.images, native.images)
  small = ip.load(root, 'train', image_size=4, cache_dir=str(cache))
  assert small.images.shape == (7, 4, 4, 3)
  np.testing.assert_array_equal(small.images, native.images[:, :4, :4])  # uniform colours
  assert len(list(cache.iterdir())) == 1


def test_cache_dir_comes_from_argument_then_env_then_home(tmp_path, monkeypatch):
  root = str(_make_tree(tmp_path / 'data'))
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.delenv('BSWAP_CACHE_DIR', raising=False)
  ip.load(root, 'train')
  assert len(list((tmp_path / 'home' / '.cache' / 'bswap').glob('data-*.npz'))) == 1
  monkeypatch.setenv('BSWAP_CACHE_DIR', str(tmp_path / 'env'))
  ip.load(root, 'train')
  assert len(list((tmp_path / 'env').glob('*.npz'))) == 1
  ip.load(root, 'train', cache_dir=str(tmp_path / 'arg'))
  assert len(list((tmp_path / 'arg').glob('*.npz'))) == 1


def test_images_of_other_sizes_are_resized(tmp_path):
  root = _make_tree(tmp_path / 'data')
  _write_image(root / 'train' / 'ant' / 'big.png', 255, size=(12, 10), mode='L')
  cache = str(tmp_path / 'cache')
  with pytest.raises(ValueError, match=r'differ in size .*big.png is 12x10.*image_size'):
    ip.load(str(root), 'train', cache_dir=cache)
  ds = ip.load(str(root), 'train', image_size=8, cache_dir=cache)
  assert ds.images.shape == (8, 8, 8, 3)
  np.testing.assert_array_equal(ds.images[2], 255)  # grayscale white -> RGB white, resized
  np.testing.assert_array_equal(ds.images[0], _expected('train')[0][0])  # 8x8 left alone
  assert ip.load(str(root), 'test', image_size=5, cache_dir=cache).images.shape == (3, 5, 5, 3)


def _without(split):
  return lambda root: shutil.rmtree(_make_tree(root) / split)


def _plus_image(name, data=None):
  def build(root):
    _make_tree(root)
    if data is None:
      _write_image(root / name, 0)
    else:
      (root / name).write_bytes(data)

  return build


def _with_empty_class(root):
  (_make_tree(root) / 'train' / 'cat').mkdir()


@pytest.mark.parametrize(
  'build, message',
  [
    (_without('train'), r'has no train/ folder; expected class folders train/<class>/'),
    (_without('test'), r'has no test/ folder'),
    (_with_empty_class, r'empty class folder\(s\) train/cat/; add images or remove them'),
    (_plus_image('test/cat/0.png'), r"only in train/: \[\]; only in test/: \['cat'\]"),
    (_plus_image('train/ant/bad.png', b'not an image'), r'cannot decode train/ant/bad.png'),
  ],
)
def test_broken_class_folders_are_clear_errors(tmp_path, build, message):
  root = tmp_path / 'data'
  build(root)
  for source in (root, _make_tar(root, tmp_path / 'data.tar')):
    with pytest.raises(ValueError, match=message) as error:
      ip.load(str(source), 'train', cache_dir=str(tmp_path / 'cache'))
    assert str(source) in str(error.value)
  assert not (tmp_path / 'cache').exists()  # nothing cached


def test_a_missing_path_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"'/no/such/data': no such file .*'synthetic'"):
    ip.load('/no/such/data', 'train', cache_dir=str(tmp_path))


def test_a_file_that_is_no_archive_is_a_clear_error(tmp_path):
  (tmp_path / 'data.zip').write_bytes(b'PK')
  with pytest.raises(ValueError, match='neither a directory nor a .tar'):
    ip.load(str(tmp_path / 'data.zip'), 'train')
  (tmp_path / 'data.tar.gz').write_bytes(b'truncated')
  with pytest.raises(ValueError, match='cannot read the archive .*data.tar.gz'):
    ip.load(str(tmp_path / 'data.tar.gz'), 'train', cache_dir=str(tmp_path / 'cache'))


def test_synthetic_is_seeded_and_splits_differ():
  load = lambda split, seed=0: ip.load(
    'synthetic', split, image_size=8, num_classes=3, synthetic_size=20, seed=seed
  )
  train = load('train')
  assert train.images.shape == (20, 8, 8, 3) and train.images.dtype == np.uint8
  assert train.labels.dtype == np.int32 and set(train.labels) <= {0, 1, 2}
  assert train.class_names == ('class_0', 'class_1', 'class_2')
  np.testing.assert_array_equal(load('train').images, train.images)
  assert not np.array_equal(load('test').images, train.images)
  assert not np.array_equal(load('train', seed=1).images, train.images)
  assert ip.load('synthetic', 'test').images.shape == (1024, 32, 32, 3)
  with pytest.raises(ValueError, match='split must be one of'):
    load('validation')


# Labels of the fake archives' examples: the first and last class, and one between.
_LABELS = {'cifar10': [0, 9, 3], 'cifar100': [0, 99, 42]}
_FOLDER = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python'}


def _fake_cifar_archive(path, name='cifar10'):
  """The official archive's layout: pickled batches of CHW rows, 10 train and 3 test examples.

  CIFAR-10: data_batch_1..5 of 2 rows, test_batch, batches.meta with b'label_names';
  CIFAR-100: train of 10 rows, test, meta with b'fine_label_names', coarse labels too.
  """
  spec, rng, labels = ip.CIFAR[name], np.random.default_rng(0), _LABELS[name]
  per_batch = 10 // len(spec.train_batches)
  sizes = [(b, per_batch) for b in spec.train_batches] + [(b, 3) for b in spec.test_batches]
  batches = {
    batch: {
      b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
      spec.label_key: [labels[i % 2] if n != 3 else labels[i] for i in range(n)],
      b'coarse_labels': [0] * n,  # CIFAR-100's; ignored
    }
    for batch, n in sizes
  }
  batches[spec.meta] = {spec.names_key: [c.encode() for c in spec.classes]}
  with tarfile.open(path, 'w:gz') as tar:
    for batch_name, batch in batches.items():
      data = pickle.dumps(batch)
      info = tarfile.TarInfo(f'{_FOLDER[name]}/{batch_name}')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path, batches


def _serve(monkeypatch, name, url, md5=None):
  """Points the `name` source at `url` (and expects `md5`)."""
  spec = ip.CIFAR[name]
  replaced = dataclasses.replace(spec, url=url, md5=md5 or spec.md5)
  monkeypatch.setitem(ip.CIFAR, name, replaced)


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_cifar_downloads_checks_and_decodes_the_official_archive(
  tmp_path, monkeypatch, no_tfds, name
):
  archive, batches = _fake_cifar_archive(tmp_path / 'fake.tar.gz', name)
  _serve(monkeypatch, name, archive.as_uri(), hashlib.md5(archive.read_bytes()).hexdigest())
  cache, spec, labels = tmp_path / 'cache', ip.CIFAR[name], _LABELS[name]
  train = ip.load(name, 'train', cache_dir=str(cache))
  assert (cache / spec.file).read_bytes() == archive.read_bytes()
  assert train.images.shape == (10, 32, 32, 3) and train.class_names == spec.classes
  assert train.num_classes == {'cifar10': 10, 'cifar100': 100}[name]
  np.testing.assert_array_equal(train.labels, labels[:2] * 5)
  # Example 3: rows are 1024 R, 1024 G, 1024 B.
  first = np.concatenate([batches[b][b'data'] for b in spec.train_batches])[3]
  for y, x, c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (5, 7, 2), (31, 30, 1)]:
    assert train.images[3, y, x, c] == first[c * 1024 + y * 32 + x]
  _serve(monkeypatch, name, 'file:///nonexistent')  # no second download
  test = ip.load(name, 'test', cache_dir=str(cache))
  np.testing.assert_array_equal(test.labels, labels)
  assert test.images.shape == (3, 32, 32, 3)
  resized = ip.load(name, 'test', image_size=16, cache_dir=str(cache))
  assert resized.images.shape == (3, 16, 16, 3)


def test_the_cifar_table_names_each_datasets_classes():
  assert len(ip.CIFAR['cifar10'].classes) == 10 and len(ip.CIFAR['cifar100'].classes) == 100
  for spec in ip.CIFAR.values():
    assert len(set(spec.classes)) == len(spec.classes)
    assert list(spec.classes) == sorted(spec.classes) or spec.name == 'cifar10'


def test_cifar10_download_failures_are_clear_and_leave_nothing(tmp_path, monkeypatch, no_tfds):
  archive, _ = _fake_cifar_archive(tmp_path / 'fake.tar.gz')
  _serve(monkeypatch, 'cifar10', archive.as_uri(), '0' * 32)
  cache = tmp_path / 'cache'
  with pytest.raises(ValueError, match='has md5 .* not 0000'):
    ip.load('cifar10', 'train', cache_dir=str(cache))
  assert not list(cache.iterdir())
  _serve(monkeypatch, 'cifar10', (tmp_path / 'offline').as_uri())
  with pytest.raises(ValueError, match=r'download.*failed.*data.source=/path.*synthetic'):
    ip.load('cifar10', 'train', cache_dir=str(cache))
  assert not list(cache.iterdir())


class _FakeTfdsSplit(list):
  """What tfds.data_source returns: records by index, and the dataset's info."""

  def __init__(self, records, data_dir):
    super().__init__(records)
    self.dataset_info = types.SimpleNamespace(data_dir=str(data_dir))


def test_tfds_sources_are_read_once_then_from_the_cache(monkeypatch, no_tfds, tmp_path):
  with pytest.raises(ValueError, match='needs tensorflow-datasets'):
    ip.load('tfds:mnist', 'train')
  prepared = tmp_path / 'tensorflow_datasets' / 'cifar10' / '3.0.2'
  prepared.mkdir(parents=True)
  (prepared / 'cifar10-train.array_record-00000-of-00001').write_bytes(b'records')
  reads = []

  def data_source(name, split, download):
    assert not download
    if name != 'cifar10':
      raise AssertionError(f'Dataset {name} not found')
    reads.append(split)
    n = 3 if split == 'train' else 2
    records = [{'image': np.full((4, 4, 1), 9 * i, np.uint8), 'label': i} for i in range(n)]
    return _FakeTfdsSplit(records, prepared)

  fake = types.SimpleNamespace(data_source=data_source)
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', fake)
  with pytest.raises(
    ValueError, match="no prepared 'mnist' split 'train'.*not found.*prepare_tfds"
  ):
    ip.load('tfds:mnist', 'train')
  _serve(monkeypatch, 'cifar10', 'file:///nonexistent')  # prepared tfds data wins
  cache = tmp_path / 'cache'
  ds = ip.load('cifar10', 'train', cache_dir=str(cache))
  assert ds.images.shape == (3, 4, 4, 3) and ds.class_names == ('0', '1', '2')
  np.testing.assert_array_equal(ds.images[2], 18)
  assert len(list(cache.glob('*.npz'))) == 1
  # Both splits were decoded into the cache: nothing is decoded again.
  monkeypatch.setattr(ip, '_from_records', None)
  test = ip.load('cifar10', 'test', cache_dir=str(cache))
  again = ip.load('tfds:cifar10', 'train', cache_dir=str(cache))
  assert len(test) == 2
  np.testing.assert_array_equal(again.images, ds.images)
  # Prepared files that change are read again.
  os.utime(prepared / 'cifar10-train.array_record-00000-of-00001', ns=(1, 1))
  with pytest.raises(TypeError):  # _from_records is None: the cache was not used
    ip.load('cifar10', 'train', cache_dir=str(cache))


def test_array_dataset_checks_dtypes_and_shapes():
  with pytest.raises(ValueError, match='images must be uint8'):
    ip.ArrayDataset(np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, np.int32), ('a',))
  with pytest.raises(ValueError, match='labels must be int32'):
    ip.ArrayDataset(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3, np.int32), ('a',))


class _Payload:
  """Pickles as a call that writes a marker file: what a malicious batch would run."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (shutil.copyfile, (__file__, self.marker))


def _planted_archive(path, marker):
  batch = pickle.dumps({b'data': _Payload(marker), b'labels': [0]})
  with tarfile.open(path, 'w:gz') as tar:
    for name in ('data_batch_1', 'test_batch'):
      info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
      info.size = len(batch)
      tar.addfile(info, io.BytesIO(batch))
  return path


def test_a_planted_cifar_archive_in_the_cache_is_refused_and_runs_nothing(
  tmp_path, monkeypatch, no_tfds
):
  cache, marker = tmp_path / 'cache', tmp_path / 'pwned'
  cache.mkdir()
  archive = _planted_archive(cache / ip.CIFAR['cifar10'].file, marker)
  _serve(monkeypatch, 'cifar10', 'file:///nonexistent')  # the real md5: the planted file differs
  with pytest.raises(
    ValueError, match=r'has md5 \w+, not c58f30108f718f92721af3b95e74349a.*delete'
  ):
    ip.load('cifar10', 'train', cache_dir=str(cache))
  assert not marker.exists()
  # Even an archive whose md5 were expected would not run code: only data is unpickled.
  _serve(
    monkeypatch, 'cifar10', 'file:///nonexistent', hashlib.md5(archive.read_bytes()).hexdigest()
  )
  with pytest.raises(ValueError, match=r'cannot read .*shutil.copyfile, which a CIFAR batch never'):
    ip.load('cifar10', 'train', cache_dir=str(cache))
  assert not marker.exists()
