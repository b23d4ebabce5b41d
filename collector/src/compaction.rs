//! Background upkeep of the store: merging the small files of frequent flushes
//! into large sorted ones, and deleting hours older than the retention.
//!
//! A merge never loses or duplicates a row, even if killed midway: before the
//! merged file is written, a journal naming it and its inputs is made durable.
//! At start, an unfinished journal is completed: if the merged file exists its
//! inputs are deleted, otherwise the inputs are left as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use weft_schema::{layout, metrics, spans};

use crate::store::{Store, StoreError, Table, concat};

#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("compaction journal {path}: {source}")]
    Journal { path: PathBuf, source: std::io::Error },
    #[error("compaction journal {path} is unreadable: {source}")]
    BadJournal { path: PathBuf, source: serde_json::Error },
}

#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// How often to look for work.
    pub interval: Duration,
    /// Data older than this is deleted, a whole hour at a time.
    pub retention: Duration,
    /// Rows in one merged file at most (bounds the memory a merge needs).
    pub max_rows: usize,
    /// Files in the current hour that start a merge; a finished hour merges from two.
    pub min_files: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_rows: 1_000_000,
            min_files: 8,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    output: String,
    inputs: Vec<String>,
}

const JOURNAL_FILE: &str = "compaction.journal";

/// Merges and deletes files. `store_lock` is held for writing while files
/// appear or disappear, so a query in this process never sees a merge half done.
pub struct Compactor {
    store: Store,
    state_dir: PathBuf,
    checkpoint: Arc<AtomicU64>,
    store_lock: Arc<RwLock<()>>,
    config: CompactionConfig,
    unique: AtomicU32,
}

impl Compactor {
    pub fn new(
        store: Store,
        state_dir: PathBuf,
        checkpoint: Arc<AtomicU64>,
        store_lock: Arc<RwLock<()>>,
        config: CompactionConfig,
    ) -> Self {
        Self { store, state_dir, checkpoint, store_lock, config, unique: AtomicU32::new(std::process::id()) }
    }

    fn journal_path(&self) -> PathBuf {
        self.state_dir.join(JOURNAL_FILE)
    }

