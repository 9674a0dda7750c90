"""Ranking metrics: the registry that `config.search.metric` names.

An entry gives the metric's name, a one-line definition with its citation,
its sign (+1: a higher score predicts a better network, -1: a lower one), the
label plots and logs use, the passes it needs (bswap/scoring/proxies/passes.py)
and one scorer factory per engine:

  make(config, skeleton, pieces) -> score(genotype, index, images, labels) -> (total, per_block)

'fast' is the block-by-block engine (engine.py: compiles shared by every
candidate, held in the search's `pieces`); 'batched' the same pieces vmapped
over a chunk of candidates, block type by block type (batched.py; its scorer
also has `chunk` and `score_chunk(items)`, which the search uses); 'reference'
the plain whole-network path (one compile per candidate; the equivalence
target of the tests). 'auto' (`resolve_engine`) is 'fast' on CPUs and
'batched' on GPUs and TPUs. A metric without a 'fast' engine (grasp) has a
'whole' one: the whole network with the engine's convolutions (one compile
per architecture), run next to the engine's passes.

`score_all(config, skeleton, pieces, names)` scores a candidate by several
metrics at once, running each pass they need once (one loss backward serves
grad_norm, snip, plain, fisher and fisher_potential; one input-Jacobian pass
jacov and epe_nas). The zero-cost proxies are defined in ../shared/PROXIES.md;
`rank_aggregate` ranks a pool, not a candidate (proxies/aggregate.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging

from bswap.nets import arch as arch_lib
from bswap.nets import convs
from bswap.scoring import engine as engine_lib
from bswap.scoring import fisher_engines
from bswap.scoring.proxies import blockwise
from bswap.scoring.proxies import candidate as candidate_lib
from bswap.scoring.proxies import formulas

Scorer = fisher_engines.Scorer


@dataclasses.dataclass(frozen=True)
class Metric:
  name: str
  label: str  # for plots and logs
  definition: str  # one line, with its citation
  sign: int  # +1: higher predicts better; -1: lower does
  engines: Mapping[str, Callable[..., Scorer]]  # engine name -> make(config, skeleton, pieces)
  passes: tuple[str, ...] = ()  # what score_all runs for it (Candidate.run)
  # (pass outputs, candidate) -> the score; None for a pool-level metric (rank_aggregate)
  value: Callable[[Mapping[str, object], candidate_lib.Candidate], float] | None = None


# The registry ----------------------------------------------------------------------------


def _reference(name: str) -> Callable[..., Scorer]:
  """make(config, skel, pieces) for `name` on the whole-network path."""

  def make(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
    del pieces  # one compile per candidate and pass, cached per architecture

    def score(geno, index, images, labels):
      candidate = candidate_lib.Candidate.build(geno, skel, config.seed, index, images, labels)
      outputs = {p: candidate.run(p) for p in METRICS[name].passes}
      per_block = ()
      if name == 'fisher_potential':
        per_block = np.asarray(outputs['loss']['fisher_potential'], np.float64)
      return METRICS[name].value(outputs, candidate), per_block

    return score

  return make


def _sum_of(pass_name: str, key: str | None = None, sign: int = 1):
  def value(outputs, candidate):
    del candidate
    out = outputs[pass_name] if key is None else outputs[pass_name][key]
    return sign * float(np.sum(np.asarray(out, np.float64)))

  return value


def _blockwise(name: str) -> Callable[..., Scorer]:
  """make(config, skel, pieces) for `name` on the block engine (blockwise.py)."""

  def make(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
    score = score_all(config, skel, pieces, [name], engine='fast')
    return lambda geno, index, images, labels: (score(geno, index, images, labels)[name], ())

  return make


def _entry(name, label, definition, sign, passes, value) -> Metric:
  engines = {'reference': _reference(name)}
  # 'whole': the whole network with the engine's convs, next to the engine's passes.
  engines['fast' if set(passes) <= set(blockwise.PASSES) else 'whole'] = _blockwise(name)
  return Metric(name, label, definition, sign, engines, tuple(passes), value)


_ENTRIES = [
  # name, label, definition (citation), sign, passes, value
  (
    'fisher_potential',
    'Fisher potential',
    'Sum over blocks of the Fisher saliency of the residual branch output at '
    'initialisation (Turner et al. 2020, after Theis et al. 2018); SPEC section 4',
    +1,
    ('loss',),
    _sum_of('loss', 'fisher_potential'),
  ),
  (
    'grad_norm',
    'grad norm',
    'Sum over conv/dense layers of the Frobenius norm of dL/dW (Abdelfattah et al. 2021)',
    +1,
    ('loss',),
    _sum_of('loss', 'grad_norm'),
  ),
  (
    'snip',
    'SNIP',
    'Sum over conv/dense weights of |W * dL/dW|, connection sensitivity (Lee et al. 2019)',
    +1,
    ('loss',),
    _sum_of('loss', 'snip'),
  ),
  (
    'plain',
    'plain',
    'Sum over conv/dense weights of W * dL/dW, signed (Abdelfattah et al. 2021); '
    'observed to correlate negatively',
    +1,
    ('loss',),
    _sum_of('loss', 'plain'),
  ),
  (
    'fisher',
    'Fisher (layer)',
    'Sum over conv/dense outputs of fan_in times the channel Fisher saliency '
    '(Theis et al. 2018 as in Abdelfattah et al. 2021 / NASLib)',
    +1,
    ('loss',),
    _sum_of('loss', 'fisher'),
  ),
  (
    'grasp',
    'GraSP',
    "Minus sum over conv/dense weights of W * (H g), g = dL/dW (Wang et al. 2020, NASLib's sign)",
    +1,
    ('hvp',),
    _sum_of('hvp', sign=-1),
  ),
  (
    'synflow',
    'synflow',
    'Synaptic flow of the |weights|, BN-free network on an all-ones image, float64 '
    '(Tanaka et al. 2020); raw S, not ln S',
    +1,
    ('syn',),
    _sum_of('syn'),
  ),
  (
    'jacov',
    'jacov',
    'Minus sum of ln(l + k) + 1/(l + k) over eigenvalues of the input-Jacobian correlation '
    '(Mellor et al. 2021, as in Abdelfattah et al. 2021)',
    +1,
    ('jac',),
    lambda out, cand: formulas.jacov(out['jac']),
  ),
  (
    'epe_nas',
    'EPE-NAS',
    'Per-class input-Jacobian decorrelation (Lopes et al. 2021)',
    +1,
    ('jac',),
    lambda out, cand: formulas.epe_nas(
      out['jac'], np.asarray(cand.labels), cand.skeleton.num_classes
    ),
  ),
  (
    'nwot',
    'NWOT',
    'ln|det| of the Hamming kernel of ReLU activation codes over the batch (Mellor et al. 2021)',
    +1,
    ('codes',),
    lambda out, cand: formulas.nwot(out['codes']),
  ),
  (
    'zen',
    'Zen',
    'ln of the pre-pool response to an input perturbation of N(0,1)-weight net, plus BN '
    'variances (Lin et al. 2021)',
    +1,
    ('zen',),
    lambda out, cand: formulas.zen(*out['zen']),
  ),
  (
    'zico',
    'ZiCo',
    'Sum over layers of ln sum mean|g| / std(g) across two batches (Li et al. 2023)',
    +1,
    ('zico',),
    lambda out, cand: formulas.zico(out['zico']),
  ),
  (
    'meco',
    'MeCo',
    'Sum over feature maps of one image of the smallest channel-correlation eigenvalue '
    '(Jiang et al. 2023)',
    +1,
    ('meco',),
    lambda out, cand: formulas.meco(out['meco']),
  ),
  (
    'l2_norm',
    'L2 norm',
    'Sum over conv/dense layers of the Frobenius norm of the initial weights '
    '(Abdelfattah et al. 2021)',
    +1,
    ('static',),
    _sum_of('static', 'l2_norm'),
  ),
  (
    'params',
    'params (M)',
    'Trainable parameters / 1e6 (NAS-Bench-Suite-Zero, Krishnakumar et al. 2022)',
    +1,
    ('static',),
    lambda out, cand: out['static']['params'],
  ),
  (
    'flops',
    'FLOPs (M)',
    "tensorwatch's op count of a batch-1 forward / 1e6 (NAS-Bench-Suite-Zero)",
    +1,
    ('static',),
    lambda out, cand: out['static']['flops'],
  ),
]

METRICS = {
  name: _entry(name, label, definition, sign, passes, value)
  for name, label, definition, sign, passes, value in _ENTRIES
}
METRICS['fisher_potential'] = dataclasses.replace(
  METRICS['fisher_potential'],
  engines={
    'fast': fisher_engines.fast,
    'batched': fisher_engines.batched,
    'reference': fisher_engines.reference,
  },
)
METRICS['rank_aggregate'] = Metric(
  'rank_aggregate',
  'rank aggregate',
  'Aggregate of the pool ranks of config.search.aggregate_metrics by config.search.aggregate '
  '(log_rank: AZ-NAS, Lee and Ham 2024); a pool-level score',
  +1,
  {},
)
ALIASES = {'jacob_cov': 'jacov'}
# The NAS-Bench-Suite-Zero 13 (NASLib's keys).
NB_ZERO = (
  'epe_nas fisher flops grad_norm grasp jacov l2_norm nwot params plain snip synflow zen'.split()
)


def per_candidate(name: str) -> bool:
  """Whether `name` scores one candidate (every metric but the pool-level rank_aggregate)."""
  return get(name).value is not None


def score_all(
  config,
  skel: arch_lib.Skeleton,
  pieces: engine_lib.Pieces,
  names: Sequence[str],
  engine: str | None = None,
) -> Callable[..., dict[str, float]]:
  """score(geno, index, images, labels) -> {name: score}, each needed pass run once.

  With engine 'fast' (default: config.search.engine), the passes the block
  engine runs go through it (compiles shared by every candidate), the others
  (grasp) through the whole network; 'reference': all whole.
  """
  engine = engine or resolve_engine(config, jax.default_backend())
  proxy_engine = None
  if engine in ('fast', 'batched'):  # the proxies' block engine serves both
    impl = convs.resolve(config.search.conv_impl, jax.default_backend(), 'search.conv_impl')
    proxy_engine = blockwise.ProxyEngine(skel, pieces, impl)
  metrics = [get(n) for n in names]
  for m in metrics:
    if m.value is None:
      raise ValueError(f'{m.name} ranks a pool of candidates, not one: it cannot be scored alone')

  def score(geno, index, images, labels) -> dict[str, float]:
    candidate = candidate_lib.Candidate.build(
      geno, skel, config.seed, index, images, labels, proxy_engine
    )
    return evaluate(candidate, names)

  return score


def evaluate(candidate: candidate_lib.Candidate, names: Sequence[str]) -> dict[str, float]:
  """{name: score} of one candidate, every pass the metrics need run once."""
  metrics = [get(n) for n in names]
  needed = dict.fromkeys(p for m in metrics for p in m.passes)
  candidate.wanted = tuple(m.name for m in metrics)
  outputs = candidate.run_passes(tuple(needed))
  return {m.name: float(m.value(outputs, candidate)) for m in metrics}


def get(name: str) -> Metric:
  name = ALIASES.get(name, name)
  if name not in METRICS:
    raise ValueError(
      f'--config.search.metric={name!r} is unknown; choose one of {", ".join(METRICS)}'
    )
  return METRICS[name]


def resolve_engine(config, platform: str) -> str:
  """config.search.engine for a backend: 'auto' is 'fast' on CPUs, 'batched' elsewhere.

  On a CPU one candidate at a time is fastest (vmapped convolutions over weight
  sets become slower grouped ones there; docs/benchmarks.md); on a GPU or TPU
  a chunk's candidates of one block type share each kernel launch. A metric
  without a batched engine gets its fast one.
  """
  engine = config.search.engine
  if engine != 'auto':
    return engine
  metric = METRICS.get(config.search.metric)  # unknown: make_scorer names it
  # Under shared init too: the grouped engine (bswap/scoring/shared.py) has no
  # measured CPU time yet (docs/benchmarks.md), and 'fast' scores shared weights
  # one candidate at a time.
  return 'batched' if platform != 'cpu' and metric and 'batched' in metric.engines else 'fast'


def make_scorer(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces) -> Scorer:
  """The scorer of config.search.metric on config.search.engine (resolved for this backend)."""
  metric = get(config.search.metric)
  engine = resolve_engine(config, jax.default_backend())
  if engine == 'fast' and metric.engines and engine not in metric.engines:
    logging.info('%s has no block-by-block engine yet: scoring whole networks', metric.name)
    engine = 'whole' if 'whole' in metric.engines else 'reference'
  if not metric.engines:
    raise ValueError(
      f'--config.search.metric={metric.name} ranks the whole pool; the search computes it '
      'from config.search.aggregate_metrics after scoring'
    )
  if engine not in metric.engines:
    raise ValueError(
      f'--config.search.engine={engine!r} cannot score {metric.name}; choose one of '
      f'{", ".join(metric.engines)} or auto'
    )
  return metric.engines[engine](config, skel, pieces)


def split_names(text: str, flag: str) -> tuple[str, ...]:
  """Metric names from a comma list ('all': every per-candidate metric), checked."""
  text = text.strip()
  if text == 'all':
    return tuple(n for n in METRICS if per_candidate(n))
  names = tuple(dict.fromkeys(ALIASES.get(n, n) for n in (t.strip() for t in text.split(',')) if n))
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise ValueError(
      f'--config.search.{flag} names unknown metrics {", ".join(unknown)}; '
      f"choose from {', '.join(METRICS)} (or 'all')"
    )
  return names


def recorded_names(config) -> tuple[str, ...]:
  """The metrics a search records next to its ranking one (config.search.record_metrics)."""
  names = split_names(config.search.record_metrics, 'record_metrics')
  return tuple(n for n in names if n != get(config.search.metric).name)


def aggregate_members(config) -> tuple[str, ...]:
  """The metrics rank_aggregate combines, when the search ranks or records it; else ()."""
  s = config.search
  if 'rank_aggregate' not in (get(s.metric).name, *recorded_names(config)):
    return ()
  members = split_names(s.aggregate_metrics, 'aggregate_metrics')
  if not members or not all(per_candidate(n) for n in members):
    raise ValueError(
      f'--config.search.aggregate_metrics={s.aggregate_metrics!r} must list per-candidate '
      'metrics, e.g. synflow,jacov,snip'
    )
  return members


def recorded_metrics(config) -> tuple[str, ...]:
  """Every metric a search records beside its ranking one, rank_aggregate's members included."""
  return tuple(dict.fromkeys((*recorded_names(config), *aggregate_members(config))))


