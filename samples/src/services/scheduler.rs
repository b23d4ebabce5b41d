//! delivery-scheduler: the public API. Scheduling a delivery is a distributed
//! transaction (a saga) over four services; when a step fails for good, the
//! steps already done are undone by compensating calls, newest first.
//!
//! Attributes that make the saga visible (documented in README):
//! `transaction.id`, `transaction.name` and `transaction.outcome` on the
//! scheduler's server span; `transaction.step` on every call that is a step;
//! `transaction.compensation = true` and `transaction.compensates = <step>` on
//! every undoing call and on the INTERNAL `compensate` span grouping them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use opentelemetry::KeyValue;
use opentelemetry::trace::FutureExt;
use serde_json::{Value as Json, json};

use super::{ACCOUNTS, Addresses, DELIVERY, DRONE_MANAGEMENT, PACKAGE, Reply, Simulation};
use crate::breaker::CircuitBreaker;
use crate::client::{Call, CallError, HttpClient};
use crate::telemetry::{ServiceTracer, annotate_current, end_span, fail_current, internal_span};

/// How long the scheduler waits for any one call.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);

struct Scheduler {
    tracer: ServiceTracer,
    client: HttpClient,
    drone_breaker: Arc<CircuitBreaker>,
    simulation: Arc<Simulation>,
    addresses: Addresses,
    next_delivery_instance: AtomicUsize,
}

impl Scheduler {
    /// Round-robin over the delivery instances.
    fn delivery_instance(&self) -> &str {
        let count = self.addresses.delivery.len().max(1);
        let index = self.next_delivery_instance.fetch_add(1, Ordering::Relaxed) % count;
        self.addresses
            .delivery
            .get(index)
            .map_or("", String::as_str)
    }

    /// Splits package traffic between the two versions.
    fn package_instance(&self) -> &str {
        if self
            .simulation
            .chance(self.simulation.config.package_v2_share)
        {
            &self.addresses.package_v2
        } else {
            &self.addresses.package_v1
        }
    }
}

pub fn router(tracer: ServiceTracer, simulation: &Arc<Simulation>, addresses: Addresses) -> Router {
    let config = &simulation.config;
    let scheduler = Scheduler {
        client: HttpClient::new(tracer.clone(), CALL_TIMEOUT, config.seed.wrapping_add(1)),
        tracer,
        drone_breaker: Arc::new(CircuitBreaker::new(
            DRONE_MANAGEMENT,
            config.breaker_failures,
            config.breaker_cool_down,
        )),
        simulation: Arc::clone(simulation),
        addresses,
        next_delivery_instance: AtomicUsize::new(0),
    };
    Router::new()
        .route("/deliveries", post(schedule))
        .route(
            "/deliveries/{id}",
            get(show).patch(reschedule).delete(cancel),
        )
        .with_state(Arc::new(scheduler))
}

/// A step of the scheduling saga that succeeded and can be undone.
enum Done {
    Charge {
        account: String,
    },
    Package {
        base_url: String,
        package_id: String,
    },
    Delivery {
        base_url: String,
    },
}

impl Done {
    fn step(&self) -> &'static str {
        match self {
            Self::Charge { .. } => "charge-account",
            Self::Package { .. } => "create-package",
            Self::Delivery { .. } => "create-delivery",
        }
    }

    fn undo(&self, delivery_id: &str, addresses: &Addresses) -> Call {
        let call = match self {
            Self::Charge { account } => Call::new(
                ACCOUNTS,
                Method::POST,
                &addresses.accounts,
                "/accounts/{id}/refunds",
                format!("/accounts/{account}/refunds"),
            )
            .body(json!({ "delivery_id": delivery_id }))
            .idempotency_key(format!("refund-{delivery_id}")),
            Self::Package {
                base_url,
                package_id,
            } => Call::new(
                PACKAGE,
                Method::DELETE,
                base_url,
                "/packages/{id}",
                format!("/packages/{package_id}"),
            ),
            Self::Delivery { base_url } => Call::new(
                DELIVERY,
                Method::DELETE,
                base_url,
                "/deliveries/{id}",
                format!("/deliveries/{delivery_id}"),
            ),
        };
        call.attribute(KeyValue::new("transaction.compensation", true))
            .attribute(KeyValue::new("transaction.compensates", self.step()))
            .attribute(KeyValue::new(
                "transaction.step",
                format!("undo-{}", self.step()),
            ))
    }
}

