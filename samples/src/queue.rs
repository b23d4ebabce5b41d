//! An in-process message queue with headers, standing in for a broker. A
//! PRODUCER span wraps each send and its context travels in the message
//! headers (`traceparent`); each consumer group gets every message once and
//! wraps its processing in a CONSUMER span, either as a child of the producer
//! span or as the root of a new trace that links to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::telemetry::ServiceTracer;

pub const DELIVERY_EVENTS: &str = "delivery-events";
pub const DRONE_EVENTS: &str = "drone-events";
/// The `messaging.system` of every messaging span.
pub const MESSAGING_SYSTEM: &str = "inmemory";

#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub topic: String,
    pub headers: HashMap<String, String>,
    pub body: Json,
    pub enqueued: Instant,
}

/// How a consumer's span relates to the producer's.
#[derive(Clone, Copy, Debug)]
pub enum Relation {
    ChildOf,
    /// A new trace with a span link to the producer (OpenTelemetry's choice for
    /// work that outlives or batches the request that caused it).
    LinkTo,
}

/// A group's share of a topic: the group's instances take turns on one receiver.
pub type Subscription = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>;

#[derive(Default)]
pub struct Queue {
    groups: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Message>>>>,
    next_id: AtomicU64,
}

impl Queue {
    pub fn subscribe(&self, topic: &str) -> Subscription {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut groups) = self.groups.lock() {
            groups.entry(topic.to_owned()).or_default().push(sender);
        }
        Arc::new(tokio::sync::Mutex::new(receiver))
    }

    /// Sends `body` to every group subscribed to `topic`, inside a PRODUCER span
    /// that is a child of `parent`.
    pub fn publish(&self, tracer: &ServiceTracer, parent: &Context, topic: &str, body: Json) {
        let id = format!("msg-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let event_type = body
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let span = tracer
            .tracer
            .span_builder(format!("send {topic}"))
            .with_kind(SpanKind::Producer)
            .with_attributes(messaging_attributes(topic, "send", &id, &event_type, &body))
            .start_with_context(&tracer.tracer, parent);
        let context = parent.with_span(span);
        let mut headers = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut headers);
        let message = Message {
            id,
            topic: topic.to_owned(),
            headers,
            body,
            enqueued: Instant::now(),
        };
        if let Ok(groups) = self.groups.lock() {
            for sender in groups.get(topic).into_iter().flatten() {
                // A closed receiver means the sample is shutting down.
                let _ = sender.send(message.clone());
            }
        }
        context.span().end();
    }
}

/// Starts the CONSUMER span for one message; the caller ends it.
pub fn consumer_span(tracer: &ServiceTracer, message: &Message, relation: Relation) -> Context {
    let producer = TraceContextPropagator::new().extract(&message.headers);
    let event_type = message
        .body
        .get("type")
        .and_then(Json::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let mut attributes = messaging_attributes(
        &message.topic,
        "process",
        &message.id,
        &event_type,
        &message.body,
    );
    attributes.push(KeyValue::new(
        "messaging.consumer.group.name",
        tracer.identity.service,
    ));
    let queued_ms = message.enqueued.elapsed().as_secs_f64() * 1000.0;
    attributes.push(KeyValue::new("messaging.queue.time_ms", queued_ms));
    let builder = tracer
        .tracer
        .span_builder(format!("process {}", message.topic))
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes);
    match relation {
        Relation::ChildOf => {
            let span = builder.start_with_context(&tracer.tracer, &producer);
            producer.with_span(span)
        }
        Relation::LinkTo => {
            let producer_span = producer.span().span_context().clone();
            let links = if producer_span.is_valid() {
                vec![Link::new(
                    producer_span,
                    vec![KeyValue::new("messaging.operation.type", "send")],
                    0,
                )]
            } else {
                Vec::new()
            };
            let root = Context::new();
            let span = builder
                .with_links(links)
                .start_with_context(&tracer.tracer, &root);
            root.with_span(span)
        }
    }
}

fn messaging_attributes(
    topic: &str,
    operation: &'static str,
    id: &str,
    event_type: &str,
    body: &Json,
) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", MESSAGING_SYSTEM),
        KeyValue::new("messaging.destination.name", topic.to_owned()),
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new(
            "messaging.operation.name",
            if operation == "send" {
                "publish"
            } else {
                "process"
            },
        ),
        KeyValue::new("messaging.message.id", id.to_owned()),
        KeyValue::new("messaging.message.body.size", body.to_string().len() as i64),
        KeyValue::new("app.event.type", event_type.to_owned()),
    ]
}
