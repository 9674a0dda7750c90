"""The BlockSwap search: propose -> score -> rank -> write (SPEC sections 1 and 4).

`run_search(config, workdir)` proposes genotypes inside the constraints (the
configured strategy: BlockSwap samples them uniformly), initialises each by
the seed contract, scores it by the configured metric on one minibatch, and
writes to the workdir:

  best_genotype.json  the winner, its counts, score and per-block scores, and the
                      settings of the search (`record.SearchRecord`)
  best_genotype.csv   the winner in the reference code's CSV format
  candidates.csv      every candidate, best first: rank,<metric>,<recorded metrics...>,
                      params,macs,blocks (config.search.record_metrics; the params
                      metric, in millions, is the column params_metric)
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
from bswap.scoring.proxies import aggregate
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
  size, seed = metrics.batch_size_of(config), config.seed
  if config.search.batch_size is None:  # say which default applied, and how to change it
    logging.info(
      'Scoring on batches of %d images (the default for %s; --config.search.batch_size sets it)',
      size,
      'Fisher potential alone on a WRN' if size != metrics.PAPER_BATCH else 'these metrics',
    )

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
    value = config.search[name]
    if value is not None and value < 1:  # batch_size None: its measured default
      raise ValueError(f'--config.search.{name} must be at least 1; got {value}')


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
  again, and each new score is added to it as it comes. A scorer with
  `score_chunk` (the batched engine) gets `score.chunk` items at a time, on
  `score.chunk_threads` threads (default 1); any other one item at a time, on
  `threads` threads. Progress: a bar on a terminal, else a line every
  `log_every` seconds.
  """

  def scored(i, geno, total, per_block, recorded):
    count = accounting.count(geno, skel.image_size, skel.num_classes)
    per_block = tuple(map(float, per_block))
    return Scored(i, geno, count.params, count.macs, float(total), per_block, recorded)

  def one(part):
    return [scored(i, geno, *score(geno, i, *batch_of(i))) for i, geno in part]

  def chunk(part):
    results = score.score_chunk([(geno, i, *batch_of(i)) for i, geno in part])
    return [scored(i, geno, *result) for (i, geno), result in zip(part, results)]

  done = {} if journal is None else journal.done
  todo = [item for item in items if item[0] not in done]
  if hasattr(score, 'score_chunk'):
    size = max(1, score.chunk)
    # One chunk fills a GPU; on a CPU the scorer may ask for more (chunk_threads).
    work, threads = chunk, getattr(score, 'chunk_threads', 1)
    parts = [todo[start : start + size] for start in range(0, len(todo), size)]
  else:
    work, parts = one, [[item] for item in todo]
  # Candidates in flight on several threads: XLA compiles and runs outside the
  # GIL, so one candidate's compile or single-threaded op overlaps another's.
  # Each score is independent of scheduling; results are journalled in the
  # order they finish and returned in the order of `items`.
  out = {}
  shown = progress.Progress(
    len(items),
    desc='scoring',
    unit='candidate',
    initial=len(items) - len(todo),
    every_seconds=log_every,
  )
  with shown, concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
    for future in concurrent.futures.as_completed([pool.submit(work, part) for part in parts]):
      result = future.result()
      for s in result:
        if journal is not None:
          journal.append(s)
        out[s.index] = s
      shown.update(len(result))
  return [done[i] if i in done else out[i] for i, _ in items]


def aggregate_pool(config, scored: list[Scored]) -> list[Scored]:
  """rank_aggregate over the pool, as the score (if it ranks) or a recorded column."""
  members = metrics.aggregate_members(config)
  if not members:
    return scored
  ranking = metrics.get(config.search.metric).name
  value_of = lambda s, n: s.score if n == ranking else s.recorded[n]
  values = {n: [value_of(s, n) for s in scored] for n in members}
  signs = {n: metrics.get(n).sign for n in members}
  pooled = aggregate.rank_aggregate(values, signs, config.search.aggregate)
  bad = {n: int(np.sum(~np.isfinite(v))) for n, v in values.items()}
  for n, count in bad.items():
    if count:
      logging.warning('%d candidates have a non-finite %s: ranked last by rank_aggregate', count, n)
  ranks_it = ranking == 'rank_aggregate'
  out = []
  for s, value in zip(scored, pooled):
    recorded = {**s.recorded}
    if ranks_it:
      out.append(dataclasses.replace(s, score=float(value), recorded=recorded))
    else:
      recorded['rank_aggregate'] = float(value)
      out.append(dataclasses.replace(s, recorded=recorded))
  return out


def rank(scored: list[Scored], metric: metrics.Metric) -> list[Scored]:
  """Predicted best first (by the metric's sign); ties keep the order of proposal.

  A non-finite Fisher potential means broken data and stops the search; a
  zero-cost proxy's NaN or infinity (a constant Jacobian row, a singular
  activation kernel: PROXIES.md) is a verdict on the network, ranked last.
  """
  if metric.name != 'fisher_potential':
    bad = [s for s in scored if not np.isfinite(s.score)]
    if bad:
      logging.warning('%d candidates have a non-finite %s: ranked last', len(bad), metric.name)
    key = lambda s: (not np.isfinite(s.score), -metric.sign * np.nan_to_num(s.score), s.index)
    return sorted(scored, key=key)
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
    score = metrics.search_scorer(config, skel, pieces)
    batch_of = fisher_batches(config, data)
    threads = config.search.threads
    every = progress.every_seconds(config)
    score_all = lambda items: score_candidates(
      skel, batch_of, score, threads, items, journal, every
    )
    # Propose: genotypes inside the constraints (fails at once on an unreachable budget).
    outcome = strategies.get(config.search.strategy)(config, skel, score_all)
  ranked = rank(aggregate_pool(config, outcome.scored), metric)
  return Result(ranked, outcome.acceptance, time.perf_counter() - start)


# A recorded metric named like one of these (NASLib's 'params', in millions) gets '_metric'.
_FIXED_COLUMNS = ('rank', 'params', 'macs', 'blocks')


def candidates_csv(ranked: list[Scored], metric: str) -> str:
  """One row per candidate: rank, the ranking metric, each recorded metric, params, macs, blocks."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  recorded = list(ranked[0].recorded) if ranked else []
  columns = [f'{n}_metric' if n in _FIXED_COLUMNS else n for n in recorded]
  writer.writerow(['rank', metric, *columns, *_FIXED_COLUMNS[1:]])
  for r, s in enumerate(ranked, start=1):
    extra = [repr(s.recorded[n]) for n in recorded]
    writer.writerow([r, repr(s.score), *extra, s.params, s.macs, ' '.join(s.genotype.blocks)])
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
    journal = journal_lib.Journal(workdir, config, metrics.recorded_metrics(config))
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
