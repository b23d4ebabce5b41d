//! The store: small files are merged without losing or duplicating a span, old
//! hours are deleted, metrics of every type are stored, and the files open in DuckDB.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric::Data,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;

use crate::support::{TestResult, Weft};

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![string("service.name", service)],
        ..Default::default()
    })
}

fn spans_at(first_id: u32, count: u32, start_ns: u64) -> ExportTraceServiceRequest {
    let spans = (first_id..first_id + count)
        .map(|id| {
            let mut trace_id = [7u8; 16];
            trace_id[..4].copy_from_slice(&id.to_be_bytes());
            let mut span_id = [9u8; 8];
            span_id[..4].copy_from_slice(&id.to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: "work".into(),
                start_time_unix_nano: start_ns,
                end_time_unix_nano: start_ns + 5_000,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("compacted"),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

async fn post_spans(weft: &Weft, request: &ExportTraceServiceRequest) -> TestResult {
    let response = weft
        .client()
        .post(weft.otlp_http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    Ok(())
}

/// Python with DuckDB: the one on the machine, or installed from PyPI into the
/// build directory on first use.
fn duckdb_python() -> TestResult<(String, Option<String>)> {
    let has_duckdb = |pythonpath: Option<&str>| {
        let mut command = Command::new("python3");
        command.args(["-c", "import duckdb"]);
        if let Some(path) = pythonpath {
            command.env("PYTHONPATH", path);
        }
        command
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if has_duckdb(None) {
        return Ok(("python3".into(), None));
    }
    let target = format!("{}/pydeps", env!("CARGO_TARGET_TMPDIR"));
    if !has_duckdb(Some(&target)) {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                &target,
                "duckdb",
            ])
            .status()?;
        if !status.success() {
            return Err("could not install duckdb from PyPI (pip install duckdb)".into());
        }
    }
    Ok(("python3".into(), Some(target)))
}

fn duckdb_query(data_dir: &Path, sql: &str) -> TestResult<String> {
    let (python, pythonpath) = duckdb_python()?;
    let script = format!(
        "import duckdb, os\nos.chdir({:?})\nprint(duckdb.sql({:?}).fetchall())",
        data_dir.display().to_string(),
        sql
    );
    let mut command = Command::new(python);
    command.args(["-c", &script]);
    if let Some(path) = pythonpath {
        command.env("PYTHONPATH", path);
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!("duckdb failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_compacted_old_hours_deleted_and_duckdb_reads_the_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(
        dir.path(),
        &[
            "--flush-interval-ms",
            "50",
            "--compaction-interval-secs",
            "1",
            "--retention-hours",
            "24",
        ],
    )?;
    let now = now_nanos();
    // Twelve separate flushes of 100 spans each in the current hour.
    for i in 0..12 {
        post_spans(&weft, &spans_at(i * 100, 100, now)).await?;
        let files_before = weft.parquet_files("spans").len();
        let deadline = Instant::now() + Duration::from_secs(5);
        while weft.parquet_files("spans").len() == files_before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Ten days ago: past the retention of 24 hours.
    post_spans(
        &weft,
        &spans_at(5000, 30, now - 10 * 24 * 3600 * 1_000_000_000),
    )
    .await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let files = weft.parquet_files("spans");
        let merged = files.iter().any(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('c'))
        });
        let count = weft.sql_count("SELECT count(*) FROM spans").await?;
        // Compaction passes run every second while flushes still arrive: a
        // pass may merge the first files before the last are written, so
        // wait for the pass that leaves fewer than 8.
        if merged && count == 1200 && files.len() < 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no compaction to fewer than 8 files: {count} spans in {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        weft.sql_count("SELECT count(DISTINCT span_id) FROM spans")
            .await?,
        1200
    );

    // Every encoding the files use (delta-encoded ids and times, plain
    // attribute keys, dictionaries) read by another Parquet reader.
    let duck = duckdb_query(
        &weft.data_dir,
        "SELECT count(*), count(DISTINCT span_id), count(DISTINCT trace_id), \
         min(service_name), max(len(events)), max(resource_attributes['service.name']), \
         sum(duration_ns), count(*) FILTER (WHERE epoch_ns(end_time) - epoch_ns(start_time) = 5000) \
         FROM read_parquet('spans/**/*.parquet')",
    )?;
    assert_eq!(
        duck,
        "[(1200, 1200, 1200, 'compacted', 0, 'compacted', 6000000, 1200)]"
    );
    Ok(())
}

fn metrics_request() -> ExportMetricsServiceRequest {
    let t = now_nanos();
    let attrs = vec![string("route", "/pay")];
    let metric = |name: &str, data: Data| Metric {
        name: name.into(),
        description: format!("{name} description"),
        unit: "ms".into(),
        data: Some(data),
        metadata: vec![],
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("payments"),
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: vec![
                    metric(
                        "queue.depth",
                        Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: attrs.clone(),
                                time_unix_nano: t,
                                value: Some(number_data_point::Value::AsDouble(2.5)),
                                ..Default::default()
                            }],
                        }),
                    ),
                    metric(
                        "requests",
                        Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                attributes: attrs.clone(),
                                start_time_unix_nano: t - 1000,
                                time_unix_nano: t,
                                value: Some(number_data_point::Value::AsInt(42)),
                                exemplars: vec![Exemplar {
                                    time_unix_nano: t,
                                    trace_id: vec![3; 16],
                                    span_id: vec![4; 8],
                                    value: Some(exemplar::Value::AsInt(1)),
                                    filtered_attributes: vec![],
                                }],
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "latency",
                        Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: attrs.clone(),
                                time_unix_nano: t,
                                count: 6,
                                sum: Some(60.0),
                                bucket_counts: vec![1, 2, 3],
                                explicit_bounds: vec![5.0, 10.0],
                                min: Some(1.0),
                                max: Some(20.0),
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                        }),
                    ),
                    metric(
                        "latency.exp",
                        Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                attributes: attrs.clone(),
                                time_unix_nano: t,
                                count: 4,
                                scale: 3,
                                zero_count: 1,
                                positive: Some(Buckets {
                                    offset: -2,
                                    bucket_counts: vec![1, 2],
                                }),
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                        }),
                    ),
                    metric(
                        "gc.pause",
                        Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                attributes: attrs,
                                time_unix_nano: t,
                                count: 10,
                                sum: 7.5,
                                quantile_values: vec![
                                    ValueAtQuantile {
                                        quantile: 0.5,
                                        value: 0.4,
                                    },
                                    ValueAtQuantile {
                                        quantile: 0.99,
                                        value: 2.0,
                                    },
                                ],
                                ..Default::default()
                            }],
                        }),
                    ),
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_type_is_stored_one_row_per_data_point() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(dir.path(), &["--flush-interval-ms", "100"])?;
    let response = weft
        .client()
        .post(weft.otlp_http_url("/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(metrics_request().encode_to_vec())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    weft.wait_for_count("SELECT count(*) FROM metrics", 5)
        .await?;
    let rows = weft
        .sql(
            "SELECT metric_name, metric_type, service_name, unit, value, value_int, aggregation_temporality, \
             is_monotonic, count, sum, bucket_counts, explicit_bounds, scale, positive_offset, \
             positive_bucket_counts, quantiles, attributes['route'], cardinality(exemplars) \
             FROM metrics ORDER BY metric_name",
        )
        .await?;
    assert_eq!(
        rows,
        vec![
            vec![
                json!("gc.pause"),
                json!("summary"),
                json!("payments"),
                json!("ms"),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(10),
                json!(7.5),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!([{"quantile": 0.5, "value": 0.4}, {"quantile": 0.99, "value": 2.0}]),
                json!("/pay"),
                json!(0)
            ],
            vec![
                json!("latency"),
                json!("histogram"),
                json!("payments"),
                json!("ms"),
                json!(null),
                json!(null),
                json!("delta"),
                json!(null),
                json!(6),
                json!(60.0),
                json!([1, 2, 3]),
                json!([5.0, 10.0]),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!("/pay"),
                json!(0)
            ],
            vec![
                json!("latency.exp"),
                json!("exponential_histogram"),
                json!("payments"),
                json!("ms"),
                json!(null),
                json!(null),
                json!("delta"),
                json!(null),
                json!(4),
                json!(null),
                json!(null),
                json!(null),
                json!(3),
                json!(-2),
                json!([1, 2]),
                json!(null),
                json!("/pay"),
                json!(0)
            ],
            vec![
                json!("queue.depth"),
                json!("gauge"),
                json!("payments"),
                json!("ms"),
                json!(2.5),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!("/pay"),
                json!(0)
            ],
            vec![
                json!("requests"),
                json!("sum"),
                json!("payments"),
                json!("ms"),
                json!(42.0),
                json!(42),
                json!("cumulative"),
                json!(true),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!("/pay"),
                json!(1)
            ],
        ]
    );
    let exemplar = weft.sql("SELECT exemplars[1]['trace_id'], exemplars[1]['value_int'] FROM metrics WHERE metric_name = 'requests'").await?;
    assert_eq!(
        exemplar,
        vec![vec![json!("03030303030303030303030303030303"), json!(1)]]
    );
    Ok(())
}

/// `weft` restarts itself with its allocator settings (one jemalloc arena;
/// glibc keeping the memory zstd's contexts use) and keeps its process id, so
/// a supervisor or `kill -9` still reaches the server; settings the user gave
/// are kept.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_with_its_allocator_settings_unless_told_otherwise() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(dir.path(), &[])?;
    let environment = std::fs::read(format!("/proc/{}/environ", weft.pid()))?;
    let defaults = [
        ("_RJEM_MALLOC_CONF", "narenas:1"),
        (
            "GLIBC_TUNABLES",
            "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728",
        ),
    ];
    for (variable, default) in defaults {
        let expected = match std::env::var(variable) {
            Ok(set) => format!("{variable}={set}"),
            Err(_) => format!("{variable}={default}"),
        };
        // glibc's loader reads GLIBC_TUNABLES in place, ending the text at
        // its first `:` as it goes; what is left of it must still match.
        let expected = match variable {
            "GLIBC_TUNABLES" => expected.split(':').next().unwrap_or_default(),
            _ => &expected,
        };
        assert!(
            environment
                .split(|&byte| byte == 0)
                .any(|entry| entry == expected.as_bytes()),
            "{expected} is not in the server's environment"
        );
    }
    let health = weft.client().get(weft.http_url("/healthz")).send().await?;
    assert_eq!(health.status(), 200);
    Ok(())
}
