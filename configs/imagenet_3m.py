"""BlockSwap on ImageNet: a 3M-parameter student of ResNet-34 (SPEC section 6).

Search (from the repository root), on ImageNet prepared for tensorflow-datasets
(README, "ImageNet"):

  python -m bswap.main --config=configs/imagenet_3m.py --workdir=workdir/imagenet_3m

samples 1000 ResNet-34 genotypes strictly inside 3,000,000 +- 2.5% parameters
(1 draw in 18 lands there), scores each by its Fisher potential on one batch
of 128 random-resized-cropped 224 px training images, and writes
best_genotype.json, best_genotype.csv, candidates.csv and search.png. Only
that batch is decoded. Per-candidate cost: docs/benchmarks.md ("ImageNet").

Then the student: 100 epochs at batch 256 (SGD, momentum 0.9, lr 0.1 x0.1
every 30 epochs, weight decay 1e-4), attention transfer (beta 750) on the four
stage outputs of a trained ResNet-34 teacher (configs/teacher_resnet34.py), on
a TPU pod slice:

  CONFIG=configs/imagenet_3m.py WORKDIR=gs://BUCKET/bswap/imagenet_3m launch/tpu_pod.sh -- \
    --config.stage=student --config.train.genotype=workdir/imagenet_3m/best_genotype.json \
    --config.train.teacher_checkpoint=gs://BUCKET/bswap/teacher_resnet34 \
    --config.train.dtype=bfloat16

or on one machine with 8 GPUs (search, then training, in one job):

  CONFIG=configs/imagenet_3m.py WORKDIR=workdir/imagenet_3m launch/gpu_host.sh -- \
    --config.stage=pipeline --config.train.teacher_checkpoint=workdir/teacher_resnet34

Expected result (paper, BlockSwap 3.1M): 29.57% top-1 / 10.20% top-5 error;
ResNet-18 (11.7M) 29.18 / 10.05; ResNet-34-G(N) (3.1M) 30.16 / 10.66.

Smoke variant (ResNet-34 at 32 px on synthetic images, 3 candidates, 10
classes; a few minutes on a 2-core CPU, mostly compiles):

  python -m bswap.main --config=configs/imagenet_3m.py:smoke --workdir=/tmp/imagenet_smoke

Add --config.stage=pipeline to also train the winner for 2 epochs of 2 steps.
"""

from bswap import defaults


def get_config(arg=None):
  return defaults.imagenet_get(3_000_000, arg)
