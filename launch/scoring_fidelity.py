"""Rank fidelity of cheaper Fisher scoring: shared initialisation and smaller batches (issue 17).

  PYTHONPATH=. python launch/scoring_fidelity.py --out runs/fidelity \\
      [--candidates 1000] [--variants pc128A,pc128B,sh128A,sh128B,pc64A,pc32A,pc16A] \\
      [--source DATA] [--study STUDY_WORKDIR] \\
      [--report-only] [--doc docs/scoring_fidelity.md] [--smoke]

One fixed list of candidates (sampled at 400K +- 2.5% for WRN-40-2 from the
config's seed: the search's own sample) is scored under each variant, named
INIT BATCH SEED: init 'pc' (per_candidate, the seed contract) or 'sh'
(shared; scored by the grouped engine, bswap/scoring/shared.py), the Fisher
batch size, and the weight seed, A (config.seed) or B (config.seed + 1). The
candidates and the batch images are the same for A and B: only the weights
differ, so A vs B is the noise floor of a variant's ranking. Every variant
is compared with pc128A, what the search runs today: Spearman's rho, whether
the top-1 pick is the same (and the pick's rank under pc128A), and the
overlap of the top 10. With --study, the members of a finished study
(study.csv: genotype, final_error; study.json: its config) are scored under
each variant too, and each variant's Spearman against final error reported.

Scores are cached per variant in OUT/scores/*.jsonl as they come (a killed
run resumes; a rerun or a new variant scores only what is missing);
--report-only writes the tables from the caches, over the candidates every
reported variant has. The report is OUT/fidelity.json and OUT/fidelity.md;
--doc FILE puts the tables between FILE's markers (the prose around them is
kept) or writes a new FILE.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import sys
import time

import jax
import numpy as np
from absl import logging

from bswap import data as data_lib
from bswap import defaults
from bswap.nets import genotype as genotype_lib
from bswap.scoring import engine as engine_lib
from bswap.scoring import metrics
from bswap.search import record as record_lib
from bswap.search import run as search_lib
from bswap.search import strategies
from bswap.study import stats

REFERENCE = 'pc128A'
DEFAULT_VARIANTS = 'pc128A,pc128B,sh128A,sh128B,pc64A,pc32A,pc16A'
SMOKE_VARIANTS = 'pc8A,pc8B,sh8A,sh8B,pc4A'
_NAME = re.compile(r'^(pc|sh)(\d+)([AB])$')
INITS = {'pc': 'per_candidate', 'sh': 'shared'}


def parse_variant(name: str) -> tuple[str, int, int]:
  """(init, batch size, seed offset) of a variant name like 'sh64B'."""
  m = _NAME.match(name)
  if not m:
    raise ValueError(f'variant {name!r} is not INIT BATCH SEED (e.g. pc128A, sh64B)')
  return INITS[m[1]], int(m[2]), 'AB'.index(m[3])


def base_config(smoke: bool, source: str):
  config = defaults.get(400_000, 'smoke' if smoke else None)
  config.data.source = 'synthetic' if smoke else source
  if smoke:  # a few block types: few compiles
    config.search.menu = 'Conv,DConv,G8B2'
  return config


def variant_config(config, name: str, chunk: int, shared_engine: str = 'fast'):
  """config scoring as variant `name`: its init, batch size, weight seed and engine."""
  init, batch, offset = parse_variant(name)
  v = copy.deepcopy(config)
  v.seed = config.seed + offset
  v.search.init = init
  v.search.batch_size = batch
  # per_candidate: the CPU's default (one at a time, 2 threads). shared: the same
  # scores from 'fast' (one at a time, its compiles those of per_candidate) or
  # 'batched' (grouped: more compiles, one per bucket size).
  v.search.engine = 'fast' if init == 'per_candidate' else shared_engine
  v.search.chunk = chunk
  v.search.metric = 'fisher_potential'
  v.search.record_metrics = ''
  return v


class Cache:
  """A variant's scores in a JSON-lines file: a settings line, then {index, score} lines."""

  def __init__(self, path: str, settings: dict):
    self.path, self.done, self.sessions = path, {}, []
    if os.path.exists(path):
      with open(path) as f:
        lines = [json.loads(line) for line in f if line.endswith('\n')]  # a cut line: dropped
      if lines and lines[0].get('settings') != settings:
        raise ValueError(
          f'{path} holds scores of other settings ({lines[0].get("settings")}); '
          'delete it or choose another --out'
        )
      for line in lines[1:]:
        if 'session' in line:
          self.sessions.append(line['session'])
        else:
          self.done[line['index']] = line['score']
    else:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        f.write(json.dumps({'settings': settings}) + '\n')
    self._file = open(path, 'a')

  def append(self, s: record_lib.Scored) -> None:
    self.done[s.index] = s.score
    self._file.write(json.dumps({'index': s.index, 'score': s.score}) + '\n')
    self._file.flush()

  def session(self, count: int, seconds: float, cpu_seconds: float) -> None:
    entry = {'count': count, 'seconds': seconds, 'cpu_seconds': cpu_seconds}
    entry['load'] = os.getloadavg()[0]
    self.sessions.append(entry)
    self._file.write(json.dumps({'session': entry}) + '\n')
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class _Journal:
  """What search_lib.score_candidates asks of a journal, over a Cache (done: Scored stand-ins)."""

  def __init__(self, cache: Cache, genotypes):
    self.cache = cache
    self.done = {
      i: record_lib.Scored(i, genotypes[i], 0, 0, cache.done[i], ())
      for i in genotypes
      if i in cache.done
    }

  def append(self, s: record_lib.Scored) -> None:
    self.cache.append(s)


