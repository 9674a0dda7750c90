"""The BlockSwap search: propose -> score -> rank -> write (SPEC sections 1 and 4).

`run_search(config, workdir)` proposes genotypes inside the constraints (the
configured strategy: BlockSwap samples them uniformly), initialises each by
the seed contract, scores it by the configured metric on one minibatch, and
writes to the workdir:

  best_genotype.json  the winner, its counts, score and per-block scores, and the
                      settings of the search (`record.SearchRecord`)
  best_genotype.csv   the winner in the reference code's CSV format
  candidates.csv      every candidate, best first: rank,<metric>,params,macs,blocks
  search.png          params vs score, and the winner block by block

`search(config)` does the same without writing (the benchmark times it). Files
are written whole or not at all, and the same config gives identical files.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import io
import os
import time

import jax
import numpy as np
from absl import logging

from bswap import data as data_lib
from bswap import files
from bswap import progress
from bswap.data import sources
from bswap.nets import accounting
from bswap.nets import arch as arch_lib
from bswap.nets import genotype as genotype_lib
from bswap.scoring import engine as engine_lib
from bswap.scoring import metrics
from bswap.search import journal as journal_lib
from bswap.search import memory
from bswap.search import record as record_lib
from bswap.search import strategies

Scored = record_lib.Scored


@dataclasses.dataclass(frozen=True)
class Result:
  ranked: list[Scored]  # best first
  acceptance: float
  seconds: float


def skeleton(config) -> arch_lib.Skeleton:
  """The network of config.model at config.data's resolution, block types left open."""
  m = config.model
  return arch_lib.skeleton(m.arch, m.depth, m.width, config.data.image_size, m.num_classes)


def enable_compilation_cache(path: str) -> None:
  """Persist XLA executables so that a second search skips its compiles."""
  if not path:
    return
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
  # The default (1 s) would skip the many sub-second per-block compiles.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def fisher_batches(config, data: data_lib.Data):
  """index -> (images, labels) a candidate is scored on: one shared batch, or one each."""
  size, seed = config.search.batch_size, config.seed

  def batch(index=None):
    try:
      return data.fisher_batch(size, seed, index)
    except sources.BatchSizeError as e:
      raise ValueError(f'--config.search.batch_size={size}: {e}') from None

  if config.search.fresh_batch_per_candidate:
    return batch
  shared = batch()
  return lambda index: shared


def check_config(config) -> None:
  """Search settings that would otherwise fail late, or with another name."""
  for name in ('num_candidates', 'batch_size'):
    if config.search[name] < 1:
      raise ValueError(f'--config.search.{name} must be at least 1; got {config.search[name]}')


def score_candidates(
  skel,
  batch_of,
  score,
  threads: int,
  items,
  journal=None,
  log_every: float = progress.DEFAULT_EVERY_SECONDS,
) -> list[Scored]:
  """Scores of `items`, (candidate index, genotype) pairs, in their order.

  With a `journal` (bswap.search.journal), candidates it holds are not scored
  again, and each new score is added to it as it comes. Progress: a bar on a
  terminal, else a line every `log_every` seconds.
  """

  def one(item):
    i, geno = item
    total, per_block = score(geno, i, *batch_of(i))
    count = accounting.count(geno, skel.image_size, skel.num_classes)
    return Scored(i, geno, count.params, count.macs, float(total), tuple(map(float, per_block)))

  done = {} if journal is None else journal.done
  todo = [item for item in items if item[0] not in done]
  # Candidates in flight on several threads: XLA compiles and runs outside the
  # GIL, so one candidate's compile or single-threaded op overlaps another's.
  # Each score is independent of scheduling; results are journalled in the
  # order they finish and returned in the order of `items`.
  scored = {}
  shown = progress.Progress(
    len(items),
    desc='scoring',
    unit='candidate',
    initial=len(items) - len(todo),
    every_seconds=log_every,
  )
  with shown, concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
    for future in concurrent.futures.as_completed([pool.submit(one, item) for item in todo]):
      s = future.result()
      if journal is not None:
        journal.append(s)
      scored[s.index] = s
      shown.update(1)
  return [done[i] if i in done else scored[i] for i, _ in items]


