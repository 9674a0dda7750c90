#!/usr/bin/env bash
# Everything issue 15 asks of a fresh machine with one GPU (or TPU), unattended,
# in at most 8 minutes, into ONE JSON summary (OUT_DIR/summary.json):
#
#   1. the engine equivalence tests on the device (tests/scoring/batched_test.py);
#   2. `python -m bswap.bench` at 1000 WRN-40-2 candidates, 400K params, batch 128,
#      cold (empty compilation cache) then warm (the same cache), for the fast and
#      the batched engine;
#   3. training throughput (launch/bench_train.sh): the WRN-40-2 teacher in float32
#      and bfloat16, and a student (configs/single_gn.py) with attention transfer
#      from the float32 teacher's checkpoint, in images/s (2 synthetic epochs);
#   4. prints what misses the targets: engine warm <= 10 s, cold <= 60 s; teacher
#      >= 24,000 images/s.
#
#   launch/accelerator_check.sh [--quick] [--dry-run] [--wheels DIR] [OUT_DIR]
#
# CHUNK=N (environment) sets the batched engine's --chunk (default: the config's).
# --quick: tiny sizes (WRN-10-2 at 8 px, 4 candidates, smoke training), to check
# the script itself on a CPU; --dry-run: print the plan and write a summary of
# planned steps, running nothing. Each step has its own time limit, and the
# whole run stops starting steps at 8 minutes (--quick: 4x the limits, 30
# minutes); a failed or timed-out step is recorded and the next runs.
#
# Needs: python3 with jax (the machine's GPU/TPU build), flax, optax,
# orbax-checkpoint, absl-py, numpy, ml_collections, pillow, matplotlib and pytest.
# Installs nothing from the network: without an importable bswap it makes a
# venv in OUT_DIR/venv that sees the system's packages and installs bswap into
# it with --no-deps; --wheels DIR installs missing packages (e.g. ml_collections)
# from wheel files there (pip --no-index).
set -uo pipefail

PYTHON="${PYTHON:-python3}"
OUT=accelerator_check
QUICK=0
DRY_RUN=0
WHEELS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --wheels) shift; WHEELS="${1:?--wheels needs a directory}" ;;
    -*) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
STATUS="$OUT/steps.tsv"
: >"$STATUS"
START=$SECONDS
TOTAL_LIMIT=480
LIMIT_SCALE=1

# Sizes: the issue's targets, or tiny ones for --quick.
if [[ $QUICK -eq 1 ]]; then
  BENCH=(--candidates 4 --budget 50000 --depth 10 --image-size 8 --batch 8 --cutout 4 --chunk 2)
  TESTS=(tests/scoring/batched_test.py -m "not slow")
  TEACHER=configs/teacher_wrn40_2.py:smoke
  STUDENT=configs/single_gn.py:smoke
  SIZE=64
  TOTAL_LIMIT=1800 LIMIT_SCALE=4  # a shared CPU compiles slowly; the limits are the GPU's
else
  BENCH=(--candidates 1000 --budget 400000 --batch 128)
  TESTS=(tests/scoring/batched_test.py)
  export BSWAP_EXHAUSTIVE_TESTS=1  # ResNet-34 too, as it ran before CI skipped it
  TEACHER=configs/teacher_wrn40_2.py
  STUDENT=configs/single_gn.py
  SIZE=50000
fi

# step NAME LIMIT_S COMMAND...: run it (unless --dry-run) within its limit and
# what is left of the total, logging to OUT/NAME.log; record its status.
step() {
  local name="$1" limit=$(($2 * LIMIT_SCALE)); shift 2
  local left=$((TOTAL_LIMIT - (SECONDS - START)))
  echo "+ [$name, <= ${limit} s] $*"
  if [[ $DRY_RUN -eq 1 ]]; then
    printf '%s\tplanned\t0\t%s\n' "$name" "$*" >>"$STATUS"
    return 0
  fi
  if [[ $left -le 5 ]]; then
    printf '%s\tskipped\t0\t%s\n' "$name" "$*" >>"$STATUS"
    echo "  skipped: the 8-minute budget is spent"
    return 0
  fi
  [[ $limit -gt $left ]] && limit=$left
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  local status=ok
  [[ $rc -ne 0 ]] && status=failed
  [[ $rc -eq 124 || $rc -eq 137 ]] && status=timeout
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" "$*" >>"$STATUS"
  echo "  $status in $((SECONDS - t0)) s (log: $OUT/$name.log)"
}

# 0. bswap importable, without the network.
if [[ $DRY_RUN -eq 0 ]] && ! "$PYTHON" -c 'import bswap, ml_collections, flax, optax, pytest' 2>/dev/null; then
  echo "+ bswap (or a dependency) is not importable: venv in $OUT/venv"
  "$PYTHON" -m venv --system-site-packages "$OUT/venv"
  PYTHON="$OUT/venv/bin/python"
  if [[ -n "$WHEELS" ]]; then
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
  fi
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
  "$PYTHON" -c 'import bswap, ml_collections, flax, optax, pytest' || {
    echo "error: still missing a package above; pass --wheels DIR with its wheel" >&2
    exit 1
  }
