"""The paper's settings as configs: CIFAR-10 (SPEC sections 1-5) and ImageNet (section 6).

The files in configs/ are thin: each calls one builder here and carries a
docstring with its command and expected result. Each builder returns only the
sections its stage reads (a teacher has no search section, a CIFAR config no
ImageNet preprocessing), every field overridable on the command line, e.g.
`--config.search.num_candidates=100 --config.data.source=/path/to/cifar10.tar.gz`.
`python -m bswap.bench` builds its default config here too, so an installed
bswap needs no configs/ folder.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bswap import data as data_lib
from bswap.data import augment

# search: rank genotypes; teacher: train WRN-depth-width of config.model;
# student: train config.train.genotype; pipeline: search, then train the winner;
# eval: test metrics of the trained run --workdir names; study: train a
# population of students and rank-correlate every metric with their errors.
STAGES = ('search', 'teacher', 'student', 'pipeline', 'eval', 'study')
VARIANTS = ('smoke', 'cpu')


def _model(arch: str, depth: int, width: int, num_classes: int) -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.arch = arch
  model.depth = depth
  model.width = width
  model.num_classes = num_classes
  return model


def search(budget: int) -> ml_collections.ConfigDict:
  """The search (SPEC sections 1 and 4): 1000 candidates inside budget +- 2.5%."""
  s = ml_collections.ConfigDict()
  s.budget = budget
  s.band = 0.025  # keep genotypes strictly inside budget +- 2.5%
  # What must fit (bswap/search/constraints.py): 'params', and/or 'macs' with a
  # budget of multiply-accumulates per image inside mac_budget +- mac_band.
  s.constraints = 'params'
  s.mac_budget = config_dict.placeholder(int)
  s.mac_band = 0.025
  # How candidates are proposed (bswap/search/strategies.py); 'random': sample
  # num_candidates uniformly inside the constraints and score them all.
  s.strategy = 'random'
  s.num_candidates = 1000
  s.menu = ''  # comma-separated sub-menu, e.g. 'S,G(N),BG(2,M/4)'; '' = all 23
  s.max_draws = 100_000_000  # refuse budgets needing more sampler draws
  # The ranking metric (bswap/scoring/metrics.py), on one minibatch per candidate.
  s.metric = 'fisher_potential'
  # Metrics recorded next to it, each a column of candidates.csv: '' (none), a
  # comma list (e.g. 'synflow,jacov') or 'all' (every per-candidate metric).
  s.record_metrics = ''
  # metric='rank_aggregate': how the pool ranks of these metrics are combined
  # ('log_rank', 'rank_sum' or 'vote'; bswap/scoring/proxies/aggregate.py).
  s.aggregate = 'log_rank'
  s.aggregate_metrics = 'synflow,jacov,snip'
  # The scoring minibatch. None: 16 when Fisher potential alone ranks WRN
  # candidates (measured to rank as SPEC's 128 does, at ~0.1x the cost;
  # docs/scoring_fidelity.md), else 128 (metrics.batch_size_of). 128 restores SPEC's.
  s.batch_size = config_dict.placeholder(int)
  # Fisher's initial weights: 'per_candidate' (the seed contract: candidate i's
  # own draw) or 'shared' (every candidate with type t at block b has the same
  # weights there; the batched engine then runs each type group as one block
  # over the members' batches). Scoring only: a student's training init is the
  # seed contract's either way. Rank fidelity and speed: docs/scoring_fidelity.md.
  s.init = 'per_candidate'
  # False: every candidate sees the same seeded batch (a fairer comparison).
  # True: a fresh batch per candidate, as the reference code does.
  s.fresh_batch_per_candidate = False
  # 'fast': block by block, compiles shared by all candidates (bswap/scoring/engine.py);
  # 'batched': the same pieces vmapped over a chunk's candidates of one block type
  # (bswap/scoring/batched.py); 'reference': one whole-network compile per candidate;
  # 'auto': 'fast' on CPUs, 'batched' on GPUs and TPUs (docs/benchmarks.md).
  s.engine = 'auto'
  # 'batched': candidates scored together; bounds memory (each holds its saved
  # activations: ~2 per block). Ignored by the other engines.
  s.chunk = 32  # the H200 prototype vmapped 32
  # 'auto': bswap's faster grouped convolutions on CPUs, native ones elsewhere;
  # 'xla': native everywhere (bit-identical to the reference path); 'fast'.
  s.conv_impl = 'auto'
  # Candidates scored concurrently (XLA runs outside the GIL): on a 2-core CPU,
  # two keep both cores busy where one keeps about 1.4 (docs/benchmarks.md).
  s.threads = 2
  # True: large buffers mmapped and unmapped on their own (glibc), a smaller peak
  # for a slower search (bswap/search/memory.py, docs/benchmarks.md).
  s.low_memory = False
  # Persistent XLA compilation cache: a second search skips the compiles.
  s.compilation_cache_dir = '~/.cache/bswap/jax'  # '' disables it
  return s


def training() -> ml_collections.ConfigDict:
  """Training of the teacher and the students (SPEC section 5)."""
  train = ml_collections.ConfigDict()
  train.epochs = 200
  train.batch_size = 128  # global, split across devices; 390 steps per CIFAR-10 epoch
  train.eval_batch_size = 1024  # the whole test set is scored, padding masked out
  # torch.optim.SGD as the reference uses it: L2 decay added to every gradient.
  train.lr = 0.1
  train.momentum = 0.9
  train.nesterov = False
  train.weight_decay = 5e-4
  # 'paper': x lr_decay at epochs 60, 120, 180 (the paper's text); 'code2019':
  # at 60, 120, 160 (the authors' 2019 code); 'cosine': cosine over all epochs.
  train.schedule = 'paper'
  train.lr_decay = 0.2
  # Student objective: CE + beta * sum over the 3 stage outputs of the
  # attention-transfer loss, with the teacher from this checkpoint directory
  # (e.g. workdir/teacher_wrn40_2/teacher/checkpoints; the run directory or its
  # workdir also work). None: the student is trained with CE alone.
  train.beta = 1000.0
  train.teacher_checkpoint = config_dict.placeholder(str)
  # Classic knowledge distillation on the logits as well (bswap/losses.py): CE
  # becomes (1 - kd_alpha) CE + kd_alpha T^2 KL at temperature T; 0: off. With
  # beta = 0, distillation alone. Needs the teacher checkpoint.
  train.kd_alpha = 0.0
  train.kd_temperature = 4.0
  # The student: None = the search's workdir/best_genotype.json; 'random' = one
  # genotype sampled inside config.search.budget; else a genotype file (JSON or
  # reference CSV) or comma-separated block names (depth from their number,
  # width genotype_width, default 2).
  train.genotype = config_dict.placeholder(str)
  train.genotype_width = config_dict.placeholder(int)
  # Compute dtype: 'float32' or 'bfloat16' (parameters and BN statistics stay float32).
  train.dtype = 'float32'
  # Convolutions: 'xla' (native), 'fast' (bswap/nets/convs.py: grouped convs
  # XLA:CPU runs several times faster; same function), 'auto' ('fast' on CPUs,
  # else 'xla').
  train.conv_impl = 'auto'
  # Steps per jitted call; more than 1 runs them in a lax.scan, which saves host
  # dispatches on GPU and TPU but is far slower on XLA:CPU (loops defeat its
  # convolution kernels).
  train.steps_per_call = 1
  train.max_steps = config_dict.placeholder(int)  # stop early (smoke runs, benchmarks)
  train.eval_every_epochs = 1
  train.checkpoint_every_epochs = 5  # and always at the end; resumed automatically
  train.keep_checkpoints = 3
  train.tensorboard = True  # needs tensorboardX; skipped with a warning without it
  return train


def _base(stage: str, model, pipeline: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = stage
  config.seed = 0
  config.model = model
  config.data = data_lib.default_config(pipeline)
  # Multi-host (TPU pod, multi-node GPU): run the same command on every host
  # with --config.distributed=true; each host then loads only its share of the data.
  config.distributed = False
  # Off a terminal (a log file, nohup), long loops log a progress line (step,
  # images/s, ETA) this often; on a terminal they draw a bar (bswap/progress.py).
  config.log_every_seconds = 60.0
  return config


# ----------------------------------------------------------------------------
# CIFAR-10 (and CIFAR-100): WRN-40-2 and its students.

# config.data.source -> the model's classes and the normalisation statistics.
CIFAR_DATASETS = {'cifar10': (10, augment.CIFAR10), 'cifar100': (100, augment.CIFAR100)}


def on_dataset(config: ml_collections.ConfigDict, dataset: str) -> ml_collections.ConfigDict:
  """`config` on 'cifar10' or 'cifar100': its source, classes and normalisation."""
  classes, stats = CIFAR_DATASETS[dataset]
  config.data.source = dataset
  config.model.num_classes = classes
  config.data.mean, config.data.std = stats.mean, stats.std
  return config


def cifar_config(budget: int, dataset: str = 'cifar10') -> ml_collections.ConfigDict:
  """The BlockSwap search of a WRN-40-2 student at `budget` parameters (and its training)."""
  config = _base('search', _model('wrn', 40, 2, 10), 'cifar')  # 18 substitutable blocks
  config.search = search(budget)
  config.train = training()
  return on_dataset(config, dataset)


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds on a 2-core CPU: WRN-10-2 on 8 px synthetic images (6 candidates)."""
  config.model.depth = 10
  config.data.source = 'synthetic'
  config.data.image_size = 8
  config.data.synthetic_size = 64
  config.data.crop_pad = 1  # Cutout 16 would blank an 8 px image whole
  config.data.cutout = 4
  if 'search' in config:
    config.search.budget = 50_000  # reachable by WRN-10-2 (22K-304K), acceptance ~5%
    config.search.num_candidates = 6
    config.search.batch_size = 8
    config.search.compilation_cache_dir = ''  # smoke runs leave nothing behind
  # Training: 2 epochs of 4 steps at batch 16 (divisible by 1, 2, 4, 8 or 16 devices).
  config.train.epochs = 2
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.checkpoint_every_epochs = 1
  config.train.keep_checkpoints = 2
  return config


