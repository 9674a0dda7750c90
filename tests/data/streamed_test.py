"""The streamed ('imagenet') pipeline: batches, determinism, per-host shards, the Fisher
batch, feeds, and training on the stream.

The class-folder tree is tests/data/folders.py's, written once (conftest's `tree`);
listing it is tests/data/listing_test.py's business.
"""

import json
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from bswap import data as data_lib
from bswap import defaults
from bswap import parallel
from bswap.data import augment
from bswap.data import imagenet_ops as pp
from bswap.data import listing
from bswap.data import sources
from bswap.data import streamed as hd
from bswap.nets import genotype as genotype_lib
from bswap.search import run as search
from bswap.train import checkpoint
from bswap.train import loop as train
from tests.data import folders

OPTIONS = hd.Options(image_size=16, workers=2, prefetch=1)
MEAN, STD = np.array(augment.IMAGENET.mean), np.array(augment.IMAGENET.std)


def _epoch(split, seed=0, epoch=0, options=OPTIONS, batch_size=4, **kwargs):
  return list(hd.train_batches(split, options, batch_size, seed, epoch, **kwargs))


def _images(batches):
  return np.concatenate([b['image'] for b in batches])


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
  known = np.asarray(Image.open(tree / folders.KNOWN).convert('RGB'))
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
# Failing early.


def test_bad_preprocessing_options_are_clear_errors():
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


@pytest.mark.slow
def test_a_training_step_on_the_stream_then_a_resume_where_it_stopped(tree, tmp_path, monkeypatch):
  config = _stream_config(tree, epochs=1, max_steps=1)
  geno = genotype_lib.uniform('Conv', 10, 1)
  run_dir = str(tmp_path / 'run')
  summary = train.fit(config, run_dir, geno)
  assert summary.step == 1 and summary.epoch == round(1 / 3, 4)
  (record,) = [json.loads(r) for r in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  assert np.isfinite(record['train_loss']) and np.isfinite(record['test_loss'])
  assert record['test_error'] in {100 * k / 5 for k in range(6)}  # the 5 val images, once each
  # The checkpoint holds the stream's grain iterator state after step 1 of epoch 0.
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'run' / 'checkpoints'), 1)
  saved = ckpts.data_state(1)
  ckpts.close()
  assert (saved['epoch'], saved['step'], saved['stream_start']) == (0, 1, 0)
  # The resumed run restores that iterator on epoch 0's stream and trains on steps 1
  # and 2: the batches an uninterrupted run trains on (test_a_resumed_stream_...).
  streamed, restored, real = [], [], hd.train_batches

  def spy(split, options, batch_size, seed, epoch, **kwargs):
    streamed.append((batch_size, seed, epoch, kwargs))
    stream = real(split, options, batch_size, seed, epoch, **kwargs)
    set_state = stream.set_state
    stream.set_state = lambda state: (restored.append(state), set_state(state))
    return stream

  monkeypatch.setattr(hd, 'train_batches', spy)
  assert train.fit(_stream_config(tree, epochs=1), run_dir, geno).step == 3
  assert streamed == [(4, 0, 0, {'start': 0, 'stop': 3})]
  assert restored == [saved['iterator']]
  with pytest.raises(ValueError, match='steps_per_call=1'):
    train.check_config(_stream_config(tree, steps_per_call=2))


def test_a_resumed_stream_yields_the_batches_of_an_uninterrupted_one(splits):
  """The feed's state after step 1, handed back as `resume`, continues with steps 1 and 2."""
  feed = hd.TrainFeed(parallel.make_mesh(), splits[0], OPTIONS, 4, seed=0)
  whole = [np.asarray(inputs['image']) for _, inputs in feed.epoch(None, 0, 0, 3, 1)]
  calls = feed.epoch(None, 0, 0, 3, 1)
  first = next(iter(calls))
  state = json.loads(json.dumps(calls.state()))  # as the checkpoint stores it
  assert (state['epoch'], state['step']) == (0, 1)
  np.testing.assert_array_equal(np.asarray(first[1]['image']), whole[0])
  resumed = [np.asarray(i['image']) for _, i in feed.epoch(None, 0, 1, 3, 1, resume=state)]
  assert len(resumed) == 2
  for got, want in zip(resumed, whole[1:], strict=True):
    np.testing.assert_array_equal(got, want)
  # The state of a finished epoch lets the next one start afresh; a mismatch is refused.
  done = feed.epoch(None, 0, 0, 3, 1)
  list(done)
  assert len(list(feed.epoch(None, 1, 0, 3, 1, resume=done.state()))) == 3
  with pytest.raises(ValueError, match='the batch size, the number of processes or the data'):
    feed.epoch(None, 0, 2, 3, 1, resume=state)
