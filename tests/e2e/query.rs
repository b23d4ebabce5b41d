//! Weft's own query endpoints (service map, RED, histograms, critical path) and
//! trace assembly on untidy data, with exact expected figures on a known set of
//! traces, cross-checked against direct SQL.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Value, json};

use crate::support::{TestResult, Weft};

const MS: u64 = 1_000_000;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(V::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn trace_id(n: u8) -> Vec<u8> {
    vec![n; 16]
}

fn hex_trace(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

fn hex_span(trace: u8, id: u8) -> String {
    format!("{trace:02x}{id:02x}").repeat(4)
}

/// A span of trace `trace` whose id is `(trace, id)` repeated, from `ms.start`
/// to `ms.end` milliseconds after `base`.
fn span(
    base: u64,
    trace: u8,
    id: u8,
    parent: Option<u8>,
    name: &str,
    kind: i32,
    ms: std::ops::Range<i64>,
) -> Span {
    let at = |ms: i64| base.saturating_add_signed(ms * MS as i64);
    Span {
        trace_id: trace_id(trace),
        span_id: [trace, id].repeat(4),
        parent_span_id: parent.map(|p| [trace, p].repeat(4)).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: at(ms.start),
        end_time_unix_nano: at(ms.end),
        ..Default::default()
    }
}

fn failed(mut span: Span) -> Span {
    span.status = Some(Status {
        code: 2,
        message: "boom".into(),
    });
    span
}

fn with(mut span: Span, attributes: &[(&str, &str)]) -> Span {
    span.attributes
        .extend(attributes.iter().map(|(k, v)| kv(k, v)));
    span
}

fn service(name: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", name)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Trace 1: web → orders (→ the db.local database, → a message to shipping, linked).
/// Trace 2: web → orders, failing; web → recs (not instrumented).
/// Trace 3: shipping consumes trace 1's message (a link, not a child).
/// Trace 4: web → orders with orders' clock 5 s behind.
/// Trace 5: a worker span whose parent never arrived.
fn known_traces(base: u64) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![
            service(
                "web",
                vec![
                    span(base, 1, 1, None, "GET /checkout", SERVER, 0..100),
                    span(base, 1, 2, Some(1), "POST /orders", CLIENT, 5..85),
                    failed(span(base, 2, 1, None, "GET /checkout", SERVER, 1000..1050)),
                    failed(span(
                        base,
                        2,
                        2,
                        Some(1),
                        "POST /orders",
                        CLIENT,
                        1005..1045,
                    )),
                    with(
                        span(
                            base,
                            2,
                            7,
                            Some(1),
                            "GET /recommendations",
                            CLIENT,
                            1002..1004,
                        ),
                        &[("peer.service", "recs")],
                    ),
                    span(base, 4, 1, None, "GET /checkout", SERVER, 2000..2100),
                    span(base, 4, 2, Some(1), "POST /orders", CLIENT, 2010..2070),
                ],
            ),
            service(
                "orders",
                vec![
                    span(base, 1, 3, Some(2), "POST /orders", SERVER, 10..80),
                    with(
                        span(base, 1, 4, Some(3), "INSERT orders", CLIENT, 20..30),
                        &[("db.system", "postgresql"), ("server.address", "db.local")],
                    ),
                    span(
                        base,
                        1,
                        5,
                        Some(3),
                        "publish order.created",
                        PRODUCER,
                        40..42,
                    ),
                    failed(span(
                        base,
                        2,
                        3,
                        Some(2),
                        "POST /orders",
                        SERVER,
                        1010..1040,
                    )),
                    // 5 s behind web's clock: starts long before its client.
                    span(
                        base,
                        4,
                        3,
                        Some(2),
                        "POST /orders",
                        SERVER,
                        (2010 - 5000)..(2050 - 5000),
                    ),
                ],
            ),
            service(
                "shipping",
                vec![{
                    let mut consumer = span(
                        base,
                        3,
                        1,
                        None,
                        "process order.created",
                        CONSUMER,
                        200..260,
                    );
                    consumer.links = vec![Link {
                        trace_id: trace_id(1),
                        span_id: [1, 5].repeat(4),
                        ..Default::default()
                    }];
                    consumer
                }],
            ),
            service(
                "worker",
                vec![span(base, 5, 2, Some(9), "reconcile", SERVER, 3000..3010)],
            ),
        ],
    }
}

struct Setup {
    weft: Weft,
    base_us: u64,
    start_us: u64,
    end_us: u64,
}

async fn setup(dir: &std::path::Path) -> TestResult<Setup> {
    let weft = Weft::start(dir, &["--flush-interval-ms", "100"])?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let base = now - 600_000_000_000;
    let mut client = TraceServiceClient::connect(weft.grpc_endpoint()).await?;
    client.export(known_traces(base)).await?;
    weft.wait_for_count("SELECT count(*) FROM spans", 14)
        .await?;
    let base_us = base / 1000;
    Ok(Setup {
        weft,
        base_us,
        start_us: base_us - 60_000_000,
        end_us: base_us + 60_000_000,
    })
}

async fn get(weft: &Weft, path: &str) -> TestResult<(u16, Value)> {
    let response = weft.client().get(weft.http_url(path)).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

pub async fn data(weft: &Weft, path: &str) -> TestResult<Value> {
    let (status, body) = get(weft, path).await?;
    if status != 200 {
        return Err(format!("{path}: HTTP {status}: {body}").into());
    }
    Ok(body["data"].clone())
}

pub fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// The edges as a readable table, one line each.
fn edge_table(edges: &Value) -> String {
    let mut lines =
        vec!["from -> to | kind | calls | errors | p50 ms | p95 ms | p99 ms".to_owned()];
    for edge in edges.as_array().into_iter().flatten() {
        lines.push(format!(
            "{} -> {} | {} | {} | {} | {:.1} | {:.1} | {:.2}",
            edge["from"].as_str().unwrap_or("?"),
            edge["to"].as_str().unwrap_or("?"),
            edge["kind"].as_str().unwrap_or("?"),
            edge["requests"],
            edge["errors"],
            number(&edge["p50Us"]) / 1000.0,
            number(&edge["p95Us"]) / 1000.0,
            number(&edge["p99Us"]) / 1000.0,
        ));
    }
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_map_counts_calls_links_and_peers_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Setup {
        weft,
        start_us,
        end_us,
        ..
    } = setup(dir.path()).await?;
    let map = data(
        &weft,
        &format!("/api/service-map?start={start_us}&end={end_us}"),
    )
    .await?;
    // web → orders: the client spans waited 80, 40 (failed) and 60 ms.
    assert_eq!(
        edge_table(&map["edges"]),
        "from -> to | kind | calls | errors | p50 ms | p95 ms | p99 ms\n\
         orders -> db.local | peer | 1 | 0 | 10.0 | 10.0 | 10.00\n\
         orders -> shipping | link | 1 | 0 | 60.0 | 60.0 | 60.00\n\
         web -> orders | call | 3 | 1 | 60.0 | 78.0 | 79.60\n\
         web -> recs | peer | 1 | 0 | 2.0 | 2.0 | 2.00"
    );
    assert_eq!(
        map["nodes"],
        json!([
            {"name": "db.local", "kind": "peer"},
            {"name": "orders", "kind": "service"},
            {"name": "recs", "kind": "peer"},
            {"name": "shipping", "kind": "service"},
            {"name": "web", "kind": "service"},
        ])
    );
    // The percentiles are the ones SQL computes over the same client spans (up
    // to DataFusion's floating-point rounding, a few nanoseconds at most).
    let rows = weft
        .sql(
            "SELECT percentile_cont(duration_ns, 0.5), percentile_cont(duration_ns, 0.95), percentile_cont(duration_ns, 0.99) \
             FROM spans WHERE service_name = 'web' AND name = 'POST /orders'",
        )
        .await?;
    let web_orders = &map["edges"][2];
    for (i, key) in ["p50Us", "p95Us", "p99Us"].iter().enumerate() {
        let sql_us = number(&rows[0][i]) / 1000.0;
        assert!(
            (number(&web_orders[key]) - sql_us).abs() <= 1e-6 * sql_us.abs().max(1.0),
            "{key}: {} vs SQL {sql_us}",
            web_orders[key]
        );
    }
    // Calls per second over the two-minute window.
    assert!((number(&web_orders["ratePerSec"]) - 3.0 / 120.0).abs() < 1e-9);
    // A window before the traces holds no edges.
    let empty = data(
        &weft,
        &format!(
            "/api/service-map?start={}&end={}",
            start_us - 120_000_000,
            start_us - 60_000_000
        ),
    )
    .await?;
    assert_eq!(empty["edges"], json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_metrics_and_histograms_match_the_spans() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Setup {
        weft,
        start_us,
        end_us,
        ..
    } = setup(dir.path()).await?;
    let range = format!("start={start_us}&end={end_us}");
    let services = data(&weft, &format!("/api/red/services?{range}")).await?;
    let table: Vec<String> = services
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r["service"].as_str().unwrap_or("?"),
                r["requests"],
                r["errors"],
                r["p50Us"],
                r["p99Us"]
            )
        })
        .collect();
    // Requests are server, consumer and root spans.
    assert_eq!(
        table,
        [
            "orders 3 1 40000.0 69400.0",
            "shipping 1 0 60000.0 60000.0",
            "web 3 1 100000.0 100000.0",
            "worker 1 0 10000.0 10000.0"
        ]
    );
    let operations = data(
        &weft,
        &format!("/api/red/operations?service=orders&{range}"),
    )
    .await?;
    assert_eq!(operations.as_array().map(Vec::len), Some(1));
    assert_eq!(operations[0]["operation"], json!("POST /orders"));
    assert_eq!(
        (
            operations[0]["requests"].clone(),
            operations[0]["errorRate"].clone()
        ),
        (json!(3), json!(1.0 / 3.0))
    );

    // One-minute buckets from a minute before the traces: all requests of web in the second bucket.
    let series = data(&weft, &format!("/api/red?service=web&{range}&step=1m")).await?;
    assert_eq!(series["step"], json!(60_000_000));
    let buckets = series["buckets"].as_array().ok_or("buckets")?;
    assert_eq!(buckets.len(), 3);
    let counts: Vec<u64> = buckets
        .iter()
        .map(|b| b["requests"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(counts, [0, 3, 0]);
    assert_eq!(buckets[1]["time"], json!(start_us + 60_000_000));
    assert_eq!(buckets[1]["errors"], json!(1));

    // web's GET /checkout took 100, 50 and 100 ms.
    let histogram = data(
        &weft,
        &format!("/api/histogram?service=web&operation=GET%20/checkout&{range}"),
    )
    .await?;
    let bars: Vec<(f64, Option<f64>, u64)> = histogram["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                number(&b["minUs"]),
                b["maxUs"].as_f64(),
                b["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        bars,
        [
            (50_000.0, Some(100_000.0), 1),
            (100_000.0, Some(200_000.0), 2)
        ]
    );
    // Each bar leads to the traces in it.
    let traces_link = histogram["buckets"][1]["traces"]
        .as_str()
        .ok_or("no traces link")?;
    let (status, found) = get(&weft, traces_link).await?;
    assert_eq!(status, 200);
    let mut ids: Vec<&str> = found["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["traceID"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, [hex_trace(1), hex_trace(4)]);

    // Missing and malformed parameters are named.
    let (status, body) = get(&weft, "/api/red?lookback=1h").await?;
    assert_eq!(
        (status, body["errors"][0]["msg"].as_str()),
        (400, Some("parameter 'service' is required"))
    );
    let (status, _) = get(&weft, "/api/red?service=web&step=0s").await?;
    assert_eq!(status, 400);
    let (status, body) = get(&weft, "/api/red?service=web&lookback=30d&step=1s").await?;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["msg"]
            .as_str()
            .unwrap_or("")
            .contains("longer step")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_critical_path_names_what_the_trace_waited_for() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Setup { weft, base_us, .. } = setup(dir.path()).await?;
    let path = data(
        &weft,
        &format!("/api/traces/{}/critical-path", hex_trace(1)),
    )
    .await?;
    assert_eq!(path["durationUs"], json!(100_000.0));
    let shares: Vec<String> = path["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} {} {}",
                s["service"].as_str().unwrap_or("?"),
                s["operation"].as_str().unwrap_or("?"),
                s["criticalUs"]
            )
        })
        .collect();
    assert_eq!(
        shares,
        [
            "orders POST /orders 58000.0",
            "web GET /checkout 20000.0",
            "web POST /orders 10000.0",
            "orders INSERT orders 10000.0",
            "orders publish order.created 2000.0",
        ]
    );
    let segments = path["segments"].as_array().ok_or("segments")?;
    assert_eq!(
        segments[0],
        json!({"spanID": hex_span(1, 1), "service": "web", "operation": "GET /checkout", "startTime": base_us + 85_000, "endTime": base_us + 100_000})
    );
    assert_eq!(segments.len(), 9);
    let (status, _) = get(
        &weft,
        &format!("/api/traces/{}/critical-path", hex_trace(0x77)),
    )
    .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untidy_traces_are_assembled_like_jaeger_does() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Setup { weft, base_us, .. } = setup(dir.path()).await?;

    // Clock skew: the orders span is moved into the middle of its client span.
    let trace = data(&weft, &format!("/api/traces/{}", hex_trace(4))).await?;
    let spans = trace[0]["spans"].as_array().ok_or("spans")?;
    let server = spans
        .iter()
        .find(|s| s["spanID"] == json!(hex_span(4, 3)))
        .ok_or("server span")?;
    // Client 2010..2070 ms (60 ms), server 40 ms long: centred, it starts at 2020 ms.
    assert_eq!(server["startTime"], json!(base_us + 2_020_000));
    assert_eq!(server["duration"], json!(40_000));
    let warning = server["warnings"][0].as_str().unwrap_or("");
    assert!(
        warning.starts_with("clock skew: this span's times were shifted by +5010.000ms"),
        "{warning}"
    );
    assert!(
        trace[0]["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("1 span(s) were shifted")
    );
    // The stored span keeps its own times; only the view is corrected.
    let stored = weft
        .sql(&format!(
            "SELECT CAST(start_time AS BIGINT) / 1000 FROM spans WHERE span_id = '{}'",
            hex_span(4, 3)
        ))
        .await?;
    assert_eq!(stored[0][0], json!(base_us - 2_990_000));

    // An orphan is kept and says why it has no parent.
    let orphan = data(&weft, &format!("/api/traces/{}", hex_trace(5))).await?;
    let orphan_span = &orphan[0]["spans"][0];
    assert_eq!(
        orphan_span["references"],
        json!([{"refType": "CHILD_OF", "traceID": hex_trace(5), "spanID": hex_span(5, 9)}])
    );
    assert_eq!(
        orphan_span["warnings"][0],
        json!(format!(
            "parent span {} is not in this trace (not received, or still in flight)",
            hex_span(5, 9)
        ))
    );

    // An exporter that re-sends a batch stores it twice; the trace shows each span once.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        - 60_000_000_000;
    let resent = ExportTraceServiceRequest {
        resource_spans: vec![service(
            "batch",
            vec![
                span(now, 6, 1, None, "nightly", SERVER, 0..30),
                span(now, 6, 2, Some(1), "step", 1, 5..10),
            ],
        )],
    };
    let mut client = TraceServiceClient::connect(weft.grpc_endpoint()).await?;
    client.export(resent.clone()).await?;
    client.export(resent).await?;
    weft.wait_for_count("SELECT count(*) FROM spans WHERE service_name = 'batch'", 4)
        .await?;
    let deduped = data(&weft, &format!("/api/traces/{}", hex_trace(6))).await?;
    assert_eq!(deduped[0]["spans"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        deduped[0]["warnings"],
        json!([
            "2 identical copies of spans were received more than once (exporter retries) and are shown once"
        ])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_span_trace_is_served_whole() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(dir.path(), &["--flush-interval-ms", "200"])?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        - 60_000_000_000;
    let mut client = TraceServiceClient::connect(weft.grpc_endpoint())
        .await?
        .max_encoding_message_size(64 << 20);
    // A fan-out of fan-outs, sent in batches, the last batch (with the root) first.
    let total: u32 = 100_000;
    let id = |n: u32| -> Vec<u8> { [n.to_be_bytes(), (n + 1).to_be_bytes()].concat() };
    let spans: Vec<Span> = (0..total)
        .map(|n| Span {
            trace_id: vec![0x42; 16],
            span_id: id(n),
            parent_span_id: if n == 0 { Vec::new() } else { id((n - 1) / 10) },
            name: format!("step-{}", n % 7),
            kind: 1,
            start_time_unix_nano: now + u64::from(n) * 1000,
            end_time_unix_nano: now + 200_000_000 - u64::from(n) * 1000,
            ..Default::default()
        })
        .collect();
    for chunk in spans.chunks(10_000).rev() {
        client
            .export(ExportTraceServiceRequest {
                resource_spans: vec![service("fanout", chunk.to_vec())],
            })
            .await?;
    }
    weft.wait_for_count("SELECT count(*) FROM spans", i64::from(total))
        .await?;
    let trace = data(&weft, &format!("/api/traces/{}", "42".repeat(16))).await?;
    let spans = trace[0]["spans"].as_array().ok_or("spans")?;
    assert_eq!(spans.len(), total as usize);
    assert_eq!(spans[0]["references"], json!([]));
    assert_eq!(trace[0]["warnings"], json!(null));
    let path = data(
        &weft,
        &format!("/api/traces/{}/critical-path", "42".repeat(16)),
    )
    .await?;
    assert_eq!(path["durationUs"], json!(200_000.0));
    Ok(())
}
