"""The CIFAR-100 teacher: WRN-40-2 with a 100-way head (2,255,156 parameters), cross-entropy.

Command (from the repository root):

  python -m bswap.main --config=configs/teacher_wrn40_2_cifar100.py \
    --workdir=workdir/teacher_wrn40_2_cifar100

The CIFAR-10 teacher's recipe (configs/teacher_wrn40_2.py: 200 epochs, SGD,
crop, flip, Cutout 16) on CIFAR-100's official archive, normalised by
CIFAR-100's own channel statistics. Writes
workdir/teacher_wrn40_2_cifar100/teacher/; students read it with
--config.train.teacher_checkpoint=workdir/teacher_wrn40_2_cifar100/teacher/checkpoints
(configs/cifar100_400k.py).

Hardware and time: one H100 or H200, as the CIFAR-10 teacher.

Expected result: none published; the paper reports CIFAR-10 and ImageNet only.

Smoke variant (WRN-10-2 on 8 px synthetic images with 100 classes, 2 epochs of 4 steps):

  python -m bswap.main --config=configs/teacher_wrn40_2_cifar100.py:smoke \
    --workdir=/tmp/teacher_cifar100_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.teacher(arg, 'cifar100')