fi
export PYTHON
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# 1. Engine equivalence on this device.
step tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider --junitxml="$OUT/tests.xml" "${TESTS[@]}"

# 2. Scoring: cold, then warm, per engine.
for engine in fast batched; do
  cache="$OUT/cache_$engine"
  rm -rf "$cache"
  chunk=()
  [[ $engine == batched && -n "${CHUNK:-}" ]] && chunk=(--chunk "$CHUNK")
  for run in cold warm; do
    step "bench_${engine}_$run" 90 "$PYTHON" -m bswap.bench "${BENCH[@]}" ${chunk[@]+"${chunk[@]}"} \
      --engine "$engine" --cache-dir "$cache" --json "$OUT/bench_${engine}_$run.json"
  done
done

# 3. Training throughput: teacher float32 and bfloat16, then a student with attention transfer.
train() {
  local name="$1" config="$2"; shift 2
  step "$name" 75 env CONFIG="$config" SYNTHETIC_SIZE="$SIZE" WORKDIR="$OUT/$name" \
    launch/bench_train.sh -- "$@"
}
train train_teacher_float32 "$TEACHER"
train train_teacher_bfloat16 "$TEACHER" --config.train.dtype=bfloat16
train train_student_at "$STUDENT" \
  --config.train.teacher_checkpoint="$OUT/train_teacher_float32/teacher/checkpoints"

# 4. The summary, and what misses the targets.
"$PYTHON" - "$OUT" "$QUICK" "$DRY_RUN" "$((SECONDS - START))" <<'PY'
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

out, quick, dry_run, seconds = sys.argv[1], sys.argv[2] == '1', sys.argv[3] == '1', int(sys.argv[4])
TARGETS = {'engine_warm_s': 10.0, 'engine_cold_s': 60.0, 'teacher_images_per_s': 24000.0}


def read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


steps = {}
for line in open(os.path.join(out, 'steps.tsv')):
  name, status, secs, command = line.rstrip('\n').split('\t', 3)
  steps[name] = {'status': status, 'seconds': int(secs), 'command': command}

tests = None
if os.path.exists(os.path.join(out, 'tests.xml')):
  suite = ET.parse(os.path.join(out, 'tests.xml')).getroot()
  suite = suite if suite.tag == 'testsuite' else suite[0]
  count = lambda key: int(suite.get(key, 0))
  tests = {k: count(k) for k in ('tests', 'failures', 'errors', 'skipped')}

bench, device = {}, None
for engine in ('fast', 'batched'):
  runs = {run: read_json(os.path.join(out, f'bench_{engine}_{run}.json')) for run in ('cold', 'warm')}
  bench[engine] = {
    run: None if r is None else {k: r[k] for k in ('wall_seconds', 'candidates', 'compile_count',
                                                   'cache_hits', 'peak_rss_bytes', 'best_score')}
    for run, r in runs.items()
  }
  device = device or next((r['device'] for r in runs.values() if r), None)

train = {}
for name in ('train_teacher_float32', 'train_teacher_bfloat16', 'train_student_at'):
  paths = glob.glob(os.path.join(out, name, '*', 'metrics.jsonl'))
  rows = [json.loads(line) for line in open(paths[0])] if paths else []
  train[name] = rows[-1]['images_per_sec'] if rows else None  # the last (steady) epoch

misses = []
for name, step in steps.items():
  if step['status'] not in ('ok', 'planned'):
    misses.append(f'step {name}: {step["status"]} (see {name}.log)')
if tests and (tests['failures'] or tests['errors']):
  misses.append(f'equivalence tests: {tests["failures"]} failed, {tests["errors"]} errors')
if not quick and not dry_run:
  for engine, runs in bench.items():
    for run in ('cold', 'warm'):
      limit, r = TARGETS[f'engine_{run}_s'], runs[run]
      if r is None or r['wall_seconds'] > limit:
        got = 'no result' if r is None else f'{r["wall_seconds"]:.1f} s'
        misses.append(f'{engine} engine {run}: {got}, target <= {limit:.0f} s')
  for name in ('train_teacher_float32', 'train_teacher_bfloat16'):
    if train[name] is None or train[name] < TARGETS['teacher_images_per_s']:
      got = 'no result' if train[name] is None else f'{train[name]:,.0f} images/s'
      misses.append(f'{name}: {got}, target >= 24,000 images/s')
# Same candidates, same seed: the engines must pick the same winner.
scores = [bench[e]['warm']['best_score'] for e in bench if bench[e]['warm']]
if len(scores) == 2 and abs(scores[0] - scores[1]) > 1e-3 * abs(scores[0]):
  misses.append(f'the engines disagree on the best score: {scores}')

summary = {
  'device': device, 'quick': quick, 'dry_run': dry_run, 'seconds': seconds, 'targets': TARGETS,
  'steps': steps, 'tests': tests, 'bench': bench, 'train_images_per_s': train, 'misses': misses,
}
with open(os.path.join(out, 'summary.json'), 'w') as f:
  json.dump(summary, f, indent=2)
print(f'summary: {os.path.join(out, "summary.json")} ({seconds} s)')
for miss in misses:
  print(f'MISS: {miss}')
if not misses:
  print('dry run: nothing ran' if dry_run else 'every step ran' + ('' if quick else ', every target met'))
PY
