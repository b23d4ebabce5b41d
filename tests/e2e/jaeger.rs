//! The Jaeger-compatible API, checked field by field against Jaeger's model on a
//! known set of traces.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as V,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Value, json};

use crate::support::{TestResult, Weft};

fn kv(key: &str, value: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn resource_spans(service: &str, extra: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    let mut attributes = vec![kv("service.name", V::StringValue(service.into()))];
    attributes.extend(extra);
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "shop".into(),
                version: "1.0".into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

struct Known {
    base_ns: u64,
    trace_a: String,
    trace_b: String,
}

const A: u8 = 0xa1;
const B: u8 = 0xb2;

fn span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    name: &str,
    kind: i32,
    start_ns: u64,
    duration_ms: u64,
) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + duration_ms * 1_000_000,
        flags: 0x101,
        ..Default::default()
    }
}

fn known_traces(base_ns: u64) -> ExportTraceServiceRequest {
    let a = base_ns; // ten minutes ago
    let b = base_ns + 300_000_000_000; // five minutes ago
    let mut declined = span(A, 3, Some(2), "POST /pay", 2, a + 10_000_000, 70);
    declined.status = Some(Status {
        code: 2,
        message: "card declined".into(),
    });
    declined.attributes = vec![
        kv("http.response.status_code", V::IntValue(402)),
        kv("big", V::IntValue(1 << 60)),
    ];
    declined.events = vec![Event {
        time_unix_nano: a + 20_000_000,
        name: "retry".into(),
        attributes: vec![kv("attempt", V::IntValue(2))],
        dropped_attributes_count: 0,
    }];
    let mut cart = span(B, 5, Some(4), "GetCart", 2, b + 2_000_000, 10);
    cart.links = vec![Link {
        trace_id: vec![A; 16],
        span_id: vec![1; 8],
        ..Default::default()
    }];
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                "frontend",
                vec![kv("host.name", V::StringValue("h1".into()))],
                vec![
                    span(A, 1, None, "GET /checkout", 2, a, 100),
                    span(A, 2, Some(1), "POST /pay", 3, a + 5_000_000, 80),
                    span(B, 4, None, "GET /cart", 2, b, 20),
                ],
            ),
            resource_spans(
                "payment",
                vec![kv("service.version", V::StringValue("2".into()))],
                vec![declined],
            ),
            resource_spans("cart", vec![], vec![cart]),
        ],
    }
}

async fn setup(dir: &std::path::Path) -> TestResult<(Weft, Known)> {
    let weft = Weft::start(dir, &["--flush-interval-ms", "100"])?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let base_ns = now - 600_000_000_000;
    let mut client = TraceServiceClient::connect(weft.grpc_endpoint()).await?;
    client.export(known_traces(base_ns)).await?;
    weft.wait_for_count("SELECT count(*) FROM spans", 5).await?;
    Ok((
        weft,
        Known {
            base_ns,
            trace_a: hex::repeat(A),
            trace_b: hex::repeat(B),
        },
    ))
}

mod hex {
    pub fn repeat(byte: u8) -> String {
        format!("{byte:02x}").repeat(16)
    }
}

async fn get(weft: &Weft, path: &str) -> TestResult<(u16, Value)> {
    let response = weft.client().get(weft.http_url(path)).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

fn envelope(data: Value, total: usize) -> Value {
    json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null})
}

