"""Listed splits (the streamed pipeline's sources): class folders, tfds, synthetic, errors.

The class-folder tree is tests/data/folders.py's, written once (conftest's `tree`).
"""

import io
import shutil
import sys
import types

import numpy as np
import pytest
from PIL import Image

from bswap.data import listing
from bswap.data import streamed as hd
from tests.data import folders

OPTIONS = hd.Options(image_size=16, workers=2, prefetch=1)


def _epoch(split, batch_size):
  return list(hd.train_batches(split, OPTIONS, batch_size, seed=0, epoch=0))


# ----------------------------------------------------------------------------
# Class folders.


def test_class_folders_are_listed_in_sorted_order(splits):
  train_split, eval_split = splits
  assert train_split.class_names == ('ant', 'mole', 'zebra')
  assert len(train_split) == 12 and train_split.files[:2] == ['train/ant/a.jpg', 'train/ant/b.png']
  np.testing.assert_array_equal(train_split.labels, np.repeat([0, 1, 2], 4))
  assert eval_split.class_names == train_split.class_names
  assert eval_split.files == [
    'val/ant/0.png',
    'val/ant/1.png',
    'val/mole/0.png',
    'val/zebra/0.png',
    'val/zebra/1.png',
  ]
  np.testing.assert_array_equal(eval_split.labels, [0, 0, 1, 2, 2])
  for i, (_, width, height, _) in enumerate(folders.TRAIN_IMAGES):
    image, label = train_split.load(i)
    assert (image.mode, image.size, label) == ('RGB', (width, height), 0)
  assert train_split.load(6)[0].mode == 'RGB'  # mole's CMYK JPEG


def test_validation_or_test_folders_serve_as_the_eval_split(tree, tmp_path):
  for folder in ('validation', 'test'):
    root = tmp_path / folder
    shutil.copytree(tree / 'train', root / 'train')
    shutil.copytree(tree / 'val', root / folder)
    assert listing.open_split(str(root), 'eval').files[0] == f'{folder}/ant/0.png'


# ----------------------------------------------------------------------------
# Other sources.


def _jpeg(pixels):
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format='JPEG')
  return out.getvalue()


class _FakeSource(list):
  """What tfds.data_source returns: a sequence of records, and the dataset's info."""

  def __init__(self, records, names):
    super().__init__(records)
    label = types.SimpleNamespace(names=names, num_classes=len(names))
    self.dataset_info = types.SimpleNamespace(features={'label': label})


@pytest.fixture
def fake_tfds(monkeypatch):
  """A stand-in for tensorflow_datasets with a prepared 'imagenet2012' (train, validation)."""
  calls = []
  skip = object()
  rng = np.random.default_rng(0)
  train_images = [rng.integers(0, 256, (20 + i, 30, 3), np.uint8) for i in range(6)]
  records = {
    'train': [{'image': _jpeg(image), 'label': i % 3} for i, image in enumerate(train_images)],
    # Decoded single-channel pixels, as tfds returns without SkipDecoding.
    'validation': [{'image': np.full((18, 18, 1), 7 * i, np.uint8), 'label': i} for i in range(3)],
  }

  def data_source(name, *, split, download, decoders):
    calls.append((name, split, download, decoders))
    if name != 'imagenet2012' or split not in records:
      raise AssertionError(f'Dataset {name} split {split} not found')
    return _FakeSource(records[split], ['tench', 'goldfish', 'shark'])

  fake = types.SimpleNamespace(
    data_source=data_source, decode=types.SimpleNamespace(SkipDecoding=lambda: skip)
  )
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', fake)
  return calls, skip


