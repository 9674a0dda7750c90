"""`--config.stage=study`: train a population and ask whether each metric picks good students.

Each member (bswap.study.population) is its own run directory,
workdir/members/<index>/, holding

  init_metrics.json  every metric at initialisation (the search's scorer, batch
                     and seed-contract index) and the Table 1 metrics after k
                     minibatches (bswap.study.trained), computed once;
  the training run   (bswap.train.loop: checkpoints, metrics.jsonl, ...) of
                     study.epochs, resumed where a killed process left it;
  member.json        written last: the member's row of study.csv. A rerun skips
                     members that have it.

workdir/study.json records the settings; a rerun with other settings is
refused rather than mixed in. `--config.study.shard=i/n` trains every n-th
member from the i-th, so n processes (or hosts) can share one study
directory; whichever process finds every member done writes the outputs
(bswap.study.outputs), and a rerun of any shard writes them when the last
one has finished.
"""

from __future__ import annotations

import json
import os
import time

import jax
from absl import logging

from bswap import data as data_lib
from bswap import files
from bswap.nets import convs
from bswap.nets import models
from bswap.scoring import engine as engine_lib
from bswap.scoring import metrics as metrics_lib
from bswap.study import outputs
from bswap.study import population as population_lib
from bswap.study import trained
from bswap.train import loop
from bswap.train import metrics as train_metrics

SETTINGS = 'study.json'
MEMBERS = 'members'
INIT_METRICS = 'init_metrics.json'
RESULT = 'member.json'
# Settings that change how a study runs, not what it computes.
NOT_SETTINGS = (
  ('study', 'shard'),
  ('search', 'threads'),
  ('search', 'compilation_cache_dir'),
  ('search', 'low_memory'),
  ('train', 'tensorboard'),
  ('data', 'cache_dir'),
  ('distributed',),
)


def metric_names(config) -> list[str]:
  # rank_aggregate ranks a pool, not a member: 'all' means every per-member metric.
  each = [n for n in metrics_lib.METRICS if metrics_lib.per_candidate(n)]
  spec = config.study.metrics
  if spec == 'all':
    return each
  names = [n.strip() for n in spec.split(',') if n.strip()]
  for name in names:
    if name not in each:
      raise ValueError(
        f'--config.study.metrics names {name!r}, which is not a per-member metric; choose '
        f'"all" or some of {", ".join(each)}'
      )
  return names


def ks(config) -> list[int]:
  try:
    values = sorted({int(k) for k in str(config.study.ks).split(',') if k.strip()})
  except ValueError:
    values = []
  if any(k < 1 for k in values):
    values = []
  if not values and str(config.study.ks).strip():
    raise ValueError(
      f'--config.study.ks={config.study.ks!r} must list positive step counts, e.g. 1,10,100 '
      '(or be empty for no metrics after training steps)'
    )
  return values


def settings(config) -> dict:
  """The config as JSON data, without the fields that do not change the results."""
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  for path in NOT_SETTINGS:
    node = data
    for key in path[:-1]:
      node = node.get(key, {})
    node.pop(path[-1], None)
  return data


def check_settings(config, workdir: str) -> None:
  """Records the study's settings; refuses a study directory made with others."""
  path = os.path.join(workdir, SETTINGS)
  mine = settings(config)
  if files.exists(path):
    saved = json.loads(files.read_text(path))
    if saved != mine:
      changed = sorted(_diff(saved, mine))
      raise ValueError(
        f'{workdir} holds a study with other settings ({", ".join(changed)}); rerun with the '
        'same config to resume it, or use another --workdir'
      )
    return
  if jax.process_index() == 0:
    files.write(path, json.dumps(mine, indent=2, sort_keys=True) + '\n')


def _diff(a, b, prefix=''):
  if isinstance(a, dict) and isinstance(b, dict):
    for key in set(a) | set(b):
      yield from _diff(a.get(key), b.get(key), f'{prefix}{key}.')
  elif a != b:
    yield prefix.rstrip('.')


def member_dir(workdir: str, member: population_lib.Member) -> str:
  return os.path.join(workdir, MEMBERS, f'{member.index:04d}')