fn step(call: Call, name: &'static str) -> Call {
    call.attribute(KeyValue::new("transaction.step", name))
}

async fn schedule(
    State(scheduler): State<Arc<Scheduler>>,
    body: Option<axum::Json<Json>>,
) -> Reply {
    let body = body.map(|axum::Json(body)| body).unwrap_or(Json::Null);
    let account = body
        .get("account_id")
        .and_then(Json::as_str)
        .unwrap_or("acct-1")
        .to_owned();
    let delivery_id = scheduler.simulation.id("dlv");
    let transaction_id = scheduler.simulation.id("tx");
    annotate_current(vec![
        KeyValue::new("transaction.id", transaction_id),
        KeyValue::new("transaction.name", "schedule-delivery"),
        KeyValue::new("app.delivery.id", delivery_id.clone()),
        KeyValue::new("app.account.id", account.clone()),
    ]);
    let client = &scheduler.client;
    let addresses = &scheduler.addresses;
    let mut done = Vec::new();

    let verify = Call::new(
        ACCOUNTS,
        Method::GET,
        &addresses.accounts,
        "/accounts/{id}",
        format!("/accounts/{account}"),
    );
    if let Err(error) = client.send(&step(verify, "verify-account"), None).await {
        return compensate(&scheduler, &delivery_id, "verify-account", done, error).await;
    }

    let charge = Call::new(
        ACCOUNTS,
        Method::POST,
        &addresses.accounts,
        "/accounts/{id}/charges",
        format!("/accounts/{account}/charges"),
    )
    .body(json!({ "delivery_id": delivery_id, "amount_cents": 1250 }))
    .idempotency_key(format!("charge-{delivery_id}"));
    let outcome = client
        .send(&step(charge, "charge-account"), None)
        .await
        .map(|_| Done::Charge {
            account: account.clone(),
        });
    if let Err(error) = remember(outcome, &mut done) {
        return compensate(&scheduler, &delivery_id, "charge-account", done, error).await;
    }

    let package_url = scheduler.package_instance().to_owned();
    let create_package = Call::new(
        PACKAGE,
        Method::POST,
        &package_url,
        "/packages",
        "/packages".to_owned(),
    )
    .body(json!({ "delivery_id": delivery_id, "size": "small", "weight_kg": 1.2 }))
    .idempotency_key(format!("package-{delivery_id}"));
    let outcome = match client
        .send(&step(create_package, "create-package"), None)
        .await
    {
        Ok(reply) => {
            let package_id = reply
                .get("package_id")
                .and_then(Json::as_str)
                .unwrap_or("unknown")
                .to_owned();
            // The label is read back over gRPC; not a saga step, nothing to undo.
            if let Err(status) =
                crate::grpc::get_package(&scheduler.tracer, &package_url, &package_id, CALL_TIMEOUT)
                    .await
            {
                tracing::debug!(%status, "reading the package label failed");
            }
            Ok(Done::Package {
                base_url: package_url,
                package_id,
            })
        }
        Err(error) => Err(error),
    };
    if let Err(error) = remember(outcome, &mut done) {
        return compensate(&scheduler, &delivery_id, "create-package", done, error).await;
    }

    let delivery_url = scheduler.delivery_instance().to_owned();
    let create_delivery = Call::new(
        DELIVERY,
        Method::POST,
        &delivery_url,
        "/deliveries",
        "/deliveries".to_owned(),
    )
    .body(json!({ "delivery_id": delivery_id }))
    .idempotency_key(format!("delivery-{delivery_id}"));
    let outcome = client
        .send(&step(create_delivery, "create-delivery"), None)
        .await
        .map(|_| Done::Delivery {
            base_url: delivery_url,
        });
    if let Err(error) = remember(outcome, &mut done) {
        return compensate(&scheduler, &delivery_id, "create-delivery", done, error).await;
    }

    let assign = Call::new(
        DRONE_MANAGEMENT,
        Method::PUT,
        &addresses.drone_management,
        "/drones/assignments",
        "/drones/assignments".to_owned(),
    )
    .body(json!({ "delivery_id": delivery_id }));
    match client
        .send(
            &step(assign, "assign-drone"),
            Some(&scheduler.drone_breaker),
        )
        .await
    {
        Ok(reply) => {
            annotate_current(vec![KeyValue::new("transaction.outcome", "committed")]);
            Reply(
                StatusCode::CREATED,
                json!({ "delivery_id": delivery_id, "drone": reply.get("drone_id") }),
            )
        }
        Err(error) => compensate(&scheduler, &delivery_id, "assign-drone", done, error).await,
    }
}

