#!/usr/bin/env bash
# Train bswap on a Cloud TPU VM pod slice: create the TPU VM, put this repository
# on every worker, run the same command on all of them, delete the TPU VM.
#
#   launch/tpu_pod.sh [--dry-run] [--keep] [--no-create] [-- EXTRA_FLAGS...]
#
#   --dry-run    print the commands instead of running them
#   --keep       do not delete the TPU VM at the end (e.g. to rerun or inspect)
#   --no-create  reuse an existing TPU VM called $NAME
#   EXTRA_FLAGS  appended to the python command, e.g. --config.train.dtype=bfloat16
#
# Every variable below can also be set in the environment, e.g.
#   CONFIG=configs/cifar_400k.py WORKDIR=gs://my-bucket/bswap/cifar_400k launch/tpu_pod.sh \
#     -- --config.stage=student --config.train.teacher_checkpoint=gs://my-bucket/bswap/teacher_wrn40_2
#
# Each host runs `python -m bswap.main ... --config.distributed=true`: JAX joins the
# hosts into one job, each host loads only its share of the data, and the global
# batch (config.train.batch_size) is split across all TPU cores. WORKDIR should be
# a gs:// path so that every host sees the same checkpoints; orbax and bswap's
# metric files reach it through etils.epath (gcsfs); so do the search's outputs.
# A preempted or killed run resumes from WORKDIR's latest checkpoint when rerun.
set -euo pipefail

PROJECT="${PROJECT:-my-gcp-project}"
ZONE="${ZONE:-us-central2-b}"
NAME="${NAME:-bswap-pod}"
ACCELERATOR="${ACCELERATOR:-v4-32}"            # 4 hosts of 4 chips
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"      # TPU VM software version
CONFIG="${CONFIG:-configs/teacher_wrn40_2.py}"
WORKDIR="${WORKDIR:-gs://my-bucket/bswap/teacher_wrn40_2}"
JAX_SPEC="${JAX_SPEC:-jax[tpu]}"               # what pip installs for JAX on the workers

DRY_RUN=0
KEEP=0
CREATE=1
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --keep) KEEP=1 ;;
    --no-create) CREATE=0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

run() {
  echo "+ $*"
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}

tpu() {  # gcloud compute tpus tpu-vm SUBCOMMAND ... with the project and zone
  local sub="$1"
  shift
  run gcloud compute tpus tpu-vm "$sub" "$@" --project="$PROJECT" --zone="$ZONE"
}

on_all_workers() {
  tpu ssh "$NAME" --worker=all --command="$1"
}

teardown() {
  if [[ $KEEP -eq 0 ]]; then
    tpu delete "$NAME" --quiet
  else
    echo "Keeping $NAME; delete it with: gcloud compute tpus tpu-vm delete $NAME --project=$PROJECT --zone=$ZONE"
  fi
}

REPO="$(cd "$(dirname "$0")/.." && pwd)"
ARCHIVE="$(mktemp -d)/bswap.tar.gz"

# 1. The TPU VM (deleted on exit, whatever happens, unless --keep).
if [[ $CREATE -eq 1 ]]; then
  tpu create "$NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
fi
trap teardown EXIT

# 2. This working tree (without its virtualenv, caches and workdirs) on every worker.
run tar czf "$ARCHIVE" -C "$REPO" --exclude=.git --exclude=.venv --exclude=workdir \
  --exclude=__pycache__ .
tpu scp "$ARCHIVE" "$NAME:~/bswap.tar.gz" --worker=all
on_all_workers "rm -rf ~/bswap && mkdir ~/bswap && tar xzf ~/bswap.tar.gz -C ~/bswap \
  && python3 -m pip install --quiet -U '$JAX_SPEC' gcsfs && python3 -m pip install --quiet -e ~/bswap"

# 3. The same command on every worker.
on_all_workers "cd ~/bswap && python3 -m bswap.main --config=$CONFIG --workdir=$WORKDIR \
  --config.distributed=true ${EXTRA[*]:-}"
