//! A trace as an OTLP/JSON file: `/traces/{traceID}/otlp.json` downloads one,
//! `/upload` shows one without storing it (the file goes through the
//! collector's own validation and conversion, then the trace page).

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde::Deserialize;
use weft_query::{Attribute, AttributeValue, SpanData, assemble, read_spans};

use super::trace::{Source, trace_page};
use super::{PageError, render};
use crate::jaeger::normalize_trace_id;
use crate::routes::AppState;

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| text.get(2 * i..2 * i + 2))
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect()
}

fn any_value(value: &AttributeValue) -> AnyValue {
    let value = match value {
        AttributeValue::String(s) => Some(any_value::Value::StringValue(s.clone())),
        AttributeValue::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        AttributeValue::Int(i) => Some(any_value::Value::IntValue(*i)),
        AttributeValue::Double(d) => Some(any_value::Value::DoubleValue(*d)),
        AttributeValue::Bytes(b) => Some(any_value::Value::BytesValue(
            BASE64.decode(b).unwrap_or_default(),
        )),
        // Stored as the OTLP/JSON of the array's values or of the list's key-values.
        AttributeValue::Json(text) => {
            if let Ok(values) = serde_json::from_str::<Vec<KeyValue>>(text) {
                Some(any_value::Value::KvlistValue(KeyValueList { values }))
            } else if let Ok(values) = serde_json::from_str::<Vec<AnyValue>>(text) {
                Some(any_value::Value::ArrayValue(ArrayValue { values }))
            } else {
                Some(any_value::Value::StringValue(text.clone()))
            }
        }
        AttributeValue::Empty => None,
    };
    AnyValue { value }
}

fn key_values(attributes: &[Attribute]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|a| KeyValue {
            key: a.key.clone(),
            value: Some(any_value(&a.value)),
            ..Default::default()
        })
        .collect()
}

fn kind_number(kind: &str) -> i32 {
    match kind {
        "INTERNAL" => 1,
        "SERVER" => 2,
        "CLIENT" => 3,
        "PRODUCER" => 4,
        "CONSUMER" => 5,
        _ => 0,
    }
}

fn status_number(code: &str) -> i32 {
    match code {
        "OK" => 1,
        "ERROR" => 2,
        _ => 0,
    }
}

fn nanos(ns: i64) -> u64 {
    u64::try_from(ns).unwrap_or_default()
}

fn span_message(data: &SpanData) -> Span {
    Span {
        trace_id: unhex(&data.trace_id),
        span_id: unhex(&data.span_id),
        trace_state: data.trace_state.clone().unwrap_or_default(),
        parent_span_id: data
            .parent_span_id
            .as_deref()
            .map(unhex)
            .unwrap_or_default(),
        flags: data.flags,
        name: data.name.clone(),
        kind: kind_number(&data.kind),
        start_time_unix_nano: nanos(data.start_ns),
        end_time_unix_nano: nanos(data.start_ns + data.duration_ns),
        attributes: key_values(&data.attributes),
        events: data
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: nanos(e.time_ns),
                name: e.name.clone(),
                attributes: key_values(&e.attributes),
                ..Default::default()
            })
            .collect(),
        links: data
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: unhex(&l.trace_id),
                span_id: unhex(&l.span_id),
                trace_state: l.trace_state.clone().unwrap_or_default(),
                attributes: key_values(&l.attributes),
                ..Default::default()
            })
            .collect(),
        status: Some(Status {
            code: status_number(&data.status_code),
            message: data.status_message.clone().unwrap_or_default(),
        }),
        ..Default::default()
    }
}

