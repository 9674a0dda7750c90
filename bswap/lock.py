"""One run per workdir: a lock file naming the process that holds it.

`locked(workdir)` holds `<workdir>/bswap.lock` for the duration of a block; the
file says which process has the workdir (pid, host, command, start time). A
second run on a busy workdir is refused at once with a ValueError naming that
process. A lock left by a process that is gone (kill -9, a crash) on this host
is taken over with a warning; one from another host cannot be checked from
here, so the message says how to remove it.

The lock is created with a hard link from a complete temporary file, so a
reader never sees a half-written lock. Object-store workdirs (gs://...) are not
locked (no atomic create there); nor are processes other than 0 of a
multi-process job, which run the one job process 0 locks.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import uuid
from collections.abc import Iterator

from absl import logging

from bswap import files

FILE = 'bswap.lock'


def _start_time(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (Linux), telling a reused pid apart."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      stat = f.read()
  except OSError:
    return None
  fields = stat.rsplit(')', 1)[-1].split()  # the command name may hold spaces
  return None if fields[0] == 'Z' else fields[19]  # a zombie has ended


def _alive(pid: int, start_time: str | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # another user's process
  now = _start_time(pid)
  if os.path.exists(f'/proc/{pid}'):
    return now is not None and (start_time is None or now == start_time)
  return True


def holder_info() -> dict:
  pid = os.getpid()
  return {
    'pid': pid,
    'host': socket.gethostname(),
    'command': shlex.join([sys.executable, *sys.argv]),
    'started': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
    'start_time': _start_time(pid),
  }


def _read(path: str) -> dict | None:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}


def _busy(workdir: str, path: str, holder: dict) -> ValueError:
  return ValueError(
    f'{workdir} is in use by pid {holder.get("pid")} on {holder.get("host")} '
    f'(since {holder.get("started")}: {holder.get("command")}); wait for it to end, or use '
    f'another --workdir (if that process is gone, delete {path})'
  )


def _try_create(path: str, info: dict) -> bool:
  """Creates the lock holding `info` whole; False if one exists."""
  tmp = f'{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}'
  with open(tmp, 'x', encoding='utf-8') as f:
    json.dump(info, f)
    f.flush()
    os.fsync(f.fileno())
  try:
    os.link(tmp, path)  # fails if the lock exists: atomic, and the lock is whole
    return True
  except FileExistsError:
    return False
  finally:
    os.remove(tmp)


def _take_over(path: str, stale: dict) -> None:
  """Moves a dead process's lock aside, unless another run replaced it meanwhile."""
  aside = f'{path}.stale{os.getpid()}'
  with contextlib.suppress(FileNotFoundError):
    os.rename(path, aside)
    if _read(aside) != stale:  # a live run's lock, taken between our read and the rename
      with contextlib.suppress(FileExistsError):
        os.link(aside, path)
    os.remove(aside)


def acquire(workdir: str) -> str:
  """Takes the workdir's lock (see the module doc); returns its path."""
  path = os.path.join(workdir, FILE)
  info = holder_info()
  for _ in range(3):
    if _try_create(path, info):
      return path
    holder = _read(path)
    if holder is None:  # released meanwhile
      continue
    if holder.get('host') != info['host'] or not isinstance(holder.get('pid'), int):
      raise _busy(workdir, path, holder)
    if _alive(holder['pid'], holder.get('start_time')):
      raise _busy(workdir, path, holder)
    logging.warning(
      'Taking over %s: its process (pid %d, %s) has ended',
      path,
      holder['pid'],
      holder.get('command'),
    )
    _take_over(path, holder)
  raise _busy(workdir, path, _read(path) or {})


def release(path: str) -> None:
  """Removes the lock if this process still holds it."""
  holder = _read(path)
  if holder and holder.get('pid') == os.getpid():
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


@contextlib.contextmanager
def locked(workdir: str, process_index: int = 0) -> Iterator[None]:
  """Holds `workdir`'s lock inside the block; checks that the workdir is writable first.

  A workdir this call created is removed again if the block leaves it empty
  (a refused run leaves nothing behind).
  """
  workdir = os.fspath(workdir)
  if files.is_url(workdir) or process_index != 0:
    yield
    return
  created = not os.path.exists(workdir)
  files.check_writable(workdir)
  files.makedirs(workdir)
  try:
    path = acquire(workdir)
    try:
      yield
    finally:
      release(path)
  finally:
    if created:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)  # only if empty
