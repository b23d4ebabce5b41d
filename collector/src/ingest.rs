//! The ingest pipeline, from a decoded request to an acknowledgement:
//!
//! ```text
//! receiver ──validate, convert──▶ log thread ──WAL append + fsync──▶ ack
//!                                 │ every flush interval
//!                                 ▼
//!               flusher task ──Parquet per hour──▶ checkpoint, WAL trimmed
//! ```
//!
//! A request is converted on the async worker that received it, or on the
//! blocking pool when it is large (`CONVERT_IN_PLACE_MAX_BYTES`).
//!
//! The log thread owns the write-ahead log and the buffer of converted batches;
//! it is a plain thread because its work is blocking file I/O.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::sync::oneshot;

use crate::convert::spans::ConvertError;
use crate::convert::validate::{self, Rejected};
use crate::convert::{metrics as metric_rows, spans as span_rows};
use crate::flush::{FlushJob, Flusher};
use crate::memory::{MemoryBudget, Reservation};
use crate::wal::{Signal, Wal, WalError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "the collector is over its memory limit ({used} of {limit} bytes waiting to be written); retry later"
    )]
    Overloaded { used: usize, limit: usize },
    #[error("the collector is shutting down")]
    ShuttingDown,
    #[error("could not convert the request to Arrow: {0}")]
    Convert(#[from] ArrowError),
    #[error(transparent)]
    Spans(#[from] ConvertError),
    #[error("could not make the request durable: {0}")]
    Wal(Arc<WalError>),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// How the log thread groups and flushes.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub wal_dir: PathBuf,
    /// How often buffered data is written to Parquet (and so becomes visible).
    pub flush_interval: Duration,
    /// Buffered Arrow bytes that trigger a flush before the interval ends.
    pub flush_bytes: usize,
    pub memory_limit: usize,
}

struct Append {
    signal: Signal,
    payload: Bytes,
    batch: RecordBatch,
    reservation: Reservation,
    ack: oneshot::Sender<Result<(), Arc<WalError>>>,
}

enum LogCommand {
    Append(Append),
    /// Flush everything buffered and answer when it is in Parquet.
    Flush(oneshot::Sender<()>),
}

/// A request after validation: what is left of it and how to convert it.
struct Validated<M> {
    signal: Signal,
    request: M,
    /// Spans or data points left after validation.
    items: usize,
    /// The request as received, when it came as protobuf.
    protobuf: Option<Bytes>,
    rejected: Rejected,
    convert: fn(&M) -> Result<RecordBatch, ArrowError>,
}

/// The receivers' handle on the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    log: mpsc::Sender<LogCommand>,
    memory: Arc<MemoryBudget>,
    checkpoint: Arc<AtomicU64>,
}

