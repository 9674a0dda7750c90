"""The search end to end on the smoke config: outputs, budget, ranking, determinism."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from bswap.data import sources
from bswap.nets import accounting
from bswap.nets import genotype as genotype_lib
from bswap.search import journal as journal_lib
from bswap.search import record as record_lib
from bswap.search import run as search
from configs import cifar_400k

OUTPUTS = ('best_genotype.json', 'best_genotype.csv', 'candidates.csv', 'search.png')


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  config = cifar_400k.get_config('smoke')
  workdir = tmp_path_factory.mktemp('search')
  best = search.run_search(config, str(workdir))
  return config, workdir, best


@pytest.mark.slow
def test_writes_every_output(smoke_run):
  _, workdir, _ = smoke_run
  for name in OUTPUTS:
    assert (workdir / name).stat().st_size > 0
  assert (workdir / 'search.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert not [p for p in workdir.iterdir() if '.tmp' in p.name]


def test_best_is_inside_the_budget_and_ranked_first(smoke_run):
  config, workdir, best = smoke_run
  record = json.loads((workdir / 'best_genotype.json').read_text())
  geno = genotype_lib.from_dict(record)
  count = accounting.count(geno, config.data.image_size)
  budget, band = config.search.budget, config.search.band
  assert budget * (1 - band) < count.params < budget * (1 + band)
  assert (record['params'], record['macs']) == (count.params, count.macs)
  assert record['settings']['budget'] == budget and record['settings']['seed'] == config.seed
  assert record['metric'] == 'fisher_potential'
  assert len(record['block_scores']) == len(geno.blocks)
  assert np.isclose(sum(record['block_scores']), record['score'], rtol=1e-5)

  with open(workdir / 'candidates.csv') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['rank', 'fisher_potential', 'params', 'macs', 'blocks']
  assert len(rows) == config.search.num_candidates
  scores = [float(r['fisher_potential']) for r in rows]
  assert scores == sorted(scores, reverse=True)
  assert [int(r['rank']) for r in rows] == list(range(1, len(rows) + 1))
  assert float(rows[0]['fisher_potential']) == record['score']  # full precision, exactly equal
  assert rows[0]['blocks'].split() == list(geno.blocks)
  for r in rows:
    params = int(r['params'])
    assert budget * (1 - band) < params < budget * (1 + band)
  assert genotype_lib.load(workdir / 'best_genotype.csv', depth=10) == geno
  assert best.genotype == geno


@pytest.mark.slow
def test_same_seed_gives_identical_files(smoke_run, tmp_path):
  config, workdir, _ = smoke_run
  search.run_search(config, str(tmp_path))
  for name in OUTPUTS:
    assert (tmp_path / name).read_bytes() == (workdir / name).read_bytes(), name


@pytest.mark.slow
def test_fresh_batch_per_candidate_changes_scores_not_samples(smoke_run, tmp_path):
  config, workdir, _ = smoke_run
  config = config.copy_and_resolve_references()
  config.search.fresh_batch_per_candidate = True
  search.run_search(config, str(tmp_path))
  rows = lambda d: csv.DictReader(open(d / 'candidates.csv'))
  read = lambda d: {r['blocks']: r['fisher_potential'] for r in rows(d)}
  shared, fresh = read(workdir), read(tmp_path)
  assert set(shared) == set(fresh)
  assert shared != fresh


def test_unreachable_budget_fails_before_writing(tmp_path):
  config = cifar_400k.get_config('smoke')
  config.search.budget = 5_000_000
  with pytest.raises(ValueError, match='unreachable for WRN-10-2'):
    search.run_search(config, str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_a_dataset_with_another_class_count_is_refused_before_scoring(tmp_path):
  config = cifar_400k.get_config('smoke')
  config.model.num_classes = 12  # a head of 12 for a dataset of 3 classes
  config.data.source = str(tmp_path / 'folders')
  config.data.cache_dir = str(tmp_path / 'cache')
  for split in ('train', 'test'):
    for name in ('a', 'b', 'c'):
      folder = tmp_path / 'folders' / split / name
      folder.mkdir(parents=True)
      Image.new('RGB', (8, 8), (10, 20, 30)).save(folder / '0.png')
  with pytest.raises(ValueError, match=r'has 3 classes but config.model.num_classes is 12.*=3'):
    search.run_search(config, str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_a_one_class_dataset_is_refused_before_scoring(tmp_path):
  config = cifar_400k.get_config('smoke')
  config.data.source = str(tmp_path / 'folders')
  config.data.cache_dir = str(tmp_path / 'cache')
  for split in ('train', 'test'):
    folder = tmp_path / 'folders' / split / 'only'
    folder.mkdir(parents=True)
    Image.new('RGB', (8, 8), (10, 20, 30)).save(folder / '0.png')
  with pytest.raises(ValueError, match=r'has 1 class; a classifier needs at least 2'):
    search.run_search(config, str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_labels_outside_the_classes_are_refused():
  images = np.zeros((2, 8, 8, 3), np.uint8)
  with pytest.raises(ValueError, match=r'label 10 is outside 0..9'):
    sources.ArrayDataset(images, np.array([3, 10], np.int32), tuple('abcdefghij'))


def _journal_entries(path) -> int:
  """Whole candidate lines in the journal (a line being written does not count)."""
  try:
    return max(0, path.read_text().count('\n') - 1)  # less the settings line
  except FileNotFoundError:
    return 0


@pytest.mark.slow
def test_a_search_killed_mid_way_resumes_to_byte_identical_outputs(smoke_run, tmp_path, caplog):
  """Issue 16.3: SIGKILL after some candidates, rerun: the uninterrupted run's bytes."""
  config, uninterrupted, _ = smoke_run
  assert not (uninterrupted / journal_lib.FILE).exists()  # removed once the outputs are whole
  for attempt in range(3):  # a loaded machine may finish the search before the kill lands
    killed = tmp_path / f'killed{attempt}'
    command = [sys.executable, '-m', 'bswap.main', '--config=configs/cifar_400k.py:smoke']
    proc = subprocess.Popen([*command, f'--workdir={killed}'], stderr=subprocess.DEVNULL)
    journal = killed / journal_lib.FILE
    deadline = time.monotonic() + 300
    while _journal_entries(journal) < 1 and proc.poll() is None and time.monotonic() < deadline:
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if not (killed / 'best_genotype.json').exists():
      break
  scored = _journal_entries(journal)
  assert not (killed / 'best_genotype.json').exists(), 'finished before the kill'
  assert 1 <= scored <= config.search.num_candidates, (scored, journal.read_text())
  with open(journal, 'a') as f:  # as if killed in the middle of writing a line
    f.write('{"index": 4, "genot')
  journal_text = journal.read_text()

  caplog.set_level('INFO')
  search.run_search(config, str(killed))
  assert f'{scored} candidates scored already' in caplog.text, journal_text
  for name in (*OUTPUTS, record_lib.MANIFEST):
    assert (killed / name).read_bytes() == (uninterrupted / name).read_bytes(), (name, journal_text)
  assert not journal.exists()
