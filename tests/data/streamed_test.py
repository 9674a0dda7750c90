"""Streamed data: listing, batches, determinism, per-host shards, tfds, errors, training.

A tiny class-folder dataset of assorted sizes and modes (3 classes x 4 train
images, 5 validation images), written once per module.
"""

import io
import json
import shutil
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

from bswap import data as data_lib
from bswap import defaults
from bswap import pipeline
from bswap.data import augment
from bswap.data import imagenet_ops as pp
from bswap.data import listing
from bswap.data import sources
from bswap.data import streamed as hd
from bswap.nets import genotype as genotype_lib
from bswap.search import run as search
from bswap.train import loop as train

# (file, width, height, mode): sizes differ, and so do modes (gray, RGBA, CMYK).
TRAIN_IMAGES = [
  ('a.jpg', 40, 60, 'RGB'),
  ('b.png', 75, 50, 'RGB'),
  ('c.jpg', 30, 30, 'L'),
  ('d.png', 50, 40, 'RGBA'),
]
VAL_COUNTS = {'zebra': 2, 'ant': 2, 'mole': 1}  # written unsorted
KNOWN = 'val/ant/0.png'  # 24 x 36, lossless: its centre crop is checked pixel by pixel
OPTIONS = hd.Options(image_size=16, workers=2, prefetch=1)
MEAN, STD = np.array(augment.IMAGENET.mean), np.array(augment.IMAGENET.std)


def _write(path, width, height, mode, seed):
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
  image = Image.fromarray(pixels, 'RGBA').convert(mode)
  image.save(path)
  return np.asarray(image.convert('RGB'))


def _make_tree(root):
  seed = 0
  for name in VAL_COUNTS:
    for file, width, height, mode in TRAIN_IMAGES:
      mode = 'CMYK' if (name, file) == ('mole', 'c.jpg') else mode
      _write(root / 'train' / name / file, width, height, mode, seed := seed + 1)
  for name, count in VAL_COUNTS.items():
    for i in range(count):
      _write(root / 'val' / name / f'{i}.png', 24, 36, 'RGB', seed := seed + 1)
  (root / 'train' / 'ant' / '.DS_Store').write_bytes(b'not an image')  # hidden: skipped
  return root


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  return _make_tree(tmp_path_factory.mktemp('data') / 'imagenet')


@pytest.fixture(scope='module')
def splits(tree):
  return listing.open_split(str(tree), 'train'), listing.open_split(str(tree), 'eval')


def _epoch(split, seed=0, epoch=0, options=OPTIONS, batch_size=4, **kwargs):
  return list(hd.train_batches(split, options, batch_size, seed, epoch, **kwargs))


def _images(batches):
  return np.concatenate([b['image'] for b in batches])


# ----------------------------------------------------------------------------
# Listing.


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
  for i, (_, width, height, _) in enumerate(TRAIN_IMAGES):
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
# Training batches.


def test_train_batches_have_the_shapes_dtypes_and_range_of_an_epoch(splits):
  batches = _epoch(splits[0])
  assert len(batches) == 3  # 12 // 4
  for batch in batches:
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (4, 16, 16, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].shape == (4,) and batch['label'].dtype == np.int32
  labels = np.concatenate([b['label'] for b in batches])
  np.testing.assert_array_equal(np.bincount(labels), [4, 4, 4])  # each example once
  normalised = np.asarray(augment.normalize(_images(batches), augment.IMAGENET))
  assert normalised.dtype == np.float32
  assert (normalised >= (0 - MEAN) / STD - 1e-5).all()
  assert (normalised <= (1 - MEAN) / STD + 1e-5).all()
  assert normalised.std() > 0.5  # random pixels, not blank crops


def test_a_partial_last_batch_is_dropped(splits):
  assert [len(b['label']) for b in _epoch(splits[0], batch_size=5)] == [5, 5]
  assert hd.steps_per_epoch(splits[0], 12) == 1
  with pytest.raises(ValueError, match=r'batch size 13 must be in \[1, 12\]'):
    _epoch(splits[0], batch_size=13)


