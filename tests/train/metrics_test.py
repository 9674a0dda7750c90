"""metrics.jsonl and curves.png: records written whole, a resume drops what it redoes."""

import io
import json
import os

import pytest
from PIL import Image

from bswap.train import metrics


def _record(epoch, steps_per_epoch=4):
  return {
    'epoch': epoch,
    'step': epoch * steps_per_epoch,
    'lr': 0.1,
    'train_loss': 2.0 / epoch,
    'train_ce': 2.0 / epoch,
    'train_error': 80.0 / epoch,
    'test_loss': 2.5 / epoch,
    'test_error': 85.0 / epoch,
  }


def _lines(run_dir):
  return [json.loads(line) for line in (run_dir / metrics.METRICS).read_text().splitlines()]


def test_each_record_rewrites_metrics_jsonl_whole(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path), resumed_step=0, tensorboard=False)
  assert (tmp_path / metrics.METRICS).read_text() == ''  # written at once, empty
  for epoch in (1, 2, 3):
    writer.write(_record(epoch))
    assert _lines(tmp_path) == [_record(e) for e in range(1, epoch + 1)]
  writer.close()
  assert sorted(os.listdir(tmp_path)) == [metrics.METRICS]  # no temporary files left


def test_a_resume_drops_records_past_the_restored_step(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path), resumed_step=0, tensorboard=False)
  for epoch in (1, 2, 3):
    writer.write(_record(epoch))
  # Killed after epoch 3's record, before its checkpoint: the run resumes at step 8.
  resumed = metrics.MetricWriter(str(tmp_path), resumed_step=8, tensorboard=False)
  assert resumed.records == [_record(1), _record(2)]
  assert _lines(tmp_path) == [_record(1), _record(2)]  # on disk at once, not at the next write
  resumed.write(_record(3))
  assert [r['epoch'] for r in _lines(tmp_path)] == [1, 2, 3]


def test_read_records_of_a_missing_file_is_empty(tmp_path):
  assert metrics.read_records(str(tmp_path / metrics.METRICS)) == []


def test_draw_writes_curves_png_from_every_record(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path), resumed_step=0, tensorboard=False)
  writer.draw()
  assert not (tmp_path / metrics.CURVES).exists()  # nothing to draw yet
  writer.write(_record(1))
  writer.draw()
  one = (tmp_path / metrics.CURVES).read_bytes()
  writer.write(_record(2))
  writer.draw()
  two = (tmp_path / metrics.CURVES).read_bytes()
  assert Image.open(io.BytesIO(two)).format == 'PNG'
  assert one != two  # redrawn with the new record


def test_scalars_go_to_tensorboard_when_it_is_asked_for(tmp_path):
  pytest.importorskip('tensorboardX')
  writer = metrics.MetricWriter(str(tmp_path), resumed_step=0, tensorboard=True)
  writer.write(_record(1))
  writer.close()
  events = os.listdir(tmp_path / metrics.TENSORBOARD)
  assert len(events) == 1 and events[0].startswith('events.out.tfevents')
  assert (tmp_path / metrics.TENSORBOARD / events[0]).stat().st_size > 0
