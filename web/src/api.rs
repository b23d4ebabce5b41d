//! Weft's own JSON endpoints, for what Jaeger's API lacks: the service map with
//! per-edge statistics, RED metrics per service and operation over time,
//! latency histograms whose buckets lead to their traces, and a trace's
//! critical path. Same envelope as the Jaeger API (`{"data": …, "errors": null}`);
//! times in microseconds since the epoch and durations in microseconds, as in
//! Jaeger. README documents every shape.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use weft_query::{Edge, EdgeKind, LatencySummary, RedBucket, RedRow, RequestFilter, assemble};

use crate::jaeger::{JaegerError, normalize_trace_id, ok};
use crate::params::{parse_go_duration, time_range};
use crate::routes::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/service-map", get(service_map))
        .route("/api/red", get(red_series))
        .route("/api/red/services", get(red_services))
        .route("/api/red/operations", get(red_operations))
        .route("/api/histogram", get(histogram))
        .route("/api/traces/{trace_id}/critical-path", get(critical_path))
        .route("/api/insights", get(insights))
}

const HOUR_NS: i64 = 3_600_000_000_000;

/// Most buckets a RED series may have.
const MAX_BUCKETS: i64 = 1_440;

#[derive(Debug, Deserialize)]
struct RangeParams {
    service: Option<String>,
    operation: Option<String>,
    start: Option<String>,
    end: Option<String>,
    lookback: Option<String>,
    step: Option<String>,
}

impl RangeParams {
    fn range(&self) -> Result<(i64, i64), JaegerError> {
        time_range(
            self.start.as_deref(),
            self.end.as_deref(),
            self.lookback.as_deref(),
            HOUR_NS,
        )
        .map_err(JaegerError::bad_request)
    }

    fn filter(&self, require_service: bool) -> Result<RequestFilter, JaegerError> {
        let (start_ns, end_ns) = self.range()?;
        let service = self.service.clone().filter(|s| !s.is_empty());
        if require_service && service.is_none() {
            return Err(JaegerError::bad_request("parameter 'service' is required"));
        }
        Ok(RequestFilter {
            service,
            operation: self.operation.clone().filter(|o| !o.is_empty()),
            start_ns,
            end_ns,
        })
    }
}

fn micros(ns: f64) -> f64 {
    (ns / 1000.0 * 1000.0).round() / 1000.0
}

/// The figures every aggregate carries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Figures {
    requests: u64,
    errors: u64,
    error_rate: f64,
    /// Requests per second over the range asked for.
    rate_per_sec: f64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
    /// The percentiles came from rollups (within 1 %), not from every span.
    percentiles_estimated: bool,
}

impl Figures {
    fn new(stats: &LatencySummary, seconds: f64) -> Self {
        Self {
            requests: stats.count,
            errors: stats.errors,
            error_rate: stats.error_rate(),
            rate_per_sec: if seconds > 0.0 {
                stats.count as f64 / seconds
            } else {
                0.0
            },
            p50_us: micros(stats.p50_ns),
            p95_us: micros(stats.p95_ns),
            p99_us: micros(stats.p99_ns),
            percentiles_estimated: stats.estimated,
        }
    }
}

fn seconds(start_ns: i64, end_ns: i64) -> f64 {
    (end_ns - start_ns) as f64 / 1e9
}

