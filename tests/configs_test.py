"""Every config: a documented command, a valid stage, and a small smoke variant."""

import importlib
import pathlib
import re

import numpy as np
import pytest

from bswap import data as data_lib
from bswap import defaults
from bswap import pipeline
from bswap.data import augment
from bswap.nets import accounting
from bswap.nets import arch
from bswap.search import sampler
from bswap.train import loop
from bswap.train import optim

CONFIGS = sorted(p.stem for p in pathlib.Path('configs').glob('*.py') if p.stem[0] != '_')
STUDENTS = {  # config -> (blocks, depth, width) of the full-size student
  'wrn_16_2': ('Conv', 16, 2),
  'wrn_40_1': ('Conv', 40, 1),
  'wrn_16_1': ('Conv', 16, 1),
  'single_gn': ('DConv', 40, 2),
  'single_bg24': ('A4B2', 40, 2),
}


def _module(name):
  return importlib.import_module(f'configs.{name}')


def test_every_config_is_listed():
  assert {'teacher_wrn40_2', 'random_400k', 'cifar_400k', *STUDENTS} <= set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_docstring_gives_the_command_the_smoke_command_and_an_expected_result(name):
  doc = _module(name).__doc__
  assert f'python -m bswap.main --config=configs/{name}.py' in doc
  assert f'--config=configs/{name}.py:smoke' in doc
  # An expected result: a test error (or a rank correlation) from the paper, or (CIFAR-100)
  # a plain statement that none is published.
  assert re.search(r'Expected result.*?(\d\.\d+%|none published)', doc, re.DOTALL), doc


IMAGENET = {'imagenet_3m': 3_000_000, 'imagenet_8m': 8_000_000, 'teacher_resnet34': None}


@pytest.mark.parametrize('name', CONFIGS)
def test_full_variants_train_as_the_paper_says_and_smoke_variants_are_small(name):
  full, smoke = _module(name).get_config(), _module(name).get_config('smoke')
  assert full.stage in defaults.STAGES and smoke.stage == full.stage
  if name in IMAGENET:  # SPEC section 6
    assert (full.train.epochs, full.train.batch_size, full.train.lr) == (100, 256, 0.1)
    assert (full.train.schedule, full.train.lr_decay, full.train.weight_decay) == (
      'imagenet',
      0.1,
      1e-4,
    )
    assert full.train.beta == 750.0 and full.model.arch == 'resnet34'
    assert (full.data.pipeline, full.data.image_size) == ('imagenet', 224)
    assert smoke.data.image_size <= 32
  else:
    assert (full.train.epochs, full.train.batch_size, full.train.lr) == (200, 128, 0.1)
    assert full.train.schedule == 'paper' and full.train.beta == 1000.0
    assert smoke.data.image_size <= 16
  assert smoke.train.batch_size <= 16
  assert smoke.data.source == 'synthetic' and smoke.train.epochs * 4 <= 16
  with pytest.raises(ValueError, match='unknown config variant'):
    _module(name).get_config('big')


def test_imagenet_schedule_drops_tenfold_every_30_epochs():
  config = _module('imagenet_3m').get_config()
  schedule = optim.Schedule.from_config(config.train, steps_per_epoch=10)
  rates = [schedule.at_epoch(e) for e in (0, 29, 30, 59, 60, 90, 99)]
  np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-4, 1e-4], rtol=1e-6)


@pytest.mark.parametrize('name', ['imagenet_3m', 'imagenet_8m'])
def test_imagenet_budgets_are_reachable(name):
  config = _module(name).get_config()
  assert config.search.budget == IMAGENET[name]
  skel = arch.skeleton('resnet34')
  menu = sampler.build_menu(skel)
  assert sampler.acceptance_probability(menu, *sampler.band_limits(IMAGENET[name], 0.025)) > 0.01


@pytest.mark.parametrize('name', sorted(STUDENTS))
def test_fixed_students_are_the_networks_their_names_say(name, tmp_path):
  block, depth, width = STUDENTS[name]
  geno = pipeline.student_genotype(_module(name).get_config(), str(tmp_path))
  assert (set(geno.blocks), geno.depth, geno.width) == ({block}, depth, width)
  smoke = pipeline.student_genotype(_module(name).get_config('smoke'), str(tmp_path))
  assert (set(smoke.blocks), smoke.depth, smoke.width) == ({block}, 10, width)


