"""BlockSwap search for a 800K-parameter CIFAR-10 student of WRN-40-2.

Command (from the repository root):

  python -m bswap.main --config=configs/cifar_800k.py --workdir=workdir/cifar_800k

Writes best_genotype.json (the student: block types, params, MACs, Fisher
potential per block), best_genotype.csv (reference format), candidates.csv
(every candidate ranked by Fisher potential) and search.png to the workdir.
The search samples 1000 genotypes strictly inside 800,000 +- 2.5% parameters
and keeps the one with the highest Fisher potential on one minibatch of 128
augmented CIFAR-10 training images, at initialisation.

Paper (Turner et al. 2020): the search takes 8 minutes on one CPU. This
straightforward path compiles each candidate, tens of seconds per candidate on
a 2-core CPU (docs/benchmarks.md); pass --config.search.num_candidates=N to
bound it until the fast scoring engine lands.

The paper's whole job (search, then train the winner for 200 epochs with
attention transfer from a trained teacher, see configs/teacher_wrn40_2.py):

  python -m bswap.main --config=configs/cifar_800k.py --config.stage=pipeline \
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints

writes the search's files, then workdir/cifar_800k/student/ (checkpoints,
metrics.jsonl, curves.png). Paper, BlockSwap students' test error: 811K: 3.79%.

Smoke variant (synthetic data, WRN-10-2 at 8 px, 6 candidates; about 40 s on a
2-core CPU, mostly compiles):

  python -m bswap.main --config=configs/cifar_800k.py:smoke --workdir=/tmp/smoke

Add --config.stage=pipeline to the smoke command to also train the winner for
2 epochs of 4 steps at batch 16 (about 20 s more).
"""

from configs import base


def get_config(arg=None):
  return base.get(800_000, arg)
