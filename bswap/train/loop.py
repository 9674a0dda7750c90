"""Training: the teacher with cross-entropy, students with attention transfer (SPEC section 5).

`train_and_evaluate(config, workdir)` trains what `config.stage` names: the
teacher (stage 'teacher', WRN-depth-width of config.model, all standard
blocks) in `workdir/teacher`, or a student (stages 'student' and 'pipeline')
in `workdir/student`, with attention transfer from the teacher checkpoint
`config.train.teacher_checkpoint` (plain cross-entropy without one).

The optimiser is torch's SGD as the reference uses it: momentum 0.9 without
Nesterov, and L2 weight decay added to the gradient of every parameter before
the momentum (`add_decayed_weights` before `sgd`). The learning rate follows
one of `SCHEDULES`, stepped per epoch.

A step is pure: `train_step(state, batch, rng) -> (state, metrics)`, its
randomness `fold_in(rng, step)`. The training set lives on the devices
(`device_data`), and `train_chunk` shuffles, gathers, augments and trains
`steps_per_call` steps in one jitted call (a `lax.scan` when more than one),
so the host only dispatches calls and reads metrics a few calls behind the
devices. XLA:CPU runs convolutions inside a loop some 40x slower than outside
one (measured: a WRN-10-2 step at 32 px, 72 ms plain, 2.6 s in a scan), hence
one step per call by default.

With config.data.pipeline 'imagenet' the data is too large for the devices:
batches are streamed from the host instead (`host_data`: decoded, cropped and
flipped there; step s of epoch e a function of (seed, e, s), so a resumed run
continues the stream exactly), put on the mesh split along 'data', and fed to
the same `train_step` and `eval_step` one batch per call (`stream_step`,
`stream_eval`), normalised on the devices.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from etils import epath
from tqdm import tqdm

from bswap import losses as distill
from bswap import parallel
from bswap.data import arrays as input_pipeline
from bswap.data import imagenet_ops as imagenet_preprocess
from bswap.data import resident as device_data
from bswap.data import streamed as host_data
from bswap.nets import accounting
from bswap.nets import arch as arch_lib
from bswap.nets import blocks
from bswap.nets import genotype as genotype_lib
from bswap.nets import models
from bswap.search import run as search
from bswap.train import checkpoint
from bswap.train import metrics as metric_writers

TEACHER, STUDENT = 'teacher', 'student'  # run directories inside the workdir
BEST_GENOTYPE = 'best_genotype.json'  # what the search writes
SCHEDULES = {
  # The paper's text: the learning rate "is reduced by a factor of 5 every 60 epochs".
  'paper': (60, 120, 180),
  # The authors' 2019 code: the usual WideResNet steps.
  'code2019': (60, 120, 160),
  # Their current code: cosine annealing over all epochs, stepped once per epoch
  # as torch's CosineAnnealingLR is there.
  'cosine': None,
  # ImageNet (SPEC section 6): x lr_decay (0.1) every 30 of the 100 epochs.
  'imagenet': (30, 60, 90),
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# The host reads a call's metrics (and checks its loss) this many calls later,
# so that it never waits for the devices while they have work queued.
FETCH_LAG = 3

# ----------------------------------------------------------------------------
# Optimiser and learning-rate schedule.


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The learning rate as a function of the step, constant within an epoch."""

  name: str
  lr: float
  decay: float  # factor at each milestone of a step schedule
  epochs: int
  steps_per_epoch: int

  def __post_init__(self):
    if self.name not in SCHEDULES:
      raise ValueError(f'unknown schedule {self.name!r}; choose one of {", ".join(SCHEDULES)}')

  @classmethod
  def from_config(cls, train_config, steps_per_epoch: int) -> Schedule:
    tc = train_config
    return cls(tc.schedule, tc.lr, tc.lr_decay, tc.epochs, steps_per_epoch)

  def at_epoch(self, epoch):
    """The rate of 0-based `epoch`: a float for a Python int, a jnp scalar for an array."""
    xp = np if isinstance(epoch, int | np.integer) else jnp
    milestones = SCHEDULES[self.name]
    if milestones is None:
      # 0.5 (1 + cos(pi e / E)) written as cos^2(pi e / 2E): no cancellation near the end.
      return self.lr * xp.square(xp.cos(xp.pi * epoch / (2 * self.epochs)))
    if xp is np:
      return self.lr * self.decay ** sum(epoch >= m for m in milestones)
    drops = sum(jnp.asarray(epoch >= m, jnp.float32) for m in milestones)
    return self.lr * jnp.power(self.decay, drops)

  def __call__(self, step):
    return self.at_epoch(step // self.steps_per_epoch)


def make_optimizer(train_config, schedule: Schedule) -> optax.GradientTransformation:
  """torch.optim.SGD(lr, momentum, weight_decay): decay joins the gradient before momentum."""
  tc = train_config
  return optax.chain(
    optax.add_decayed_weights(tc.weight_decay),
    optax.sgd(schedule, momentum=tc.momentum, nesterov=tc.nesterov),
  )


# ----------------------------------------------------------------------------
# State and steps.


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds. The teacher is no part of it: it is never optimised."""

  step: jax.Array  # int32 scalar: steps taken
  params: Any
  batch_stats: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: one per run
class Setup:
  """The static pieces of a run's steps."""

  model: nn.Module  # models.WideResNet or models.ResNet34
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  batch_size: int
  eval_batch_size: int
  steps_per_epoch: int
  teacher: nn.Module | None = None
  beta: float = 0.0
  dtype: Any = jnp.float32  # compute dtype; parameters and BN statistics stay float32
  crop_pad: int = 4
  cutout: int = 16
  pipeline: str = 'cifar'  # config.data.pipeline: how batches arrive (input_pipeline.PIPELINES)


def _cast(tree, dtype):
  """Floating leaves in the compute dtype: the mixed-precision copy of the float32 masters."""
  cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree.map(cast, tree)


def loss_fn(params, batch_stats, images, labels, teacher_variables, setup: Setup):
  """The objective and (logits, new batch_stats, parts) of one augmented batch."""
  variables = {'params': _cast(params, setup.dtype), 'batch_stats': batch_stats}
  x = images.astype(setup.dtype)
  (logits, aux), updates = setup.model.apply(variables, x, train=True, mutable=['batch_stats'])
  if setup.teacher is None:
    loss = distill.cross_entropy(logits, labels)
    parts = {'ce': loss}
  else:
    # Inference mode (running statistics), and no gradient reaches the teacher.
    frozen = jax.lax.stop_gradient(_cast(teacher_variables, setup.dtype))
    _, teacher_aux = setup.teacher.apply(frozen, x, train=False)
    stages = teacher_aux['stages']
    loss, parts = distill.student_loss(logits, labels, aux['stages'], stages, setup.beta)
  return loss, (logits, updates['batch_stats'], parts)


def compute_grads(state: TrainState, batch, rng, teacher_variables=None, *, setup: Setup):
  """Gradients of the objective w.r.t. the parameters, and (loss, logits, batch_stats, parts)."""
  key = jax.random.fold_in(rng, state.step)
  images = train_images(key, batch['image'], setup)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, aux), grads = grad_fn(
    state.params, state.batch_stats, images, batch['label'], teacher_variables, setup
  )
  return grads, (loss, *aux)


