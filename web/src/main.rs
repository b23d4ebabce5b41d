//! `weft`: one binary, four roles. See `weft --help`.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use weft_web::config::{Cli, Command};
use weft_web::server;

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    limit_malloc_arenas();
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

/// glibc gives new threads their own malloc arenas, up to eight per core, and
/// memory freed in one arena serves only that arena again: at a steady 10,000
/// spans/s `weft serve` held 120–167 MiB resident for a heap that peaked at
/// 36 MB, and 86–88 MiB with two arenas, for the same CPU. glibc reads the
/// limit only as a process starts, so set it and start again: `exec` keeps
/// the process id, arguments and the rest of the environment. A
/// `MALLOC_ARENA_MAX` already set is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    const VARIABLE: &str = "MALLOC_ARENA_MAX";
    if std::env::var_os(VARIABLE).is_some() {
        return;
    }
    let Ok(executable) = std::env::current_exe() else {
        return;
    };
    let mut arguments = std::env::args_os();
    let mut command = std::process::Command::new(executable);
    if let Some(name) = arguments.next() {
        command.arg0(name);
    }
    // `exec` returns only if it failed; then run on with glibc's defaults.
    let error = command.args(arguments).env(VARIABLE, "2").exec();
    eprintln!(
        "weft: could not restart with {VARIABLE}=2 ({error}); running with glibc's default arenas"
    );
}
