//! Every OTLP span field, every AnyValue type, over the generated OTLP gRPC
//! client (gzip), HTTP/protobuf (gzip) and hand-written OTLP/JSON, read back
//! exactly through SQL.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value, json};
use tonic::codec::CompressionEncoding;

use crate::support::{TestResult, Weft};

fn any(value: V) -> AnyValue {
    AnyValue { value: Some(value) }
}

fn kv(key: &str, value: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(any(value)),
        key_strindex: 0,
    }
}

/// One attribute of each AnyValue type, including nested and empty values.
fn every_type() -> Vec<KeyValue> {
    vec![
        kv("s", V::StringValue("text".into())),
        kv("b", V::BoolValue(true)),
        kv("i", V::IntValue(i64::MIN)),
        kv("d", V::DoubleValue(-0.5)),
        kv("bytes", V::BytesValue(vec![0, 1, 255])),
        kv(
            "arr",
            V::ArrayValue(ArrayValue {
                values: vec![
                    any(V::StringValue("x".into())),
                    any(V::IntValue(7)),
                    any(V::DoubleValue(2.5)),
                    any(V::BoolValue(false)),
                    any(V::BytesValue(vec![9])),
                    any(V::ArrayValue(ArrayValue {
                        values: vec![any(V::IntValue(1))],
                    })),
                    any(V::KvlistValue(KeyValueList {
                        values: vec![kv("k", V::StringValue("v".into()))],
                    })),
                    AnyValue { value: None },
                ],
            }),
        ),
        kv(
            "map",
            V::KvlistValue(KeyValueList {
                values: vec![
                    kv("a", V::IntValue(1)),
                    kv(
                        "nested",
                        V::KvlistValue(KeyValueList {
                            values: vec![kv("deep", V::BoolValue(true))],
                        }),
                    ),
                ],
            }),
        ),
        KeyValue {
            key: "empty".into(),
            value: Some(AnyValue { value: None }),
            key_strindex: 0,
        },
    ]
}

fn every_type_values() -> Value {
    json!({
        "s": "text",
        "b": "true",
        "i": "-9223372036854775808",
        "d": "-0.5",
        "bytes": "AAH/",
        "arr": r#"[{"stringValue":"x"},{"intValue":"7"},{"doubleValue":2.5},{"boolValue":false},{"bytesValue":"CQ=="},{"arrayValue":{"values":[{"intValue":"1"}]}},{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}}]}},{}]"#,
        "map": r#"[{"key":"a","value":{"intValue":"1"}},{"key":"nested","value":{"kvlistValue":{"values":[{"key":"deep","value":{"boolValue":true}}]}}}]"#,
        "empty": null,
    })
}

fn every_type_types() -> Value {
    json!({"b": "bool", "i": "int", "d": "double", "bytes": "bytes", "arr": "array", "map": "kvlist", "empty": "empty"})
}

const START: u64 = 1_763_000_000_123_456_789;

fn full_request(trace_byte: u8) -> ExportTraceServiceRequest {
    let mut resource_attributes = vec![kv("service.name", V::StringValue("inventory".into()))];
    resource_attributes.extend(every_type());
    let span = Span {
        trace_id: vec![trace_byte; 16],
        span_id: vec![0xab; 8],
        trace_state: "vendor=value".into(),
        parent_span_id: vec![0xcd; 8],
        flags: 0x101,
        name: "publish order".into(),
        kind: 4,
        start_time_unix_nano: START,
        end_time_unix_nano: START + 1_500_000,
        attributes: every_type(),
        dropped_attributes_count: 4,
        events: vec![
            Event {
                time_unix_nano: START + 10,
                name: "enqueued".into(),
                attributes: vec![
                    kv("queue", V::StringValue("orders".into())),
                    kv("depth", V::IntValue(3)),
                ],
                dropped_attributes_count: 1,
            },
            Event {
                time_unix_nano: START + 20,
                name: "acked".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 5,
        links: vec![Link {
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
            trace_state: "k=v".into(),
            attributes: vec![kv("link.kind", V::StringValue("batch".into()))],
            dropped_attributes_count: 2,
            flags: 0x301,
        }],
        dropped_links_count: 6,
        status: Some(Status {
            message: "partly done".into(),
            code: 2,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource_attributes,
                dropped_attributes_count: 3,
                entity_refs: vec![],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.weft.test".into(),
                    version: "1.0".into(),
                    attributes: vec![kv("scope.attr", V::StringValue("s".into()))],
                    dropped_attributes_count: 1,
                }),
                spans: vec![span],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
        }],
    }
}