def variant(config, arg: str | None, smoke_fn, cpu_fn=None) -> ml_collections.ConfigDict:
  """`config` as the config argument asks: None, 'smoke' (smoke_fn applied), or 'cpu' where
  the config has a cpu_fn."""
  if arg == 'smoke':
    return smoke_fn(config)
  if arg == 'cpu' and cpu_fn is not None:
    return cpu_fn(config)
  if arg:
    choices = '":smoke" or ":cpu"' if cpu_fn else '":smoke"'
    raise ValueError(f'unknown config variant {arg!r}; the variants are {choices}')
  return config


def get(budget: int, arg: str | None, dataset: str = 'cifar10') -> ml_collections.ConfigDict:
  return variant(cifar_config(budget, dataset), arg, smoke)


def teacher(arg: str | None, dataset: str = 'cifar10') -> ml_collections.ConfigDict:
  """The teacher: WRN-depth-width of config.model (WRN-40-2; smoke: WRN-10-2), all 'Conv'."""
  config = _base('teacher', _model('wrn', 40, 2, 10), 'cifar')
  config.train = training()
  return variant(on_dataset(config, dataset), arg, smoke)


def fixed_student(block: str, depth: int, width: int, arg: str | None):
  """A student of one block type at WRN-depth-width (smoke: WRN-10-width).

  Trained with attention transfer from --config.train.teacher_checkpoint when
  given, with cross-entropy alone otherwise.
  """
  config = _base('student', _model('wrn', 40, 2, 10), 'cifar')
  config.train = training()
  config = variant(config, arg, smoke)
  depth = 10 if arg == 'smoke' else depth
  config.train.genotype = ','.join([block] * (3 * ((depth - 4) // 6)))
  config.train.genotype_width = width
  return config


def random_student(budget: int, arg: str | None):
  """One genotype drawn uniformly inside the budget, trained as a student (no ranking)."""
  config = get(budget, arg)
  config.stage = 'student'
  config.train.genotype = 'random'
  return config


CIFAR_DOC = """BlockSwap search for a {k}K-parameter CIFAR-10 student of WRN-40-2.

Command (from the repository root):

  python -m bswap.main --config=configs/{name}.py --workdir=workdir/{name}

Samples 1000 WRN-40-2 genotypes strictly inside {budget:,} +- 2.5% parameters,
scores each by its Fisher potential at initialisation on one minibatch of 128
augmented CIFAR-10 training images, and writes to the workdir:
best_genotype.json (the student, its counts and per-block scores, and the
search's settings), best_genotype.csv (the reference code's format),
candidates.csv (every candidate, best first) and search.png. Rank by another
metric with --config.search.metric=NAME. Time and memory per candidate on a
CPU and a GPU: docs/benchmarks.md (the paper reports 8 minutes on one CPU).

The paper's whole job (search, then train the winner for 200 epochs with
attention transfer from a trained teacher, see configs/teacher_wrn40_2.py):

  python -m bswap.main --config=configs/{name}.py --config.stage=pipeline \\
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints

writes the search's files, then workdir/{name}/student/ (checkpoints,
metrics.jsonl, curves.png).

Expected result (paper, Turner et al. 2020): BlockSwap students' CIFAR-10 test
error {paper}; Spearman rank correlation between Fisher potential and final
error over 100 random students at this budget: {rho}.

Smoke variant (synthetic data, WRN-10-2 at 8 px, 6 candidates; seconds on a
2-core CPU, mostly compiles):

  python -m bswap.main --config=configs/{name}.py:smoke --workdir=/tmp/smoke

Add --config.stage=pipeline to the smoke command to also train the winner for
2 epochs of 4 steps at batch 16.
"""

# Paper, for the docstrings: Table 2 test errors near each budget, Table 1 rho.
_CIFAR_PAPER = {
  200_000: ('217K: 4.68%; 162K: 5.17%', '-0.602'),
  400_000: ('404K: 4.21%', '-0.685'),
  800_000: ('811K: 3.79%', '-0.635'),
}


def cifar_doc(name: str, budget: int) -> str:
  """The docstring of configs/<name>.py, the search at `budget`."""
  paper, rho = _CIFAR_PAPER[budget]
  return CIFAR_DOC.format(k=budget // 1000, name=name, budget=budget, paper=paper, rho=rho)


# ----------------------------------------------------------------------------
# ImageNet: ResNet-34 students (SPEC section 6).


def _imagenet_training() -> ml_collections.ConfigDict:
  tc = training()
  tc.epochs = 100
  tc.batch_size = 256
  tc.eval_batch_size = 500  # 100 steps over the 50,000 validation images
  tc.lr = 0.1
  tc.schedule = 'imagenet'  # x0.1 at epochs 30, 60, 90
  tc.lr_decay = 0.1
  tc.weight_decay = 1e-4
  tc.beta = 750.0  # attention transfer on the 4 stage outputs
  tc.checkpoint_every_epochs = 1  # an ImageNet epoch is 5,004 steps
  return tc


def imagenet_config(budget: int) -> ml_collections.ConfigDict:
  """The BlockSwap search of a ResNet-34 student at `budget` parameters, on ImageNet."""
  # depth 34 and width 1 are what a resnet34 genotype records; 16 substitutable blocks.
  config = _base('search', _model('resnet34', 34, 1, 1000), 'imagenet')
  config.search = search(budget)
  # At 224 px the convs already keep both cores of a 2-core CPU busy: a second
  # candidate in flight is no faster and needs more memory (docs/benchmarks.md).
  config.search.threads = 1
  config.search.chunk = 8  # ~16x a WRN-40-2 candidate's activations each
  config.train = _imagenet_training()
  return config


def imagenet_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A CPU run of minutes: ResNet-34 at 32 px on synthetic images, 3 candidates, 10 classes."""
  config.model.num_classes = 10
  config.data.source = 'synthetic'
  config.data.image_size = 32  # the stem leaves 8 px; stage 4 runs at 1 px
  config.data.synthetic_size = 32
  config.data.workers = 2
  if 'search' in config:
    config.search.num_candidates = 3
    config.search.batch_size = 8
    config.search.compilation_cache_dir = ''
  # Training: 2 epochs of 2 steps at batch 16.
  config.train.epochs = 2
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.keep_checkpoints = 2
  return config


def imagenet_get(budget: int, arg: str | None) -> ml_collections.ConfigDict:
  return variant(imagenet_config(budget), arg, imagenet_smoke)


def imagenet_teacher(arg: str | None) -> ml_collections.ConfigDict:
  """The ImageNet teacher: ResNet-34 with standard blocks, trained with cross-entropy."""
  config = _base('teacher', _model('resnet34', 34, 1, 1000), 'imagenet')
  config.train = _imagenet_training()
  return variant(config, arg, imagenet_smoke)


# ----------------------------------------------------------------------------
# Studies: does a metric pick good students? (bswap/study; the paper's Table 1
# and Figures 2 and 4.)


def study_section() -> ml_collections.ConfigDict:
  """config.study: the population, the metrics and the members' training."""
  s = ml_collections.ConfigDict()
  # The population: random genotypes inside config.search.budget +- band (the
  # search's sampler and seed: member i is candidate i of that search), the
  # single-blocktype students within budget +- single_band, and named ones:
  # ';'-separated block lists or genotype files, and/or the top_k rows of an
  # earlier search's candidates.csv.
  s.num_random = 100
  s.single_band = 0.25
  s.named = ''
  s.candidates = ''
  s.top_k = 0
  # Figure 4 instead: config.model's all-Conv network with one block at a time
  # replaced by `substitute`.
  s.sensitivity = False
  s.substitute = 'G(N)'
  # Metrics at initialisation ('all': every registered one, or a comma list),
  # and the Table 1 metrics after each k of `ks` minibatches of k_batch_size
  # (PROXIES.md section 7; '' for none).
  s.metrics = 'all'
  s.ks = '1,10,100'
  s.k_batch_size = 128
  s.epochs = 200  # each member's training (config.train, this many epochs)
  s.bootstrap_samples = 1000  # 95% intervals of rho and tau, seeded by config.seed
  # 'i/n': this process trains every n-th member from the i-th (several
  # processes or hosts sharing one study directory).
  s.shard = '0/1'
  return s


def study_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """About a minute on a 2-core CPU (mostly compiles): 4 random WRN-10-2 students at
  8 px on synthetic data, the singles near the budget, 2 epochs of 4 steps."""
  config = smoke(config)
  config.study.num_random = 4
  config.study.single_band = 0.1
  config.study.ks = '1,2'
  config.study.k_batch_size = 8
  config.study.epochs = config.train.epochs
  config.study.bootstrap_samples = 200
  config.train.eval_every_epochs = 1
  config.train.tensorboard = False
  return config


# The :cpu variant's scale, shared by the three budgets (the docstrings cite it).
# Sized for well under an hour of a shared 2-core CPU: a member costs about 25 s
# of compiles (training, evaluation, the k-step metrics) plus its steps, so
# WRN-10-2 (3 blocks) at 16 px, a budget of a fifth of its all-Conv 304K (as
# 400K is of WRN-40-2's 2.2M), ~27 members, 128 training steps each.
CPU_STUDY = dict(
  depth=10, width=2, image_size=16, budget=60_000, num_random=20, single_band=0.25,
  train_examples=8192, test_examples=2000, epochs=2, k_batch_size=32,
)  # fmt: skip


def study_cpu(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Real CIFAR-10 at a scale a shared 2-core CPU finishes in under an hour (CPU_STUDY)."""
  c = CPU_STUDY
  config.model.depth, config.model.width = c['depth'], c['width']
  config.data.image_size = c['image_size']
  # SPEC's pad 4 and Cutout 16 are for 32 px: the same fractions of a 16 px image.
  config.data.crop_pad = 2
  config.data.cutout = 8
  config.data.train_examples = c['train_examples']
  config.data.test_examples = c['test_examples']
  config.search.budget = c['budget']
  config.search.band = 0.05
  config.search.compilation_cache_dir = ''
  config.study.num_random = c['num_random']
  config.study.single_band = c['single_band']
  config.study.k_batch_size = c['k_batch_size']
  config.study.epochs = config.train.epochs = c['epochs']
  config.study.bootstrap_samples = 1000
  config.train.schedule = 'cosine'
  config.train.checkpoint_every_epochs = 1
  config.train.keep_checkpoints = 1
  config.train.tensorboard = False
  return config


def study_config(budget: int) -> ml_collections.ConfigDict:
  """A study of WRN-40-2 students at `budget` parameters (the paper's Table 1 and Figure 2)."""
  config = cifar_config(budget)
  config.stage = 'study'
  config.study = study_section()
  return config


def study(budget: int, arg: str | None) -> ml_collections.ConfigDict:
  return variant(study_config(budget), arg, study_smoke, study_cpu)


def sensitivity(arg: str | None) -> ml_collections.ConfigDict:
  """Figure 4: WRN-40-2 with each block in turn replaced by study.substitute (G(N))."""
  config = study_config(400_000)
  config.study.sensitivity = True
  config.study.num_random = 0
  return variant(config, arg, study_smoke, study_cpu)


STUDY_DOC = """Study at {k}K parameters: does a metric pick good WRN-40-2 students?

The paper's Table 1 and Figure 2 as one stage (bswap/study).

Command (from the repository root), paper scale, after training the teacher
(configs/teacher_wrn40_2.py):

  python -m bswap.main --config=configs/{name}.py --workdir=workdir/{name} \\
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints

Trains 100 random genotypes inside {budget:,} +- 2.5% parameters (candidates
0-99 of the search with the same seed) and the single-blocktype students
within +- 25% of the budget, 200 epochs each with attention transfer, after
scoring each by every registered metric at initialisation and by the Table 1
metrics after 1, 10 and 100 minibatches. Writes workdir/{name}/: members/
(one resumable run directory each), study.csv, table1.csv, table1.md,
figure2.png and metrics.png. Rerun the same command to resume; split over n
processes or hosts with --config.study.shard=i/n (same workdir).

Cost (estimate, not measured): one member is one student's training, about
10 minutes on an H100 or H200, so about 20 GPU-hours for the ~110 members,
divided by n with n shards.

Expected result (paper, Turner et al. 2020, Table 1): Spearman rho between
Fisher potential after one minibatch and final error {rho}; BlockSwap's pick
reaches {paper} test error.

CPU variant (real CIFAR-10, see bswap.defaults.CPU_STUDY: WRN-10-2 at 16 px,
{num_random} random students inside {cpu_budget:,} +- 5% and the singles within
+- 25%, {train_examples:,} training and {test_examples:,} test images, {epochs} epochs of cosine
SGD without a teacher, Table 1 metrics at batch {k_batch}; the same at every
budget; 37 minutes on a 2-core CPU shared with four other jobs, see README,
Studies). It shows the stage working on real data at toy scale only: errors
of 60-70%, 16 px images, a population of a few dozen and so intervals as wide
as the correlations; do not read it as the paper's numbers:

  python -m bswap.main --config=configs/{name}.py:cpu --workdir=workdir/{name}_cpu \\
    --config.data.source=/path/to/cifar10.tar.gz

Smoke variant (synthetic data, WRN-10-2 at 8 px, 4 random students; about a
minute on a 2-core CPU, mostly compiles):

  python -m bswap.main --config=configs/{name}.py:smoke --workdir=/tmp/study_smoke
"""


def study_doc(name: str, budget: int) -> str:
  paper, rho = _CIFAR_PAPER[budget]
  c = CPU_STUDY
  return STUDY_DOC.format(
    k=budget // 1000, name=name, budget=budget, paper=paper, rho=rho,
    num_random=c['num_random'], cpu_budget=c['budget'], train_examples=c['train_examples'],
    test_examples=c['test_examples'], epochs=c['epochs'], k_batch=c['k_batch_size'],
  )  # fmt: skip
