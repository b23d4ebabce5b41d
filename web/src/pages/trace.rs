//! `/traces/{traceID}`: the waterfall, with the critical path, errors and
//! their messages, events as markers, and each span's details a click away.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use weft_query::{AssembledTrace, Attribute, AttributeValue, assemble};

use super::charts::service_colour;
use super::format::{duration, percent, timestamp};
use super::{PageError, render, url_encode};
use crate::jaeger::normalize_trace_id;
use crate::routes::AppState;

/// Beyond this many spans, subtrees below [`COLLAPSE_DEPTH`] start collapsed.
const LARGE_TRACE: usize = 500;
const COLLAPSE_DEPTH: usize = 2;

struct ServiceRow {
    name: String,
    href: String,
    colour: String,
    spans: usize,
    errors: usize,
    critical: String,
    share: String,
}

struct SpanRow {
    /// Row id: the span's index, unique even when span ids collide.
    id: usize,
    parent: String,
    span_id: String,
    indent: usize,
    has_children: bool,
    /// The rows below start inside a `<template>`: the browser neither lays
    /// them out nor builds them until the subtree is opened.
    opens_template: bool,
    /// How many templates end after this row (subtrees whose last row it is).
    closes_templates: usize,
    collapsed: bool,
    hidden: bool,
    service: String,
    colour: String,
    name: String,
    kind: String,
    status: String,
    status_message: String,
    error: bool,
    critical: bool,
    left: String,
    width: String,
    label_left: String,
    label_inside: bool,
    duration: String,
    offset: String,
    critical_segments: Vec<(String, String)>,
    event_marks: Vec<(String, String)>,
    warnings: Vec<String>,
    warning_text: String,
    attributes: Vec<(String, String)>,
    resource: Vec<(String, String)>,
    events: Vec<(String, String, String)>,
    links: Vec<(String, String)>,
}

/// Where a trace shown came from.
pub enum Source {
    Stored,
    /// An uploaded file, not stored; it may hold more traces than the one shown.
    Uploaded {
        other_traces: Vec<String>,
    },
}

#[derive(Template)]
#[template(path = "trace.html")]
pub struct TracePage {
    title: String,
    nav: &'static str,
    stored: bool,
    other_traces: Vec<String>,
    trace_id: String,
    root: String,
    start: String,
    duration: String,
    span_count: usize,
    errors: usize,
    warnings: Vec<String>,
    services: Vec<ServiceRow>,
    ticks: Vec<(String, String)>,
    rows: Vec<SpanRow>,
}

pub fn attribute_text(value: &AttributeValue) -> String {
    match value {
        AttributeValue::String(s) | AttributeValue::Bytes(s) | AttributeValue::Json(s) => s.clone(),
        AttributeValue::Bool(b) => b.to_string(),
        AttributeValue::Int(i) => i.to_string(),
        AttributeValue::Double(d) => d.to_string(),
        AttributeValue::Empty => String::new(),
    }
}

fn pairs(attributes: &[Attribute]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|a| (a.key.clone(), attribute_text(&a.value)))
        .collect()
}

/// Position on the timeline, in percent of the trace's duration.
fn percent_of(trace: &AssembledTrace, ns: i64) -> f64 {
    let total = trace.duration_ns().max(1) as f64;
    ((ns - trace.start_ns) as f64 / total * 100.0).clamp(0.0, 100.0)
}

