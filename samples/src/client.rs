//! Outgoing HTTP calls: one CLIENT span per attempt, trace context in the
//! headers, retries with exponential backoff and jitter for transient
//! failures, and an optional circuit breaker.
//!
//! A POST or PATCH is retried only when it carries an idempotency key: a
//! blind retry of a non-idempotent call could charge an account twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use serde_json::Value as Json;

use crate::breaker::{Admission, CircuitBreaker, Transition};
use crate::telemetry::{ServiceTracer, inject};

/// How a call failed, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("circuit breaker {0} is open")]
    CircuitOpen(String),
}

impl CallError {
    /// Worth another attempt: the callee may well succeed next time.
    fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            Self::Timeout(_) | Self::Connect(_) => true,
            Self::CircuitOpen(_) => false,
        }
    }

    /// The `error.type` attribute (semantic conventions: status code or a short class).
    fn error_type(&self) -> String {
        match self {
            Self::Status { status, .. } => status.to_string(),
            Self::Timeout(_) => "timeout".to_owned(),
            Self::Connect(_) => "connection_refused".to_owned(),
            Self::CircuitOpen(_) => "circuit_open".to_owned(),
        }
    }

    /// A failure of the callee (counts against the breaker), not a refusal of the request.
    fn is_callee_failure(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500,
            Self::Timeout(_) | Self::Connect(_) => true,
            Self::CircuitOpen(_) => false,
        }
    }
}

/// One logical call to another service.
pub struct Call {
    pub peer: &'static str,
    pub method: Method,
    pub base_url: String,
    /// The route template (`/packages/{id}`), for the span name and `url.template`.
    pub route: &'static str,
    pub path: String,
    pub body: Option<Json>,
    pub idempotency_key: Option<String>,
    /// Extra attributes for every attempt's span (transaction step, compensation).
    pub attributes: Vec<KeyValue>,
}

impl Call {
    pub fn new(
        peer: &'static str,
        method: Method,
        base_url: &str,
        route: &'static str,
        path: String,
    ) -> Self {
        Self {
            peer,
            method,
            base_url: base_url.to_owned(),
            route,
            path,
            body: None,
            idempotency_key: None,
            attributes: Vec::new(),
        }
    }

    pub fn body(mut self, body: Json) -> Self {
        self.body = Some(body);
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn attribute(mut self, attribute: KeyValue) -> Self {
        self.attributes.push(attribute);
        self
    }

    fn retry_allowed(&self) -> bool {
        !matches!(self.method, Method::POST | Method::PATCH) || self.idempotency_key.is_some()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(400),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half fixed, half random.
    fn delay(&self, retry: u32, random: f64) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1 << retry.min(16))
            .min(self.max_delay);
        exponential / 2 + exponential.mul_f64(random / 2.0)
    }
}

pub struct HttpClient {
    tracer: ServiceTracer,
    http: reqwest::Client,
    timeout: Duration,
    retry: RetryPolicy,
    rng: Mutex<fastrand::Rng>,
}