#[derive(Debug, Serialize)]
struct EdgeJson {
    from: String,
    to: String,
    kind: &'static str,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Debug, Serialize)]
struct NodeJson {
    name: String,
    /// `service` for instrumented services, `peer` for what only client spans name.
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct ServiceMapJson {
    start: i64,
    end: i64,
    nodes: Vec<NodeJson>,
    edges: Vec<EdgeJson>,
}

async fn service_map(
    State(state): State<AppState>,
    Query(params): Query<RangeParams>,
) -> Result<Response, JaegerError> {
    let (start_ns, end_ns) = params.range()?;
    let edges: Vec<Edge> = state.engine.service_map(start_ns, end_ns).await?;
    let mut nodes: BTreeMap<String, &'static str> = BTreeMap::new();
    for edge in &edges {
        nodes.insert(edge.from.clone(), "service");
        let to_kind = if edge.kind == EdgeKind::Peer {
            "peer"
        } else {
            "service"
        };
        let entry = nodes.entry(edge.to.clone()).or_insert(to_kind);
        if to_kind == "service" {
            *entry = "service";
        }
    }
    let span = seconds(start_ns, end_ns);
    let data = ServiceMapJson {
        start: start_ns / 1000,
        end: end_ns / 1000,
        nodes: nodes
            .into_iter()
            .map(|(name, kind)| NodeJson { name, kind })
            .collect(),
        edges: edges
            .into_iter()
            .map(|e| EdgeJson {
                figures: Figures::new(&e.stats, span),
                from: e.from,
                to: e.to,
                kind: e.kind.as_str(),
            })
            .collect(),
    };
    let total = data.edges.len();
    Ok(ok(data, total))
}

#[derive(Debug, Serialize)]
struct RedRowJson {
    service: String,
    operation: Option<String>,
    #[serde(flatten)]
    figures: Figures,
}

fn red_rows(rows: Vec<RedRow>, start_ns: i64, end_ns: i64) -> Response {
    let span = seconds(start_ns, end_ns);
    let data: Vec<RedRowJson> = rows
        .into_iter()
        .map(|r| RedRowJson {
            figures: Figures::new(&r.stats, span),
            service: r.service,
            operation: r.operation,
        })
        .collect();
    let total = data.len();
    ok(data, total)
}

/// `GET /api/red/services`: every service's RED figures over the range.
async fn red_services(
    State(state): State<AppState>,
    Query(params): Query<RangeParams>,
) -> Result<Response, JaegerError> {
    let mut filter = params.filter(false)?;
    filter.service = None;
    filter.operation = None;
    let rows = state.engine.red_summary(&filter).await?;
    Ok(red_rows(rows, filter.start_ns, filter.end_ns))
}

/// `GET /api/red/operations?service=`: one service's figures per operation.
async fn red_operations(
    State(state): State<AppState>,
    Query(params): Query<RangeParams>,
) -> Result<Response, JaegerError> {
    let mut filter = params.filter(true)?;
    filter.operation = None;
    let rows = state.engine.red_summary(&filter).await?;
    Ok(red_rows(rows, filter.start_ns, filter.end_ns))
}

#[derive(Debug, Serialize)]
struct BucketJson {
    time: i64,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Debug, Serialize)]
struct SeriesJson {
    service: String,
    operation: Option<String>,
    start: i64,
    end: i64,
    step: i64,
    buckets: Vec<BucketJson>,
}

/// `GET /api/red?service=&operation=&step=`: RED figures per time bucket.
async fn red_series(
    State(state): State<AppState>,
    Query(params): Query<RangeParams>,
) -> Result<Response, JaegerError> {
    let filter = params.filter(true)?;
    let step_ns = match params.step.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => parse_go_duration(text)
            .filter(|&ns| ns > 0)
            .ok_or_else(|| {
                JaegerError::bad_request(format!(
                    "parameter 'step' is not a positive duration like 1m: {text:?}"
                ))
            })?,
        None => crate::params::readable_step_ns(filter.start_ns, filter.end_ns),
    };
    if (filter.end_ns - filter.start_ns) / step_ns > MAX_BUCKETS {
        return Err(JaegerError::bad_request(format!(
            "the range holds more than {MAX_BUCKETS} steps; choose a longer step"
        )));
    }
    let buckets: Vec<RedBucket> = state.engine.red_series(&filter, step_ns).await?;
    let step_seconds = step_ns as f64 / 1e9;
    let data = SeriesJson {
        service: filter.service.clone().unwrap_or_default(),
        operation: filter.operation.clone(),
        start: filter.start_ns / 1000,
        end: filter.end_ns / 1000,
        step: step_ns / 1000,
        buckets: buckets
            .iter()
            .map(|b| BucketJson {
                time: b.start_ns / 1000,
                figures: Figures::new(&b.stats, step_seconds),
            })
            .collect(),
    };
    let total = data.buckets.len();
    Ok(ok(data, total))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HistogramBucketJson {
    min_us: f64,
    /// `null` for the last bucket, which has no upper bound.
    max_us: Option<f64>,
    count: u64,
    /// The Jaeger search that lists the traces in this bucket.
    traces: String,
}

#[derive(Debug, Serialize)]
struct HistogramJson {
    service: String,
    operation: Option<String>,
    start: i64,
    end: i64,
    #[serde(flatten)]
    figures: Figures,
    buckets: Vec<HistogramBucketJson>,
}

fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `GET /api/histogram?service=&operation=`: request durations in 1-2-5 buckets.
async fn histogram(
    State(state): State<AppState>,
    Query(params): Query<RangeParams>,
) -> Result<Response, JaegerError> {
    let filter = params.filter(true)?;
    let histogram = state.engine.histogram(&filter).await?;
    let service = filter.service.clone().unwrap_or_default();
    let mut search = format!(
        "/api/traces?service={}&start={}&end={}",
        query_value(&service),
        filter.start_ns / 1000,
        filter.end_ns / 1000
    );
    if let Some(operation) = &filter.operation {
        search.push_str(&format!("&operation={}", query_value(operation)));
    }
    let buckets = histogram
        .buckets
        .iter()
        .map(|b| {
            // Jaeger's maxDuration is inclusive; the bucket's upper bound is not.
            let mut traces = format!("{search}&minDuration={}ns", b.min_ns);
            if let Some(max) = b.max_ns {
                traces.push_str(&format!("&maxDuration={}ns", max - 1));
            }
            HistogramBucketJson {
                min_us: b.min_ns as f64 / 1000.0,
                max_us: b.max_ns.map(|m| m as f64 / 1000.0),
                count: b.count,
                traces,
            }
        })
        .collect();
    let data = HistogramJson {
        service,
        operation: filter.operation.clone(),
        start: filter.start_ns / 1000,
        end: filter.end_ns / 1000,
        figures: Figures::new(&histogram.stats, seconds(filter.start_ns, filter.end_ns)),
        buckets,
    };
    Ok(ok(data, 1))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SegmentJson {
    #[serde(rename = "spanID")]
    span_id: String,
    service: String,
    operation: String,
    start_time: i64,
    end_time: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CriticalSpanJson {
    #[serde(rename = "spanID")]
    span_id: String,
    service: String,
    operation: String,
    /// Time this span spent on the critical path, µs.
    critical_us: f64,
    /// Share of the trace's duration.
    share: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CriticalPathJson {
    #[serde(rename = "traceID")]
    trace_id: String,
    duration_us: f64,
    /// From the end of the trace backwards, as computed.
    segments: Vec<SegmentJson>,
    /// Spans on the path, most critical time first.
    spans: Vec<CriticalSpanJson>,
}

/// `GET /api/traces/{traceID}/critical-path`
async fn critical_path(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Response, JaegerError> {
    let id = normalize_trace_id(&trace_id).ok_or_else(|| {
        JaegerError::bad_request(format!(
            "{trace_id:?} is not a trace id (16 or 32 hex characters)"
        ))
    })?;
    let spans = state.engine.trace(&id).await?;
    if spans.is_empty() {
        return Err(JaegerError::new(
            StatusCode::NOT_FOUND,
            format!("trace {id} not found"),
        ));
    }
    let trace = assemble(&id, spans);
    let duration_ns = trace.duration_ns().max(1) as f64;
    let segments = trace
        .critical_path
        .iter()
        .map(|segment| {
            let span = &trace.spans[segment.span].span;
            SegmentJson {
                span_id: span.span_id.clone(),
                service: span.service_name.clone(),
                operation: span.name.clone(),
                start_time: segment.start_ns / 1000,
                end_time: segment.end_ns / 1000,
            }
        })
        .collect();
    let mut spans: Vec<CriticalSpanJson> = trace
        .spans
        .iter()
        .filter(|s| s.critical_ns > 0)
        .map(|s| CriticalSpanJson {
            span_id: s.span.span_id.clone(),
            service: s.span.service_name.clone(),
            operation: s.span.name.clone(),
            critical_us: s.critical_ns as f64 / 1000.0,
            share: s.critical_ns as f64 / duration_ns,
        })
        .collect();
    spans.sort_by(|a, b| b.critical_us.total_cmp(&a.critical_us));
    let data = CriticalPathJson {
        trace_id: id,
        duration_us: trace.duration_ns() as f64 / 1000.0,
        segments,
        spans,
    };
    Ok(ok(data, 1))
}

/// `GET /api/insights?lookback=15m` (or `start`/`end`; `service` narrows to
/// what one service calls, is called by, or runs): every insight view, as
/// README documents. Not in the Jaeger envelope: the views are the top level.
async fn insights(
    State(state): State<AppState>,
    Query(params): Query<RangeParams>,
) -> Result<Response, JaegerError> {
    let (start_ns, end_ns) = params.range()?;
    let mut insights = state.engine.insights(start_ns, end_ns).await?;
    if let Some(service) = params.service.as_deref().filter(|s| !s.is_empty()) {
        insights = insights.for_service(service);
    }
    Ok(axum::Json(insights).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_give_about_sixty_buckets() {
        assert_eq!(crate::params::readable_step_ns(0, HOUR_NS), 60_000_000_000);
        assert_eq!(
            crate::params::readable_step_ns(0, 24 * HOUR_NS),
            1_800_000_000_000
        );
        assert_eq!(
            crate::params::readable_step_ns(0, 15 * 60_000_000_000),
            15_000_000_000
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("GET /a b"), "GET%20%2Fa%20b");
    }
}
