"""BlockSwap on CIFAR-100: a 400K-parameter student of WRN-40-2 (100 classes).

Command (from the repository root), the search alone:

  python -m bswap.main --config=configs/cifar100_400k.py --workdir=workdir/cifar100_400k

and the whole job after the teacher (configs/teacher_wrn40_2_cifar100.py):
search, then 200 epochs of the winner with attention transfer (beta 1000):

  python -m bswap.main --config=configs/cifar100_400k.py --config.stage=pipeline \
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2_cifar100/teacher/checkpoints

The CIFAR-10 recipe (SPEC sections 4-5) on CIFAR-100: the official python
archive (downloaded once into ~/.cache/bswap, md5-checked; the 100 fine
labels), normalised by CIFAR-100's own channel statistics (config.data.mean,
.std), a 100-way head (11,610 more parameters than CIFAR-10's, inside the
budget). Add classic knowledge distillation with --config.train.kd_alpha=0.9
--config.train.kd_temperature=4 (bswap/losses.py). Outputs as configs/cifar_400k.py.

Hardware and time: the search as for CIFAR-10 (about 20 minutes on a 2-core
CPU); the training on one GPU, as the CIFAR-10 student.

Expected result: none published; the paper reports CIFAR-10 and ImageNet only.

Smoke variant (synthetic data with 100 classes, WRN-10-2 at 8 px, 6 candidates):

  python -m bswap.main --config=configs/cifar100_400k.py:smoke --workdir=/tmp/cifar100_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.get(400_000, arg, 'cifar100')
