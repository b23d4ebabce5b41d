//! The Jaeger-compatible query API, so Grafana's Jaeger data source and scripts
//! written for Jaeger work against Weft unchanged. Shapes follow Jaeger's
//! `internal/uimodel` and its HTTP handler; OTLP is mapped to Jaeger's model the
//! way the OpenTelemetry Collector's Jaeger translator does it.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weft_query::{
    AssembledTrace, Attribute, AttributeValue, QueryError, SpanData, TraceSearch, TraceSpan,
    assemble,
};

use crate::params::{now_micros, time_range};
use crate::routes::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/dependencies", get(dependencies))
}

/// Jaeger's envelope: every field present, `errors` null on success.
#[derive(Debug, Serialize)]
struct Envelope<T: Serialize> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<EnvelopeError>>,
}

#[derive(Debug, Serialize)]
struct EnvelopeError {
    code: u16,
    msg: String,
}

pub(crate) fn ok<T: Serialize>(data: T, total: usize) -> Response {
    Json(Envelope {
        data,
        total,
        limit: 0,
        offset: 0,
        errors: None,
    })
    .into_response()
}

/// An error in Jaeger's envelope.
pub struct JaegerError {
    status: StatusCode,
    message: String,
}

impl JaegerError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let body = Envelope::<Option<()>> {
            data: None,
            total: 0,
            limit: 0,
            offset: 0,
            errors: Some(vec![EnvelopeError {
                code: self.status.as_u16(),
                msg: self.message,
            }]),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<QueryError> for JaegerError {
    fn from(error: QueryError) -> Self {
        let status = if error.is_client_error() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        if status.is_server_error() {
            tracing::error!(%error, "Jaeger API query failed");
        }
        Self {
            status,
            message: error.to_string(),
        }
    }
}

async fn services(State(state): State<AppState>) -> Result<Response, JaegerError> {
    let services = state.engine.services().await?;
    let total = services.len();
    Ok(ok(services, total))
}

async fn service_operations(
    State(state): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, JaegerError> {
    let mut names: Vec<String> = state
        .engine
        .operations(&service, None)
        .await?
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.dedup();
    let total = names.len();
    Ok(ok(names, total))
}

#[derive(Debug, Deserialize)]
struct OperationsParams {
    service: Option<String>,
    #[serde(rename = "spanKind")]
    span_kind: Option<String>,
}

#[derive(Debug, Serialize)]
struct OperationJson {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: String,
}

async fn operations(
    State(state): State<AppState>,
    Query(params): Query<OperationsParams>,
) -> Result<Response, JaegerError> {
    let service = params
        .service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| JaegerError::bad_request("parameter 'service' is required"))?;
    let operations: Vec<OperationJson> = state
        .engine
        .operations(&service, params.span_kind.as_deref())
        .await?
        .into_iter()
        .map(|o| OperationJson {
            name: o.name,
            span_kind: o.span_kind.to_ascii_lowercase(),
        })
        .collect();
    let total = operations.len();
    Ok(ok(operations, total))
}

/// Trace ids are accepted in 16- or 32-hex-character form, any case; shorter
/// ones are zero-padded as Jaeger does.
pub fn normalize_trace_id(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("{:0>32}", id.to_ascii_lowercase()))
}

async fn get_trace(
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
        return Err(JaegerError {
            status: StatusCode::NOT_FOUND,
            message: format!("trace {id} not found"),
        });
    }
    Ok(ok(vec![trace_json(&assemble(&id, spans))], 1))
}

#[derive(Debug, Deserialize)]
struct TraceParams {
    service: Option<String>,
    operation: Option<String>,
    tags: Option<String>,
    tag: Option<String>,
    #[serde(rename = "minDuration")]
    min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    max_duration: Option<String>,
    start: Option<String>,
    end: Option<String>,
    lookback: Option<String>,
    limit: Option<String>,
}

/// `tags={"k":"v"}` (JSON) and repeated `tag=k:v` (Jaeger's older form).
fn parse_tags(params: &TraceParams) -> Result<Vec<(String, String)>, JaegerError> {
    let mut tags = Vec::new();
    if let Some(text) = params.tags.as_deref().filter(|t| !t.trim().is_empty()) {
        let object: HashMap<String, Value> = serde_json::from_str(text).map_err(|e| {
            JaegerError::bad_request(format!(
                "parameter 'tags' must be a JSON object of strings: {e}"
            ))
        })?;
        for (key, value) in object {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            tags.push((key, value));
        }
    }
    if let Some(tag) = &params.tag {
        let (key, value) = tag
            .split_once(':')
            .ok_or_else(|| JaegerError::bad_request("parameter 'tag' must be key:value"))?;
        tags.push((key.to_owned(), value.to_owned()));
    }
    tags.sort();
    Ok(tags)
}

