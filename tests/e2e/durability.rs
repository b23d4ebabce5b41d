//! An acknowledged span survives `kill -9`; under overload the collector refuses
//! with a retryable status and its memory stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::support::{TestResult, Weft};

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// `spans` spans of a request numbered `batch`, each with a unique id.
fn batch(batch: u32, spans: u32, padding: usize) -> ExportTraceServiceRequest {
    let now = now_nanos();
    let spans = (0..spans)
        .map(|i| {
            let mut trace_id = [0u8; 16];
            trace_id[..4].copy_from_slice(&batch.to_be_bytes());
            trace_id[4..8].copy_from_slice(&i.to_be_bytes());
            trace_id[15] = 1;
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&i.to_be_bytes());
            span_id[7] = 1;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: format!("op-{}", i % 7),
                kind: 2,
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1_000_000,
                attributes: vec![KeyValue {
                    key: "padding".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("p".repeat(padding))),
                    }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("durable".into())),
                    }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_kill_9() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A long flush interval: at the kill, the spans exist only in the WAL.
    let weft = Weft::start(dir.path(), &["--flush-interval-ms", "600000"])?;
    let mut client = TraceServiceClient::connect(weft.grpc_endpoint()).await?;
    for b in 0..20 {
        let response = client.export(batch(b, 50, 10)).await?.into_inner();
        assert_eq!(response.partial_success, None);
    }
    // HTTP acknowledgements count as much as gRPC ones.
    let response = weft
        .client()
        .post(weft.otlp_http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(batch(99, 50, 10).encode_to_vec())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    drop(client);
    let weft = weft.crash_and_restart()?;
    // Replayed at start, before the listeners open: visible at once.
    assert_eq!(weft.sql_count("SELECT count(*) FROM spans").await?, 21 * 50);
    assert_eq!(
        weft.sql_count("SELECT count(DISTINCT span_id || trace_id) FROM spans")
            .await?,
        21 * 50
    );
    // A second crash right away replays nothing twice.
    let weft = weft.crash_and_restart()?;
    assert_eq!(weft.sql_count("SELECT count(*) FROM spans").await?, 21 * 50);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_the_memory_limit_is_refused_and_memory_stays_bounded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Arc::new(Weft::start(
        dir.path(),
        &["--memory-limit-mb", "4", "--flush-interval-ms", "1000"],
    )?);
    let accepted = Arc::new(AtomicI64::new(0));
    let refused = Arc::new(AtomicI64::new(0));
    let retry_after_seen = Arc::new(AtomicI64::new(0));
    // Each request is about 1 MB of protobuf: a few in flight exceed 4 MiB.
    let body = batch(7, 1000, 1000).encode_to_vec();
    let mut senders = Vec::new();
    let peak_rss = Arc::new(AtomicI64::new(0));
    for _ in 0..8 {
        let (weft, accepted, refused, retry_after_seen, body, peak_rss) = (
            Arc::clone(&weft),
            Arc::clone(&accepted),
            Arc::clone(&refused),
            Arc::clone(&retry_after_seen),
            body.clone(),
            Arc::clone(&peak_rss),
        );
        senders.push(tokio::spawn(async move {
            for _ in 0..15 {
                let response = weft
                    .client()
                    .post(weft.otlp_http_url("/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await?;
                match response.status().as_u16() {
                    200 => {
                        accepted.fetch_add(1000, Ordering::Relaxed);
                    }
                    503 => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if response.headers().get("retry-after").is_some() {
                            retry_after_seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => return Err(format!("unexpected status {other}").into()),
                }
                let rss = weft.rss_bytes()? as i64;
                peak_rss.fetch_max(rss, Ordering::Relaxed);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let refused = refused.load(Ordering::Relaxed);
    assert!(refused > 0, "nothing was refused over the memory limit");
    assert_eq!(
        retry_after_seen.load(Ordering::Relaxed),
        refused,
        "every refusal carries Retry-After"
    );
    let peak = peak_rss.load(Ordering::Relaxed);
    assert!(peak < 400 << 20, "peak RSS {} MiB", peak >> 20);
    // Everything acknowledged is stored, and nothing refused is.
    let accepted = accepted.load(Ordering::Relaxed);
    assert!(accepted > 0);
    weft.wait_for_count("SELECT count(*) FROM spans", accepted)
        .await?;
    Ok(())
}
