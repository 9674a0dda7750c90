"""The search journal and the output set (issues 12.5, 16.3); the SIGKILL test is in run_test.py."""

import json

import pytest

from bswap import files
from bswap import pipeline
from bswap.nets import genotype as genotype_lib
from bswap.search import journal as journal_lib
from bswap.search import record as record_lib
from configs import cifar_400k

CANDIDATES = 5


def _config():
  config = cifar_400k.get_config('smoke')
  config.search.num_candidates = CANDIDATES
  return config


def test_a_journal_of_other_settings_is_refused_naming_them(tmp_path):
  journal = journal_lib.Journal(str(tmp_path), _config())
  journal.append(record_lib.Scored(0, _genotype(), 1, 2, 0.5, (0.25, 0.25)))
  journal.close()
  assert journal_lib.Journal(str(tmp_path), _config()).done[0].score == 0.5
  config = _config()
  config.seed, config.search.budget = 3, 60_000
  message = r'unfinished search with other settings \(seed: 0 -> 3, budget: 50000 -> 60000\)'
  with pytest.raises(ValueError, match=message):
    journal_lib.Journal(str(tmp_path), config)


def test_recorded_metrics_survive_a_resume_and_another_set_is_refused(tmp_path):
  recorded = ('snip', 'synflow')
  journal = journal_lib.Journal(str(tmp_path), _config(), recorded)
  scores = {'snip': 1.5, 'synflow': float('nan')}
  journal.append(record_lib.Scored(0, _genotype(), 1, 2, 0.5, (0.25, 0.25), scores))
  journal.close()
  back = journal_lib.Journal(str(tmp_path), _config(), recorded).done[0].recorded
  assert back['snip'] == 1.5 and back['synflow'] != back['synflow']  # NaN read back as NaN
  message = r'recorded metrics: snip,synflow -> snip\)'
  with pytest.raises(ValueError, match=message):
    journal_lib.Journal(str(tmp_path), _config(), ('snip',))


def _genotype():
  return genotype_lib.uniform('Conv', 10, 2)


def _first_set(tmp_path):
  old = {'best_genotype.json': 'old record', 'search.png': b'old picture'}
  files.write_set(tmp_path, old, record_lib.MANIFEST)
  return old


def test_a_failure_while_writing_the_set_leaves_the_old_set_whole(tmp_path, monkeypatch):
  old = _first_set(tmp_path)
  real, opened = open, []

  def full_disk(path, *args, **kwargs):
    if '.tmp' in str(path):
      opened.append(path)
      if len(opened) == 2:
        raise OSError(28, 'No space left on device', path)
    return real(path, *args, **kwargs)

  monkeypatch.setattr('builtins.open', full_disk)
  new = {'best_genotype.json': 'new record', 'search.png': b'new picture'}
  with pytest.raises(OSError, match='No space left'):
    files.write_set(tmp_path, new, record_lib.MANIFEST)
  monkeypatch.undo()
  assert (tmp_path / 'best_genotype.json').read_text() == old['best_genotype.json']
  assert files.check_set(tmp_path, record_lib.MANIFEST) == []
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*old, record_lib.MANIFEST])


def test_a_mixed_set_is_detected_and_not_reused(tmp_path):
  _first_set(tmp_path)
  (tmp_path / 'search.png').write_bytes(b'a picture of another search')
  with pytest.raises(ValueError, match=r'mixed set of search outputs \(search.png not as'):
    record_lib.check_outputs(str(tmp_path))
  assert not pipeline.search_done(_config(), str(tmp_path))
  config = _config()
  config.stage = 'student'
  config.train.genotype = None
  with pytest.raises(ValueError, match='mixed set of search outputs'):
    pipeline.student_genotype(config, str(tmp_path))
  json.loads((tmp_path / record_lib.MANIFEST).read_text())  # the manifest itself is JSON
