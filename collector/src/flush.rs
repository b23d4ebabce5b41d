//! Writing buffered batches to Parquet: one file per table and UTC hour for each
//! flushed WAL segment, then the checkpoint that lets the segment go.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, TimestampNanosecondArray};
use datafusion::arrow::compute::filter_record_batch;
use tokio::sync::{mpsc, oneshot};
use weft_schema::layout;

use crate::memory::Reservation;
use crate::sorted::encode_batches_sorted;
use crate::store::{Store, StoreError, Table};
use crate::wal::{self, WalError};

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("rows of {table} have no {column} column")]
    MissingTime {
        table: &'static str,
        column: &'static str,
    },
}

/// One flush: everything the log buffered while `segment` was open.
#[derive(Default)]
pub struct FlushJob {
    /// `None` for a barrier that carries no data.
    pub segment: Option<u64>,
    pub spans: Vec<RecordBatch>,
    pub metrics: Vec<RecordBatch>,
    /// Released once the data is in Parquet.
    pub reservations: Vec<Reservation>,
    /// Told when this job (and all before it) is done.
    pub waiters: Vec<oneshot::Sender<()>>,
}

impl FlushJob {
    pub fn barrier(waiters: Vec<oneshot::Sender<()>>) -> Self {
        Self {
            waiters,
            ..Self::default()
        }
    }
}

struct Inner {
    store: Store,
    wal_dir: PathBuf,
    checkpoint: Arc<AtomicU64>,
    jobs: mpsc::UnboundedSender<FlushJob>,
}

/// Handle on the flusher task. Cheap to clone.
#[derive(Clone)]
pub struct Flusher {
    inner: Arc<Inner>,
}

impl Flusher {
    /// Starts the flusher task on the current Tokio runtime.
    pub fn start(store: Store, wal_dir: PathBuf) -> Result<Self, FlushError> {
        std::fs::create_dir_all(&wal_dir).map_err(|source| WalError::Io {
            path: wal_dir.clone(),
            source,
        })?;
        let checkpoint = Arc::new(AtomicU64::new(wal::read_checkpoint(&wal_dir)?));
        let (jobs, queue) = mpsc::unbounded_channel();
        let flusher = Self {
            inner: Arc::new(Inner {
                store,
                wal_dir,
                checkpoint,
                jobs,
            }),
        };
        tokio::spawn(flusher.clone().run(queue));
        Ok(flusher)
    }

    pub fn checkpoint(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.inner.checkpoint)
    }

    pub fn send(&self, job: FlushJob) {
        if let Err(unsent) = self.inner.jobs.send(job) {
            // Only at shutdown, after the task ended: the WAL still holds the data.
            tracing::warn!(segment = ?unsent.0.segment, "flusher stopped; data stays in the write-ahead log");
        }
    }

    async fn run(self, mut queue: mpsc::UnboundedReceiver<FlushJob>) {
        while let Some(job) = queue.recv().await {
            let mut delay = Duration::from_millis(100);
            let segment = job.segment;
            let mut job = job;
            loop {
                match self
                    .write_files(&job)
                    .await
                    .and_then(|()| self.finish_segment(job.segment))
                {
                    Ok(()) => break,
                    Err(error) => {
                        // The data is safe in the WAL; keep trying. Its memory stays
                        // reserved, so ingestion pushes back meanwhile.
                        tracing::error!(?segment, %error, "flush to Parquet failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
            for waiter in std::mem::take(&mut job.waiters) {
                let _ = waiter.send(());
            }
        }
    }

    /// Writes a job's files and checkpoints its segment (used by recovery, in line).
    pub async fn write(&self, job: FlushJob) -> Result<(), FlushError> {
        self.write_files(&job).await?;
        self.finish_segment(job.segment)
    }

    async fn write_files(&self, job: &FlushJob) -> Result<(), FlushError> {
        let Some(segment) = job.segment else {
            return Ok(());
        };
        for (table, batches) in [(Table::Spans, &job.spans), (Table::Metrics, &job.metrics)] {
            for (part, (dir, hour_batches)) in
                split_by_hour(table, batches)?.into_iter().enumerate()
            {
                let path = format!("{dir}/{}", layout::flush_file_name(segment, part));
                let bytes = tokio::task::spawn_blocking(move || {
                    encode_batches_sorted(table, &hour_batches)
                })
                .await
                .map_err(StoreError::from)??;
                self.inner.store.write_encoded(&path, bytes).await?;
            }
        }
        Ok(())
    }

    fn finish_segment(&self, segment: Option<u64>) -> Result<(), FlushError> {
        let Some(segment) = segment else {
            return Ok(());
        };
        wal::checkpoint(&self.inner.wal_dir, segment)?;
        self.inner.checkpoint.store(segment, Ordering::Release);
        Ok(())
    }

    /// Deletes files written by flushes of segments after `checkpoint`: a crash cut
    /// those flushes short, and their segments are about to be replayed whole.
    pub async fn remove_unfinished_flushes(&self, checkpoint: u64) -> Result<(), FlushError> {
        for table in Table::ALL {
            for file in self.inner.store.list(table.dir()).await? {
                let name = file.location.filename().unwrap_or_default();
                if layout::flush_segment_of(name).is_some_and(|segment| segment > checkpoint) {
                    tracing::info!(file = %file.location, "removing a file of an unfinished flush");
                    self.inner.store.delete(file.location.as_ref()).await?;
                }
            }
        }
        Ok(())
    }
}

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// Groups rows by the UTC hour of the table's time column.
pub fn split_by_hour(
    table: Table,
    batches: &[RecordBatch],
) -> Result<BTreeMap<String, Vec<RecordBatch>>, FlushError> {
    let mut hours: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let times = batch
            .column_by_name(table.time_column())
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .ok_or(FlushError::MissingTime {
                table: table.dir(),
                column: table.time_column(),
            })?;
        let hour_of = |i: usize| times.value(i).div_euclid(NANOS_PER_HOUR);
        let first = hour_of(0);
        if (0..times.len()).all(|i| hour_of(i) == first) {
            hours
                .entry(layout::hour_dir(table.dir(), first * NANOS_PER_HOUR))
                .or_default()
                .push(batch.clone());
            continue;
        }
        let mut distinct: Vec<i64> = (0..times.len()).map(hour_of).collect();
        distinct.sort_unstable();
        distinct.dedup();
        for hour in distinct {
            let mask: BooleanArray = (0..times.len()).map(|i| Some(hour_of(i) == hour)).collect();
            let rows = filter_record_batch(batch, &mask).map_err(StoreError::from)?;
            hours
                .entry(layout::hour_dir(table.dir(), hour * NANOS_PER_HOUR))
                .or_default()
                .push(rows);
        }
    }
    Ok(hours)
}
