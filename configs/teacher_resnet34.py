"""The ImageNet teacher: ResNet-34 (21,797,672 parameters) trained with cross-entropy.

On a TPU pod slice (from the repository root):

  CONFIG=configs/teacher_resnet34.py WORKDIR=gs://BUCKET/bswap/teacher_resnet34 \
    launch/tpu_pod.sh -- --config.train.dtype=bfloat16

or on one machine with 8 GPUs:

  CONFIG=configs/teacher_resnet34.py WORKDIR=workdir/teacher_resnet34 launch/gpu_host.sh

or directly:

  python -m bswap.main --config=configs/teacher_resnet34.py --workdir=workdir/teacher_resnet34

Trains 100 epochs at batch 256 (SGD, momentum 0.9, lr 0.1 x0.1 every 30
epochs, weight decay 1e-4; random-resized crop 224 and flip; evaluation on a
centre 224 crop of the image resized to 256) and writes checkpoints every
epoch to WORKDIR/teacher/checkpoints, which students read with
--config.train.teacher_checkpoint=WORKDIR. A rerun resumes. Any checkpoint
directory of this network (a `teacher` run of this config) serves as a
pretrained teacher.

Expected result (paper): 26.73% top-1 / 8.57% top-5 error.

Smoke variant (ResNet-34 at 32 px on synthetic images, 10 classes, 2 epochs of
2 steps):

  python -m bswap.main --config=configs/teacher_resnet34.py:smoke --workdir=/tmp/teacher_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.imagenet_teacher(arg)