fn parse_search(params: &TraceParams) -> Result<TraceSearch, JaegerError> {
    let service = params
        .service
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| JaegerError::bad_request("parameter 'service' is required"))?;
    let duration = |name: &str, value: &Option<String>| -> Result<Option<i64>, JaegerError> {
        match value.as_deref().filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => crate::params::parse_go_duration(v)
                .map(Some)
                .ok_or_else(|| {
                    JaegerError::bad_request(format!(
                        "parameter '{name}' is not a duration like 1.2s, 100ms or 500us: {v:?}"
                    ))
                }),
        }
    };
    let (start_ns, end_ns) = time_range(
        params.start.as_deref(),
        params.end.as_deref(),
        params.lookback.as_deref(),
        3_600_000_000_000,
    )
    .map_err(JaegerError::bad_request)?;
    let limit = match params.limit.as_deref().filter(|v| !v.is_empty()) {
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| JaegerError::bad_request("parameter 'limit' must be a whole number"))?,
        None => 100,
    };
    Ok(TraceSearch {
        service,
        operation: params.operation.clone().filter(|o| !o.is_empty()),
        tags: parse_tags(params)?,
        min_duration_ns: duration("minDuration", &params.min_duration)?,
        max_duration_ns: duration("maxDuration", &params.max_duration)?,
        start_ns,
        end_ns,
        limit: if limit == 0 { 100 } else { limit.min(1500) },
    })
}

async fn find_traces(
    State(state): State<AppState>,
    Query(params): Query<TraceParams>,
) -> Result<Response, JaegerError> {
    let search = parse_search(&params)?;
    let traces = state.engine.search_traces(&search).await?;
    let data: Vec<Value> = traces
        .into_iter()
        .filter_map(|spans| {
            let id = spans.first()?.trace_id.clone();
            Some(trace_json(&assemble(&id, spans)))
        })
        .collect();
    let total = data.len();
    Ok(ok(data, total))
}

#[derive(Debug, Deserialize)]
struct DependencyParams {
    #[serde(rename = "endTs")]
    end_ts: Option<String>,
    lookback: Option<String>,
    service: Option<String>,
}

#[derive(Debug, Serialize)]
struct DependencyJson {
    parent: String,
    child: String,
    #[serde(rename = "callCount")]
    call_count: u64,
}

async fn dependencies(
    State(state): State<AppState>,
    Query(params): Query<DependencyParams>,
) -> Result<Response, JaegerError> {
    let millis = |name: &str, v: &str| -> Result<i64, JaegerError> {
        v.trim().parse().map_err(|_| {
            JaegerError::bad_request(format!("parameter '{name}' must be milliseconds"))
        })
    };
    let end_ms = match params.end_ts.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => millis("endTs", v)?,
        None => now_micros() / 1000,
    };
    let lookback_ms = match params.lookback.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => millis("lookback", v)?,
        None => Duration::from_secs(24 * 3600).as_millis() as i64,
    };
    let start_ns = (end_ms - lookback_ms).saturating_mul(1_000_000);
    let mut links = state
        .engine
        .dependencies(start_ns, end_ms.saturating_mul(1_000_000))
        .await?;
    if let Some(service) = params.service.filter(|s| !s.is_empty()) {
        links.retain(|d| d.parent == service || d.child == service);
    }
    let data: Vec<DependencyJson> = links
        .into_iter()
        .map(|d| DependencyJson {
            parent: d.parent,
            child: d.child,
            call_count: d.call_count,
        })
        .collect();
    let total = data.len();
    Ok(ok(data, total))
}

/// Largest integer a JSON number carries exactly (JavaScript's safe range).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