impl Ingest {
    /// Starts the log thread on a new WAL segment; `flusher` writes its flushes.
    pub fn start(config: &IngestConfig, flusher: Flusher) -> Result<Self, WalError> {
        let wal = Wal::create(&config.wal_dir)?;
        let memory = MemoryBudget::new(config.memory_limit);
        let checkpoint = flusher.checkpoint();
        let (log, commands) = mpsc::channel();
        let log_config = config.clone();
        std::thread::Builder::new()
            .name("weft-wal".into())
            .spawn(move || run_log(wal, commands, flusher, &log_config))
            .map_err(|source| WalError::Io {
                path: config.wal_dir.clone(),
                source,
            })?;
        Ok(Self {
            log,
            memory,
            checkpoint,
        })
    }

    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    /// The last WAL segment whose data is in Parquet.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.load(Ordering::Acquire)
    }

    /// Stores the valid spans of a protobuf-encoded `ExportTraceServiceRequest`
    /// durably; returns what was rejected. When every span is valid (the
    /// usual case) the bytes are converted in place and are what the WAL keeps.
    pub async fn export_trace_protobuf(&self, body: Bytes) -> Result<Rejected, IngestError> {
        let reservation = self.reserve(body.len())?;
        let (payload, batch, rejected) =
            run_cpu_bound(body.len(), move || convert_traces(body)).await??;
        if batch.num_rows() > 0 {
            self.append(Signal::Traces, payload, batch, reservation)
                .await?;
        }
        Ok(rejected)
    }

    /// Stores the valid spans of a decoded request (OTLP/JSON arrives so).
    pub async fn export_traces(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<Rejected, IngestError> {
        self.export_trace_protobuf(Bytes::from(request.encode_to_vec()))
            .await
    }

    /// Stores the valid data points of `request` durably; returns what was
    /// rejected. `protobuf`, when given, is the request as it arrived: the WAL
    /// keeps it as is when every data point is valid, instead of encoding the
    /// request again.
    pub async fn export_metrics(
        &self,
        mut request: ExportMetricsServiceRequest,
        protobuf: Option<Bytes>,
    ) -> Result<Rejected, IngestError> {
        let rejected = validate::metrics(&mut request);
        let items = metric_rows::request_data_point_count(&request);
        let convert = metric_rows::to_record_batch;
        self.store(Validated {
            signal: Signal::Metrics,
            request,
            items,
            protobuf,
            rejected,
            convert,
        })
        .await
    }

    /// Converts a validated request off the async workers, then logs it.
    async fn store<M: Message + Send + 'static>(
        &self,
        validated: Validated<M>,
    ) -> Result<Rejected, IngestError> {
        let Validated {
            signal,
            request,
            items,
            protobuf,
            rejected,
            convert,
        } = validated;
        if items == 0 {
            return Ok(rejected);
        }
        let encoded_len = request.encoded_len();
        let reservation = self.reserve(encoded_len)?;
        let original = protobuf.filter(|_| rejected.count == 0);
        let (payload, batch) = run_cpu_bound(encoded_len, move || {
            let batch = convert(&request)?;
            let payload = original.unwrap_or_else(|| Bytes::from(request.encode_to_vec()));
            Ok::<_, ArrowError>((payload, batch))
        })
        .await??;
        self.append(signal, payload, batch, reservation).await?;
        Ok(rejected)
    }

    /// Writes everything buffered to Parquet now (used at shutdown and by tests).
    pub async fn flush(&self) -> Result<(), IngestError> {
        let (done, wait) = oneshot::channel();
        self.log
            .send(LogCommand::Flush(done))
            .map_err(|_| IngestError::ShuttingDown)?;
        wait.await.map_err(|_| IngestError::ShuttingDown)
    }

    fn reserve(&self, encoded_len: usize) -> Result<Reservation, IngestError> {
        // Decoded OTLP in Arrow takes a few times its protobuf size.
        self.memory
            .try_reserve(encoded_len.saturating_mul(4))
            .ok_or(IngestError::Overloaded {
                used: self.memory.used(),
                limit: self.memory.limit(),
            })
    }

    async fn append(
        &self,
        signal: Signal,
        payload: Bytes,
        batch: RecordBatch,
        mut reservation: Reservation,
    ) -> Result<(), IngestError> {
        reservation.resize(batch.get_array_memory_size() + payload.len());
        let (ack, acked) = oneshot::channel();
        let append = Append {
            signal,
            payload,
            batch,
            reservation,
            ack,
        };
        self.log
            .send(LogCommand::Append(append))
            .map_err(|_| IngestError::ShuttingDown)?;
        acked
            .await
            .map_err(|_| IngestError::ShuttingDown)?
            .map_err(IngestError::Wal)
    }
}

/// Requests up to this many protobuf bytes are converted on the async worker
/// that received them (about a millisecond of work: the load generator's
/// requests of 512 spans are 221 KB); larger ones go to the blocking pool, so
/// that one huge request does not hold up the worker's other connections.
/// Handing a request to a pool thread and back costs two wake-ups, often on
/// the other core, with the request's bytes and rows crossing between the
/// cores' caches. Converting in place took a median of 6.3 and 6.9 % of a
/// core at 10,000 spans/s against 7.2 and 7.2 % (8 and 16 pairs of runs; a
/// small gain against this machine's noise), and 169,722 and 183,085 spans
/// per CPU-second at full speed against 166,378 and 169,967, with ack p99 at
/// 36,000 spans/s 15.7, 14.4 ms against 16.6, 16.4 (README, Performance,
/// session 20).
const CONVERT_IN_PLACE_MAX_BYTES: usize = 256 << 10;

