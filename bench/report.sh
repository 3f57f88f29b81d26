#!/usr/bin/env bash
# Reproduces the report benchmark of BENCHMARKS.md: report computation and generation (HTML +
# PDF, stored) over 1,000,000 customers and 5,000,000 interactions, from a release build.
#   bench/report.sh sqlite         # database in /tmp/crm-bench-report/crm.db
#   bench/report.sh postgres       # database crm_bench_report on 127.0.0.1:5432
# Environment: CUSTOMERS (1000000), PER_CUSTOMER (5), RUNS (5), SKIP_SEED=1 to reuse the
# database, SERVER (a crm-server binary; default: cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:?usage: bench/report.sh sqlite|postgres}
customers=${CUSTOMERS:-1000000}
per=${PER_CUSTOMER:-5}
runs=${RUNS:-5}
port=${PORT:-8098}
case "$backend" in
  sqlite)
    mkdir -p /tmp/crm-bench-report
    url="sqlite:///tmp/crm-bench-report/crm.db"
    [ -n "${SKIP_SEED:-}" ] || rm -f /tmp/crm-bench-report/crm.db* ;;
  postgres)
    url="postgres://postgres@127.0.0.1:5432/crm_bench_report"
    if [ -z "${SKIP_SEED:-}" ]; then
      psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS crm_bench_report WITH (FORCE)"
      psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE crm_bench_report"
    fi ;;
  *) echo "unknown backend $backend"; exit 2 ;;
esac
if [ -z "${SERVER:-}" ]; then
  cargo build --release -p crm-api --bin crm-server
  SERVER=target/release/crm-server
fi
export CRM_DATABASE__URL=$url CRM_SERVER__BIND=127.0.0.1:$port CRM_LOG__FILTER=warn
export CRM_AUTH__JWT_SECRET=bench-secret-0123456789-0123456789-0123 CRM_RATE_LIMIT__ENABLED=false
export CRM_JOBS__WORKERS=0 CRM_JOBS__SCHEDULES='[]'
if [ -z "${SKIP_SEED:-}" ]; then
  "$SERVER" migrate
  /usr/bin/time -f "seed: %e s, peak RSS %M KiB" \
    "$SERVER" seed --customers "$customers" --interactions-per-customer "$per"
fi
admin=$("$SERVER" token --role admin --subject bench --ttl-secs 86400)
sales=$("$SERVER" token --role sales --subject sales3 --ttl-secs 86400)
"$SERVER" serve >/tmp/crm-bench-report/server-$backend.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
today=$(date -u +%F)
year_ago=$(date -u -d '-364 days' +%F)
time_it() { # name token query
  local name=$1 token=$2 body=$3 times=()
  for _ in $(seq 1 "$runs"); do
    t=$(curl -s -o /tmp/crm-bench-report/out.json -w '%{time_total}' "http://127.0.0.1:$port/graphql" \
        -H "Authorization: Bearer $token" -H 'content-type: application/json' -d "$body")
    grep -q '"errors"' /tmp/crm-bench-report/out.json && { cat /tmp/crm-bench-report/out.json; exit 1; }
    times+=("$t")
  done
  printf '%s\t%s\n' "$name" "$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.3f s, min %.3f s, max %.3f s (%d runs)", a[int((NR+1)/2)], a[1], a[NR], NR}')"
}
q_report='{"query":"query($p: ReportPeriod!, $f: NaiveDate, $t: NaiveDate) { report(period: $p, from: $f, to: $t) { kpis { key value } } }","variables":{"p":"%s","f":%s,"t":%s}}'
q_generate='{"query":"mutation($p: ReportPeriod!, $f: NaiveDate, $t: NaiveDate) { generateReport(period: $p, from: $f, to: $t) { url } }","variables":{"p":"%s","f":%s,"t":%s}}'
echo "backend=$backend customers=$customers interactions=$((customers * per))"
time_it "report daily (admin)"        "$admin" "$(printf "$q_report" DAILY null null)"
time_it "report monthly (admin)"      "$admin" "$(printf "$q_report" MONTHLY null null)"
time_it "report 365 days (admin)"     "$admin" "$(printf "$q_report" CUSTOM "\"$year_ago\"" "\"$today\"")"
time_it "report monthly (sales)"      "$sales" "$(printf "$q_report" MONTHLY null null)"
time_it "generateReport daily (HTML+PDF, stored)"   "$admin" "$(printf "$q_generate" DAILY null null)"
time_it "generateReport monthly (HTML+PDF, stored)" "$admin" "$(printf "$q_generate" MONTHLY null null)"
time_it "generateReport 365 days (HTML+PDF, stored)" "$admin" "$(printf "$q_generate" CUSTOM "\"$year_ago\"" "\"$today\"")"
echo "server peak RSS: $(grep VmHWM /proc/$pid/status | awk '{print $2, $3}')"