def train_images(key, images, setup: Setup) -> jax.Array:
  """The device's part of the training augmentation of a uint8 batch, normalised.

  'cifar': all of it (crop, flip, Cutout). 'imagenet': the normalisation only,
  as the host has cropped and flipped (host_data).
  """
  if setup.pipeline == 'imagenet':
    return imagenet_preprocess.normalize(images)
  return input_pipeline.augment(key, images, pad=setup.crop_pad, cutout=setup.cutout)


def eval_images(images, setup: Setup) -> jax.Array:
  """A uint8 test batch normalised with its pipeline's mean and std."""
  if setup.pipeline == 'imagenet':
    return imagenet_preprocess.normalize(images)
  return input_pipeline.normalize(images)


def error_percent(logits, labels):
  return 100.0 * jnp.mean(jnp.argmax(logits, -1) != labels)


def train_step(state: TrainState, batch, rng, teacher_variables=None, *, setup: Setup):
  """One SGD step on a uint8 batch {'image', 'label'}: augment, forward, backward, update."""
  grads, (loss, logits, batch_stats, parts) = compute_grads(
    state, batch, rng, teacher_variables, setup=setup
  )
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  metrics = {'loss': loss, 'error': error_percent(logits, batch['label']), **parts}
  return new_state, metrics


