//! OpenTelemetry set-up for the sample: one tracer provider per service
//! instance (each has its own resource), W3C trace context in HTTP headers, and
//! the server span every request gets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    FutureExt, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};

use crate::SampleError;

/// Who a tracer speaks for: becomes the resource of every span it makes.
#[derive(Clone, Debug)]
pub struct Identity {
    pub service: &'static str,
    pub version: &'static str,
    pub instance: String,
}

/// Makes tracers (and meters) that export over OTLP/gRPC and remembers their
/// providers so that everything buffered is flushed at shutdown.
pub struct Telemetry {
    endpoint: String,
    metadata: MetadataMap,
    export_interval: Duration,
    providers: Mutex<Vec<SdkTracerProvider>>,
    meter_providers: Mutex<Vec<SdkMeterProvider>>,
}

/// Bucket bounds of `http.server.request.duration`, in seconds (the semantic
/// conventions' advice).
const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

impl Telemetry {
    pub fn new(
        endpoint: String,
        headers: &[(String, String)],
        export_interval: Duration,
    ) -> Result<Self, SampleError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let invalid = |_| SampleError::Exporter(format!("invalid OTLP header {name:?}"));
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).map_err(invalid)?,
                HeaderValue::from_str(value).map_err(|_| {
                    SampleError::Exporter(format!("invalid value for OTLP header {name:?}"))
                })?,
            );
        }
        Ok(Self {
            endpoint,
            metadata: MetadataMap::from_headers(map),
            export_interval,
            providers: Mutex::new(Vec::new()),
            meter_providers: Mutex::new(Vec::new()),
        })
    }

    fn request_duration(&self, resource: Resource) -> Result<Histogram<f64>, SampleError> {
        let exporter = MetricExporter::builder()
            .with_tonic()
            .with_endpoint(self.endpoint.clone())
            .with_metadata(self.metadata.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| SampleError::Exporter(error.to_string()))?;
        // Metrics change slowly; a few seconds between exports is plenty.
        let reader = PeriodicReader::builder(exporter)
            .with_interval(self.export_interval.max(Duration::from_secs(2)))
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        let histogram = provider
            .meter("drone-delivery")
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests.")
            .with_boundaries(DURATION_BOUNDS.to_vec())
            .build();
        if let Ok(mut providers) = self.meter_providers.lock() {
            providers.push(provider);
        }
        Ok(histogram)
    }

    /// Must be called inside the Tokio runtime: the gRPC channel spawns its connection task there.
    pub fn tracer(&self, identity: &Identity) -> Result<ServiceTracer, SampleError> {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(self.endpoint.clone())
            .with_metadata(self.metadata.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| SampleError::Exporter(error.to_string()))?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(self.export_interval)
            .with_max_queue_size(16_384)
            .build();
        let resource = Resource::builder_empty()
            .with_service_name(identity.service)
            .with_attributes([
                KeyValue::new("service.namespace", "drone-delivery"),
                KeyValue::new("service.version", identity.version),
                KeyValue::new("service.instance.id", identity.instance.clone()),
                KeyValue::new("deployment.environment.name", "demo"),
                KeyValue::new("telemetry.sdk.language", "rust"),
            ])
            .build();
        let request_duration = self.request_duration(resource.clone())?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batches)
                    .build(),
            )
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("drone-delivery");
        if let Ok(mut providers) = self.providers.lock() {
            providers.push(provider);
        }
        Ok(ServiceTracer {
            tracer,
            identity: identity.clone(),
            request_duration,
        })
    }

    /// Exports what is still buffered and stops the exporters. Blocks.
    pub fn shutdown(&self) {
        let providers = match self.providers.lock() {
            Ok(mut providers) => std::mem::take(&mut *providers),
            Err(_) => return,
        };
        for provider in providers {
            if let Err(error) = provider.force_flush() {
                tracing::warn!(%error, "drone-delivery: flushing spans failed");
            }
            let _ = provider.shutdown();
        }
        let meter_providers = match self.meter_providers.lock() {
            Ok(mut providers) => std::mem::take(&mut *providers),
            Err(_) => return,
        };
        for provider in meter_providers {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

/// A tracer plus the identity of the service instance using it.
#[derive(Clone)]
pub struct ServiceTracer {
    pub tracer: SdkTracer,
    pub identity: Identity,
    /// `http.server.request.duration`, recorded by [`server_span`].
    pub request_duration: Histogram<f64>,
}

/// Writes the current trace context into outgoing HTTP headers.
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// Reads the caller's trace context from incoming HTTP headers.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(key),
            axum::http::HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Middleware: every request gets a SERVER span (HTTP semantic conventions),
/// a child of the caller's span when the request carries `traceparent`. The
/// handler runs inside it, so `Context::current()` there is the server span.
pub async fn server_span(
    State(tracer): State<Arc<ServiceTracer>>,
    request: Request,
    next: Next,
) -> Response {
    // A gRPC method makes its own span, with the RPC conventions (see grpc.rs).
    let is_grpc = request
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if is_grpc {
        return next.run(request).await;
    }
    let started = std::time::Instant::now();
    let parent = extract(request.headers());
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let host = request
        .headers()
        .get("host")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let (address, port) = split_host(&host);
    let span = tracer
        .tracer
        .span_builder(format!("{method} {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("http.route", route.clone()),
            KeyValue::new("url.path", request.uri().path().to_owned()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("server.address", address),
            KeyValue::new("server.port", port),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("network.protocol.version", "1.1"),
        ])
        .start_with_context(&tracer.tracer, &parent);
    let context = parent.with_span(span);
    let response = next.run(request).with_context(context.clone()).await;
    let span = context.span();
    let status = response.status().as_u16();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    // For a server, only 5xx is the server's failure (4xx is the caller's).
    if status >= 500 {
        span.set_attribute(KeyValue::new("error.type", status.to_string()));
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    span.end();
    tracer.request_duration.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
    response
}

fn split_host(host: &str) -> (String, i64) {
    match host.rsplit_once(':') {
        Some((address, port)) => (address.to_owned(), port.parse().unwrap_or(80)),
        None => (host.to_owned(), 80),
    }
}

/// An INTERNAL span as a child of the current one, for a step worth seeing.
pub fn internal_span(tracer: &ServiceTracer, name: &str, attributes: Vec<KeyValue>) -> Context {
    let parent = Context::current();
    let span = tracer
        .tracer
        .span_builder(name.to_owned())
        .with_kind(SpanKind::Internal)
        .with_attributes(attributes)
        .start_with_context(&tracer.tracer, &parent);
    parent.with_span(span)
}

/// Marks the current span failed with a message.
pub fn fail_current(message: impl Into<String>) {
    let context = Context::current();
    let span = context.span();
    span.set_status(Status::error(message.into()));
}

/// Sets attributes on the current span (the request's server span in a handler).
pub fn annotate_current(attributes: Vec<KeyValue>) {
    let context = Context::current();
    context.span().set_attributes(attributes);
}

pub fn end_span(context: &Context) {
    context.span().end();
}
