//! Which items of a request are accepted. Invalid items are removed from the
//! request and counted, so the exporter gets an OTLP partial success that says
//! how many were rejected and why, and the valid rest is stored.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::metrics::data_point_count;

/// Items taken out of a request, with a message about the first of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub count: i64,
    pub message: String,
}

impl Rejected {
    fn add(&mut self, count: usize, reason: impl FnOnce() -> String) {
        if count == 0 {
            return;
        }
        if self.count == 0 {
            self.message = reason();
        }
        self.count += i64::try_from(count).unwrap_or(i64::MAX);
    }

    /// The partial-success message: the first reason, and how many items in all.
    pub fn summary(&self, item: &str) -> String {
        if self.count <= 1 {
            self.message.clone()
        } else {
            format!(
                "{} {item}s rejected; the first: {}",
                self.count, self.message
            )
        }
    }
}

fn id_problem(what: &str, id: &[u8], expected: usize, optional: bool) -> Option<String> {
    if optional && id.is_empty() {
        return None;
    }
    if id.len() != expected {
        return Some(format!(
            "{what} is {} bytes long, it must be {expected}",
            id.len()
        ));
    }
    if id.iter().all(|b| *b == 0) {
        return Some(format!("{what} is all zeros, which OTLP forbids"));
    }
    None
}

/// Why a span with these ids (and links to these trace and span ids) cannot
/// be stored, if it cannot.
pub fn ids_problem<'a>(
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &[u8],
    mut links: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<String> {
    id_problem("trace_id", trace_id, 16, false)
        .or_else(|| id_problem("span_id", span_id, 8, false))
        .or_else(|| id_problem("parent_span_id", parent_span_id, 8, true))
        .or_else(|| {
            links.find_map(|(trace_id, span_id)| {
                id_problem("a link's trace_id", trace_id, 16, false)
                    .or_else(|| id_problem("a link's span_id", span_id, 8, false))
            })
        })
}

/// Why a span cannot be stored, if it cannot.
pub fn span_problem(span: &Span) -> Option<String> {
    let links = span
        .links
        .iter()
        .map(|l| (l.trace_id.as_slice(), l.span_id.as_slice()));
    ids_problem(&span.trace_id, &span.span_id, &span.parent_span_id, links)
}

/// Removes invalid spans from `request`.
pub fn traces(request: &mut ExportTraceServiceRequest) -> Rejected {
    let mut rejected = Rejected::default();
    for resource_spans in &mut request.resource_spans {
        for scope_spans in &mut resource_spans.scope_spans {
            scope_spans.spans.retain(|span| match span_problem(span) {
                None => true,
                Some(problem) => {
                    rejected.add(1, || format!("span {:?}: {problem}", span.name));
                    false
                }
            });
        }
        resource_spans.scope_spans.retain(|s| !s.spans.is_empty());
    }
    request.resource_spans.retain(|r| !r.scope_spans.is_empty());
    rejected
}

/// Removes metrics that cannot be stored (no name) from `request`.
pub fn metrics(request: &mut ExportMetricsServiceRequest) -> Rejected {
    let mut rejected = Rejected::default();
    for resource_metrics in &mut request.resource_metrics {
        for scope_metrics in &mut resource_metrics.scope_metrics {
            scope_metrics.metrics.retain(|metric| {
                if metric.name.is_empty() {
                    rejected.add(data_point_count(metric), || {
                        "a metric has no name".to_owned()
                    });
                    false
                } else {
                    true
                }
            });
        }
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn span(trace_id: Vec<u8>, span_id: Vec<u8>) -> Span {
        Span {
            trace_id,
            span_id,
            name: "op".into(),
            ..Default::default()
        }
    }

    #[test]
    fn invalid_ids_are_rejected_and_the_rest_kept() {
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span(vec![1; 16], vec![2; 8]),
                        span(vec![1; 3], vec![2; 8]),
                        span(vec![0; 16], vec![2; 8]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let rejected = traces(&mut request);
        assert_eq!(rejected.count, 2);
        assert_eq!(
            rejected.summary("span"),
            "2 spans rejected; the first: span \"op\": trace_id is 3 bytes long, it must be 16"
        );
        assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 1);
    }
}