def eval_step(state: TrainState, batch, *, setup: Setup):
  """Sums over the real (mask) examples of a test batch: loss, wrong, count."""
  variables = {'params': _cast(state.params, setup.dtype), 'batch_stats': state.batch_stats}
  images = eval_images(batch['image'], setup).astype(setup.dtype)
  logits, _ = setup.model.apply(variables, images, train=False)
  losses = optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.float32), batch['label']
  )
  mask = batch['mask']
  wrong = (jnp.argmax(logits, -1) != batch['label']) & mask
  return {
    'loss': jnp.sum(jnp.where(mask, losses, 0.0)),
    'wrong': jnp.sum(wrong),
    'count': jnp.sum(mask),
  }


def _streams(rng):
  """Independent keys for the augmentation and the data order."""
  augment_rng, order_rng = jax.random.split(rng)
  return augment_rng, order_rng


def epoch_order(train_data, rng, epoch, *, setup: Setup):
  """Each device's permutation of its rows for `epoch`: from fold_in(order key, epoch)."""
  key = jax.random.fold_in(_streams(rng)[1], epoch)
  return device_data.epoch_order(setup.mesh, key, train_data)


def train_chunk(state, train_data, order, rng, teacher_variables, *, setup: Setup, length: int):
  """`length` steps inside one epoch: gather, augment and train, all on device.

  `order` is the epoch's `epoch_order`. Returns the state and per-step metrics
  (arrays of shape (length,)).
  """

  def body(state, _):
    index = state.step % setup.steps_per_epoch
    batch = device_data.train_batch(setup.mesh, train_data, order, index, setup.batch_size)
    return train_step(state, batch, _streams(rng)[0], teacher_variables, setup=setup)

  if length == 1:  # no loop: see the module doc
    state, metrics = body(state, None)
    return state, jax.tree.map(lambda x: x[None], metrics)
  return jax.lax.scan(body, state, length=length)


def evaluate(state, test_data, *, setup: Setup):
  """Sums of loss, wrong and count over the whole test set, in one call."""
  batches = test_data.rows // (setup.eval_batch_size // setup.mesh.devices.size)

  def body(sums, index):
    batch = device_data.eval_batch(setup.mesh, test_data, index, setup.eval_batch_size)
    return jax.tree.map(jnp.add, sums, eval_step(state, batch, setup=setup)), None

  zeros = {'loss': jnp.float32(0), 'wrong': jnp.int32(0), 'count': jnp.int32(0)}
  sums, _ = jax.lax.scan(body, zeros, jnp.arange(batches))
  return sums


def stream_step(state, batch, rng, teacher_variables, *, setup: Setup):
  """train_step on a batch streamed from the host; metrics of shape (1,), as train_chunk's."""
  state, metrics = train_step(state, batch, _streams(rng)[0], teacher_variables, setup=setup)
  return state, jax.tree.map(lambda x: x[None], metrics)


def stream_eval(sums, state, batch, *, setup: Setup):
  """`sums` plus eval_step's sums over a test batch streamed from the host."""
  return jax.tree.map(jnp.add, sums, eval_step(state, batch, setup=setup))


def batch_spec(mesh, batch_size: int, image_size: int, mask: bool = False) -> dict:
  """The shapes and shardings of a streamed batch, to compile for before the first arrives."""
  sharding = parallel.data_sharded(mesh)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  batch = {
    'image': spec((batch_size, image_size, image_size, 3), jnp.uint8),
    'label': spec((batch_size,), jnp.int32),
  }
  return {**batch, 'mask': spec((batch_size,), jnp.bool_)} if mask else batch


# ----------------------------------------------------------------------------
# The run: data, model, state and the compiled steps.


