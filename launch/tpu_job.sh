#!/usr/bin/env bash
# The job on one TPU VM worker, as launch/tpu_pod.sh drives it (it also works on
# any Linux machine, which is how tests/launch_test.py checks it).
#
#   tpu_job.sh run DIR COMMAND...   run COMMAND, recording DIR/pid and then DIR/exit_code;
#                                   tpu_pod.sh starts this under setsid nohup, its output
#                                   in DIR/job.log, so a dropped ssh session leaves it be
#   tpu_job.sh running DIR          exit 0 if the job of DIR is running (refuse a second)
#   tpu_job.sh status DIR           one line: running (pid, minutes) or finished (exit
#                                   code), and the log's last line
#   tpu_job.sh stop DIR             end the job (its whole process group)
#
# With BSWAP_LOG_URL set (gs://bucket/run/logs/NAME.log) `run` copies the log there
# when the command ends, so it outlives the TPU VM.
set -uo pipefail

sub="${1:-}"
dir="${2:-}"
if [[ -z "$sub" || -z "$dir" ]]; then
  echo "usage: $0 run|running|status|stop DIR [COMMAND...]" >&2
  exit 2
fi
shift 2

alive() {
  [[ -f "$dir/pid" ]] && [[ ! -f "$dir/exit_code" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null
}

last_line() {
  # Progress lines may end in carriage returns on a terminal; a log file has none.
  if [[ -f "$dir/job.log" ]]; then tail -n 1 "$dir/job.log" | tr -d '\r'; fi
}

case "$sub" in
  run)
    mkdir -p "$dir"
    rm -f "$dir/exit_code"
    echo $$ > "$dir/pid"
    echo "[tpu_job] $(date -u '+%F %T') UTC on $(hostname): $*"
    "$@"
    code=$?
    echo "[tpu_job] $(date -u '+%F %T') UTC: exit code $code"
    if [[ -n "${BSWAP_LOG_URL:-}" && -f "$dir/job.log" ]]; then
      gcloud storage cp "$dir/job.log" "$BSWAP_LOG_URL" >/dev/null 2>&1 \
        || echo "[tpu_job] could not copy the log to $BSWAP_LOG_URL"
    fi
    echo "$code" > "$dir/exit_code"
    exit "$code"
    ;;
  running)
    alive
    ;;
  status)
    if alive; then
      pid="$(cat "$dir/pid")"
      minutes=$(( ( $(date +%s) - $(stat -c %Y "$dir/pid") ) / 60 ))
      echo "$(hostname): running (pid $pid, $minutes min) | $(last_line)"
    elif [[ -f "$dir/exit_code" ]]; then
      echo "$(hostname): finished, exit code $(cat "$dir/exit_code") | $(last_line)"
    elif [[ -f "$dir/pid" ]]; then
      echo "$(hostname): died without an exit code (killed?) | $(last_line)"
    else
      echo "$(hostname): no job in $dir"
    fi
    ;;
  stop)
    if alive; then
      kill -TERM -- "-$(cat "$dir/pid")" 2>/dev/null || kill -TERM "$(cat "$dir/pid")"
      echo "$(hostname): stopped the job (pid $(cat "$dir/pid"))"
    else
      echo "$(hostname): no running job in $dir"
    fi
    ;;
  *)
    echo "unknown subcommand $sub (run, running, status, stop)" >&2
    exit 2
    ;;
esac
