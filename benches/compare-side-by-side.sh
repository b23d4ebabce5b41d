#!/usr/bin/env bash
# Compares two `weft` binaries serving at the same time, each driven at the
# same steady rate by its own load generator, round after round; prints each
# round's server CPU seconds, peak RSS and NEW/OLD ratio, then the median
# ratio. The machine's speed drifts by more than the changes measured here
# (the same binary read 6.3-8.4 % of a core over one day, README,
# Performance), and runs taken in turn (`compare-steady.sh`) see that drift;
# two servers side by side see the same moments of it. The same binary
# against itself read 1.000-1.041 in four rounds and 0.986-1.007 in three
# (session 26), where runs in turn differ by 10 % from one pair to the next.
# The peak RSS of each is printed too, but take the RSS target's figures
# from `compare-steady.sh`: two servers beside each other share the cores.
#
#   bash benches/compare-side-by-side.sh OLD_WEFT NEW_WEFT [rounds, default 8] [spans/s, default 10000] [seconds, default 30]
#
# Copy the binaries aside first (a build replaces target/release/weft).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="$1"
NEW="$2"
ROUNDS="${3:-8}"
RATE="${4:-10000}"
SECONDS_PER_RUN="${5:-30}"
# shellcheck source=benches/serve.sh
source benches/serve.sh
build_loadgen
DATA="$(mktemp -d)"
OLD_PID=""
NEW_PID=""
cleanup() {
    for pid in $OLD_PID $NEW_PID; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$DATA"
}
trap cleanup EXIT
read_from_disk "$OLD" "$NEW"

# start LABEL BINARY: starts a server; sets LABEL_PID, LABEL_GRPC, LABEL_HTTP.
start() {
    start_weft "$2" "$DATA/$1" "$DATA/$1.log" 30
    printf -v "${1}_PID" '%s' "$WEFT_PID"
    printf -v "${1}_GRPC" '%s' "$GRPC"
    printf -v "${1}_HTTP" '%s' "$HTTP"
}

# drive LABEL: the load generator for LABEL's server, its report in DATA/LABEL.out.
drive() {
    local pid grpc http
    pid="${1}_PID" grpc="${1}_GRPC" http="${1}_HTTP"
    "$LOADGEN" --endpoint "http://${!grpc}" --server-pid "${!pid}" --concurrency 2 \
        --rate "$RATE" --duration-secs "$SECONDS_PER_RUN" --http "http://${!http}" \
        --data-dir "$DATA/$1" >"$DATA/$1.out"
}

cpu_seconds() { sed -n 's/^server CPU seconds *\([0-9.]*\).*/\1/p' "$DATA/$1.out"; }
peak_mib() { sed -n 's/^server RSS now \/ peak *[0-9]* \/ \([0-9]*\) MiB/\1/p' "$DATA/$1.out"; }

for round in $(seq "$ROUNDS"); do
    # Which server starts first alternates.
    if [ $((round % 2)) -eq 1 ]; then
        start OLD "$OLD"
        start NEW "$NEW"
    else
        start NEW "$NEW"
        start OLD "$OLD"
    fi
    drive OLD &
    old_driver=$!
    drive NEW &
    new_driver=$!
    wait "$old_driver" "$new_driver"
    kill "$OLD_PID" "$NEW_PID"
    wait "$OLD_PID" "$NEW_PID" 2>/dev/null || true
    OLD_PID=""
    NEW_PID=""
    old_cpu=$(cpu_seconds OLD)
    new_cpu=$(cpu_seconds NEW)
    ratio=$(awk -v new="$new_cpu" -v old="$old_cpu" 'BEGIN { printf "%.3f", new / old }')
    echo "$ratio" >>"$DATA/ratios"
    echo "round $round: old $old_cpu s (peak $(peak_mib OLD) MiB), new $new_cpu s (peak $(peak_mib NEW) MiB), new/old $ratio"
done

MEDIAN=$(sort -n "$DATA/ratios" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
echo "median new/old CPU: $MEDIAN over $ROUNDS rounds at $RATE spans/s"