fn trace_ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .map(|traces| {
            traces
                .iter()
                .filter_map(|t| t["traceID"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_operations_and_dependencies_have_jaegers_shapes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (weft, known) = setup(dir.path()).await?;
    assert_eq!(
        get(&weft, "/api/services").await?,
        (200, envelope(json!(["cart", "frontend", "payment"]), 3))
    );
    assert_eq!(
        get(&weft, "/api/services/frontend/operations").await?,
        (
            200,
            envelope(json!(["GET /cart", "GET /checkout", "POST /pay"]), 3)
        )
    );
    assert_eq!(
        get(&weft, "/api/operations?service=frontend&spanKind=server").await?,
        (
            200,
            envelope(
                json!([{"name": "GET /cart", "spanKind": "server"}, {"name": "GET /checkout", "spanKind": "server"}]),
                2
            )
        )
    );
    let (status, body) = get(&weft, "/api/operations").await?;
    assert_eq!(status, 400);
    assert_eq!(body["data"], json!(null));
    assert_eq!(body["errors"][0]["code"], json!(400));
    let end_ms = known.base_ns / 1_000_000 + 3_600_000;
    assert_eq!(
        get(
            &weft,
            &format!("/api/dependencies?endTs={end_ms}&lookback=7200000")
        )
        .await?,
        (
            200,
            envelope(
                json!([{"parent": "frontend", "child": "cart", "callCount": 1}, {"parent": "frontend", "child": "payment", "callCount": 1}]),
                2
            )
        )
    );
    // Outside the window: nothing.
    let (_, body) = get(
        &weft,
        &format!(
            "/api/dependencies?endTs={}&lookback=60000",
            known.base_ns / 1_000_000 - 1
        ),
    )
    .await?;
    assert_eq!(body["data"], json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_search_filters_like_jaeger() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (weft, known) = setup(dir.path()).await?;
    let (a, b) = (known.trace_a.clone(), known.trace_b.clone());
    let search = |query: &str| format!("/api/traces?service={query}");
    // Newest first, default lookback of one hour.
    assert_eq!(
        trace_ids(&get(&weft, &search("frontend")).await?.1),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        trace_ids(&get(&weft, &search("frontend&limit=1")).await?.1),
        vec![b.clone()]
    );
    assert_eq!(
        trace_ids(
            &get(&weft, &search("frontend&operation=POST%20/pay"))
                .await?
                .1
        ),
        vec![a.clone()]
    );
    assert_eq!(
        trace_ids(&get(&weft, &search("frontend&minDuration=50ms")).await?.1),
        vec![a.clone()]
    );
    assert_eq!(
        trace_ids(&get(&weft, &search("frontend&maxDuration=30ms")).await?.1),
        vec![b.clone()]
    );
    assert_eq!(
        trace_ids(
            &get(
                &weft,
                &search("frontend&minDuration=0.09s&maxDuration=100000us")
            )
            .await?
            .1
        ),
        vec![a.clone()]
    );
    let tags = |t: &str| search(&format!("payment&tags={}", urlencode(t)));
    assert_eq!(
        trace_ids(&get(&weft, &tags(r#"{"error":"true"}"#)).await?.1),
        vec![a.clone()]
    );
    assert_eq!(
        trace_ids(&get(&weft, &tags(r#"{"error":"false"}"#)).await?.1),
        Vec::<String>::new()
    );
    assert_eq!(
        trace_ids(
            &get(&weft, &tags(r#"{"http.response.status_code":"402"}"#))
                .await?
                .1
        ),
        vec![a.clone()]
    );
    assert_eq!(
        trace_ids(&get(&weft, &tags(r#"{"service.version":"2"}"#)).await?.1),
        vec![a.clone()]
    );
    assert_eq!(
        trace_ids(&get(&weft, &tags(r#"{"service.version":"3"}"#)).await?.1),
        Vec::<String>::new()
    );
    // An explicit window in microseconds that holds only trace A.
    let start_us = known.base_ns / 1000;
    let window = search(&format!(
        "frontend&start={start_us}&end={}",
        start_us + 60_000_000
    ));
    assert_eq!(trace_ids(&get(&weft, &window).await?.1), vec![a.clone()]);
    // A service is required; bad durations are named.
    let (status, body) = get(&weft, "/api/traces").await?;
    assert_eq!(
        (status, body["errors"][0]["msg"].as_str()),
        (400, Some("parameter 'service' is required"))
    );
    let (status, _) = get(&weft, &search("frontend&minDuration=fast")).await?;
    assert_eq!(status, 400);
    Ok(())
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_maps_otlp_to_jaegers_model() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (weft, known) = setup(dir.path()).await?;
    let (status, body) = get(&weft, &format!("/api/traces/{}", known.trace_a)).await?;
    assert_eq!(status, 200);
    assert_eq!(
        (body["total"].clone(), body["errors"].clone()),
        (json!(1), json!(null))
    );
    let trace = &body["data"][0];
    assert_eq!(trace["traceID"], json!(known.trace_a));
    assert_eq!(trace["warnings"], json!(null));
    assert_eq!(
        trace["processes"],
        json!({
            "p1": {"serviceName": "frontend", "tags": [{"key": "host.name", "type": "string", "value": "h1"}]},
            "p2": {"serviceName": "payment", "tags": [{"key": "service.version", "type": "string", "value": "2"}]},
        })
    );
    let spans = trace["spans"].as_array().ok_or("spans")?;
    assert_eq!(spans.len(), 3);
    let base_us = known.base_ns / 1000;
    assert_eq!(
        spans[0],
        json!({
            "traceID": known.trace_a, "spanID": "0101010101010101", "flags": 1, "operationName": "GET /checkout",
            "references": [], "startTime": base_us, "duration": 100_000,
            "tags": [
                {"key": "span.kind", "type": "string", "value": "server"},
                {"key": "otel.scope.name", "type": "string", "value": "shop"},
                {"key": "otel.scope.version", "type": "string", "value": "1.0"},
            ],
            "logs": [], "processID": "p1", "warnings": null,
        })
    );
    assert_eq!(
        spans[2],
        json!({
            "traceID": known.trace_a, "spanID": "0303030303030303", "flags": 1, "operationName": "POST /pay",
            "references": [{"refType": "CHILD_OF", "traceID": known.trace_a, "spanID": "0202020202020202"}],
            "startTime": base_us + 10_000, "duration": 70_000,
            "tags": [
                {"key": "http.response.status_code", "type": "int64", "value": 402},
                {"key": "big", "type": "int64", "value": (1_i64 << 60).to_string()},
                {"key": "span.kind", "type": "string", "value": "server"},
                {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                {"key": "error", "type": "bool", "value": true},
                {"key": "otel.status_description", "type": "string", "value": "card declined"},
                {"key": "otel.scope.name", "type": "string", "value": "shop"},
                {"key": "otel.scope.version", "type": "string", "value": "1.0"},
            ],
            "logs": [{"timestamp": base_us + 20_000, "fields": [
                {"key": "event", "type": "string", "value": "retry"},
                {"key": "attempt", "type": "int64", "value": 2},
            ]}],
            "processID": "p2", "warnings": null,
        })
    );
    // A link becomes a FOLLOWS_FROM reference, after the parent.
    let (_, body) = get(&weft, &format!("/api/traces/{}", known.trace_b)).await?;
    let cart = &body["data"][0]["spans"][1];
    assert_eq!(
        cart["references"],
        json!([
            {"refType": "CHILD_OF", "traceID": known.trace_b, "spanID": "0404040404040404"},
            {"refType": "FOLLOWS_FROM", "traceID": known.trace_a, "spanID": "0101010101010101"},
        ])
    );
    // Unknown ids are 404 in the envelope; malformed ones 400; short ids are padded.
    let (status, body) = get(&weft, "/api/traces/0123456789abcdef").await?;
    assert_eq!(status, 404);
    assert_eq!(body["data"], json!(null));
    assert_eq!(body["errors"][0]["code"], json!(404));
    let (status, _) = get(&weft, "/api/traces/not-hex").await?;
    assert_eq!(status, 400);
    let (status, body) = get(
        &weft,
        &format!("/api/traces/{}", known.trace_a.to_uppercase()),
    )
    .await?;
    assert_eq!(
        (status, body["data"][0]["traceID"].clone()),
        (200, json!(known.trace_a))
    );
    Ok(())
}