def test_random_400k_draws_one_genotype_inside_the_budget(tmp_path):
  config = _module('random_400k').get_config()
  geno = pipeline.student_genotype(config, str(tmp_path))
  assert (geno.depth, geno.width) == (40, 2)
  assert 390_000 < accounting.count(geno).params < 410_000
  assert pipeline.student_genotype(config, str(tmp_path)) == geno  # seeded
  config.seed = 1
  assert pipeline.student_genotype(config, str(tmp_path)) != geno


def test_the_imagenet_teacher_is_resnet34_with_standard_blocks():
  geno = loop.teacher_genotype(_module('teacher_resnet34').get_config())
  assert (geno.arch, set(geno.blocks)) == ('resnet34', {'Conv'})
  assert accounting.count(geno).params == 21_797_672


def test_the_teacher_is_wrn_40_2_with_standard_blocks():
  geno = loop.teacher_genotype(_module('teacher_wrn40_2').get_config())
  assert accounting.count(geno).params == 2_243_546


SEARCHES = [name for name in CONFIGS if name.startswith(('cifar_', 'cifar100_', 'imagenet_'))]


@pytest.mark.parametrize('name', CONFIGS)
def test_a_config_carries_only_the_sections_its_stage_reads(name):
  config = _module(name).get_config()
  pipeline_fields = set(data_lib.default_config(config.data.pipeline))
  assert set(config.data) == pipeline_fields  # no other pipeline's fields
  searches = name in SEARCHES or name == 'random_400k' or name.startswith('study_')
  assert ('search' in config) == searches
  if searches:
    assert config.search.metric == 'fisher_potential' and config.search.conv_impl == 'auto'


STUDIES = {'study_200k': 200_000, 'study_400k': 400_000, 'study_800k': 800_000}


@pytest.mark.parametrize('name', sorted(STUDIES))
def test_study_configs_share_one_template_and_their_cpu_variant_is_small(name):
  module = _module(name)
  assert module.__doc__ == defaults.study_doc(name, STUDIES[name])
  full, cpu = module.get_config(), module.get_config('cpu')
  assert (full.stage, full.search.budget, full.study.num_random) == ('study', STUDIES[name], 100)
  assert full.study.epochs == full.train.epochs == 200 and full.study.ks == '1,10,100'
  assert cpu.data.source == 'cifar10' and cpu.data.train_examples < 10_000
  assert cpu.study.epochs == cpu.train.epochs <= 3 and cpu.model.depth <= 16
  skel = arch.skeleton('wrn', cpu.model.depth, cpu.model.width, cpu.data.image_size)
  menu = sampler.build_menu(skel)
  limits = sampler.band_limits(cpu.search.budget, cpu.search.band)
  assert sampler.acceptance_probability(menu, *limits) > 0.01


def test_the_sensitivity_study_substitutes_every_block_of_the_teacher():
  config = _module('study_sensitivity').get_config()
  assert config.study.sensitivity and config.study.substitute == 'G(N)'
  assert (config.model.depth, config.model.width) == (40, 2)


def test_the_three_cifar_docstrings_come_from_one_template():
  docs = {name: _module(name).__doc__ for name in ('cifar_200k', 'cifar_400k', 'cifar_800k')}
  for name, doc in docs.items():
    budget = int(name.removeprefix('cifar_').removesuffix('k')) * 1000
    assert doc == defaults.cifar_doc(name, budget)
  assert '-0.685' in docs['cifar_400k'] and '4.21%' in docs['cifar_400k']


@pytest.mark.parametrize('name', ['cifar100_400k', 'teacher_wrn40_2_cifar100'])
def test_cifar100_configs_read_cifar100_with_its_statistics_and_a_100_way_head(name):
  for config in (_module(name).get_config(), _module(name).get_config('smoke')):
    assert config.model.num_classes == 100
    assert config.data.mean == augment.CIFAR100.mean and config.data.std == augment.CIFAR100.std
  assert _module(name).get_config().data.source == 'cifar100'
  cifar10 = _module(name.replace('cifar100_', 'cifar_').replace('_cifar100', '')).get_config()
  assert cifar10.data.source == 'cifar10' and cifar10.model.num_classes == 10
  assert cifar10.data.mean == augment.CIFAR10.mean
