//! Realistic OTLP requests for Weft's benchmarks: 512 spans of about 64 traces
//! across 20 services, ~10 attributes per span (HTTP, RPC, DB and messaging
//! semantic conventions plus app-specific ids), 8 resource attributes, and
//! events on a quarter of the spans. Deterministic for a given seed.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

pub const SPANS_PER_REQUEST: usize = 512;
const SPANS_PER_TRACE: usize = 8;
const SERVICES: usize = 20;

/// A small, fast, deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

fn service_name(i: usize) -> String {
    const NAMES: [&str; SERVICES] = [
        "frontend",
        "checkout",
        "cart",
        "payment",
        "shipping",
        "email",
        "currency",
        "recommendation",
        "ad",
        "product-catalog",
        "accounts",
        "delivery",
        "package",
        "drone-management",
        "delivery-history",
        "scheduler",
        "inventory",
        "pricing",
        "search",
        "notifications",
    ];
    NAMES[i % SERVICES].to_owned()
}

fn resource(service: usize, instance: u64) -> Resource {
    Resource {
        attributes: vec![
            text("service.name", service_name(service)),
            text("service.version", format!("1.{}.0", service % 3)),
            text(
                "service.instance.id",
                format!("{}-{instance}", service_name(service)),
            ),
            text("host.name", format!("node-{}", instance % 5)),
            text("telemetry.sdk.name", "opentelemetry"),
            text("telemetry.sdk.language", "rust"),
            text("telemetry.sdk.version", "0.33.1"),
            text("deployment.environment.name", "production"),
        ],
        dropped_attributes_count: 0,
        entity_refs: vec![],
    }
}

/// One request of [`SPANS_PER_REQUEST`] spans, with ids and times from `seed`
/// and `now_ns`.
pub fn realistic_request(seed: u64, now_ns: u64) -> ExportTraceServiceRequest {
    let mut rng = Rng::new(seed);
    // Spans of one request come from a few services, as a batch from one SDK would
    // not; grouping them by service keeps the resource count realistic (4 per request).
    let mut by_service: Vec<(usize, Vec<Span>)> = Vec::new();
    for trace in 0..SPANS_PER_REQUEST / SPANS_PER_TRACE {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        trace_id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let trace_start = now_ns - rng.below(5_000_000_000);
        let mut parent = Vec::new();
        for depth in 0..SPANS_PER_TRACE {
            let span_id = rng.next_u64().to_le_bytes().to_vec();
            let service = (trace + depth * 3) % SERVICES;
            let start = trace_start + depth as u64 * 1_000_000 + rng.below(500_000);
            let duration = 200_000 + rng.below(50_000_000);
            let kind = if depth % 2 == 0 { 2 } else { 3 };
            let route = [
                "/api/orders/{id}",
                "/api/cart",
                "/api/checkout",
                "/api/products",
                "/healthz",
            ][(rng.below(5)) as usize];
            let status_code = if rng.below(50) == 0 { 500 } else { 200 };
            let mut attributes = vec![
                text(
                    "http.request.method",
                    ["GET", "POST", "PUT"][rng.below(3) as usize],
                ),
                text("http.route", route),
                int("http.response.status_code", status_code),
                text("url.scheme", "http"),
                text("server.address", service_name(service + 1)),
                int("server.port", 8080),
                text("network.protocol.version", "1.1"),
                text(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) weft-bench/1.0",
                ),
                text("app.user_id", format!("user-{}", rng.below(10_000))),
                int("app.items", rng.below(20) as i64),
            ];
            if depth == SPANS_PER_TRACE - 1 {
                attributes.push(text("db.system.name", "postgresql"));
            }
            let events = if rng.below(4) == 0 {
                vec![Event {
                    time_unix_nano: start + duration / 2,
                    name: "cache.miss".into(),
                    attributes: vec![
                        text("cache.key", format!("product-{}", rng.below(1000))),
                        int("cache.ttl", 60),
                    ],
                    dropped_attributes_count: 0,
                }]
            } else {
                vec![]
            };
            let span = Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.clone(),
                parent_span_id: parent.clone(),
                name: format!("{} {route}", if kind == 2 { "GET" } else { "HTTP GET" }),
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: start + duration,
                attributes,
                events,
                status: Some(Status {
                    code: if status_code == 500 { 2 } else { 0 },
                    message: String::new(),
                }),
                flags: 0x101,
                ..Default::default()
            };
            parent = span_id;
            match by_service.iter_mut().find(|(s, _)| *s == service % 4) {
                Some((_, spans)) => spans.push(span),
                None => by_service.push((service % 4, vec![span])),
            }
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(resource(service + (seed as usize % 5) * 4, seed % 3)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry-http".into(),
                        version: "0.33.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_advertised_shape() {
        let request = realistic_request(1, 1_800_000_000_000_000_000);
        let spans: Vec<&Span> = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(spans.len(), SPANS_PER_REQUEST);
        let attributes: usize = spans.iter().map(|s| s.attributes.len()).sum();
        assert!((10..=11).contains(&(attributes / spans.len())));
        assert!(
            request
                .resource_spans
                .iter()
                .all(|r| r.resource.as_ref().is_some_and(|r| r.attributes.len() == 8))
        );
        assert_eq!(
            realistic_request(1, 1_800_000_000_000_000_000),
            request,
            "deterministic"
        );
    }
}
