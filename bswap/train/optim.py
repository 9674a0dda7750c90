"""The optimiser and the learning-rate schedules (SPEC sections 5 and 6).

The optimiser is torch's SGD as the reference uses it: momentum 0.9 without
Nesterov, and L2 weight decay added to the gradient of every parameter before
the momentum (`add_decayed_weights` before `sgd`). The learning rate follows
one of `SCHEDULES`, stepped per epoch.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax

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
