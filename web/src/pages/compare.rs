//! `/compare?a=&b=`: two traces side by side by service and operation: what
//! only one of them did, and how the durations of what both did differ.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use weft_query::{AssembledTrace, assemble};

use super::charts::service_colour;
use super::format::duration;
use super::{PageError, render};
use crate::jaeger::normalize_trace_id;
use crate::routes::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct CompareQuery {
    a: Option<String>,
    b: Option<String>,
}

/// Spans of one service and operation in one trace.
#[derive(Clone, Copy, Default)]
struct Tally {
    count: usize,
    total_ns: i64,
    errors: usize,
}

struct Side {
    id: String,
    root: String,
    duration: String,
    spans: usize,
    errors: usize,
}

struct Row {
    service: String,
    colour: String,
    operation: String,
    /// `a`, `b` or `both`.
    presence: &'static str,
    count_a: usize,
    count_b: usize,
    total_a: String,
    total_b: String,
    difference: String,
    /// `slower`, `faster` or empty, for colouring.
    trend: &'static str,
    errors_a: usize,
    errors_b: usize,
}

#[derive(Template)]
#[template(path = "compare.html")]
struct ComparePage {
    title: &'static str,
    nav: &'static str,
    a: String,
    b: String,
    sides: Vec<Side>,
    rows: Vec<Row>,
    only_a: usize,
    only_b: usize,
}

fn tallies(trace: &AssembledTrace) -> BTreeMap<(String, String), Tally> {
    let mut tallies: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for node in &trace.spans {
        let tally = tallies
            .entry((node.span.service_name.clone(), node.span.name.clone()))
            .or_default();
        tally.count += 1;
        tally.total_ns += node.span.duration_ns;
        tally.errors += usize::from(node.span.status_code == "ERROR");
    }
    tallies
}

fn side(trace: &AssembledTrace) -> Side {
    Side {
        id: trace.trace_id.clone(),
        root: trace
            .main_root()
            .map(|r| format!("{}: {}", r.span.service_name, r.span.name))
            .unwrap_or_default(),
        duration: duration(trace.duration_ns()),
        spans: trace.spans.len(),
        errors: trace.error_count(),
    }
}

/// Rows for every (service, operation) in either trace: those in one only
/// first, then the biggest differences in total time.
fn rows(a: &AssembledTrace, b: &AssembledTrace) -> Vec<Row> {
    let (tallies_a, tallies_b) = (tallies(a), tallies(b));
    let mut keys: Vec<&(String, String)> = tallies_a.keys().chain(tallies_b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows: Vec<(i64, Row)> = keys
        .into_iter()
        .map(|key| {
            let (ta, tb) = (tallies_a.get(key), tallies_b.get(key));
            let (one, two) = (
                ta.copied().unwrap_or_default(),
                tb.copied().unwrap_or_default(),
            );
            let delta = two.total_ns - one.total_ns;
            let presence = match (ta, tb) {
                (Some(_), None) => "a",
                (None, Some(_)) => "b",
                _ => "both",
            };
            let trend = match presence {
                "both" if delta > 0 => "slower",
                "both" if delta < 0 => "faster",
                _ => "",
            };
            let rank = if presence == "both" {
                delta.abs()
            } else {
                i64::MAX
            };
            let row = Row {
                colour: service_colour(&key.0),
                service: key.0.clone(),
                operation: key.1.clone(),
                presence,
                count_a: one.count,
                count_b: two.count,
                total_a: if ta.is_some() {
                    duration(one.total_ns)
                } else {
                    "–".to_owned()
                },
                total_b: if tb.is_some() {
                    duration(two.total_ns)
                } else {
                    "–".to_owned()
                },
                difference: if presence == "both" {
                    format!("{}{}", if delta > 0 { "+" } else { "" }, duration(delta))
                } else {
                    String::new()
                },
                trend,
                errors_a: one.errors,
                errors_b: two.errors,
            };
            (rank, row)
        })
        .collect();
    rows.sort_by(|x, y| {
        y.0.cmp(&x.0)
            .then_with(|| (&x.1.service, &x.1.operation).cmp(&(&y.1.service, &y.1.operation)))
    });
    rows.into_iter().map(|(_, row)| row).collect()
}

async fn load(state: &AppState, label: &str, id: &str) -> Result<AssembledTrace, PageError> {
    let not_found =
        |message: String| PageError::new(StatusCode::NOT_FOUND, "Trace not found", message);
    let normalized = normalize_trace_id(id)
        .ok_or_else(|| not_found(format!("trace {label} ({id:?}) is not a trace id")))?;
    let spans = state.engine.trace(&normalized).await?;
    if spans.is_empty() {
        return Err(not_found(format!(
            "no span of trace {label} ({normalized}) is in the store"
        )));
    }
    Ok(assemble(&normalized, spans))
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<CompareQuery>,
) -> Result<Response, PageError> {
    let a = query.a.unwrap_or_default().trim().to_owned();
    let b = query.b.unwrap_or_default().trim().to_owned();
    let (mut sides, mut table) = (Vec::new(), Vec::new());
    if !a.is_empty() && !b.is_empty() {
        let (trace_a, trace_b) = (load(&state, "A", &a).await?, load(&state, "B", &b).await?);
        table = rows(&trace_a, &trace_b);
        sides = vec![side(&trace_a), side(&trace_b)];
    }
    let page = ComparePage {
        title: "Compare traces",
        nav: "compare",
        only_a: table.iter().filter(|r| r.presence == "a").count(),
        only_b: table.iter().filter(|r| r.presence == "b").count(),
        a,
        b,
        sides,
        rows: table,
    };
    Ok(render(&page))
}

#[cfg(test)]
mod tests {
    use weft_query::SpanData;

    use super::*;

    fn span(
        trace: &str,
        id: &str,
        parent: Option<&str>,
        service: &str,
        name: &str,
        start: i64,
        duration_ns: i64,
    ) -> SpanData {
        SpanData {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            service_name: service.into(),
            name: name.into(),
            start_ns: start,
            duration_ns,
            status_code: "UNSET".into(),
            ..Default::default()
        }
    }

    #[test]
    fn operations_in_one_trace_only_come_first_then_the_biggest_differences() {
        let a = assemble(
            "a",
            vec![
                span("a", "1", None, "web", "GET /", 0, 100),
                span("a", "2", Some("1"), "db", "SELECT", 10, 20),
                span("a", "3", Some("1"), "cache", "GET", 40, 5),
            ],
        );
        let b = assemble(
            "b",
            vec![
                span("b", "1", None, "web", "GET /", 0, 300),
                span("b", "2", Some("1"), "db", "SELECT", 10, 250),
                span("b", "4", Some("1"), "retry", "GET", 270, 10),
            ],
        );
        let table = rows(&a, &b);
        let summary: Vec<(&str, &str, &str)> = table
            .iter()
            .map(|r| (r.service.as_str(), r.presence, r.difference.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("cache", "a", ""),
                ("retry", "b", ""),
                ("db", "both", "+230ns"),
                ("web", "both", "+200ns")
            ]
        );
        assert_eq!(table[2].trend, "slower");
    }
}
