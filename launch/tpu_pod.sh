#!/usr/bin/env bash
# Train bswap on a Cloud TPU VM pod slice (docs/tpu_pods.md): create the TPU VM,
# put this repository and a Python 3.11+ virtualenv on every worker, start the
# same command on all of them detached from ssh, follow it, delete the TPU VM.
#
#   launch/tpu_pod.sh [--dry-run] [--keep] [--no-create] [--detach] [--genotype=FILE]
#                     [-- EXTRA_FLAGS...]        set up and start the job, follow it
#   launch/tpu_pod.sh --status                   each worker: running or its exit code
#   launch/tpu_pod.sh --logs [--worker=N] [--lines=N] [--follow]   a worker's log (0)
#   launch/tpu_pod.sh --stop                     end the job on every worker
#   launch/tpu_pod.sh --delete                   delete the TPU VM $NAME
#
#   --dry-run    print every gcloud command (ssh commands included) without running it
#   --keep       keep the TPU VM when the job ends (to rerun or inspect it)
#   --no-create  use an existing TPU VM called $NAME; it is never deleted
#   --detach     start the job and return (the TPU VM is then kept: --status, --logs,
#                --delete when done)
#   --genotype=FILE  train this genotype file (JSON or reference CSV): a local file is
#                copied to $WORKDIR/input_genotype.<ext>; a gs:// one is read there
#   EXTRA_FLAGS  appended to the python command, e.g. --config.train.dtype=bfloat16
#
# Every variable below can also be set in the environment, e.g.
#   CONFIG=configs/cifar_400k.py WORKDIR=gs://my-bucket/bswap/cifar_400k launch/tpu_pod.sh \
#     -- --config.stage=student --config.train.teacher_checkpoint=gs://my-bucket/bswap/teacher
#
# Each worker runs `python -m bswap.main ... --config.distributed=true` in a uv
# virtualenv of Python $PYTHON_VERSION (the TPU images' system python3 is 3.10);
# JAX joins the workers into one job and each loads only its share of the data.
# The job runs under setsid nohup with its output in ~/bswap-job/job.log on each
# worker (copied to $WORKDIR/logs/ when it ends), so it survives a dropped ssh
# session or an interrupted launcher. WORKDIR must be a gs:// path, which every
# worker sees: checkpoints, metrics and the search's files go there, and a
# preempted or killed run resumes from its latest checkpoint when started again.
#
# Teardown deletes the TPU VM only if this invocation created it, without
# --keep, and only once the job has ended (or its setup failed). Interrupting
# the launcher while it follows the job leaves the job and the TPU VM running.
set -euo pipefail

PROJECT="${PROJECT:-my-gcp-project}"
ZONE="${ZONE:-us-central2-b}"
NAME="${NAME:-bswap-pod}"
ACCELERATOR="${ACCELERATOR:-v4-32}"            # 4 hosts of 4 chips
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"      # TPU VM software version
CONFIG="${CONFIG:-configs/teacher_wrn40_2.py}"
WORKDIR="${WORKDIR:-gs://my-bucket/bswap/teacher_wrn40_2}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"       # bswap needs 3.11+; uv fetches it
JAX_SPEC="${JAX_SPEC:-jax[tpu]}"               # what uv installs for JAX on the workers
# TFDS_DATA_DIR (e.g. gs://my-bucket/tensorflow_datasets), when set, is passed to the job.
POLL_SECONDS="${POLL_SECONDS:-300}"            # how often a followed job is polled

ACTION=launch
DRY_RUN=0
KEEP=0
CREATE=1
DETACH=0
GENOTYPE=""
WORKER=0
LINES=50
FOLLOW=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --keep) KEEP=1 ;;
    --no-create) CREATE=0 ;;
    --detach) DETACH=1 ;;
    --genotype=*) GENOTYPE="${1#--genotype=}" ;;
    --status) ACTION=status ;;
    --logs) ACTION=logs ;;
    --stop) ACTION=stop ;;
    --delete) ACTION=delete ;;
    --worker=*) WORKER="${1#--worker=}" ;;
    --lines=*) LINES="${1#--lines=}" ;;
    --follow) FOLLOW=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

JOB='~/bswap-job'          # on each worker: pid, exit_code, job.log
VENV='~/bswap-venv'        # on each worker: the virtualenv
HELPER='bash ~/bswap/launch/tpu_job.sh'

quoted() {  # the arguments as a shell would need them typed
  local out=() arg
  for arg in "$@"; do
    if [[ "$arg" =~ [[:space:]\'\"\;\&\|\<\>\$] ]]; then
      arg="${arg//\'/\'\\\'\'}"
      arg="'$arg'"
    fi
    out+=("$arg")
  done
  echo "${out[*]}"
}

run() {
  echo "+ $(quoted "$@")"
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}

tpu() {  # gcloud compute tpus tpu-vm SUBCOMMAND ... with the project and zone
  local sub="$1"
  shift
  run gcloud compute tpus tpu-vm "$sub" "$@" --project="$PROJECT" --zone="$ZONE"
}

on_workers() {  # on_workers WORKERS COMMAND
  tpu ssh "$NAME" --worker="$1" --command="$2"
}

delete_hint() {
  echo "Delete it when done with: $0 --delete (NAME=$NAME PROJECT=$PROJECT ZONE=$ZONE)"
}

CREATED=0      # set once this invocation has created the TPU VM
STARTED=0      # set once the job runs: from then on only its end may delete the VM

teardown() {  # never deletes a TPU VM this invocation did not create
  if [[ $CREATED -eq 1 && $KEEP -eq 0 ]]; then
    tpu delete "$NAME" --quiet
  elif [[ $CREATED -eq 0 ]]; then
    echo "Keeping TPU VM $NAME: this invocation did not create it (--no-create)."
  else
    echo "Keeping TPU VM $NAME (--keep)."
    delete_hint
  fi
}

on_exit() {
  local code=$?
  if [[ $STARTED -eq 0 ]]; then
    teardown  # the setup failed (or the launch was only printed)
  fi
  exit "$code"
}

on_interrupt() {
  if [[ $STARTED -eq 0 ]]; then
    exit 130  # during the setup: on_exit tears down what this invocation created
  fi
  trap - EXIT
  echo
  echo "Stopped following; the job keeps running on $NAME. Follow it with: $0 --status, $0 --logs"
  delete_hint
  exit 130
}

case "$ACTION" in
  status)
    on_workers all "$HELPER status $JOB"
    exit 0
    ;;
  logs)
    tail_cmd="tail -n $LINES"
    if [[ $FOLLOW -eq 1 ]]; then tail_cmd="tail -n $LINES -F"; fi
    on_workers "$WORKER" "$tail_cmd $JOB/job.log"
    exit 0
    ;;
  stop)
    on_workers all "$HELPER stop $JOB"
    exit 0
    ;;
  delete)
    tpu delete "$NAME" --quiet
    exit 0
    ;;