fn rows(trace: &AssembledTrace) -> Vec<SpanRow> {
    let large = trace.spans.len() > LARGE_TRACE;
    let mut segments: Vec<Vec<(String, String)>> = vec![Vec::new(); trace.spans.len()];
    for segment in &trace.critical_path {
        let left = percent_of(trace, segment.start_ns);
        let width = percent_of(trace, segment.end_ns) - left;
        if let Some(list) = segments.get_mut(segment.span) {
            list.push((format!("{left:.3}"), format!("{:.3}", width.max(0.15))));
        }
    }
    // Hidden: some ancestor starts collapsed. Spans come parent-first, so one pass does.
    let mut hidden = vec![false; trace.spans.len()];
    // Each collapsed subtree's rows sit in a template that ends after its last row;
    // rows come in display order (a subtree's rows follow its root), so the last
    // row of a subtree is the greatest index in it.
    let mut last_in_subtree: Vec<usize> = (0..trace.spans.len()).collect();
    for index in (0..trace.spans.len()).rev() {
        if let Some(parent) = trace.spans[index].parent {
            last_in_subtree[parent] = last_in_subtree[parent].max(last_in_subtree[index]);
        }
    }
    let mut closes = vec![0usize; trace.spans.len()];
    for (index, node) in trace.spans.iter().enumerate() {
        if large && node.depth >= COLLAPSE_DEPTH && !node.children.is_empty() {
            closes[last_in_subtree[index]] += 1;
        }
    }
    let mut rows = Vec::with_capacity(trace.spans.len());
    for (index, node) in trace.spans.iter().enumerate() {
        let span = &node.span;
        let collapsed = large && node.depth >= COLLAPSE_DEPTH && !node.children.is_empty();
        if let Some(parent) = node.parent {
            let parent_node = &trace.spans[parent];
            let parent_collapsed =
                large && parent_node.depth >= COLLAPSE_DEPTH && !parent_node.children.is_empty();
            hidden[index] = hidden[parent] || parent_collapsed;
        }
        let left = percent_of(trace, span.start_ns);
        let width = (percent_of(trace, span.start_ns + span.duration_ns) - left).max(0.1);
        let error = span.status_code == "ERROR";
        rows.push(SpanRow {
            id: index,
            parent: node.parent.map(|p| p.to_string()).unwrap_or_default(),
            span_id: span.span_id.clone(),
            indent: 4 + node.depth * 14,
            has_children: !node.children.is_empty(),
            opens_template: collapsed,
            closes_templates: closes[index],
            collapsed,
            hidden: hidden[index],
            service: span.service_name.clone(),
            colour: service_colour(&span.service_name),
            name: span.name.clone(),
            kind: span.kind.clone(),
            status: match &span.status_message {
                Some(message) if !message.is_empty() => format!("{}: {message}", span.status_code),
                _ => span.status_code.clone(),
            },
            status_message: span
                .status_message
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "error".to_owned()),
            error,
            critical: node.critical_ns > 0,
            left: format!("{left:.3}"),
            width: format!("{width:.3}"),
            // The duration label sits right of the bar, left of it near the end,
            // or inside it when the bar fills the row.
            label_left: format!(
                "{:.3}",
                match (left + width > 85.0, left >= 9.0) {
                    (false, _) => left + width + 0.5,
                    (true, true) => left - 8.5,
                    (true, false) => left + 0.5,
                }
            ),
            label_inside: left + width > 85.0 && left < 9.0,
            duration: duration(span.duration_ns),
            offset: duration(span.start_ns - trace.start_ns),
            critical_segments: std::mem::take(&mut segments[index]),
            event_marks: span
                .events
                .iter()
                .map(|e| {
                    (
                        format!("{:.3}", percent_of(trace, e.time_ns)),
                        e.name.clone(),
                    )
                })
                .collect(),
            warning_text: node.warnings.join(" "),
            warnings: node.warnings.clone(),
            attributes: pairs(&span.attributes),
            resource: pairs(&span.resource_attributes),
            events: span
                .events
                .iter()
                .map(|e| {
                    let attributes = pairs(&e.attributes)
                        .into_iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    (
                        duration(e.time_ns - trace.start_ns),
                        e.name.clone(),
                        attributes,
                    )
                })
                .collect(),
            links: span
                .links
                .iter()
                .map(|l| (l.trace_id.clone(), l.span_id.clone()))
                .collect(),
        });
    }
    rows
}

fn services(trace: &AssembledTrace) -> Vec<ServiceRow> {
    let total = trace.duration_ns().max(1) as f64;
    trace
        .services()
        .into_iter()
        .map(|(name, spans)| {
            let of_service = trace.spans.iter().filter(|s| s.span.service_name == name);
            let errors = of_service
                .clone()
                .filter(|s| s.span.status_code == "ERROR")
                .count();
            let critical_ns: i64 = of_service.map(|s| s.critical_ns).sum();
            ServiceRow {
                href: format!("/services/{}", url_encode(&name)),
                colour: service_colour(&name),
                critical: duration(critical_ns),
                share: percent(critical_ns as f64 / total),
                name,
                spans,
                errors,
            }
        })
        .collect()
}

pub async fn page(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Response, PageError> {
    let Some(id) = normalize_trace_id(&trace_id) else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Trace not found",
            format!(
                "{trace_id:?} is not a trace id: trace ids are up to 32 hexadecimal characters."
            ),
        ));
    };
    let spans = state.engine.trace(&id).await?;
    if spans.is_empty() {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Trace not found",
            format!(
                "No span of trace {id} is in the store (yet: spans become visible within seconds of arriving)."
            ),
        ));
    }
    Ok(render(&trace_page(assemble(&id, spans), Source::Stored)))
}

pub fn trace_page(trace: AssembledTrace, source: Source) -> TracePage {
    let root = trace
        .main_root()
        .map(|r| format!("{}: {}", r.span.service_name, r.span.name))
        .unwrap_or_default();
    let ticks = (0..=4)
        .map(|i| {
            let left = f64::from(i) * 25.0;
            (
                format!("{:.1}", left.min(92.0)),
                duration(trace.duration_ns() * i64::from(i) / 4),
            )
        })
        .collect();
    let mut warnings = trace.warnings.clone();
    if trace.duplicates_dropped > 0 {
        warnings.push(format!(
            "{} identical copies of spans were received and are shown once",
            trace.duplicates_dropped
        ));
    }
    let (stored, other_traces) = match source {
        Source::Stored => (true, Vec::new()),
        Source::Uploaded { other_traces } => (false, other_traces),
    };
    let id = trace.trace_id.clone();
    TracePage {
        title: format!("{root} · trace {}", &id[..8.min(id.len())]),
        nav: if stored { "search" } else { "upload" },
        stored,
        other_traces,
        start: timestamp(trace.start_ns),
        duration: duration(trace.duration_ns()),
        span_count: trace.spans.len(),
        errors: trace.error_count(),
        services: services(&trace),
        rows: rows(&trace),
        trace_id: id,
        root,
        warnings,
        ticks,
    }
}