async fn check_full_span(weft: &Weft, trace_id: &str) -> TestResult {
    weft.wait_for_count(
        &format!("SELECT count(*) FROM spans WHERE trace_id = '{trace_id}'"),
        1,
    )
    .await?;
    let rows = weft
        .sql(&format!(
            "SELECT span_id, parent_span_id, trace_state, flags, name, kind, \
             CAST(start_time AS BIGINT), CAST(end_time AS BIGINT), duration_ns, status_code, status_message, \
             service_name, attributes, attribute_types, dropped_attributes_count, events, dropped_events_count, \
             links, dropped_links_count, resource_attributes, resource_attribute_types, \
             resource_dropped_attributes_count, resource_schema_url, scope_name, scope_version, scope_attributes, \
             scope_dropped_attributes_count, scope_schema_url \
             FROM spans WHERE trace_id = '{trace_id}'"
        ))
        .await?;
    let row = rows.first().ok_or("span missing")?;
    let mut resource_values = every_type_values();
    resource_values["service.name"] = json!("inventory");
    let expected = vec![
        json!("abababababababab"),
        json!("cdcdcdcdcdcdcdcd"),
        json!("vendor=value"),
        json!(0x101),
        json!("publish order"),
        json!("PRODUCER"),
        json!(START),
        json!(START + 1_500_000),
        json!(1_500_000),
        json!("ERROR"),
        json!("partly done"),
        json!("inventory"),
        every_type_values(),
        every_type_types(),
        json!(4),
        json!([
            {"time": "2025-11-13T02:13:20.123456799Z", "name": "enqueued", "attributes": {"queue": "orders", "depth": "3"},
             "attribute_types": {"depth": "int"}, "dropped_attributes_count": 1},
            {"time": "2025-11-13T02:13:20.123456809Z", "name": "acked", "attributes": {}, "attribute_types": {},
             "dropped_attributes_count": 0},
        ]),
        json!(5),
        json!([{"trace_id": "11111111111111111111111111111111", "span_id": "2222222222222222", "trace_state": "k=v",
                "flags": 0x301, "attributes": {"link.kind": "batch"}, "attribute_types": {}, "dropped_attributes_count": 2}]),
        json!(6),
        resource_values,
        every_type_types(),
        json!(3),
        json!("https://opentelemetry.io/schemas/1.27.0"),
        json!("io.weft.test"),
        json!("1.0"),
        json!({"scope.attr": "s"}),
        json!(1),
        json!("https://opentelemetry.io/schemas/1.26.0"),
    ];
    for (i, (got, want)) in row.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "column {i}");
    }
    assert_eq!(row.len(), expected.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_round_trips_over_grpc_with_gzip() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(
        dir.path(),
        &["--flush-interval-ms", "200", "--retention-hours", "1000000"],
    )?;
    let mut client = TraceServiceClient::connect(weft.grpc_endpoint())
        .await?
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let response = client.export(full_request(0x01)).await?.into_inner();
    assert_eq!(response.partial_success, None);
    check_full_span(&weft, "01010101010101010101010101010101").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_round_trips_over_http_protobuf_with_gzip() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(
        dir.path(),
        &["--flush-interval-ms", "200", "--retention-hours", "1000000"],
    )?;
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    gzip.write_all(&full_request(0x02).encode_to_vec())?;
    let response = weft
        .client()
        .post(weft.otlp_http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gzip.finish()?)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    check_full_span(&weft, "02020202020202020202020202020202").await
}

/// OTLP/JSON as the specification writes it: hex ids, integer enums, 64-bit
/// integers as strings, base64 bytes, camelCase names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_is_decoded_as_the_specification_says() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(
        dir.path(),
        &["--flush-interval-ms", "200", "--retention-hours", "1000000"],
    )?;
    let body = json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
            "scopeSpans": [{
                "scope": {"name": "json-scope", "version": "2"},
                "spans": [{
                    "traceId": "5B8EFFF798038103D269B633813FC60C",
                    "spanId": "EEE19B7EC3C1B174",
                    "parentSpanId": "EEE19B7EC3C1B173",
                    "name": "I'm a server span",
                    "startTimeUnixNano": "1544712660000000000",
                    "endTimeUnixNano": "1544712661000000000",
                    "kind": 2,
                    "attributes": [
                        {"key": "my.int", "value": {"intValue": "9007199254740993"}},
                        {"key": "my.bytes", "value": {"bytesValue": "AAH/"}},
                        {"key": "my.double", "value": {"doubleValue": 1.25}},
                        {"key": "my.list", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}
                    ],
                    "events": [{"timeUnixNano": "1544712660500000000", "name": "ev"}],
                    "status": {"code": 1},
                    "unknownFieldsAreIgnored": true
                }]
            }]
        }]
    });
    let response = weft
        .client()
        .post(weft.otlp_http_url("/v1/traces"))
        .header("content-type", "application/json")
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let trace = "5b8efff798038103d269b633813fc60c";
    weft.wait_for_count(
        &format!("SELECT count(*) FROM spans WHERE trace_id = '{trace}'"),
        1,
    )
    .await?;
    let rows = weft
        .sql(&format!(
            "SELECT span_id, parent_span_id, kind, status_code, CAST(start_time AS BIGINT), duration_ns, \
             attributes['my.int'], attribute_types['my.int'], attributes['my.bytes'], attributes['my.double'], \
             attributes['my.list'], service_name, scope_name, cardinality(events) \
             FROM spans WHERE trace_id = '{trace}'"
        ))
        .await?;
    assert_eq!(
        rows,
        vec![vec![
            json!("eee19b7ec3c1b174"),
            json!("eee19b7ec3c1b173"),
            json!("SERVER"),
            json!("OK"),
            json!(1_544_712_660_000_000_000_i64),
            json!(1_000_000_000),
            json!("9007199254740993"),
            json!("int"),
            json!("AAH/"),
            json!("1.25"),
            json!(r#"[{"stringValue":"a"}]"#),
            json!("json-svc"),
            json!("json-scope"),
            json!(1),
        ]]
    );
    Ok(())
}
