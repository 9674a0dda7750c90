"""A trained network back from its run directory: `bswap.load_student(path)`.

  import bswap
  model, variables = bswap.load_student('workdir/cifar_400k/student')
  logits, _ = model.apply(variables, bswap.normalize(images), train=False)

`path` is a run directory (`student/` or `teacher/`: checkpoints/ and
genotype.json), the workdir above it (its student, else its teacher), the
run's checkpoints/ directory, or one step's checkpoints/<step>/ (that step;
otherwise the latest). The network is the run's genotype.json, its classes
read from the checkpoint's head, so no config is needed. `images` are uint8
(N, H, W, 3); `bswap.normalize` uses CIFAR-10's statistics unless given
others (`bswap.data.augment.CIFAR100`, `IMAGENET`, or the run's
config.data.mean and .std).
"""

from __future__ import annotations

import dataclasses
import os
import re

import flax.linen as nn
import jax
import orbax.checkpoint as ocp
from etils import epath

from bswap import files
from bswap import parallel
from bswap.data import augment
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.train import checkpoint
from bswap.train import loop

RUNS = ('student', 'teacher')  # run directories a workdir may hold, in order of preference
_STEP = re.compile(r'\d+')


@dataclasses.dataclass(frozen=True)
class Located:
  """Where a trained network is: its run directory, checkpoint directory and step."""

  run_dir: str
  checkpoints: str
  step: int
  genotype: genotype_lib.Genotype


def _is_dir(path: str) -> bool:
  return epath.Path(path).is_dir()


def _manager(directory: str, **kwargs) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  return ocp.CheckpointManager(directory, options=options, **kwargs)


def _steps(directory: str) -> list[int]:
  """The whole (committed) steps saved in a checkpoint directory."""
  if not _is_dir(directory):
    return []
  manager = _manager(directory)
  steps = list(manager.all_steps())
  manager.close()
  return sorted(steps)


def locate(path: str) -> Located:
  """The run `path` names (see the module doc), or a ValueError saying what was looked for."""
  path = os.path.expanduser(str(path)).rstrip('/') if '://' not in str(path) else str(path)
  step = None
  base = os.path.basename(path)
  if _STEP.fullmatch(base) and os.path.basename(os.path.dirname(path)) == checkpoint.SUBDIR:
    step, path = int(base), os.path.dirname(os.path.dirname(path))  # checkpoints/<step>
  elif base == checkpoint.SUBDIR:
    path = os.path.dirname(path)
  candidates = [path] + [os.path.join(path, run) for run in RUNS]
  for run_dir in candidates if step is None else [path]:
    ckpts = os.path.join(run_dir, checkpoint.SUBDIR)
    steps = _steps(ckpts)
    if not steps:
      continue
    if step is not None and step not in steps:
      raise ValueError(f'{ckpts} has no step {step}; it has steps {steps}')
    geno_file = os.path.join(run_dir, loop.GENOTYPE)
    if not files.exists(geno_file):
      raise ValueError(f'{run_dir} has checkpoints but no {loop.GENOTYPE}: not a bswap run')
    return Located(
      run_dir, ckpts, steps[-1] if step is None else step, genotype_lib.load(geno_file)
    )
  looked = ', '.join(os.path.join(c, checkpoint.SUBDIR) for c in candidates)
  raise ValueError(
    f'no bswap checkpoint in {path} (looked in {looked}); '
    'give a run directory such as workdir/cifar_400k/student, its workdir, or its checkpoints/'
  )


def _metadata(where: Located, manager) -> dict:
  tree = manager.item_metadata(where.step).tree
  if 'params' not in tree or 'batch_stats' not in tree:
    raise ValueError(f'{where.checkpoints} step {where.step} is not a bswap training checkpoint')
  return tree


def read_variables(where: Located, mesh=None) -> dict:
  """{'params', 'batch_stats'} of the step `where` names: numpy arrays, or replicated on `mesh`."""
  checkpoint.quiet_orbax()
  manager = _manager(where.checkpoints, item_handlers=ocp.StandardCheckpointHandler())
  tree = _metadata(where, manager)
  target = mesh or parallel.make_mesh(jax.local_devices()[:1])
  state = manager.restore(
    where.step, args=ocp.args.StandardRestore(parallel.abstract_replicated(tree, target))
  )
  manager.close()
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  return variables if mesh is not None else jax.device_get(variables)


def checkpoint_classes(where: Located) -> int:
  """The classes of the network saved at `where`, from the checkpoint's metadata alone."""
  checkpoint.quiet_orbax()
  manager = _manager(where.checkpoints, item_handlers=ocp.StandardCheckpointHandler())
  tree = _metadata(where, manager)
  manager.close()
  return num_classes(tree)


def num_classes(variables: dict) -> int:
  """The classes of the network's head: the width of its last dense layer."""
  return int(variables['params']['head']['dense']['bias'].shape[0])


def build(where: Located, variables: dict, conv_impl: str = 'xla') -> nn.Module:
  """The run's network, checked against the variables' shapes."""
  model = models.build(where.genotype, num_classes(variables), conv_impl)
  expected = jax.eval_shape(lambda: models.init_variables(model, 0, 0, 32))
  shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
  if shapes(expected) != shapes(variables):
    raise ValueError(
      f'{where.checkpoints} step {where.step} holds another network than '
      f'{os.path.join(where.run_dir, loop.GENOTYPE)} describes'
    )
  return model


def load_student(path: str, conv_impl: str = 'xla') -> tuple[nn.Module, dict]:
  """(model, variables) of a trained run (see the module doc): variables as numpy arrays.

  conv_impl 'fast' runs grouped convolutions faster on CPUs (the same function).
  """
  where = locate(path)
  variables = read_variables(where)
  return build(where, variables, conv_impl), variables


def normalize(images, stats=None):
  """uint8 images (N, H, W, 3) -> the float32 input of a network (default: CIFAR-10's stats)."""
  return augment.normalize(images, stats or augment.CIFAR10)
