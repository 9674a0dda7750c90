"""Sensitivity study (the paper's Figure 4): which blocks of WRN-40-2 are cheap to replace?

Command (from the repository root), paper scale, after training the teacher
(configs/teacher_wrn40_2.py):

  python -m bswap.main --config=configs/study_sensitivity.py --workdir=workdir/study_sensitivity \
    --config.train.teacher_checkpoint=workdir/teacher_wrn40_2/teacher/checkpoints

Trains the all-Conv WRN-40-2 and, for each of its 18 blocks, the network with
that block replaced by G(N) (--config.study.substitute=NAME for another type),
200 epochs each with attention transfer. Writes workdir/study_sensitivity/:
members/, study.csv, table1.md (metrics against error over the 19 networks),
figure4.png (error and parameters per block position, coloured by stage) and
metrics.png. Shard with --config.study.shard=i/n.

Cost (estimate, not measured): 19 trainings of about 10-15 minutes each on an
H100 or H200: about 4-5 GPU-hours.

Expected result: no number of the paper's Figure 4 is in SPEC.md, so none is
claimed here; the unmodified network is the paper's teacher (3.96% test error,
mean of 3 runs), and each substituted network should lie between it and the
single-blocktype G(N) students.

CPU variant (bswap.defaults.CPU_STUDY's scale: WRN-10-2 at 16 px, 3 blocks, 4
networks; real CIFAR-10):

  python -m bswap.main --config=configs/study_sensitivity.py:cpu \
    --config.data.source=/path/to/cifar10.tar.gz

Smoke variant (synthetic, WRN-10-2 at 8 px: 4 networks, about a minute):

  python -m bswap.main --config=configs/study_sensitivity.py:smoke --workdir=/tmp/sens_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.sensitivity(arg)
