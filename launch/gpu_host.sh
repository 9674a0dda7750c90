#!/usr/bin/env bash
# Train bswap on one machine with several GPUs: one process drives all local GPUs
# (one mesh over every device; the global batch is split across them).
#
#   launch/gpu_host.sh [--dry-run] [--install] [--gpus=0,1,...] [-- EXTRA_FLAGS...]
#
#   --dry-run    print the commands instead of running them
#   --install    first pip install JAX for CUDA 12 ($JAX_SPEC) and this repository
#   --gpus=LIST  only these GPUs (CUDA_VISIBLE_DEVICES); default: all of them
#   EXTRA_FLAGS  appended to the python command, e.g. --config.train.dtype=bfloat16
#
# CONFIG and WORKDIR below can also be set in the environment, e.g.
#   CONFIG=configs/cifar_400k.py WORKDIR=workdir/cifar_400k launch/gpu_host.sh \
#     -- --config.stage=pipeline --config.train.teacher_checkpoint=workdir/teacher_wrn40_2
#
# config.train.batch_size (global, 128 by default) must divide by the number of
# GPUs: 1, 2, 4 or 8 are fine. Rerunning the command resumes from WORKDIR.
set -euo pipefail

CONFIG="${CONFIG:-configs/teacher_wrn40_2.py}"
WORKDIR="${WORKDIR:-workdir/teacher_wrn40_2}"
PYTHON="${PYTHON:-python3}"
JAX_SPEC="${JAX_SPEC:-jax[cuda12]}"

DRY_RUN=0
INSTALL=0
GPUS=""
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --install) INSTALL=1 ;;
    --gpus=*) GPUS="${1#--gpus=}" ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

run() {
  echo "+ $*"
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}

cd "$(dirname "$0")/.."
if [[ $INSTALL -eq 1 ]]; then
  run "$PYTHON" -m pip install -U "$JAX_SPEC"
  run "$PYTHON" -m pip install -e .
fi
if [[ -n "$GPUS" ]]; then
  export CUDA_VISIBLE_DEVICES="$GPUS"
  echo "+ export CUDA_VISIBLE_DEVICES=$GPUS"
fi
run "$PYTHON" -m bswap.main --config="$CONFIG" --workdir="$WORKDIR" ${EXTRA[@]+"${EXTRA[@]}"}
