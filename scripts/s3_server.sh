#!/usr/bin/env bash
# A local S3-compatible server for tests and the local Airflow stack: moto's server mode.
#
#   scripts/s3_server.sh up       start it (no-op when it already answers); prints the endpoint
#   scripts/s3_server.sh down     stop the one this script started (pid file); no-op otherwise
#   scripts/s3_server.sh status   exit 0 and print the endpoint when it answers, 1 otherwise
#   scripts/s3_server.sh env      print export lines (AF_S3_ENDPOINT, AWS_* test credentials)
#   scripts/s3_server.sh bucket NAME...  create buckets (idempotent; the server must be up)
#
# Knobs: AF_S3_PORT (default 5055), AF_S3_RUN_DIR (pid and log file, default <repo>/.s3/run).
# Binds 127.0.0.1 only. moto keeps everything in memory: `down` loses every bucket, and any
# credentials are accepted (the stack uses the fixed ones printed by `env`). `moto_server` comes
# from the project's dev extra (`moto[server]`), installed into <repo>/.venv by scripts/test.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${AF_S3_PORT:-5055}"
HOST=127.0.0.1
ENDPOINT="http://$HOST:$PORT"
RUN_DIR="${AF_S3_RUN_DIR:-$REPO/.s3/run}"
PID_FILE="$RUN_DIR/moto-$PORT.pid"
LOG_FILE="$RUN_DIR/moto-$PORT.log"
MOTO="${AF_S3_MOTO_SERVER:-$REPO/.venv/bin/moto_server}"
UP_TIMEOUT="${AF_S3_UP_TIMEOUT:-30}"

say() { printf 's3_server: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# moto answers GET /moto-api/ (its dashboard) once it serves; any HTTP answer proves it is up.
answers() { curl -s -o /dev/null --max-time 2 "$ENDPOINT/moto-api/"; }

our_pid() {
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

cmd_up() {
  if answers; then
    say "already answering at $ENDPOINT"
    echo "$ENDPOINT"
    return
  fi
  [[ -x $MOTO ]] || die "$MOTO not found; install the dev extra: uv pip install --python .venv/bin/python -e '.[dev]'"
  mkdir -p "$RUN_DIR"
  # setsid: its own session, so a Ctrl-C in the caller's terminal or the end of a CI step that
  # started it does not take it down with the caller's process group.
  setsid "$MOTO" -H "$HOST" -p "$PORT" >"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + UP_TIMEOUT))
  until answers; do
    our_pid >/dev/null || die "moto_server exited at start; log: $LOG_FILE: $(tail -n 3 "$LOG_FILE")"
    ((SECONDS < deadline)) || die "moto_server not answering at $ENDPOINT after ${UP_TIMEOUT}s; log: $LOG_FILE"
    sleep 0.2
  done
  say "up at $ENDPOINT (pid $(<"$PID_FILE"), log $LOG_FILE)"
  echo "$ENDPOINT"
}

cmd_down() {
  local pid
  if ! pid=$(our_pid); then
    rm -f "$PID_FILE"
    say "nothing to stop (no live pid in $PID_FILE)"
    return
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { kill -KILL "$pid" 2>/dev/null || true; break; }
    sleep 0.1
  done
  rm -f "$PID_FILE"
  say "down (pid $pid)"
}

cmd_status() {
  if answers; then
    local pid
    pid=$(our_pid) || pid="not ours"
    echo "$ENDPOINT (pid $pid)"
    return 0
  fi
  echo "not answering at $ENDPOINT"
  return 1
}

# Fixed test credentials: moto accepts any, botocore insists on some.
cmd_env() {
  echo "export AF_S3_ENDPOINT=$ENDPOINT"
  echo "export AWS_ACCESS_KEY_ID=testing"
  echo "export AWS_SECRET_ACCESS_KEY=testing"
  echo "export AWS_DEFAULT_REGION=us-east-1"
}

# moto needs no signature for CreateBucket, so curl does it without an AWS client; a PUT on an
# existing bucket answers 200 in us-east-1, which makes this idempotent.
cmd_bucket() {
  (($#)) || die "bucket: name at least one bucket"
  answers || die "not answering at $ENDPOINT; run: $0 up"
  local name code
  for name in "$@"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X PUT "$ENDPOINT/$name")
    [[ $code == 200 ]] || die "bucket $name: CreateBucket answered HTTP $code"
  done
  say "buckets ready: $*"
}

case "${1:-}" in
  up) cmd_up ;;
  bucket) shift; cmd_bucket "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
