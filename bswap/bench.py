"""Scoring benchmark: a whole search's data, sampling, init, compiles and scoring, timed.

  python -m bswap.bench --candidates 1000 --budget 400000 --batch 128 \
      [--engine auto|fast|batched|reference] [--chunk N] [--init per_candidate|shared]
      [--json FILE] [--verify N]
  python -m bswap.bench --arch resnet34 --budget 3000000 --candidates 20   # ImageNet, 224 px
  python -m bswap.bench --config=configs/cifar_400k.py --config.search.threads=1
  python -m bswap.bench --metric synflow            # rank by another metric
  python -m bswap.bench --metric fisher_potential,all   # rank by one, record every other

It runs `bswap.search.run.search`, what the search stage runs, without writing
the search's files. The config is --config's, or without one bswap's CIFAR-10
search (bswap.defaults; the ImageNet one with --arch resnet34); this module's
flags override it, and so do --config.FIELD=VALUE flags. The data are
synthetic unless --source (or --config) names others, so it needs no
download. Prints a summary and, with --json FILE, writes {device,
jax_version, engine, candidates, wall_seconds, candidates_per_second,
compile_count, cache_hits, compile_seconds, peak_rss_bytes, cpu_seconds,
init, ...}.
`compile_count` counts real XLA compilations (persistent-cache misses);
`--cache-dir ''` runs cold.
--verify N rescores the winner and N-1 other candidates (drawn from the seed)
on the ranking metric's reference path (whole network, plain jax.grad: one
compile per candidate; under shared init, the one-at-a-time engine) and
reports how far the timed engine's scores are from it (`verify` in the JSON);
the timings exclude this check.
"""

from __future__ import annotations

import time

_START = time.perf_counter()  # before JAX is imported: wall time includes start-up

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from jax import monitoring  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bswap import data as data_lib  # noqa: E402
from bswap import defaults  # noqa: E402
from bswap import files  # noqa: E402
from bswap import logs  # noqa: E402
from bswap.nets import arch as arch_lib  # noqa: E402
from bswap.scoring import engine as engine_lib  # noqa: E402
from bswap.scoring import fisher_engines  # noqa: E402
from bswap.scoring import metrics  # noqa: E402
from bswap.search import memory  # noqa: E402
from bswap.search import run as search_lib  # noqa: E402

_CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'
ENGINES = ['auto', 'fast', 'batched', 'reference']
IMPLS = ['auto', 'fast', 'xla']
INITS = ['per_candidate', 'shared']
ARCHS = list(arch_lib.ARCHS)


def _define_flags(args: list[str]) -> flags.FlagValues:
  """This command's flags, in a FlagValues of their own (bswap.main defines --config too).

  `args` (the command line to parse, program name first) tells config_flags
  which --config.FIELD overrides to define: it reads sys.argv otherwise.
  """
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    'config', None, 'Config file (default: bswap.defaults).', flag_values=fv, sys_argv=args
  )
  define = lambda fn, name, default, text, **kw: fn(name, default, help=text, flag_values=fv, **kw)
  define(flags.DEFINE_integer, 'candidates', None, 'candidates (default 1000)', lower_bound=1)
  define(flags.DEFINE_integer, 'budget', None, 'parameter budget (default 400,000; ResNet-34: 3M)')
  define(
    flags.DEFINE_integer,
    'batch',
    None,
    'scoring batch size (default: 16 for Fisher potential alone on a WRN, else 128)',
    lower_bound=1,
  )
  define(flags.DEFINE_enum, 'engine', None, 'scoring engine (default auto)', enum_values=ENGINES)
  define(flags.DEFINE_integer, 'chunk', None, "candidates per 'batched' call", lower_bound=1)
  define(
    flags.DEFINE_enum, 'init', None, 'Fisher weights (default per_candidate)', enum_values=INITS
  )
  define(flags.DEFINE_enum, 'conv-impl', None, 'convolutions (default auto)', enum_values=IMPLS)
  define(flags.DEFINE_integer, 'threads', None, 'candidates scored concurrently', lower_bound=1)
  define(flags.DEFINE_boolean, 'low-memory', None, 'mmap large buffers: smaller peak, slower')
  define(flags.DEFINE_string, 'json', None, 'write the results to this file')
  define(
    flags.DEFINE_integer, 'verify', 0, 'rescore N candidates on the reference path', lower_bound=0
  )
  define(flags.DEFINE_enum, 'arch', 'wrn', 'network, without --config', enum_values=ARCHS)
  define(flags.DEFINE_integer, 'depth', None, 'WRN depth (default 40)', lower_bound=10)
  define(flags.DEFINE_integer, 'width', None, 'WRN width (default 2)', lower_bound=1)
  define(flags.DEFINE_integer, 'image-size', None, '32 (wrn), 224 (resnet34)', lower_bound=4)
  define(flags.DEFINE_integer, 'seed', None, 'seed (default 0)')
  define(flags.DEFINE_string, 'source', None, "data (default 'synthetic' without --config)")
  define(flags.DEFINE_integer, 'cutout', None, 'WRN: Cutout size (default 16)', lower_bound=0)
  define(flags.DEFINE_string, 'cache-dir', None, "compile cache; '' = none (default ~/.cache)")
  define(
    flags.DEFINE_string,
    'metric',
    None,
    "NAME[,NAME...]: rank by the first, record the rest ('all': every other metric)",
  )
  return fv


