//! The CPU cost per span of each ingest stage, on one core, without a server:
//! prost decoding (the floor), conversion of protobuf bytes to Arrow, a flush
//! file's Parquet encoding, reading it back, and a merge of flush files (which
//! copies row groups of at least 8,192 spans and rewrites smaller ones). For
//! comparison, it also converts each flush's requests at once, in storage
//! order, and encodes that batch without a gather: the road not taken.
//! Prints the median of `--runs` runs in nanoseconds per span.
//!
//! `cargo run --release -p weft-benches --bin weft-stagecost`
//!
//! Unlike the criterion benches (`cargo bench`), this builds with the
//! workspace's release dependencies as they are, so it takes a minute, not a
//! cold rebuild.

use std::time::Instant;

use clap::Parser;
use datafusion::parquet::arrow::ArrowWriter;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use weft_benches::{SPANS_PER_REQUEST, realistic_request};
use weft_collector::convert::spans::{protobuf_to_record_batch, protobufs_to_record_batch};
use weft_collector::sorted::{
    COPY_MIN_ROWS, encode_batches_sorted, merge_in_memory, sort_for_storage,
};
use weft_collector::store::{
    ROWS_PER_GROUP, Table, decode_parquet, encode_parquet, writer_properties,
};

/// The allocator `weft` runs with (`web/src/main.rs`), so that the stages
/// are timed as the server runs them: under glibc's allocator a flush file's
/// encoding took 2,142–2,202 ns per span against 2,303–2,383 under jemalloc,
/// and prost decoding 1,883–1,890 against 1,405–1,428 (README, Performance,
/// session 20).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Args {
    /// Requests of 512 spans in one flush file (64: one second at 32,768 spans/s).
    #[arg(long, default_value_t = 64)]
    requests_per_flush: u64,
    /// Flush files in one merge (compaction's `min_files`).
    #[arg(long, default_value_t = 8)]
    files_per_merge: usize,
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Also time each column's share of a flush file's encoding.
    #[arg(long)]
    per_column: bool,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args = Args::parse();
    let now_ns = 1_800_000_000_000_000_000;
    let requests: Vec<Vec<u8>> = (0..args.requests_per_flush * args.files_per_merge as u64)
        .map(|seed| realistic_request(seed, now_ns).encode_to_vec())
        .collect();
    let spans = requests.len() * SPANS_PER_REQUEST;
    let per_flush = args.requests_per_flush as usize;

    let mut stages: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut record = |name: &'static str, nanos: f64, spans: usize| {
        let per_span = nanos / spans as f64;
        match stages.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(per_span),
            None => stages.push((name, vec![per_span])),
        }
    };
    let buffered = buffered_bytes(&requests)?;
    let mut flush_bytes = 0;
    let mut merged_bytes = 0;
    for _ in 0..args.runs {
        let started = Instant::now();
        for request in &requests {
            ExportTraceServiceRequest::decode(request.as_slice())?;
        }
        record("prost decode", elapsed_ns(started), spans);

        let started = Instant::now();
        let batches = requests
            .iter()
            .map(|r| protobuf_to_record_batch(r))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        record("convert to Arrow", elapsed_ns(started), spans);

        let started = Instant::now();
        let files = batches
            .chunks(per_flush)
            .map(|flush| encode_batches_sorted(Table::Spans, flush))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        record("flush file encode", elapsed_ns(started), spans);
        flush_bytes = files.iter().map(|f| f.len()).sum::<usize>();

        // The same flushes converted a flush's requests at a time, already in
        // storage order, and encoded without gathering: what converting at
        // flush time instead of per request would cost.
        let started = Instant::now();
        let flush_batches = requests
            .chunks(per_flush)
            .map(|flush| {
                let flush: Vec<&[u8]> = flush.iter().map(Vec::as_slice).collect();
                protobufs_to_record_batch(&flush)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        record("convert a flush at once", elapsed_ns(started), spans);

        let started = Instant::now();
        for batch in &flush_batches {
            encode_parquet(Table::Spans, std::slice::from_ref(batch))?;
        }
        record("its encode, nothing to gather", elapsed_ns(started), spans);
        drop(flush_batches);

        let started = Instant::now();
        for file in &files {
            decode_parquet(file.clone())?;
        }
        record("flush file decode", elapsed_ns(started), spans);

        let started = Instant::now();
        let (merged, rows) = merge_in_memory(Table::Spans, &files, ROWS_PER_GROUP)?;
        record("merge", elapsed_ns(started), rows);
        merged_bytes = merged.len();
    }
    let flush_rows = per_flush * SPANS_PER_REQUEST;
    println!(
        "{spans} spans; {} flush files of {flush_rows} spans (a merge {} them); medians of {} runs",
        args.files_per_merge,
        if flush_rows >= COPY_MIN_ROWS {
            "copies"
        } else {
            "rewrites"
        },
        args.runs
    );
    for (name, mut values) in stages {
        values.sort_by(f64::total_cmp);
        println!("{name:<32} {:>8.0} ns/span", values[values.len() / 2]);
    }
    println!(
        "bytes per span: flush files {:.1}, merged {:.1}",
        flush_bytes as f64 / spans as f64,
        merged_bytes as f64 / spans as f64
    );
    println!(
        "bytes per buffered span: protobuf {:.0}, Arrow allocated {:.0}, Arrow used {:.0}",
        buffered.protobuf as f64 / spans as f64,
        buffered.allocated as f64 / spans as f64,
        buffered.used as f64 / spans as f64,
    );
    for (column, allocated, used) in buffered.columns {
        println!(
            "  {column:<30} allocated {:>6.0}, used {:>6.0}",
            allocated as f64 / spans as f64,
            used as f64 / spans as f64
        );
    }
    if args.per_column {
        print_column_costs(&requests[..per_flush.min(requests.len())], args.runs)?;
    }
    Ok(())
}

/// Each top-level column of one flush file encoded alone (sorted as a flush
/// sorts) by the Arrow writer, median nanoseconds and bytes per span,
/// costliest first. A flush writes attribute maps with
/// `weft_collector`'s own page writer instead, which "flush file encode" times.
fn print_column_costs(requests: &[Vec<u8>], runs: usize) -> Result<()> {
    let batches = requests
        .iter()
        .map(|r| protobuf_to_record_batch(r))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let sorted = sort_for_storage(Table::Spans, batches)?;
    let spans = sorted.num_rows();
    let mut costs = Vec::new();
    for (index, field) in sorted.schema().fields().iter().enumerate() {
        let column = sorted.project(&[index])?;
        let mut nanos = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let props = writer_properties(Table::Spans, spans)?;
            let mut out = Vec::new();
            let mut writer = ArrowWriter::try_new(&mut out, column.schema(), Some(props))?;
            writer.write(&column)?;
            writer.close()?;
            nanos.push(elapsed_ns(started) / spans as f64);
            bytes = out.len();
        }
        nanos.sort_by(f64::total_cmp);
        costs.push((field.name().clone(), nanos[nanos.len() / 2], bytes));
    }
    costs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = costs.iter().map(|c| c.1).sum();
    println!("each column encoded alone ({spans} spans, sorted): {total:.0} ns/span in all");
    println!("  (by the Arrow writer; a flush writes attribute maps with its own page writer)");
    for (name, nanos, bytes) in costs {
        println!(
            "  {name:<30} {nanos:>6.0} ns/span {:>6.1} bytes/span",
            bytes as f64 / spans as f64
        );
    }
    Ok(())
}