/// Runs `work`, CPU-bound over `input_bytes` of a request, in place when the
/// request is small and on the blocking pool when it is not.
pub(crate) async fn run_cpu_bound<T: Send + 'static>(
    input_bytes: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if input_bytes <= CONVERT_IN_PLACE_MAX_BYTES {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

/// A trace request's spans as a batch, the payload the WAL keeps, and what was
/// rejected.
fn convert_traces(body: Bytes) -> Result<(Bytes, RecordBatch, Rejected), ConvertError> {
    match span_rows::protobuf_to_record_batch(&body) {
        Ok(batch) => Ok((body, batch, Rejected::default())),
        Err(ConvertError::InvalidSpan { .. }) => {
            // Rare: take the invalid spans out, as the partial success says, and
            // keep the rest. The body was read once already, so it decodes.
            let mut request = ExportTraceServiceRequest::decode(body.as_ref())
                .map_err(crate::convert::wire::WireError::from)?;
            let rejected = validate::traces(&mut request);
            let payload = Bytes::from(request.encode_to_vec());
            let batch = span_rows::protobuf_to_record_batch(&payload)?;
            Ok((payload, batch, rejected))
        }
        Err(error) => Err(error),
    }
}

/// What the log thread holds between flushes.
#[derive(Default)]
struct Buffer {
    spans: Vec<RecordBatch>,
    metrics: Vec<RecordBatch>,
    reservations: Vec<Reservation>,
    bytes: usize,
}

/// Group commit: appends wait while a sync runs, then go to disk together.
const MAX_GROUP_BYTES: usize = 64 << 20;

fn run_log(
    mut wal: Wal,
    commands: mpsc::Receiver<LogCommand>,
    flusher: Flusher,
    config: &IngestConfig,
) {
    let mut buffer = Buffer::default();
    let mut last_flush = Instant::now();
    loop {
        let wait = config.flush_interval.saturating_sub(last_flush.elapsed());
        let mut flush_waiters = Vec::new();
        let mut group = Vec::new();
        match commands.recv_timeout(wait) {
            Ok(command) => {
                let mut group_bytes = 0;
                let mut next = Some(command);
                while let Some(command) = next.take() {
                    match command {
                        LogCommand::Append(append) => {
                            group_bytes += append.payload.len();
                            group.push(append);
                        }
                        LogCommand::Flush(done) => flush_waiters.push(done),
                    }
                    if group_bytes < MAX_GROUP_BYTES {
                        next = commands.try_recv().ok();
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush_buffer(&mut wal, &mut buffer, &flusher, Vec::new());
                return;
            }
        }
        if !group.is_empty() {
            commit_group(&mut wal, &mut buffer, group);
        }
        let due =
            last_flush.elapsed() >= config.flush_interval || buffer.bytes >= config.flush_bytes;
        if due || !flush_waiters.is_empty() {
            flush_buffer(&mut wal, &mut buffer, &flusher, flush_waiters);
            last_flush = Instant::now();
        }
    }
}

fn commit_group(wal: &mut Wal, buffer: &mut Buffer, group: Vec<Append>) {
    let written = wal.append_and_sync(group.iter().map(|a| (a.signal, a.payload.as_ref())));
    match written {
        Ok(()) => {
            for append in group {
                buffer.bytes += append.reservation.bytes();
                match append.signal {
                    Signal::Traces => buffer.spans.push(append.batch),
                    Signal::Metrics => buffer.metrics.push(append.batch),
                }
                buffer.reservations.push(append.reservation);
                let _ = append.ack.send(Ok(()));
            }
        }
        Err(error) => {
            tracing::error!(%error, "write-ahead log append failed; refusing the requests in this group");
            let error = Arc::new(error);
            for append in group {
                let _ = append.ack.send(Err(Arc::clone(&error)));
            }
        }
    }
}

fn flush_buffer(
    wal: &mut Wal,
    buffer: &mut Buffer,
    flusher: &Flusher,
    waiters: Vec<oneshot::Sender<()>>,
) {
    if buffer.spans.is_empty() && buffer.metrics.is_empty() {
        // Nothing to write, but a waiter must still learn that earlier flushes are done.
        flusher.send(FlushJob::barrier(waiters));
        return;
    }
    let segment = match wal.rotate() {
        Ok(closed) => closed,
        Err(error) => {
            // Keep buffering into the current segment; the next flush tries again.
            tracing::error!(%error, "could not start a new write-ahead log segment");
            flusher.send(FlushJob::barrier(waiters));
            return;
        }
    };
    let taken = std::mem::take(buffer);
    flusher.send(FlushJob {
        segment: Some(segment),
        spans: taken.spans,
        metrics: taken.metrics,
        reservations: taken.reservations,
        waiters,
    });
}

/// Replays the WAL segments written after the last checkpoint into Parquet,
/// after removing any files a crash left from their half-done flush.
pub async fn recover(flusher: &Flusher, wal_dir: &Path) -> Result<usize, crate::flush::FlushError> {
    std::fs::create_dir_all(wal_dir).map_err(|source| WalError::Io {
        path: wal_dir.to_owned(),
        source,
    })?;
    let checkpoint = crate::wal::read_checkpoint(wal_dir)?;
    flusher.remove_unfinished_flushes(checkpoint).await?;
    let mut replayed = 0;
    for segment in crate::wal::list_segments(wal_dir)? {
        if segment <= checkpoint {
            continue;
        }
        let records = crate::wal::read_segment(wal_dir, segment)?;
        let mut job = FlushJob {
            segment: Some(segment),
            ..FlushJob::default()
        };
        for record in records {
            match record.signal {
                Signal::Traces => match span_rows::protobuf_to_record_batch(&record.payload) {
                    Ok(batch) => {
                        replayed += batch.num_rows();
                        job.spans.push(batch);
                    }
                    // Not the record's fault: stop, and leave the log for the next start.
                    Err(ConvertError::Arrow(error)) => {
                        return Err(crate::store::StoreError::from(error).into());
                    }
                    Err(error) => {
                        tracing::error!(segment, %error, "unreadable trace record in the write-ahead log")
                    }
                },
                Signal::Metrics => {
                    match ExportMetricsServiceRequest::decode(record.payload.as_slice()) {
                        Ok(request) => {
                            job.metrics.push(
                                metric_rows::to_record_batch(&request)
                                    .map_err(crate::store::StoreError::from)?,
                            );
                        }
                        Err(error) => {
                            tracing::error!(segment, %error, "undecodable metric record in the write-ahead log")
                        }
                    }
                }
            }
        }
        flusher.write(job).await?;
    }
    if replayed > 0 {
        tracing::info!(spans = replayed, "replayed the write-ahead log");
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::request_of as request;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn span(name: &str, trace_id: Vec<u8>) -> Span {
        Span {
            trace_id,
            span_id: vec![2; 8],
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn valid_bytes_are_kept_as_they_came_and_invalid_spans_taken_out()
    -> Result<(), Box<dyn std::error::Error>> {
        let valid = Bytes::from(request(vec![span("a", vec![1; 16])]).encode_to_vec());
        let (payload, batch, rejected) = convert_traces(valid.clone())?;
        assert_eq!((payload, batch.num_rows(), rejected.count), (valid, 1, 0));

        let mixed = request(vec![span("a", vec![1; 16]), span("b", vec![0; 16])]);
        let (payload, batch, rejected) = convert_traces(Bytes::from(mixed.encode_to_vec()))?;
        assert_eq!((batch.num_rows(), rejected.count), (1, 1));
        assert_eq!(
            rejected.message,
            "span \"b\": trace_id is all zeros, which OTLP forbids"
        );
        // What the WAL keeps is the request without the rejected span.
        assert_eq!(
            ExportTraceServiceRequest::decode(payload.as_ref())?,
            request(vec![span("a", vec![1; 16])])
        );

        let malformed = convert_traces(Bytes::from_static(&[0x0a, 0x05, 0x01]));
        assert!(matches!(malformed, Err(ConvertError::Malformed(_))));
        Ok(())
    }

    #[tokio::test]
    async fn small_requests_convert_in_place_and_large_ones_on_the_blocking_pool()
    -> Result<(), tokio::task::JoinError> {
        let here = std::thread::current().id();
        let thread = || std::thread::current().id();
        let small = run_cpu_bound(CONVERT_IN_PLACE_MAX_BYTES, thread).await?;
        let large = run_cpu_bound(CONVERT_IN_PLACE_MAX_BYTES + 1, thread).await?;
        assert_eq!(small, here);
        assert_ne!(large, here);
        Ok(())
    }
}
