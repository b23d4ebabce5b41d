#!/usr/bin/env bash
# Query benchmark: builds (once) a store of 10 million spans with the collector's
# own writer, times Weft's answers to six questions, asks DuckDB the same
# questions over the same Parquet files in the same run, and prints the ratios.
#
#   bash benches/run-query.sh [store directory, default ~/.cache/weft-bench-store] [runs, default 11]
set -euo pipefail
cd "$(dirname "$0")/.."
STORE="${1:-$HOME/.cache/weft-bench-store}"
RUNS="${2:-11}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
cargo build --release -p weft-benches --bin weft-querybench
BIN="$CARGO_TARGET_DIR/release"
OUT="$(mktemp -d)"

if [ ! -d "$STORE/spans" ]; then
    "$BIN/weft-querybench" generate --data-dir "$STORE" --spans "${SPANS:-10000000}"
fi
echo "store: $(du -sh "$STORE/spans" | cut -f1) in $(find "$STORE/spans" -name '*.parquet' | wc -l) files"

PYDEPS="$CARGO_TARGET_DIR/pydeps"
python3 -c "import sys; sys.path.insert(0, '$PYDEPS'); import duckdb" 2>/dev/null \
    || python3 -m pip install --quiet --target "$PYDEPS" duckdb

echo "== Weft"
"$BIN/weft-querybench" run --data-dir "$STORE" --runs "$RUNS" --params "$OUT/params.json" --results "$OUT/weft.json"
echo "== DuckDB $(PYTHONPATH="$PYDEPS" python3 -c 'import duckdb; print(duckdb.__version__)')"
PYTHONPATH="$PYDEPS" python3 benches/query_duckdb.py "$STORE" "$OUT/params.json" "$RUNS" "$OUT/duckdb.json"

echo "== Weft / DuckDB (medians of $RUNS runs; below 1 means Weft is faster)"
python3 - "$OUT/weft.json" "$OUT/duckdb.json" <<'PY'
import json, sys
weft, duck = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"{'question':<30} {'weft ms':>10} {'duckdb ms':>10} {'ratio':>7}")
for name, w in weft.items():
    d = duck[name]["median_ms"]
    print(f"{name:<30} {w['median_ms']:>10.1f} {d:>10.1f} {w['median_ms'] / d:>7.2f}")
PY
