#!/usr/bin/env bash
# Optional (needs wrk: `apt-get install wrk`, and `cargo build --release`): the console's pages
# against the API calls answering the same questions, on the release `serve` with its
# projections live, one wrk run each (2 threads, 16 connections, 10 s). docs/performance.md.
set -euo pipefail
BIN=${SHOPFRONT_BIN:-target/release/shopfront}
DB=${CONSOLE_BENCH_DB:-console_bench}
PORT=18080
psql -h 127.0.0.1 -U postgres -qc "drop database if exists $DB" postgres
psql -h 127.0.0.1 -U postgres -qc "create database $DB" postgres
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export SHOPFRONT_RATE_LIMIT_PER_IP=0 SHOPFRONT_RATE_LIMIT_PER_USER=0 SHOPFRONT_RATE_LIMIT_LOGIN=0
export SHOPFRONT_LOG=warn SHOPFRONT_STORAGE_DIR=/tmp/console-bench-files
$BIN serve --http-addr 127.0.0.1:$PORT > /tmp/console-bench-serve.log 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$PORT/health/ready >/dev/null && break; sleep 0.2; done
SEED=$($BIN seed-demo)
EMAIL=$(echo "$SEED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["owner"]["email"])')
PASSWORD=$(echo "$SEED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["owner"]["password"])')
STORE=$(echo "$SEED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["store_id"])')
LOGIN=$(curl -s -D - -o /dev/null http://127.0.0.1:$PORT/console/login | sed -n 's/^set-cookie: sf_login=\([^;]*\).*/\1/ip' | tr -d '\r')
SESSION=$(curl -s -D - -o /dev/null -H "cookie: sf_login=$LOGIN" \
  --data-urlencode "email=$EMAIL" --data-urlencode "password=$PASSWORD" --data-urlencode "csrf=$LOGIN" \
  http://127.0.0.1:$PORT/console/login | sed -n 's/^set-cookie: sf_session=\([^;]*\).*/\1/ip' | tr -d '\r')
TOKEN=$(curl -s http://127.0.0.1:$PORT/api/v1/auth/login -H 'content-type: application/json' \
  -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
# Let the projections take in the seeding before measuring.
sleep 1
run() {
  local name=$1 header=$2 path=$3
  printf '%-28s ' "$name"
  wrk -t2 -c16 -d10s -H "$header" --latency "http://127.0.0.1:$PORT$path" \
    | awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF} END {printf "%8s req/s  p50 %8s  p99 %8s  non-2xx %s\n", rps, p50, p99, (bad==""?0:bad)}'
}
run "health (floor)" "x: y" "/health/live"
run "API receipts queue" "authorization: Bearer $TOKEN" "/api/v1/stores/$STORE/receipts"
run "console desk" "cookie: sf_session=$SESSION" "/console/desk"
run "API orders" "authorization: Bearer $TOKEN" "/api/v1/stores/$STORE/orders"
run "console orders" "cookie: sf_session=$SESSION" "/console/orders"
run "API dashboard" "authorization: Bearer $TOKEN" "/api/v1/analytics/dashboard?store_id=$STORE"
run "console dashboard" "cookie: sf_session=$SESSION" "/console/dashboard"
