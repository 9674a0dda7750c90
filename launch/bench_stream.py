"""Decode throughput of the streamed ('imagenet') pipeline on the host: images/s.

  python launch/bench_stream.py DIR [--size 224] [--batch 256] [--steps 8] [--repeats 3]

DIR holds train/<class>/* images (e.g. the CIFAR-10 JPEG archive unpacked).
Times `streamed.train_batches` (decode, random-resized crop, flip, batch) over
`steps` batches of epoch 0, after one warm-up batch, `repeats` times; prints
each rate and the median as JSON. docs/benchmarks.md records the results.
"""

import argparse
import json
import statistics
import time

from bswap.data import listing
from bswap.data import streamed


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('source')
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--steps', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--workers', type=int, default=0)
  args = parser.parse_args()
  split = listing.open_split(args.source, 'train')
  options = streamed.Options(image_size=args.size, workers=args.workers)
  rates = []
  for repeat in range(args.repeats):
    batches = streamed.train_batches(
      split, options, args.batch, seed=0, epoch=repeat, stop=args.steps + 1
    )
    next(batches)  # warm-up: threads started, first batch decoded
    start = time.perf_counter()
    for _ in range(args.steps):
      next(batches)
    rates.append(args.steps * args.batch / (time.perf_counter() - start))
    batches.close()
  print(
    json.dumps(
      {
        'size': args.size,
        'batch': args.batch,
        'steps': args.steps,
        'threads': options.threads,
        'images_per_sec': rates,
        'median': statistics.median(rates),
      }
    )
  )


if __name__ == '__main__':
  main()