def test_batches_are_a_function_of_seed_epoch_and_step_alone(splits):
  train_split = splits[0]
  reference = _images(_epoch(train_split))
  # Thread count and prefetch depth change nothing.
  for workers, prefetch in ((1, 0), (3, 3)):
    options = hd.Options(image_size=16, workers=workers, prefetch=prefetch)
    np.testing.assert_array_equal(_images(_epoch(train_split, options=options)), reference)
  # Other epochs and seeds differ: order, crops and flips.
  assert not np.array_equal(_images(_epoch(train_split, epoch=1)), reference)
  assert not np.array_equal(_images(_epoch(train_split, seed=1)), reference)
  # A resumed epoch continues where it stopped.
  np.testing.assert_array_equal(_images(_epoch(train_split, start=1)), reference[4:])
  np.testing.assert_array_equal(_images(_epoch(train_split, start=1, stop=2)), reference[4:8])
  with pytest.raises(ValueError, match=r'steps \[2, 4\) are outside the epoch of 3 steps'):
    _epoch(train_split, start=2, stop=4)


def test_each_process_loads_its_disjoint_rows_of_every_global_batch(splits):
  train_split, eval_split = splits
  whole = _epoch(train_split)
  shards = [_epoch(train_split, process_index=p, process_count=2) for p in range(2)]
  for step, batch in enumerate(whole):
    for key in ('image', 'label'):
      rows = [shards[p][step][key] for p in range(2)]
      assert rows[0].shape[0] == rows[1].shape[0] == 2
      np.testing.assert_array_equal(np.concatenate(rows), batch[key])
  whole = list(hd.eval_batches(eval_split, OPTIONS, 4))
  for p in range(2):
    shard = list(hd.eval_batches(eval_split, OPTIONS, 4, process_index=p, process_count=2))
    for key in ('image', 'label', 'mask'):
      for batch, mine in zip(whole, shard):
        np.testing.assert_array_equal(mine[key], batch[key][2 * p : 2 * p + 2])
  with pytest.raises(ValueError, match='4 rows do not split evenly across 3 processes'):
    _epoch(train_split, process_index=0, process_count=3)


# ----------------------------------------------------------------------------
# Evaluation batches.


def test_eval_batches_cover_every_example_once_and_mask_the_padding(splits, tree):
  eval_split = splits[1]
  options = hd.Options(image_size=16, resize_ratio=1.5, workers=2)
  batches = list(hd.eval_batches(eval_split, options, 4))
  assert hd.eval_steps(eval_split, 4) == len(batches) == 2
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)
  labels = np.concatenate([b['label'] for b in batches])
  np.testing.assert_array_equal(labels[:5], eval_split.labels)
  images = _images(batches)
  assert images.shape == (8, 16, 16, 3) and not images[5:].any()  # padding is zeros
  # 24 x 36 at 16 px, ratio 1.5: the shorter side is already 24, so no resize;
  # the centre crop starts at left round(8 / 2) = 4, top round(20 / 2) = 10.
  known = np.asarray(Image.open(tree / KNOWN).convert('RGB'))
  np.testing.assert_array_equal(images[0], known[10:26, 4:20])
  for i in range(5):  # the rest: the documented preprocessing of each file
    image = Image.open(tree / eval_split.files[i]).convert('RGB')
    np.testing.assert_array_equal(images[i], pp.eval_image(image, 16, 1.5))


# ----------------------------------------------------------------------------
# The Fisher batch.


def test_fisher_batch_decodes_only_its_examples_deterministically(splits, monkeypatch):
  train_split = splits[0]
  opened = []
  real = sources.open_rgb
  monkeypatch.setattr(
    sources, 'open_rgb', lambda entry, *args: opened.append(entry) or real(entry, *args)
  )
  images, labels = hd.fisher_batch(train_split, OPTIONS, 5, seed=0)
  assert len(opened) == len(set(opened)) == 5  # five distinct files, nothing else
  assert isinstance(images, jax.Array) and images.shape == (5, 16, 16, 3)
  assert images.dtype == np.float32 and labels.dtype == np.int32
  assert float(images.min()) >= float(((0 - MEAN) / STD).min()) - 1e-5
  same = hd.fisher_batch(train_split, OPTIONS, 5, seed=0)
  np.testing.assert_array_equal(same[0], images)
  np.testing.assert_array_equal(same[1], labels)
  one = hd.fisher_batch(train_split, OPTIONS, 5, 0, index=1)
  np.testing.assert_array_equal(one[0], hd.fisher_batch(train_split, OPTIONS, 5, 0, index=1)[0])
  assert not np.array_equal(one[0], images)
  assert not np.array_equal(hd.fisher_batch(train_split, OPTIONS, 5, seed=1)[0], images)


