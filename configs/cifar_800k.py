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

Smoke variant (synthetic data, WRN-10-2 at 8 px, 6 candidates; about 40 s on a
2-core CPU, mostly compiles):

  python -m bswap.main --config=configs/cifar_800k.py:smoke --workdir=/tmp/smoke
"""

from configs import base


def get_config(arg=None):
  return base.get(800_000, arg)
