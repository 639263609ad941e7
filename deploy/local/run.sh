#!/usr/bin/env bash
# `make run`: the whole system on this machine with demo traffic, until Ctrl-C.
#
# Starts (fetching once) a local Kafka and Redis, then the gateway and the worker, sends
# signed, shuffled, duplicated and late demo webhooks (`msgstatus demo`), prints the
# normalized message.status stream and a summary, and keeps everything up so you can look
# around. Ctrl-C stops gateway and worker; Kafka and Redis keep running for the next run
# (`make infra-down` stops them).
#
# Every run reads and writes fresh topics: MSGSTATUS_TOPIC_PREFIX defaults to
# "demo-<timestamp>." so earlier runs never leak into the demo. Set it yourself to reuse
# topics (an empty value means no prefix); worker state goes to var/run/<prefix>/ and
# logs to var/run/*.log (`make clean` removes them). Other knobs, all optional:
#   MSGSTATUS_KAFKA_PORT (9092)  MSGSTATUS_KAFKA_CONTROLLER_PORT (9093)  MSGSTATUS_REDIS_PORT (6379)
#   MSGSTATUS_HTTP_PORT (8080)   MSGSTATUS_METRICS_PORT (6066)   MSGSTATUS_INFRA_DIR (var/infra)
# Arguments are passed to `msgstatus demo` (e.g. `bash deploy/local/run.sh --messages 50`).
set -euo pipefail

cd "$(dirname "$0")/../.."
PY=.venv/bin/python
MSGSTATUS=.venv/bin/msgstatus
RUN_DIR=var/run
START_TIMEOUT=${MSGSTATUS_START_TIMEOUT:-90}

say() { printf '[run] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ -x "$MSGSTATUS" ] || die "$MSGSTATUS is missing: run \`make run\` (it creates .venv first)"

# Kafka/Redis addresses follow their ports unless given outright.
export MSGSTATUS_KAFKA_BOOTSTRAP="${MSGSTATUS_KAFKA_BOOTSTRAP:-127.0.0.1:${MSGSTATUS_KAFKA_PORT:-9092}}"
export MSGSTATUS_REDIS_URL="${MSGSTATUS_REDIS_URL:-redis://127.0.0.1:${MSGSTATUS_REDIS_PORT:-6379}/0}"
export MSGSTATUS_HTTP_HOST="${MSGSTATUS_HTTP_HOST:-127.0.0.1}"
export MSGSTATUS_HTTP_PORT="${MSGSTATUS_HTTP_PORT:-8080}"
export MSGSTATUS_METRICS_PORT="${MSGSTATUS_METRICS_PORT:-6066}"
export MSGSTATUS_TOPIC_PREFIX="${MSGSTATUS_TOPIC_PREFIX-demo-$(date +%Y%m%d-%H%M%S).}"
# The local broker is a single node: topics cannot be replicated (production default 3/2).
export MSGSTATUS_REPLICATION_FACTOR="${MSGSTATUS_REPLICATION_FACTOR:-1}"
export MSGSTATUS_MIN_INSYNC_REPLICAS="${MSGSTATUS_MIN_INSYNC_REPLICAS:-1}"
# Worker state (RocksDB) per set of topics: Faust names its table files after the table
# only, and state left by other topics makes the worker stop with a ConsistencyError.
state_name=${MSGSTATUS_TOPIC_PREFIX%.}
export MSGSTATUS_DATA_DIR="${MSGSTATUS_DATA_DIR:-./$RUN_DIR/${state_name//\//_}}"
export PYTHONUNBUFFERED=1
# Obviously-fake secrets so every demo provider is enabled; real ones win when set.
export MSGSTATUS_TWILIO_AUTH_TOKEN="${MSGSTATUS_TWILIO_AUTH_TOKEN:-demo-twilio-auth-token}"
export MSGSTATUS_META_APP_SECRET="${MSGSTATUS_META_APP_SECRET:-demo-meta-app-secret}"
export MSGSTATUS_META_VERIFY_TOKEN="${MSGSTATUS_META_VERIFY_TOKEN:-demo-meta-verify-token}"
export MSGSTATUS_RYZE_TOKEN="${MSGSTATUS_RYZE_TOKEN:-demo-ryze-token}"
export MSGSTATUS_API_TOKEN="${MSGSTATUS_API_TOKEN:-demo-api-token}"        # reads /v1/messages
export MSGSTATUS_EVENTS_TOKEN="${MSGSTATUS_EVENTS_TOKEN:-demo-events-token}" # writes /v1/events

case "$MSGSTATUS_HTTP_HOST" in 0.0.0.0 | "::" | "") LOCAL_HOST=127.0.0.1 ;; *) LOCAL_HOST=$MSGSTATUS_HTTP_HOST ;; esac
BASE_URL="http://$LOCAL_HOST:$MSGSTATUS_HTTP_PORT"
METRICS_URL="http://$LOCAL_HOST:$MSGSTATUS_METRICS_PORT/metrics"

GATEWAY_PID=""
WORKER_PID=""
INFRA_UP=""