def score_variant(
  config, name, genotypes, indices, data, cache: Cache, pieces, every, chunk, engine
):
  """Scores of the candidates `genotypes` (with seed-contract `indices`) under variant `name`."""
  v = variant_config(config, name, chunk, engine)
  skel = search_lib.skeleton(v)
  items = [(i, g) for i, g in zip(indices, genotypes)]
  todo = sum(i not in cache.done for i, _ in items)
  if not todo:
    return
  images, labels = data.fisher_batch(v.search.batch_size, config.seed)  # seed A's batch
  start, cpu = time.perf_counter(), time.process_time()
  score = metrics.search_scorer(v, skel, pieces)
  journal = _Journal(cache, dict(items))
  batch_of = lambda i: (images, labels)
  search_lib.score_candidates(skel, batch_of, score, v.search.threads, items, journal, every)
  cache.session(todo, time.perf_counter() - start, time.process_time() - cpu)


def settings_of(config, what: str, count: int) -> dict:
  s, m = config.search, config.model
  return {
    'what': what,
    'count': count,
    'network': f'{m.arch}-{m.depth}-{m.width}',
    'budget': s.budget,
    'band': s.band,
    'menu': s.menu,
    'seed': config.seed,
    'source': config.data.source,
    'image_size': config.data.image_size,
  }


# The study: its members, scored under each variant --------------------------------------


def study_config(config, study_dir: str):
  """config with the study's model, data, search and seed (study.json)."""
  with open(os.path.join(study_dir, 'study.json')) as f:
    recorded = json.load(f)
  out = copy.deepcopy(config)
  out.seed = recorded['seed']
  for section in ('model', 'data', 'search'):
    for k, value in recorded[section].items():
      if k in out[section] and value is not None:
        out[section][k] = tuple(value) if isinstance(value, list) else value
  return out


def study_members(study_dir: str, skel) -> tuple[list, list[int], np.ndarray]:
  """(genotypes, member indices, final errors) of study.csv's trained members."""
  with open(os.path.join(study_dir, 'study.csv')) as f:
    rows = [r for r in csv.DictReader(f) if r.get('final_error')]
  genos = [
    genotype_lib.Genotype(tuple(r['genotype'].split()), skel.arch, skel.depth, skel.width)
    for r in rows
  ]
  return genos, [int(r['index']) for r in rows], np.asarray([float(r['final_error']) for r in rows])


# The report ------------------------------------------------------------------------------


def agreement(score, reference) -> dict:
  """Spearman's rho, same top-1, the top-1's rank under `reference`, top-10 overlap."""
  score, reference = np.asarray(score), np.asarray(reference)
  order = np.argsort(-reference, kind='stable')
  ref_rank = np.empty(len(order), int)
  ref_rank[order] = np.arange(1, len(order) + 1)
  top = int(np.argmax(score))
  k = min(10, len(score))
  overlap = len(set(np.argsort(-score)[:k]) & set(order[:k])) / k
  return {
    'spearman': stats.spearman(score, reference),
    'top1_same': bool(top == order[0]),
    'top1_reference_rank': int(ref_rank[top]),
    'top10_overlap': overlap,
  }


