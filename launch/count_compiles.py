"""XLA compiles while scoring N sampled candidates: do they stop growing?

  nice python launch/count_compiles.py --group fisher_potential --candidates 1000 \
      --image-size 8 --batch 2 --checkpoints 1,10,50,100,250,500,1000
  nice python launch/count_compiles.py --group engine --candidates 1000 --image-size 8 --batch 2

One group per process (jit's own caches are per process): 'fisher_potential'
(its engine, as a search ranks by it), 'engine' (every block-decomposable
metric in one `score_all` call) or a comma list. Candidates are sampled at the
budget (+- 2.5%) as a search samples them, each scored once at a new index
(new weights). Prints one JSON line per checkpoint: candidates scored so far,
real XLA compiles (jax.monitoring's backend-compile events, eager ops and the
weight generator included; no persistent cache), compiled pieces in the
search's table, and seconds.

Compile keys hold the shapes of each part's input, so a smaller image and
batch give the same number of keys (a bijection of shape classes) at a
fraction of the cost; --image-size 32 --batch 128 checks it on a few
candidates.
"""

import argparse
import json
import time

import jax

from bswap import bench
from bswap import defaults
from bswap.nets import arch
from bswap.scoring import engine
from bswap.scoring import metrics
from bswap.scoring.proxies import blockwise
from bswap.search import sampler


def _names(group: str) -> list[str]:
  every = [n for n in metrics.METRICS if metrics.per_candidate(n)]
  if group == 'engine':
    return [n for n in every if set(metrics.get(n).passes) <= set(blockwise.PASSES)]
  return group.split(',')


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--group', default='fisher_potential')
  p.add_argument('--depth', type=int, default=40)
  p.add_argument('--width', type=int, default=2)
  p.add_argument('--budget', type=int, default=400_000)
  p.add_argument('--candidates', type=int, default=1000)
  p.add_argument('--image-size', type=int, default=8)
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--checkpoints', default='1,10,50,100,250,500,1000')
  args = p.parse_args()
  config = defaults.cifar_config(args.budget)
  config.model.depth, config.model.width = args.depth, args.width
  config.search.engine = 'fast'
  skel = arch.wrn_skeleton(args.depth, args.width, image_size=args.image_size)
  genotypes = sampler.sample(skel, args.budget, args.candidates, seed=0, band=0.025).genotypes
  size, n = args.image_size, args.batch
  x = jax.random.normal(jax.random.PRNGKey(0), (n, size, size, 3))
  y = jax.numpy.arange(n) % 10
  checkpoints = {int(c) for c in args.checkpoints.split(',')}
  names = _names(args.group)
  start = time.perf_counter()
  with engine.Pieces() as pieces, bench.CompileCounter() as counter:
    if names == ['fisher_potential']:
      scorer = metrics.make_scorer(config, skel, pieces)
      score = lambda g, i: jax.block_until_ready(scorer(g, i, x, y))
    else:
      scorer = metrics.score_all(config, skel, pieces, names)
      score = lambda g, i: scorer(g, i, x, y)
    types = set()
    for i, geno in enumerate(genotypes, start=1):
      score(geno, i)
      types.update(geno.blocks)
      if i in checkpoints or i == len(genotypes):
        line = {
          'group': args.group,
          'metrics': len(names),
          'network': skel.name,
          'image_size': size,
          'batch': n,
          'candidates': i,
          'block_types_seen': len(types),
          'compiles': counter.compiles,
          'pieces': len(pieces),
          'seconds': round(time.perf_counter() - start, 1),
          'jax': jax.__version__,
        }
        print(json.dumps(line), flush=True)


if __name__ == '__main__':
  main()
