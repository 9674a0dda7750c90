"""Run directories written directly, without training: a genotype.json and orbax checkpoints.

For the tests of what reads trained runs (bswap.load, bswap.export, bswap.report): a
checkpoint holds what training saves (step, params, batch_stats, opt_state), with the
batch-norm statistics moved off their initial values so that inference mode matters.
"""

import json
import os

import jax
import numpy as np

from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.train import checkpoint
from bswap.train import loop

# Every family of the menu: standard, grouped, depthwise, bottleneck, grouped bottleneck.
MIXED_WRN = genotype_lib.Genotype(
  ('Conv', 'DConvA4', 'DConv', 'ConvB2', 'G4B2', 'A2B2'), 'wrn', 16, 2
)


def variables(genotype, seed=0, num_classes=10, image_size=None):
  """Initial variables of `genotype` with batch-norm statistics drawn away from (0, 1)."""
  model = models.build(genotype, num_classes)
  image_size = image_size or (8 if genotype.arch == 'wrn' else 32)
  v = jax.device_get(models.init_variables(model, seed, 0, image_size))
  rng = np.random.default_rng(seed)

  def jitter(path, x):
    name = jax.tree_util.keystr(path)
    if 'mean' in name:
      return (x + 0.3 * rng.standard_normal(x.shape)).astype(x.dtype)
    return (x * rng.uniform(0.5, 2.0, x.shape)).astype(x.dtype)

  v['batch_stats'] = jax.tree_util.tree_map_with_path(jitter, v['batch_stats'])
  return v


def write_run(run_dir, genotype, steps=(8,), seed=0, num_classes=10, image_size=None):
  """Checkpoints at `steps` (variables drawn from seed + step) and genotype.json; returns them."""
  saved = {}
  ckpts = checkpoint.Checkpoints(os.path.join(run_dir, checkpoint.SUBDIR), keep=len(steps))
  for step in steps:
    v = variables(genotype, seed + step, num_classes, image_size)
    # Momentum is as large as the parameters, and as noisy.
    momentum = jax.tree.map(lambda x: (0.1 * x[::-1]).astype(x.dtype), v['params'])
    ckpts.save(step, {'step': np.int32(step), **v, 'opt_state': {'momentum': momentum}})
    saved[step] = v
  ckpts.close()
  with open(os.path.join(run_dir, loop.GENOTYPE), 'w') as f:
    f.write(genotype_lib.dumps_json(genotype))
  return saved


def write_metrics(run_dir, test_errors, genotype=None):
  """metrics.jsonl with one epoch per test error (and genotype.json if given)."""
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
    for epoch, error in enumerate(test_errors, start=1):
      f.write(json.dumps({'epoch': epoch, 'step': 4 * epoch, 'test_error': error}) + '\n')
  if genotype is not None:
    with open(os.path.join(run_dir, loop.GENOTYPE), 'w') as f:
      f.write(genotype_lib.dumps_json(genotype))