def seconds_per_candidate(cache: Cache, key: str = 'seconds') -> float | None:
  """The median over scoring sessions after the first (its compiles) of `key` per candidate.

  'seconds': wall; 'cpu_seconds': the process's CPU time, which other jobs on
  the machine inflate far less than the wall time.
  """
  per = [s[key] / s['count'] for s in cache.sessions if key in s]
  return float(np.median(per[1:] if len(per) > 1 else per)) if per else None


def _pair(caches, a: str, b: str) -> dict:
  """agreement(b's scores, a's) over the candidates both have, with their count n."""
  common = sorted(set(caches[a].done) & set(caches[b].done))
  if len(common) < 2:
    return {'n': len(common)}
  score = lambda v: np.asarray([caches[v].done[i] for i in common])
  return {'n': len(common), **agreement(score(b), score(a))}


def report(variants, caches, study=None) -> dict:
  """Each variant against the first, and seed A against B, over the candidates both have."""
  ref = variants[0]
  rows = []
  for v in variants:
    init, batch, offset = parse_variant(v)
    row = {'variant': v, 'init': init, 'batch': batch, 'seed': 'AB'[offset]}
    row.update(_pair(caches, ref, v))
    row['seconds_per_candidate'] = seconds_per_candidate(caches[v])
    row['cpu_seconds_per_candidate'] = seconds_per_candidate(caches[v], 'cpu_seconds')
    if study is not None and v in study['scores']:
      s = study['scores'][v]
      row['study_spearman'] = stats.spearman(s, -study['errors'])  # + : ranks as errors do
    rows.append(row)
  pairs = {}  # seed-to-seed agreement of each (init, batch) with both seeds
  for v in variants:
    other = v[:-1] + 'B'
    if v.endswith('A') and other in variants:
      pairs[f'{v} vs {other}'] = _pair(caches, v, other)
      if study is not None and v in study['scores'] and other in study['scores']:
        pairs[f'{v} vs {other}']['study_spearman'] = stats.spearman(
          study['scores'][v], study['scores'][other]
        )
  return {
    'reference': ref,
    'candidates': max(len(c.done) for c in caches.values()),
    'rows': rows,
    'seed_pairs': pairs,
    'study_members': None if study is None else len(study['errors']),
    'jax': jax.__version__,
    'device': str(jax.devices()[0].device_kind),
    'cpus': os.cpu_count(),
  }