@dataclasses.dataclass
class Run:
  config: Any
  run_dir: str
  setup: Setup
  # On the devices (pipeline 'cifar'), or listed for streaming from the host ('imagenet').
  train_data: device_data.DeviceSplit | host_data.Split
  test_data: device_data.DeviceSplit | host_data.Split
  rng: jax.Array
  teacher_variables: Any
  ckpts: checkpoint.Checkpoints
  schedule: Schedule
  compiled: dict = dataclasses.field(default_factory=dict)

  def chunk(self, state, order, length: int):
    """The train_chunk of `length` steps, compiled ahead of time once per length."""
    if length not in self.compiled:
      fn = functools.partial(train_chunk, setup=self.setup, length=length)
      args = (state, self.train_data, order, self.rng, self.teacher_variables)
      out = parallel.replicated(self.setup.mesh)  # state and metrics
      what = f'{length} training step(s)'
      self.compiled[length] = _compile(fn, args, what, out, donate=True)
    return self.compiled[length]

  def order(self, epoch: int):
    """The epoch's data order, on the devices."""
    epoch = np.int32(epoch)  # a host value: every process passes the same
    if 'order' not in self.compiled:
      fn = functools.partial(epoch_order, setup=self.setup)
      args, out = (self.train_data, self.rng, epoch), parallel.data_sharded(self.setup.mesh)
      self.compiled['order'] = _compile(fn, args, 'data order', out)
    return self.compiled['order'](self.train_data, self.rng, epoch)

  def evaluator(self, state):
    if 'eval' not in self.compiled:
      fn = functools.partial(evaluate, setup=self.setup)
      out = parallel.replicated(self.setup.mesh)
      self.compiled['eval'] = _compile(fn, (state, self.test_data), 'evaluation', out)
    return self.compiled['eval']

  @property
  def streamed(self) -> bool:
    return self.setup.pipeline == 'imagenet'

  def stream_step(self, state):
    """stream_step, compiled ahead of time for the configured batch."""
    if 'stream_step' not in self.compiled:
      fn = functools.partial(stream_step, setup=self.setup)
      batch = batch_spec(self.setup.mesh, self.setup.batch_size, self.config.data.image_size)
      args = (state, batch, self.rng, self.teacher_variables)
      out = parallel.replicated(self.setup.mesh)  # state and metrics
      self.compiled['stream_step'] = _compile(fn, args, 'a training step', out, donate=True)
    return self.compiled['stream_step']

  def stream_evaluator(self, sums, state):
    """stream_eval, compiled ahead of time for the configured eval batch."""
    if 'stream_eval' not in self.compiled:
      fn = functools.partial(stream_eval, setup=self.setup)
      size = self.config.data.image_size
      batch = batch_spec(self.setup.mesh, self.setup.eval_batch_size, size, mask=True)
      out = parallel.replicated(self.setup.mesh)
      self.compiled['stream_eval'] = _compile(fn, (sums, state, batch), 'evaluation', out)
    return self.compiled['stream_eval']

  def options(self) -> host_data.Options:
    return host_data.Options.from_config(self.config.data)


def _compile(fn, args, what: str, out_shardings, donate: bool = False):
  """`fn` compiled for `args`; fixed output shardings keep the state replicated across calls."""
  start = time.perf_counter()
  jitted = jax.jit(fn, out_shardings=out_shardings, donate_argnums=(0,) if donate else ())
  compiled = jitted.lower(*args).compile()
  logging.info('Compiled %s in %.1f s', what, time.perf_counter() - start)
  return compiled


def load_split(config, split: str) -> input_pipeline.ArrayDataset:
  data = config.data
  ds = input_pipeline.load(
    data.source,
    split,
    image_size=data.image_size,
    num_classes=config.model.num_classes,
    synthetic_size=data.synthetic_size,
    seed=config.seed,
    cache_dir=data.cache_dir,
  )
  _check_classes(config, ds.num_classes)
  return ds


def stream_split(config, split: str) -> host_data.Split:
  """A split ('train' or 'eval') of the 'imagenet' pipeline's source, listed for streaming."""
  data = config.data
  ds = host_data.open_split(
    data.source,
    split,
    num_classes=config.model.num_classes,
    synthetic_size=data.synthetic_size,
    image_size=data.image_size,
    seed=config.seed,
  )
  _check_classes(config, len(ds.class_names))
  return ds


def _check_classes(config, num_classes: int) -> None:
  if num_classes != config.model.num_classes:
    raise ValueError(
      f'{config.data.source} has {num_classes} classes but config.model.num_classes is '
      f'{config.model.num_classes}; set --config.model.num_classes={num_classes}'
    )


def load_data(config, mesh) -> tuple[Any, Any, int]:
  """(train data, test data, training examples per device) of config.data.pipeline.

  'cifar': both splits decoded into memory and placed on the devices.
  'imagenet': both listed, to be decoded batch by batch on the host.
  """
  if config.data.pipeline == 'imagenet':
    train, test = stream_split(config, 'train'), stream_split(config, 'eval')
    return train, test, len(train) // mesh.devices.size
  train = device_data.train_split(load_split(config, 'train'), mesh, config.seed)
  test = device_data.test_split(load_split(config, 'test'), mesh, config.train.eval_batch_size)
  return train, test, train.rows


