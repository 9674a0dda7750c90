"""python -m bswap.prepare_tfds SOURCE: a tensorflow-datasets dataset in ArrayRecord, no TensorFlow.

`tfds build` needs TensorFlow, and writes TFRecord by default, which
`tfds.data_source` (how bswap reads tfds, without TensorFlow) cannot read.
tensorflow-datasets 4.9.10 can itself write ArrayRecord without TensorFlow as
long as every image it is given is already encoded (it needs TensorFlow only
to encode pixel arrays, and its own ImageNet and CIFAR builders use it to read
their archives and fix a few images). This builder gives it encoded files:

  SOURCE a directory of class folders, train/<class>/<image> and test/<class>/
         (or val/, validation/): splits 'train' and 'test' (or 'validation');
         JPEGs in RGB are stored as they are, other images as RGB PNG;
  SOURCE a directory holding the official ILSVRC2012_img_train.tar and
         ILSVRC2012_img_val.tar: 'imagenet2012' version 5.1.0 with the features,
         class order and validation labels of tfds's own imagenet2012 (labels
         from the lists tfds ships), so `tfds:imagenet2012` reads it.

It writes <data dir>/<name>/<version>/ (data dir: --data-dir, else
$TFDS_DATA_DIR, else ~/tensorflow_datasets); then train with
--config.data.source=tfds:<name> (with TFDS_DATA_DIR set alike). Needs the
`tfds` extra: pip install 'bswap[tfds]'.
"""

from __future__ import annotations

import argparse
import io
import os
import posixpath
import re
import sys
import tarfile
import types

from PIL import Image

from bswap.data import listing
from bswap.data import sources

IMAGENET = 'imagenet2012'
IMAGENET_VERSION = '5.1.0'  # tfds's imagenet2012 version: its split and feature layout
IMAGENET_TARS = {'train': 'ILSVRC2012_img_train.tar', 'validation': 'ILSVRC2012_img_val.tar'}
_TFDS_SPLIT = {'val': 'validation', 'validation': 'validation', 'test': 'test'}


def _tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ValueError(
      f"python -m bswap.prepare_tfds needs the 'tfds' extra ({e}): pip install 'bswap[tfds]' "
      '(tensorflow-datasets and array-record; TensorFlow is not needed)'
    ) from e
  return tfds


# ----------------------------------------------------------------------------
# Encoded images.


def rgb_bytes(data: bytes, name: str, where: str) -> bytes:
  """The file as it is if it is an RGB JPEG, else its pixels as RGB PNG.

  tfds and bswap decode either; RGB keeps every reader's channels right
  (grayscale, palette, CMYK and alpha images become RGB, as bswap's loaders do).
  """
  try:
    with Image.open(io.BytesIO(data)) as image:  # reads the header only
      if image.format == 'JPEG' and image.mode == 'RGB':
        return data
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f'{where}: cannot decode {name} ({e}); replace or delete that file') from e
  out = io.BytesIO()
  sources.open_rgb(data, name, where).save(out, format='PNG')
  return out.getvalue()


# ----------------------------------------------------------------------------
# What to write: (split, key, image bytes, label, file name) from a source.


def class_folder_examples(root: str):
  """The splits, class names and an example generator of a class-folder directory."""
  train = listing.open_split(root, 'train')
  held_out = listing.open_split(root, 'eval')
  folder = held_out.files[0].split('/')[0]
  splits = {'train': train, _TFDS_SPLIT[folder]: held_out}

  def examples(split: str):
    listed = splits[split]
    for name, label in zip(listed.files, listed.labels):
      with open(os.path.join(root, *name.split('/')), 'rb') as f:
        data = f.read()
      yield name, {'image': rgb_bytes(data, name, root), 'label': int(label), 'file_name': name}

  return list(splits), train.class_names, examples


def imagenet_examples(manual_dir: str, tfds):
  """The splits, class names and an example generator of the official ImageNet tars."""
  base = tfds.core.tfds_path('datasets/imagenet2012')
  synsets = base.joinpath('labels.txt').read_text().split()
  validation_labels = base.joinpath('validation_labels.txt').read_text().split()
  splits = [s for s, tar in IMAGENET_TARS.items() if os.path.exists(_path(manual_dir, tar))]
  if not splits:
    raise ValueError(f'{manual_dir} holds neither {" nor ".join(IMAGENET_TARS.values())}')

  def examples(split: str):
    path = _path(manual_dir, IMAGENET_TARS[split])
    if split == 'validation':
      # tfds's labels are in the order of the sorted file names.
      with tarfile.open(path) as tar:
        names = sorted(m.name for m in tar if m.isfile())
      labels = dict(zip(names, validation_labels))
      for name, data in _tar_files(path):
        yield name, _imagenet_record(name, data, labels[name], path)
      return
    for inner_name, inner in _tar_files(path):  # one tar per class, named by its synset
      synset = posixpath.basename(inner_name).removesuffix('.tar')
      for name, data in _tar_files(io.BytesIO(inner)):
        yield name, _imagenet_record(posixpath.basename(name), data, synset, path)

  return splits, synsets, examples


