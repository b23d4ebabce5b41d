//! Spans made by the OpenTelemetry Rust SDK and sent by `opentelemetry-otlp`
//! over gRPC, HTTP/protobuf and HTTP/JSON arrive with every field intact.

use opentelemetry::trace::{
    Link, Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::json;

use crate::support::{TestResult, Weft};

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

struct Sent {
    trace_id: String,
    server_span_id: String,
    client_span_id: String,
    linked_trace_id: String,
    linked_span_id: String,
}

/// Makes one trace (a server span with a client child) and exports it.
fn export_trace(
    grpc_endpoint: String,
    http_traces_url: String,
    transport: Transport,
    service: &str,
) -> TestResult<Sent> {
    let exporter = match transport {
        Transport::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(grpc_endpoint)
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()?,
        Transport::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(http_traces_url)
            .build()?,
        Transport::HttpJson => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(http_traces_url)
            .build()?,
    };
    let resource = Resource::builder_empty()
        .with_service_name(service.to_owned())
        .with_attributes([
            KeyValue::new("service.version", "2.1.0"),
            KeyValue::new("service.instance.id", "instance-7"),
            KeyValue::new("deployment.environment.name", "test"),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .with_max_attributes_per_span(9)
        .build();
    let scope = InstrumentationScope::builder("weft-e2e")
        .with_version("0.9.1")
        .build();
    let tracer = provider.tracer_with_scope(scope);

    let linked = tracer.start("earlier work");
    let linked_context = linked.span_context().clone();
    drop(linked);

    let mut server = tracer
        .span_builder("GET /orders/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/orders/{id}"),
            KeyValue::new("http.response.status_code", 500_i64),
            KeyValue::new("retry", true),
            KeyValue::new("ratio", 0.25_f64),
            KeyValue::new(
                "tags",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from("b"),
                ])),
            ),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -2]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
            // Over the limit of 9: the SDK drops these and counts them.
            KeyValue::new("extra.1", "x"),
            KeyValue::new("extra.2", "y"),
        ])
        .with_links(vec![Link::with_context(linked_context.clone())])
        .start(&tracer);
    server.add_event("cache miss", vec![KeyValue::new("cache.key", "order-42")]);
    server.set_status(Status::error("database timed out"));
    let server_context = server.span_context().clone();
    let parent = Context::current_with_span(server);
    let mut client = tracer
        .span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("server.port", 5432_i64),
        ])
        .start_with_context(&tracer, &parent);
    let client_context = client.span_context().clone();
    client.end();
    parent.span().end();
    provider.force_flush()?;
    provider.shutdown()?;
    Ok(Sent {
        trace_id: server_context.trace_id().to_string(),
        server_span_id: server_context.span_id().to_string(),
        client_span_id: client_context.span_id().to_string(),
        linked_trace_id: linked_context.trace_id().to_string(),
        linked_span_id: linked_context.span_id().to_string(),
    })
}

async fn check_transport(transport: Transport) -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(dir.path(), &["--flush-interval-ms", "200"])?;
    let service = format!("checkout-{transport:?}").to_lowercase();
    // The SDK's batch processor blocks; keep it off the async workers.
    let (grpc, http) = (weft.grpc_endpoint(), weft.otlp_http_url("/v1/traces"));
    let name = service.clone();
    let sent =
        tokio::task::spawn_blocking(move || export_trace(grpc, http, transport, &name)).await??;
    let trace = &sent.trace_id;
    weft.wait_for_count(
        &format!("SELECT count(*) FROM spans WHERE trace_id = '{trace}'"),
        2,
    )
    .await?;

    let rows = weft
        .sql(&format!(
            "SELECT span_id, parent_span_id, name, kind, status_code, status_message, service_name, \
             service_version, service_instance_id, http_request_method, http_route, http_response_status_code, \
             attributes, attribute_types, dropped_attributes_count, events, links, resource_attributes, \
             scope_name, scope_version, duration_ns = CAST(end_time AS BIGINT) - CAST(start_time AS BIGINT), flags \
             FROM spans WHERE trace_id = '{trace}' AND kind = 'SERVER'"
        ))
        .await?;
    let row = rows.first().ok_or("server span missing")?;
    assert_eq!(row[0], json!(sent.server_span_id));
    assert_eq!(row[1], json!(null), "a root span has no parent");
    assert_eq!(row[2], json!("GET /orders/{id}"));
    assert_eq!(row[3], json!("SERVER"));
    assert_eq!(row[4], json!("ERROR"));
    assert_eq!(row[5], json!("database timed out"));
    assert_eq!(row[6], json!(service));
    assert_eq!(row[7], json!("2.1.0"));
    assert_eq!(row[8], json!("instance-7"));
    assert_eq!(row[9], json!("GET"));
    assert_eq!(row[10], json!("/orders/{id}"));
    assert_eq!(row[11], json!(500));
    assert_eq!(
        row[12],
        json!({
            "http.request.method": "GET",
            "http.route": "/orders/{id}",
            "http.response.status_code": "500",
            "retry": "true",
            "ratio": "0.25",
            "tags": "[{\"stringValue\":\"a\"},{\"stringValue\":\"b\"}]",
            "ints": "[{\"intValue\":\"1\"},{\"intValue\":\"-2\"}]",
            "floats": "[{\"doubleValue\":1.5}]",
            "flags": "[{\"boolValue\":true},{\"boolValue\":false}]",
        })
    );
    assert_eq!(
        row[13],
        json!({
            "http.response.status_code": "int",
            "retry": "bool",
            "ratio": "double",
            "tags": "array",
            "ints": "array",
            "floats": "array",
            "flags": "array",
        })
    );
    assert_eq!(
        row[14],
        json!(2),
        "two attributes over the limit were dropped"
    );
    let events = row[15].as_array().ok_or("events is a list")?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["name"], json!("cache miss"));
    assert_eq!(events[0]["attributes"], json!({"cache.key": "order-42"}));
    let links = row[16].as_array().ok_or("links is a list")?;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["trace_id"], json!(sent.linked_trace_id));
    assert_eq!(links[0]["span_id"], json!(sent.linked_span_id));
    assert_eq!(row[17]["service.name"], json!(service));
    assert_eq!(row[17]["service.instance.id"], json!("instance-7"));
    assert_eq!(row[17]["deployment.environment.name"], json!("test"));
    assert_eq!(row[18], json!("weft-e2e"));
    assert_eq!(row[19], json!("0.9.1"));
    assert_eq!(row[20], json!(true), "duration_ns is end minus start");
    assert_eq!(row[21].as_u64().map(|f| f & 0xff), Some(1), "sampled flag");

    let client = weft
        .sql(&format!(
            "SELECT parent_span_id, kind, db_system, server_port, span_id FROM spans \
             WHERE trace_id = '{trace}' AND kind = 'CLIENT'"
        ))
        .await?;
    assert_eq!(
        client,
        vec![vec![
            json!(sent.server_span_id),
            json!("CLIENT"),
            json!("postgresql"),
            json!(5432),
            json!(sent.client_span_id)
        ]]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_over_grpc_round_trip() -> TestResult {
    check_transport(Transport::Grpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_over_http_protobuf_round_trip() -> TestResult {
    check_transport(Transport::HttpProtobuf).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_over_http_json_round_trip() -> TestResult {
    check_transport(Transport::HttpJson).await
}