impl HttpClient {
    pub fn new(tracer: ServiceTracer, timeout: Duration, seed: u64) -> Self {
        Self {
            tracer,
            http: reqwest::Client::new(),
            timeout,
            retry: RetryPolicy::default(),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    /// Sends the call, retrying transient failures when that is safe; the
    /// breaker, when given, guards every attempt.
    pub async fn send(
        &self,
        call: &Call,
        breaker: Option<&Arc<CircuitBreaker>>,
    ) -> Result<Json, CallError> {
        let mut resend_count = 0;
        loop {
            let outcome = self.attempt(call, resend_count, breaker).await;
            match outcome {
                Err(error)
                    if error.is_transient()
                        && call.retry_allowed()
                        && resend_count + 1 < self.retry.max_attempts =>
                {
                    let random = self.rng.lock().map(|mut rng| rng.f64()).unwrap_or(0.5);
                    tokio::time::sleep(self.retry.delay(resend_count, random)).await;
                    resend_count += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn attempt(
        &self,
        call: &Call,
        resend_count: u32,
        breaker: Option<&Arc<CircuitBreaker>>,
    ) -> Result<Json, CallError> {
        let url = format!("{}{}", call.base_url, call.path);
        let (address, port) = host_and_port(&call.base_url);
        let mut attributes = vec![
            KeyValue::new("http.request.method", call.method.as_str().to_owned()),
            KeyValue::new("url.full", url.clone()),
            KeyValue::new("url.template", call.route),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("server.address", address),
            KeyValue::new("server.port", port),
            KeyValue::new("peer.service", call.peer),
            KeyValue::new("network.protocol.name", "http"),
        ];
        if resend_count > 0 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(resend_count),
            ));
        }
        if let Some(key) = &call.idempotency_key {
            attributes.push(KeyValue::new(
                "http.request.header.idempotency-key",
                Value::Array(Array::String(vec![StringValue::from(key.clone())])),
            ));
        }
        attributes.extend(call.attributes.iter().cloned());
        let parent = Context::current();
        let span = self
            .tracer
            .tracer
            .span_builder(format!("{} {}", call.method, call.route))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer.tracer, &parent);
        let context = parent.with_span(span);

        let admission = breaker.map_or(Admission::Allowed, |breaker| breaker.admit());
        if let (Admission::Trial(transition), Some(breaker)) = (admission, breaker) {
            record_transition(&context, breaker, transition);
        }
        let outcome = match admission {
            Admission::Rejected => Err(CallError::CircuitOpen(
                breaker.map(|b| b.name.clone()).unwrap_or_default(),
            )),
            Admission::Allowed | Admission::Trial(_) => {
                let outcome = self.exchange(call, &url, &context).await;
                if let Some(breaker) = breaker {
                    let callee_failed = outcome
                        .as_ref()
                        .err()
                        .is_some_and(CallError::is_callee_failure);
                    if let Some(transition) = breaker.record(!callee_failed) {
                        record_transition(&context, breaker, transition);
                    }
                }
                outcome
            }
        };
        let span = context.span();
        if let Err(error) = &outcome {
            span.set_attribute(KeyValue::new("error.type", error.error_type()));
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
        outcome
    }

    async fn exchange(&self, call: &Call, url: &str, context: &Context) -> Result<Json, CallError> {
        let mut headers = HeaderMap::new();
        inject(context, &mut headers);
        if let Some(key) = &call.idempotency_key
            && let Ok(value) = HeaderValue::from_str(key)
        {
            headers.insert("idempotency-key", value);
        }
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .headers(headers)
            .timeout(self.timeout);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|error| self.classify(error))?;
        let status = response.status().as_u16();
        context.span().set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        let text = response
            .text()
            .await
            .map_err(|error| self.classify(error))?;
        if status >= 400 {
            let message = serde_json::from_str::<Json>(&text)
                .ok()
                .and_then(|body| body.get("error").and_then(Json::as_str).map(str::to_owned))
                .unwrap_or(text);
            return Err(CallError::Status { status, message });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Json::Null))
    }

    fn classify(&self, error: reqwest::Error) -> CallError {
        if error.is_timeout() {
            CallError::Timeout(self.timeout)
        } else {
            CallError::Connect(error.to_string())
        }
    }
}

fn record_transition(context: &Context, breaker: &CircuitBreaker, transition: Transition) {
    context.span().add_event(
        "circuit_breaker.state_change",
        vec![
            KeyValue::new("circuit_breaker.name", breaker.name.clone()),
            KeyValue::new("circuit_breaker.state", transition.to.as_str()),
            KeyValue::new("circuit_breaker.previous_state", transition.from.as_str()),
        ],
    );
    tracing::debug!(breaker = %breaker.name, from = transition.from.as_str(), to = transition.to.as_str(), "circuit breaker");
}

fn host_and_port(base_url: &str) -> (String, i64) {
    let authority = base_url
        .split("://")
        .nth(1)
        .unwrap_or(base_url)
        .split('/')
        .next()
        .unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(80)),
        None => (authority.to_owned(), 80),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(0, 0.0), Duration::from_millis(10));
        assert_eq!(policy.delay(0, 1.0), Duration::from_millis(20));
        assert_eq!(policy.delay(2, 0.0), Duration::from_millis(40));
        assert_eq!(policy.delay(10, 1.0), Duration::from_millis(400), "capped");
    }

    #[test]
    fn non_idempotent_calls_are_retried_only_with_a_key() {
        let post = Call::new(
            "accounts",
            Method::POST,
            "http://127.0.0.1:1",
            "/charges",
            "/charges".into(),
        );
        assert!(!post.retry_allowed());
        assert!(post.idempotency_key("k-1").retry_allowed());
        let get = Call::new(
            "accounts",
            Method::GET,
            "http://127.0.0.1:1",
            "/a",
            "/a".into(),
        );
        assert!(get.retry_allowed());
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(
            CallError::Status {
                status: 503,
                message: String::new()
            }
            .is_transient()
        );
        assert!(CallError::Timeout(Duration::from_millis(1)).is_transient());
        assert!(
            !CallError::Status {
                status: 409,
                message: String::new()
            }
            .is_transient()
        );
        assert!(!CallError::CircuitOpen("x".into()).is_transient());
    }
}
