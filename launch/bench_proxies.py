"""Per-candidate time of each zero-cost proxy, and of the shared set, cold and warm.

  nice python launch/bench_proxies.py --depth 40 --width 2 --budget 400000 --batch 128 \
      --candidates 3 --groups 'fisher_potential;snip;synflow;jacov;nwot;l2_norm;engine;all'

A group is a metric, 'engine' (every block-decomposable metric), 'all' (every
per-candidate metric) or a comma list. Each group scores the same candidates
twice with one `score_all` call per candidate: the first round compiles what
it needs (shared with earlier groups: one Pieces table), the second is warm.
fisher_potential alone runs on its own engine (`metrics.make_scorer`), as a
search ranks by it. Prints one JSON line per group: median seconds per
candidate, cold and warm, and the compiled pieces so far.
"""

import argparse
import json
import statistics
import time

import jax

from bswap import defaults
from bswap.scoring import engine
from bswap.scoring import metrics
from bswap.scoring.proxies import blockwise
from bswap.search import run as search
from bswap.search import sampler


def _names(group: str) -> list[str]:
  every = [n for n in metrics.METRICS if metrics.per_candidate(n)]
  if group == 'all':
    return every
  if group == 'engine':
    return [n for n in every if set(metrics.get(n).passes) <= set(blockwise.PASSES)]
  return group.split(',')


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--depth', type=int, default=40)
  p.add_argument('--width', type=int, default=2)
  p.add_argument('--budget', type=int, default=400_000)
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--candidates', type=int, default=3)
  p.add_argument('--groups', default='fisher_potential;engine;all')
  p.add_argument('--engine', default='fast')
  args = p.parse_args()
  config = defaults.cifar_config(args.budget)
  config.model.depth, config.model.width = args.depth, args.width
  config.search.engine = args.engine
  skel = search.skeleton(config)
  genotypes = sampler.sample(skel, args.budget, args.candidates, seed=0, band=0.025).genotypes
  x = jax.random.normal(jax.random.PRNGKey(0), (args.batch, 32, 32, 3))
  y = jax.numpy.arange(args.batch) % 10
  device = jax.devices()[0]
  with engine.Pieces() as pieces:
    for group in args.groups.split(';'):
      names = _names(group)
      if names == ['fisher_potential']:
        scorer = metrics.make_scorer(config, skel, pieces)
        fn = lambda g, i, s=scorer: jax.block_until_ready(s(g, i, x, y))
      else:
        scorer = metrics.score_all(config, skel, pieces, names)
        fn = lambda g, i, s=scorer: s(g, i, x, y)
      rounds = []
      for _ in range(2):
        times = []
        for i, geno in enumerate(genotypes):
          start = time.perf_counter()
          fn(geno, i)
          times.append(time.perf_counter() - start)
        rounds.append(times)
      print(
        json.dumps(
          {
            'group': group,
            'metrics': len(names),
            'network': skel.name,
            'batch': args.batch,
            'candidates': len(genotypes),
            'cold_median_s': statistics.median(rounds[0]),
            'warm_median_s': statistics.median(rounds[1]),
            'warm_s': rounds[1],
            'pieces': len(pieces),
            'device': f'{device.platform}:{device.device_kind}',
            'jax': jax.__version__,
          }
        ),
        flush=True,
      )


if __name__ == '__main__':
  main()
