"""Comparator: a single-blocktype student, every block BG(2,4) (bottleneck 2,
4-group 3x3; 'A4B2'), 214,106 parameters.

Command (from the repository root), after training the teacher
(configs/teacher_wrn40_2.py):

  python -m bswap.main --config=configs/single_bg24.py --workdir=workdir/single_bg24 \
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints

Trains A4B2 blocks at WRN-40-2 for 200 epochs with cross-entropy plus attention
transfer (beta 1000) from the WRN-40-2 teacher on the 3 stage outputs; without
a teacher checkpoint, with cross-entropy alone. Same optimiser, schedule and
augmentation as the teacher. Writes workdir/single_bg24/student/{checkpoints/,
metrics.jsonl, curves.png, tensorboard/, genotype.json}.

Hardware and time: one H100 or H200, less than the teacher's (about 10 minutes,
not yet measured); the teacher's forward pass runs at every step.

Expected result: SPEC gives no number for this network (214,106 parameters);
compare it with BlockSwap at a similar budget (the 217K BlockSwap student, 4.68%, paper).

Smoke variant (WRN-10-2 on 8 px synthetic images, 2 epochs of 4 steps,
no teacher; about 20 s on a 2-core CPU):

  python -m bswap.main --config=configs/single_bg24.py:smoke --workdir=/tmp/single_bg24_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.fixed_student('A4B2', 40, 2, arg)
