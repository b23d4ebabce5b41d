# Sourced by the ingest benchmarks: starting and stopping a `weft serve`
# for the load generator.

# start_weft WEFT_BINARY DATA_DIR LOG [COMPACTION_SECS]: starts `weft serve`
# on a fresh DATA_DIR with ephemeral ports and compaction every
# COMPACTION_SECS (default 5); sets WEFT_PID, GRPC and HTTP (host:port) once
# it listens.
start_weft() {
    local bin="$1" data="$2" log="$3" compaction="${4:-5}"
    rm -rf "$data"
    "$bin" serve --data-dir "$data" --otlp-grpc-addr 127.0.0.1:0 --otlp-http-addr 127.0.0.1:0 \
        --http-addr 127.0.0.1:0 --compaction-interval-secs "$compaction" 2>"$log" &
    WEFT_PID=$!
    for _ in $(seq 100); do
        grep -q " http listening" "$log" 2>/dev/null && break
        sleep 0.1
    done
    GRPC=$(grep "otlp-grpc listening" "$log" | sed 's/.*addr=\([^ ]*\).*/\1/')
    HTTP=$(grep " http listening" "$log" | sed 's/.*addr=\([^ ]*\).*/\1/')
}

stop_weft() {
    [ -n "${WEFT_PID:-}" ] || return 0
    kill "$WEFT_PID" 2>/dev/null || true
    wait "$WEFT_PID" 2>/dev/null || true
}

# build_loadgen: builds weft-loadgen (release) and sets LOADGEN to it.
build_loadgen() {
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
    cargo build --release -p weft-benches --bin weft-loadgen
    LOADGEN="$CARGO_TARGET_DIR/release/weft-loadgen"
}

# read_from_disk BINARY...: a binary just copied sits in the page cache in
# large folios that count whole towards its RSS; drop it, so it is read
# from disk as a deployed binary is.
read_from_disk() {
    for bin in "$@"; do
        dd if="$bin" iflag=nocache count=0 status=none 2>/dev/null || true
    done
}
