"""Data: one interface over two ways of feeding the devices.

`open_data(config)` returns a `Data` for `config.data`, whatever its pipeline.
The search reads a Fisher batch from it, training reads feeds; nothing outside
this package knows which pipeline is behind them.

Pipelines (`config.data.pipeline`), each a module with a `Data` class and a
`default_config()` of the fields it reads:

  'cifar'     resident.py: both splits decoded into memory once (sources.py),
              kept on the devices, batches gathered and augmented there
              (CIFAR-sized data);
  'imagenet'  streamed.py: splits only listed (listing.py); each batch decoded,
              cropped and flipped on the host, a few batches ahead
              (ImageNet-sized data).

A new pipeline is one module and one line in `PIPELINES`; a new dataset for a
pipeline is a new source in sources.py (in memory) or listing.py (streamed),
with its normalisation statistics as the config's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from typing import Protocol

import jax
import ml_collections

from bswap.data import resident
from bswap.data import streamed

PIPELINES = {
  'cifar': resident,
  'imagenet': streamed,
}

Batch = dict[str, jax.Array]  # {'image': uint8 (N, H, W, 3), 'label': int32 (N,)[, 'mask']}


class TrainFeed(Protocol):
  """Training batches for one run: host-side calls, device-side `take`."""

  steps_per_epoch: int  # whole global batches: the last partial one is dropped
  max_steps_per_call: int | None  # None: any number of steps may share one call

  def inputs_spec(self) -> Any:
    """Shapes and shardings of one call's inputs, to compile for ahead of time."""

  def epoch(
    self, order_key, epoch: int, start: int, stop: int, steps_per_call: int, resume=None
  ) -> Iterable:
    """(steps, inputs) of each call for steps [start, stop) of `epoch`.

    The result may have a `state()`: JSON that training stores in the
    checkpoint and passes back as `resume` when it restarts at that step.
    """

  # (inputs, step within the epoch) -> Batch, traced inside the jitted step;
  # closes over static values only.
  take: Callable[[Any, jax.Array], Batch]


class EvalFeed(Protocol):
  """Every test example once per evaluation, padded rows masked out."""

  batches_per_call: int
  num_calls: int  # calls of one evaluation

  def inputs_spec(self) -> Any: ...

  def calls(self) -> Iterable:
    """The inputs of each call of one evaluation."""

  take: Callable[[Any, jax.Array], Batch]  # (inputs, batch within the call) -> Batch with 'mask'


class Data(Protocol):
  """A dataset as the stages see it (config.data, whatever the pipeline)."""

  pipeline: str
  max_steps_per_call: int | None

  @property
  def num_classes(self) -> int: ...

  def fisher_batch(self, batch_size: int, seed: int, index: int | None = None):
    """(images float32 normalised and augmented, labels int32): the batch a search scores on.

    index None: the batch every candidate of a search shares; else candidate
    `index`'s own (the reference code draws one per candidate).
    """

  def train_transform(self, key: jax.Array, images: jax.Array) -> jax.Array:
    """The device-side part of the training augmentation of a uint8 batch, normalised."""

  def eval_transform(self, images: jax.Array) -> jax.Array:
    """A uint8 test batch normalised."""

  def train_feed(self, mesh, batch_size: int, seed: int) -> TrainFeed: ...

  def eval_feed(self, mesh, batch_size: int) -> EvalFeed: ...


def _module(pipeline: str):
  if pipeline not in PIPELINES:
    choices = '; '.join(f'{name!r} ({module.SUMMARY})' for name, module in PIPELINES.items())
    raise ValueError(f'--config.data.pipeline={pipeline!r} is unknown; choose {choices}')
  return PIPELINES[pipeline]


def default_config(pipeline: str = 'cifar') -> ml_collections.ConfigDict:
  """config.data for `pipeline`: exactly the fields it reads, with their defaults."""
  data = _module(pipeline).default_config()
  data.pipeline = pipeline
  return data


def open_data(config) -> Data:
  """The data `config.data` describes; splits are read when first needed.

  Options are checked here, before anything is decoded. `config.model.num_classes`
  and `config.seed` shape synthetic data.
  """
  return _module(config.data.pipeline).Data(config)


def check_num_classes(data: Data, config) -> None:
  """A ValueError unless the data has as many classes as the model's head (at least 2)."""
  if data.num_classes < 2:
    raise ValueError(
      f'{config.data.source} has {data.num_classes} class; a classifier needs at least 2 '
      '(one folder per class under train/ and test/)'
    )
  if data.num_classes != config.model.num_classes:
    raise ValueError(
      f'{config.data.source} has {data.num_classes} classes but config.model.num_classes is '
      f'{config.model.num_classes}; set --config.model.num_classes={data.num_classes}'
    )