fn kv(key: &str, value: &AttributeValue) -> Value {
    match value {
        AttributeValue::String(s) => json!({"key": key, "type": "string", "value": s}),
        AttributeValue::Bool(b) => json!({"key": key, "type": "bool", "value": b}),
        AttributeValue::Int(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => {
            json!({"key": key, "type": "int64", "value": i})
        }
        AttributeValue::Int(i) => json!({"key": key, "type": "int64", "value": i.to_string()}),
        AttributeValue::Double(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => json!({"key": key, "type": "float64", "value": n}),
            None => json!({"key": key, "type": "float64", "value": d.to_string()}),
        },
        AttributeValue::Bytes(b) => json!({"key": key, "type": "binary", "value": b}),
        AttributeValue::Json(j) => json!({"key": key, "type": "string", "value": j}),
        AttributeValue::Empty => json!({"key": key, "type": "string", "value": ""}),
    }
}

fn string_kv(key: &str, value: &str) -> Value {
    json!({"key": key, "type": "string", "value": value})
}

fn attributes_kv(attributes: &[Attribute]) -> Vec<Value> {
    attributes.iter().map(|a| kv(&a.key, &a.value)).collect()
}

/// A trace in Jaeger's model, as Jaeger's query service returns it: identical
/// copies dropped, clock skew corrected, each change named in `warnings`.
/// Identical resources share a process key (`p1`, `p2`, … in order of first appearance).
pub fn trace_json(trace: &AssembledTrace) -> Value {
    let mut process_keys: Vec<(String, Vec<Attribute>)> = Vec::new();
    let mut processes = serde_json::Map::new();
    let mut span_values = Vec::with_capacity(trace.spans.len());
    for traced in &trace.spans {
        let span = &traced.span;
        let tags: Vec<Attribute> = span
            .resource_attributes
            .iter()
            .filter(|a| a.key != "service.name")
            .cloned()
            .collect();
        let position = match process_keys
            .iter()
            .position(|(service, t)| *service == span.service_name && *t == tags)
        {
            Some(position) => position,
            None => {
                process_keys.push((span.service_name.clone(), tags.clone()));
                let key = format!("p{}", process_keys.len());
                processes.insert(
                    key,
                    json!({"serviceName": span.service_name, "tags": attributes_kv(&tags)}),
                );
                process_keys.len() - 1
            }
        };
        span_values.push(span_json(traced, &format!("p{}", position + 1)));
    }
    let warnings = (!trace.warnings.is_empty()).then_some(&trace.warnings);
    json!({"traceID": trace.trace_id, "spans": span_values, "processes": processes, "warnings": warnings})
}

fn span_json(traced: &TraceSpan, process_id: &str) -> Value {
    let span: &SpanData = &traced.span;
    let mut references = Vec::new();
    if let Some(parent) = &span.parent_span_id {
        references.push(json!({"refType": "CHILD_OF", "traceID": span.trace_id, "spanID": parent}));
    }
    for link in &span.links {
        references.push(
            json!({"refType": "FOLLOWS_FROM", "traceID": link.trace_id, "spanID": link.span_id}),
        );
    }
    let mut tags = attributes_kv(&span.attributes);
    let kind = span.kind.to_ascii_lowercase();
    if kind != "unspecified" {
        tags.push(string_kv("span.kind", &kind));
    }
    match span.status_code.as_str() {
        "ERROR" => {
            tags.push(string_kv("otel.status_code", "ERROR"));
            tags.push(json!({"key": "error", "type": "bool", "value": true}));
        }
        "OK" => tags.push(string_kv("otel.status_code", "OK")),
        _ => {}
    }
    if let Some(message) = &span.status_message {
        tags.push(string_kv("otel.status_description", message));
    }
    if let Some(name) = &span.scope_name {
        tags.push(string_kv("otel.scope.name", name));
    }
    if let Some(version) = &span.scope_version {
        tags.push(string_kv("otel.scope.version", version));
    }
    if let Some(state) = &span.trace_state {
        tags.push(string_kv("w3c.tracestate", state));
    }
    let logs: Vec<Value> = span
        .events
        .iter()
        .map(|event| {
            let mut fields = vec![string_kv("event", &event.name)];
            fields.extend(attributes_kv(&event.attributes));
            json!({"timestamp": event.time_ns / 1000, "fields": fields})
        })
        .collect();
    json!({
        "traceID": span.trace_id,
        "spanID": span.span_id,
        "flags": span.flags & 0xff,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_ns / 1000,
        "duration": span.duration_ns / 1000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": (!traced.warnings.is_empty()).then_some(&traced.warnings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_padded_and_lower_cased() {
        assert_eq!(
            normalize_trace_id("ABCDEF0123456789").as_deref(),
            Some("0000000000000000abcdef0123456789")
        );
        assert_eq!(
            normalize_trace_id("5b8efff798038103d269b633813fc60c").as_deref(),
            Some("5b8efff798038103d269b633813fc60c")
        );
        assert_eq!(normalize_trace_id("xyz"), None);
        assert_eq!(normalize_trace_id(&"a".repeat(33)), None);
    }

    #[test]
    fn large_integers_become_strings() {
        assert_eq!(
            kv("n", &AttributeValue::Int(1 << 60))["value"],
            json!((1_i64 << 60).to_string())
        );
        assert_eq!(kv("n", &AttributeValue::Int(42))["value"], json!(42));
    }
}
