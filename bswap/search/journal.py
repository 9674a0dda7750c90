"""The search's journal: scored candidates kept as they finish, so a killed search resumes.

`<workdir>/search.journal.jsonl`: a first line with the search's settings
(`record.search_settings`), then one line per scored candidate (index,
genotype, params, MACs, score, per-block scores), each flushed and fsynced
when it is written. Floats are written as Python's repr, which reads back
exactly, so a resumed search writes the same bytes as an uninterrupted one.

A rerun with the same settings scores only the candidates the journal lacks;
one with other settings is refused, naming them. A line cut short by a kill
is dropped. The search removes its journal once its outputs are written.
"""

from __future__ import annotations

import contextlib
import json
import os

from absl import logging

from bswap import files
from bswap.nets import genotype as genotype_lib
from bswap.search import record as record_lib

FILE = 'search.journal.jsonl'


def _line(s: record_lib.Scored) -> str:
  entry = {
    'index': s.index,
    'genotype': s.genotype.to_dict(),
    'params': s.params,
    'macs': s.macs,
    'score': s.score,
    'block_scores': list(s.block_scores),
    'recorded': s.recorded,
  }
  return json.dumps(entry) + '\n'


def _scored(entry: dict, source: str) -> record_lib.Scored:
  return record_lib.Scored(
    int(entry['index']),
    genotype_lib.from_dict(entry['genotype'], source=source),
    int(entry['params']),
    int(entry['macs']),
    float(entry['score']),
    tuple(float(x) for x in entry['block_scores']),
    {name: float(value) for name, value in entry.get('recorded', {}).items()},
  )


class Journal:
  """The scored candidates of one search, read back on a resume and appended as they finish."""

  def __init__(self, workdir: str, config, recorded: tuple[str, ...] = ()):
    """`recorded`: the metrics each candidate records besides the ranking one."""
    self.path = os.path.join(workdir, FILE)
    settings = record_lib.search_settings(config)
    self.recorded = sorted(recorded)
    self.done: dict[int, record_lib.Scored] = {}
    header = {'settings': settings, 'recorded': self.recorded}
    self._lines = [json.dumps(header) + '\n']
    if os.path.exists(self.path):
      self._lines = self._read(config, self._lines)
    self._file = None  # opened by the first append: a search that fails first writes nothing

  def _read(self, config, header: list[str]) -> list[str]:
    text = files.read_text(self.path)
    rows = text.splitlines(keepends=True)
    try:
      first = json.loads(rows[0])
      recorded = first['settings']
    except (IndexError, ValueError, KeyError, TypeError):
      logging.warning('Ignoring the unreadable search journal %s', self.path)
      return header
    changed = record_lib.settings_mismatches(recorded, config)
    # Recorded metrics change candidates.csv, not the pick: a resume must still
    # have every column for every candidate.
    was = first.get('recorded', [])
    if was != self.recorded:
      changed.append(
        f'recorded metrics: {",".join(was) or "none"} -> {",".join(self.recorded) or "none"}'
      )
    if changed:
      raise ValueError(
        f'{self.path} is an unfinished search with other settings ({", ".join(changed)}); '
        f'rerun with its settings to resume it, or delete {self.path} to search afresh'
      )
    kept = [rows[0]]
    for row in rows[1:]:
      try:
        scored = _scored(json.loads(row), self.path)
      except (ValueError, KeyError, TypeError):
        break  # cut short by a kill: this candidate is scored again
      if not row.endswith('\n'):
        break
      self.done[scored.index] = scored
      kept.append(row)
    logging.info(
      'Resuming the search of %s: %d candidates scored already', self.path, len(self.done)
    )
    return kept

  def append(self, scored: record_lib.Scored) -> None:
    if self._file is None:
      files.write(self.path, ''.join(self._lines))  # whole lines only: a torn last one goes
      self._file = open(self.path, 'a', encoding='utf-8')  # noqa: SIM115 (closed by close())
    self._file.write(_line(scored))
    self._file.flush()
    os.fsync(self._file.fileno())
    self.done[scored.index] = scored

  def close(self) -> None:
    if self._file is not None:
      self._file.close()

  def remove(self) -> None:
    self.close()
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.path)
