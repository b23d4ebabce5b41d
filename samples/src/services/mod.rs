//! The six services, each an axum server on its own loopback port with its
//! own tracer (so each has its own `service.name`, version and instance id).

mod backends;
mod scheduler;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::telemetry::{Identity, ServiceTracer, Telemetry, server_span};
use crate::{Config, SampleError};

pub const SCHEDULER: &str = "delivery-scheduler";
pub const ACCOUNTS: &str = "accounts";
pub const DELIVERY: &str = "delivery";
pub const PACKAGE: &str = "package";
pub const DRONE_MANAGEMENT: &str = "drone-management";
pub const DELIVERY_HISTORY: &str = "delivery-history";

/// Base URLs (`http://127.0.0.1:port`) of every service instance.
#[derive(Clone, Debug)]
pub struct Addresses {
    pub scheduler: String,
    pub accounts: String,
    pub package_v1: String,
    pub package_v2: String,
    pub delivery: Vec<String>,
    pub drone_management: String,
    pub delivery_history: String,
}

pub struct System {
    pub addresses: Addresses,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Randomness and the clock shared by the simulated services.
pub struct Simulation {
    pub config: Config,
    pub started: Instant,
    rng: Mutex<fastrand::Rng>,
}

impl Simulation {
    pub fn new(config: Config) -> Self {
        let rng = fastrand::Rng::with_seed(config.seed);
        Self {
            config,
            started: Instant::now(),
            rng: Mutex::new(rng),
        }
    }

    pub fn chance(&self, probability: f64) -> bool {
        self.rng
            .lock()
            .map(|mut rng| rng.f64() < probability)
            .unwrap_or(false)
    }

    /// A latency of `base_ms` plus up to `spread_ms` more.
    pub fn latency(&self, base_ms: u64, spread_ms: u64) -> Duration {
        let extra = self
            .rng
            .lock()
            .map(|mut rng| rng.u64(0..=spread_ms))
            .unwrap_or(0);
        Duration::from_millis(base_ms + extra)
    }

    pub fn id(&self, prefix: &str) -> String {
        let value = self.rng.lock().map(|mut rng| rng.u64(..)).unwrap_or(0);
        format!("{prefix}-{value:016x}")
    }

    /// Whether drone-management is in one of its scheduled outages.
    pub fn drone_outage(&self) -> bool {
        let every = self.config.drone_outage_every;
        let first = every / 4;
        let elapsed = self.started.elapsed();
        if elapsed < first || every.is_zero() {
            return false;
        }
        let phase = (elapsed - first).as_nanos() % every.as_nanos();
        phase < self.config.drone_outage.as_nanos()
    }
}

/// A JSON reply with a status; errors carry `{"error": message}`.
pub struct Reply(pub StatusCode, pub Json);

impl Reply {
    pub fn ok(body: Json) -> Self {
        Self(StatusCode::OK, body)
    }

    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, json!({ "error": message.into() }))
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

/// Binds a loopback port and serves `router` behind the server-span middleware.
async fn serve(
    router: Router,
    tracer: ServiceTracer,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<String, SampleError> {
    let router = router.layer(axum::middleware::from_fn_with_state(
        Arc::new(tracer.clone()),
        server_span,
    ));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(SampleError::Bind)?;
    let addr = listener.local_addr().map_err(SampleError::Bind)?;
    let name = tracer.identity.instance.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, instance = %name, "sample service stopped");
        }
    }));
    Ok(format!("http://{addr}"))
}

pub async fn start(config: &Config, telemetry: &Telemetry) -> Result<System, SampleError> {
    let simulation = Arc::new(Simulation::new(config.clone()));
    let queue = Arc::new(crate::queue::Queue::default());
    let mut tasks = Vec::new();
    let tracer = |service: &'static str, version: &'static str, instance: &str| {
        telemetry.tracer(&Identity {
            service,
            version,
            instance: instance.to_owned(),
        })
    };

    let history = tracer(DELIVERY_HISTORY, "1.0.0", "delivery-history-1")?;
    let delivery_history = serve(
        backends::history(history.clone(), &simulation, &queue, &mut tasks),
        history,
        &mut tasks,
    )
    .await?;

    let accounts_tracer = tracer(ACCOUNTS, "3.2.1", "accounts-1")?;
    let accounts = serve(backends::accounts(&simulation), accounts_tracer, &mut tasks).await?;

    let v1 = backends::PackageVersion::V1;
    let package_v1_tracer = tracer(PACKAGE, v1.as_str(), "package-v1-1")?;
    let package_v1 = serve(
        backends::package(v1, &simulation, package_v1_tracer.clone()),
        package_v1_tracer,
        &mut tasks,
    )
    .await?;
    let v2 = backends::PackageVersion::V2;
    let package_v2_tracer = tracer(PACKAGE, v2.as_str(), "package-v2-1")?;
    let package_v2 = serve(
        backends::package(v2, &simulation, package_v2_tracer.clone()),
        package_v2_tracer,
        &mut tasks,
    )
    .await?;

    let mut delivery = Vec::new();
    // One subscription shared by the three instances: each drone event is handled once.
    let drone_events = queue.subscribe(crate::queue::DRONE_EVENTS);
    for number in 1..=3 {
        let instance = format!("delivery-{number}");
        let delivery_tracer = tracer(DELIVERY, "1.7.0", &instance)?;
        // Instance 3 runs on a worse host: every request takes longer.
        let extra = if number == 3 {
            config.slow_delivery_extra_latency
        } else {
            Duration::ZERO
        };
        let router = backends::delivery(
            delivery_tracer.clone(),
            extra,
            &simulation,
            &queue,
            &drone_events,
            &mut tasks,
        );
        delivery.push(serve(router, delivery_tracer, &mut tasks).await?);
    }

    let drone_tracer = tracer(DRONE_MANAGEMENT, "0.9.4", "drone-management-1")?;
    let drone_management = serve(
        backends::drone_management(drone_tracer.clone(), &simulation, &queue),
        drone_tracer,
        &mut tasks,
    )
    .await?;

    let mut addresses = Addresses {
        scheduler: String::new(),
        accounts,
        package_v1,
        package_v2,
        delivery,
        drone_management,
        delivery_history,
    };
    let scheduler_tracer = tracer(SCHEDULER, "2.4.0", "delivery-scheduler-1")?;
    let router = scheduler::router(scheduler_tracer.clone(), &simulation, addresses.clone());
    addresses.scheduler = serve(router, scheduler_tracer, &mut tasks).await?;
    Ok(System { addresses, tasks })
}
