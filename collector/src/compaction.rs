//! Background upkeep of the store: merging the small files of frequent flushes
//! into large sorted ones, and deleting hours older than the retention.
//!
//! A merge never loses or duplicates a row, even if killed midway: before the
//! merged file is written, a journal naming it and its inputs is made durable.
//! The merged file is written beside its inputs as `<name>.partial` and renamed
//! into place when complete. At start, an unfinished journal is completed: if
//! the merged file exists its inputs are deleted, otherwise the inputs are left
//! as they were and the partial file is removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use weft_schema::layout;

use crate::sorted::{COPY_MIN_ROWS, merge_into_file};
use crate::store::{ROWS_PER_GROUP, Store, StoreError, Table};

#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("compaction journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("compaction journal {path} is unreadable: {source}")]
    BadJournal {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// How often to look for work.
    pub interval: Duration,
    /// Data older than this is deleted, a whole hour at a time.
    pub retention: Duration,
    /// Rows in one merged file at most.
    pub max_rows: usize,
    /// Rows of small row groups (under [`COPY_MIN_ROWS`]) one merge decodes
    /// and writes again, at most: a merge holds a column of all of them in
    /// memory at once. Copied row groups are streamed and do not count.
    pub max_rewritten_rows: usize,
    /// Files in the current hour that start a merge; a finished hour merges from two.
    pub min_files: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_rows: 500_000,
            // Unbounded, the 30 s of one-second flushes at 7,000 spans/s
            // (210,000 rows, every one rewritten) took the server's peak RSS
            // from 70 MiB without compaction to 171-175 MiB. Bounded, 65 s
            // runs peaked at 112-133 MiB with 64k rows, 107-113 with 32k and
            // 94-98 with 16k; smaller merges write smaller row groups, which
            // compress worse (README, Performance).
            max_rewritten_rows: 32 * 1024,
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
        Self {
            store,
            state_dir,
            checkpoint,
            store_lock,
            config,
            unique: AtomicU32::new(std::process::id()),
        }
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
            } else {
                let partial = self.partial_path(&journal.output);
                match std::fs::remove_file(&partial) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(StoreError::Io {
                            path: partial,
                            source,
                        }
                        .into());
                    }
                }
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

    async fn apply_retention(
        &self,
        table: Table,
        now: DateTime<Utc>,
    ) -> Result<(), CompactionError> {
        let retention =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::MAX);
        let Some(cutoff) = now.checked_sub_signed(retention) else {
            return Ok(());
        };
        let expired: Vec<ObjectMeta> = self
            .store
            .list(table.dir())
            .await?
            .into_iter()
            .filter(|f| {
                layout::hour_of_path(f.location.as_ref())
                    .is_some_and(|hour| hour + chrono::Duration::hours(1) <= cutoff)
            })
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let _writing = self.store_lock.write().await;
        for file in &expired {
            self.store.delete(file.location.as_ref()).await?;
        }
        tracing::info!(
            table = table.dir(),
            files = expired.len(),
            "deleted files past the retention"
        );
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
            let Some((dir, _)) = path.rsplit_once('/') else {
                continue;
            };
            by_hour.entry(dir.to_owned()).or_default().push(file);
        }
        for (dir, files) in by_hour {
            let is_flush = |f: &ObjectMeta| {
                f.location
                    .filename()
                    .and_then(layout::flush_segment_of)
                    .is_some()
            };
            let finished = layout::hour_of_path(&dir).is_some_and(|hour| {
                hour + chrono::Duration::hours(1) + chrono::Duration::minutes(5) < now
            });
            // While the hour is open, fresh flush files and merged files are merged
            // separately, each set smallest first: a row is rewritten about once per
            // eightfold growth of its file, not on every pass. A finished hour is
            // merged as a whole, within the row bound.
            let sets: Vec<Vec<ObjectMeta>> = if finished {
                vec![files]
            } else {
                let (flushed, merged) = files.into_iter().partition(is_flush);
                vec![flushed, merged]
            };
            let min_files = if finished { 2 } else { self.config.min_files };
            // A finished hour's lone flush file is rewritten too: sorted,
            // compressed harder, and no longer a flush file, so the hour's rollup can be built.
            // A group that fills the rewrite bound is merged whatever its
            // number of files, so a low bound cannot stop compaction.
            let worth_merging = |group: &[ObjectMeta], rewrite_bound_reached: bool| {
                group.len() >= min_files
                    || (rewrite_bound_reached && group.len() >= 2)
                    || (finished && group.len() == 1 && is_flush(&group[0]))
            };
            for mut set in sets {
                set.sort_by_key(|f| f.size);
                // Consecutive merges, each within the bounds, until the next
                // would take too few files.
                let mut group = Vec::new();
                let mut work = MergeWork::default();
                for file in set {
                    let more = self.merge_work(&file).await;
                    let next = work.plus(more);
                    if !group.is_empty() && !next.within(&self.config) {
                        let rewrite_bound_reached =
                            next.rewritten_rows > self.config.max_rewritten_rows;
                        if !worth_merging(&group, rewrite_bound_reached) {
                            // The files left are larger still.
                            group.clear();
                            break;
                        }
                        self.merge(table, &dir, &group, now).await?;
                        group.clear();
                        work = MergeWork::default();
                    }
                    work = work.plus(more);
                    group.push(file);
                }
                if worth_merging(&group, false) {
                    self.merge(table, &dir, &group, now).await?;
                }
            }
        }
        Ok(())
    }

    /// What merging `file` takes, from its footer; a file whose footer
    /// cannot be read is guessed from its size, as if all of it were rewritten.
    async fn merge_work(&self, file: &ObjectMeta) -> MergeWork {
        match self.store.row_group_rows(file).await {
            Ok(groups) => MergeWork {
                rows: groups.iter().sum(),
                rewritten_rows: groups.iter().filter(|&&rows| rows < COPY_MIN_ROWS).sum(),
            },
            Err(_) => {
                let rows = parquet_rows_estimate(file);
                MergeWork {
                    rows,
                    rewritten_rows: rows,
                }
            }
        }
    }

    /// Where a merge writes its output until it is complete: a name no
    /// listing takes for a data file.
    fn partial_path(&self, output: &str) -> PathBuf {
        self.store.file_path(&format!("{output}.partial"))
    }

    async fn merge(
        &self,
        table: Table,
        dir: &str,
        inputs: &[ObjectMeta],
        now: DateTime<Utc>,
    ) -> Result<(), CompactionError> {
        let unique = self.unique.fetch_add(1, Ordering::Relaxed);
        let output = format!("{dir}/{}", layout::compacted_file_name(now, unique));
        let journal = Journal {
            output: output.clone(),
            inputs: inputs.iter().map(|f| f.location.to_string()).collect(),
        };
        // Before the output exists, so a crash midway leaves its partial file
        // to be removed at start.
        self.write_journal(&journal)?;
        let input_files: Vec<PathBuf> = journal
            .inputs
            .iter()
            .map(|input| self.store.file_path(input))
            .collect();
        let partial = self.partial_path(&output);
        let written = partial.clone();
        let merged = tokio::task::spawn_blocking(move || {
            merge_into_file(table, &input_files, &written, ROWS_PER_GROUP)
        })
        .await
        .map_err(StoreError::from)?;
        let rows = match merged {
            Ok(rows) => rows,
            Err(error) => {
                // The inputs are untouched; nothing of this merge stays.
                let _ = std::fs::remove_file(&partial);
                let _ = std::fs::remove_file(self.journal_path());
                return Err(error.into());
            }
        };
        {
            let _writing = self.store_lock.write().await;
            self.store.publish(&partial, &output)?;
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
        let io = |source| CompactionError::Journal {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec(journal).map_err(|source| CompactionError::BadJournal {
            path: path.clone(),
            source,
        })?;
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

/// The rows a merge reads, and of them those it decodes and encodes again
/// (the rest are copied as encoded).
#[derive(Debug, Clone, Copy, Default)]
struct MergeWork {
    rows: usize,
    rewritten_rows: usize,
}

impl MergeWork {
    fn plus(self, other: MergeWork) -> MergeWork {
        MergeWork {
            rows: self.rows.saturating_add(other.rows),
            rewritten_rows: self.rewritten_rows.saturating_add(other.rewritten_rows),
        }
    }

    fn within(&self, config: &CompactionConfig) -> bool {
        self.rows <= config.max_rows && self.rewritten_rows <= config.max_rewritten_rows
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// A cheap guess of a file's rows from its size, to bound a merge before reading.
fn parquet_rows_estimate(file: &ObjectMeta) -> usize {
    // Compressed spans of repetitive services take as little as ~15 bytes; guess
    // high (more rows than there are) so a merge never reads more than it may.
    usize::try_from(file.size / 10).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::concat;
    use datafusion::arrow::array::RecordBatch;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use weft_schema::spans;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const HOUR: &str = "spans/2026-11-22/04";
    const START_NS: u64 = 1_795_320_000_000_000_000; // 2026-11-22T04:00:00Z

    fn batch(first: u8, count: u8) -> Result<RecordBatch, Box<dyn std::error::Error>> {
        let spans = (first..first + count)
            .map(|i| Span {
                // Ids of zeros are invalid: start at 1.
                trace_id: vec![i + 1; 16],
                span_id: vec![i + 1; 8],
                name: format!("span {i}"),
                start_time_unix_nano: START_NS + u64::from(i),
                end_time_unix_nano: START_NS + 1000,
                ..Default::default()
            })
            .collect();
        crate::store::batch_of(spans)
    }

    fn compactor(dir: &Path, store: &Store) -> Compactor {
        let config = CompactionConfig {
            min_files: 3,
            retention: Duration::from_secs(u64::MAX / 4),
            ..CompactionConfig::default()
        };
        Compactor::new(
            store.clone(),
            dir.to_owned(),
            Arc::new(AtomicU64::new(100)),
            Arc::new(RwLock::new(())),
            config,
        )
    }

    async fn rows_in(store: &Store, files: &[ObjectMeta]) -> Result<usize, StoreError> {
        let mut rows = 0;
        for file in files {
            rows += store
                .read_parquet(file.location.as_ref())
                .await?
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>();
        }
        Ok(rows)
    }

    /// A flush file of 5 spans in `HOUR` for each (WAL segment, first span).
    async fn write_flush_files(store: &Store, files: &[(u64, u8)]) -> TestResult {
        for &(segment, first) in files {
            store
                .write_parquet(
                    Table::Spans,
                    &format!("{HOUR}/{}", layout::flush_file_name(segment, 0)),
                    vec![batch(first, 5)?],
                )
                .await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn small_files_merge_into_one_sorted_file_with_every_row() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Store::local(&dir.path().join("store"))?;
        write_flush_files(&store, &[(1, 30), (2, 1), (3, 10)]).await?;
        let now = DateTime::<Utc>::from_timestamp_nanos(START_NS as i64 + 600_000_000_000);
        compactor(dir.path(), &store).run_once(now).await?;
        let files = store.list(Table::Spans.dir()).await?;
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0]
                .location
                .filename()
                .is_some_and(|n| n.starts_with('c'))
        );
        let merged = store.read_parquet(files[0].location.as_ref()).await?;
        let merged = concat(Table::Spans, &merged)?;
        assert_eq!(merged.num_rows(), 15);
        let ids = merged.column_by_name(spans::TRACE_ID).ok_or("trace_id")?;
        let ids = datafusion::arrow::array::AsArray::as_string::<i32>(ids.as_ref());
        let sorted: Vec<&str> = ids.iter().flatten().collect();
        let mut expected = sorted.clone();
        expected.sort_unstable();
        assert_eq!(sorted, expected, "merged rows are sorted by trace id");
        Ok(())
    }

    /// Rows of the merged files and of the flush files left after one
    /// compaction pass over seven flush files of five rows, with a merge
    /// taking three files or more, holding at most `max_rows` and rewriting
    /// at most `max_rewritten_rows`.
    async fn one_pass_with_bounds(
        max_rows: usize,
        max_rewritten_rows: usize,
    ) -> Result<(Vec<usize>, Vec<usize>), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::local(&dir.path().join("store"))?;
        let files: Vec<(u64, u8)> = (0..7).map(|i| (i + 1, i as u8 * 5)).collect();
        write_flush_files(&store, &files).await?;
        let compactor = Compactor {
            config: CompactionConfig {
                max_rows,
                max_rewritten_rows,
                ..compactor(dir.path(), &store).config
            },
            ..compactor(dir.path(), &store)
        };
        let now = DateTime::<Utc>::from_timestamp_nanos(START_NS as i64 + 600_000_000_000);
        compactor.run_once(now).await?;

        let (mut merged, mut flushed) = (Vec::new(), Vec::new());
        for file in store.list(Table::Spans.dir()).await? {
            let rows = rows_in(&store, std::slice::from_ref(&file)).await?;
            if file.location.filename().is_some_and(|n| n.starts_with('c')) {
                merged.push(rows);
            } else {
                flushed.push(rows);
            }
        }
        Ok((merged, flushed))
    }

    #[tokio::test]
    async fn merges_rewrite_at_most_their_bound_of_rows_each() -> TestResult {
        // Two merges of three files in one pass; the last file waits for more.
        assert_eq!(
            one_pass_with_bounds(1000, 15).await?,
            (vec![15, 15], vec![5])
        );
        // A bound that fits fewer files than a merge takes still merges, two at a time.
        assert_eq!(
            one_pass_with_bounds(1000, 10).await?,
            (vec![10, 10, 10], vec![5])
        );
        // The row bound alone does not: two files are not worth a merge.
        assert_eq!(one_pass_with_bounds(10, 1000).await?, (vec![], vec![5; 7]));
        Ok(())
    }

    #[tokio::test]
    async fn a_merge_that_fails_leaves_its_inputs_and_nothing_else() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Store::local(&dir.path().join("store"))?;
        write_flush_files(&store, &[(1, 30), (2, 1)]).await?;
        // A file that is not Parquet (a disk error, a stray copy).
        let broken = store.file_path(&format!("{HOUR}/{}", layout::flush_file_name(3, 0)));
        std::fs::write(&broken, b"not parquet at all")?;
        let before: Vec<_> = std::fs::read_dir(store.file_path(HOUR))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;

        let compactor = compactor(dir.path(), &store);
        let now = DateTime::<Utc>::from_timestamp_nanos(START_NS as i64 + 600_000_000_000);
        assert!(compactor.run_once(now).await.is_err());

        let mut after: Vec<_> = std::fs::read_dir(store.file_path(HOUR))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        let mut before = before;
        before.sort();
        after.sort();
        assert_eq!(after, before, "no partial file, no input gone");
        assert!(!compactor.journal_path().exists());
        let readable: Vec<_> = store
            .list(Table::Spans.dir())
            .await?
            .into_iter()
            .filter(|f| {
                !f.location
                    .as_ref()
                    .ends_with(layout::flush_file_name(3, 0).as_str())
            })
            .collect();
        assert_eq!(rows_in(&store, &readable).await?, 10);
        Ok(())
    }

    #[tokio::test]
    async fn a_finished_hours_lone_flush_file_is_rewritten_as_merged() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Store::local(&dir.path().join("store"))?;
        let flushed = format!("{HOUR}/{}", layout::flush_file_name(1, 0));
        store
            .write_parquet(Table::Spans, &flushed, vec![batch(1, 4)?])
            .await?;
        let compactor = compactor(dir.path(), &store);
        // Still open (five minutes after the hour): a lone file stays.
        let open = DateTime::<Utc>::from_timestamp_nanos(START_NS as i64 + 3_900_000_000_000);
        compactor.run_once(open).await?;
        assert_eq!(
            store.list(Table::Spans.dir()).await?[0].location.as_ref(),
            flushed
        );
        let finished = DateTime::<Utc>::from_timestamp_nanos(START_NS as i64 + 4_000_000_000_000);
        compactor.run_once(finished).await?;
        let files = store.list(Table::Spans.dir()).await?;
        assert_eq!(files.len(), 1);
        assert!(
            files[0]
                .location
                .filename()
                .is_some_and(|n| n.starts_with('c'))
        );
        assert_eq!(rows_in(&store, &files).await?, 4);
        Ok(())
    }

    #[tokio::test]
    async fn files_of_an_unchecked_flush_are_left_alone() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Store::local(&dir.path().join("store"))?;
        // Segments past the checkpoint (100) may still be replayed from the WAL.
        for segment in [101, 102, 103] {
            store
                .write_parquet(
                    Table::Spans,
                    &format!("{HOUR}/{}", layout::flush_file_name(segment, 0)),
                    vec![batch(1, 2)?],
                )
                .await?;
        }
        let now = DateTime::<Utc>::from_timestamp_nanos(START_NS as i64 + 600_000_000_000);
        compactor(dir.path(), &store).run_once(now).await?;
        assert_eq!(store.list(Table::Spans.dir()).await?.len(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn an_interrupted_merge_is_finished_or_undone_at_start() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Store::local(&dir.path().join("store"))?;
        let inputs: Vec<String> = (1..=2)
            .map(|s| format!("{HOUR}/{}", layout::flush_file_name(s, 0)))
            .collect();
        for (i, input) in inputs.iter().enumerate() {
            store
                .write_parquet(Table::Spans, input, vec![batch(i as u8 * 10 + 1, 3)?])
                .await?;
        }
        let output = format!("{HOUR}/c-merged.parquet");
        let compactor = compactor(dir.path(), &store);

        // Killed after the journal, while the merged file was being written:
        // the inputs stay and the half-written file goes.
        compactor.write_journal(&Journal {
            output: output.clone(),
            inputs: inputs.clone(),
        })?;
        let partial = compactor.partial_path(&output);
        std::fs::write(&partial, b"PAR1 half a merge")?;
        compactor.recover().await?;
        assert_eq!(
            rows_in(&store, &store.list(Table::Spans.dir()).await?).await?,
            6
        );
        assert!(!compactor.journal_path().exists());
        assert!(!partial.exists());

        // Killed after the merged file, before the inputs were deleted: they go.
        compactor.write_journal(&Journal {
            output: output.clone(),
            inputs: inputs.clone(),
        })?;
        store
            .write_parquet(Table::Spans, &output, vec![batch(1, 3)?, batch(11, 3)?])
            .await?;
        compactor.recover().await?;
        let files = store.list(Table::Spans.dir()).await?;
        assert_eq!(
            files
                .iter()
                .map(|f| f.location.to_string())
                .collect::<Vec<_>>(),
            vec![output]
        );
        assert_eq!(rows_in(&store, &files).await?, 6);
        Ok(())
    }

    #[tokio::test]
    async fn hours_past_the_retention_are_deleted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Store::local(&dir.path().join("store"))?;
        store
            .write_parquet(
                Table::Spans,
                &format!("{HOUR}/{}", layout::flush_file_name(1, 0)),
                vec![batch(1, 1)?],
            )
            .await?;
        let config = CompactionConfig {
            retention: Duration::from_secs(3600),
            ..CompactionConfig::default()
        };
        let compactor = Compactor::new(
            store.clone(),
            dir.path().to_owned(),
            Arc::new(AtomicU64::new(100)),
            Arc::new(RwLock::new(())),
            config,
        );
        // 04:00-05:00 is kept at 05:59 with one hour of retention, deleted at 06:00.
        let at = |minutes: i64| {
            DateTime::<Utc>::from_timestamp_nanos(START_NS as i64 + minutes * 60_000_000_000)
        };
        compactor.run_once(at(119)).await?;
        assert_eq!(store.list(Table::Spans.dir()).await?.len(), 1);
        compactor.run_once(at(120)).await?;
        assert_eq!(store.list(Table::Spans.dir()).await?.len(), 0);
        Ok(())
    }
}
