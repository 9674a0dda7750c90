"""Writing files whole or not at all."""

from __future__ import annotations

import os


def write_atomic(path: str | os.PathLike, data: str | bytes) -> str:
  """Write `data` to a temporary file beside `path`, then rename it into place.

  A crash or an exception mid-write never leaves a half-written file at `path`.
  Returns the path written.
  """
  path = os.fspath(path)
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'wb' if isinstance(data, bytes) else 'w') as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
