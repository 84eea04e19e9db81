#!/usr/bin/env bash
# local-s3.sh: runs the project's S3 test server (tests/s3server/server.js,
# s3rver with SigV4 verification, conditional writes and fault injection) in
# the background on 127.0.0.1 for demos and manual use.
#
#   scripts/local-s3.sh start [SERVER FLAGS...]  start unless running, wait until
#                                                ready, print the export lines
#   scripts/local-s3.sh stop | status | env
#   eval "$(scripts/local-s3.sh env)"           point AWS tools and spotrun at it
#
# Settings: SPOTRUN_LOCAL_S3_DIR (default ~/.cache/spotrun/local-s3: data/,
# server.pid, server.port, server.log), SPOTRUN_LOCAL_S3_PORT (9000),
# SPOTRUN_LOCAL_S3_BUCKET (spotrun), SPOTRUN_LOCAL_S3_ACCESS_KEY and
# SPOTRUN_LOCAL_S3_SECRET_KEY (spotrun-test / spotrun-test-secret).
# Messages go to stderr; stdout carries only the export lines.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVER_DIR=$ROOT/tests/s3server
STATE_DIR=${SPOTRUN_LOCAL_S3_DIR:-$HOME/.cache/spotrun/local-s3}
PORT=${SPOTRUN_LOCAL_S3_PORT:-9000}
BUCKET=${SPOTRUN_LOCAL_S3_BUCKET:-spotrun}
ACCESS_KEY=${SPOTRUN_LOCAL_S3_ACCESS_KEY:-spotrun-test}
SECRET_KEY=${SPOTRUN_LOCAL_S3_SECRET_KEY:-spotrun-test-secret}
REGION=us-east-1
DATA_DIR=$STATE_DIR/data
PID_FILE=$STATE_DIR/server.pid
PORT_FILE=$STATE_DIR/server.port
LOG_FILE=$STATE_DIR/server.log

note() { echo "local-s3: $*" >&2; }
die() { note "$*"; exit 1; }

# Prints the pid of the running server; fails when none is running.
running_pid() {
  local pid cmdline
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *s3server/server.js* ]] || return 1
  echo "$pid"
}

endpoint() {
  local port=$PORT
  [[ -s $PORT_FILE ]] && port=$(<"$PORT_FILE")
  echo "http://127.0.0.1:$port"
}

env_lines() {
  printf 'export AWS_ENDPOINT_URL_S3=%q\n' "$(endpoint)"
  printf 'export AWS_ACCESS_KEY_ID=%q\n' "$ACCESS_KEY"
  printf 'export AWS_SECRET_ACCESS_KEY=%q\n' "$SECRET_KEY"
  printf 'export AWS_REGION=%q\n' "$REGION"
  printf 'export AWS_DEFAULT_REGION=%q\n' "$REGION"
  echo "# AWS CLI before 2.13 ignores AWS_ENDPOINT_URL_S3: add --endpoint-url \"\$AWS_ENDPOINT_URL_S3\""
}

start() {
  local pid
  if pid=$(running_pid); then
    note "already running (pid $pid) at $(endpoint)"
    env_lines
    return 0
  fi
  command -v node >/dev/null || die "node is not on PATH (Node.js 20 is needed)"
  [[ -d $SERVER_DIR/node_modules/s3rver ]] ||
    die "s3rver is not installed: run 'npm ci --prefix tests/s3server' in $ROOT"
  mkdir -p "$DATA_DIR"
  rm -f "$PORT_FILE"
  nohup node --openssl-legacy-provider --single-threaded-gc "$SERVER_DIR/server.js" --dir "$DATA_DIR" \
    --host 127.0.0.1 --port "$PORT" --bucket "$BUCKET" --region "$REGION" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
    --port-file "$PORT_FILE" --verbose "$@" >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  for _ in $(seq 100); do
    [[ -s $PORT_FILE ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      note "the server exited while starting; the end of $LOG_FILE:"
      tail -n 5 "$LOG_FILE" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [[ ! -s $PORT_FILE ]]; then
    kill "$pid"
    rm -f "$PID_FILE"
    die "the server was not ready after 10 s; see $LOG_FILE"
  fi
  note "started (pid $pid) at $(endpoint), bucket $BUCKET, data in $DATA_DIR, log in $LOG_FILE"
  env_lines
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PID_FILE" "$PORT_FILE"
    note "not running"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    die "pid $pid did not stop within 5 s"
  fi
  rm -f "$PID_FILE" "$PORT_FILE"
  note "stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(running_pid); then
    echo "running (pid $pid) at $(endpoint), bucket $BUCKET, data in $DATA_DIR, log in $LOG_FILE"
  else
    echo "not running"
    exit 3
  fi
}

action=${1:-}
if [[ $# -gt 0 ]]; then shift; fi
case $action in
  start) start "$@" ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  *)
    echo "usage: $0 start [SERVER FLAGS...] | stop | status | env" >&2
    exit 2
    ;;
esac
