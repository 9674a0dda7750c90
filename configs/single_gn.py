"""Comparator: a single-blocktype student, every block G(N) (depthwise 3x3 + 1x1;
'DConv'), 293,514 parameters.

Command (from the repository root), after training the teacher
(configs/teacher_wrn40_2.py):

  python -m bswap.main --config=configs/single_gn.py --workdir=workdir/single_gn \
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints

Trains DConv blocks at WRN-40-2 for 200 epochs with cross-entropy plus attention
transfer (beta 1000) from the WRN-40-2 teacher on the 3 stage outputs; without
a teacher checkpoint, with cross-entropy alone. Same optimiser, schedule and
augmentation as the teacher. Writes workdir/single_gn/student/{checkpoints/,
metrics.jsonl, curves.png, tensorboard/, genotype.json}.

Hardware and time: one H100 or H200, less than the teacher's (about 10 minutes,
not yet measured); the teacher's forward pass runs at every step.

Expected result: SPEC gives no number for this network (293,514 parameters);
compare it with BlockSwap at a similar budget (the 289K BlockSwap student, 4.45%, paper).

Smoke variant (WRN-10-2 on 8 px synthetic images, 2 epochs of 4 steps,
no teacher; about 20 s on a 2-core CPU):

  python -m bswap.main --config=configs/single_gn.py:smoke --workdir=/tmp/single_gn_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.fixed_student('DConv', 40, 2, arg)
