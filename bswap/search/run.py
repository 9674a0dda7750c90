"""The BlockSwap search: sample -> score -> rank -> write (SPEC sections 1 and 4).

`run_search(config, workdir)` samples genotypes inside the budget, initialises
each by the seed contract, scores it by Fisher potential on one minibatch,
and writes to the workdir:

  best_genotype.json  the winner, its counts, score and per-block scores
  best_genotype.csv   the winner in the reference code's CSV format
  candidates.csv      every candidate, best first: rank,score,params,macs,blocks
  search.png          params vs Fisher potential, and the winner block by block

Files are written whole or not at all, and the same config gives identical
files.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import os
import time

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from bswap import files
from bswap.data import arrays as input_pipeline
from bswap.data import streamed as host_data
from bswap.nets import accounting
from bswap.nets import arch as arch_lib
from bswap.nets import genotype as genotype_lib
from bswap.nets import menu
from bswap.nets import models
from bswap.scoring import engine as engine_lib
from bswap.scoring import fisher
from bswap.search import sampler


@dataclasses.dataclass(frozen=True)
class Scored:
  """One scored candidate."""

  index: int  # its position in the sample: the seed contract's candidate index
  genotype: genotype_lib.Genotype
  params: int
  macs: int
  score: float
  block_scores: tuple[float, ...]


def search_menu(config) -> tuple[str, ...] | None:
  """The sub-menu from `config.search.menu` ('' = all 23 types)."""
  text = config.search.menu
  return tuple(menu.split_names(text)) if text else None


def sample_candidates(config, num: int | None = None):
  """(skeleton, sample): `num` (default config.search.num_candidates) genotypes in the budget."""
  skel = arch_lib.skeleton(
    config.model.arch,
    config.model.depth,
    config.model.width,
    config.data.image_size,
    config.model.num_classes,
  )
  sample = sampler.sample(
    skel,
    config.search.budget,
    num or config.search.num_candidates,
    seed=config.seed,
    band=config.search.band,
    names=search_menu(config),
    max_draws=config.search.max_draws,
  )
  logging.info(
    'Sampled %d genotypes of %s within %s +- %.1f%%: acceptance %.3g, %d draws.',
    len(sample.genotypes),
    skel.name,
    f'{config.search.budget:,}',
    100 * config.search.band,
    sample.acceptance,
    sample.draws,
  )
  return skel, sample


def load_train_data(config) -> input_pipeline.ArrayDataset | host_data.Split:
  """The training split the Fisher batches come from.

  Pipeline 'cifar': decoded into memory. 'imagenet': only listed; the Fisher
  batch decodes its own examples alone.
  """
  data = config.data
  input_pipeline.check_pipeline(data.pipeline)
  if data.pipeline == 'imagenet':
    return host_data.open_split(
      data.source,
      'train',
      num_classes=config.model.num_classes,
      synthetic_size=data.synthetic_size,
      image_size=data.image_size,
      seed=config.seed,
    )
  return input_pipeline.load(
    data.source,
    'train',
    image_size=data.image_size,
    num_classes=config.model.num_classes,
    synthetic_size=data.synthetic_size,
    seed=config.seed,
    cache_dir=data.cache_dir,
  )


def enable_compilation_cache(path: str) -> None:
  """Persist XLA executables so that a second search skips its compiles."""
  if not path:
    return
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
  # The default (1 s) would skip the many sub-second per-block compiles.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def make_scorer(config, skel):
  """`(genotype, index, images, labels) -> (total, per_block)` for the configured engine."""
  if config.search.engine == 'fast':
    scorer = engine_lib.Engine(skel, config.search.conv_impl, config.search.low_memory)
    return lambda geno, i, x, y: scorer.score(geno, config.seed, i, x, y)
  if config.search.engine == 'reference':

    def reference(geno, i, x, y):
      model = models.build(geno, skel.num_classes)
      variables = models.init_variables(model, config.seed, i, skel.image_size)
      total, per_block = jax.device_get(fisher.jitted_fisher(model)(variables, x, y))
      return float(total), per_block

    return reference
  raise ValueError(
    f"--config.search.engine={config.search.engine!r} is unknown; use 'fast' or 'reference'"
  )


def fisher_batch(config, train, index: int | None = None):
  """(images, labels) to score on, augmented as the pipeline's training batches are.

  index None: the batch all candidates share; else candidate `index`'s own.
  """
  batch_size, seed = config.search.batch_size, config.seed
  if config.data.pipeline == 'imagenet':
    options = host_data.Options.from_config(config.data)
    return host_data.fisher_batch(train, options, batch_size, seed, index)
  sizes = dict(pad=config.data.crop_pad, cutout=config.data.cutout)
  return input_pipeline.fisher_batch(train, batch_size, seed, index, **sizes)


def score_candidates(config, skel, sample, train) -> list[Scored]:
  """Fisher potential of every sampled genotype."""
  shared = fisher_batch(config, train)
  score = make_scorer(config, skel)

  def one(item):
    i, geno = item
    fresh = config.search.fresh_batch_per_candidate
    images, labels = fisher_batch(config, train, index=i) if fresh else shared
    total, per_block = score(geno, i, images, labels)
    count = accounting.count(geno, skel.image_size, skel.num_classes)
    return Scored(i, geno, count.params, count.macs, float(total), tuple(map(float, per_block)))

  # Candidates in flight on several threads: XLA compiles and runs outside the
  # GIL, so one candidate's compile or single-threaded op overlaps another's.
  # map() keeps the order, and each score is independent of scheduling.
  items = list(enumerate(sample.genotypes))
  with concurrent.futures.ThreadPoolExecutor(max(1, config.search.threads)) as pool:
    results = pool.map(one, items)
    return list(tqdm(results, total=len(items), desc='scoring', unit='cand'))


def rank(scored: list[Scored]) -> list[Scored]:
  """Highest Fisher potential first; ties keep sampling order."""
  for s in scored:
    if not np.isfinite(s.score):
      raise ValueError(
        f'candidate {s.index} ({" ".join(s.genotype.blocks)}) has a non-finite Fisher '
        f'potential {s.score}; check the input data (NaN pixels?) and the batch size'
      )
  return sorted(scored, key=lambda s: (-s.score, s.index))


def candidates_csv(ranked: list[Scored]) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['rank', 'score', 'params', 'macs', 'blocks'])
  for r, s in enumerate(ranked, start=1):
    writer.writerow([r, repr(s.score), s.params, s.macs, ' '.join(s.genotype.blocks)])
  return out.getvalue()


def versions() -> dict:
  import flax
  import optax

  return {'jax': jax.__version__, 'flax': flax.__version__, 'optax': optax.__version__}


def best_json(config, best: Scored, sample: sampler.Sample, num: int) -> str:
  record = {
    'genotype': best.genotype.to_dict(),
    'paper_names': list(best.genotype.paper_names),
    'params': best.params,
    'macs': best.macs,
    'score': best.score,
    'block_scores': list(best.block_scores),
    'candidate_index': best.index,
    'budget': config.search.budget,
    'band': config.search.band,
    'num_candidates': num,
    'acceptance': sample.acceptance,
    'seed': config.seed,
    'batch_size': config.search.batch_size,
    'fresh_batch_per_candidate': config.search.fresh_batch_per_candidate,
    'engine': config.search.engine,
    'data_source': config.data.source,
    'data_pipeline': config.data.pipeline,
    'image_size': config.data.image_size,
    'versions': versions(),
  }
  return json.dumps(record, indent=2) + '\n'


def write_outputs(config, workdir: str, ranked: list[Scored], sample) -> dict[str, str]:
  """Render every output in memory first, then move them into place."""
  from bswap import plots  # matplotlib is imported only when a picture is drawn

  best = ranked[0]
  texts = {
    'best_genotype.json': best_json(config, best, sample, len(ranked)),
    'best_genotype.csv': genotype_lib.dumps_reference_csv(best.genotype, best.score),
    'candidates.csv': candidates_csv(ranked),
  }
  png = plots.search_figure(ranked, config.search.budget, config.search.band)
  os.makedirs(workdir, exist_ok=True)
  paths = {}
  for name, text in texts.items():
    paths[name] = files.write_atomic(os.path.join(workdir, name), text)
  paths['search.png'] = files.write_atomic(os.path.join(workdir, 'search.png'), png)
  return paths


def run_search(config, workdir: str) -> Scored:
  """Sample, score, rank and write; returns the best candidate."""
  start = time.perf_counter()
  enable_compilation_cache(config.search.compilation_cache_dir)
  # Data: the training split (in memory, or listed only); the Fisher batch is drawn from it.
  train = load_train_data(config)
  # Sample: budgeted genotypes (fails at once on an unreachable budget).
  skel, sample = sample_candidates(config)
  # Score: Fisher potential of each candidate at initialisation.
  scored = score_candidates(config, skel, sample, train)
  # Rank and write.
  ranked = rank(scored)
  paths = write_outputs(config, workdir, ranked, sample)
  best = ranked[0]
  elapsed = time.perf_counter() - start
  logging.info(
    'Best of %d: %s, %s params, %s MACs, Fisher potential %.6g. %.1f s (%.2f s per candidate).',
    len(ranked),
    ' '.join(best.genotype.paper_names),
    f'{best.params:,}',
    f'{best.macs:,}',
    best.score,
    elapsed,
    elapsed / len(ranked),
  )
  for path in paths.values():
    logging.info('Wrote %s', path)
  return best