def markdown(rep: dict, command: str) -> str:
  f = lambda x, d=3: '-' if x is None else f'{x:.{d}f}'
  top1 = lambda a: '-' if 'top1_same' not in a else 'yes' if a['top1_same'] else 'no'
  lines = [
    f'Each variant against {rep["reference"]} over the n candidates both have scored (of '
    f'{rep["candidates"]}). Device: {rep["device"]} ({rep["cpus"]} CPUs), jax {rep["jax"]}. '
    f'Command: `{command}`.',
    '',
    '| variant | init | batch | weight seed | n | Spearman vs ref | same top-1 | ref rank of top-1 '
    '| top-10 overlap | wall s / cand. | CPU s / cand. | study Spearman (score, -error) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in rep['rows']:
    lines.append(
      f'| {r["variant"]} | {r["init"]} | {r["batch"]} | {r["seed"]} | {r["n"]} '
      f'| {f(r.get("spearman"))} | {top1(r)} | {r.get("top1_reference_rank", "-")} '
      f'| {f(r.get("top10_overlap"), 1)} | {f(r["seconds_per_candidate"], 2)} '
      f'| {f(r["cpu_seconds_per_candidate"], 2)} | {f(r.get("study_spearman"))} |'
    )
  lines += ['', 'Seed to seed (the noise floor: same candidates and images, other weights):', '']
  lines += [
    "| pair | n | Spearman | same top-1 | rank of B's top-1 under A | top-10 overlap "
    '| study members: Spearman A vs B |'
  ]
  lines += ['|---|---|---|---|---|---|---|']
  for pair, a in rep['seed_pairs'].items():
    lines.append(
      f'| {pair} | {a["n"]} | {f(a.get("spearman"))} | {top1(a)} '
      f'| {a.get("top1_reference_rank", "-")} | {f(a.get("top10_overlap"), 1)} '
      f'| {f(a.get("study_spearman"))} |'
    )
  if rep['study_members']:
    lines += ['', f'Study Spearman: over the {rep["study_members"]} trained study members.']
  return '\n'.join(lines) + '\n'


BEGIN, END = '<!-- scoring_fidelity.py: begin -->', '<!-- scoring_fidelity.py: end -->'


def write_doc(path: str, text: str) -> None:
  """The tables between the markers of `path` (the prose around them kept), or a new file."""
  old = open(path).read() if os.path.exists(path) else ''
  if BEGIN in old and END in old:
    head, rest = old.split(BEGIN, 1)
    new = f'{head}{BEGIN}\n{text}{END}{rest.split(END, 1)[1]}'
  else:
    new = f'# Scoring fidelity\n\n{BEGIN}\n{text}{END}\n'
  with open(path, 'w') as f:
    f.write(new)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', required=True)
  p.add_argument('--candidates', type=int, default=1000)
  p.add_argument('--variants', default=None)
  p.add_argument(
    '--source', default='cifar10', help="config.data.source ('cifar10' downloads; or a .tar.gz)"
  )
  p.add_argument('--study', default='')
  p.add_argument('--chunk', type=int, default=8, help="the shared variants' chunk")
  p.add_argument(
    '--shared-engine',
    default='fast',
    choices=['fast', 'batched'],
    help='engine of the shared variants (the same scores; fast: no compiles of its own)',
  )
  p.add_argument('--slice', type=int, default=100, help='candidates per variant in turn')
  p.add_argument('--report-only', action='store_true')
  p.add_argument('--doc', default='')
  p.add_argument('--smoke', action='store_true', help='WRN-10-2, 8 px synthetic, few types')
  p.add_argument('--every', type=float, default=60.0, help='seconds between progress lines')
  args = p.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  variants = (args.variants or (SMOKE_VARIANTS if args.smoke else DEFAULT_VARIANTS)).split(',')
  try:
    for v in variants:
      parse_variant(v)
  except ValueError as e:
    print(f'error: --variants: {e}', file=sys.stderr)
    return 2
  if REFERENCE not in variants and not args.smoke:
    variants.insert(0, REFERENCE)
  config = base_config(args.smoke, args.source)
  skel = search_lib.skeleton(config)
  genotypes = list(strategies.sample_candidates(config, skel, args.candidates).genotypes)
  indices = list(range(len(genotypes)))
  settings = settings_of(config, 'candidates', len(genotypes))
  caches = {v: Cache(os.path.join(args.out, 'scores', f'{v}.jsonl'), settings) for v in variants}
  study = None
  if args.study:
    sconfig = study_config(config, args.study)
    sskel = search_lib.skeleton(sconfig)
    s_genos, s_indices, errors = study_members(args.study, sskel)
    s_settings = settings_of(sconfig, f'study {os.path.abspath(args.study)}', len(s_genos))
    s_caches = {
      v: Cache(os.path.join(args.out, 'scores', f'study_{v}.jsonl'), s_settings) for v in variants
    }
    study = {'errors': errors, 'scores': {}}
  if not args.report_only:
    search_lib.enable_compilation_cache(config.search.compilation_cache_dir)
    with engine_lib.Pieces() as pieces:
      run = lambda *a: score_variant(*a, pieces, args.every, args.chunk, args.shared_engine)
      if args.study:
        sdata = data_lib.open_data(sconfig)
        for v in variants:
          run(sconfig, v, s_genos, s_indices, sdata, s_caches[v])
      data = data_lib.open_data(config)
      # Slice by slice, every variant in turn: whatever is done compares like with like.
      for start in range(0, len(genotypes), args.slice):
        part = slice(start, start + args.slice)
        for v in variants:
          logging.info('Variant %s: candidates %d-%d', v, start, start + args.slice - 1)
          run(config, v, genotypes[part], indices[part], data, caches[v])
  if args.study:
    for v in variants:
      if all(i in s_caches[v].done for i in s_indices):
        study['scores'][v] = np.asarray([s_caches[v].done[i] for i in s_indices])
  reported = [v for v in variants if caches[v].done]
  if not reported:
    print('error: no variant has scores yet; run without --report-only first', file=sys.stderr)
    return 2
  rep = report(reported, caches, study)
  command = 'python launch/scoring_fidelity.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
  text = markdown(rep, command)
  with open(os.path.join(args.out, 'fidelity.json'), 'w') as f:
    json.dump(rep, f, indent=1)
  with open(os.path.join(args.out, 'fidelity.md'), 'w') as f:
    f.write(text)
  if args.doc:
    write_doc(args.doc, text)
  print(text)
  for c in caches.values():
    c.close()
  return 0


if __name__ == '__main__':
  sys.exit(main())
