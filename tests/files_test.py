"""bswap.files: whole-or-nothing writes, on local disks and through the URL path."""

import os
import stat

import pytest

from bswap import files


def _names(directory):
  return sorted(os.listdir(directory))


def test_write_stores_text_as_utf8_and_bytes_as_they_are(tmp_path):
  text, data = tmp_path / 'a.txt', tmp_path / 'b.bin'
  assert files.write(text, 'naïve — ok\n') == str(text)
  assert text.read_bytes() == b'na\xc3\xafve \xe2\x80\x94 ok\n'  # UTF-8
  assert files.read_text(text) == 'naïve — ok\n'
  files.write(data, b'\x00\xff\x89PNG')
  assert data.read_bytes() == b'\x00\xff\x89PNG'


def test_write_creates_missing_parents(tmp_path):
  path = tmp_path / 'a' / 'b' / 'c.json'
  files.write(str(path), '{}')
  assert path.read_text() == '{}'


def test_write_replaces_a_file_whole(tmp_path):
  path = tmp_path / 'f.txt'
  files.write(path, 'a long first version\n')
  files.write(path, 'short\n')
  assert path.read_text() == 'short\n'
  assert _names(tmp_path) == ['f.txt']


@pytest.mark.parametrize('binary', [True, False])
def test_an_exception_while_writing_leaves_the_old_file_and_no_temporary_file(tmp_path, binary):
  path = tmp_path / 'f'
  files.write(path, 'old')
  with pytest.raises(RuntimeError, match='interrupted'):
    with files.open_write(path, binary=binary) as f:
      f.write(b'half of the new' if binary else 'half of the new')
      raise RuntimeError('interrupted')
  assert path.read_text() == 'old'
  assert _names(tmp_path) == ['f']


def test_an_exception_while_writing_a_new_file_leaves_nothing(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    with files.open_write(tmp_path / 'new') as f:
      f.write(b'partial')
      raise KeyboardInterrupt
  assert _names(tmp_path) == []


@pytest.fixture
def umask():
  """Sets the process's umask for a test and restores it after."""
  old = os.umask(0o022)
  os.umask(old)
  yield lambda mask: os.umask(mask)
  os.umask(old)


@pytest.mark.parametrize('mask, mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask_as_a_plain_write_would(tmp_path, umask, mask, mode):
  umask(mask)
  path = files.write(tmp_path / 'f.txt', 'x')
  assert stat.S_IMODE(os.stat(path).st_mode) == mode
  with open(tmp_path / 'plain.txt', 'w') as f:
    f.write('x')
  assert stat.S_IMODE(os.stat(tmp_path / 'plain.txt').st_mode) == mode


def test_paths_with_a_scheme_are_urls():
  assert files.is_url('gs://bucket/run/metrics.jsonl') and files.is_url('s3://b/k')
  assert not files.is_url('/tmp/run/metrics.jsonl') and not files.is_url('run/gs:/x')


def test_exists_and_makedirs_on_local_paths(tmp_path):
  assert not files.exists(tmp_path / 'd')
  files.makedirs(tmp_path / 'd' / 'e')
  files.makedirs(tmp_path / 'd' / 'e')  # again: no error
  assert files.exists(tmp_path / 'd' / 'e')


class _FakeRemote:
  """What etils.epath gives for a URL: records each store."""

  stores = []

  def __init__(self, path):
    self.path = path

  def write_bytes(self, data):
    self.stores.append((self.path, data))

  def write_text(self, data):
    self.stores.append((self.path, data))


@pytest.fixture
def remote(monkeypatch):
  monkeypatch.setattr(_FakeRemote, 'stores', [])
  monkeypatch.setattr(files, '_path', lambda path: _FakeRemote(os.fspath(path)))
  return _FakeRemote


def test_a_url_is_stored_in_one_call_once_the_contents_are_whole(remote):
  url = 'gs://bucket/run/metrics.jsonl'
  with files.open_write(url, binary=False) as f:
    f.write('line 1\n')
    assert remote.stores == []  # nothing stored mid-write
    f.write('line 2\n')
  assert remote.stores == [(url, 'line 1\nline 2\n')]
  assert files.write('gs://bucket/a.png', b'\x89PNG') == 'gs://bucket/a.png'
  assert remote.stores[-1] == ('gs://bucket/a.png', b'\x89PNG')


def test_a_url_write_that_fails_stores_nothing(remote):
  with pytest.raises(RuntimeError):
    with files.open_write('gs://bucket/f') as f:
      f.write(b'partial')
      raise RuntimeError('interrupted')
  assert remote.stores == []
