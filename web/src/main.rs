//! `weft`: one binary, four roles. See `weft --help`.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use weft_web::config::{Cli, Command};
use weft_web::server;

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", not(target_env = "msvc")))]
    set_allocator_settings();
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

/// Allocator settings the process restarts with at start, each unless the
/// variable is already set (then the user's value is kept):
///
/// - jemalloc makes four arenas per core and a thread keeps to its arena, so
///   memory freed by one thread's work serves only that arena again: at a
///   steady 10,000 spans/s `weft serve` peaked at 94–96 MiB resident with the
///   default and 83 MiB with two arenas, for the same CPU. With the SQL count
///   of the ingest benchmark, one arena peaked at 89–92 MiB against 96–100
///   with two, for the same CPU at that rate (README, Performance).
/// - C code allocates with glibc's `malloc`, not jemalloc: zstd makes a
///   compression and a decompression context of a few hundred KiB for each
///   column of each Parquet file. glibc served each from fresh memory (its
///   own `mmap`, or heap it had given back), so every flush faulted it in
///   and zeroed it again: half of the server's page faults at 10,000
///   spans/s. Keeping that memory (no `mmap` under 32 MiB, no trimming under
///   128 MiB) halved the faults and took 0.976 times the CPU, with a peak RSS
///   1 MiB higher (README, Performance, session 26).
///
/// Both allocators read their settings only as a process starts, so set them
/// and start again: `exec` keeps the process id, arguments and the rest of
/// the environment.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
const ALLOCATOR_SETTINGS: [(&str, &str); 2] = [
    // tikv-jemallocator's jemalloc reads its settings under this prefixed name.
    ("_RJEM_MALLOC_CONF", "narenas:1"),
    (
        "GLIBC_TUNABLES",
        "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728",
    ),
];

#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
fn set_allocator_settings() {
    use std::os::unix::process::CommandExt;
    let missing: Vec<(&str, &str)> = ALLOCATOR_SETTINGS
        .into_iter()
        .filter(|(variable, _)| std::env::var_os(variable).is_none())
        .collect();
    if missing.is_empty() {
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
    // `exec` returns only if it failed; then run on with the allocators' defaults.
    let error = command.args(arguments).envs(missing.iter().copied()).exec();
    eprintln!(
        "weft: could not restart with {missing:?} ({error}); running with the allocators' defaults"
    );
}
