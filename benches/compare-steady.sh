#!/usr/bin/env bash
# Compares two `weft` binaries at a steady rate (the target: ≤ 5 % of a core
# and ≤ 100 MiB at 10,000 spans/s): PAIRS runs of each, in turn, the first of
# a pair alternating between them, then the medians and their ratio. One pair
# says little on this machine: the same binary read 6.3–8.4 % of a core over
# one day (README, Performance, session 20).
#
#   bash benches/compare-steady.sh OLD_WEFT NEW_WEFT [pairs, default 8] [spans/s, default 10000] [seconds, default 20]
#
# Copy the binaries aside first (a build replaces target/release/weft). Each
# run starts `weft serve` on a fresh store with the default compaction
# interval and drives it with weft-loadgen (2 exporters), with its SQL count
# before and after, as the README's figures are taken.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="$1"
NEW="$2"
PAIRS="${3:-8}"
RATE="${4:-10000}"
SECONDS_PER_RUN="${5:-20}"
# shellcheck source=benches/serve.sh
source benches/serve.sh
build_loadgen
trap stop_weft EXIT
DATA="$(mktemp -d)"
read_from_disk "$OLD" "$NEW"

# run LABEL BINARY: one run; prints "LABEL CPU% PEAK_MIB" and appends CPU% to $DATA/LABEL.
run() {
    local label="$1" bin="$2" out cpu peak
    start_weft "$bin" "$DATA/store" "$DATA/weft.log" 30
    out=$("$LOADGEN" --endpoint "http://$GRPC" --server-pid "$WEFT_PID" --concurrency 2 \
        --rate "$RATE" --duration-secs "$SECONDS_PER_RUN" --http "http://$HTTP" --data-dir "$DATA/store")
    stop_weft
    cpu=$(echo "$out" | sed -n 's/.*(\([0-9.]*\)% of one core).*/\1/p')
    peak=$(echo "$out" | sed -n 's/^server RSS now \/ peak *[0-9]* \/ \([0-9]*\) MiB/\1/p')
    echo "$cpu" >>"$DATA/$label"
    echo "$label $cpu % of a core, peak RSS $peak MiB"
}

for pair in $(seq "$PAIRS"); do
    if [ $((pair % 2)) -eq 1 ]; then
        run old "$OLD"
        run new "$NEW"
    else
        run new "$NEW"
        run old "$OLD"
    fi
done

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
OLD_MEDIAN=$(median "$DATA/old")
NEW_MEDIAN=$(median "$DATA/new")
echo "median: old $OLD_MEDIAN %, new $NEW_MEDIAN % of a core at $RATE spans/s; new/old $(awk -v o="$OLD_MEDIAN" -v n="$NEW_MEDIAN" 'BEGIN { printf "%.2f", n / o }')"
rm -rf "$DATA"
