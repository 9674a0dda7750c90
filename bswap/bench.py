"""Scoring benchmark: a whole search's sampling, init, compiles and scoring, timed.

  python -m bswap.bench --candidates 1000 --budget 400000 --batch 128 \
      [--engine fast|reference] [--json FILE]
  python -m bswap.bench --arch resnet34 --budget 3000000 --candidates 20   # ImageNet, 224 px

Synthetic data by default (CIFAR-shaped, or ImageNet-shaped with --arch
resnet34), so it needs no download. Prints a
summary and, with --json FILE, writes {device, jax_version, engine,
candidates, wall_seconds, candidates_per_second, compile_count, cache_hits,
compile_seconds, peak_rss_bytes, ...}. `compile_count` counts real XLA
compilations (persistent-cache misses); `--cache-dir ''` runs cold.
"""

from __future__ import annotations

import time

_START = time.perf_counter()  # before JAX is imported: wall time includes start-up

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
from jax import monitoring  # noqa: E402

from bswap import files  # noqa: E402
from bswap.nets import arch as arch_lib  # noqa: E402
from bswap.search import run as search  # noqa: E402
from configs import base  # noqa: E402

_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
_CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


class CompileCounter:
  """Counts backend compiles and persistent-cache hits through jax.monitoring.

  The compile-duration event also fires when an executable comes from the
  persistent cache, so real compilations are compiles minus cache hits.
  """

  def __init__(self):
    self.compiles, self.cache_hits, self.seconds = 0, 0, 0.0
    monitoring.register_event_duration_secs_listener(self._on_duration)
    monitoring.register_event_listener(self._on_event)

  def _on_duration(self, event: str, duration: float, **_):
    if event == _COMPILE_EVENT:
      self.compiles += 1
      self.seconds += duration

  def _on_event(self, event: str, **_):
    if event == _CACHE_HIT_EVENT:
      self.cache_hits += 1


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m bswap.bench', description=__doc__.split('\n')[0])
  p.add_argument('--candidates', type=int, default=1000)
  p.add_argument('--budget', type=int, default=400_000)
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--engine', default='fast', choices=('fast', 'reference'))
  p.add_argument('--conv-impl', default='fast', choices=('fast', 'xla'))
  p.add_argument(
    '--threads', type=int, default=None, help='candidates scored concurrently (default: config)'
  )
  p.add_argument(
    '--low-memory', action='store_true', help='mmap large buffers: smaller peak, ~1.3x slower'
  )
  p.add_argument('--json', metavar='FILE', default=None, help='write the results here')
  p.add_argument('--arch', default='wrn', choices=arch_lib.ARCHS)
  p.add_argument('--depth', type=int, default=None, help='WRN depth (default 40)')
  p.add_argument('--width', type=int, default=None, help='WRN width (default 2)')
  p.add_argument('--image-size', type=int, default=None, help='default: 32 (wrn), 224 (resnet34)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--source', default='synthetic', help="data source (default 'synthetic')")
  p.add_argument('--cutout', type=int, default=16, help='WRN: Cutout size (16 for 32 px CIFAR)')
  p.add_argument(
    '--cache-dir', default='~/.cache/bswap/jax', help="persistent compile cache; '' = none"
  )
  return p


def bench_config(args):
  if args.arch == arch_lib.RESNET34:
    config = base.imagenet_config(args.budget)
  else:
    config = base.cifar_config(args.budget)
    config.data.cutout = args.cutout
  config.seed = args.seed
  config.model.depth = args.depth or config.model.depth
  config.model.width = args.width or config.model.width
  config.data.source = args.source
  config.data.image_size = args.image_size or config.data.image_size
  config.data.synthetic_size = max(args.batch, 256)
  config.search.num_candidates = args.candidates
  config.search.batch_size = args.batch
  config.search.engine, config.search.conv_impl = args.engine, args.conv_impl
  config.search.threads = args.threads or config.search.threads
  config.search.low_memory = args.low_memory
  config.search.compilation_cache_dir = args.cache_dir
  return config


def run(args) -> dict:
  config = bench_config(args)
  counter = CompileCounter()
  search.enable_compilation_cache(config.search.compilation_cache_dir)
  train = search.load_train_data(config)
  skel, sample = search.sample_candidates(config)
  scored = search.score_candidates(config, skel, sample, train)
  wall = time.perf_counter() - _START
  best = max(scored, key=lambda s: s.score)
  device = jax.devices()[0]
  return {
    'device': f'{device.platform}:{device.device_kind}',
    'device_count': jax.device_count(),
    'jax_version': jax.__version__,
    'engine': args.engine,
    'conv_impl': args.conv_impl,
    'threads': config.search.threads,
    'low_memory': args.low_memory,
    'candidates': len(scored),
    'budget': args.budget,
    'batch': args.batch,
    'network': skel.name,
    'wall_seconds': wall,
    'candidates_per_second': len(scored) / wall,
    'compile_count': counter.compiles - counter.cache_hits,
    'cache_hits': counter.cache_hits,
    'compile_seconds': counter.seconds,
    'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
    'best_score': best.score,
    'best_blocks': list(best.genotype.blocks),
  }


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    result = run(args)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(
    f'{result["engine"]} engine on {result["device"]}: {result["candidates"]} {result["network"]} '
    f'candidates at {result["budget"]:,} params, batch {result["batch"]}: '
    f'{result["wall_seconds"]:.1f} s end to end ({result["candidates_per_second"]:.2f}/s), '
    f'{result["compile_count"]} compiles ({result["cache_hits"]} cache hits, '
    f'{result["compile_seconds"]:.1f} s), peak RSS {result["peak_rss_bytes"] / 2**30:.2f} GiB'
  )
  if args.json:
    files.write_atomic(args.json, json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