/// What the collector's buffer holds for the requests until a flush: their
/// Arrow batches (as allocated, and the bytes their values need), beside the
/// protobuf bytes they came as.
struct Buffered {
    protobuf: usize,
    allocated: usize,
    used: usize,
    columns: Vec<(String, usize, usize)>,
}

fn buffered_bytes(requests: &[Vec<u8>]) -> Result<Buffered> {
    let mut buffered = Buffered {
        protobuf: requests.iter().map(Vec::len).sum(),
        allocated: 0,
        used: 0,
        columns: Vec::new(),
    };
    for request in requests {
        let batch = protobuf_to_record_batch(request)?;
        buffered.allocated += batch.get_array_memory_size();
        for (index, field) in batch.schema().fields().iter().enumerate() {
            let column = batch.column(index);
            let allocated = column.get_array_memory_size();
            let used = column.to_data().get_slice_memory_size()?;
            buffered.used += used;
            match buffered
                .columns
                .iter_mut()
                .find(|(name, ..)| name == field.name())
            {
                Some((_, a, u)) => {
                    *a += allocated;
                    *u += used;
                }
                None => buffered
                    .columns
                    .push((field.name().clone(), allocated, used)),
            }
        }
    }
    buffered
        .columns
        .sort_by_key(|(_, allocated, _)| std::cmp::Reverse(*allocated));
    buffered.columns.truncate(12);
    Ok(buffered)
}

fn elapsed_ns(started: Instant) -> f64 {
    started.elapsed().as_nanos() as f64
}
