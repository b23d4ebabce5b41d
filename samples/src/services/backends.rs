//! The services behind the scheduler: accounts, package (v1 and v2),
//! delivery (three instances), drone-management, and delivery-history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use opentelemetry::trace::{FutureExt, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;

use super::{Reply, Simulation};
use crate::queue::{self, DELIVERY_EVENTS, DRONE_EVENTS, Queue, Relation, Subscription};
use crate::telemetry::{ServiceTracer, annotate_current, end_span, internal_span};

// ---- accounts ----------------------------------------------------------------

/// accounts fails transiently: a 503, or a stall longer than any caller waits.
async fn flaky_accounts(simulation: &Simulation) -> Option<Reply> {
    tokio::time::sleep(simulation.latency(3, 6)).await;
    if simulation.chance(simulation.config.accounts_unavailable) {
        return Some(Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "accounts database is failing over",
        ));
    }
    if simulation.chance(simulation.config.accounts_stall) {
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    None
}

pub fn accounts(simulation: &Arc<Simulation>) -> Router {
    async fn show(State(simulation): State<Arc<Simulation>>, Path(id): Path<String>) -> Reply {
        if let Some(failure) = flaky_accounts(&simulation).await {
            return failure;
        }
        Reply::ok(json!({ "account_id": id, "status": "active" }))
    }
    async fn charge(State(simulation): State<Arc<Simulation>>, Path(id): Path<String>) -> Reply {
        if let Some(failure) = flaky_accounts(&simulation).await {
            return failure;
        }
        Reply(
            StatusCode::CREATED,
            json!({ "account_id": id, "charge_id": simulation.id("charge") }),
        )
    }
    async fn refund(State(simulation): State<Arc<Simulation>>, Path(id): Path<String>) -> Reply {
        if let Some(failure) = flaky_accounts(&simulation).await {
            return failure;
        }
        Reply(
            StatusCode::CREATED,
            json!({ "account_id": id, "refund_id": simulation.id("refund") }),
        )
    }
    Router::new()
        .route("/accounts/{id}", get(show))
        .route("/accounts/{id}/charges", post(charge))
        .route("/accounts/{id}/refunds", post(refund))
        .with_state(Arc::clone(simulation))
}

// ---- package -----------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub enum PackageVersion {
    V1,
    /// The new version: slower and more error-prone.
    V2,
}

impl PackageVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "1.4.2",
            Self::V2 => "2.0.0",
        }
    }
}

/// package over HTTP (create, show, delete) and gRPC (`GetPackage`, see grpc.rs).
pub fn package(
    version: PackageVersion,
    simulation: &Arc<Simulation>,
    tracer: ServiceTracer,
) -> Router {
    type PackageState = State<(PackageVersion, Arc<Simulation>)>;
    async fn create(State((version, simulation)): PackageState) -> Reply {
        let config = &simulation.config;
        let (extra, error_rate) = match version {
            PackageVersion::V1 => (Duration::ZERO, config.package_v1_errors),
            PackageVersion::V2 => (config.package_v2_extra_latency, config.package_v2_errors),
        };
        tokio::time::sleep(simulation.latency(10, 15) + extra).await;
        if simulation.chance(error_rate) {
            return Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "package label service rejected the dimensions",
            );
        }
        Reply(
            StatusCode::CREATED,
            json!({ "package_id": simulation.id("pkg"), "version": version.as_str() }),
        )
    }
    async fn show(State((version, simulation)): PackageState, Path(id): Path<String>) -> Reply {
        tokio::time::sleep(simulation.latency(4, 6)).await;
        Reply::ok(json!({ "package_id": id, "version": version.as_str() }))
    }
    async fn remove(State((_, simulation)): PackageState, Path(id): Path<String>) -> Reply {
        tokio::time::sleep(simulation.latency(5, 8)).await;
        Reply::ok(json!({ "package_id": id, "deleted": true }))
    }
    let grpc = crate::grpc::PackageGrpc {
        tracer,
        version: version.as_str(),
        simulation: Arc::clone(simulation),
    };
    Router::new()
        .route("/packages", post(create))
        .route("/packages/{id}", get(show).delete(remove))
        .with_state((version, Arc::clone(simulation)))
        .route(
            crate::grpc::GET_PACKAGE_PATH,
            post(crate::grpc::serve_get_package).with_state(grpc),
        )
}

// ---- delivery ----------------------------------------------------------------

#[derive(Clone)]
struct DeliveryState {
    tracer: ServiceTracer,
    extra_latency: Duration,
    simulation: Arc<Simulation>,
    queue: Arc<Queue>,
}

