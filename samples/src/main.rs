//! `drone-delivery`: runs the Drone Delivery sample against any OTLP/gRPC
//! endpoint (`cargo run --release -p samples -- --otlp-endpoint URL`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use samples::{Config, Demo};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "drone-delivery",
    about = "The Drone Delivery sample: six instrumented services and their customers"
)]
struct Args {
    /// OTLP/gRPC endpoint the services export their spans to.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        default_value = "http://127.0.0.1:4317"
    )]
    otlp_endpoint: String,
    /// Requests per second to the scheduler's public API.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Seed of every random choice (failures, latencies, ids).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Share of accounts calls answered 503 (retried).
    #[arg(long, default_value_t = Config::default().accounts_unavailable)]
    accounts_unavailable: f64,
    /// Share of accounts calls that stall past the caller's timeout (retried).
    #[arg(long, default_value_t = Config::default().accounts_stall)]
    accounts_stall: f64,
    /// Share of package calls sent to version 2.0.0.
    #[arg(long, default_value_t = Config::default().package_v2_share)]
    package_v2_share: f64,
    /// Share of package 2.0.0's `POST /packages` that fail.
    #[arg(long, default_value_t = Config::default().package_v2_errors)]
    package_v2_errors: f64,
    /// Extra latency of package 2.0.0, in milliseconds.
    #[arg(long, default_value_t = 35)]
    package_v2_extra_ms: u64,
    /// Extra latency of the slow delivery instance (delivery-3), in milliseconds.
    #[arg(long, default_value_t = 60)]
    slow_delivery_extra_ms: u64,
    /// Share of drone assignments that find no drone (the transaction is compensated).
    #[arg(long, default_value_t = Config::default().no_drone_available)]
    no_drone_available: f64,
    /// drone-management is down this many seconds of every `--drone-outage-every-secs` (0: never).
    #[arg(long, default_value_t = 4)]
    drone_outage_secs: u64,
    #[arg(long, default_value_t = 20)]
    drone_outage_every_secs: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("drone-delivery: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let config = Config {
            otlp_endpoint: args.otlp_endpoint,
            rate_per_sec: args.rate,
            seed: args.seed,
            accounts_unavailable: args.accounts_unavailable,
            accounts_stall: args.accounts_stall,
            package_v2_share: args.package_v2_share,
            package_v2_errors: args.package_v2_errors,
            package_v2_extra_latency: Duration::from_millis(args.package_v2_extra_ms),
            slow_delivery_extra_latency: Duration::from_millis(args.slow_delivery_extra_ms),
            no_drone_available: args.no_drone_available,
            drone_outage: Duration::from_secs(args.drone_outage_secs),
            drone_outage_every: Duration::from_secs(args.drone_outage_every_secs),
            ..Config::default()
        };
        let demo = match Demo::start(config).await {
            Ok(demo) => demo,
            Err(error) => {
                eprintln!("drone-delivery: {error}");
                return ExitCode::FAILURE;
            }
        };
        match args.duration_secs {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        demo.shutdown().await;
        ExitCode::SUCCESS
    })
}
