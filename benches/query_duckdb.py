"""The query benchmark's questions asked of DuckDB over the same Parquet files.

    python3 benches/query_duckdb.py DATA_DIR PARAMS.json RUNS [RESULTS.json]

PARAMS.json is written by `weft-querybench run --params`, so both engines use the
same trace id, service, operation, times and histogram bounds. Each question is
the same work Weft does: a search finds trace ids, then reads those traces whole.
"""

import json
import statistics
import sys
import time

import duckdb


def main():
    data_dir, params_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    results_path = sys.argv[4] if len(sys.argv) > 4 else None
    p = json.load(open(params_path))
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(
        f"CREATE VIEW spans AS SELECT * FROM read_parquet('{data_dir}/spans/*/*/*.parquet', hive_partitioning = false)"
    )

    def ts(ns):
        return f"make_timestamp({ns // 1000})"

    def traces(ids):
        if not ids:
            return []
        listed = ", ".join(f"'{i}'" for i in ids)
        return con.execute(f"SELECT * FROM spans WHERE trace_id IN ({listed}) ORDER BY start_time").fetchall()

    def search(condition, start, end):
        ids = con.execute(
            f"""SELECT trace_id, max(start_time) AS latest FROM spans
                WHERE service_name = '{p['service']}' AND start_time >= {ts(start)} AND start_time <= {ts(end)} AND {condition}
                GROUP BY trace_id ORDER BY latest DESC, trace_id LIMIT 20"""
        ).fetchall()
        return traces([row[0] for row in ids])

    requests = "(kind IN ('SERVER', 'CONSUMER') OR parent_span_id IS NULL)"
    day = f"start_time >= {ts(p['day_start_ns'])} AND start_time <= {ts(p['day_end_ns'])}"
    summary = """count(*), sum(CASE WHEN {error} THEN 1 ELSE 0 END),
        quantile_cont({latency}, 0.5), quantile_cont({latency}, 0.95), quantile_cont({latency}, 0.99)"""
    bounds = p["histogram_bounds_ns"]
    bucket = "CASE " + " ".join(f"WHEN duration_ns < {b} THEN {i}" for i, b in enumerate(bounds)) + f" ELSE {len(bounds)} END"

    def service_map(condition):
        """The service map's join, as Weft's service map computes it."""
        return con.execute(
            f"""WITH day AS (SELECT * FROM spans WHERE {condition}),
                callers AS (SELECT trace_id, span_id, service_name, kind, duration_ns, status_code,
                                   coalesce(peer_service, server_address) AS peer
                            FROM day WHERE kind IN ('CLIENT', 'PRODUCER')),
                callees AS (SELECT trace_id, parent_span_id, service_name, duration_ns, status_code
                            FROM day WHERE kind IN ('SERVER', 'CONSUMER') AND parent_span_id IS NOT NULL),
                calls AS (
                    SELECT c.service_name AS src, coalesce(s.service_name, c.peer) AS dst,
                           CASE WHEN s.service_name IS NULL THEN 'peer' ELSE 'call' END AS kind,
                           CASE WHEN c.kind = 'CLIENT' THEN c.duration_ns ELSE s.duration_ns END AS latency,
                           c.status_code = 'ERROR' OR coalesce(s.status_code = 'ERROR', false) AS error
                    FROM callers c LEFT JOIN callees s ON c.trace_id = s.trace_id AND c.span_id = s.parent_span_id
                    WHERE (s.service_name IS NOT NULL AND s.service_name <> c.service_name)
                       OR (s.service_name IS NULL AND c.kind = 'CLIENT' AND c.peer IS NOT NULL)),
                links AS (
                    SELECT p.service_name AS src, c.service_name AS dst, 'link' AS kind,
                           c.duration_ns AS latency, c.status_code = 'ERROR' AS error
                    FROM (SELECT service_name, parent_span_id, duration_ns, status_code, unnest(links) AS link
                          FROM day WHERE len(links) > 0) c
                    JOIN day p ON p.trace_id = c.link.trace_id AND p.span_id = c.link.span_id
                    WHERE p.service_name <> c.service_name
                      AND (c.parent_span_id IS NULL OR c.parent_span_id <> c.link.span_id))
                SELECT src, dst, kind, {summary.format(error='error', latency='latency')}
                FROM (SELECT * FROM calls UNION ALL SELECT * FROM links) GROUP BY src, dst, kind"""
        ).fetchall()

    hour = f"start_time >= {ts(p['last_hour_start_ns'])} AND start_time <= {ts(p['last_hour_end_ns'])}"

    def insights_hour():
        """A lower bound for the insights: the hour's edges, and latency per
        instance and per version (Weft computes more than this)."""
        edges = service_map(hour)
        groups = con.execute(
            f"""SELECT service_name, service_instance_id, service_version,
                       {summary.format(error="status_code = 'ERROR'", latency='duration_ns')}
                FROM spans WHERE {hour} AND kind = 'SERVER'
                GROUP BY GROUPING SETS ((service_name, service_instance_id), (service_name, service_version))"""
        ).fetchall()
        return edges + groups

    questions = {
        "trace_by_id": lambda: traces([p["trace_id"]]),
        "search_service_min_duration": lambda: search(
            f"duration_ns >= {p['min_duration_ns']}", p["last_hour_start_ns"], p["last_hour_end_ns"]
        ),
        "search_attribute": lambda: search(
            f"(map_extract(attributes, '{p['attribute_key']}')[1] = '{p['attribute_value']}'"
            f" OR map_extract(resource_attributes, '{p['attribute_key']}')[1] = '{p['attribute_value']}')",
            p["last_hour_start_ns"],
            p["last_hour_end_ns"],
        ),
        "service_map_day": lambda: service_map(day),
        "red_service_day": lambda: con.execute(
            f"""SELECT (epoch_ns(start_time) - {p['day_start_ns']}) // {p['red_step_ns']} AS bucket,
                       {summary.format(error="status_code = 'ERROR'", latency='duration_ns')}
                FROM spans WHERE service_name = '{p['service']}' AND {day} AND {requests} GROUP BY bucket"""
        ).fetchall(),
        "histogram_day": lambda: [
            con.execute(
                f"""SELECT {summary.format(error="status_code = 'ERROR'", latency='duration_ns')} FROM spans
                    WHERE service_name = '{p['service']}' AND name = '{p['operation']}' AND {day} AND {requests}"""
            ).fetchall(),
            con.execute(
                f"""SELECT {bucket} AS bucket, count(*) FROM spans
                    WHERE service_name = '{p['service']}' AND name = '{p['operation']}' AND {day} AND {requests}
                    GROUP BY bucket"""
            ).fetchall(),
        ],
        "insights_hour": insights_hour,
    }

    results = {}
    print(f"{'question':<30} {'median ms':>12}  rows")
    for name, question in questions.items():
        rows = question()  # warm-up, as on the Weft side
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            rows = question()
            samples.append((time.perf_counter() - started) * 1000)
        median = statistics.median(samples)
        results[name] = {"median_ms": median, "rows": len(rows)}
        print(f"{name:<30} {median:>12.1f}  {len(rows)}")
    if results_path:
        json.dump(results, open(results_path, "w"), indent=2)


if __name__ == "__main__":
    main()
