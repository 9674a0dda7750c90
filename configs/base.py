"""Shared defaults: the paper's CIFAR-10 (SPEC sections 1-5) and ImageNet (section 6) settings.

Every hyperparameter lives here, overridable on the command line, e.g.
`--config.search.num_candidates=100 --config.data.source=/path/to/cifar10.tar.gz`.
"""

import ml_collections
from ml_collections import config_dict

# search: rank genotypes; teacher: train WRN-depth-width of config.model;
# student: train config.train.genotype; pipeline: search, then train the winner.
STAGES = ('search', 'teacher', 'student', 'pipeline')


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
  # Where batches come from. 'cifar': the source decoded once into memory and
  # kept on the devices, augmented there (crop_pad, cutout). 'imagenet': the
  # source ('tfds:imagenet2012', a directory of train/<class>/* and
  # val/<class>/*, or 'synthetic') listed, then decoded, cropped and flipped
  # on the host batch by batch (bswap/host_data.py) with the fields below.
  config.data.pipeline = 'cifar'
  # 'imagenet' training: torchvision's RandomResizedCrop (area fraction and
  # aspect ratio ranges) to image_size, and a horizontal flip.
  config.data.crop_area = (0.08, 1.0)
  config.data.crop_aspect = (3 / 4, 4 / 3)
  # 'imagenet' evaluation: shorter side resized to round(image_size * ratio), centre crop.
  config.data.eval_resize_ratio = 256 / 224
  config.data.workers = 0  # 'imagenet' decoding threads per process; 0: one per CPU core
  config.data.prefetch = 4  # 'imagenet' batches decoded ahead of the training step

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
  # 'fast': block-by-block scoring, compiles shared by all candidates (bswap/engine.py);
  # 'reference': one whole-network compile per candidate (bswap/fisher.py).
  config.search.engine = 'fast'
  config.search.conv_impl = 'fast'  # 'xla': native convs (bit-identical to 'reference')
  # Candidates scored concurrently (XLA runs outside the GIL): XLA:CPU keeps ~1.4
  # of 2 cores busy with one, ~1.9 with two (1.5x the candidates per second).
  config.search.threads = 2
  # True: large buffers mmapped and unmapped on their own (glibc), a smaller peak
  # for ~1.3x the time (bswap/host_memory.py). Rarely needed since the engine keeps
  # only conv outputs for its backward pass (docs/benchmarks.md).
  config.search.low_memory = False
  # Persistent XLA compilation cache: a second search skips the compiles.
  config.search.compilation_cache_dir = '~/.cache/bswap/jax'  # '' disables it

  # Multi-host (TPU pod, multi-node GPU): run the same command on every host
  # with --config.distributed=true; each host then loads only its share of the data.
  config.distributed = False
  config.train = training()
  return config


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
  # The student: None = the search's workdir/best_genotype.json; 'random' = one
  # genotype sampled inside config.search.budget; else a genotype file (JSON or
  # reference CSV) or comma-separated block names (depth from their number,
  # width genotype_width, default 2).
  train.genotype = config_dict.placeholder(str)
  train.genotype_width = config_dict.placeholder(int)
  # Compute dtype: 'float32' or 'bfloat16' (parameters and BN statistics stay float32).
  train.dtype = 'float32'
  # Convolutions: 'xla' (native), 'fast' (bswap.convs: grouped convs XLA:CPU runs
  # several times faster; same function), 'auto' ('fast' on CPUs, else 'xla').
  train.conv_impl = 'auto'
  # Steps per jitted call; more than 1 runs them in a lax.scan, which saves host
  # dispatches on GPU and TPU but is ~40x slower on XLA:CPU (loops defeat its
  # convolution kernels).
  train.steps_per_call = 1
  train.max_steps = config_dict.placeholder(int)  # stop early (smoke runs, benchmarks)
  train.eval_every_epochs = 1
  train.checkpoint_every_epochs = 5  # and always at the end; resumed automatically
  train.keep_checkpoints = 3
  train.tensorboard = True  # needs tensorboardX; skipped with a warning without it
  return train


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
  config.search.compilation_cache_dir = ''  # smoke runs leave nothing behind
  # Training: 2 epochs of 4 steps at batch 16 (divisible by 1, 2, 4, 8 or 16 devices).
  config.train.epochs = 2
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.checkpoint_every_epochs = 1
  config.train.keep_checkpoints = 2
  return config


