//! `weft`: one binary, four roles. See `weft --help`.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use weft_web::config::{Cli, Command};
use weft_web::server;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One TLS provider for the whole process (ring), whatever else links rustls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // With no command, run `weft serve` (flags then come from WEFT_* variables).
    let command = cli
        .command
        .unwrap_or_else(|| match Cli::parse_from(["weft", "serve"]).command {
            Some(command) => command,
            None => unreachable_serve(),
        });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weft: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Serve(args) => server::serve(args).await,
            Command::Collector(args) => server::collector(args).await,
            Command::Query(args) => server::query(args).await,
            Command::Sql(args) => server::sql(args).await.map(|text| print!("{text}")),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weft: {error}");
            ExitCode::FAILURE
        }
    }
}

fn unreachable_serve() -> Command {
    eprintln!("weft: `serve` failed to parse");
    std::process::exit(2)
}
