//! Drone Delivery: six services that call each other over HTTP and through a
//! queue, instrumented with the OpenTelemetry SDK, exporting OTLP/gRPC.
//!
//! ```text
//! traffic ─▶ delivery-scheduler ─┬▶ accounts                      (retries, compensation: refund)
//!                                ├▶ package v1 | v2               (two versions side by side)
//!                                ├▶ delivery #1 | #2 | #3 (slow)  (round-robin load balancing)
//!                                └▶ drone-management              (circuit breaker)
//! drone-management ─ drone-events ─▶ delivery (child spans), delivery-history (linked traces)
//! delivery ─ delivery-events ─▶ delivery-history (linked traces)
//! ```
//!
//! Everything runs in one process on loopback ports, so `weft serve --demo`
//! can start it beside Weft. `Demo::start` returns once every service listens.

mod breaker;
mod client;
mod grpc;
mod queue;
mod services;
mod telemetry;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

pub use breaker::{BreakerState, CircuitBreaker};
pub use services::Addresses;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("could not build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("could not listen on a loopback port: {0}")]
    Bind(std::io::Error),
}

/// Rates and latencies of the simulated system. The defaults make every
/// pattern appear within 30 seconds at the default request rate.
#[derive(Clone, Debug)]
pub struct Config {
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// gRPC metadata every export carries, e.g. `authorization: Bearer …`.
    /// (Run alone, the sample also reads `OTEL_EXPORTER_OTLP_HEADERS`.)
    pub otlp_headers: Vec<(String, String)>,
    /// Requests per second sent to delivery-scheduler's public API.
    pub rate_per_sec: f64,
    pub seed: u64,
    /// How often each service's exporter sends its buffered spans.
    pub export_interval: Duration,
    /// accounts answers 503 this often (retried by the scheduler).
    pub accounts_unavailable: f64,
    /// accounts stalls past the caller's timeout this often (retried).
    pub accounts_stall: f64,
    /// Share of package calls that go to package v2.
    pub package_v2_share: f64,
    pub package_v1_errors: f64,
    pub package_v2_errors: f64,
    pub package_v2_extra_latency: Duration,
    /// Extra latency of delivery instance 3, the slow one.
    pub slow_delivery_extra_latency: Duration,
    /// drone-management finds no drone this often: a non-transient failure
    /// that makes the scheduler compensate the steps already done.
    pub no_drone_available: f64,
    /// drone-management is down (503) for `drone_outage` every `drone_outage_every`,
    /// the first time `drone_outage_every / 4` after start: this opens the breaker.
    pub drone_outage_every: Duration,
    pub drone_outage: Duration,
    /// Consecutive failures that open the breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_cool_down: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            otlp_endpoint: "http://127.0.0.1:4317".to_owned(),
            otlp_headers: Vec::new(),
            rate_per_sec: 5.0,
            seed: 7,
            export_interval: Duration::from_millis(500),
            accounts_unavailable: 0.08,
            accounts_stall: 0.03,
            package_v2_share: 0.3,
            package_v1_errors: 0.01,
            package_v2_errors: 0.08,
            package_v2_extra_latency: Duration::from_millis(35),
            slow_delivery_extra_latency: Duration::from_millis(60),
            no_drone_available: 0.08,
            drone_outage_every: Duration::from_secs(20),
            drone_outage: Duration::from_secs(4),
            breaker_failures: 3,
            breaker_cool_down: Duration::from_millis(1500),
        }
    }
}

/// The running sample; `shutdown` stops the traffic and flushes every span.
pub struct Demo {
    pub addresses: Addresses,
    telemetry: Arc<telemetry::Telemetry>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Demo {
    /// Starts the six services and the traffic loop. Must run inside a Tokio runtime.
    pub async fn start(config: Config) -> Result<Self, SampleError> {
        let telemetry = Arc::new(telemetry::Telemetry::new(
            config.otlp_endpoint.clone(),
            &config.otlp_headers,
            config.export_interval,
        )?);
        let system = services::start(&config, &telemetry).await?;
        let mut tasks = system.tasks;
        tasks.push(tokio::spawn(traffic::drive(
            config,
            system.addresses.clone(),
        )));
        tracing::info!(scheduler = %system.addresses.scheduler, "drone-delivery sample running");
        Ok(Self {
            addresses: system.addresses,
            telemetry,
            tasks,
        })
    }

    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        let telemetry = self.telemetry;
        // Flushing blocks on the exporters; keep it off the async workers.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
}