/// Keeps a successful step for a later undo; passes the error on.
fn remember(outcome: Result<Done, CallError>, done: &mut Vec<Done>) -> Result<(), CallError> {
    outcome.map(|step| done.push(step))
}

/// Undoes `done` newest first, inside an INTERNAL `compensate` span.
async fn compensate(
    scheduler: &Scheduler,
    delivery_id: &str,
    failed_step: &'static str,
    done: Vec<Done>,
    error: CallError,
) -> Reply {
    let outcome = if done.is_empty() {
        "aborted"
    } else {
        let compensation = internal_span(
            &scheduler.tracer,
            "compensate schedule-delivery",
            vec![
                KeyValue::new("transaction.compensation", true),
                KeyValue::new("transaction.failed_step", failed_step),
            ],
        );
        let mut undone_all = true;
        for step in done.iter().rev() {
            let undo = step.undo(delivery_id, &scheduler.addresses);
            if scheduler
                .client
                .send(&undo, None)
                .with_context(compensation.clone())
                .await
                .is_err()
            {
                undone_all = false;
            }
        }
        end_span(&compensation);
        // When an undo fails for good, a step stays done: the transaction is half-done.
        if undone_all {
            "compensated"
        } else {
            "compensation_failed"
        }
    };
    annotate_current(vec![
        KeyValue::new("transaction.outcome", outcome),
        KeyValue::new("transaction.failed_step", failed_step),
    ]);
    fail_current(format!(
        "{failed_step} failed ({error}); transaction {outcome}"
    ));
    failure_reply(&error)
}

fn failure_reply(error: &CallError) -> Reply {
    match error {
        CallError::Status {
            status: 409,
            message,
        } => Reply::error(StatusCode::CONFLICT, message.clone()),
        CallError::CircuitOpen(_) => {
            Reply::error(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        }
        _ => Reply::error(StatusCode::BAD_GATEWAY, error.to_string()),
    }
}

async fn reschedule(State(scheduler): State<Arc<Scheduler>>, Path(id): Path<String>) -> Reply {
    annotate_current(vec![KeyValue::new("app.delivery.id", id.clone())]);
    let call = Call::new(
        DELIVERY,
        Method::PATCH,
        scheduler.delivery_instance(),
        "/deliveries/{id}",
        format!("/deliveries/{id}"),
    )
    .body(json!({ "window": "tomorrow 10:00-12:00" }))
    .idempotency_key(format!("reschedule-{id}-{}", scheduler.simulation.id("r")));
    match scheduler.client.send(&call, None).await {
        Ok(reply) => Reply::ok(reply),
        Err(error) => failure_reply(&error),
    }
}

/// Cancelling is not a compensation: the customer asked for it.
async fn cancel(State(scheduler): State<Arc<Scheduler>>, Path(id): Path<String>) -> Reply {
    annotate_current(vec![KeyValue::new("app.delivery.id", id.clone())]);
    let addresses = &scheduler.addresses;
    let calls = [
        Call::new(
            DELIVERY,
            Method::DELETE,
            scheduler.delivery_instance(),
            "/deliveries/{id}",
            format!("/deliveries/{id}"),
        ),
        Call::new(
            DRONE_MANAGEMENT,
            Method::DELETE,
            &addresses.drone_management,
            "/drones/assignments/{delivery_id}",
            format!("/drones/assignments/{id}"),
        ),
    ];
    for (index, call) in calls.iter().enumerate() {
        let breaker = (index == 1).then_some(&scheduler.drone_breaker);
        if let Err(error) = scheduler.client.send(call, breaker).await {
            return failure_reply(&error);
        }
    }
    Reply::ok(json!({ "delivery_id": id, "status": "Cancelled" }))
}

async fn show(State(scheduler): State<Arc<Scheduler>>, Path(id): Path<String>) -> Reply {
    let call = Call::new(
        DELIVERY,
        Method::GET,
        scheduler.delivery_instance(),
        "/deliveries/{id}",
        format!("/deliveries/{id}"),
    );
    match scheduler.client.send(&call, None).await {
        Ok(reply) => Reply::ok(reply),
        Err(error) => failure_reply(&error),
    }
}
