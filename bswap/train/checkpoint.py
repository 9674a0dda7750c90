"""Checkpoints with orbax: save the training state, resume it, read a teacher.

A run keeps its checkpoints in `<run dir>/checkpoints/<step>/`. Orbax writes a
step to a temporary directory and renames it (or, on GCS, writes a commit
marker) only when it is whole, so a run killed in the middle of a save leaves
the previous checkpoint intact and the half-written one is never restored.
Saves are asynchronous: `close()` waits for the last one.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from bswap import logs
from bswap import parallel

SUBDIR = 'checkpoints'
DATA_KEY = 'data_iterator'  # a step's custom metadata: the input stream's state


def quiet_orbax() -> None:
  """Drops orbax's INFO lines (dozens per save) from the log; its warnings stay (bswap.logs)."""
  logs.quiet_noise()


def _absolute(path: str) -> str:
  """Orbax wants absolute paths; leave URLs such as gs://bucket/dir alone."""
  return path if '://' in path else os.path.abspath(os.path.expanduser(path))


class Checkpoints:
  """The checkpoints of one run: keep the last `keep`, restore the latest."""

  def __init__(self, directory: str, keep: int):
    if keep < 1:
      raise ValueError(f'keep_checkpoints must be at least 1; got {keep}')
    quiet_orbax()
    self.directory = _absolute(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def last_good(self) -> str:
    """A sentence naming the checkpoint a rerun resumes from (or that there is none)."""
    step = self.latest_step()
    if step is None:
      return f'No checkpoint has been saved in {self.directory} yet.'
    return f'The last good checkpoint is step {step} in {self.directory}.'

  def restore_latest(self, target):
    """The latest saved state shaped and sharded like `target`, or None if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
    )
    logging.info('Restoring step %d from %s', step, self.directory)
    state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    bad = non_finite_leaves(state)
    if bad:  # written by an older bswap, which saved without checking
      raise ValueError(
        f'checkpoint step {step} in {self.directory} holds non-finite values ({bad[0]} and '
        f'{len(bad) - 1} more): delete {os.path.join(self.directory, str(step))} to resume from '
        'the checkpoint before it, and lower --config.train.lr'
      )
    return state

  def save(self, step: int, state, data: dict | None = None) -> None:
    """Starts saving `state` as `step` (asynchronous); a step saved already is skipped.

    A state with a NaN or an infinity is never saved: a ValueError says so.
    `data`, JSON (the input stream's iterator state), goes in the step's
    metadata, beside the state rather than in it: the state item stays what
    evaluation, export and teachers read.
    """
    if step in self.manager.all_steps():
      return
    bad = non_finite_leaves(state)
    if bad:
      raise ValueError(
        f'the state after step {step} holds non-finite values ({len(bad)} arrays, e.g. '
        f'{bad[0]}): not saved, stopping. {self.last_good()} Lower --config.train.lr, or '
        'check the data and the teacher checkpoint'
      )
    custom = {DATA_KEY: data} if data is not None else None
    self.manager.save(step, args=ocp.args.StandardSave(state), custom_metadata=custom)

  def data_state(self, step: int) -> dict | None:
    """The `data` saved with `step`, or None (none saved, or a checkpoint from before)."""
    metadata = self.manager.metadata(step)
    custom = getattr(metadata, 'custom_metadata', None) or {}
    return custom.get(DATA_KEY)

  def reached_preemption(self, step: int) -> bool:
    """True once the job has been told it will be preempted (TPU VMs; all hosts agree)."""
    return self.manager.reached_preemption(step)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


@jax.jit
def _finite_flags(leaves):
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def non_finite_leaves(tree) -> list[str]:
  """The paths of the floating-point arrays of `tree` holding a NaN or an infinity."""
  pairs = [
    (path, x)
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  if not pairs:
    return []
  flags = np.asarray(jax.device_get(_finite_flags([x for _, x in pairs])))
  return [jax.tree_util.keystr(path) for (path, _), ok in zip(pairs, flags) if not ok]


def find_run_checkpoints(path: str, run: str = 'teacher') -> str:
  """The checkpoint directory `path` means: itself, path/checkpoints or path/run/checkpoints.

  So a student may be pointed at the teacher's workdir, its run directory or
  its checkpoint directory alike.
  """
  path = _absolute(path)
  for candidate in (path, os.path.join(path, SUBDIR), os.path.join(path, run, SUBDIR)):
    if _latest_step(candidate) is not None:
      return candidate
  raise ValueError(
    f'no checkpoint found in {path} (nor in {path}/{SUBDIR} or {path}/{run}/{SUBDIR}); '
    f'point --config.train.teacher_checkpoint at the teacher run, e.g. '
    f'workdir/teacher_wrn40_2/teacher/{SUBDIR}, or train one with --config.stage=teacher'
  )


def _read_only(directory: str, **kwargs) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  return ocp.CheckpointManager(directory, options=options, **kwargs)


def _latest_step(directory: str) -> int | None:
  if not epath.Path(directory).is_dir():
    return None
  manager = _read_only(directory)
  step = manager.latest_step()
  manager.close()
  return step


def load_variables(path: str, template, mesh) -> dict:
  """{'params', 'batch_stats'} of the latest checkpoint under `path`, replicated on `mesh`.

  Args:
    path: a run's checkpoint directory, or a directory above it (`find_run_checkpoints`).
    template: {'params', 'batch_stats'} of the expected network (arrays or shapes);
      a checkpoint of another network is a ValueError, not a crash mid-training.
    mesh: where to put the restored arrays.
  """
  quiet_orbax()
  directory = find_run_checkpoints(path)
  manager = _read_only(directory, item_handlers=ocp.StandardCheckpointHandler())
  step = manager.latest_step()
  tree = manager.item_metadata(step).tree
  missing = [k for k in ('params', 'batch_stats') if k not in tree]
  if missing:
    raise ValueError(f'{directory} step {step} has no {missing}: not a bswap training checkpoint')
  _check_shapes(template, tree, f'{directory} step {step}')
  # Restore everything (orbax needs the whole tree), replicated; keep the variables.
  abstract = parallel.abstract_replicated(tree, mesh)
  state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  manager.close()
  logging.info('Loaded the teacher from %s, step %d', directory, step)
  return {'params': state['params'], 'batch_stats': state['batch_stats']}


def _check_shapes(template, tree, where: str) -> None:
  want = jax.tree.map(lambda x: tuple(x.shape), template)
  have = jax.tree.map(lambda x: tuple(x.shape), {k: tree[k] for k in ('params', 'batch_stats')})
  if want != have:
    raise ValueError(
      f'{where} holds a different network than the teacher the config describes '
      f'(config.model: arch, depth, width, num_classes); check those and the path'
    )
