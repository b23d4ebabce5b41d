//! Sends pre-built realistic OTLP requests over gRPC to a running `weft serve`
//! for a fixed time and reports what the server did with them:
//!
//! ```sh
//! weft-loadgen --endpoint http://127.0.0.1:4317 --server-pid $(pgrep -f 'weft serve') \
//!     --duration-secs 20 --concurrency 4 [--rate 10000] [--data-dir weft-data --http http://127.0.0.1:8686]
//! ```
//!
//! Reported: acknowledged spans per second, spans per CPU-second of the server
//! process, ack latency p50/p99, the server's peak RSS, and (with `--data-dir`
//! and `--http`) bytes per span on disk and how long until the last span is
//! visible to SQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio::sync::Mutex;
use tonic::Code;
use weft_benches::{SPANS_PER_REQUEST, realistic_request};

/// How long an exporter waits after a refusal before sending again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
struct Args {
    /// OTLP/gRPC endpoint of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// PID of the server, to read its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: u32,
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Concurrent exporters.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Target spans per second over all exporters; 0 sends as fast as acks come back.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Distinct pre-built requests to cycle through.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// The server's data directory, to measure bytes per span on disk.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's API, to count stored spans and time their visibility.
    #[arg(long)]
    http: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("reading /proc for pid {pid}: {source}")]
    Proc { pid: u32, source: std::io::Error },
    #[error("unexpected /proc format for pid {0}")]
    ProcFormat(u32),
    #[error("gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("export refused: {0}")]
    Export(#[from] tonic::Status),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> Result<f64, LoadError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| LoadError::Proc { pid, source })?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or(LoadError::ProcFormat(pid))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or(LoadError::ProcFormat(pid))
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn proc_status_kib(pid: u32, field: &str) -> Result<u64, LoadError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|source| LoadError::Proc { pid, source })?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or(LoadError::ProcFormat(pid))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// Stamps `stamp` into the ids, keeping spans of one trace together.
/// Makes a copy of a pre-built request new spans: fresh ids (`stamp`), and
/// times moved on by `elapsed_ns` since the requests were built, as an
/// exporter sends spans that just ended. Times repeated from request to
/// request would flatter the store's size (a dictionary would hold them).
fn make_spans_new(request: &mut ExportTraceServiceRequest, stamp: u64, elapsed_ns: u64) {
    let stamp = stamp.to_le_bytes();
    for span in request
        .resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
    {
        for id in [
            &mut span.trace_id,
            &mut span.span_id,
            &mut span.parent_span_id,
        ] {
            for (byte, s) in id.iter_mut().zip(stamp) {
                *byte ^= s;
            }
        }
        span.start_time_unix_nano += elapsed_ns;
        span.end_time_unix_nano += elapsed_ns;
        for event in &mut span.events {
            event.time_unix_nano += elapsed_ns;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn parquet_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                parquet_bytes(&path)
            } else if path.extension().is_some_and(|x| x == "parquet") {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

async fn count_spans(http: &str) -> Result<i64, LoadError> {
    let body = serde_json::json!({"sql": "SELECT count(*) FROM spans"}).to_string();
    // Only before and after the load, so a blocking call is fine here.
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            &format!("{http}/api/sql"),
        ])
        .output()
        .map_err(|e| LoadError::Http(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| LoadError::Http(e.to_string()))?;
    value["rows"][0][0]
        .as_i64()
        .ok_or_else(|| LoadError::Http(value.to_string()))
}

#[tokio::main]
async fn main() -> Result<(), LoadError> {
    let args = Args::parse();
    let now = now_nanos();
    let requests: Arc<Vec<ExportTraceServiceRequest>> = Arc::new(
        (0..args.requests)
            .map(|i| realistic_request(i as u64 + now, now))
            .collect(),
    );
    let built = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let before_count = match &args.http {
        Some(http) => count_spans(http).await?,
        None => 0,
    };
    let cpu_before = cpu_seconds(args.server_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    // Each exporter sends one request per interval when a rate is set.
    let interval = (args.rate > 0).then(|| {
        Duration::from_secs_f64(
            SPANS_PER_REQUEST as f64 * args.concurrency as f64 / args.rate as f64,
        )
    });
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let (requests, latencies, endpoint) = (
            Arc::clone(&requests),
            Arc::clone(&latencies),
            args.endpoint.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint)
                .await?
                .max_decoding_message_size(64 << 20);
            let mut sent = 0usize;
            let mut refused = 0usize;
            let mut local = Vec::new();
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let request = || {
                    let mut request = requests[(worker + sent * 7) % requests.len()].clone();
                    // Every span sent is a new span: fresh trace and span ids, so
                    // the store's size and compression are those of real traffic.
                    make_spans_new(
                        &mut request,
                        ((worker as u64) << 40) | sent as u64,
                        built.elapsed().as_nanos() as u64,
                    );
                    request
                };
                let t = Instant::now();
                // A saturated server refuses with a retryable status; an
                // exporter backs off and sends the same request again, and
                // its latency runs until the ack.
                while let Err(status) = client.export(request()).await {
                    match status.code() {
                        Code::Unavailable | Code::ResourceExhausted => {
                            refused += 1;
                            tokio::time::sleep(RETRY_BACKOFF).await;
                        }
                        _ => return Err(status.into()),
                    }
                }
                local.push(t.elapsed());
                sent += 1;
            }
            latencies.lock().await.extend(local);
            Ok::<(usize, usize), LoadError>((sent, refused))
        }));
    }
    let (mut sent_requests, mut refused_requests) = (0, 0);
    for task in tasks {
        let (sent, refused) = task.await??;
        sent_requests += sent;
        refused_requests += refused;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let acked_at = Instant::now();
    let cpu = cpu_seconds(args.server_pid)? - cpu_before;
    let spans = (sent_requests * SPANS_PER_REQUEST) as f64;
    let mut latencies = latencies.lock().await.clone();
    latencies.sort_unstable();
    println!("requests acknowledged     {sent_requests}");
    println!("refusals (then retried)   {refused_requests}");
    println!("spans acknowledged        {spans}");
    println!("spans per second          {:.0}", spans / elapsed);
    println!(
        "server CPU seconds        {cpu:.2} ({:.1}% of one core)",
        100.0 * cpu / elapsed
    );
    println!("spans per CPU-second      {:.0}", spans / cpu.max(1e-9));
    println!(
        "ack latency p50           {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0
    );
    println!(
        "ack latency p99           {:.2} ms",
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "server RSS now / peak     {} / {} MiB",
        proc_status_kib(args.server_pid, "VmRSS:")? / 1024,
        proc_status_kib(args.server_pid, "VmHWM:")? / 1024
    );
    if let Some(http) = &args.http {
        let expected = before_count + spans as i64;
        loop {
            let count = count_spans(http).await?;
            if count >= expected {
                println!(
                    "all spans visible to SQL  {:.2} s after the last ack",
                    acked_at.elapsed().as_secs_f64()
                );
                break;
            }
            if acked_at.elapsed() > Duration::from_secs(60) {
                println!("only {count} of {expected} spans visible after 60 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(dir) = &args.data_dir {
            let bytes = parquet_bytes(&dir.join("spans"));
            let stored = count_spans(http).await?;
            println!(
                "bytes per span on disk    {:.1} ({bytes} bytes, {stored} spans)",
                bytes as f64 / stored.max(1) as f64
            );
        }
    }
    Ok(())
}
