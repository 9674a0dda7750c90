"""Shared defaults: the paper's CIFAR-10 settings (SPEC sections 1-5).

Every hyperparameter lives here, overridable on the command line, e.g.
`--config.search.num_candidates=100 --config.data.source=/path/to/cifar10.tar.gz`.
"""

import ml_collections
from ml_collections import config_dict

STAGES = ('search',)  # 'teacher', 'student' and 'pipeline' arrive with training


def cifar_config(budget: int) -> ml_collections.ConfigDict:
  """The BlockSwap search of a WRN-40-2 student at `budget` parameters."""
  config = ml_collections.ConfigDict()
  config.stage = 'search'
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.arch = 'wrn'
  config.model.depth = 40  # the teacher WRN-40-2: 18 substitutable blocks
  config.model.width = 2
  config.model.num_classes = 10

  config.data = ml_collections.ConfigDict()
  # 'cifar10' (tensorflow-datasets if prepared, else the official archive,
  # downloaded once and checksummed), a class-folder directory or .tar.gz,
  # 'tfds:NAME', or 'synthetic'.
  config.data.source = 'cifar10'
  config.data.image_size = 32
  config.data.synthetic_size = 1024  # examples per split when source = 'synthetic'
  config.data.cache_dir = config_dict.placeholder(str)  # default ~/.cache/bswap
  # Training augmentation (SPEC section 5): pad-4 random crop, flip, Cutout 16.
  config.data.crop_pad = 4
  config.data.cutout = 16

  config.search = ml_collections.ConfigDict()
  config.search.budget = budget
  config.search.band = 0.025  # keep genotypes strictly inside budget +- 2.5%
  config.search.num_candidates = 1000
  config.search.batch_size = 128  # one minibatch per candidate
  config.search.menu = ''  # comma-separated sub-menu, e.g. 'S,G(N),BG(2,M/4)'; '' = all 23
  # False: every candidate sees the same seeded batch (a fairer comparison).
  # True: a fresh batch per candidate, as the reference code does.
  config.search.fresh_batch_per_candidate = False
  config.search.max_draws = 100_000_000  # refuse budgets needing more sampler draws
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds on a 2-core CPU: WRN-10-2 on 8 px synthetic images, 6 candidates."""
  config.model.depth = 10
  config.data.source = 'synthetic'
  config.data.image_size = 8
  config.data.synthetic_size = 64
  config.data.crop_pad = 1  # Cutout 16 would blank an 8 px image whole
  config.data.cutout = 4
  config.search.budget = 50_000  # reachable by WRN-10-2 (22K-304K), acceptance ~5%
  config.search.num_candidates = 6
  config.search.batch_size = 8
  return config


def get(budget: int, arg: str | None) -> ml_collections.ConfigDict:
  config = cifar_config(budget)
  if arg == 'smoke':
    return smoke(config)
  if arg:
    raise ValueError(f'unknown config variant {arg!r}; the only variant is ":smoke"')
  return config
