//! The query benchmark: a store of 10 million spans (about 1.25 million traces
//! over 20 services, one day), written by the collector's own converter and
//! writer, and the median latency of the questions people ask of it.
//!
//! ```sh
//! weft-querybench generate --data-dir DIR [--spans 10000000]
//! weft-querybench run --data-dir DIR [--runs 11] [--params params.json] [--results weft.json]
//! ```
//!
//! `run` writes the exact parameters it used to `--params`, so
//! `benches/query_duckdb.py` asks DuckDB the same questions over the same files
//! (benches/run-query.sh does both and prints the ratios).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use weft_benches::{SPANS_PER_REQUEST, realistic_request};
use weft_collector::{Store, Table};
use weft_query::{QueryEngine, QueryLimits, RequestFilter, TraceSearch};

/// 2026-11-20T00:00:00Z: a fixed day, so every run builds the same store.
const DAY_START_NS: i64 = 1_795_132_800_000_000_000;
const DAY_NS: i64 = 86_400_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes the benchmark store (one sorted, compacted file per hour).
    Generate {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        spans: usize,
        /// Resume an interrupted run: hours before this one are already written.
        #[arg(long, default_value_t = 0)]
        from_hour: usize,
    },
    /// Times each question and prints the medians.
    Run {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 11)]
        runs: usize,
        /// Where to write the questions' parameters (for the DuckDB side).
        #[arg(long)]
        params: Option<PathBuf>,
        /// Where to write the medians as JSON.
        #[arg(long)]
        results: Option<PathBuf>,
        /// Time only this question (e.g. `insights_hour`).
        #[arg(long)]
        only: Option<String>,
        /// Answer from raw spans only: remove the store's rollups first (the baseline).
        #[arg(long)]
        no_rollups: bool,
    },
}

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> BenchResult {
    // `WEFT_LOG=weft_query=debug` shows where a question spends its time.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().command {
        Command::Generate {
            data_dir,
            spans,
            from_hour,
        } => generate(data_dir, spans, from_hour).await,
        Command::Run {
            data_dir,
            runs,
            params,
            results,
            only,
            no_rollups,
        } => run(data_dir, runs, params, results, only, no_rollups).await,
    }
}

