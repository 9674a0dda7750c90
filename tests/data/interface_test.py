"""bswap.data's interface: `open_data` dispatch, each pipeline's config, the class-count check."""

import types

import ml_collections
import pytest

from bswap import data as data_lib
from bswap import defaults
from bswap import pipeline
from bswap.data import resident
from bswap.data import streamed
from bswap.search import run as search


def _config(pipeline_name, **data):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = ml_collections.ConfigDict({'num_classes': 10})
  config.data = data_lib.default_config(pipeline_name)
  config.data.update(source='synthetic', image_size=8, synthetic_size=16)
  if 'cutout' in config.data:  # SPEC's sizes scaled to 8 px, as the smoke configs do
    config.data.update(crop_pad=1, cutout=4)
  config.data.update(data)
  return config


def test_every_registered_pipeline_is_a_module_with_a_data_class_a_config_and_a_summary():
  assert data_lib.PIPELINES == {'cifar': resident, 'imagenet': streamed}
  for name, module in data_lib.PIPELINES.items():
    assert module.Data.pipeline == name
    assert isinstance(module.SUMMARY, str) and module.SUMMARY


@pytest.mark.parametrize('name, cls', [('cifar', resident.Data), ('imagenet', streamed.Data)])
def test_open_data_returns_the_pipelines_data_without_reading_a_split(name, cls):
  data = data_lib.open_data(_config(name))
  assert type(data) is cls and data.pipeline == name
  assert data._splits == {}  # nothing listed or decoded yet


@pytest.mark.parametrize('name', sorted(data_lib.PIPELINES))
def test_default_config_carries_exactly_the_pipelines_fields(name):
  config = data_lib.default_config(name)
  module = data_lib.PIPELINES[name]
  assert set(config) == set(module.default_config()) | {'pipeline'}
  assert config.pipeline == name
  assert data_lib.default_config().pipeline == 'cifar'


@pytest.mark.parametrize(
  'name, field',
  [(p, f) for p in sorted(data_lib.PIPELINES) for f in data_lib.PIPELINES[p].default_config()],
)
def test_the_pipeline_reads_every_field_of_its_config(name, field):
  # A field that nothing reads is dead configuration: without it, opening the
  # data would still work.
  config = _config(name)
  del config.data[field]
  with pytest.raises((AttributeError, KeyError)):
    data_lib.open_data(config)


def test_the_two_pipelines_configs_keep_their_own_fields():
  cifar, imagenet = data_lib.default_config('cifar'), data_lib.default_config('imagenet')
  assert {'crop_pad', 'cutout', 'cache_dir'} <= set(cifar)
  assert not {'crop_pad', 'cutout'} & set(imagenet)
  assert {'crop_area', 'eval_resize_ratio', 'workers'} <= set(imagenet)
  assert not {'crop_area', 'workers'} & set(cifar)
  assert cifar.mean != imagenet.mean  # each dataset's normalisation statistics


def test_an_unknown_pipeline_lists_the_valid_ones():
  config = _config('cifar')
  config.data.pipeline = 'coco'
  with pytest.raises(ValueError, match=r"pipeline='coco' is unknown; choose 'cifar' .*'imagenet'"):
    data_lib.open_data(config)
  with pytest.raises(ValueError, match="pipeline='coco' is unknown"):
    data_lib.default_config('coco')


def test_the_search_and_training_refuse_an_unknown_pipeline(tmp_path):
  config = defaults.smoke(defaults.cifar_config(50_000))
  config.data.pipeline = 'coco'
  with pytest.raises(ValueError, match="pipeline='coco' is unknown"):
    search.search(config)
  config.stage = 'teacher'
  with pytest.raises(ValueError, match="pipeline='coco' is unknown"):
    pipeline.run(config, str(tmp_path))


def test_check_num_classes_names_the_flag_and_the_datas_count():
  config = _config('cifar')
  data_lib.check_num_classes(types.SimpleNamespace(num_classes=10), config)
  with pytest.raises(ValueError) as error:
    data_lib.check_num_classes(types.SimpleNamespace(num_classes=3), config)
  message = str(error.value)
  assert 'synthetic has 3 classes but config.model.num_classes is 10' in message
  assert message.endswith('set --config.model.num_classes=3')


def test_a_cutout_that_blanks_every_image_is_refused():
  with pytest.raises(ValueError, match=r'--config.data.cutout=16 blanks every 8 px image whole'):
    data_lib.open_data(_config('cifar', cutout=16))
  assert data_lib.open_data(_config('cifar', cutout=15)).cutout == 15  # some pixels survive


def test_the_search_refuses_data_with_another_class_count(tree):
  config = defaults.smoke(defaults.cifar_config(50_000))
  config.data = data_lib.default_config('imagenet')
  config.data.update(source=str(tree), image_size=8)  # 3 class folders; the model has 10
  with pytest.raises(ValueError, match=r'has 3 classes .*--config\.model\.num_classes=3'):
    search.search(config)