def get(budget: int, arg: str | None) -> ml_collections.ConfigDict:
  return variant(cifar_config(budget), arg, smoke)


def variant(config, arg: str | None, smoke_fn) -> ml_collections.ConfigDict:
  """`config` as the config argument asks: None, or 'smoke' (smoke_fn applied)."""
  if arg == 'smoke':
    return smoke_fn(config)
  if arg:
    raise ValueError(f'unknown config variant {arg!r}; the only variant is ":smoke"')
  return config


def teacher(arg: str | None) -> ml_collections.ConfigDict:
  """The teacher: WRN-depth-width of config.model (WRN-40-2; smoke: WRN-10-2), all 'Conv'."""
  config = get(400_000, arg)
  config.stage = 'teacher'
  return config


def fixed_student(block: str, depth: int, width: int, arg: str | None):
  """A student of one block type at WRN-depth-width (smoke: WRN-10-width).

  Trained with attention transfer from --config.train.teacher_checkpoint when
  given, with cross-entropy alone otherwise.
  """
  config = get(400_000, arg)
  config.stage = 'student'
  if arg == 'smoke':
    depth = 10
  config.train.genotype = ','.join([block] * (3 * ((depth - 4) // 6)))
  config.train.genotype_width = width
  return config


# ----------------------------------------------------------------------------
# ImageNet: ResNet-34 students (SPEC section 6).


def imagenet_config(budget: int) -> ml_collections.ConfigDict:
  """The BlockSwap search of a ResNet-34 student at `budget` parameters, on ImageNet."""
  config = cifar_config(budget)
  config.model.arch = 'resnet34'
  config.model.depth = 34  # what a resnet34 genotype records; 16 substitutable blocks
  config.model.width = 1
  config.model.num_classes = 1000

  # tfds' imagenet2012, prepared by hand (README, "ImageNet"); or a directory of
  # train/<class>/* and val/<class>/* images. Decoded and cropped on the host.
  config.data.source = 'tfds:imagenet2012'
  config.data.pipeline = 'imagenet'
  config.data.image_size = 224
  config.data.crop_pad = 0  # CIFAR's augmentation: unused by the 'imagenet' pipeline
  config.data.cutout = 0

  # The Fisher batch is SPEC's 128 training images, random-resized-cropped.
  config.search.batch_size = 128
  # At 224 px the convs already keep both cores of a 2-core CPU busy: a second
  # candidate in flight is no faster and needs 3.5 GiB more (docs/benchmarks.md).
  config.search.threads = 1

  tc = config.train
  tc.epochs = 100
  tc.batch_size = 256
  tc.eval_batch_size = 500  # 100 steps over the 50,000 validation images
  tc.lr = 0.1
  tc.schedule = 'imagenet'  # x0.1 at epochs 30, 60, 90
  tc.lr_decay = 0.1
  tc.weight_decay = 1e-4
  tc.beta = 750.0  # attention transfer on the 4 stage outputs
  tc.checkpoint_every_epochs = 1  # an ImageNet epoch is 5,004 steps
  return config


def imagenet_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A CPU run of minutes: ResNet-34 at 32 px on synthetic images, 3 candidates, 10 classes."""
  config.model.num_classes = 10
  config.data.source = 'synthetic'
  config.data.image_size = 32  # the stem leaves 8 px; stage 4 runs at 1 px
  config.data.synthetic_size = 32
  config.data.workers = 2
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
  config = imagenet_get(3_000_000, arg)
  config.stage = 'teacher'
  return config
