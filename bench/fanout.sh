#!/usr/bin/env bash
# Reproduces the transcript fan-out benchmark of BENCHMARKS.md: a release crm-server (SQLite,
# or PostgreSQL with BACKEND=postgres) with the simulator, SUBSCRIBERS (10000) WebSocket
# clients subscribed to one call's `callTranscript`, and the latency from each segment's commit
# to its arrival at every client.
#   bench/fanout.sh
#   FANOUT_BIN=/tmp/fanout-bin bench/fanout.sh   # run copies of crm-server and fanout instead of
#                                                # building (a shared target dir may be rebuilt)
#   GENERATOR_IDLE=1 bench/fanout.sh              # the generator at SCHED_IDLE: it reads only
#       while the server has nothing to run, as clients on other hosts would not take the
#       server's cores (the latency to the kernel receive timestamp is then the server's alone)
#   BACKEND=postgres bench/fanout.sh              # a fresh crm_fanout database on 127.0.0.1:5432
#       (segments then reach the feed through LISTEN/NOTIFY's wake-up, as on a replica)
#   QUIET=1 bench/fanout.sh                       # the generator reads its sockets only between
#       segments (one sentinel reads at once), so no thread of it runs while a segment is fanned
#       out: clients on other hosts (see tests/examples/fanout.rs)
#   OPERATION_IDS=distinct bench/fanout.sh        # every subscription with an operation id of its
#       own (as the graphql-ws client does), so every socket gets a frame of its own
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-8099}
subscribers=${SUBSCRIBERS:-10000}
dir=/tmp/crm-fanout
rm -rf "$dir" && mkdir -p "$dir"

if [ -n "${FANOUT_BIN:-}" ]; then
    server=$FANOUT_BIN/crm-server generator=$FANOUT_BIN/fanout
else
    cargo build --release -p crm-api --bin crm-server
    cargo build --release -p crm-tests --example fanout
    target=${CARGO_TARGET_DIR:-target}
    server=$target/release/crm-server generator=$target/release/examples/fanout
fi
case ${BACKEND:-sqlite} in
    sqlite) url="sqlite://$dir/crm.db" ;;
    postgres)
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS crm_fanout WITH (FORCE)"
        psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE crm_fanout"
        url="postgres://postgres@127.0.0.1:5432/crm_fanout"
        ;;
    *) echo "BACKEND: sqlite or postgres" >&2; exit 2 ;;
esac
export CRM_DATABASE__URL=$url CRM_SERVER__BIND=127.0.0.1:$port CRM_LOG__FILTER=${CRM_LOG__FILTER:-warn}
export CRM_AUTH__JWT_SECRET=bench-secret-0123456789-0123456789-0123 CRM_RATE_LIMIT__ENABLED=false
# One call, placed whenever the benchmark runs: no pipeline calls, calling hours all week.
export CRM_PIPELINE__START_ON_CREATE=false
export CRM_VOICE__CALLING_WINDOW__START=00:00 CRM_VOICE__CALLING_WINDOW__END=23:59
export CRM_VOICE__CALLING_WINDOW__WEEKDAYS='[mon,tue,wed,thu,fri,sat,sun]'
token=$("$server" token --role admin --subject bench --ttl-secs 86400)
ulimit -n 20000 || true
"$server" serve >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
idle=()
[ -z "${GENERATOR_IDLE:-}" ] || idle=(chrt --idle 0)
CRM_URL=http://127.0.0.1:$port CRM_TOKEN=$token SUBSCRIBERS=$subscribers SERVER_PID=$pid \
    "${idle[@]}" "$generator"