/// The spans as one export request: a resource per distinct resource, a
/// scope per distinct scope, spans in the order given.
pub fn export_request(spans: &[SpanData]) -> ExportTraceServiceRequest {
    // A scope is told apart by its name and version.
    type SpansByScope = BTreeMap<(Option<String>, Option<String>), Vec<Span>>;
    let mut resources: Vec<(Vec<KeyValue>, SpansByScope)> = Vec::new();
    for data in spans {
        let resource = key_values(&data.resource_attributes);
        let index = match resources
            .iter()
            .position(|(attributes, _)| *attributes == resource)
        {
            Some(index) => index,
            None => {
                resources.push((resource, BTreeMap::new()));
                resources.len() - 1
            }
        };
        let scope = (data.scope_name.clone(), data.scope_version.clone());
        if let Some((_, scopes)) = resources.get_mut(index) {
            scopes.entry(scope).or_default().push(span_message(data));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(attributes, scopes)| ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: scopes
                    .into_iter()
                    .map(|((name, version), spans)| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: name.unwrap_or_default(),
                            version: version.unwrap_or_default(),
                            ..Default::default()
                        }),
                        spans,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

pub async fn download(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Response, PageError> {
    let not_found = || {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Trace not found",
            format!("No span of trace {trace_id:?} is in the store."),
        )
    };
    let id = normalize_trace_id(&trace_id).ok_or_else(not_found)?;
    let spans = state.engine.trace(&id).await?;
    if spans.is_empty() {
        return Err(not_found());
    }
    let trace = assemble(&id, spans);
    let ordered: Vec<SpanData> = trace.spans.into_iter().map(|node| node.span).collect();
    let body = serde_json::to_string(&export_request(&ordered)).map_err(|error| {
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The trace could not be written",
            error.to_string(),
        )
    })?;
    let disposition = format!("attachment; filename=\"trace-{id}.otlp.json\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    title: &'static str,
    nav: &'static str,
    error: Option<String>,
}

pub async fn upload_form() -> Response {
    render(&UploadPage {
        title: "Open a trace file",
        nav: "upload",
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct UploadForm {
    otlp: String,
}

/// Shows the trace with the most spans in the file; the others are listed.
pub async fn upload(Form(form): Form<UploadForm>) -> Response {
    match uploaded_traces(&form.otlp) {
        Ok(mut traces) => {
            traces.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
            let others: Vec<String> = traces.iter().skip(1).map(|(id, _)| id.clone()).collect();
            let Some((id, spans)) = traces.into_iter().next() else {
                return bad_upload("The file holds no spans.".to_owned());
            };
            render(&trace_page(
                assemble(&id, spans),
                Source::Uploaded {
                    other_traces: others,
                },
            ))
        }
        Err(message) => bad_upload(message),
    }
}

fn bad_upload(message: String) -> Response {
    let page = UploadPage {
        title: "Open a trace file",
        nav: "upload",
        error: Some(message),
    };
    (StatusCode::BAD_REQUEST, render(&page)).into_response()
}

/// Decodes OTLP/JSON, drops what the collector would reject, and groups by trace.
fn uploaded_traces(text: &str) -> Result<Vec<(String, Vec<SpanData>)>, String> {
    let mut request: ExportTraceServiceRequest = serde_json::from_str(text)
        .map_err(|error| format!("This is not an OTLP/JSON trace export: {error}"))?;
    let rejected = weft_collector::convert::validate::traces(&mut request);
    let batch = weft_collector::convert::spans::to_record_batch(&request)
        .map_err(|error| format!("The spans could not be read: {error}"))?;
    let spans =
        read_spans(&batch).map_err(|error| format!("The spans could not be read: {error}"))?;
    if spans.is_empty() {
        return Err(format!(
            "The file holds no valid spans. {}",
            rejected.summary("span")
        ));
    }
    let mut traces: BTreeMap<String, Vec<SpanData>> = BTreeMap::new();
    for span in spans {
        traces.entry(span.trace_id.clone()).or_default().push(span);
    }
    Ok(traces.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use weft_query::{SpanEvent, SpanLink};

    use super::*;

    fn attribute(key: &str, value: AttributeValue) -> Attribute {
        Attribute {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn a_downloaded_trace_uploads_back_unchanged() {
        let span = SpanData {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: Some("00f067aa0ba902b7".into()),
            name: "GET /orders".into(),
            kind: "SERVER".into(),
            start_ns: 1_795_132_800_000_000_000,
            duration_ns: 42_000_000,
            status_code: "ERROR".into(),
            status_message: Some("boom".into()),
            service_name: "orders".into(),
            attributes: vec![
                attribute("http.route", AttributeValue::String("/orders".into())),
                attribute("retry", AttributeValue::Bool(true)),
                attribute("count", AttributeValue::Int(7)),
                attribute(
                    "tags",
                    AttributeValue::Json(r#"[{"stringValue":"a"},{"intValue":"2"}]"#.into()),
                ),
            ],
            resource_attributes: vec![attribute(
                "service.name",
                AttributeValue::String("orders".into()),
            )],
            scope_name: Some("weft-test".into()),
            scope_version: Some("1.0".into()),
            events: vec![SpanEvent {
                time_ns: 1_795_132_800_010_000_000,
                name: "cache miss".into(),
                attributes: vec![],
            }],
            links: vec![SpanLink {
                trace_id: "0af7651916cd43dd8448eb211c80319d".into(),
                span_id: "b7ad6b7169203332".into(),
                trace_state: None,
                attributes: vec![],
            }],
            ..Default::default()
        };
        let json = serde_json::to_string(&export_request(std::slice::from_ref(&span)))
            .expect("serialisable");
        assert!(
            json.contains(r#""traceId":"0af7651916cd43dd8448eb211c80319c""#),
            "{json}"
        );
        let traces = uploaded_traces(&json).expect("decodes");
        assert_eq!(traces.len(), 1);
        let back = &traces[0].1[0];
        assert_eq!(back.span_id, span.span_id);
        assert_eq!(back.parent_span_id, span.parent_span_id);
        assert_eq!(
            (back.start_ns, back.duration_ns),
            (span.start_ns, span.duration_ns)
        );
        assert_eq!(
            (back.kind.as_str(), back.status_code.as_str()),
            ("SERVER", "ERROR")
        );
        assert_eq!(back.service_name, "orders");
        assert_eq!(back.events, span.events);
        assert_eq!(back.links.len(), 1);
        let tags = back
            .attributes
            .iter()
            .find(|a| a.key == "tags")
            .map(|a| a.value.clone());
        assert_eq!(
            tags,
            Some(AttributeValue::Json(
                r#"[{"stringValue":"a"},{"intValue":"2"}]"#.into()
            ))
        );
    }

    #[test]
    fn a_file_that_is_not_otlp_says_so() {
        let error = uploaded_traces("{\"resourceSpans\": 3}").expect_err("refused");
        assert!(
            error.starts_with("This is not an OTLP/JSON trace export"),
            "{error}"
        );
        let error = uploaded_traces("{}").expect_err("refused");
        assert!(error.contains("no valid spans"), "{error}");
    }
}
