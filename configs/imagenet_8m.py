"""BlockSwap on ImageNet: an 8M-parameter student of ResNet-34 (SPEC section 6).

Search (from the repository root), on ImageNet prepared for tensorflow-datasets
(README, "ImageNet"):

  python -m bswap.main --config=configs/imagenet_8m.py --workdir=workdir/imagenet_8m

samples 1000 ResNet-34 genotypes strictly inside 8,000,000 +- 2.5% parameters
(1 draw in 63 lands there) and keeps the one with the highest Fisher
potential on one batch of 128 training images at 224 px; per-candidate cost in
docs/benchmarks.md ("ImageNet").

Then the student (100 epochs at batch 256, lr 0.1 x0.1 every 30 epochs, weight
decay 1e-4, attention transfer with beta 750 from configs/teacher_resnet34.py)
on a TPU pod slice:

  CONFIG=configs/imagenet_8m.py WORKDIR=gs://BUCKET/bswap/imagenet_8m launch/tpu_pod.sh -- \
    --config.stage=student --config.train.genotype=workdir/imagenet_8m/best_genotype.json \
    --config.train.teacher_checkpoint=gs://BUCKET/bswap/teacher_resnet34 \
    --config.train.dtype=bfloat16

or on one machine with 8 GPUs:

  CONFIG=configs/imagenet_8m.py WORKDIR=workdir/imagenet_8m launch/gpu_host.sh -- \
    --config.stage=pipeline --config.train.teacher_checkpoint=workdir/teacher_resnet34

Expected result (paper, BlockSwap 8.1M): 26.24% top-1 / 7.75% top-5 error,
better than its 21.8M teacher (26.73 / 8.57).

Smoke variant (ResNet-34 at 32 px on synthetic images, 3 candidates; a few
minutes on a 2-core CPU):

  python -m bswap.main --config=configs/imagenet_8m.py:smoke --workdir=/tmp/imagenet_smoke
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.imagenet_get(8_000_000, arg)
