"""Training runs: the teacher and the students (SPEC section 5), resumable.

`fit(config, run_dir, genotype, teacher_checkpoint)` trains one network in
`run_dir`: checkpoints (resumed automatically), metrics.jsonl, curves.png and
a TensorBoard log. The student is trained with attention transfer from the
teacher checkpoint (plain cross-entropy without one). Which network a stage
trains, and where, is bswap.pipeline's business.

The phases: data (bswap.data: feeds of device-resident or host-streamed
batches, the same to this module) -> model and optimiser -> state (restored
if the run has a checkpoint) -> the steps compiled ahead of time -> epochs of
calls, metrics read a few calls behind the devices -> evaluation -> a
checkpoint every few epochs and at the end.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import signal
import threading
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from bswap import data as data_lib
from bswap import files
from bswap import parallel
from bswap import progress
from bswap import provenance
from bswap.nets import accounting
from bswap.nets import convs
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.train import checkpoint
from bswap.train import metrics as metric_writers
from bswap.train import optim
from bswap.train import steps

GENOTYPE = 'genotype.json'  # the network a run directory trains
# The host reads a call's metrics (and checks its loss) this many calls later,
# so that it never waits for the devices while they have work queued.
FETCH_LAG = 3


# ----------------------------------------------------------------------------
# The run: data, model, state and the compiled steps.


@dataclasses.dataclass
class Run:
  config: Any
  run_dir: str
  setup: steps.Setup
  train_feed: data_lib.TrainFeed
  eval_feed: data_lib.EvalFeed
  rng: jax.Array
  teacher_variables: Any
  ckpts: checkpoint.Checkpoints
  schedule: optim.Schedule
  compiled: dict = dataclasses.field(default_factory=dict)
  # The input stream's state saved with the restored checkpoint (streamed data), handed
  # to the first epoch after the restore.
  resume_data: dict | None = None

  def _compiled(self, key, fn, args, what: str, donate: bool = False):
    """`fn` compiled once for `args`; fixed output shardings keep the state replicated."""
    if key not in self.compiled:
      start = time.perf_counter()
      out = parallel.replicated(self.setup.mesh)
      jitted = jax.jit(fn, out_shardings=out, donate_argnums=(0,) if donate else ())
      self.compiled[key] = jitted.lower(*args).compile()
      logging.info('Compiled %s in %.1f s', what, time.perf_counter() - start)
    return self.compiled[key]

  def train_call(self, state, length: int):
    """steps.train_call of `length` steps, compiled ahead of time once per length."""
    fn = functools.partial(steps.train_call, setup=self.setup, length=length)
    args = (state, self.train_feed.inputs_spec(), self.rng, self.teacher_variables)
    return self._compiled(('train', length), fn, args, f'{length} training step(s)', donate=True)

  def eval_call(self, sums, state):
    fn = functools.partial(steps.eval_call, setup=self.setup)
    args = (sums, state, self.eval_feed.inputs_spec())
    return self._compiled('eval', fn, args, 'evaluation')


def check_config(config) -> None:
  """Fails on values that would otherwise fail late, after data loading or compiling."""
  tc = config.train
  if tc.dtype not in steps.DTYPES:
    raise ValueError(f'config.train.dtype {tc.dtype!r} is not one of {", ".join(steps.DTYPES)}')
  optim.Schedule.from_config(tc, 1)
  convs.resolve(tc.conv_impl, 'cpu', 'train.conv_impl')
  for name in ('epochs', 'batch_size', 'eval_batch_size', 'steps_per_call'):
    if tc[name] < 1:
      raise ValueError(f'config.train.{name} must be positive; got {tc[name]}')
  for name in ('checkpoint_every_epochs', 'eval_every_epochs'):
    if tc[name] < 1:
      raise ValueError(f'config.train.{name} must be at least 1; got {tc[name]}')
  check_distillation(tc)
  data = data_lib.open_data(config)  # checks the data options too
  most = data.max_steps_per_call
  if most is not None and config.train.steps_per_call > most:
    raise ValueError(
      f'config.train.steps_per_call is {config.train.steps_per_call}, but the '
      f'{data.pipeline!r} pipeline feeds {most} streamed batch per call; set '
      f'--config.train.steps_per_call={most}'
    )


def check_distillation(tc, teacher_checkpoint: str | None = '') -> None:
  """config.train.kd_alpha in [0, 1], kd_temperature > 0, and a teacher where kd_alpha > 0.

  teacher_checkpoint '' (the default) skips the teacher check.
  """
  alpha, temperature = tc.get('kd_alpha', 0.0), tc.get('kd_temperature', 4.0)
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'--config.train.kd_alpha must be in [0, 1] (0: no distillation); got {alpha}')
  if temperature <= 0:
    raise ValueError(f'--config.train.kd_temperature must be positive; got {temperature}')
  if alpha and teacher_checkpoint is None:
    raise ValueError(
      f'--config.train.kd_alpha={alpha} distils from a teacher: give one with '
      '--config.train.teacher_checkpoint=DIR, or set --config.train.kd_alpha=0'
    )


def make_setup(config, genotype, mesh, data, train_feed, eval_feed, distil: bool):
  """The static pieces of the steps, and the learning-rate schedule."""
  tc = config.train
  spe = train_feed.steps_per_epoch
  if spe < 1:
    raise ValueError(
      f'batch size {tc.batch_size} exceeds the training examples; lower '
      '--config.train.batch_size or use more data'
    )
  schedule = optim.Schedule.from_config(tc, spe)
  teacher = model_of(teacher_genotype(config), config, mesh) if distil else None
  setup = steps.Setup(
    model=model_of(genotype, config, mesh),
    tx=optim.make_optimizer(tc, schedule),
    mesh=mesh,
    batch_size=tc.batch_size,
    eval_batch_size=tc.eval_batch_size,
    steps_per_epoch=spe,
    train_transform=data.train_transform,
    eval_transform=data.eval_transform,
    take_train=train_feed.take,
    take_eval=eval_feed.take,
    eval_batches_per_call=eval_feed.batches_per_call,
    teacher=teacher,
    beta=tc.beta,
    kd_alpha=tc.get('kd_alpha', 0.0),
    kd_temperature=tc.get('kd_temperature', 4.0),
    dtype=steps.DTYPES[tc.dtype],
  )
  return setup, schedule


def teacher_genotype(config) -> genotype_lib.Genotype:
  """The teacher: config.model's network (WRN-depth-width or ResNet-34), standard blocks only."""
  m = config.model
  return genotype_lib.uniform('Conv', m.depth, m.width, m.arch)


