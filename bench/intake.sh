#!/usr/bin/env bash
# Intake benchmarks (BENCHMARKS.md): signed webhook ingest with wrk, then a CSV file import,
# against a database already holding CUSTOMERS customers.
#   bench/intake.sh sqlite|postgres
# Environment: CUSTOMERS (1000000), SKIP_SEED=1 to reuse the database of bench/run.sh, SERVER (a built binary),
# DURATION (20s; 0 skips the webhook ingest), CONNECTIONS (32), ROWS (rows of the CSV import, 100000), CRM_LOG__FILTER (warn;
# `warn,crm_plugins::import_file=debug` logs where an import's time went).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:?usage: bench/intake.sh sqlite|postgres}
customers=${CUSTOMERS:-1000000}
duration=${DURATION:-20s}
connections=${CONNECTIONS:-32}
rows=${ROWS:-100000}
port=${PORT:-8099}
mkdir -p /tmp/crm-bench
case "$backend" in
  sqlite)
    url="sqlite:///tmp/crm-bench/crm.db"
    [ -n "${SKIP_SEED:-}" ] || rm -f /tmp/crm-bench/crm.db* ;;
  postgres)
    url="postgres://postgres@127.0.0.1:5432/crm_bench"
    if [ -z "${SKIP_SEED:-}" ]; then
      psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS crm_bench WITH (FORCE)"
      psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE crm_bench"
    fi ;;
  *) echo "unknown backend $backend"; exit 2 ;;
esac

# SERVER=path runs a binary built elsewhere (to compare two builds on the same database).
if [ -z "${SERVER:-}" ]; then
  cargo build --release -p crm-api --bin crm-server
fi
server=${SERVER:-target/release/crm-server}
secret="whsec_$(openssl rand -base64 32)"
export CRM_DATABASE__URL=$url CRM_SERVER__BIND=127.0.0.1:$port CRM_LOG__FILTER=${CRM_LOG__FILTER:-warn}
export CRM_AUTH__JWT_SECRET=bench-secret-0123456789-0123456789-0123 CRM_RATE_LIMIT__ENABLED=false
export CRM_INTAKE__WEBHOOK_SECRETS__BENCH=$secret CRM_INTAKE__IMPORT_DIR=/tmp/crm-bench/imports
# Ingest alone: no workers, so the numbers are the acknowledged deliveries (raw payload and
# its job stored, in one transaction each).
export CRM_JOBS__WORKERS=0
token=$("$server" token --role admin --subject bench --ttl-secs 86400)
if [ -z "${SKIP_SEED:-}" ]; then
  /usr/bin/time -f "seed: %e s, max RSS %M KiB" "$server" seed --customers "$customers" --interactions-per-customer 0
fi

"$server" serve & pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done

if [ "$duration" != 0 ]; then
  python3 bench/gen_webhooks.py "$secret" 250000 /tmp/crm-bench/webhooks.tsv
  echo "== signed webhook ingest, $backend, $customers customers, $connections connections"
  WEBHOOKS=/tmp/crm-bench/webhooks.tsv wrk -t1 -c"$connections" -d"$duration" --latency -s bench/webhook.lua "http://127.0.0.1:$port/webhooks/leads"
fi

[ "$rows" -gt 0 ] || exit 0
echo "== CSV import of $rows rows, $backend"
# New people on every run (a re-run over the same database must not measure duplicates).
python3 - "$rows" > /tmp/crm-bench/leads.csv <<'PY'
import random, sys
n = int(sys.argv[1])
run = random.randrange(80)
print("Vorname;Nachname;E-Mail;Telefon;Firma;Land")
for i in range(n):
    print(f"Lead;Import {i};import{i}.r{run}.{random.randrange(10**6)}@firma-{i % 991}.de;+49 151 {10000000 + run * 1000000 + i};Firma {i % 991} GmbH;DE")
PY
kill $pid; wait $pid 2>/dev/null || true
# The import is measured alone: drop the deliveries queued above, and the qualify jobs an
# earlier import over this database left queued (the runner would take them first).
case "$backend" in
  sqlite) sqlite3 /tmp/crm-bench/crm.db "DELETE FROM jobs WHERE kind IN ('import-lead', 'qualify-lead')" ;;
  postgres) psql -h 127.0.0.1 -U postgres -d crm_bench -qc "DELETE FROM jobs WHERE kind IN ('import-lead', 'qualify-lead')" ;;
esac
CRM_JOBS__WORKERS=2 "$server" serve & pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
start=$(date +%s.%N)
id=$(curl -sf "http://127.0.0.1:$port/graphql" -H "authorization: Bearer $token" \
  -F operations='{"query":"mutation($file: Upload!) { importLeadsFile(file: $file) { id } }","variables":{"file":null}}' \
  -F map='{"0":["variables.file"]}' -F 0=@/tmp/crm-bench/leads.csv | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["importLeadsFile"]["id"])')
while :; do
  status=$(curl -sf "http://127.0.0.1:$port/graphql" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"query\":\"{ leadImport(id: \\\"$id\\\") { status rowsDone created updated merged skipped invalid } }\"}")
  case "$status" in *completed*|*failed*) break ;; esac
  sleep 1
done
end=$(date +%s.%N)
echo "$status"
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'import: {s:.1f} s, {int(sys.argv[3])/s:.0f} rows/s')" "$start" "$end" "$rows"
grep VmHWM "/proc/$pid/status"
# The server's CPU time (user + system) since it started: what the import cost this process,
# steadier than the wall time on a machine whose speed drifts.
awk -v hz="$(getconf CLK_TCK)" '{ printf "server CPU: %.1f s user, %.1f s system\n", $14 / hz, $15 / hz }' "/proc/$pid/stat"
# The runner goes on with the imported leads' qualify jobs; a graceful stop would wait for all.
kill -9 $pid; wait $pid 2>/dev/null || true
# What the import left behind: its leads, their runs and qualify jobs (queued; a few done
# between the import's end and the kill), and the audit chain, recomputed from the first entry.
case "$backend" in
  sqlite) q() { sqlite3 /tmp/crm-bench/crm.db "$1"; } ;;
  postgres) q() { psql -h 127.0.0.1 -U postgres -d crm_bench -tAc "$1"; } ;;
esac
echo "customers: $(q "SELECT count(*) FROM customers")"
echo "import runs: $(q "SELECT count(*) FROM pipeline_runs WHERE cause = 'import'")"
echo "qualify-lead jobs by status: $(q "SELECT status || '=' || count(*) FROM jobs WHERE kind = 'qualify-lead' GROUP BY status" | tr '\n' ' ')"
/usr/bin/time -f "audit verify: %e s" "$server" audit verify
