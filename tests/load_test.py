"""bswap.load_student: a trained network back from any path to its run, checked."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bswap import load
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from tests import fake_runs
from tests.train.helpers import assert_trees_close


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """workdir/student with steps 4 and 8 of a 7-class mixed WRN-16-2."""
  root = tmp_path_factory.mktemp('workdir')
  saved = fake_runs.write_run(root / 'student', fake_runs.MIXED_WRN, steps=(4, 8), num_classes=7)
  return root, saved


def test_every_path_to_a_run_loads_its_latest_step_or_the_step_named(workdir):
  root, saved = workdir
  run = root / 'student'
  for path in (root, run, run / 'checkpoints', f'{run}/'):
    model, variables = load.load_student(str(path))
    assert_trees_close(variables, saved[8], rtol=0, atol=0)
  _, older = load.load_student(str(run / 'checkpoints' / '4'))
  assert_trees_close(older, saved[4], rtol=0, atol=0)
  assert load.locate(str(run / 'checkpoints' / '4')).step == 4
  assert isinstance(model, models.WideResNet) and model.num_classes == 7
  # numpy arrays, so that they serve any device and any exporter.
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(variables))
  assert models.genotype_of(model) == fake_runs.MIXED_WRN


def test_the_loaded_model_computes_the_saved_networks_logits(workdir):
  root, saved = workdir
  model, variables = load.load_student(str(root))
  images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
  logits = lambda m, v: jax.jit(lambda x: m.apply(v, x, train=False)[0])(load.normalize(images))
  expected = logits(models.build(fake_runs.MIXED_WRN, 7), saved[8])
  assert expected.shape == (3, 7)
  np.testing.assert_allclose(logits(model, variables), expected, rtol=1e-6, atol=1e-6)
  fast, _ = load.load_student(str(root), conv_impl='fast')  # same function, other convolutions
  np.testing.assert_allclose(logits(fast, variables), expected, rtol=1e-4, atol=1e-5)


def test_paths_without_a_run_are_clear_errors(workdir, tmp_path):
  root, _ = workdir
  with pytest.raises(ValueError, match=r'no bswap checkpoint in .*empty.*student/checkpoints'):
    load.load_student(str(tmp_path / 'empty'))
  with pytest.raises(ValueError, match=r'has no step 5; it has steps \[4, 8\]'):
    load.load_student(str(root / 'student' / 'checkpoints' / '5'))
  os.makedirs(tmp_path / 'run')
  os.symlink(root / 'student' / 'checkpoints', tmp_path / 'run' / 'checkpoints')
  with pytest.raises(ValueError, match='has checkpoints but no genotype.json'):
    load.load_student(str(tmp_path / 'run'))
  other = genotype_lib.uniform('Conv', 16, 1)  # the same positions, half the width
  (tmp_path / 'run' / 'genotype.json').write_text(genotype_lib.dumps_json(other))
  with pytest.raises(ValueError, match='holds another network than .*genotype.json describes'):
    load.load_student(str(tmp_path / 'run'))


def test_import_bswap_stays_light_and_load_student_is_found_on_first_use():
  code = 'import sys, bswap; print("jax" in sys.modules, "bswap.load" in sys.modules)'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ['False', 'False']
  import bswap

  assert bswap.load_student is load.load_student and bswap.normalize is load.normalize
  with pytest.raises(AttributeError, match='no attribute'):
    _ = bswap.no_such_thing
