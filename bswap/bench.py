"""Scoring benchmark: a whole search's data, sampling, init, compiles and scoring, timed.

  python -m bswap.bench --candidates 1000 --budget 400000 --batch 128 \
      [--engine auto|fast|batched|reference] [--chunk N] [--init per_candidate|shared]
      [--json FILE]
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
"""

from __future__ import annotations

import time

_START = time.perf_counter()  # before JAX is imported: wall time includes start-up

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
from absl import flags  # noqa: E402
from jax import monitoring  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bswap import defaults  # noqa: E402
from bswap import files  # noqa: E402
from bswap.nets import arch as arch_lib  # noqa: E402
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
  define(flags.DEFINE_integer, 'batch', None, 'Fisher batch size (default 128)', lower_bound=1)
  define(flags.DEFINE_enum, 'engine', None, 'scoring engine (default auto)', enum_values=ENGINES)
  define(flags.DEFINE_integer, 'chunk', None, "candidates per 'batched' call", lower_bound=1)
  define(
    flags.DEFINE_enum, 'init', None, 'Fisher weights (default per_candidate)', enum_values=INITS
  )
  define(flags.DEFINE_enum, 'conv-impl', None, 'convolutions (default auto)', enum_values=IMPLS)
  define(flags.DEFINE_integer, 'threads', None, 'candidates scored concurrently', lower_bound=1)
  define(flags.DEFINE_boolean, 'low-memory', None, 'mmap large buffers: smaller peak, slower')
  define(flags.DEFINE_string, 'json', None, 'write the results to this file')
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
    config.data.synthetic_size = max(config.search.batch_size, 256)
  return config


def run(config) -> dict:
  with CompileCounter() as counter:
    search_lib.enable_compilation_cache(config.search.compilation_cache_dir)
    memory.return_freed_memory(low=config.search.low_memory)
    result = search_lib.search(config)
  wall = time.perf_counter() - _START
  usage = resource.getrusage(resource.RUSAGE_SELF)
  best, s = result.ranked[0], config.search
  device = jax.devices()[0]
  return {
    'device': f'{device.platform}:{device.device_kind}',
    'device_count': jax.device_count(),
    'jax_version': jax.__version__,
    'metric': s.metric,
    'record_metrics': s.record_metrics,
    'engine': metrics.resolve_engine(config, jax.default_backend()),  # 'auto' resolved
    'chunk': s.chunk,
    'init': metrics.init_of(config),
    'conv_impl': s.conv_impl,
    'threads': s.threads,
    'low_memory': s.low_memory,
    'candidates': len(result.ranked),
    'budget': s.budget,
    'batch': s.batch_size,
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
  try:
    if fv.json:  # before the work, not after it
      files.check_writable(os.path.dirname(os.path.abspath(fv.json)))
    result = run(bench_config(fv))
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
  if fv.json:
    try:
      files.write(fv.json, json.dumps(result, indent=2) + '\n')
    except OSError as e:
      print(f'error: {files.describe_error(e)}', file=sys.stderr)
      return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
