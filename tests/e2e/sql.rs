//! The SQL endpoint and `weft sql`: read-only, sandboxed, bounded.

use std::process::Command;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;

use crate::support::{TestResult, Weft, weft_binary};

fn two_spans() -> ExportTraceServiceRequest {
    let span = |id: u8, name: &str, route: &str| Span {
        trace_id: vec![id; 16],
        span_id: vec![id; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(id) * 1_000_000,
        attributes: vec![KeyValue {
            key: "http.route".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(route.into())),
            }),
            key_strindex: 0,
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("shop".into())),
                    }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(1, "list", "/items"),
                    span(2, "get, \"one\"", "/items/{id}"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn loaded_weft(dir: &std::path::Path, extra: &[&str]) -> TestResult<Weft> {
    let mut args = vec!["--flush-interval-ms", "100", "--retention-hours", "1000000"];
    args.extend_from_slice(extra);
    let weft = Weft::start(dir, &args)?;
    let response = weft
        .client()
        .post(weft.otlp_http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(two_spans().encode_to_vec())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    weft.wait_for_count("SELECT count(*) FROM spans", 2).await?;
    Ok(weft)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_refuses_every_forbidden_statement_kind() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = loaded_weft(dir.path(), &[]).await?;
    let forbidden = [
        (
            "INSERT INTO spans (name) VALUES ('x')",
            "INSERT is not allowed",
        ),
        ("UPDATE spans SET name = 'x'", "UPDATE is not allowed"),
        ("DELETE FROM spans", "DELETE is not allowed"),
        (
            "CREATE TABLE t AS SELECT * FROM spans",
            "CREATE TABLE is not allowed",
        ),
        ("CREATE VIEW v AS SELECT 1", "CREATE VIEW is not allowed"),
        ("DROP TABLE spans", "DROP is not allowed"),
        (
            "CREATE EXTERNAL TABLE passwd STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE EXTERNAL TABLE is not allowed",
        ),
        (
            "COPY spans TO '/tmp/weft-stolen.parquet'",
            "COPY is not allowed",
        ),
        (
            "SET datafusion.execution.target_partitions = 1",
            "SET is not allowed",
        ),
    ];
    for (sql, message) in forbidden {
        let (status, body) = weft.sql_response(sql).await?;
        assert_eq!(status, 403, "{sql}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(message), "{sql}: {error}");
    }
    // Reading a file by path is not a table here.
    let (status, body) = weft.sql_response("SELECT * FROM '/etc/passwd'").await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = weft.sql_response("SELECT 1; SELECT 2").await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("expected one SQL statement, found 2"))
    );
    let (status, body) = weft.sql_response("SELEC name FROM spans").await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("SQL syntax error")),
        "{body}"
    );
    let (status, body) = weft
        .sql_response("SELECT no_such_column FROM spans")
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no_such_column")),
        "{body}"
    );
    // A body that is not the expected JSON.
    let response = weft
        .client()
        .post(weft.http_url("/api/sql"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 400);
    // Nothing changed and the server still answers.
    assert_eq!(weft.sql_count("SELECT count(*) FROM spans").await?, 2);
    assert!(!std::path::Path::new("/tmp/weft-stolen.parquet").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_bounded_by_rows_and_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = loaded_weft(
        dir.path(),
        &["--query-max-rows", "1", "--query-timeout-secs", "1"],
    )
    .await?;
    let (status, body) = weft.sql_response("SELECT name FROM spans").await?;
    assert_eq!(status, 200);
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["truncated"], json!(true));
    let slow = "SELECT count(*) FROM generate_series(1, 100000000000) a";
    let (status, body) = weft.sql_response(slow).await?;
    assert_eq!(status, 408, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("time limit")),
        "{body}"
    );
    assert_eq!(weft.sql_count("SELECT count(*) FROM spans").await?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_are_one_short_expression_away_and_results_come_as_json_csv_and_tables()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = loaded_weft(dir.path(), &[]).await?;
    let rows = weft
        .sql("SELECT attributes['http.route'], resource_attributes['service.name'], http_route FROM spans ORDER BY duration_ns")
        .await?;
    assert_eq!(
        rows,
        vec![
            vec![json!("/items"), json!("shop"), json!("/items")],
            vec![json!("/items/{id}"), json!("shop"), json!("/items/{id}")]
        ]
    );

    let (status, body) = weft
        .sql_response("SELECT name, duration_ns FROM spans ORDER BY duration_ns")
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "columns": [{"name": "name", "type": "Utf8"}, {"name": "duration_ns", "type": "Int64"}],
            "rows": [["list", 1_000_000], ["get, \"one\"", 2_000_000]],
            "truncated": false
        })
    );
    let csv = weft
        .client()
        .post(weft.http_url("/api/sql"))
        .header("accept", "text/csv")
        .json(&json!({"sql": "SELECT name, duration_ns FROM spans ORDER BY duration_ns"}))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(
        csv,
        "name,duration_ns\nlist,1000000\n\"get, \"\"one\"\"\",2000000\n"
    );

    // `weft sql` reads the same store from another process.
    let data_dir = weft.data_dir.clone();
    let run = |format: &str| -> TestResult<String> {
        let output = Command::new(weft_binary())
            .args([
                "sql",
                "SELECT name, duration_ns FROM spans ORDER BY duration_ns",
                "--format",
                format,
                "--data-dir",
            ])
            .arg(&data_dir)
            .output()?;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    };
    assert_eq!(
        run("csv")?,
        "name,duration_ns\nlist,1000000\n\"get, \"\"one\"\"\",2000000\n"
    );
    let json_out: serde_json::Value = serde_json::from_str(&run("json")?)?;
    assert_eq!(
        json_out["rows"],
        json!([["list", 1_000_000], ["get, \"one\"", 2_000_000]])
    );
    let table = run("table")?;
    assert_eq!(
        table,
        "+------------+-------------+\n\
         | name       | duration_ns |\n\
         +------------+-------------+\n\
         | list       | 1000000     |\n\
         | get, \"one\" | 2000000     |\n\
         +------------+-------------+\n"
    );
    let refused = Command::new(weft_binary())
        .args(["sql", "DROP TABLE spans", "--data-dir"])
        .arg(&data_dir)
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("DROP is not allowed"));
    Ok(())
}