esac

# ----------------------------------------------------------------------------
# launch

if [[ "$WORKDIR" != gs://* ]]; then
  echo "WORKDIR=$WORKDIR is not a gs:// path; every worker must see the same workdir" \
    "(checkpoints, metrics): set WORKDIR=gs://BUCKET/PATH" >&2
  exit 2
fi
WORKDIR="${WORKDIR%/}"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
ARCHIVE="$(mktemp -d)/bswap.tar.gz"
FLAGS=(--config="$CONFIG" --workdir="$WORKDIR" --config.distributed=true
  --config.log_every_seconds=60)

# The genotype to train, where every worker reads it.
if [[ -n "$GENOTYPE" ]]; then
  if [[ "$GENOTYPE" == gs://* ]]; then
    FLAGS+=(--config.train.genotype="$GENOTYPE")
  else
    if [[ ! -f "$GENOTYPE" ]]; then
      echo "--genotype=$GENOTYPE: no such file" >&2
      exit 2
    fi
    ext="${GENOTYPE##*.}"
    run gcloud storage cp "$GENOTYPE" "$WORKDIR/input_genotype.$ext"
    FLAGS+=(--config.train.genotype="$WORKDIR/input_genotype.$ext")
  fi
fi

# 1. The TPU VM: created here (and then ours to delete), or an existing one.
trap on_exit EXIT
trap on_interrupt INT TERM
if [[ $CREATE -eq 1 ]]; then
  tpu create "$NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
  CREATED=1
else
  tpu describe "$NAME" --format='value(state)'  # fails clearly if there is none
fi

# 2. This working tree (without its virtualenv, caches and workdirs) on every worker,
#    refused while a job of ours still runs there.
run tar czf "$ARCHIVE" -C "$REPO" --exclude=.git --exclude=.venv --exclude=workdir \
  --exclude=__pycache__ .
on_workers all "if [ -f ~/bswap/launch/tpu_job.sh ] && $HELPER running $JOB; then \
echo 'a bswap job is running on this worker: $0 --status, or --stop it first' >&2; exit 1; fi"
tpu scp "$ARCHIVE" "$NAME:~/bswap.tar.gz" --worker=all
on_workers all "rm -rf ~/bswap && mkdir ~/bswap && tar xzf ~/bswap.tar.gz -C ~/bswap"

# 3. Python $PYTHON_VERSION and a virtualenv by uv (a static binary installed per
#    user; it downloads the interpreter), then JAX for TPUs, gcsfs and bswap.
on_workers all "set -e; curl -LsSf https://astral.sh/uv/install.sh | sh; \
~/.local/bin/uv venv --allow-existing --python $PYTHON_VERSION $VENV; \
~/.local/bin/uv pip install --python $VENV/bin/python '$JAX_SPEC' gcsfs -e ~/bswap; \
$VENV/bin/python -c 'import sys, bswap; print(sys.version.split()[0], bswap.__file__)'"

# 4. The same command on every worker, detached from this ssh session.
command="$VENV/bin/python -m bswap.main ${FLAGS[*]} ${EXTRA[*]:-}"
on_workers all "mkdir -p $JOB && cd ~/bswap && \
${TFDS_DATA_DIR:+TFDS_DATA_DIR=$TFDS_DATA_DIR }BSWAP_LOG_URL=$WORKDIR/logs/\$(hostname).log setsid nohup $HELPER run $JOB $command \
> $JOB/job.log 2>&1 < /dev/null & echo started on \$(hostname)"
STARTED=1

if [[ $DETACH -eq 1 ]]; then
  echo "Started on $NAME; follow it with: $0 --status, $0 --logs [--worker=N] [--follow]"
  delete_hint
  exit 0
fi

# 5. Follow the job until it ends on every worker, then tear down.
echo "Following the job every $POLL_SECONDS s (Ctrl-C stops following, not the job)."
poll="$HELPER status $JOB"
if [[ $DRY_RUN -eq 1 ]]; then
  on_workers all "$poll"  # printed once: the loop below polls it until no worker runs
  teardown
  exit 0
fi
while true; do
  sleep "$POLL_SECONDS"
  status="$(on_workers all "$poll" 2>/dev/null | grep -v '^+ ' || true)"
  echo "$status"
  if [[ -n "$status" ]] && ! grep -q ': running' <<< "$status"; then
    break
  fi
done
code=0
if grep -q -e 'exit code [1-9]' -e 'died' -e 'no job' <<< "$status"; then
  code=1
  echo "The job failed on some worker: $0 --logs --worker=N (or $WORKDIR/logs/)." >&2
fi
teardown
exit "$code"
