"""Per-epoch metrics: metrics.jsonl, a TensorBoard log, and curves.png.

`metrics.jsonl` holds one JSON object per line, one line per epoch:
{"epoch", "step", "lr", "train_loss", "train_error", "test_loss", "test_error",
"images_per_sec", ...}; errors are in %. The TensorBoard log (tensorboardX,
which needs no TensorFlow) is optional: without tensorboardX it is skipped with
a warning. Only process 0 writes. Files are written whole (`bswap.files`), on
local disks and at URLs such as gs://bucket/dir.
"""

from __future__ import annotations

import json
import os

import jax
from absl import logging

from bswap import files

METRICS = 'metrics.jsonl'
CURVES = 'curves.png'
TENSORBOARD = 'tensorboard'


def read_records(path: str) -> list[dict]:
  if not files.exists(path):
    return []
  return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


class MetricWriter:
  """The epoch records of one run; on a resume, records past the restored step are dropped."""

  def __init__(self, run_dir: str, resumed_step: int, tensorboard: bool = True):
    self.run_dir = run_dir
    self.active = jax.process_index() == 0
    # A crash after the last checkpoint leaves records that the resumed run redoes.
    self.records = [
      r for r in read_records(os.path.join(run_dir, METRICS)) if r['step'] <= resumed_step
    ]
    self.tb = (
      _summary_writer(os.path.join(run_dir, TENSORBOARD)) if self.active and tensorboard else None
    )
    self._write_records()

  def _write_records(self) -> None:
    if self.active:
      text = ''.join(json.dumps(r) + '\n' for r in self.records)
      files.write(os.path.join(self.run_dir, METRICS), text)

  def write(self, record: dict) -> None:
    """Adds one epoch's record to metrics.jsonl (rewritten whole) and TensorBoard."""
    self.records.append(record)
    self._write_records()
    if self.tb is not None:
      for key, value in record.items():
        if key not in ('epoch', 'step') and isinstance(value, int | float):
          self.tb.add_scalar(key, value, record['step'])
      self.tb.flush()

  def draw(self) -> None:
    """Redraws curves.png from all records (a few hundred ms: not every epoch)."""
    if self.active and self.records:
      from bswap import plots  # matplotlib only when a picture is drawn

      files.write(os.path.join(self.run_dir, CURVES), plots.curves_figure(self.records))

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


def _summary_writer(logdir: str):
  try:
    from tensorboardX import SummaryWriter  # optional: absent on some accelerator hosts
  except ImportError:
    logging.warning('tensorboardX is not installed: no TensorBoard log (pip install tensorboardX)')
    return None
  try:
    return SummaryWriter(logdir)
  except Exception as e:  # e.g. a URL its installed extras cannot write to
    logging.warning('No TensorBoard log: tensorboardX cannot write to %s (%s)', logdir, e)
    return None