def _path(directory: str, name: str) -> str:
  return os.path.join(directory, name)


def _tar_files(path_or_file):
  """(name, bytes) of the files of a tar, in archive order, read in one pass."""
  kwargs = {'fileobj': path_or_file} if isinstance(path_or_file, io.BytesIO) else {}
  with tarfile.open(None if kwargs else path_or_file, mode='r|*', **kwargs) as tar:
    for member in tar:
      if member.isfile():
        yield member.name, tar.extractfile(member).read()


def _imagenet_record(name: str, data: bytes, synset: str, where: str) -> dict:
  # A few ImageNet 'JPEG's are CMYK, one is a PNG: stored as RGB, as tfds's builder does.
  return {'image': rgb_bytes(data, name, where), 'label': synset, 'file_name': name}


# ----------------------------------------------------------------------------
# The tfds builder.


def builder_class(name: str, version: str, class_names, splits, examples, tfds):
  """A GeneratorBasedBuilder named `name` (not registered with tfds) over `examples`."""

  def body(ns):
    ns['name'] = name
    ns['VERSION'] = tfds.core.Version(version)
    ns['RELEASE_NOTES'] = {version: 'Written by python -m bswap.prepare_tfds.'}

    def _info(self):
      label = tfds.features.ClassLabel(names=list(class_names))
      features = {
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg')
        if name == IMAGENET
        else tfds.features.Image(shape=(None, None, 3)),
        'label': label,
        'file_name': tfds.features.Text(),
      }
      return tfds.core.DatasetInfo(
        builder=self,
        description=f'{name}, written by python -m bswap.prepare_tfds',
        features=tfds.features.FeaturesDict(features),
        supervised_keys=('image', 'label'),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split):
      yield from examples(split)

    ns.update(_info=_info, _split_generators=_split_generators)
    ns['_generate_examples'] = _generate_examples

  bases = (tfds.core.GeneratorBasedBuilder,)
  return types.new_class(_class_name(name), bases, {'skip_registration': True}, body)


def _class_name(name: str) -> str:
  return ''.join(part.capitalize() for part in re.split(r'[^0-9a-zA-Z]+', name) if part) or 'Data'


def default_name(source: str) -> str:
  """IMAGENET for the official tars, else the folder's name in tfds's style (snake case)."""
  if os.path.exists(_path(source, IMAGENET_TARS['train'])):
    return IMAGENET
  stem = os.path.basename(os.path.abspath(source).rstrip(os.sep))
  return re.sub(r'[^0-9a-z]+', '_', stem.lower()).strip('_') or 'data'


def prepare(source: str, name: str | None = None, data_dir: str | None = None, version=None):
  """Writes `source` as the ArrayRecord dataset `name`; returns its directory."""
  tfds = _tfds()
  source = os.path.abspath(os.path.expanduser(source))
  if not os.path.isdir(source):
    raise ValueError(f'{source} is not a directory of class folders or of the ImageNet tars')
  name = name or default_name(source)
  if not re.fullmatch(r'[a-z][a-z0-9_]*', name):
    raise ValueError(f'--name {name!r}: tfds names are lower case letters, digits and _')
  if os.path.exists(_path(source, IMAGENET_TARS['train'])) or os.path.exists(
    _path(source, IMAGENET_TARS['validation'])
  ):
    splits, class_names, examples = imagenet_examples(source, tfds)
    version = version or IMAGENET_VERSION
  else:
    splits, class_names, examples = class_folder_examples(source)
    version = version or '1.0.0'
  cls = builder_class(name, version, class_names, splits, examples, tfds)
  builder = cls(data_dir=data_dir, file_format='array_record')
  if builder.is_prepared() if hasattr(builder, 'is_prepared') else False:
    raise ValueError(f'{builder.data_dir} exists already; delete it or choose another --name')
  builder.download_and_prepare()
  return str(builder.data_dir)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m bswap.prepare_tfds', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('source', help='class folders, or a folder holding the ILSVRC2012 tars')
  parser.add_argument('--name', help='the dataset name (default: the folder name, or imagenet2012)')
  parser.add_argument('--data-dir', help='default: $TFDS_DATA_DIR, else ~/tensorflow_datasets')
  parser.add_argument('--version', help='default: 1.0.0 (imagenet2012: 5.1.0)')
  args = parser.parse_args(argv)
  try:
    written = prepare(args.source, args.name, args.data_dir, args.version)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  name = os.path.basename(os.path.dirname(written))
  print(f'Wrote {written}. Train with --config.data.source=tfds:{name}', end='')
  data_dir = os.path.dirname(os.path.dirname(written))
  print(f' and TFDS_DATA_DIR={data_dir}' if args.data_dir else '')
  return 0


if __name__ == '__main__':
  sys.exit(main())