def conv_impl(config, mesh) -> str:
  """config.train.conv_impl, with 'auto' resolved for the mesh's platform (convs.resolve)."""
  platform = mesh.devices.flat[0].platform
  return convs.resolve(config.train.conv_impl, platform, 'train.conv_impl')


def model_of(genotype: genotype_lib.Genotype, config, mesh) -> nn.Module:
  """The genotype's WideResNet or ResNet34, with config.model's classes."""
  return models.build(genotype, config.model.num_classes, conv_impl(config, mesh))


def init_state(setup: steps.Setup, seed: int, image_size: int) -> steps.TrainState:
  """Fresh state by the seed contract (models.init_variables), replicated on the mesh."""
  variables = models.init_variables(setup.model, seed, 0, image_size)
  state = steps.TrainState(
    step=jax.numpy.zeros((), jax.numpy.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=setup.tx.init(variables['params']),
  )
  return parallel.put_replicated(state, setup.mesh)


def prepare(config, run_dir: str, genotype, teacher_checkpoint: str | None) -> tuple[Run, Any]:
  """Devices -> data -> model and optimiser -> state (restored if the run has a checkpoint).

  Everything that can refuse the run is checked before the run directory is
  written (or the data read): a refused run leaves nothing behind.
  """
  teacher_checkpoint = preflight(config, run_dir, genotype, teacher_checkpoint)
  data = data_lib.open_data(config)  # reads nothing yet
  tc = config.train
  mesh = parallel.make_mesh()
  logging.info('Mesh: %s', parallel.describe(mesh))
  parallel.check_divisible(tc.batch_size, mesh)
  parallel.check_divisible(tc.eval_batch_size, mesh, 'eval batch size')
  data_lib.check_num_classes(data, config)
  train_feed = data.train_feed(mesh, tc.batch_size, config.seed)
  eval_feed = data.eval_feed(mesh, tc.eval_batch_size)
  distil = bool(teacher_checkpoint)
  setup, schedule = make_setup(config, genotype, mesh, data, train_feed, eval_feed, distil)
  teacher_variables = None
  if teacher_checkpoint:
    init = functools.partial(models.init_variables, setup.teacher, 0, 0, config.data.image_size)
    template = jax.eval_shape(init)
    teacher_variables = checkpoint.load_variables(teacher_checkpoint, template, mesh)
  state = init_state(setup, config.seed, config.data.image_size)
  # The run directory's first writes: the checks above all passed.
  ckpts = checkpoint.Checkpoints(os.path.join(run_dir, checkpoint.SUBDIR), tc.keep_checkpoints)
  restored = ckpts.restore_latest(state)
  state = state if restored is None else restored
  record_genotype(run_dir, genotype)
  provenance.record_start(run_dir, config, int(jax.device_get(state.step)), jax.process_index())
  rng = parallel.put_replicated(jax.random.PRNGKey(config.seed), mesh)
  run = Run(config, run_dir, setup, train_feed, eval_feed, rng, teacher_variables, ckpts, schedule)
  if restored is not None:
    run.resume_data = ckpts.data_state(ckpts.latest_step())
  return run, state


def preflight(config, run_dir: str, genotype=None, teacher_checkpoint: str | None = None):
  """The checks that need no data: config, genotype, teacher path, a writable run directory.

  `genotype` None skips the run directory's genotype check (the pipeline knows
  its genotype only after the search). Returns the teacher's checkpoint
  directory (or None).
  """
  check_config(config)
  if genotype is not None:
    check_genotype(run_dir, genotype)
  check_distillation(config.train, teacher_checkpoint or None)
  if teacher_checkpoint:
    teacher_checkpoint = checkpoint.find_run_checkpoints(teacher_checkpoint)
  files.check_writable(run_dir)
  return teacher_checkpoint or None


def check_genotype(run_dir: str, genotype) -> None:
  """Refuses a run directory that trained another network."""
  path = os.path.join(run_dir, GENOTYPE)
  if files.exists(path) and genotype_lib.load(path) != genotype:
    raise ValueError(
      f'{run_dir} holds a run of another network ({path}); resume it with the same '
      'genotype, or use another --workdir'
    )


def record_genotype(run_dir: str, genotype) -> None:
  """Writes run_dir/genotype.json; refuses a run directory that trained another network."""
  check_genotype(run_dir, genotype)
  if jax.process_index() == 0:
    files.write(os.path.join(run_dir, GENOTYPE), genotype_lib.dumps_json(genotype))


# ----------------------------------------------------------------------------
# Stopping on request: SIGTERM (spot VMs, TPU pods, schedulers) ends a run at
# the next step boundary with a checkpoint, and the rerun resumes from it.

# The exit status of `python -m bswap.main` after such a stop: 128 + SIGTERM,
# what a shell reports for a process SIGTERM ended, so "not finished, rerun".
EXIT_STOPPED = 128 + signal.SIGTERM


class Stopped(Exception):
  """Training stopped on request after saving its state; rerunning the command resumes it."""


class Stopper:
  """Whether a stop was requested; SIGTERM requests one while `catch()` is active."""

  def __init__(self):
    self.reason = ''
    self._event = threading.Event()

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def request(self, reason: str) -> None:
    self.reason = self.reason or reason
    self._event.set()

  @contextlib.contextmanager
  def catch(self, signals=(signal.SIGTERM,)):
    """Turns `signals` into stop requests inside the block (main thread only: Python's rule)."""
    # Several processes must agree on the step to stop at: orbax's preemption
    # notice does that on TPU pods; a signal to one process alone would not.
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
      yield self
      return
    handler = lambda signum, frame: self.request(signal.Signals(signum).name)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
      yield self
    finally:
      for s, old in previous.items():
        signal.signal(s, old)


# ----------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass(frozen=True)
class Summary:
  run_dir: str
  step: int
  epoch: float
  test_error: float | None  # %, on the whole test set
  test_loss: float | None
  images_per_sec: float | None  # of the last epoch's training steps


class _Tally:
  """Host-side sums of per-step metrics, read FETCH_LAG calls behind the devices."""

  def __init__(self, run: Run, epoch: int, shown: progress.Progress):
    self.run, self.epoch, self.shown = run, epoch, shown
    self.sums, self.steps = {}, 0

  def add(self, first_step: int, metrics) -> None:
    metrics = jax.device_get(metrics)
    losses = np.asarray(metrics['loss'])
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      step = first_step + int(bad[0])
      raise ValueError(
        f'non-finite loss {losses[bad[0]]} at epoch {self.epoch + 1}, step {step}; stopping. '
        f'{self.run.ckpts.last_good()} '
        'Lower --config.train.lr, or check the data and the teacher checkpoint'
      )
    for key, values in metrics.items():
      self.sums[key] = self.sums.get(key, 0.0) + float(np.sum(values))
    self.steps += losses.size
    self.shown.update(losses.size, loss=f'{losses[-1]:.4f}')

  def means(self) -> dict[str, float]:
    return {f'train_{k}': v / self.steps for k, v in self.sums.items()}


def _progress(run: Run, epoch: int, done: int, total: int, after: int) -> progress.Progress:
  """A bar on a terminal, else a line every config.log_every_seconds (first process only).

  Steps `done` to `total` of epoch `epoch`, `after` more steps in the run's later epochs.
  """
  return progress.Progress(
    total,
    desc=f'epoch {epoch + 1}/{run.config.train.epochs}',
    unit='step',
    images_per_unit=run.setup.batch_size,
    initial=done,
    after=after,
    every_seconds=progress.every_seconds(run.config),
    enabled=jax.process_index() == 0,
  )


def train_epoch(run: Run, state, step: int, stop: int, stopper: Stopper | None = None):
  """Steps from `step` to the end of its epoch (or `stop`, or a stop request).

  Returns the state, the metrics' means, images/s, the step reached, and the
  data stream's state there (JSON for the checkpoint, or None where the data
  has none).
  """
  spe = run.setup.steps_per_epoch
  epoch = step // spe
  end = min((epoch + 1) * spe, stop)
  order_key = steps.streams(run.rng)[1]
  per_call = run.config.train.steps_per_call
  resume, run.resume_data = run.resume_data, None
  calls = run.train_feed.epoch(
    order_key, epoch, step - epoch * spe, end - epoch * spe, per_call, resume=resume
  )
  for length in {min(per_call, end - s) for s in range(step, end, per_call)}:
    run.train_call(state, length)  # compile before the clock starts
  shown = _progress(run, epoch, step - epoch * spe, end - epoch * spe, stop - end)
  tally, pending = _Tally(run, epoch, shown), collections.deque()
  start = time.perf_counter()
  for length, inputs in calls:
    state, metrics = run.train_call(state, length)(state, inputs, run.rng, run.teacher_variables)
    pending.append((step, metrics))
    step += length
    # Read metrics FETCH_LAG calls behind: the devices keep a queue of work meanwhile.
    if len(pending) > FETCH_LAG:
      tally.add(*pending.popleft())
    if stopper is not None and stopper.requested:
      break  # a step boundary: the state is whole
  # Where the stream stands, read before it is closed: a resume starts there.
  data = calls.state() if hasattr(calls, 'state') else None
  if hasattr(calls, 'close'):
    calls.close()  # a stop mid-epoch: a host pipeline's prefetch ends now, not at collection
  while pending:
    tally.add(*pending.popleft())
  elapsed = time.perf_counter() - start
  shown.close()
  return state, tally.means(), tally.steps * run.setup.batch_size / elapsed, step, data


def test_metrics(run: Run, state) -> dict[str, float]:
  """Loss and error (%) over the whole test set, every example once."""
  sums = parallel.put_replicated(steps.zero_sums(), run.setup.mesh)
  fn = run.eval_call(sums, state)
  sums = evaluation_sums(fn, sums, state, run.eval_feed, run.setup.eval_batch_size, run.config)
  count = int(sums['count'])
  return {
    'test_loss': float(sums['loss']) / count,
    'test_error': 100.0 * int(sums['wrong']) / count,
  }


def evaluation_sums(call, sums, state, feed: data_lib.EvalFeed, batch_size: int, config):
  """`sums` plus `call`'s over every call of `feed`, on the host; progress shown as it goes.

  The progress counts a call once its result is ready, FETCH_LAG calls behind
  the dispatches (the devices keep a queue of work meanwhile).
  """
  unit = 'batch' if feed.batches_per_call == 1 else 'call'
  shown = progress.Progress(
    feed.num_calls,
    desc='evaluation',
    unit=unit,
    images_per_unit=batch_size * feed.batches_per_call,
    every_seconds=progress.every_seconds(config),
    enabled=jax.process_index() == 0,
  )
  pending = collections.deque()
  with shown:
    for inputs in feed.calls():
      sums = call(sums, state, inputs)
      pending.append(sums)
      if len(pending) > FETCH_LAG:
        jax.block_until_ready(pending.popleft())
        shown.update(1)
    sums = jax.device_get(sums)
    shown.update(len(pending))
  return sums


def _epoch_number(step: int, spe: int) -> float | int:
  return step // spe if step % spe == 0 else round(step / spe, 4)


def loop(run: Run, state, writer: metric_writers.MetricWriter, stopper=None) -> Summary:
  """Epochs until config.train.epochs (or max_steps): train, evaluate, log, checkpoint.

  Nothing non-finite is recorded or saved: a ValueError stops the run first. A
  stop request (`Stopper`: SIGTERM; or a TPU preemption notice at an epoch's end)
  saves the state at the step reached and raises `Stopped`.
  """
  tc, spe = run.config.train, run.setup.steps_per_epoch
  stop = tc.epochs * spe if tc.max_steps is None else min(tc.epochs * spe, tc.max_steps)
  step = int(jax.device_get(state.step))
  record, images_per_sec = {}, None
  if step >= stop:
    logging.info('Step %d: the run is complete already', step)
  while step < stop:
    epoch = step // spe
    state, train, images_per_sec, step, data = train_epoch(run, state, step, stop, stopper)
    check_finite_state(run, state, step)
    ends_epoch = step % spe == 0 or step == stop
    stopping = (stopper is not None and stopper.requested) or (
      ends_epoch and step < stop and run.ckpts.reached_preemption(step)
    )
    test = {}
    if ends_epoch and ((epoch + 1) % tc.eval_every_epochs == 0 or step == stop):
      test = check_finite_test(run, test_metrics(run, state), step)
    record = {
      'epoch': _epoch_number(step, spe),
      'step': step,
      'lr': float(run.schedule.at_epoch(epoch)),
      **train,
      **test,
      'images_per_sec': images_per_sec,
    }
    writer.write(record)
    _log(record, tc.epochs)
    if stopping or (ends_epoch and ((epoch + 1) % tc.checkpoint_every_epochs == 0 or step == stop)):
      run.ckpts.save(step, state, data)
      writer.draw()
    if stopping and step < stop:
      reason = stopper.reason if stopper is not None and stopper.requested else 'preemption'
      raise Stopped(
        f'stopped by {reason} at step {step}: saved a checkpoint in {run.ckpts.directory}; '
        'rerun the same command to resume'
      )
  return Summary(
    run.run_dir,
    step,
    _epoch_number(step, spe),
    record.get('test_error'),
    record.get('test_loss'),
    images_per_sec,
  )


def check_finite_state(run: Run, state, step: int) -> None:
  """A ValueError, before anything is recorded or saved, if an update made the state non-finite."""
  bad = checkpoint.non_finite_leaves(state)
  if bad:
    raise ValueError(
      f'the parameters after step {step} are non-finite ({len(bad)} arrays, e.g. {bad[0]}): '
      f'the run diverged; nothing saved. {run.ckpts.last_good()} Lower --config.train.lr, or '
      'check the data and the teacher checkpoint'
    )


def check_finite_test(run: Run, test: dict[str, float], step: int) -> dict[str, float]:
  bad = {k: v for k, v in test.items() if not np.isfinite(v)}
  if bad:
    raise ValueError(
      f'non-finite test metrics after step {step} ({bad}); nothing saved. '
      f'{run.ckpts.last_good()} Lower --config.train.lr, or check the test data'
    )
  return test


def _log(record: dict, epochs: int) -> None:
  test = ''
  if 'test_error' in record:
    test = f' | test loss {record["test_loss"]:.4f} error {record["test_error"]:.2f}%'
  logging.info(
    'epoch %s/%d step %d | train loss %.4f error %.2f%%%s | lr %.4g | %s images/s',
    record['epoch'],
    epochs,
    record['step'],
    record['train_loss'],
    record['train_error'],
    test,
    record['lr'],
    f'{record["images_per_sec"]:,.0f}',
  )


def fit(config, run_dir: str, genotype, teacher_checkpoint: str | None = None) -> Summary:
  """Trains `genotype` in `run_dir`, resuming its latest checkpoint if there is one."""
  count = accounting.count(genotype, config.data.image_size, config.model.num_classes)
  logging.info(
    'Training %s (%s params) in %s%s',
    ' '.join(genotype.paper_names),
    f'{count.params:,}',
    run_dir,
    f' with attention transfer from {teacher_checkpoint}' if teacher_checkpoint else '',
  )
  run, state = prepare(config, run_dir, genotype, teacher_checkpoint)
  writer = metric_writers.MetricWriter(
    run_dir, int(jax.device_get(state.step)), config.train.tensorboard
  )
  try:
    with Stopper().catch() as stopper:
      summary = loop(run, state, writer, stopper)
  finally:
    run.ckpts.close()  # waits for the last asynchronous save
    writer.close()
  if summary.test_error is not None:
    logging.info(
      'Finished %s at step %d: test error %.2f%%', run_dir, summary.step, summary.test_error
    )
  return summary
