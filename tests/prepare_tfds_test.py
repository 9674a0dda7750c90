"""python -m bswap.prepare_tfds: ArrayRecord datasets written and read back without TensorFlow.

Skipped without the 'tfds' extra (tensorflow-datasets and array-record).
"""

import io
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from bswap import prepare_tfds
from bswap.data import listing
from bswap.data import sources
from tests.data import folders

tfds = pytest.importorskip('tensorflow_datasets')
pytest.importorskip('array_record')


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
  """tfds's default data directory (what $TFDS_DATA_DIR sets), here a temporary one."""
  monkeypatch.setattr(tfds.core.constants, 'DATA_DIR', str(tmp_path / 'tensorflow_datasets'))
  return tmp_path / 'tensorflow_datasets'


def _pixels(record_image):
  image = record_image.item() if isinstance(record_image, np.ndarray) else record_image
  return np.asarray(sources.open_rgb(bytes(image), 'record', 'test'))


def _no_tensorflow():
  assert sys.modules.get('tensorflow') is None, 'TensorFlow was imported'


def test_class_folders_round_trip_through_tfds_and_the_streamed_pipeline(tmp_path, data_dir):
  root = folders.make_tree(tmp_path / 'My-Images')  # sizes and modes (gray, RGBA, CMYK) differ
  assert prepare_tfds.main([str(root)]) == 0
  assert (data_dir / 'my_images' / '1.0.0').is_dir()
  skip = {'image': tfds.decode.SkipDecoding()}
  for split, folder in (('train', 'train'), ('validation', 'eval')):
    listed = listing.open_split(str(root), folder)
    records = tfds.data_source('my_images', split=split, decoders=skip)
    assert len(records) == len(listed)
    by_name = {bytes(r['file_name']).decode(): r for r in records}
    assert sorted(by_name) == sorted(listed.files)
    for i, name in enumerate(listed.files):
      image, label = listed.load(i)
      assert int(by_name[name]['label']) == label
      np.testing.assert_array_equal(_pixels(by_name[name]['image']), np.asarray(image))
  streamed = listing.open_split('tfds:my_images', 'eval')
  assert streamed.class_names == listing.open_split(str(root), 'eval').class_names
  assert {streamed.load(i)[1] for i in range(len(streamed))} == {0, 1, 2}
  _no_tensorflow()


def test_an_rgb_jpeg_is_stored_as_it_is_and_other_images_as_rgb_png():
  jpeg, gray = io.BytesIO(), io.BytesIO()
  Image.new('RGB', (4, 4), (9, 99, 199)).save(jpeg, 'JPEG')
  Image.new('L', (4, 4), 77).save(gray, 'JPEG')
  assert prepare_tfds.rgb_bytes(jpeg.getvalue(), 'a.jpg', 'here') == jpeg.getvalue()
  converted = prepare_tfds.rgb_bytes(gray.getvalue(), 'b.jpg', 'here')
  with Image.open(io.BytesIO(converted)) as image:
    assert (image.format, image.mode) == ('PNG', 'RGB')
  with pytest.raises(ValueError, match='here: cannot decode c.jpg'):
    prepare_tfds.rgb_bytes(b'not an image', 'c.jpg', 'here')


def test_the_in_memory_pipeline_reads_the_same_arrays_as_from_the_folders_then_its_cache(
  tmp_path, data_dir, monkeypatch
):
  root = tmp_path / 'tiny'
  for split, count in (('train', 3), ('test', 1)):
    for label, name in enumerate(('cat', 'dog')):
      for i in range(count):
        folders.write_image(root / split / name / f'{i}.png', 8, 8, 'RGB', 10 * label + i)
  assert prepare_tfds.main([str(root), '--name', 'tiny']) == 0
  cache = str(tmp_path / 'cache')
  for split in ('train', 'test'):
    direct = sources.load(str(root), split, cache_dir=cache)
    via_tfds = sources.load('tfds:tiny', split, cache_dir=cache)
    assert via_tfds.class_names == direct.class_names == ('cat', 'dog')
    order = lambda ds: sorted(range(len(ds)), key=lambda i: (ds.labels[i], ds.images[i].tobytes()))
    np.testing.assert_array_equal(via_tfds.images[order(via_tfds)], direct.images[order(direct)])
    np.testing.assert_array_equal(via_tfds.labels[order(via_tfds)], direct.labels[order(direct)])
  monkeypatch.setattr(sources, '_from_records', None)  # decoded once: the cache serves now
  assert len(sources.load('tfds:tiny', 'train', cache_dir=cache)) == 6
  _no_tensorflow()


def _jpeg(seed, mode='RGB'):
  pixels = np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).convert(mode).save(out, 'JPEG')
  return out.getvalue()


def _tar(files):
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode='w') as tar:
    for name, data in files:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return out.getvalue()


def test_the_official_imagenet_tars_become_tfds_imagenet2012(tmp_path, data_dir):
  manual = tmp_path / 'manual'
  manual.mkdir()
  synsets = ('n01440764', 'n01443537')  # classes 0 and 1 of tfds's labels.txt
  inner = [
    (f'{s}.tar', _tar([(f'{s}_{i}.JPEG', _jpeg(10 * k + i, 'CMYK' if k else 'RGB'))]))
    for k, s in enumerate(synsets)
    for i in range(1)
  ]
  (manual / 'ILSVRC2012_img_train.tar').write_bytes(_tar(inner))
  val = [(f'ILSVRC2012_val_0000000{i}.JPEG', _jpeg(100 + i)) for i in (3, 1, 2)]  # unsorted
  (manual / 'ILSVRC2012_img_val.tar').write_bytes(_tar(val))
  assert prepare_tfds.main([str(manual)]) == 0
  # tfds's own imagenet2012 builder reads it: its features, classes and version.
  train = tfds.data_source('imagenet2012', split='train')
  assert sorted(int(r['label']) for r in train) == [0, 1]
  assert all(r['image'].shape == (20, 30, 3) for r in train)  # the CMYK one is RGB now
  validation = {
    bytes(r['file_name']).decode(): int(r['label'])
    for r in tfds.data_source('imagenet2012', split='validation')
  }
  labels = tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt').read_text().split()
  names = tfds.features.ClassLabel(
    names_file=tfds.core.tfds_path('datasets/imagenet2012/labels.txt')
  ).names
  for i in (1, 2, 3):
    assert names[validation[f'ILSVRC2012_val_0000000{i}.JPEG']] == labels[i - 1]
  _no_tensorflow()


def test_bad_sources_and_a_second_run_are_clear_errors(tmp_path, data_dir, capsys):
  assert prepare_tfds.main([str(tmp_path / 'missing')]) == 2
  assert 'is not a directory' in capsys.readouterr().err
  root = folders.make_tree(tmp_path / 'imgs')
  assert prepare_tfds.main([str(root), '--name', 'Bad-Name']) == 2
  assert 'lower case letters' in capsys.readouterr().err
  assert prepare_tfds.main([str(root)]) == 0
  assert prepare_tfds.main([str(root)]) == 2
  assert 'exists already' in capsys.readouterr().err
