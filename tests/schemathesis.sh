#!/usr/bin/env bash
# Property-based API testing with schemathesis (https://schemathesis.readthedocs.io) against the
# real server and the checked-in spec, authenticated as a platform admin who owns a store.
# Optional (needs Python and PyPI); not part of `cargo test`. Exit code: 0 when both passes pass.
#
#   tests/schemathesis.sh            # builds, starts the server on a free port, runs, stops
#   EXAMPLES=200 tests/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PG="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}"
DB="shopfront_schemathesis_$(date +%s)_$$"
PORT="${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
EXAMPLES="${EXAMPLES:-50}"
VENV="${VENV:-target/schemathesis-venv}"
export DATABASE_URL="$PG/$DB"
export SHOPFRONT_STORAGE_DIR="$(mktemp -d)"
# Every endpoint is exercised: Telegram sign-in is configured (a made-up bot whose Bot API is a
# closed local port, so nothing here reaches Telegram), and rate limits are off so thousands of
# generated requests are not answered 429.
export SHOPFRONT_TELEGRAM_BOT_TOKEN="123456:schemathesis-fake-token"
export SHOPFRONT_TELEGRAM_BOT_USERNAME="shopfront_schemathesis_bot"
export SHOPFRONT_TELEGRAM_API_URL="http://127.0.0.1:9/"
export SHOPFRONT_RATE_LIMIT_PER_IP=0 SHOPFRONT_RATE_LIMIT_PER_USER=0
export SHOPFRONT_RATE_LIMIT_LOGIN=0 SHOPFRONT_RATE_LIMIT_UPLOAD=0

[ -x "$VENV/bin/st" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'schemathesis==3.39.*' 'hypothesis==6.125.*'; }
cargo build -q --bin shopfront
BIN="${CARGO_TARGET_DIR:-target}/debug/shopfront"

psql "$PG/postgres" -qc "create database $DB"
cleanup() {
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  psql "$PG/postgres" -qc "drop database if exists $DB with (force)" || true
  rm -rf "$SHOPFRONT_STORAGE_DIR"
}
trap cleanup EXIT

"$BIN" migrate
echo 'schemathesis password 1' | "$BIN" accounts create --email st@example.com --password-stdin --platform-admin
SHOPFRONT_HTTP_ADDR="127.0.0.1:$PORT" "$BIN" serve --log warn &
SERVER=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done

TOKEN=$(curl -fs "http://127.0.0.1:$PORT/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"st@example.com","password":"schemathesis password 1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
api() { # METHOD PATH [JSON] -> the response body
  curl -fs -X "$1" "http://127.0.0.1:$PORT$2" -H "authorization: Bearer $TOKEN" \
    ${3:+-H 'content-type: application/json' -d "$3"}
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
STORE=$(api POST /api/v1/stores '{"name":"Schemathesis","currency":"RUB","timezone":"UTC","payment_instructions":"Bank"}' | field store_id)
PRODUCT=$(api POST "/api/v1/stores/$STORE/products" \
  '{"name":"Tea","sku":"TEA","price":{"amount_minor":89000,"currency":"RUB"},"initial_stock":100000}' | field product_id)
ORDER=$(api POST "/api/v1/stores/$STORE/orders" "{\"lines\":[{\"product_id\":\"$PRODUCT\",\"quantity\":1}]}" | field order_id)
PNG=$(mktemp); printf '\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0' > "$PNG"
RECEIPT=$(curl -fs "http://127.0.0.1:$PORT/api/v1/orders/$ORDER/receipts" -H "authorization: Bearer $TOKEN" \
  -F "file=@$PNG" | field receipt_id)
rm -f "$PNG"

run() {
  "$VENV/bin/st" run openapi/openapi.json \
    --base-url "http://127.0.0.1:$PORT" \
    -H "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --hypothesis-max-examples "$EXAMPLES" \
    --hypothesis-suppress-health-check all \
    --exclude-path-regex '/api/v1/auth/logout' "$@"
}
# 1. Every operation with generated ids (mostly refusals: unknown or foreign resources).
status=0
echo "== pass 1: generated ids"
run || status=$?
# 2. The same operations on real resources, so success paths meet generated bodies too.
echo "== pass 2: real ids (store $STORE, product $PRODUCT, order $ORDER, receipt $RECEIPT)"
run --set-path "store_id=$STORE" --set-path "product_id=$PRODUCT" --set-path "order_id=$ORDER" \
  --set-path "receipt_id=$RECEIPT" --set-query "store_id=$STORE" || status=$?
exit "$status"
