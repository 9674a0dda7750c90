"""ResNet-34 end to end at small resolution: the search, and a distilled student step.

The ImageNet configs with the ':smoke' settings (ResNet-34 at 32 px on
synthetic images, 10 classes), narrowed further so that CI compiles little:
a two-type sub-menu, two candidates, batch 4.
"""

import json

import jax
import numpy as np
import pytest

from bswap import pipeline
from bswap.nets import accounting
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.search import run as search
from bswap.train import checkpoint
from bswap.train import loop
from configs import imagenet_3m

MENU = 'G(N),BG(2,M/4)'  # at 32 px and 10 classes, 1.4M-2.6M parameters
BUDGET = 2_000_000  # 13% of draws land within 2.5%


def small_config():
  config = imagenet_3m.get_config('smoke')
  config.search.menu = MENU
  config.search.budget = BUDGET
  config.search.num_candidates = 2
  config.search.batch_size = 4
  config.train.tensorboard = False
  return config


@pytest.fixture(scope='module')
def searched(tmp_path_factory):
  config = small_config()
  workdir = tmp_path_factory.mktemp('imagenet_search')
  best = search.run_search(config, str(workdir))
  return config, workdir, best


@pytest.mark.slow
def test_search_finds_a_resnet34_student_inside_the_budget(searched):
  config, workdir, best = searched
  record = json.loads((workdir / 'best_genotype.json').read_text())
  geno = genotype_lib.from_dict(record)
  assert geno == best.genotype and geno.arch == 'resnet34' and len(geno.blocks) == 16
  assert set(geno.paper_names) <= {'G(N)', 'BG(2,M/4)'}
  count = accounting.count(geno, config.data.image_size, config.model.num_classes)
  assert BUDGET * 0.975 < count.params < BUDGET * 1.025
  assert (record['params'], record['macs']) == (count.params, count.macs)
  assert len(record['block_scores']) == 16
  assert all(np.isfinite(record['block_scores'])) and record['score'] > 0
  # The reference CSV holds the 16 names, and reads back as a ResNet-34.
  assert genotype_lib.load(workdir / 'best_genotype.csv').blocks == geno.blocks
  assert genotype_lib.load(workdir / 'best_genotype.csv').arch == 'resnet34'


def _write_teacher(config, run_dir):
  """A 'trained' teacher: its initial variables saved where a teacher run saves them."""
  model = models.build(loop.teacher_genotype(config), config.model.num_classes)
  variables = models.init_variables(model, 7, 0, config.data.image_size)
  ckpts = checkpoint.Checkpoints(str(run_dir / checkpoint.SUBDIR), keep=1)
  ckpts.save(1, variables)
  ckpts.close()
  return variables


@pytest.mark.slow
def test_one_distilled_student_step_on_the_searched_genotype(searched, tmp_path):
  config, workdir, best = searched
  _write_teacher(config, tmp_path / 'teacher')
  config.stage = 'student'
  config.train.max_steps = 1
  config.train.teacher_checkpoint = str(tmp_path / 'teacher')
  summary = pipeline.run(config, str(workdir))
  assert summary.step == 1
  assert genotype_lib.load(workdir / 'student' / 'genotype.json') == best.genotype
  record = json.loads((workdir / 'student' / 'metrics.jsonl').read_text().splitlines()[-1])
  # Attention transfer on the four stage outputs, weighted by beta = 750.
  assert record['train_at'] > 0
  np.testing.assert_allclose(
    record['train_loss'], record['train_ce'] + 750.0 * record['train_at'], rtol=1e-4
  )
  assert np.isfinite(record['test_loss'])


def test_a_wrn_teacher_checkpoint_for_a_resnet_student_is_a_clear_error(tmp_path):
  config = small_config()
  wrn = models.WideResNet(10, 1, ('Conv',) * 3)
  variables = models.init_variables(wrn, 0, 0, 8)
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'teacher' / checkpoint.SUBDIR), keep=1)
  ckpts.save(1, jax.device_get(variables))
  ckpts.close()
  config.stage = 'student'
  config.train.genotype = ','.join(['DConv'] * 16)
  config.train.teacher_checkpoint = str(tmp_path / 'teacher')
  with pytest.raises(ValueError, match='different network than the teacher'):
    pipeline.run(config, str(tmp_path / 'work'))
