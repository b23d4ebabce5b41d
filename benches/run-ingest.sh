#!/usr/bin/env bash
# Ingest benchmark: starts a release `weft serve` on a fresh data directory and
# drives it with weft-loadgen over OTLP/gRPC: at full speed, at half the rate
# reached, and at a steady 10,000 spans/s. Then the criterion micro-benches.
#
#   bash benches/run-ingest.sh [seconds per run, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
cargo build --release -p weft-web -p weft-benches --bins
BIN="$CARGO_TARGET_DIR/release"
DATA="$(mktemp -d)"
LOG="$DATA/weft.log"

# shellcheck source=benches/serve.sh
source benches/serve.sh
trap stop_weft EXIT

run() {
    echo "== $1"
    shift
    start_weft "$BIN/weft" "$DATA/store" "$LOG"
    "$BIN/weft-loadgen" --endpoint "http://$GRPC" --server-pid "$WEFT_PID" --duration-secs "$SECONDS_PER_RUN" \
        --data-dir "$DATA/store" --http "http://$HTTP" "$@" | tee "$DATA/last.txt"
    stop_weft
}

run "full speed (4 exporters)" --concurrency 4
MAX_RATE=$(grep "spans per second" "$DATA/last.txt" | awk '{print $4}')
HALF=$((MAX_RATE / 2))
run "half of full speed: $HALF spans/s" --concurrency 4 --rate "$HALF"
run "steady 10000 spans/s" --concurrency 2 --rate 10000

echo "== bytes per span after compaction (60 s at full speed, then every hour directory compacted)"
start_weft "$BIN/weft" "$DATA/store" "$LOG"
"$BIN/weft-loadgen" --endpoint "http://$GRPC" --server-pid "$WEFT_PID" --duration-secs "$SECONDS_PER_RUN" --concurrency 4 >/dev/null
# Wait for the background compaction to merge the flushed files.
sleep 12
echo "files: $(find "$DATA/store/spans" -name '*.parquet' | wc -l)"
"$BIN/weft-loadgen" --endpoint "http://$GRPC" --server-pid "$WEFT_PID" --duration-secs 0 --data-dir "$DATA/store" --http "http://$HTTP" | grep -E "bytes per span"
stop_weft

echo "== micro-benchmarks"
cargo bench -p weft-benches --bench ingest -- --noplot --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E "^ingest|thrpt"
