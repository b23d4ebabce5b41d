//! Rollups of closed hours: a known trace set, most of it in an hour three
//! hours ago and the rest in the open hour, answered partly from the rollup
//! `weft serve` builds for the closed hour and partly from raw spans. Counts,
//! errors and histogram buckets must be exact, percentiles within 1 % of SQL's
//! `percentile_cont`, and a span arriving late must count at once.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde_json::Value;

use crate::insights::{
    CLIENT, MS, SERVER, Service, ago_ns, export_and_wait, failing, hex, spec, trace_bytes,
};
use crate::query::{data, number};
use crate::support::{TestResult, Weft};

const SECOND: i64 = 1_000 * MS;
const HOUR: i64 = 3_600 * SECOND;
const TEN_MINUTES: i64 = 600 * SECOND;
/// Traces in the closed hour; the others are in the open hour.
const CLOSED: u16 = 120;
const TRACES: u16 = 132;

/// Where trace `t` starts: the first [`CLOSED`] in the closed hour, up to
/// [`TRACES`] in the open hour, later ones (sent late) in the closed hour again.
fn trace_start(t: u16, hour: i64, now: i64) -> i64 {
    if t <= CLOSED || t > TRACES {
        hour + i64::from(t % CLOSED + 1) * 29 * SECOND
    } else {
        now - 200 * SECOND + i64::from(t - CLOSED) * SECOND
    }
}

/// How long stock's server span of trace `t` lasts.
fn stock_ms(t: u16) -> i64 {
    1 + (i64::from(t) * 37) % 200
}

fn traces(hour: i64, now: i64, range: std::ops::RangeInclusive<u16>) -> ExportTraceServiceRequest {
    let mut frontend = Service::new("frontend", &[]);
    let mut stock = Service::new("stock", &[]);
    for t in range {
        let base = trace_start(t, hour, now);
        let d = stock_ms(t);
        frontend.add(
            base,
            spec(t, 1, None, SERVER, "GET /checkout", (0, d + 10), &[]),
        );
        frontend.add(
            base,
            spec(
                t,
                2,
                Some(1),
                CLIENT,
                "GET /items",
                (1, d + 3),
                &[("peer.service", "stock")],
            ),
        );
        let server = spec(t, 3, Some(2), SERVER, "GET /items", (2, d + 2), &[]);
        stock.add(base, if t % 7 == 0 { failing(server) } else { server });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![frontend.into_resource_spans(), stock.into_resource_spans()],
    }
}

async fn wait_for_rollup(weft: &Weft) -> TestResult {
    let dir = weft.data_dir.join("rollups");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let built = walk(&dir)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "parquet"));
        if built {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("no rollup was built within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

fn row<'a>(rows: &'a Value, key: &str, value: &str) -> TestResult<&'a Value> {
    rows.as_array()
        .and_then(|rows| rows.iter().find(|r| r[key] == value))
        .ok_or_else(|| format!("no {key}={value} in {rows}").into())
}

/// `percentile_cont` of stock's server durations by SQL, in µs.
async fn sql_percentiles(weft: &Weft) -> TestResult<[f64; 3]> {
    let rows = weft
        .sql(
            "SELECT percentile_cont(duration_ns, 0.5), percentile_cont(duration_ns, 0.95), \
             percentile_cont(duration_ns, 0.99) FROM spans \
             WHERE service_name = 'stock' AND kind = 'SERVER'",
        )
        .await?;
    let first = rows.first().ok_or("no row")?;
    Ok([0, 1, 2].map(|i| number(&first[i]) / 1_000.0))
}

fn assert_close(label: &str, got: f64, exact: f64) {
    assert!(
        (got - exact).abs() <= exact * 0.01,
        "{label}: {got} µs, SQL says {exact} µs"
    );
}

