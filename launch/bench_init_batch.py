"""Warm seconds per candidate of the Fisher variants of issue 17, interleaved so all see one load.

  PYTHONPATH=. python launch/bench_init_batch.py [N] [ROUNDS]

The fast engine, one thread: per_candidate at batch 128, 64, 32, 16 and shared at 128,
on N sampled WRN-40-2 candidates at 400K (synthetic 32 px images). Every variant is
warmed first (compiles or cache loads, shared weights drawn); then each round scores
the N candidates under every variant in turn. Prints and writes bench_init_batch.json:
per round (wall, process CPU) seconds per candidate, and their medians.
"""

import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from bswap.nets import arch
from bswap.scoring import engine
from bswap.search import run as search_lib
from bswap.search import sampler

VARIANTS = {
  'pc128': ('per_candidate', 128),
  'sh128': ('shared', 128),
  'pc64': ('per_candidate', 64),
  'pc32': ('per_candidate', 32),
  'pc16': ('per_candidate', 16),
}


def main(n: int = 4, rounds: int = 3) -> dict:
  search_lib.enable_compilation_cache('~/.cache/bswap/jax')
  skel = arch.wrn_skeleton(40, 2, image_size=32)
  genos = list(sampler.sample(skel, 400_000, n, seed=0, band=0.025).genotypes)
  out = {'load_before': os.getloadavg(), 'n': n, 'rounds': rounds, 'jax': jax.__version__}

  def batch(size):
    x = jax.random.normal(jax.random.PRNGKey(0), (size, 32, 32, 3), jnp.float32)
    return x, jnp.arange(size) % 10

  def score_all(e, x, y):
    for i, g in enumerate(genos):
      jax.block_until_ready(e.score_async(g, 0, i, x, y))

  with engine.Pieces() as pieces:
    engines = {
      v: (engine.Engine(skel, pieces, 'fast', init), *batch(size))
      for v, (init, size) in VARIANTS.items()
    }
    for args in engines.values():  # warm
      score_all(*args)
    times = {v: [] for v in VARIANTS}
    for r in range(rounds):
      for v, args in engines.items():
        wall, cpu = time.perf_counter(), time.process_time()
        score_all(*args)
        times[v].append(((time.perf_counter() - wall) / n, (time.process_time() - cpu) / n))
        print(r, v, times[v][-1], os.getloadavg()[0], flush=True)
  out['per_candidate'] = times
  out['median_wall'] = {v: statistics.median(w for w, _ in t) for v, t in times.items()}
  out['median_cpu'] = {v: statistics.median(c for _, c in t) for v, t in times.items()}
  out['load_after'] = os.getloadavg()
  with open('bench_init_batch.json', 'w') as f:
    json.dump(out, f, indent=1)
  print(json.dumps(out))
  return out


if __name__ == '__main__':
  main(*map(int, sys.argv[1:]))
