"""Bad input gives one line naming the file, the flag or the fix (issue 12, case 9)."""

import os
import subprocess
import sys

import jax.numpy as jnp
import pytest
from PIL import Image

from bswap import losses
from bswap import main
from bswap import pipeline
from bswap import show
from bswap.data import sources
from bswap.nets import genotype as genotype_lib
from bswap.search import run as search_lib
from configs import cifar_400k


def test_a_genotype_file_that_is_not_utf8_is_named(tmp_path):
  path = tmp_path / 'best.csv'
  path.write_bytes(b'\xff\xfeConv')
  with pytest.raises(ValueError, match=rf'{path} is not UTF-8 text \(byte 0\)'):
    genotype_lib.load(path)


def test_an_unreadable_class_folder_is_not_called_empty(tmp_path, monkeypatch):
  for split in ('train', 'test'):
    for name in ('a', 'b'):
      (tmp_path / 'data' / split / name).mkdir(parents=True)
      Image.new('RGB', (8, 8)).save(tmp_path / 'data' / split / name / '0.png')
  locked, real = str(tmp_path / 'data' / 'train' / 'b'), os.scandir

  def scandir(path='.'):  # what a folder without read permission does (root ignores chmod)
    if os.fspath(path) == locked:
      raise PermissionError(13, 'Permission denied', locked)
    return real(path)

  monkeypatch.setattr(os, 'scandir', scandir)
  with pytest.raises(ValueError, match=rf'cannot read the folder {locked} \(Permission denied\)'):
    sources.load(str(tmp_path / 'data'), 'train', cache_dir=str(tmp_path / 'cache'))


def test_attention_points_that_differ_say_what_to_do():
  stages = [jnp.zeros((1, 4, 4, 2))]
  with pytest.raises(ValueError, match=r'4 attention points, teacher 3: .*architecture'):
    losses.student_loss(jnp.zeros((1, 10)), jnp.zeros(1, int), stages * 4, stages * 3, 1.0)


def test_sixteen_names_under_a_wrn_config_are_refused_not_a_silent_resnet34(tmp_path):
  config = cifar_400k.get_config('smoke')
  config.train.genotype = ','.join(['Conv'] * 16)
  with pytest.raises(ValueError, match=r'gives a resnet34 genotype \(16 block names\).*wrn'):
    pipeline.student_genotype(config, str(tmp_path))


@pytest.mark.parametrize('field,value', [('num_candidates', 0), ('batch_size', 0)])
def test_search_settings_name_their_flag(field, value):
  config = cifar_400k.get_config('smoke')
  config.search[field] = value
  with pytest.raises(ValueError, match=rf'--config.search.{field} must be at least 1; got 0'):
    search_lib.search(config)


def test_a_fisher_batch_larger_than_the_data_names_its_flag():
  config = cifar_400k.get_config('smoke')
  config.search.batch_size = 1000  # 64 synthetic examples
  with pytest.raises(ValueError, match=r'--config.search.batch_size=1000: batch size 1000 must'):
    search_lib.search(config)


def test_show_refuses_image_size_0(capsys):
  assert show.main(['Conv,Conv,Conv', '--image-size', '0']) == 2
  assert 'image_size must be at least 4 pixels; got 0' in capsys.readouterr().err


def test_a_missing_config_file_is_one_line():
  error = OSError('Failed loading config file\n  [Errno 2] No such file or directory: x.py')
  message = main.config_error(error, ['bswap.main', '--config=configs/nothere.py'])
  assert message.startswith('--config=configs/nothere.py: no such config file; give one of')


@pytest.mark.slow
def test_an_unknown_config_field_is_one_line_with_did_you_mean(tmp_path):
  command = [sys.executable, '-m', 'bswap.main', '--config=configs/cifar_200k.py:smoke']
  result = subprocess.run(
    [*command, '--config.train.lrr=1', f'--workdir={tmp_path}'], capture_output=True, text=True
  )
  assert result.returncode == 1
  assert result.stderr.strip() == (
    'error: --config.train.lrr: no such field in configs/cifar_200k.py:smoke; '
    'Did you mean "lr" instead of "lrr"?'
  )
