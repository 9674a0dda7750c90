"""Filesystem errors found before the work, as one line (issue 12, case 4).

Paths are made unwritable by putting a file where a folder should be: that is
refused whoever runs the tests (root ignores permission bits).
"""

import errno
import os

import pytest
from PIL import Image

from bswap import files
from bswap.data import sources
from bswap.search import run as search_lib
from configs import cifar_400k


def test_a_search_into_a_workdir_that_is_a_file_is_refused_before_any_scoring(
  tmp_path, monkeypatch
):
  monkeypatch.setattr(search_lib, 'search', lambda *a: pytest.fail('searched anyway'))
  (tmp_path / 'taken').write_text('a file')
  with pytest.raises(ValueError, match=r'cannot write to .*taken.*is a file, not a folder'):
    search_lib.run_search(cifar_400k.get_config('smoke'), str(tmp_path / 'taken' / 'work'))


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_a_read_only_workdir_is_refused_naming_it(tmp_path):
  (tmp_path / 'ro').mkdir(mode=0o555)
  with pytest.raises(ValueError, match=r'cannot write to .*ro.*Permission denied'):
    files.check_writable(tmp_path / 'ro')


def test_an_unwritable_data_cache_is_skipped_with_a_warning(tmp_path, caplog):
  for split in ('train', 'test'):
    for name in ('a', 'b'):
      (tmp_path / 'data' / split / name).mkdir(parents=True)
      Image.new('RGB', (8, 8), (10, 20, 30)).save(tmp_path / 'data' / split / name / '0.png')
  (tmp_path / 'cache').write_text('a file where the cache folder should be')
  ds = sources.load(str(tmp_path / 'data'), 'train', cache_dir=str(tmp_path / 'cache'))
  assert len(ds) == 2 and ds.num_classes == 2
  assert 'Cannot write the data cache' in caplog.text and 'continuing without it' in caplog.text


def test_os_errors_become_one_line_with_the_path_and_a_fix():
  e = OSError(errno.EROFS, os.strerror(errno.EROFS), '/mnt/ro/metrics.jsonl')
  assert files.describe_error(e) == (
    '/mnt/ro/metrics.jsonl: Read-only file system; the file system is read-only: choose a '
    'path on a writable disk'
  )
