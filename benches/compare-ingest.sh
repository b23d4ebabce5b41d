#!/usr/bin/env bash
# Compares two `weft` binaries on the ingest benchmark's steps, run after run
# in turn (this machine's speed drifts by ±30 % over minutes, so figures of
# one binary measured an hour after the other's compare nothing):
#
#   bash benches/compare-ingest.sh OLD_WEFT NEW_WEFT [rounds, default 2] [half-speed rate, default 36000]
#
# Copy the binaries aside first (a build replaces target/release/weft). Each
# run starts `weft serve` on a fresh store with `--compaction-interval-secs 5`
# and drives it with weft-loadgen over OTLP/gRPC: full speed (4 exporters,
# 15 s), the half-speed rate (4 exporters, 15 s), 10,000 spans/s (2
# exporters, 20 s), and bytes per span on disk (full speed for 15 s, then
# 12 s of compaction). One line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="$1"
NEW="$2"
ROUNDS="${3:-2}"
HALF="${4:-36000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
# The same packages as run-ingest.sh builds, so cargo does not rebuild for another feature set.
cargo build --release -p weft-web -p weft-benches --bins
LOADGEN="$CARGO_TARGET_DIR/release/weft-loadgen"

# shellcheck source=benches/serve.sh
source benches/serve.sh
trap stop_weft EXIT
DATA="$(mktemp -d)"

run() {
    local label="$1" bin="$2"
    shift 2
    start_weft "$bin" "$DATA/store" "$DATA/weft.log"
    local out
    out=$("$LOADGEN" --endpoint "http://$GRPC" --server-pid "$WEFT_PID" --data-dir "$DATA/store" \
        --http "http://$HTTP" "$@")
    stop_weft
    echo "$label $(echo "$out" | grep -E 'spans per second|spans per CPU|CPU seconds|p50|p99|RSS|refusals' |
        awk -F'  +' '{printf "%s=%s; ", $1, $2}')"
}

bytes_per_span() {
    local label="$1" bin="$2"
    start_weft "$bin" "$DATA/store" "$DATA/weft.log"
    "$LOADGEN" --endpoint "http://$GRPC" --server-pid "$WEFT_PID" --duration-secs 15 --concurrency 4 >/dev/null
    sleep 12
    local files
    files=$(find "$DATA/store/spans" -name '*.parquet' | wc -l)
    local out
    out=$("$LOADGEN" --endpoint "http://$GRPC" --server-pid "$WEFT_PID" --duration-secs 0 \
        --data-dir "$DATA/store" --http "http://$HTTP" | grep -E "bytes per span")
    stop_weft
    echo "$label files=$files; $out"
}

for round in $(seq "$ROUNDS"); do
    for step in "full --duration-secs 15 --concurrency 4" \
        "half --duration-secs 15 --concurrency 4 --rate $HALF" \
        "10k --duration-secs 20 --concurrency 2 --rate 10000"; do
        read -r name args <<<"$step"
        # shellcheck disable=SC2086
        run "round $round $name old:" "$OLD" $args
        # shellcheck disable=SC2086
        run "round $round $name new:" "$NEW" $args
    done
    bytes_per_span "round $round bytes old:" "$OLD"
    bytes_per_span "round $round bytes new:" "$NEW"
done