class CompileCounter:
  """Counts backend compiles and persistent-cache hits through jax.monitoring.

  The compile-duration event also fires when an executable comes from the
  persistent cache, so real compilations are compiles minus cache hits. A
  context manager: the listeners are removed on exit.
  """

  def __init__(self):
    self.compiles, self.cache_hits, self.seconds = 0, 0, 0.0

  def _on_duration(self, event: str, duration: float, **_):
    if event == memory.COMPILE_EVENT:
      self.compiles += 1
      self.seconds += duration

  def _on_event(self, event: str, **_):
    if event == _CACHE_HIT_EVENT:
      self.cache_hits += 1

  def __enter__(self) -> CompileCounter:
    monitoring.register_event_duration_secs_listener(self._on_duration)
    monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    monitoring.unregister_event_duration_listener(self._on_duration)
    monitoring.unregister_event_listener(self._on_event)


def bench_config(fv: flags.FlagValues):
  """--config (or bswap.defaults' search), then this module's flags on top."""
  _flag = lambda name: fv[name].value
  config = fv.config
  if config is None:
    if _flag('arch') == arch_lib.RESNET34:
      config = defaults.imagenet_config(_flag('budget') or 3_000_000)
    else:
      config = defaults.cifar_config(_flag('budget') or 400_000)
      size = _flag('image-size')
      if size:  # SPEC's crop padding and Cutout (4 and 16 at 32 px), scaled to the images
        config.data.crop_pad, config.data.cutout = max(1, size // 8), max(1, size // 2)
    config.data.source = 'synthetic'
  if 'search' not in config:
    raise ValueError(
      'the benchmark times a search: --config must have a search section '
      '(a search or pipeline config, e.g. configs/cifar_400k.py)'
    )
  overrides = {  # flag -> the config field it sets
    'seed': ('seed',),
    'depth': ('model', 'depth'),
    'width': ('model', 'width'),
    'source': ('data', 'source'),
    'image-size': ('data', 'image_size'),
    'cutout': ('data', 'cutout'),
    'budget': ('search', 'budget'),
    'candidates': ('search', 'num_candidates'),
    'batch': ('search', 'batch_size'),
    'engine': ('search', 'engine'),
    'chunk': ('search', 'chunk'),
    'init': ('search', 'init'),
    'conv-impl': ('search', 'conv_impl'),
    'threads': ('search', 'threads'),
    'low-memory': ('search', 'low_memory'),
    'cache-dir': ('search', 'compilation_cache_dir'),
  }
  for flag, path in overrides.items():
    value = _flag(flag)
    if value is None:
      continue
    section = config if len(path) == 1 else config.get(path[0])
    if section is None or path[-1] not in section:
      raise ValueError(f'--{flag} does not apply to this config (it has no {".".join(path)})')
    section[path[-1]] = value
  if _flag('metric'):
    first, *rest = [n.strip() for n in _flag('metric').split(',') if n.strip()]
    config.search.metric = first
    config.search.record_metrics = ','.join(rest)
  if config.data.source == 'synthetic':  # enough examples for any Fisher batch
    config.data.synthetic_size = max(metrics.batch_size_of(config), 256)
  return config


def run(config, verify: int = 0) -> dict:
  """The timed search's summary; with verify > 0, its scores checked after the timing."""
  with CompileCounter() as counter:
    search_lib.enable_compilation_cache(config.search.compilation_cache_dir)
    memory.return_freed_memory(low=config.search.low_memory)
    result = search_lib.search(config)
  wall = time.perf_counter() - _START
  usage = resource.getrusage(resource.RUSAGE_SELF)
  best, s = result.ranked[0], config.search
  device = jax.devices()[0]
  summary = {
    'device': f'{device.platform}:{device.device_kind}',
    'device_count': jax.device_count(),
    'jax_version': jax.__version__,
    'metric': s.metric,
    'record_metrics': s.record_metrics,
    'engine': metrics.resolve_engine(config, jax.default_backend()),  # 'auto' resolved
    'chunk': fisher_engines.chunk_of(config, jax.default_backend()),  # as the engine ran it
    'init': fisher_engines.init_of(config),
    'conv_impl': s.conv_impl,
    'threads': s.threads,
    'low_memory': s.low_memory,
    'candidates': len(result.ranked),
    'budget': s.budget,
    'batch': metrics.batch_size_of(config),
    'network': search_lib.skeleton(config).name,
    'wall_seconds': wall,
    'search_seconds': result.seconds,
    'candidates_per_second': len(result.ranked) / wall,
    'compile_count': counter.compiles - counter.cache_hits,
    'cache_hits': counter.cache_hits,
    'compile_seconds': counter.seconds,
    'peak_rss_bytes': usage.ru_maxrss * 1024,  # KiB on Linux
    # The process's CPU time: on a machine shared with other jobs, far less
    # inflated than the wall time.
    'cpu_seconds': usage.ru_utime + usage.ru_stime,
    'best_score': best.score,
    'best_blocks': list(best.genotype.blocks),
  }
  if verify:
    summary['verify'] = verify_scores(config, result.ranked, verify)
  return summary


def verify_engine(config) -> str:
  """The engine --verify rescores on; a clear error before the work if there is none."""
  metric = metrics.get(config.search.metric)
  # Shared weights have no whole-network path: the one-at-a-time engine is their reference.
  against = 'reference' if fisher_engines.init_of(config) == 'per_candidate' else 'fast'
  if against not in metric.engines:
    raise ValueError(
      f'--verify: {metric.name} has no {against} path to check against; '
      'drop --verify or rank by a per-candidate metric'
    )
  return against


def verify_scores(config, ranked, count: int) -> dict:
  """The winner and count-1 other candidates rescored on the reference path, compared.

  The reference path is the plainly written whole-network computation the
  engines are tested against; a relative difference near rounding (about 1e-6
  in float32) says the timed engine scored these candidates exactly.
  """
  against = verify_engine(config)
  reference = config.copy_and_resolve_references()
  reference.search.engine = against
  others = np.random.default_rng(config.seed).permutation(len(ranked) - 1)[: count - 1] + 1
  picks = [ranked[0], *(ranked[i] for i in sorted(others))]
  data = data_lib.open_data(config)
  batch_of = search_lib.fisher_batches(config, data)
  with engine_lib.Pieces() as pieces:
    score = metrics.make_scorer(reference, search_lib.skeleton(config), pieces)
    rescored = [float(score(s.genotype, s.index, *batch_of(s.index))[0]) for s in picks]
  diffs = [abs(r - s.score) / max(abs(r), np.finfo(float).tiny) for r, s in zip(rescored, picks)]
  worst = int(np.argmax(diffs))
  return {
    'engine': against,
    'candidates': len(picks),
    'indices': [s.index for s in picks],
    'max_relative_difference': float(diffs[worst]),
    'median_relative_difference': float(np.median(diffs)),
    'worst_index': picks[worst].index,
    'best_rescored': rescored[0],
  }


def main(argv: list[str] | None = None) -> int:
  args = ['bench', *(sys.argv[1:] if argv is None else argv)]
  fv = _define_flags(args)
  try:
    rest = fv(args)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if len(rest) > 1:
    print(f'error: unexpected arguments: {" ".join(rest[1:])}', file=sys.stderr)
    return 2
  flags.FLAGS.mark_as_parsed()  # absl logging then writes plain lines
  # The search's progress lines (minutes apart on a 1000-candidate CPU run) on stderr.
  logs.quiet_noise()
  logging.set_verbosity(logging.INFO)
  try:
    if fv.json:  # before the work, not after it
      files.check_writable(os.path.dirname(os.path.abspath(fv.json)))
    config = bench_config(fv)
    if fv.verify:
      verify_engine(config)
    result = run(config, fv.verify)
  except (ValueError, OSError) as e:
    print(f'error: {files.describe_error(e)}', file=sys.stderr)
    return 2
  print(
    f'{result["engine"]} engine on {result["device"]}: {result["candidates"]} {result["network"]} '
    f'candidates at {result["budget"]:,} params, batch {result["batch"]}, {result["metric"]}: '
    f'{result["wall_seconds"]:.1f} s end to end ({result["candidates_per_second"]:.2f}/s), '
    f'{result["compile_count"]} compiles ({result["cache_hits"]} cache hits, '
    f'{result["compile_seconds"]:.1f} s), peak RSS {result["peak_rss_bytes"] / 2**30:.2f} GiB'
  )
  if 'verify' in result:
    v = result['verify']
    print(
      f'verified {v["candidates"]} candidates (the best and {v["candidates"] - 1} others) on '
      f'the {v["engine"]} path: relative difference at most {v["max_relative_difference"]:.2e} '
      f'(median {v["median_relative_difference"]:.2e})'
    )
  if fv.json:
    try:
      files.write(fv.json, json.dumps(result, indent=2) + '\n')
    except OSError as e:
      print(f'error: {files.describe_error(e)}', file=sys.stderr)
      return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