# The scoring batch when config.search.batch_size is None (the default). Fisher
# potential alone on a WRN ranks 1000 candidates at batch 16 as at SPEC's 128,
# within the seed-to-seed noise, at ~0.1x the cost (docs/scoring_fidelity.md);
# the other metrics (PROXIES.md: 128, or NASLib's 64) and ResNet-34 were not
# measured at 16, so they keep 128.
FISHER_ALONE_BATCH = 16
PAPER_BATCH = 128


def batch_size_of(config, computed: Sequence[str] | None = None) -> int:
  """The scoring batch size: config.search.batch_size, or its measured default.

  `computed`: the metrics scored on that batch (default: the search's ranking
  metric and its recorded ones); the small batch is used only where it was
  measured to rank as 128 does, Fisher potential alone on a WRN.
  """
  s = config.search
  if s.batch_size is not None:
    return s.batch_size
  if computed is None:
    computed = (get(s.metric).name, *recorded_metrics(config))
  alone = {get(n).name for n in computed} == {'fisher_potential'}
  return FISHER_ALONE_BATCH if alone and config.model.arch == 'wrn' else PAPER_BATCH


def search_scorer(config, skel: arch_lib.Skeleton, pieces: engine_lib.Pieces):
  """score(geno, index, images, labels) -> (total, per_block, {recorded name: score}).

  The ranking metric on its configured engine; the recorded ones (and
  rank_aggregate's members) by `score_all` in one call. A pool-level ranking
  metric returns total NaN, filled in once the pool is scored.
  """
  ranking = get(config.search.metric)
  others = [n for n in recorded_metrics(config) if per_candidate(n) and n != ranking.name]
  rank = make_scorer(config, skel, pieces) if per_candidate(ranking.name) else None
  rest = score_all(config, skel, pieces, others) if others else None

  def score(geno, index, images, labels):
    total, per_block = rank(geno, index, images, labels) if rank else (float('nan'), ())
    recorded = rest(geno, index, images, labels) if rest else {}
    return total, per_block, recorded

  if hasattr(rank, 'score_chunk'):  # the batched engine: the search hands it chunks

    def score_chunk(items):
      ranked = rank.score_chunk(items)
      return [(*r, rest(*item) if rest else {}) for item, r in zip(items, ranked)]

    score.score_chunk, score.chunk = score_chunk, rank.chunk
    score.chunk_threads = rank.chunk_threads
  return score