    /// Completes a merge that a crash interrupted.
    pub async fn recover(&self) -> Result<(), CompactionError> {
        let path = self.journal_path();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(CompactionError::Journal { path, source }),
        };
        // A journal cut short by a crash was never followed by the merged file.
        if let Ok(journal) = serde_json::from_slice::<Journal>(&text) {
            if self.store.exists(&journal.output).await? {
                for input in &journal.inputs {
                    self.store.delete(input).await?;
                }
                tracing::info!(output = %journal.output, inputs = journal.inputs.len(), "finished an interrupted compaction");
            }
        }
        std::fs::remove_file(&path).map_err(|source| CompactionError::Journal { path, source })
    }

    /// Runs until the process ends.
    pub async fn run(self) {
        loop {
            tokio::time::sleep(self.config.interval).await;
            if let Err(error) = self.run_once(Utc::now()).await {
                tracing::error!(%error, "compaction failed; will retry");
            }
        }
    }

    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<(), CompactionError> {
        for table in Table::ALL {
            self.apply_retention(table, now).await?;
            self.compact(table, now).await?;
        }
        Ok(())
    }

    async fn apply_retention(&self, table: Table, now: DateTime<Utc>) -> Result<(), CompactionError> {
        let retention = chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::MAX);
        let Some(cutoff) = now.checked_sub_signed(retention) else { return Ok(()) };
        let expired: Vec<ObjectMeta> = self
            .store
            .list(table.dir())
            .await?
            .into_iter()
            .filter(|f| layout::hour_of_path(f.location.as_ref()).is_some_and(|hour| hour + chrono::Duration::hours(1) <= cutoff))
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let _writing = self.store_lock.write().await;
        for file in &expired {
            self.store.delete(file.location.as_ref()).await?;
        }
        tracing::info!(table = table.dir(), files = expired.len(), "deleted files past the retention");
        Ok(())
    }

    async fn compact(&self, table: Table, now: DateTime<Utc>) -> Result<(), CompactionError> {
        let checkpoint = self.checkpoint.load(Ordering::Acquire);
        let mut by_hour: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
        for file in self.store.list(table.dir()).await? {
            let name = file.location.filename().unwrap_or_default();
            // Files of a flush whose checkpoint is not yet written may still be
            // replaced by a WAL replay; leave them alone.
            if layout::flush_segment_of(name).is_some_and(|segment| segment > checkpoint) {
                continue;
            }
            let path = file.location.as_ref();
            let Some((dir, _)) = path.rsplit_once('/') else { continue };
            by_hour.entry(dir.to_owned()).or_default().push(file);
        }
        for (dir, mut files) in by_hour {
            let finished = layout::hour_of_path(&dir)
                .is_some_and(|hour| hour + chrono::Duration::hours(1) + chrono::Duration::minutes(5) < now);
            let min_files = if finished { 2 } else { self.config.min_files };
            files.sort_by_key(|f| f.size);
            // Merge the smallest files first; large merged files are left alone.
            let mut group = Vec::new();
            let mut rows_estimate = 0usize;
            for file in files {
                let rows = parquet_rows_estimate(&file);
                if rows_estimate + rows > self.config.max_rows && !group.is_empty() {
                    break;
                }
                rows_estimate += rows;
                group.push(file);
            }
            if group.len() >= min_files {
                self.merge(table, &dir, &group, now).await?;
            }
        }
        Ok(())
    }

    async fn merge(&self, table: Table, dir: &str, inputs: &[ObjectMeta], now: DateTime<Utc>) -> Result<(), CompactionError> {
        let mut batches = Vec::new();
        for input in inputs {
            batches.extend(self.store.read_parquet(input.location.as_ref()).await?);
        }
        let merged = tokio::task::spawn_blocking(move || sort_for_storage(table, &batches))
            .await
            .map_err(StoreError::from)??;
        let rows = merged.num_rows();
        let unique = self.unique.fetch_add(1, Ordering::Relaxed);
        let output = format!("{dir}/{}", layout::compacted_file_name(now, unique));
        let journal = Journal {
            output: output.clone(),
            inputs: inputs.iter().map(|f| f.location.to_string()).collect(),
        };
        self.write_journal(&journal)?;
        {
            let _writing = self.store_lock.write().await;
            self.store.write_parquet(table, &output, vec![merged]).await?;
            for input in &journal.inputs {
                self.store.delete(input).await?;
            }
        }
        let path = self.journal_path();
        std::fs::remove_file(&path).map_err(|source| CompactionError::Journal { path, source })?;
        tracing::debug!(table = table.dir(), %output, inputs = inputs.len(), rows, "compacted");
        Ok(())
    }

    fn write_journal(&self, journal: &Journal) -> Result<(), CompactionError> {
        let path = self.journal_path();
        let io = |source| CompactionError::Journal { path: path.clone(), source };
        let text = serde_json::to_vec(journal).map_err(|source| CompactionError::BadJournal { path: path.clone(), source })?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            file.write_all(&text).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.state_dir).map_err(io)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Merged files are sorted so that equal values sit together (smaller files)
/// and row-group statistics on the sort keys skip most of a file: spans by
/// trace then time, so a trace is read from one place; metrics by series then time.
fn sort_for_storage(table: Table, batches: &[RecordBatch]) -> Result<RecordBatch, StoreError> {
    let batch = concat(table, batches)?;
    let keys: &[&str] = match table {
        Table::Spans => &[spans::TRACE_ID, spans::START_TIME],
        Table::Metrics => &[metrics::METRIC_NAME, metrics::SERVICE_NAME, metrics::TIME],
    };
    let columns: Vec<SortColumn> = keys
        .iter()
        .filter_map(|key| batch.column_by_name(key))
        .map(|values| SortColumn { values: values.clone(), options: Some(SortOptions::default()) })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(&batch, &indices)?)
}

/// A cheap guess of a file's rows from its size, to bound a merge before reading.
fn parquet_rows_estimate(file: &ObjectMeta) -> usize {
    // Compressed spans take roughly 40 to 200 bytes; guess low to stay safe.
    usize::try_from(file.size / 40).unwrap_or(usize::MAX)
}