impl DeliveryState {
    async fn work(&self, base_ms: u64) {
        tokio::time::sleep(self.simulation.latency(base_ms, 12) + self.extra_latency).await;
    }

    fn publish(&self, delivery_id: &str, event_type: &str) {
        let body = json!({ "type": event_type, "delivery_id": delivery_id });
        self.queue
            .publish(&self.tracer, &Context::current(), DELIVERY_EVENTS, body);
    }
}

/// One delivery instance. All instances share the `drone-events` subscription,
/// so each drone event is handled by one of them (competing consumers).
pub fn delivery(
    tracer: ServiceTracer,
    extra_latency: Duration,
    simulation: &Arc<Simulation>,
    queue: &Arc<Queue>,
    drone_events: &Subscription,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Router {
    let state = DeliveryState {
        tracer,
        extra_latency,
        simulation: Arc::clone(simulation),
        queue: Arc::clone(queue),
    };
    tasks.push(tokio::spawn(consume_drone_events(
        state.clone(),
        Arc::clone(drone_events),
    )));

    async fn create(
        State(state): State<DeliveryState>,
        axum::Json(body): axum::Json<Json>,
    ) -> Reply {
        state.work(8).await;
        let id = body
            .get("delivery_id")
            .and_then(Json::as_str)
            .unwrap_or("unknown")
            .to_owned();
        annotate_current(vec![KeyValue::new("app.delivery.id", id.clone())]);
        state.publish(&id, "Created");
        Reply(
            StatusCode::CREATED,
            json!({ "delivery_id": id, "status": "Created" }),
        )
    }
    async fn reschedule(State(state): State<DeliveryState>, Path(id): Path<String>) -> Reply {
        state.work(6).await;
        annotate_current(vec![KeyValue::new("app.delivery.id", id.clone())]);
        state.publish(&id, "Rescheduled");
        Reply::ok(json!({ "delivery_id": id, "status": "Rescheduled" }))
    }
    async fn cancel(State(state): State<DeliveryState>, Path(id): Path<String>) -> Reply {
        state.work(5).await;
        annotate_current(vec![KeyValue::new("app.delivery.id", id.clone())]);
        state.publish(&id, "Cancelled");
        Reply::ok(json!({ "delivery_id": id, "status": "Cancelled" }))
    }
    async fn show(State(state): State<DeliveryState>, Path(id): Path<String>) -> Reply {
        state.work(3).await;
        Reply::ok(json!({ "delivery_id": id }))
    }
    Router::new()
        .route("/deliveries", post(create))
        .route(
            "/deliveries/{id}",
            get(show).patch(reschedule).delete(cancel),
        )
        .with_state(state)
}

/// Turns drone events into delivery events.
async fn consume_drone_events(state: DeliveryState, subscription: Subscription) {
    loop {
        let message = { subscription.lock().await.recv().await };
        let Some(message) = message else { return };
        let context = queue::consumer_span(&state.tracer, &message, Relation::ChildOf);
        state.work(2).with_context(context.clone()).await;
        let delivery_id = message
            .body
            .get("delivery_id")
            .and_then(Json::as_str)
            .unwrap_or("unknown");
        let next = match message.body.get("type").and_then(Json::as_str) {
            Some("DroneLocationUpdated") => Some("InTransit"),
            Some("DroneDelivered") => Some("DeliveryComplete"),
            _ => None,
        };
        if let Some(event_type) = next {
            let body = json!({ "type": event_type, "delivery_id": delivery_id });
            state
                .queue
                .publish(&state.tracer, &context, DELIVERY_EVENTS, body);
        }
        end_span(&context);
    }
}

// ---- drone-management --------------------------------------------------------

#[derive(Clone)]
struct DroneState {
    tracer: ServiceTracer,
    simulation: Arc<Simulation>,
    queue: Arc<Queue>,
}

pub fn drone_management(
    tracer: ServiceTracer,
    simulation: &Arc<Simulation>,
    queue: &Arc<Queue>,
) -> Router {
    async fn assign(State(state): State<DroneState>, axum::Json(body): axum::Json<Json>) -> Reply {
        let simulation = &state.simulation;
        if simulation.drone_outage() {
            // Down hard: refuse at once.
            tokio::time::sleep(Duration::from_millis(1)).await;
            return Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "drone fleet controller offline",
            );
        }
        tokio::time::sleep(simulation.latency(15, 25)).await;
        if simulation.chance(simulation.config.no_drone_available) {
            return Reply::error(
                StatusCode::CONFLICT,
                "no drone available in the pickup area",
            );
        }
        let delivery_id = body
            .get("delivery_id")
            .and_then(Json::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let drone_id = format!("drone-{:03}", simulation.latency(1, 120).as_millis());
        annotate_current(vec![KeyValue::new("app.drone.id", drone_id.clone())]);
        // The flight outlives the request: its events are sent later, under an
        // INTERNAL span that starts here.
        let flight = internal_span(
            &state.tracer,
            "fly delivery",
            vec![KeyValue::new("app.drone.id", drone_id.clone())],
        );
        tokio::spawn(fly(state.clone(), flight, drone_id.clone(), delivery_id));
        Reply::ok(json!({ "drone_id": drone_id }))
    }
    async fn release(Path(id): Path<String>) -> Reply {
        Reply::ok(json!({ "delivery_id": id, "released": true }))
    }
    Router::new()
        .route("/drones/assignments", put(assign))
        .route(
            "/drones/assignments/{delivery_id}",
            axum::routing::delete(release),
        )
        .with_state(DroneState {
            tracer,
            simulation: Arc::clone(simulation),
            queue: Arc::clone(queue),
        })
}

async fn fly(state: DroneState, flight: Context, drone_id: String, delivery_id: String) {
    for event_type in [
        "DroneLocationUpdated",
        "DroneLocationUpdated",
        "DroneDelivered",
    ] {
        tokio::time::sleep(state.simulation.latency(80, 150)).await;
        let body = json!({ "type": event_type, "drone_id": drone_id, "delivery_id": delivery_id });
        state
            .queue
            .publish(&state.tracer, &flight, DRONE_EVENTS, body);
    }
    end_span(&flight);
}

// ---- delivery-history --------------------------------------------------------

#[derive(Clone)]
struct HistoryState {
    tracer: ServiceTracer,
    simulation: Arc<Simulation>,
    events: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

/// Records every delivery and drone event, each in a new trace linked to the
/// producer's, and serves the history of a delivery.
pub fn history(
    tracer: ServiceTracer,
    simulation: &Arc<Simulation>,
    queue: &Arc<Queue>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Router {
    let state = HistoryState {
        tracer,
        simulation: Arc::clone(simulation),
        events: Arc::default(),
    };
    for topic in [DELIVERY_EVENTS, DRONE_EVENTS] {
        tasks.push(tokio::spawn(record_events(
            state.clone(),
            queue.subscribe(topic),
        )));
    }
    async fn show(State(state): State<HistoryState>, Path(id): Path<String>) -> Reply {
        tokio::time::sleep(state.simulation.latency(2, 4)).await;
        let events = state
            .events
            .lock()
            .map(|events| events.get(&id).cloned().unwrap_or_default())
            .unwrap_or_default();
        Reply::ok(json!({ "delivery_id": id, "events": events }))
    }
    Router::new()
        .route("/deliveries/{id}/history", get(show))
        .with_state(state)
}

async fn record_events(state: HistoryState, subscription: Subscription) {
    loop {
        let message = { subscription.lock().await.recv().await };
        let Some(message) = message else { return };
        let context = queue::consumer_span(&state.tracer, &message, Relation::LinkTo);
        // Now and then the history store is slow and the queue backs up.
        let pause = if state.simulation.chance(0.05) {
            Duration::from_millis(60)
        } else {
            Duration::ZERO
        };
        let insert = database_insert(&state, &context);
        tokio::time::sleep(state.simulation.latency(1, 4) + pause)
            .with_context(insert.clone())
            .await;
        end_span(&insert);
        if let (Some(id), Some(event_type)) = (
            message.body.get("delivery_id").and_then(Json::as_str),
            message.body.get("type").and_then(Json::as_str),
        ) && let Ok(mut events) = state.events.lock()
        {
            // Bounded: the demo may run for days.
            if events.len() > 10_000 {
                events.clear();
            }
            events
                .entry(id.to_owned())
                .or_default()
                .push(event_type.to_owned());
        }
        end_span(&context);
    }
}

/// The CLIENT span of the history store's INSERT (an uninstrumented peer).
fn database_insert(state: &HistoryState, parent: &Context) -> Context {
    let span = state
        .tracer
        .tracer
        .span_builder("INSERT delivery_history")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.namespace", "history"),
            KeyValue::new("db.collection.name", "delivery_history"),
            KeyValue::new("db.operation.name", "INSERT"),
            KeyValue::new("server.address", "history-db"),
            KeyValue::new("server.port", 5432_i64),
        ])
        .start_with_context(&state.tracer.tracer, parent);
    parent.with_span(span)
}
