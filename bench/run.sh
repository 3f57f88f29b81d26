#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: seeds 1,000,000 customers x 5 interactions on one backend, serves it
# from a release build, and loads it with wrk on 127.0.0.1.
#   bench/run.sh sqlite            # database in /tmp/crm-bench/crm.db
#   bench/run.sh postgres          # database crm_bench on 127.0.0.1:5432
# Environment: CUSTOMERS (default 1000000), PER_CUSTOMER (5), DURATION (20s), CONNECTIONS (16),
# SKIP_SEED=1 to reuse an existing database.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:?usage: bench/run.sh sqlite|postgres}
customers=${CUSTOMERS:-1000000}
per=${PER_CUSTOMER:-5}
duration=${DURATION:-20s}
connections=${CONNECTIONS:-16}
port=${PORT:-8099}

case "$backend" in
  sqlite)
    mkdir -p /tmp/crm-bench
    url="sqlite:///tmp/crm-bench/crm.db"
    [ -n "${SKIP_SEED:-}" ] || rm -f /tmp/crm-bench/crm.db*
    ids_sql() { sqlite3 /tmp/crm-bench/crm.db "SELECT id FROM customers ORDER BY random() LIMIT 10000"; } ;;
  postgres)
    url="postgres://postgres@127.0.0.1:5432/crm_bench"
    if [ -z "${SKIP_SEED:-}" ]; then
      psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS crm_bench WITH (FORCE)"
      psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE crm_bench"
    fi
    ids_sql() { psql -h 127.0.0.1 -U postgres -d crm_bench -Atc "SELECT id FROM customers ORDER BY random() LIMIT 10000"; } ;;
  *) echo "unknown backend $backend"; exit 2 ;;
esac

cargo build --release -p crm-api --bin crm-server
server=target/release/crm-server
export CRM_DATABASE__URL=$url CRM_SERVER__BIND=127.0.0.1:$port CRM_LOG__FILTER=warn
# Every request is authenticated (an admin JWT) and authorized; the rate limiter is off, since a
# load generator is one client by design.
export CRM_AUTH__JWT_SECRET=bench-secret-0123456789-0123456789-0123 CRM_RATE_LIMIT__ENABLED=false
CRM_BENCH_TOKEN=$("$server" token --role admin --subject bench --ttl-secs 86400)
export CRM_BENCH_TOKEN

if [ -z "${SKIP_SEED:-}" ]; then
  /usr/bin/time -f "seed: %e s, max RSS %M KiB" "$server" seed --customers "$customers" --interactions-per-customer "$per"
fi
if [ "$backend" = postgres ]; then psql -h 127.0.0.1 -U postgres -d crm_bench -qc "VACUUM ANALYZE"; fi
ids_sql > bench/ids.txt

"$server" serve & pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done

echo "== customer(id), $backend, $customers customers"
wrk -t1 -c"$connections" -d5s -s bench/customer.lua "http://127.0.0.1:$port/graphql" >/dev/null
wrk -t1 -c"$connections" -d"$duration" --latency -s bench/customer.lua "http://127.0.0.1:$port/graphql"
echo "== customers(first: 50) with last 5 interactions each, $backend"
wrk -t1 -c"$connections" -d5s -s bench/page.lua "http://127.0.0.1:$port/graphql" >/dev/null
wrk -t1 -c"$connections" -d"$duration" --latency -s bench/page.lua "http://127.0.0.1:$port/graphql"