def check_config(config) -> None:
  """Fails on values that would otherwise fail late, after data loading or compiling."""
  tc = config.train
  if tc.dtype not in DTYPES:
    raise ValueError(f'config.train.dtype {tc.dtype!r} is not one of {", ".join(DTYPES)}')
  Schedule.from_config(tc, 1)
  if tc.conv_impl not in ('auto', *blocks.CONV_IMPLS):
    raise ValueError(
      f"config.train.conv_impl must be 'auto', 'xla' or 'fast'; got {tc.conv_impl!r}"
    )
  for name in ('epochs', 'batch_size', 'eval_batch_size', 'steps_per_call'):
    if tc[name] < 1:
      raise ValueError(f'config.train.{name} must be positive; got {tc[name]}')
  for name in ('checkpoint_every_epochs', 'eval_every_epochs'):
    if tc[name] < 1:
      raise ValueError(f'config.train.{name} must be at least 1; got {tc[name]}')
  input_pipeline.check_pipeline(config.data.pipeline)
  if config.data.pipeline == 'imagenet':
    host_data.Options.from_config(config.data)  # checks the preprocessing fields
    if tc.steps_per_call != 1:
      raise ValueError(
        f"config.train.steps_per_call is {tc.steps_per_call}, but the 'imagenet' pipeline "
        'feeds one streamed batch per call; set --config.train.steps_per_call=1'
      )


def make_setup(config, genotype, mesh, rows_per_device: int, distil: bool) -> tuple:
  tc = config.train
  local_batch = tc.batch_size // mesh.devices.size
  steps_per_epoch = rows_per_device // local_batch
  if steps_per_epoch < 1:
    raise ValueError(
      f'batch size {tc.batch_size} exceeds the {rows_per_device * mesh.devices.size} training '
      'examples; lower --config.train.batch_size or use more data'
    )
  schedule = Schedule.from_config(tc, steps_per_epoch)
  setup = Setup(
    model=_model(genotype, config, mesh),
    tx=make_optimizer(tc, schedule),
    mesh=mesh,
    batch_size=tc.batch_size,
    eval_batch_size=tc.eval_batch_size,
    steps_per_epoch=steps_per_epoch,
    teacher=_model(teacher_genotype(config), config, mesh) if distil else None,
    beta=tc.beta,
    dtype=DTYPES[tc.dtype],
    crop_pad=config.data.crop_pad,
    cutout=config.data.cutout,
    pipeline=config.data.pipeline,
  )
  return setup, schedule


def conv_impl(config, mesh) -> str:
  """config.train.conv_impl, with 'auto' resolved: 'fast' on CPUs, else 'xla'.

  XLA:CPU runs grouped convolutions slowly; bswap.convs' 'fast' forms compute
  the same function (same parameters) several times faster there (a WRN-10-2
  of G(2), G(N/8), B(4) blocks at 32 px, batch 16: 547 ms a step with 'xla',
  59 ms with 'fast'). GPUs and TPUs have native grouped convolutions.
  """
  impl = config.train.conv_impl
  if impl == 'auto':
    return 'fast' if mesh.devices.flat[0].platform == 'cpu' else 'xla'
  return impl


def _model(genotype: genotype_lib.Genotype, config, mesh) -> nn.Module:
  """The genotype's WideResNet or ResNet34, with config.model's classes."""
  return models.build(genotype, config.model.num_classes, conv_impl(config, mesh))


def init_state(setup: Setup, seed: int, image_size: int) -> TrainState:
  """Fresh state by the seed contract (models.init_variables), replicated on the mesh."""
  variables = models.init_variables(setup.model, seed, 0, image_size)
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=setup.tx.init(variables['params']),
  )
  return parallel.put_replicated(state, setup.mesh)


