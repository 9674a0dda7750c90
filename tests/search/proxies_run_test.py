"""Searches ranked by a zero-cost proxy, recording others: the outputs name the metrics."""

import csv
import json

import numpy as np
import pytest

from bswap.scoring import engine
from bswap.scoring import metrics
from bswap.search import run as search
from configs import cifar_400k


def _config(metric: str, record: str = '', candidates: int = 3):
  config = cifar_400k.get_config('smoke')
  config.model.width = 1
  config.search.budget = 20_000  # WRN-10-1
  config.search.band = 0.3
  config.search.num_candidates = candidates
  config.search.metric = metric
  config.search.record_metrics = record
  return config


def _rows(workdir):
  with open(workdir / 'candidates.csv') as f:
    return list(csv.DictReader(f))


def test_synflow_ranks_and_every_recorded_metric_is_a_column(tmp_path):
  config = _config('synflow', 'params,flops,l2_norm,rank_aggregate', candidates=2)
  config.search.aggregate_metrics = 'synflow,l2_norm'
  search.run_search(config, str(tmp_path))
  record = json.loads((tmp_path / 'best_genotype.json').read_text())
  assert record['metric'] == 'synflow' and record['settings']['metric'] == 'synflow'
  rows = _rows(tmp_path)
  header = ['rank', 'synflow', 'params_metric', 'flops', 'l2_norm', 'rank_aggregate']
  assert list(rows[0]) == [*header, 'params', 'macs', 'blocks']
  scores = [float(r['synflow']) for r in rows]
  assert scores == sorted(scores, reverse=True) and scores[0] == record['score'] > 0
  assert set(record['recorded']) == {'params', 'flops', 'l2_norm', 'rank_aggregate'}
  for r in rows:  # NASLib's params (in millions) is the count the search's budget checks
    assert np.isclose(float(r['params_metric']) * 1e6, int(r['params']), rtol=1e-12)
  # log_rank's best possible value is 0 (first on every member)
  assert all(float(r['rank_aggregate']) <= 0 for r in rows)


@pytest.mark.slow
def test_a_whole_network_metric_grasp_runs_a_search_end_to_end(tmp_path):
  config = _config('grasp', candidates=2)
  search.run_search(config, str(tmp_path))
  record = json.loads((tmp_path / 'best_genotype.json').read_text())
  assert record['metric'] == 'grasp' and record['block_scores'] == []
  rows = _rows(tmp_path)
  assert list(rows[0])[:2] == ['rank', 'grasp'] and len(rows) == 2
  assert float(rows[0]['grasp']) >= float(rows[1]['grasp'])


def test_ranking_by_rank_aggregate_scores_the_pool(tmp_path):
  config = _config('rank_aggregate')
  config.search.aggregate_metrics = 'params,l2_norm'
  search.run_search(config, str(tmp_path))
  record = json.loads((tmp_path / 'best_genotype.json').read_text())
  assert record['settings']['aggregate_metrics'] == 'params,l2_norm'
  rows = _rows(tmp_path)
  assert list(rows[0])[:4] == ['rank', 'rank_aggregate', 'params_metric', 'l2_norm']
  scores = [float(r['rank_aggregate']) for r in rows]
  assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
  'field,value,message',
  [
    ('record_metrics', 'synflow,snap', 'record_metrics names unknown metrics snap'),
    ('aggregate_metrics', 'rank_aggregate', 'aggregate_metrics'),
  ],
)
def test_bad_metric_lists_fail_before_writing(tmp_path, field, value, message):
  config = _config('rank_aggregate' if field == 'aggregate_metrics' else 'synflow')
  config.search[field] = value
  with pytest.raises(ValueError, match=message):
    search.run_search(config, str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_fisher_engine_and_proxy_engine_share_one_table_of_pieces(tmp_path):
  # Ranked by fisher_potential on its engine, nwot recorded on the proxy engine: the two
  # engines' compiled pieces live in one table, and their keys must not collide.
  config = _config('fisher_potential', 'nwot', candidates=2)
  result = search.search(config)
  skel = search.skeleton(config)
  data = search.data_lib.open_data(config)
  images, labels = data.fisher_batch(config.search.batch_size, config.seed)
  with engine.Pieces() as pieces:
    alone = metrics.score_all(config, skel, pieces, ['nwot'])
    for s in result.ranked:
      assert s.recorded['nwot'] == alone(s.genotype, s.index, images, labels)['nwot']
      assert len(s.block_scores) == skel.num_blocks