stop_part() {  # name pid: SIGTERM its process group, SIGKILL after 20 s
  local name=$1 pid=$2 waited=0
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 200 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) ignored SIGTERM for 20s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  say "$name stopped"
}

cleanup() {
  local rc=$?
  set +e
  # Ignore further INT/TERM: make and timeout forward Ctrl-C more than once, and a second
  # one must not cut the shutdown short (it is bounded: 20 s per part).
  trap '' INT TERM
  trap - EXIT
  stop_part worker "$WORKER_PID"
  stop_part gateway "$GATEWAY_PID"
  [ -z "$INFRA_UP" ] || say "Kafka and Redis are still running; \`make infra-down\` stops them"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() {
  "$PY" -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$LOCAL_HOST" "$1"
}

answers_200() {
  "$PY" -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)' "$1"
}

log_tail() { say "last lines of $1:"; tail -n 30 "$1" >&2 || true; }

check_parts() {  # a part that died on its own ends the run, with its log
  local part
  for part in "gateway:$GATEWAY_PID" "worker:$WORKER_PID"; do
    if ! kill -0 "${part#*:}" 2>/dev/null; then
      log_tail "$RUN_DIR/${part%%:*}.log"
      die "${part%%:*} stopped unexpectedly (log: $RUN_DIR/${part%%:*}.log)"
    fi
  done
}

wait_until_answers() {  # name pid url log
  local name=$1 pid=$2 url=$3 log=$4 deadline=$((SECONDS + START_TIMEOUT))
  until answers_200 "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log_tail "$log"
      die "$name exited before it was ready (log: $log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail "$log"
      die "$name did not answer at $url within ${START_TIMEOUT}s (log: $log)"
    fi
    sleep 0.5
  done
}

say "starting Kafka and Redis (the first run fetches the Kafka jars once)"
"$PY" deploy/local/infra.py up || die "Kafka/Redis did not start (see above)"
INFRA_UP=1

for port in "$MSGSTATUS_HTTP_PORT" "$MSGSTATUS_METRICS_PORT"; do
  if port_busy "$port"; then
    die "$LOCAL_HOST:$port is already in use (another \`make run\`?); set MSGSTATUS_HTTP_PORT/MSGSTATUS_METRICS_PORT"
  fi
done

mkdir -p "$RUN_DIR"
say "topics prefixed '$MSGSTATUS_TOPIC_PREFIX', worker state in $MSGSTATUS_DATA_DIR, logs in $RUN_DIR/{gateway,worker}.log"
# setsid: own process groups, so Ctrl-C reaches only this script, which stops them in order.
setsid "$MSGSTATUS" gateway >"$RUN_DIR/gateway.log" 2>&1 </dev/null &
GATEWAY_PID=$!
setsid "$MSGSTATUS" worker >"$RUN_DIR/worker.log" 2>&1 </dev/null &
WORKER_PID=$!

wait_until_answers gateway "$GATEWAY_PID" "$BASE_URL/readyz" "$RUN_DIR/gateway.log"
say "gateway ready at $BASE_URL"
if [ "$MSGSTATUS_METRICS_PORT" != 0 ]; then
  wait_until_answers worker "$WORKER_PID" "$METRICS_URL" "$RUN_DIR/worker.log"
  say "worker up (metrics at $METRICS_URL)"
fi

demo_rc=0
"$MSGSTATUS" demo "$@" | tee "$RUN_DIR/demo.log" || demo_rc=$?
if [ "$demo_rc" -ne 0 ]; then
  say "the demo did not end as expected (exit $demo_rc); see $RUN_DIR/*.log"
fi

check_parts
example=$(grep -E '^[0-9]{2}:[0-9]{2}:[0-9]{2}' "$RUN_DIR/demo.log" | tail -n 1 | awk '{print $2}' || true)
cat <<EOF

Look around while it runs (Ctrl-C stops gateway and worker):
  curl -s -H 'Authorization: Bearer $MSGSTATUS_API_TOKEN' $BASE_URL/v1/messages/${example:-<message_key>}
  MSGSTATUS_KAFKA_BOOTSTRAP=$MSGSTATUS_KAFKA_BOOTSTRAP MSGSTATUS_TOPIC_PREFIX=$MSGSTATUS_TOPIC_PREFIX \\
    $MSGSTATUS tail --from-beginning
  MSGSTATUS_REDIS_URL=$MSGSTATUS_REDIS_URL MSGSTATUS_TOPIC_PREFIX=$MSGSTATUS_TOPIC_PREFIX \\
    $MSGSTATUS status ${example:-<message_key>}
  curl -s $METRICS_URL | grep '^msgstatus_'
  logs: $RUN_DIR/gateway.log $RUN_DIR/worker.log
Kafka $MSGSTATUS_KAFKA_BOOTSTRAP and Redis $MSGSTATUS_REDIS_URL stay up after Ctrl-C; \`make infra-down\` stops them.
EOF

# Wait for Ctrl-C; a part that dies on its own ends the run with its log.
while true; do
  check_parts
  sleep 1 &
  wait $! || true
done
