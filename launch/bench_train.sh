#!/usr/bin/env bash
# Training throughput: the WRN-40-2 teacher for 2 epochs of synthetic CIFAR-sized
# data (50,000 32x32 images, batch 128, 390 steps per epoch), data and augmentation
# included, then the images/s of each epoch (the second is the steady state; both
# exclude compilation, which is timed apart in the log).
#
#   launch/bench_train.sh [--dry-run] [-- EXTRA_FLAGS...]
#
# Environment: CONFIG (default configs/teacher_wrn40_2.py; a student config times
# a student), SYNTHETIC_SIZE (default 50000), WORKDIR, PYTHON.
#
# e.g. launch/bench_train.sh -- --config.train.dtype=bfloat16 --config.train.steps_per_call=10
# Target: at least 24,000 images/s on one H100 or H200.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
WORKDIR="${WORKDIR:-$(mktemp -d)/bench_train}"
CONFIG="${CONFIG:-configs/teacher_wrn40_2.py}"
SYNTHETIC_SIZE="${SYNTHETIC_SIZE:-50000}"
DRY_RUN=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

cmd=("$PYTHON" -m bswap.main --config="$CONFIG" --workdir="$WORKDIR"
  --config.data.source=synthetic --config.data.synthetic_size="$SYNTHETIC_SIZE"
  --config.train.epochs=2 --config.train.tensorboard=false
  --config.train.checkpoint_every_epochs=1000 ${EXTRA[@]+"${EXTRA[@]}"})
echo "+ ${cmd[*]}"
if [[ $DRY_RUN -eq 1 ]]; then exit 0; fi
cd "$(dirname "$0")/.."
"${cmd[@]}"
"$PYTHON" - "$WORKDIR"/*/metrics.jsonl <<'PY'
import json
import sys

for line in open(sys.argv[-1]):
  r = json.loads(line)
  print(f"epoch {r['epoch']}: {r['images_per_sec']:,.0f} images/s (train loss {r['train_loss']:.3f})")
PY
