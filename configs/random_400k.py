"""Comparator: one random genotype at the 400K budget, trained as a student.

BlockSwap without the Fisher ranking: `bswap.search.sampler` draws
one WRN-40-2 genotype uniformly inside 400,000 +- 2.5% parameters (seed
config.seed; the search's first candidate for the same seed), which is trained
exactly as the BlockSwap student is.

Command (from the repository root), after training the teacher
(configs/teacher_wrn40_2.py):

  python -m bswap.main --config=configs/random_400k.py --workdir=workdir/random_400k \
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints

Repeat with --config.seed=1, 2, ... (and another workdir) for more random
genotypes. Writes workdir/random_400k/student/{checkpoints/, metrics.jsonl,
curves.png, tensorboard/, genotype.json (the genotype drawn)}.

Hardware and time: one H100 or H200, less than the teacher's (estimated 10
minutes, not yet measured).

Expected result (paper): random genotypes are 0.35-0.7 points worse than
BlockSwap at the same budget: about 4.6-4.9% test error against BlockSwap's
4.21% at 404K.

Smoke variant (a random WRN-10-2 genotype inside 50,000 +- 2.5% parameters, 8 px
synthetic images, 2 epochs of 4 steps, no teacher; about 20 s on a 2-core CPU):

  python -m bswap.main --config=configs/random_400k.py:smoke --workdir=/tmp/random_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.random_student(400_000, arg)
