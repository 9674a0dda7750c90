"""Shared by the training tests: a tiny config, and reading a run's variables back."""

import jax
import numpy as np

from bswap import defaults
from bswap import parallel
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.train import checkpoint

TINY = genotype_lib.uniform('Conv', 10, 1)


def tiny_config(**train_overrides):
  """WRN-10-1 teacher at 8 px: 32 synthetic examples, 4 steps of 8 per epoch, 2 epochs."""
  config = defaults.smoke(defaults.cifar_config(50_000))
  config.model.width = 1
  config.data.synthetic_size = 32
  config.train.batch_size = 8
  config.train.eval_batch_size = 8
  config.train.genotype = 'Conv,Conv,Conv'
  config.train.genotype_width = 1
  config.train.tensorboard = False
  config.train.update(train_overrides)
  return config


def saved_variables(run_dir, genotype=TINY):
  model = models.WideResNet(genotype.depth, genotype.width, genotype.blocks)
  template = jax.eval_shape(lambda: models.init_variables(model, 0, 0, 8))
  variables = checkpoint.load_variables(str(run_dir), template, parallel.make_mesh())
  return jax.device_get(variables)


def assert_trees_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)