def prepare(config, run_dir: str, genotype, teacher_checkpoint: str | None) -> tuple[Run, Any]:
  """Devices -> data -> model and optimiser -> state (restored if the run has a checkpoint)."""
  check_config(config)
  tc = config.train
  mesh = parallel.make_mesh()
  logging.info('Mesh: %s', parallel.describe(mesh))
  parallel.check_divisible(tc.batch_size, mesh)
  parallel.check_divisible(tc.eval_batch_size, mesh, 'eval batch size')
  _record_genotype(run_dir, genotype)
  if teacher_checkpoint:  # fail before loading data
    teacher_checkpoint = checkpoint.find_run_checkpoints(teacher_checkpoint)
  train_data, test_data, rows = load_data(config, mesh)
  setup, schedule = make_setup(config, genotype, mesh, rows, bool(teacher_checkpoint))
  teacher_variables = None
  if teacher_checkpoint:
    init = functools.partial(models.init_variables, setup.teacher, 0, 0, config.data.image_size)
    template = jax.eval_shape(init)
    teacher_variables = checkpoint.load_variables(teacher_checkpoint, template, mesh)
  ckpts = checkpoint.Checkpoints(os.path.join(run_dir, checkpoint.SUBDIR), tc.keep_checkpoints)
  state = init_state(setup, config.seed, config.data.image_size)
  restored = ckpts.restore_latest(state)
  state = state if restored is None else restored
  rng = parallel.put_replicated(jax.random.PRNGKey(config.seed), mesh)
  run = Run(config, run_dir, setup, train_data, test_data, rng, teacher_variables, ckpts, schedule)
  return run, state


def _record_genotype(run_dir: str, genotype) -> None:
  """Writes run_dir/genotype.json; refuses a run directory that trained another network."""
  path = os.path.join(run_dir, 'genotype.json')
  if epath.Path(path).exists():
    saved = genotype_lib.from_dict(json.loads(epath.Path(path).read_text()), source=path)
    if saved != genotype:
      raise ValueError(
        f'{run_dir} holds a run of another network ({path}); resume it with the same '
        'genotype, or use another --workdir'
      )
  if jax.process_index() == 0:
    metric_writers.write_file(path, genotype_lib.dumps_json(genotype))


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

  def __init__(self, run: Run, epoch: int, bar):
    self.run, self.epoch, self.bar = run, epoch, bar
    self.sums, self.steps = {}, 0

  def add(self, first_step: int, metrics) -> None:
    metrics = jax.device_get(metrics)
    losses = np.asarray(metrics['loss'])
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      step = first_step + int(bad[0])
      latest = self.run.ckpts.latest_step()
      raise ValueError(
        f'non-finite loss {losses[bad[0]]} at epoch {self.epoch + 1}, step {step}; stopping. '
        f'The last good checkpoint is step {latest} in {self.run.ckpts.directory}. '
        'Lower --config.train.lr, or check the data and the teacher checkpoint'
      )
    for key, values in metrics.items():
      self.sums[key] = self.sums.get(key, 0.0) + float(np.sum(values))
    self.steps += losses.size
    self.bar.update(losses.size)
    self.bar.set_postfix(loss=f'{losses[-1]:.4f}', refresh=False)

  def means(self) -> dict[str, float]:
    return {f'train_{k}': v / self.steps for k, v in self.sums.items()}


def _progress_bar(run: Run, epoch: int, done: int):
  return tqdm(
    total=run.setup.steps_per_epoch,
    initial=done,
    desc=f'epoch {epoch + 1}/{run.config.train.epochs}',
    unit='step',
    file=sys.stderr,
    disable=None if jax.process_index() == 0 else True,  # None: a bar on a terminal only
    leave=False,
  )