#[tokio::test]
async fn closed_hours_come_from_rollups_that_agree_with_the_spans() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(
        dir.path(),
        &[
            "--compaction-interval-secs",
            "1",
            "--rollup-interval-secs",
            "1",
        ],
    )?;
    let now = ago_ns(0)?;
    let hour = (now - 3 * HOUR).div_euclid(HOUR) * HOUR;
    export_and_wait(&weft, traces(hour, now, 1..=TRACES)).await?;
    wait_for_rollup(&weft).await?;
    let errors = (1..=TRACES).filter(|t| t % 7 == 0).count() as f64;
    let range = "lookback=4h";

    let services = data(&weft, &format!("/api/red/services?{range}")).await?;
    let stock = row(&services, "service", "stock")?;
    assert_eq!(number(&stock["requests"]), f64::from(TRACES));
    assert_eq!(number(&stock["errors"]), errors);
    assert_eq!(stock["percentilesEstimated"], true, "{stock}");
    let exact = sql_percentiles(&weft).await?;
    for (i, key) in ["p50Us", "p95Us", "p99Us"].into_iter().enumerate() {
        assert_close(key, number(&stock[key]), exact[i]);
    }
    let frontend = row(&services, "service", "frontend")?;
    assert_eq!(number(&frontend["requests"]), f64::from(TRACES));

    // Histogram buckets are exact: rollup buckets never straddle a 1-2-5 bound.
    let histogram = data(&weft, &format!("/api/histogram?service=stock&{range}")).await?;
    let mut expected = std::collections::BTreeMap::<i64, u64>::new();
    let bounds = weft_query::histogram_bounds();
    for t in 1..=TRACES {
        let duration = stock_ms(t) * MS;
        let bin = bounds.partition_point(|&b| b <= duration);
        let low = if bin == 0 { 0 } else { bounds[bin - 1] };
        *expected.entry(low / 1_000).or_default() += 1;
    }
    let got: std::collections::BTreeMap<i64, u64> = histogram["buckets"]
        .as_array()
        .ok_or("no buckets")?
        .iter()
        .filter(|b| number(&b["count"]) > 0.0)
        .map(|b| (number(&b["minUs"]) as i64, number(&b["count"]) as u64))
        .collect();
    assert_eq!(got, expected);

    let map = data(&weft, &format!("/api/service-map?{range}")).await?;
    let edge = map["edges"]
        .as_array()
        .and_then(|edges| {
            edges
                .iter()
                .find(|e| e["from"] == "frontend" && e["to"] == "stock")
        })
        .ok_or("no frontend → stock edge")?;
    assert_eq!(number(&edge["requests"]), f64::from(TRACES));
    assert_eq!(number(&edge["errors"]), errors);
    assert_eq!(edge["kind"], "call");
    assert_eq!(edge["percentilesEstimated"], true);

    // Ten-minute steps from the hour before: whole rollup buckets per step.
    let start_us = (hour - HOUR) / 1_000;
    let series = data(
        &weft,
        &format!(
            "/api/red?service=stock&start={start_us}&end={}&step=10m",
            now / 1_000
        ),
    )
    .await?;
    let buckets = series["buckets"].as_array().ok_or("no buckets")?;
    for (i, bucket) in buckets.iter().enumerate() {
        let from = hour - HOUR + i as i64 * TEN_MINUTES;
        let wanted = (1..=TRACES)
            .filter(|&t| (from..from + TEN_MINUTES).contains(&(trace_start(t, hour, now) + 2 * MS)))
            .count();
        assert_eq!(
            number(&bucket["requests"]),
            wanted as f64,
            "bucket {i} ({bucket})"
        );
    }

    // A search reads the newest hour first and widens only while it lacks
    // traces: the limit decides how far back it goes, not the order.
    let mut newest: Vec<u16> = (1..=TRACES).collect();
    newest.sort_by_key(|&t| std::cmp::Reverse(trace_start(t, hour, now)));
    for limit in [5, 125] {
        let found = data(
            &weft,
            &format!("/api/traces?service=stock&lookback=4h&limit={limit}"),
        )
        .await?;
        let ids: Vec<&str> = found
            .as_array()
            .ok_or("no traces")?
            .iter()
            .filter_map(|t| t["traceID"].as_str())
            .collect();
        let expected: Vec<String> = newest[..limit]
            .iter()
            .map(|&t| hex(&trace_bytes(t)))
            .collect();
        assert_eq!(ids, expected, "limit {limit}");
    }

    // A span of the closed hour arriving late counts at once: the hour's
    // files no longer match its rollup, so it is read raw until rebuilt.
    let services = |body: Value| -> Vec<Value> { body.as_array().cloned().unwrap_or_default() };
    let before = services(data(&weft, "/api/services").await?);
    assert_eq!(before, ["frontend", "stock"]);
    let mut late = traces(hour, now, 500..=500);
    let mut audit = Service::new("audit", &[]);
    audit.add(
        hour + 90 * SECOND,
        spec(501, 1, None, SERVER, "POST /audit", (0, 5), &[]),
    );
    late.resource_spans.push(audit.into_resource_spans());
    TraceServiceClient::connect(weft.grpc_endpoint())
        .await?
        .export(late)
        .await?;
    weft.wait_for_count("SELECT count(*) FROM spans", 3 * i64::from(TRACES) + 4)
        .await?;
    // Fetching a trace reads only the hours that hold it: an indexed hour
    // that took a late flush file is read again until compaction is done.
    for t in [1, 500] {
        let trace = data(&weft, &format!("/api/traces/{}", hex(&trace_bytes(t)))).await?;
        let spans = trace[0]["spans"].as_array().map_or(0, Vec::len);
        assert_eq!(spans, 3, "trace {t}: {trace}");
    }
    // The services list is remembered per hour, and forgotten when the hour changes.
    let after = services(data(&weft, "/api/services").await?);
    assert_eq!(after, ["audit", "frontend", "stock"]);
    let services = data(&weft, &format!("/api/red/services?{range}")).await?;
    let stock = row(&services, "service", "stock")?;
    assert_eq!(number(&stock["requests"]), f64::from(TRACES + 1));
    Ok(())
}
