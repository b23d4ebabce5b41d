//! Bad input gets a precise status and message, the server keeps serving, and
//! nothing already stored changes.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::support::{TestResult, Weft};

fn span(trace_id: Vec<u8>, span_id: Vec<u8>, name: &str) -> Span {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    Span {
        trace_id,
        span_id,
        name: name.into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1000,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `google.rpc.Status` as the error bodies carry it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn post(
    weft: &Weft,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> TestResult<(u16, String, Vec<u8>)> {
    let mut request = weft
        .client()
        .post(weft.otlp_http_url("/v1/traces"))
        .header("content-type", content_type);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let response = request.body(body).send().await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, content_type, response.bytes().await?.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_status_and_stored_data_is_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(
        dir.path(),
        &["--flush-interval-ms", "100", "--max-request-bytes", "65536"],
    )?;
    let good = request(vec![span(vec![1; 16], vec![1; 8], "stored first")]);
    let (status, _, _) = post(&weft, "application/x-protobuf", None, good.encode_to_vec()).await?;
    assert_eq!(status, 200);
    let count_all = "SELECT count(*) FROM spans";
    weft.wait_for_count(count_all, 1).await?;

    // Undecodable protobuf: 400 with a google.rpc.Status saying why.
    let (status, content_type, body) = post(
        &weft,
        "application/x-protobuf",
        None,
        vec![0xff, 0xff, 0xff, 0x01],
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(content_type, "application/x-protobuf");
    let rpc = RpcStatus::decode(body.as_slice())?;
    assert_eq!(rpc.code, 3);
    assert!(
        rpc.message
            .starts_with("body is not a valid OTLP protobuf message"),
        "{}",
        rpc.message
    );

    // Malformed JSON: 400 with a JSON Status.
    let (status, content_type, body) = post(
        &weft,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(content_type, "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("body is not valid OTLP/JSON")),
        "{json}"
    );

    // A JSON id that is not hex: 400 too.
    let bad_id = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"0102030405060708","name":"x"}]}]}]}"#;
    let (status, _, _) = post(&weft, "application/json", None, bad_id.to_vec()).await?;
    assert_eq!(status, 400);

    // Not gzip although it says so: 400.
    let (status, _, body) = post(
        &weft,
        "application/x-protobuf",
        Some("gzip"),
        b"plain".to_vec(),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(RpcStatus::decode(body.as_slice())?.message.contains("gzip"));

    // Over the size limit, as sent: 413.
    let (status, _, _) = post(&weft, "application/x-protobuf", None, vec![0; 70_000]).await?;
    assert_eq!(status, 413);
    // Under the limit compressed but over it decompressed (a zip bomb): 413.
    let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
    gzip.write_all(&vec![0u8; 10 << 20])?;
    let bomb = gzip.finish()?;
    assert!(bomb.len() < 65_536);
    let (status, _, _) = post(&weft, "application/x-protobuf", Some("gzip"), bomb).await?;
    assert_eq!(status, 413);

    // Another content type or encoding: 415.
    let (status, _, body) = post(&weft, "text/plain", None, b"hello".to_vec()).await?;
    assert_eq!(status, 415);
    assert!(String::from_utf8(body)?.contains("application/x-protobuf"));
    let (status, _, _) = post(
        &weft,
        "application/x-protobuf",
        Some("br"),
        good.encode_to_vec(),
    )
    .await?;
    assert_eq!(status, 415);

    // Invalid spans beside valid ones: partial success, the valid one stored.
    let mixed = request(vec![
        span(vec![2; 16], vec![2; 8], "valid"),
        span(vec![3; 5], vec![3; 8], "short trace id"),
        span(vec![4; 16], vec![0; 8], "zero span id"),
    ]);
    let (status, _, body) =
        post(&weft, "application/x-protobuf", None, mixed.encode_to_vec()).await?;
    assert_eq!(status, 200);
    let response = ExportTraceServiceResponse::decode(body.as_slice())?;
    let partial = response.partial_success.ok_or("no partial success")?;
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(
        partial.error_message,
        "2 spans rejected; the first: span \"short trace id\": trace_id is 5 bytes long, it must be 16"
    );
    // The same over gRPC.
    let mut client = TraceServiceClient::connect(weft.grpc_endpoint()).await?;
    let grpc_mixed = request(vec![
        span(vec![5; 16], vec![5; 8], "valid over grpc"),
        span(vec![], vec![5; 8], "no trace id"),
    ]);
    let partial = client
        .export(grpc_mixed)
        .await?
        .into_inner()
        .partial_success
        .ok_or("no partial success")?;
    assert_eq!(partial.rejected_spans, 1);
    // Oversized over gRPC: refused with a status, not a crash.
    let huge = request(vec![span(vec![6; 16], vec![6; 8], &"n".repeat(100_000))]);
    let error = client
        .export(huge)
        .await
        .err()
        .ok_or("an oversized gRPC request was accepted")?;
    assert_eq!(error.code(), tonic::Code::OutOfRange, "{error}");

    // Exactly the accepted spans are stored, and the server still serves.
    weft.wait_for_count(count_all, 3).await?;
    let names = weft.sql("SELECT name FROM spans ORDER BY name").await?;
    assert_eq!(
        names,
        vec![
            vec![serde_json::json!("stored first")],
            vec![serde_json::json!("valid")],
            vec![serde_json::json!("valid over grpc")]
        ]
    );
    let health = weft.client().get(weft.http_url("/healthz")).send().await?;
    assert_eq!(health.status().as_u16(), 200);
    Ok(())
}
