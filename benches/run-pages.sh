#!/usr/bin/env bash
# Server-side render time of every web UI page over the benchmark store
# (build it first with benches/run-query.sh). Starts `weft query` (release)
# on the store and times each page with curl; prints the median of N runs.
#
#   bash benches/run-pages.sh [store directory, default ~/.cache/weft-bench-store] [runs, default 11]
set -euo pipefail
cd "$(dirname "$0")/.."
STORE="${1:-$HOME/.cache/weft-bench-store}"
RUNS="${2:-11}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
# WEFT_BIN=path times a binary already built, e.g. the one `cargo test
# --workspace` builds (dependencies optimised, Weft's own code not), when a
# release build is too costly to make. (Building `-p weft-web` alone would
# rebuild DataFusion with another feature set.)
if [ -n "${WEFT_BIN:-}" ]; then
    BIN="$WEFT_BIN"
else
    cargo build --release -p weft-web --bin weft
    BIN="$CARGO_TARGET_DIR/release/weft"
fi
[ -d "$STORE/spans" ] || { echo "no store at $STORE: run benches/run-query.sh first" >&2; exit 1; }

LOG="$(mktemp)"
"$BIN" query --data-dir "$STORE" --http-addr 127.0.0.1:0 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q "http listening" "$LOG" && break; sleep 0.1; done
ADDR="$(grep -o 'addr=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)"
BASE="http://$ADDR"
# At start, rollup upkeep reads each closed hour's attribute keys (about 8 s
# of CPU for this store's 24 hours): time the pages after it, not beside it.
sleep "${SETTLE_SECS:-15}"

# The benchmark day (2026-11-20 UTC) in microseconds, and its last hour.
DAY_START=1795132800000000
DAY_END=$((DAY_START + 86400000000))
HOUR_START=$((DAY_END - 3600000000))
TRACE="$(curl -s "$BASE/api/sql" -H 'content-type: application/json' \
    -d "{\"sql\": \"SELECT trace_id FROM spans WHERE start_time >= to_timestamp_micros($((DAY_START + 43200000000))) LIMIT 1\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])')"

OTHER="$(curl -s "$BASE/api/sql" -H 'content-type: application/json' \
    -d "{\"sql\": \"SELECT trace_id FROM spans WHERE start_time >= to_timestamp_micros($((DAY_START + 50400000000))) LIMIT 1\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])')"

PAGES=(
    "search|/?service=frontend&minDuration=40ms&start=$HOUR_START&end=$DAY_END&limit=20"
    "search_attribute|/?tags=app.user_id%3Duser-42&start=$DAY_START&end=$DAY_END&limit=20"
    "trace|/traces/$TRACE"
    "compare|/compare?a=$TRACE&b=$OTHER"
    "explore|/explore"
    "upload|/upload"
    "services_day|/services?start=$DAY_START&end=$DAY_END"
    "service_day|/services/frontend?start=$DAY_START&end=$DAY_END"
    "services_hour|/services?start=$HOUR_START&end=$DAY_END"
    "service_hour|/services/frontend?start=$HOUR_START&end=$DAY_END"
    "map_day|/map?start=$DAY_START&end=$DAY_END"
    "map_hour|/map?start=$HOUR_START&end=$DAY_END"
    "insights_hour|/insights?start=$HOUR_START&end=$DAY_END"
    "sql|/sql?q=SELECT%20service_name%2C%20count(*)%20FROM%20spans%20GROUP%20BY%201"
)
printf '%-18s %10s %8s %s\n' page "median ms" status url
for entry in "${PAGES[@]}"; do
    name="${entry%%|*}"; path="${entry#*|}"
    times=()
    for _ in $(seq "$RUNS"); do
        out="$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "$BASE$path")"
        status="${out% *}"; times+=("${out#* }")
    done
    median="$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] * 1000}')"
    printf '%-18s %10.1f %8s %s\n' "$name" "$median" "$status" "$path"
done