def member_config(config):
  """The training config of every member: config.train, study.epochs long."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train.epochs = config.study.epochs
  return config


class Scorer:
  """The metrics of a member before its training (the data and compiles shared)."""

  def __init__(self, config, pieces: engine_lib.Pieces):
    self.config = config
    self.data = data_lib.open_data(config)
    data_lib.check_num_classes(self.data, config)
    self.skel = population_lib.skeleton(config)
    self.names = metric_names(config)
    self.ks = ks(config)
    self.at_init = metrics_lib.score_all(config, self.skel, pieces, self.names)
    self._shared = None

  def init_batch(self, index: int):
    """The batch the search would score candidate `index` on."""
    size = metrics_lib.batch_size_of(self.config, self.names)  # the members' metrics
    if self.config.search.fresh_batch_per_candidate:
      return self.data.fisher_batch(size, self.config.seed, index)
    if self._shared is None:
      self._shared = self.data.fisher_batch(size, self.config.seed)
    return self._shared

  def k_batch(self, t: int):
    """Minibatch t of the Table 1 metrics: the fresh-batch stream of index t, any member."""
    return self.data.fisher_batch(self.config.study.k_batch_size, self.config.seed, t)

  def __call__(self, member: population_lib.Member) -> dict[str, float]:
    values = self.at_init(member.genotype, member.index, *self.init_batch(member.index))
    if self.ks:
      tc = self.config.train
      impl = convs.resolve(tc.conv_impl, jax.default_backend(), 'train.conv_impl')
      model = models.build(member.genotype, self.skel.num_classes, impl)
      # The weights the member's training starts from (bswap.train.loop.init_state).
      variables = models.init_variables(model, self.config.seed, 0, self.skel.image_size)
      tx = trained.optimizer(tc.lr, tc.momentum, tc.weight_decay)
      values.update(trained.after_k(model, variables, tx, self.k_batch, self.ks))
    return values


def train_time(records: list[dict], batch_size: int) -> float:
  """Seconds of training steps, from each epoch's images/s (resume-proof, no compiles)."""
  seconds, step = 0.0, 0
  for r in records:
    if r.get('images_per_sec'):
      seconds += (r['step'] - step) * batch_size / r['images_per_sec']
    step = r['step']
  return seconds


def run_member(config, workdir: str, member: population_lib.Member, scorer: Scorer):
  """The member's row: its metrics, then its training (resumed), then member.json.

  None if the training stopped early for a preemption: no row is written.
  """
  run_dir = member_dir(workdir, member)
  init_path = os.path.join(run_dir, INIT_METRICS)
  if files.exists(init_path):
    values = json.loads(files.read_text(init_path))
  else:
    start = time.perf_counter()
    values = scorer(member)
    if jax.process_index() == 0:  # every host computes the same values
      files.write(init_path, json.dumps(values, indent=1) + '\n')
    logging.info('Member %d: metrics in %.1f s', member.index, time.perf_counter() - start)
  mconfig = member_config(config)
  summary = loop.fit(mconfig, run_dir, member.genotype, config.train.teacher_checkpoint or None)
  max_steps = mconfig.train.max_steps
  if summary.epoch < mconfig.train.epochs and (max_steps is None or summary.step < max_steps):
    return None  # preempted (TPU): the checkpoint is saved, a rerun resumes it
  records = train_metrics.read_records(os.path.join(run_dir, train_metrics.METRICS))
  tested = [r['test_error'] for r in records if 'test_error' in r]
  row = {
    'index': member.index,
    'kind': member.kind,
    'genotype': ' '.join(member.genotype.blocks),
    'note': member.note,
    'params': member.params,
    'macs': member.macs,
    **values,
    'final_error': tested[-1],
    'best_error': min(tested),
    'train_seconds': round(train_time(records, mconfig.train.batch_size), 1),
  }
  if jax.process_index() == 0:
    files.write(os.path.join(run_dir, RESULT), json.dumps(row, indent=1) + '\n')
  return row


def read_row(workdir: str, member) -> dict | None:
  path = os.path.join(member_dir(workdir, member), RESULT)
  return json.loads(files.read_text(path)) if files.exists(path) else None


def run_study(config, workdir: str):
  """Trains this shard's members, then writes the outputs once every member is done."""
  members = population_lib.population(config)
  mine = population_lib.shard(members, config.study.shard)
  metric_names(config)  # fail now on unknown names
  check_settings(config, workdir)
  kinds = {k: sum(m.kind == k for m in members) for k in population_lib.KINDS}
  logging.info(
    'Study of %d members (%s) in %s; shard %s trains %d',
    len(members),
    ', '.join(f'{n} {k}' for k, n in kinds.items() if n),
    workdir,
    config.study.shard,
    len(mine),
  )
  todo = [m for m in mine if read_row(workdir, m) is None]
  if len(todo) < len(mine):
    logging.info('%d of them are done already: skipped', len(mine) - len(todo))
  with engine_lib.Pieces() as pieces:
    scorer = Scorer(config, pieces) if todo else None
    for n, member in enumerate(todo, 1):
      logging.info(
        'Member %d (%d of %d here): %s %s, %s params',
        member.index,
        n,
        len(todo),
        member.kind,
        ' '.join(member.genotype.paper_names),
        f'{member.params:,}',
      )
      if run_member(config, workdir, member, scorer) is None:
        logging.warning('Preempted during member %d: rerun to resume the study', member.index)
        return None
  if jax.process_index() != 0:  # process 0 writes the study's files
    return None
  rows = [read_row(workdir, m) for m in members]
  missing = [m.index for m, r in zip(members, rows) if r is None]
  if missing:
    logging.info(
      '%d members are not done yet (other shards?): %s. Rerun any shard once they are, '
      'to write the outputs.',
      len(missing),
      ', '.join(map(str, missing[:20])) + (' ...' if len(missing) > 20 else ''),
    )
    return None
  return outputs.write(config, workdir, rows, metric_names(config), ks(config))