def test_the_search_takes_its_fisher_batch_from_the_stream(tree):
  config = _stream_config(tree)
  config.search = defaults.search(50_000)
  config.search.update(batch_size=4, fresh_batch_per_candidate=True)
  data = data_lib.open_data(config)
  split = data.split('train')
  assert isinstance(split, listing.FolderSplit)
  images, labels = search.fisher_batches(config, data)(2)
  expected = hd.fisher_batch(split, hd.Options.from_config(config.data), 4, 0, index=2)
  np.testing.assert_array_equal(images, expected[0])
  np.testing.assert_array_equal(labels, expected[1])


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
  _write(root / 'val' / 'cat' / '0.png', 8, 8, 'RGB', 0)


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


def test_bad_sources_and_arguments_are_clear_errors(tree, tmp_path):
  with pytest.raises(ValueError, match=r"'/no/such/data' \(/no/such/data\) does not exist"):
    listing.open_split('/no/such/data', 'train')
  (tmp_path / 'imagenet.tar').write_bytes(b'')
  with pytest.raises(ValueError, match=r'is not a directory; .*tfds:imagenet2012'):
    listing.open_split(str(tmp_path / 'imagenet.tar'), 'train')
  with pytest.raises(ValueError, match="split must be one of .*'test'"):
    listing.open_split(str(tree), 'test')
  with pytest.raises(ValueError, match='eval_resize_ratio must be at least 1'):
    hd.Options(resize_ratio=0.9)
  with pytest.raises(ValueError, match=r'crop_area must be .*\(0.0, 1.0\)'):
    hd.Options(area=(0.0, 1.0))


def test_an_unreadable_image_fails_its_batch_naming_the_file(tree, tmp_path):
  root = tmp_path / 'data'
  shutil.copytree(tree, root)
  (root / 'train' / 'ant' / 'a.jpg').write_bytes(b'not a jpeg')
  split = listing.open_split(str(root), 'train')  # listing does not decode
  with pytest.raises(ValueError, match=r'cannot decode train/ant/a.jpg .*replace or delete'):
    _epoch(split, batch_size=12)


def test_an_unknown_pipeline_is_a_clear_error(tmp_path):
  config = defaults.smoke(defaults.cifar_config(50_000))
  config.data.pipeline = 'coco'
  with pytest.raises(ValueError, match="pipeline='coco' is unknown"):
    search.search(config)
  config.stage = 'teacher'
  with pytest.raises(ValueError, match="pipeline='coco' is unknown"):
    pipeline.run(config, str(tmp_path))


# ----------------------------------------------------------------------------
# Training on the stream.


def _stream_config(tree, **train_overrides):
  """The WRN smoke config (WRN-10-1 here) on the tiny folders at 16 px: 3 steps of 4."""
  config = defaults.smoke(defaults.cifar_config(50_000))
  config.model.width = 1
  config.model.num_classes = 3
  config.data = data_lib.default_config('imagenet')
  config.data.update(source=str(tree), image_size=16, workers=2)
  config.train.update(
    batch_size=4, eval_batch_size=4, genotype='Conv,Conv,Conv', genotype_width=1, tensorboard=False
  )
  config.train.update(train_overrides)
  return config


def test_a_training_step_on_the_stream_then_a_resume_where_it_stopped(tree, tmp_path, monkeypatch):
  config = _stream_config(tree, epochs=1, max_steps=1)
  geno = genotype_lib.uniform('Conv', 10, 1)
  run_dir = str(tmp_path / 'run')
  summary = train.fit(config, run_dir, geno)
  assert summary.step == 1 and summary.epoch == round(1 / 3, 4)
  (record,) = [json.loads(r) for r in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  assert np.isfinite(record['train_loss']) and np.isfinite(record['test_loss'])
  assert record['test_error'] in {100 * k / 5 for k in range(6)}  # the 5 val images, once each
  # The resumed run streams steps 1 and 2 of epoch 0: batches are functions of
  # (seed, epoch, step), so these are the batches an uninterrupted run trains on.
  streamed, real = [], hd.train_batches

  def spy(split, options, batch_size, seed, epoch, **kwargs):
    streamed.append((batch_size, seed, epoch, kwargs))
    return real(split, options, batch_size, seed, epoch, **kwargs)

  monkeypatch.setattr(hd, 'train_batches', spy)
  assert train.fit(_stream_config(tree, epochs=1), run_dir, geno).step == 3
  assert streamed == [(4, 0, 0, {'start': 1, 'stop': 3})]
  with pytest.raises(ValueError, match='steps_per_call=1'):
    train.check_config(_stream_config(tree, steps_per_call=2))
