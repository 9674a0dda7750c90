#!/usr/bin/env bash
# The scoring engine's targets (docs/benchmarks.md): 1000 WRN-40-2 candidates at
# 400K parameters, batch 128, end to end, first cold (an empty persistent
# compilation cache), then warm (the same cache), then the reference path on a
# few candidates for comparison. Writes cold.json, warm.json, reference.json.
#
#   launch/bench_scoring.sh [--dry-run] [OUT_DIR] [-- EXTRA_BENCH_FLAGS...]
#
# Targets on one H100/H200: <= 60 s cold, <= 10 s warm; on a 2-core CPU <= 8 min cold.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
OUT=bench_scoring
DRY_RUN=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done

CACHE="$(mktemp -d)/jax_cache"
run() {
  local name="$1"; shift
  local cmd=("$PYTHON" -m bswap.bench --budget 400000 --batch 128 --json "$OUT/$name.json" "$@"
    ${EXTRA[@]+"${EXTRA[@]}"})
  echo "+ ${cmd[*]}"
  if [[ $DRY_RUN == 0 ]]; then "${cmd[@]}"; fi
}

mkdir -p "$OUT"
run cold --candidates 1000 --cache-dir "$CACHE"
run warm --candidates 1000 --cache-dir "$CACHE"
run reference --candidates 3 --engine reference --cache-dir ''
