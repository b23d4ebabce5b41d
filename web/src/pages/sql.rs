//! `/sql`: a console over the same sandbox as `POST /api/sql`. The statement
//! is in the URL (`?q=`), so a result can be shared as a link.

use std::time::Instant;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::format::duration;
use super::{PageError, render, url_encode};
use crate::routes::AppState;

const EXAMPLES: [(&str, &str); 5] = [
    (
        "Spans per service, last hour",
        "SELECT service_name, count(*) AS spans, sum(CAST(status_code = 'ERROR' AS INT)) AS errors\nFROM spans WHERE start_time > now() - INTERVAL '1 hour'\nGROUP BY 1 ORDER BY 2 DESC",
    ),
    (
        "Slowest operations",
        "SELECT service_name, name, approx_percentile_cont(duration_ns, 0.95) / 1e6 AS p95_ms, count(*) AS n\nFROM spans GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20",
    ),
    (
        "Latest errors with their messages",
        "SELECT start_time, service_name, name, status_message, trace_id\nFROM spans WHERE status_code = 'ERROR' ORDER BY start_time DESC LIMIT 50",
    ),
    (
        "HTTP routes by status code",
        "SELECT http_route, http_response_status_code, count(*)\nFROM spans WHERE http_route IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC",
    ),
    (
        "An attribute by key",
        "SELECT attributes['http.request.resend_count'] AS resend, count(*)\nFROM spans WHERE kind = 'CLIENT' GROUP BY 1",
    ),
];

#[derive(Debug, Default, Deserialize)]
pub struct SqlQuery {
    q: Option<String>,
}

struct ResultView {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    truncated: bool,
    elapsed: String,
}

#[derive(Template)]
#[template(path = "sql.html")]
struct SqlPage {
    title: &'static str,
    nav: &'static str,
    query: String,
    max_rows: usize,
    error: Option<String>,
    result: Option<ResultView>,
    examples: Vec<(String, String)>,
    schema: Vec<(String, Vec<(String, String)>)>,
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn schema() -> Vec<(String, Vec<(String, String)>)> {
    [
        ("spans", weft_schema::spans::schema()),
        ("metrics", weft_schema::metrics::schema()),
    ]
    .into_iter()
    .map(|(name, schema)| {
        let columns = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect();
        (name.to_owned(), columns)
    })
    .collect()
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<SqlQuery>,
) -> Result<Response, PageError> {
    let sql = query.q.unwrap_or_default();
    let (mut error, mut result) = (None, None);
    if !sql.trim().is_empty() {
        let started = Instant::now();
        match state.engine.sql(&sql).await {
            Ok(answer) => {
                result = Some(ResultView {
                    columns: answer.columns().into_iter().map(|c| c.name).collect(),
                    rows: answer
                        .rows()
                        .iter()
                        .map(|row| row.iter().map(cell).collect())
                        .collect(),
                    truncated: answer.truncated(),
                    elapsed: duration(started.elapsed().as_nanos() as i64),
                });
            }
            Err(refusal) => error = Some(refusal.to_string()),
        }
    }
    let page = SqlPage {
        title: "SQL",
        nav: "sql",
        max_rows: state.engine.limits().max_rows,
        query: sql,
        error,
        result,
        examples: EXAMPLES
            .iter()
            .map(|(label, sql)| ((*label).to_owned(), format!("/sql?q={}", url_encode(sql))))
            .collect(),
        schema: schema(),
    };
    Ok(render(&page))
}
