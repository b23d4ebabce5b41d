//! `drone-delivery`: runs the Drone Delivery sample against any OTLP/gRPC
//! endpoint (`cargo run --release -p samples -- --otlp-endpoint URL`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use samples::{Config, Demo};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "drone-delivery", about = "The Drone Delivery sample: six instrumented services and their customers")]
struct Args {
    /// OTLP/gRPC endpoint the services export their spans to.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", default_value = "http://127.0.0.1:4317")]
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("drone-delivery: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let config = Config { otlp_endpoint: args.otlp_endpoint, rate_per_sec: args.rate, seed: args.seed, ..Config::default() };
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
