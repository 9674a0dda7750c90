"""Files written whole or not at all, on local disks and on object stores (gs://...).

Every file bswap writes goes through `write` (whole contents) or `open_write`
(streamed, for large arrays). A local file is written to a temporary file
beside its target and renamed into place, which POSIX makes atomic: a crash or
an exception leaves the old file or the new one, never half of one. A URL
(anything with '://', e.g. gs://bucket/run/metrics.jsonl) goes through
etils.epath, the path layer orbax already uses; the bytes are gathered first
and stored in one call, and an object store shows an object only once it is
whole.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
  return '://' in os.fspath(path)


def _path(path: str | os.PathLike) -> epath.Path:
  return epath.Path(os.fspath(path))


def makedirs(path: str | os.PathLike) -> None:
  """Creates the directory `path` and its parents if missing (a no-op for object stores)."""
  if is_url(path):
    _path(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(os.fspath(path), exist_ok=True)


def exists(path: str | os.PathLike) -> bool:
  return _path(path).exists() if is_url(path) else os.path.exists(os.fspath(path))


def read_text(path: str | os.PathLike) -> str:
  """The file's text (UTF-8), local or at a URL."""
  if is_url(path):
    return _path(path).read_text()
  with open(os.fspath(path), encoding='utf-8') as f:
    return f.read()


@contextlib.contextmanager
def open_write(path: str | os.PathLike, binary: bool = True) -> Iterator[io.IOBase]:
  """A file object whose contents appear at `path` whole when the block ends, or not at all.

  The parent directory is created if missing. For a URL the contents are
  gathered in memory and stored in one call when the block ends without an
  exception.
  """
  path = os.fspath(path)
  if is_url(path):
    buffer = io.BytesIO() if binary else io.StringIO()
    yield buffer
    data = buffer.getvalue()
    target = _path(path)
    target.write_bytes(data) if binary else target.write_text(data)
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # A name of its own per call (threads too); open() rather than mkstemp keeps
  # the permissions the umask gives, as a plain write would.
  tmp = f'{path}.tmp{os.getpid()}.{uuid.uuid4().hex[:8]}'
  try:
    with open(tmp, 'xb' if binary else 'x', encoding=None if binary else 'utf-8') as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write(path: str | os.PathLike, data: str | bytes) -> str:
  """Writes `data` (text or bytes) to `path` whole; returns the path written."""
  with open_write(path, binary=isinstance(data, bytes)) as f:
    f.write(data)
  return os.fspath(path)


def digest(data: str | bytes) -> str:
  return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def write_set(directory: str | os.PathLike, outputs: dict[str, str | bytes], manifest: str):
  """Writes several files as one set: a reader can tell a whole set from a mixed one.

  Every file is first written beside its target in full (a full disk fails
  here, leaving the old set as it was); then `manifest` (JSON: the files and
  their sha256) is written, and the files are renamed into place. A crash
  among the renames leaves files that `check_set` finds differing from the
  manifest. Returns the paths written.
  """
  directory = os.fspath(directory)
  paths = {name: os.path.join(directory, name) for name in outputs}
  text = json.dumps({'files': {n: digest(d) for n, d in outputs.items()}}, indent=2) + '\n'
  if is_url(directory):  # no rename on object stores: manifest first, then the files
    write(os.path.join(directory, manifest), text)
    return {n: write(paths[n], d) for n, d in outputs.items()}
  os.makedirs(directory, exist_ok=True)
  staged = {}
  try:
    for name, data in outputs.items():
      staged[name] = f'{paths[name]}.tmp{os.getpid()}.{uuid.uuid4().hex[:8]}'
      binary = isinstance(data, bytes)
      with open(staged[name], 'xb' if binary else 'x', encoding=None if binary else 'utf-8') as f:
        f.write(data)
    write(os.path.join(directory, manifest), text)
    for name, tmp in staged.items():
      os.replace(tmp, paths[name])
  finally:
    for tmp in staged.values():
      with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
  return paths


def check_set(directory: str | os.PathLike, manifest: str) -> list[str] | None:
  """The files of a set that differ from its manifest ([]: a whole set); None without one."""
  path = os.path.join(os.fspath(directory), manifest)
  if not exists(path):
    return None
  try:
    listed = json.loads(read_text(path))['files']
  except (ValueError, KeyError, TypeError):
    return [manifest]
  differ = []
  for name, want in listed.items():
    target = os.path.join(os.fspath(directory), name)
    if not exists(target) or digest(_path(target).read_bytes()) != want:
      differ.append(name)
  return differ


def describe_error(e: Exception) -> str:
  """One line for an entry point: a ValueError as it is; an OSError with its path and a fix."""
  if not isinstance(e, OSError):
    return str(e)
  path = e.filename if e.filename is not None else '(unknown path)'
  what = e.strerror or str(e)
  fixes = {
    errno.EACCES: 'check its permissions, or choose another path',
    errno.EPERM: 'check its permissions, or choose another path',
    errno.EROFS: 'the file system is read-only: choose a path on a writable disk',
    errno.ENOSPC: 'the disk is full: free some space, or choose a path on another disk',
    errno.ENOENT: 'check the path, or create the folder',
    errno.ENOTDIR: 'a part of the path is a file, not a folder: choose another path',
    errno.EEXIST: 'a file is in the way: move it, or choose another path',
    errno.EISDIR: 'it is a folder: name a file',
  }
  fix = fixes.get(e.errno, 'check the path and the disk')
  return f'{path}: {what}; {fix}'


def check_writable(directory: str | os.PathLike) -> None:
  """Proves that `directory` (or, if missing, the folder it would be made in) is writable.

  Creates nothing that stays: for the checks before long work. Raises a
  ValueError naming the path and the fix; object stores are not probed.
  """
  directory = os.fspath(directory)
  if is_url(directory):
    return
  existing = os.path.abspath(os.path.expanduser(directory))
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(
      f'cannot write to {directory}: {existing} is a file, not a folder; choose another path'
    )
  probe = os.path.join(existing, f'.bswap-write-test{os.getpid()}.{uuid.uuid4().hex[:8]}')
  try:
    with open(probe, 'x'):
      pass
    os.remove(probe)
  except OSError as e:
    e.filename = existing
    raise ValueError(f'cannot write to {directory}: {describe_error(e)}') from None