def test_tfds_route_reads_encoded_images_without_tensorflow(fake_tfds):
  calls, skip = fake_tfds
  train_split = listing.open_split('tfds:imagenet2012', 'train')
  assert calls == [('imagenet2012', 'train', False, {'image': skip})]
  assert len(train_split) == 6 and train_split.class_names == ('tench', 'goldfish', 'shark')
  batches = _epoch(train_split, batch_size=3)
  assert len(batches) == 2 and batches[0]['image'].shape == (3, 16, 16, 3)
  labels = np.concatenate([b['label'] for b in batches])
  np.testing.assert_array_equal(np.bincount(labels), [2, 2, 2])
  eval_split = listing.open_split('tfds:imagenet2012', 'eval')
  assert calls[-1][1] == 'validation' and eval_split.name == 'tfds:imagenet2012[validation]'
  (batch,) = hd.eval_batches(eval_split, OPTIONS, 4)
  np.testing.assert_array_equal(batch['mask'], [True, True, True, False])
  np.testing.assert_array_equal(batch['image'][2], 14)  # gray 14 -> RGB, any crop
  with pytest.raises(ValueError, match=r"no prepared 'imagenet2013' train split .*not found"):
    listing.open_split('tfds:imagenet2013', 'train')


def test_tfds_route_without_tensorflow_datasets_is_a_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(ValueError, match='needs tensorflow-datasets'):
    listing.open_split('tfds:imagenet2012', 'train')


def test_synthetic_images_are_seeded_and_of_assorted_sizes():
  split = listing.open_split('synthetic', 'train', num_classes=5, synthetic_size=20, image_size=16)
  assert len(split) == 20 and split.class_names[-1] == 'class_4'
  sizes = {split.load(i)[0].size for i in range(20)}
  assert len(sizes) > 5 and all(12 <= min(s) and max(s) <= 24 for s in sizes)
  np.testing.assert_array_equal(split.load(3)[0], split.load(3)[0])
  other = listing.open_split('synthetic', 'eval', num_classes=5, synthetic_size=20, image_size=16)
  assert not np.array_equal(np.asarray(other.load(3)[0]), np.asarray(split.load(3)[0]))
  assert {split.load(i)[1] for i in range(20)} <= set(range(5))


# ----------------------------------------------------------------------------
# Failing early.


def _rm(path):
  return lambda root: shutil.rmtree(root / path)


def _mkdir(path):
  return lambda root: (root / path).mkdir(parents=True)


def _unknown_val_class(root):
  folders.write_image(root / 'val' / 'cat' / '0.png', 8, 8, 'RGB', 0)


@pytest.mark.parametrize(
  'change, split, message',
  [
    (_rm('val'), 'eval', r'has no val/ \(or validation/, test/\) folder; expected .*val/<class>'),
    (_rm('train'), 'train', r'has no train/ folder'),
    (_rm('train'), 'eval', r'has no train/ folder'),
    (_mkdir('train/cat'), 'train', r'empty class folder\(s\) train/cat/; add images'),
    (_mkdir('train/zebra/deeper'), 'train', None),  # an empty subfolder of a full class is fine
    (_unknown_val_class, 'eval', r"val/ has class folders that train/ lacks: \['cat'\]"),
    (_mkdir('test'), 'eval', r'holds val and test/: keep one evaluation folder'),
  ],
)
def test_broken_folders_are_clear_errors(tree, tmp_path, change, split, message):
  root = tmp_path / 'data'
  shutil.copytree(tree, root)
  change(root)
  if message is None:
    listing.open_split(str(root), split)
    return
  with pytest.raises(ValueError, match=message) as error:
    listing.open_split(str(root), split)
  assert str(root) in str(error.value)


def test_bad_sources_and_split_names_are_clear_errors(tree, tmp_path):
  with pytest.raises(ValueError, match=r"'/no/such/data' \(/no/such/data\) does not exist"):
    listing.open_split('/no/such/data', 'train')
  (tmp_path / 'imagenet.tar').write_bytes(b'')
  with pytest.raises(ValueError, match=r'is not a directory; .*tfds:imagenet2012'):
    listing.open_split(str(tmp_path / 'imagenet.tar'), 'train')
  with pytest.raises(ValueError, match="split must be one of .*'test'"):
    listing.open_split(str(tree), 'test')