def rank(scored: list[Scored], metric: metrics.Metric) -> list[Scored]:
  """Predicted best first (by the metric's sign); ties keep the order of proposal."""
  for s in scored:
    if not np.isfinite(s.score):
      raise ValueError(
        f'candidate {s.index} ({" ".join(s.genotype.blocks)}) has a non-finite {metric.name} '
        f'{s.score}; check the input data (NaN pixels?) and the batch size'
      )
  return sorted(scored, key=lambda s: (-metric.sign * s.score, s.index))


def search(config, pieces: engine_lib.Pieces | None = None, journal=None) -> Result:
  """Propose, score and rank as `config.search` says; writes nothing but to `journal`."""
  start = time.perf_counter()
  check_config(config)
  metric = metrics.get(config.search.metric)
  # Data: the training split the Fisher batch comes from (in memory, or listed only).
  data = data_lib.open_data(config)
  data_lib.check_num_classes(data, config)
  # Score: the metric at initialisation, by the configured engine.
  skel = skeleton(config)
  with contextlib.ExitStack() as stack:
    if pieces is None:
      pieces = stack.enter_context(engine_lib.Pieces())
    score = metrics.make_scorer(config, skel, pieces)
    batch_of = fisher_batches(config, data)
    threads = config.search.threads
    every = progress.every_seconds(config)
    score_all = lambda items: score_candidates(
      skel, batch_of, score, threads, items, journal, every
    )
    # Propose: genotypes inside the constraints (fails at once on an unreachable budget).
    outcome = strategies.get(config.search.strategy)(config, skel, score_all)
  ranked = rank(outcome.scored, metric)
  return Result(ranked, outcome.acceptance, time.perf_counter() - start)


def candidates_csv(ranked: list[Scored], metric: str) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['rank', metric, 'params', 'macs', 'blocks'])
  for r, s in enumerate(ranked, start=1):
    writer.writerow([r, repr(s.score), s.params, s.macs, ' '.join(s.genotype.blocks)])
  return out.getvalue()


def write_outputs(config, workdir: str, result: Result) -> dict[str, str]:
  """Render every output in memory first, then write them as one set (files.write_set)."""
  from bswap import plots  # matplotlib is imported only when a picture is drawn

  best, metric = result.ranked[0], config.search.metric
  record = record_lib.SearchRecord.of(config, best, result.acceptance)
  outputs = {
    record_lib.FILE: record.to_json(),
    'best_genotype.csv': genotype_lib.dumps_reference_csv(best.genotype, best.score),
    'candidates.csv': candidates_csv(result.ranked, metric),
    'search.png': plots.search_figure(
      result.ranked, config.search.budget, config.search.band, metrics.get(metric).label
    ),
  }
  return files.write_set(workdir, outputs, record_lib.MANIFEST)


def run_search(config, workdir: str) -> Scored:
  """Search and write; returns the best candidate."""
  files.check_writable(workdir)  # before the work, not after it
  enable_compilation_cache(config.search.compilation_cache_dir)
  # Else the process keeps what every compile freed (bswap/search/memory.py).
  memory.return_freed_memory(low=config.search.low_memory)
  # Scored candidates go to a journal as they finish: a rerun resumes a killed search.
  journal = None
  if not files.is_url(workdir) and jax.process_index() == 0:
    journal = journal_lib.Journal(workdir, config)
  try:
    result = search(config, journal=journal)
    paths = write_outputs(config, workdir, result)
  finally:
    if journal is not None:
      journal.close()
  if journal is not None:
    journal.remove()
  best, n = result.ranked[0], len(result.ranked)
  logging.info(
    'Best of %d: %s, %s params, %s MACs, %s %.6g. %.1f s (%.2f s per candidate).',
    n,
    ' '.join(best.genotype.paper_names),
    f'{best.params:,}',
    f'{best.macs:,}',
    metrics.get(config.search.metric).label,
    best.score,
    result.seconds,
    result.seconds / n,
  )
  for path in paths.values():
    logging.info('Wrote %s', path)
  return best