async fn generate(data_dir: PathBuf, spans: usize, from_hour: usize) -> BenchResult {
    let store = Store::local(&data_dir)?;
    let requests = spans.div_ceil(SPANS_PER_REQUEST);
    let per_hour = requests.div_ceil(24);
    let started = Instant::now();
    let mut written = 0usize;
    let mut bytes = 0u64;
    for hour in from_hour..24 {
        let first = hour * per_hour;
        let last = ((hour + 1) * per_hour).min(requests);
        if first >= last {
            break;
        }
        let mut batches = Vec::with_capacity(last - first);
        for i in first..last {
            // Requests spread evenly over the hour; each holds traces of the 5 s before it.
            let offset = (i - first) as i64 * (HOUR_NS - 10_000_000_000) / per_hour as i64;
            let now = DAY_START_NS + hour as i64 * HOUR_NS + 6_000_000_000 + offset;
            batches.push(weft_collector::convert::spans::to_record_batch(
                &realistic_request(i as u64, now as u64),
            )?);
        }
        written += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        for (dir, hour_batches) in weft_collector::split_by_hour(Table::Spans, &batches)? {
            // Written as flushes and merges write: sorted, attribute maps by
            // the collector's own page writer.
            let encoded =
                weft_collector::sorted::encode_batches_sorted(Table::Spans, &hour_batches)?;
            let path = format!(
                "{dir}/{}",
                weft_schema::layout::compacted_file_name(chrono::Utc::now(), hour as u32)
            );
            bytes += store.write_encoded(&path, encoded).await?;
        }
        eprintln!(
            "hour {hour:2}: {written} spans written, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "{written} spans in {:.0} s, {:.1} bytes per span, in {}",
        started.elapsed().as_secs_f64(),
        bytes as f64 / written.max(1) as f64,
        data_dir.display()
    );
    Ok(())
}

/// The questions, with the parameters both engines use.
struct Questions {
    trace_id: String,
    service: String,
    operation: String,
    min_duration_ns: i64,
    attribute: (String, String),
    last_hour: (i64, i64),
    day: (i64, i64),
}

impl Questions {
    fn to_json(&self) -> Value {
        json!({
            "trace_id": self.trace_id,
            "service": self.service,
            "operation": self.operation,
            "min_duration_ns": self.min_duration_ns,
            "attribute_key": self.attribute.0,
            "attribute_value": self.attribute.1,
            "last_hour_start_ns": self.last_hour.0,
            "last_hour_end_ns": self.last_hour.1,
            "day_start_ns": self.day.0,
            "day_end_ns": self.day.1,
            "red_step_ns": 1_800_000_000_000_i64,
            "histogram_bounds_ns": weft_query::histogram_bounds(),
        })
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

async fn time<T, F, Fut>(runs: usize, mut question: F) -> BenchResult<(f64, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = BenchResult<T>>,
{
    // One unmeasured run warms the file metadata cache, as a running server's would be.
    let mut last = question().await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        last = question().await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(samples), last))
}

async fn run(
    data_dir: PathBuf,
    runs: usize,
    params: Option<PathBuf>,
    results: Option<PathBuf>,
    only: Option<String>,
    no_rollups: bool,
) -> BenchResult {
    let store = Store::local(&data_dir)?;
    let engine = Arc::new(QueryEngine::new(
        store.objects(),
        None,
        QueryLimits {
            max_rows: 1_000_000,
            ..QueryLimits::default()
        },
    )?);
    // As `weft serve` would have done in the background by now.
    if no_rollups {
        let rollups = data_dir.join(weft_query::ROLLUPS_DIR);
        if rollups.exists() {
            std::fs::remove_dir_all(&rollups)?;
        }
        eprintln!("rollups removed: every answer comes from raw spans");
    } else {
        let started = std::time::Instant::now();
        let report = engine.maintain_rollups(i64::MAX).await?;
        eprintln!(
            "rollups: {} built in {:.1} s ({} were up to date)",
            report.built,
            started.elapsed().as_secs_f64(),
            store
                .list(weft_query::ROLLUPS_DIR)
                .await?
                .len()
                .saturating_sub(report.built)
        );
    }
    // A trace from the middle of the day, found the way a user would: by SQL.
    let noon = DAY_START_NS + 12 * HOUR_NS;
    let picked = engine
        .sql(&format!(
            "SELECT trace_id FROM spans WHERE start_time >= to_timestamp_nanos({noon}) AND start_time < to_timestamp_nanos({}) LIMIT 1",
            noon + 60_000_000_000
        ))
        .await?;
    let trace_id = picked
        .rows()
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or("empty store")?;
    let questions = Questions {
        trace_id,
        service: "frontend".into(),
        operation: "GET /api/cart".into(),
        min_duration_ns: 40_000_000,
        attribute: ("app.user_id".into(), "user-42".into()),
        last_hour: (DAY_START_NS + DAY_NS - HOUR_NS, DAY_START_NS + DAY_NS),
        day: (DAY_START_NS, DAY_START_NS + DAY_NS),
    };
    if let Some(path) = &params {
        std::fs::write(path, serde_json::to_string_pretty(&questions.to_json())?)?;
    }
    let q = &questions;
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut figures: Vec<(&str, f64, String)> = Vec::new();

    if wanted("trace_by_id") {
        let (ms, spans) = time(runs, || async { Ok(engine.trace(&q.trace_id).await?) }).await?;
        figures.push(("trace_by_id", ms, format!("{} spans", spans.len())));
    }

    if wanted("search_service_min_duration") {
        let search = TraceSearch {
            service: q.service.clone(),
            min_duration_ns: Some(q.min_duration_ns),
            start_ns: q.last_hour.0,
            end_ns: q.last_hour.1,
            limit: 20,
            ..Default::default()
        };
        let (ms, traces) =
            time(runs, || async { Ok(engine.search_traces(&search).await?) }).await?;
        figures.push((
            "search_service_min_duration",
            ms,
            format!("{} traces", traces.len()),
        ));
    }

    if wanted("search_attribute") {
        let by_attribute = TraceSearch {
            service: q.service.clone(),
            tags: vec![q.attribute.clone()],
            start_ns: q.last_hour.0,
            end_ns: q.last_hour.1,
            limit: 20,
            ..Default::default()
        };
        let (ms, traces) = time(runs, || async {
            Ok(engine.search_traces(&by_attribute).await?)
        })
        .await?;
        figures.push(("search_attribute", ms, format!("{} traces", traces.len())));
    }

    if wanted("service_map_day") {
        let (ms, edges) = time(runs, || async {
            Ok(engine.service_map(q.day.0, q.day.1).await?)
        })
        .await?;
        let calls: u64 = edges.iter().map(|e| e.stats.count).sum();
        figures.push((
            "service_map_day",
            ms,
            format!("{} edges, {calls} calls", edges.len()),
        ));
    }

    let red = RequestFilter {
        service: Some(q.service.clone()),
        operation: None,
        start_ns: q.day.0,
        end_ns: q.day.1,
    };
    if wanted("red_service_day") {
        let (ms, buckets) = time(runs, || async {
            Ok(engine.red_series(&red, 1_800_000_000_000).await?)
        })
        .await?;
        let requests: u64 = buckets.iter().map(|b| b.stats.count).sum();
        figures.push((
            "red_service_day",
            ms,
            format!("{} buckets, {requests} requests", buckets.len()),
        ));
    }

    if wanted("histogram_day") {
        let histogram = RequestFilter {
            operation: Some(q.operation.clone()),
            ..red.clone()
        };
        let (ms, result) = time(runs, || async { Ok(engine.histogram(&histogram).await?) }).await?;
        figures.push((
            "histogram_day",
            ms,
            format!(
                "{} buckets, {} requests",
                result.buckets.len(),
                result.stats.count
            ),
        ));
    }

    if wanted("insights_hour") {
        let (ms, insights) = time(runs, || async {
            Ok(engine.insights(q.last_hour.0, q.last_hour.1).await?)
        })
        .await?;
        figures.push((
            "insights_hour",
            ms,
            format!(
                "{} edges, {} retried routes, {} instance groups, {} version groups",
                insights.edges.len(),
                insights.retries.len(),
                insights.instances.len(),
                insights.versions.len()
            ),
        ));
    }

    println!("{:<30} {:>12}  result", "question", "median ms");
    for (name, ms, note) in &figures {
        println!("{name:<30} {ms:>12.1}  {note}");
    }
    if let Some(path) = results {
        let object: serde_json::Map<String, Value> = figures
            .iter()
            .map(|(name, ms, note)| (name.to_string(), json!({"median_ms": ms, "result": note})))
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&object)?)?;
    }
    Ok(())
}
