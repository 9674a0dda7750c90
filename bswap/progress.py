"""Progress of long loops: a bar on a terminal, plain log lines everywhere else.

A tqdm bar redraws itself with carriage returns, which fill a log file (or a
TPU worker's nohup log) with one huge line and say nothing when stderr is
not a terminal. `Progress` draws the bar only on a terminal; elsewhere it
logs a plain line every `every_seconds` (config.log_every_seconds):

  epoch 3/200: step 120/390 | 1,234 images/s | loss 1.2345 | ETA 0:00:40 (run 5:12:00)

The rate is measured from the loop's first update, and the ETA divides what
is left (this loop's units, plus `after` units of work that follows, e.g.
the run's later epochs) by it.
"""

from __future__ import annotations

import datetime
import sys
import time

from absl import logging
from tqdm import tqdm

DEFAULT_EVERY_SECONDS = 60.0


def on_terminal(stream) -> bool:
  isatty = getattr(stream, 'isatty', None)
  try:
    return bool(isatty and isatty())
  except ValueError:  # a closed stream
    return False


def every_seconds(config) -> float:
  """config.log_every_seconds, or the default for configs that predate it."""
  value = float(config.get('log_every_seconds', DEFAULT_EVERY_SECONDS))
  if value < 0:
    raise ValueError(f'--config.log_every_seconds must be >= 0 (0: every update); got {value}')
  return value


def duration(seconds: float) -> str:
  """h:mm:ss (days spelt out past 24 h)."""
  return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
  """Counts `total` units of a loop; `update(n, **shown)` after each piece of work.

  Args:
    total: units in this loop.
    desc: what the loop is, the line's prefix ('epoch 3/200', 'evaluation').
    unit: a unit's name ('step', 'batch', 'candidate').
    images_per_unit: images a unit processes; the rate is then in images/s,
      else in units/s.
    initial: units already done before this loop started (a resumed epoch).
    after: units of work that follow this loop, counted in the second ETA.
    every_seconds: the interval of the log lines off a terminal (0: every update).
    enabled: False draws and logs nothing (processes other than the first).
    stream: where a terminal is looked for and the bar drawn (stderr).
    clock: seconds, monotonic (tests pass a fake).
  """

  def __init__(
    self,
    total: int,
    *,
    desc: str,
    unit: str = 'step',
    images_per_unit: int | None = None,
    initial: int = 0,
    after: int = 0,
    every_seconds: float = DEFAULT_EVERY_SECONDS,
    enabled: bool = True,
    stream=None,
    clock=time.monotonic,
  ):
    self.total, self.desc, self.unit = total, desc, unit
    self.images_per_unit, self.after, self.every = images_per_unit, after, every_seconds
    self.done, self.start_done, self.shown = initial, initial, {}
    self.clock = clock
    stream = sys.stderr if stream is None else stream
    self.bar = None
    self.lines = enabled and not on_terminal(stream)
    if enabled and not self.lines:
      self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, leave=False)
    self.start = self.last = clock()

  def update(self, n: int = 1, **shown) -> None:
    self.done += n
    self.shown.update(shown)
    if self.bar is not None:
      self.bar.update(n)
      if shown:
        self.bar.set_postfix(shown, refresh=False)
    elif self.lines:
      now = self.clock()
      if now - self.last >= self.every:
        self.last = now
        logging.info('%s', self.line(now))

  def line(self, now: float) -> str:
    """'<desc>: <unit> done/total | rate | shown values | ETA'."""
    seconds = now - self.start
    per_sec = (self.done - self.start_done) / seconds if seconds > 0 else 0.0
    if self.images_per_unit:
      rate = f'{per_sec * self.images_per_unit:,.0f} images/s'
    else:
      rate = f'{per_sec:,.2f} {self.unit}s/s'
    parts = [f'{self.desc}: {self.unit} {self.done:,}/{self.total:,}', rate]
    parts += [f'{key} {value}' for key, value in self.shown.items()]
    left = self.total - self.done
    if per_sec > 0:
      eta = f'ETA {duration(left / per_sec)}'
      if self.after:
        eta += f' (run {duration((left + self.after) / per_sec)})'
    else:
      eta = 'ETA unknown'
    return ' | '.join([*parts, eta])

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
