"""What bswap's log shows: its own lines, not its libraries' chatter.

Orbax logs dozens of INFO lines per checkpoint opened or saved, and warns that
a directory opened read-only (a teacher's, an evaluated run's: on purpose) is
read-only; JAX logs "Unable to initialize backend 'tpu'" on every host without
a TPU. `quiet_noise()` drops those lines unless the verbosity is debug
(`-v=1`); every other warning stays.
"""

from __future__ import annotations

import logging as pylogging
import os

from absl import logging

_ORBAX = f'{os.sep}orbax{os.sep}'
_READ_ONLY = 'Given directory is read only'
_NO_BACKEND = 'Unable to initialize backend'


def is_noise(record: pylogging.LogRecord) -> bool:
  """True for the library lines bswap hides at the default verbosity."""
  message = record.msg if isinstance(record.msg, str) else ''
  if _ORBAX in record.pathname:
    return record.levelno < pylogging.WARNING or message.startswith(_READ_ONLY)
  return record.levelno < pylogging.WARNING and message.startswith(_NO_BACKEND)


class _Quiet(pylogging.Filter):
  def filter(self, record: pylogging.LogRecord) -> bool:
    return logging.level_debug() or not is_noise(record)


def quiet_noise() -> None:
  """Hides the noise from here on (idempotent).

  On absl's logger (orbax logs through absl) and absl's handler (JAX's own
  loggers reach it through the root logger).
  """
  for where in (logging.get_absl_logger(), logging.get_absl_handler()):
    if not any(isinstance(f, _Quiet) for f in where.filters):
      where.addFilter(_Quiet())
