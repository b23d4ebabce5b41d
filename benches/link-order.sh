#!/usr/bin/env bash
# Writes web/link-order.txt: the functions `weft serve` runs while it ingests
# at a steady rate and answers SQL, the JSON API and the pages, hottest first.
# The release build lays them out together (web/build.rs), so the pages of
# code a running server maps are dense: the binary is 104 MB of code and
# the kernel maps code around every page it faults in. Names that later
# builds no longer have are skipped by the linker, so a stale list only
# orders less; run this again after large changes. Needs `perf`.
#
#   bash benches/link-order.sh
#
# FREQUENCY (samples per second, default 40000) and ROUNDS (of queries and
# pages, default 15) trade coverage for time: at 80000 the server's queries
# slowed so much that 40 rounds had not finished in 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
cargo build --release -p weft-web -p weft-benches --bin weft --bin weft-loadgen
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

perf record -F "${FREQUENCY:-40000}" -e cpu-clock -o "$WORK/perf.data" -- "$BIN/weft" serve \
    --data-dir "$WORK/data" --otlp-grpc-addr 127.0.0.1:0 --otlp-http-addr 127.0.0.1:0 \
    --http-addr 127.0.0.1:0 2>"$WORK/log" &
PERF=$!
for _ in $(seq 200); do grep -q " http listening" "$WORK/log" 2>/dev/null && break; sleep 0.1; done
SERVER=$(pgrep -P "$PERF")
GRPC=$(grep "otlp-grpc listening" "$WORK/log" | sed 's/.*addr=\([^ ]*\).*/\1/')
HTTP=http://$(grep " http listening" "$WORK/log" | sed 's/.*addr=\([^ ]*\).*/\1/')

# Ingest, with the load generator's freshness and count queries.
"$BIN/weft-loadgen" --endpoint "http://$GRPC" --server-pid "$SERVER" --concurrency 2 \
    --rate 10000 --duration-secs 15 --http "$HTTP" --data-dir "$WORK/data" >/dev/null
# Queries and pages, repeated so that functions run once per request are sampled.
SERVICE=$(curl -s "$HTTP/api/services" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0])')
for _ in $(seq "${ROUNDS:-15}"); do
    for sql in "SELECT count(*) FROM spans" \
        "SELECT service_name, count(*), avg(duration_ns) FROM spans GROUP BY 1 ORDER BY 2 DESC" \
        "SELECT trace_id, name, attributes['http.route'] FROM spans WHERE duration_ns > 1000 LIMIT 20" \
        "SELECT * FROM spans LIMIT 5" \
        "SELECT metric_name, count(*) FROM metrics GROUP BY 1"; do
        curl -s -o /dev/null -X POST -H 'content-type: application/json' \
            -d "{\"sql\": \"$sql\"}" "$HTTP/api/sql"
    done
    for page in / /services "/services/$SERVICE" /map /sql /explore /api/services \
        "/api/services/$SERVICE/operations" "/api/traces?service=$SERVICE&limit=20" \
        "/api/dependencies?endTs=$(date +%s)000&lookback=3600000" "/?service=$SERVICE"; do
        curl -s -o /dev/null "$HTTP$page"
    done
done
kill -INT "$SERVER"
wait "$PERF" || true

# Sampled functions of the binary itself (not of the C library or the
# kernel), by samples, most first.
nm "$BIN/weft" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$WORK/functions"
{
    echo "# Written by benches/link-order.sh; read by web/build.rs."
    perf script -i "$WORK/perf.data" -F ip,sym --no-demangle 2>/dev/null \
        | awk '{ print $2 }' | sort | uniq -c | sort -rn | awk '{ print $2 }' \
        | grep -Fxf "$WORK/functions"
} >web/link-order.txt
echo "web/link-order.txt: $(($(wc -l <web/link-order.txt) - 1)) functions"
