//! `weft`: one binary, four roles. See `weft --help`.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use weft_web::config::{Cli, Command};
use weft_web::server;

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", not(target_env = "msvc")))]
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

/// jemalloc, not the C library's allocator. Arrow allocates every buffer
/// 64-byte aligned, which glibc serves by carving an aligned block out of a
/// larger one: at full speed its `malloc` was 13 % of the server's CPU, and
/// with jemalloc the server handled 165,600–173,200 spans per CPU-second
/// against 147,200–150,400, with a peak RSS of 327–338 MiB against 438–579
/// (README, Performance).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc makes four arenas per core and a thread keeps to its arena, so
/// memory freed by one thread's work serves only that arena again: at a
/// steady 10,000 spans/s `weft serve` peaked at 94–96 MiB resident with the
/// default and 83 MiB with two arenas, for the same CPU. With the SQL count
/// of the ingest benchmark, one arena peaked at 89–92 MiB against 96–100
/// with two, for the same CPU at that rate (README, Performance). jemalloc reads its
/// settings only as a process starts, so set them and start again: `exec`
/// keeps the process id, arguments and the rest of the environment. Settings
/// already given in the variable are left as they are.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    // tikv-jemallocator's jemalloc reads its settings under this prefixed name.
    const VARIABLE: &str = "_RJEM_MALLOC_CONF";
    const SETTINGS: &str = "narenas:1";
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
    // `exec` returns only if it failed; then run on with jemalloc's defaults.
    let error = command.args(arguments).env(VARIABLE, SETTINGS).exec();
    eprintln!(
        "weft: could not restart with {VARIABLE}={SETTINGS} ({error}); running with jemalloc's default arenas"
    );
}
