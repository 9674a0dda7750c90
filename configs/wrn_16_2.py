"""Comparator: a plain WRN-16-2 student (all standard blocks, 692K parameters).

Command (from the repository root), after training the teacher
(configs/teacher_wrn40_2.py):

  python -m bswap.main --config=configs/wrn_16_2.py --workdir=workdir/wrn_16_2 \
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints

Trains Conv blocks at WRN-16-2 for 200 epochs with cross-entropy plus attention
transfer (beta 1000) from the WRN-40-2 teacher on the 3 stage outputs; without
a teacher checkpoint, with cross-entropy alone. Same optimiser, schedule and
augmentation as the teacher. Writes workdir/wrn_16_2/student/{checkpoints/,
metrics.jsonl, curves.png, tensorboard/, genotype.json}.

Hardware and time: one H100 or H200, less than the teacher's (about 10 minutes,
not yet measured); the teacher's forward pass runs at every step.

Expected result (paper, CIFAR-10 test error, mean of 3 runs): 4.78%.

Smoke variant (WRN-10-2 on 8 px synthetic images, 2 epochs of 4 steps,
no teacher; about 20 s on a 2-core CPU):

  python -m bswap.main --config=configs/wrn_16_2.py:smoke --workdir=/tmp/wrn_16_2_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.fixed_student('Conv', 16, 2, arg)
