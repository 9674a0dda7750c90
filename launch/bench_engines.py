"""Steady-state seconds per candidate of the fast and batched engines, in one process.

  PYTHONPATH=. python launch/bench_engines.py [N] [REPEATS]

WRN-40-2 at 400K +- 2.5% parameters, batch 128, random 32x32 images, seed 0:
N sampled candidates (mixed block types), then the first of them N times (one
group of N per position). Each engine scores the set once (compiles), then
REPEATS more times; prints and writes (bench_engines.json) the per-candidate
times and their medians, with the load average before and after.
"""

import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from bswap.nets import arch
from bswap.scoring import batched
from bswap.scoring import engine
from bswap.search import sampler


def main(n: int = 8, repeats: int = 3) -> dict:
  skel = arch.wrn_skeleton(40, 2, image_size=32)
  mixed = list(sampler.sample(skel, 400_000, n, seed=0, band=0.025).genotypes)
  x = jax.random.normal(jax.random.PRNGKey(0), (128, 32, 32, 3), jnp.float32)
  y = jnp.arange(128) % 10
  out = {'jax': jax.__version__, 'load_before': os.getloadavg(), 'cpus': os.cpu_count()}
  with engine.Pieces() as pieces:
    fast = engine.Engine(skel, pieces, 'fast')
    chunked = batched.Batched(skel, pieces, 'fast', chunk=n)
    for name, genotypes in (('mixed', mixed), ('same', [mixed[0]] * n)):
      items = [(g, i, x, y) for i, g in enumerate(genotypes)]
      runs = {
        'fast': lambda items=items: [fast.score(g, 0, i, a, b) for g, i, a, b in items],
        'batched': lambda items=items: chunked.score_chunk(items, 0),
      }
      for label, run in runs.items():
        start = time.perf_counter()
        run()
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
          start = time.perf_counter()
          run()
          times.append((time.perf_counter() - start) / n)
        median = statistics.median(times)
        result = {'first_pass_s': first, 'per_candidate_s': times, 'median': median}
        out[f'{name}/{label}'] = result
        print(name, label, result, flush=True)
  out['load_after'] = os.getloadavg()
  with open('bench_engines.json', 'w') as f:
    json.dump(out, f, indent=1)
  return out


if __name__ == '__main__':
  main(*map(int, sys.argv[1:]))
