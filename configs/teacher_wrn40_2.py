"""The teacher: WRN-40-2 (2,243,546 parameters) trained on CIFAR-10 with cross-entropy.

Command (from the repository root):

  python -m bswap.main --config=configs/teacher_wrn40_2.py --workdir=workdir/teacher_wrn40_2

Trains 200 epochs of 390 steps at batch 128 (SGD, momentum 0.9, lr 0.1 x0.2 at
epochs 60, 120, 180, weight decay 5e-4; pad-4 crop, flip, Cutout 16) and writes
workdir/teacher_wrn40_2/teacher/{checkpoints/, metrics.jsonl, curves.png,
tensorboard/}. A rerun of the same command resumes from the latest checkpoint.
Students read the teacher with
--config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints.

Hardware and time: one H100 or H200. The training step is built for at least
24,000 images/s there (10 million images: about 7 minutes of steps, plus
compilation and evaluation); that rate is still to be measured
(launch/bench_train.sh). Pass --config.train.dtype=bfloat16 for mixed
precision. A 2-core CPU trains it at about 24 images/s (measured at batch 128):
months; do not.

Expected result (paper, mean of 3 runs): 3.96% test error.

Smoke variant (WRN-10-2 on 8 px synthetic images, 2 epochs of 4 steps; about
20 s on a 2-core CPU):

  python -m bswap.main --config=configs/teacher_wrn40_2.py:smoke --workdir=/tmp/teacher_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.teacher(arg)