def _device_calls(run: Run, state, step: int, end: int):
  """(steps, function, arguments) of each call from `step` to `end`, on device-resident data.

  A call is function(state, *arguments) -> (state, metrics); all are compiled here.
  """
  per_call = run.config.train.steps_per_call
  lengths = [min(per_call, end - s) for s in range(step, end, per_call)]
  order = run.order(step // run.setup.steps_per_epoch)
  for length in set(lengths):  # compile before the clock starts
    run.chunk(state, order, length)
  args = (run.train_data, order, run.rng, run.teacher_variables)
  return [(length, run.chunk(state, order, length), args) for length in lengths]


def _stream_calls(run: Run, state, step: int, end: int):
  """As _device_calls, for batches streamed from the host: one step per call.

  Step s of epoch e is batch s of host_data.train_batches(seed, e), so a
  resumed run continues the stream where it stopped.
  """
  spe = run.setup.steps_per_epoch
  epoch = step // spe
  fn = run.stream_step(state)  # compiled before the clock starts
  batches = host_data.train_batches(
    run.train_data,
    run.options(),
    run.setup.batch_size,
    run.config.seed,
    epoch,
    start=step - epoch * spe,
    stop=end - epoch * spe,
  )
  mesh = run.setup.mesh
  return ((1, fn, (_put_batch(b, mesh), run.rng, run.teacher_variables)) for b in batches)


def _put_batch(batch: dict, mesh) -> dict:
  """This process's rows of a global batch, put on the mesh split along 'data'."""
  return {key: parallel.put_sharded(value, mesh) for key, value in batch.items()}


def train_epoch(run: Run, state, step: int, stop: int):
  """Steps from `step` to the end of its epoch (or `stop`); returns state, means, images/s."""
  spe = run.setup.steps_per_epoch
  epoch = step // spe
  end = min((epoch + 1) * spe, stop)
  calls = (_stream_calls if run.streamed else _device_calls)(run, state, step, end)
  bar = _progress_bar(run, epoch, step - epoch * spe)
  tally, pending = _Tally(run, epoch, bar), collections.deque()
  start = time.perf_counter()
  for length, fn, args in calls:
    state, metrics = fn(state, *args)
    pending.append((step, metrics))
    step += length
    # Read metrics FETCH_LAG calls behind: the devices keep a queue of work meanwhile.
    if len(pending) > FETCH_LAG:
      tally.add(*pending.popleft())
  while pending:
    tally.add(*pending.popleft())
  elapsed = time.perf_counter() - start
  bar.close()
  return state, tally.means(), tally.steps * run.setup.batch_size / elapsed


def _test_sums(run: Run, state) -> dict:
  """Sums of loss, wrong and count over the whole test set, on the devices."""
  if not run.streamed:
    return run.evaluator(state)(state, run.test_data)
  mesh = run.setup.mesh
  zeros = {'loss': np.float32(0), 'wrong': np.int32(0), 'count': np.int32(0)}
  sums = parallel.put_replicated(zeros, mesh)
  fn = run.stream_evaluator(sums, state)
  size = run.setup.eval_batch_size
  for batch in host_data.eval_batches(run.test_data, run.options(), size):
    sums = fn(sums, state, _put_batch(batch, mesh))
  return sums


def test_metrics(run: Run, state) -> dict[str, float]:
  sums = jax.device_get(_test_sums(run, state))
  count = int(sums['count'])
  return {
    'test_loss': float(sums['loss']) / count,
    'test_error': 100.0 * int(sums['wrong']) / count,
  }


def _epoch_number(step: int, spe: int) -> float | int:
  return step // spe if step % spe == 0 else round(step / spe, 4)


def loop(run: Run, state, writer: metric_writers.MetricWriter) -> Summary:
  """Epochs until config.train.epochs (or max_steps): train, evaluate, log, checkpoint."""
  tc, spe = run.config.train, run.setup.steps_per_epoch
  stop = tc.epochs * spe if tc.max_steps is None else min(tc.epochs * spe, tc.max_steps)
  step = int(jax.device_get(state.step))
  record, images_per_sec = {}, None
  if step >= stop:
    logging.info('Step %d: the run is complete already', step)
  while step < stop:
    epoch = step // spe
    state, train, images_per_sec = train_epoch(run, state, step, stop)
    step = min((epoch + 1) * spe, stop)
    done = (epoch + 1) % tc.eval_every_epochs == 0 or step == stop
    record = {
      'epoch': _epoch_number(step, spe),
      'step': step,
      'lr': float(run.schedule.at_epoch(epoch)),
      **train,
      **(test_metrics(run, state) if done else {}),
      'images_per_sec': images_per_sec,
    }
    writer.write(record)
    _log(record, tc.epochs)
    if (epoch + 1) % tc.checkpoint_every_epochs == 0 or step == stop:
      run.ckpts.save(step, state)
      writer.draw()
    elif run.ckpts.reached_preemption(step):
      run.ckpts.save(step, state)
      writer.draw()
      logging.warning('Preempted: saved step %d; rerun the same command to resume', step)
      break
  return Summary(
    run.run_dir,
    step,
    _epoch_number(step, spe),
    record.get('test_error'),
    record.get('test_loss'),
    images_per_sec,
  )


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
    summary = loop(run, state, writer)
  finally:
    run.ckpts.close()  # waits for the last asynchronous save
    writer.close()
  if summary.test_error is not None:
    logging.info(
      'Finished %s at step %d: test error %.2f%%', run_dir, summary.step, summary.test_error
    )
  return summary


# ----------------------------------------------------------------------------
# What a stage trains.


def teacher_genotype(config) -> genotype_lib.Genotype:
  """The teacher: config.model's network (WRN-depth-width or ResNet-34), standard blocks only."""
  m = config.model
  return genotype_lib.uniform('Conv', m.depth, m.width, m.get('arch', arch_lib.WRN))


def student_genotype(config, workdir: str) -> genotype_lib.Genotype:
  """The genotype config.train.genotype names.

  None: the search's workdir/best_genotype.json. 'random': one genotype drawn
  by the budgeted sampler at config.search.budget (seed config.seed). Else a
  genotype file (JSON or the reference CSV) or a comma-separated list of block
  names, at width config.train.genotype_width where the list gives none.
  """
  spec = config.train.genotype
  if spec is None:
    path = os.path.join(workdir, BEST_GENOTYPE)
    if not os.path.exists(path):
      raise ValueError(
        f'no {path}: run the search first (--config.stage=search, or --config.stage=pipeline '
        'for search then training), or name a genotype with --config.train.genotype=PATH'
      )
    return genotype_lib.load(path)
  if spec == 'random':
    return random_genotype(config)
  return genotype_lib.parse(spec, width=config.train.genotype_width)


def random_genotype(config) -> genotype_lib.Genotype:
  """One genotype drawn uniformly inside the budget: BlockSwap without the Fisher ranking."""
  _, sample = search.sample_candidates(config, num=1)
  return sample.genotypes[0]


def train_and_evaluate(config, workdir: str) -> Summary:
  """Trains the teacher (stage 'teacher') or the student (any other stage) in the workdir."""
  if config.stage == TEACHER:
    return fit(config, os.path.join(workdir, TEACHER), teacher_genotype(config))
  geno = student_genotype(config, workdir)
  teacher = config.train.teacher_checkpoint
  if not teacher:
    logging.warning(
      'No --config.train.teacher_checkpoint: training the student with cross-entropy alone, '
      'without attention transfer'
    )
  return fit(config, os.path.join(workdir, STUDENT), geno, teacher)


def run_pipeline(config, workdir: str) -> Summary:
  """The paper's whole job after the teacher: search, then train the best genotype."""
  if config.train.genotype is not None:
    raise ValueError(
      'the pipeline trains the genotype its search finds; drop --config.train.genotype, '
      'or use --config.stage=student to train a given genotype'
    )

  if search_done(config, workdir):
    logging.info(
      '%s holds this search already (a resumed pipeline): training its winner',
      os.path.join(workdir, BEST_GENOTYPE),
    )
  else:
    search.run_search(config, workdir)
  return train_and_evaluate(config, workdir)


# The fields of best_genotype.json that must match the config for a rerun of
# the pipeline to reuse the search instead of repeating it.
_SEARCH_FIELDS = {
  'budget': ('search', 'budget'),
  'band': ('search', 'band'),
  'num_candidates': ('search', 'num_candidates'),
  'batch_size': ('search', 'batch_size'),
  'fresh_batch_per_candidate': ('search', 'fresh_batch_per_candidate'),
  'data_source': ('data', 'source'),
  'data_pipeline': ('data', 'pipeline'),
  'image_size': ('data', 'image_size'),
}


def search_done(config, workdir: str) -> bool:
  """True if workdir/best_genotype.json comes from a search with this config's settings.

  (The file does not record config.search.menu: a changed menu is not noticed.)
  """
  path = os.path.join(workdir, BEST_GENOTYPE)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    record = json.load(f)
  wanted = {k: config[a][b] for k, (a, b) in _SEARCH_FIELDS.items()}
  wanted['seed'] = config.seed
  geno = record.get('genotype', {})
  m = config.model
  same_model = (geno.get('arch', arch_lib.WRN), geno.get('depth'), geno.get('width')) == (
    m.get('arch', arch_lib.WRN),
    m.depth,
    m.width,
  )
  return same_model and all(record.get(k) == v for k, v in wanted.items())
