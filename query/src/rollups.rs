//! Rollups: for each closed hour, requests per service and operation and calls
//! per service-map edge, counted per duration bucket (see `sketch`) per ten
//! minutes and again for the whole hour, so RED figures, histograms and the map over hours or days
//! read a few thousand rows instead of millions of spans — what the
//! OpenTelemetry Collector's spanmetrics and servicegraph connectors keep,
//! but in the store, next to the spans they summarise.
//!
//! ```text
//! rollups/2026-11-20/13-<fingerprint>.parquet
//! ```
//! The fingerprint is that of the hour's span files (names and sizes) the
//! rollup was built from. A query uses a rollup only while the hour still
//! holds exactly those files, so spans that arrive late (a new flush file)
//! send the hour back to raw spans until the rollup is rebuilt. Rollups are
//! built only for hours that compaction has finished (no flush files left)
//! and whose calls' other sides had time to arrive.
//!
//! A question is answered from the rollups for every whole ten minutes they
//! cover and from raw spans for the rest (the open hour, partial buckets at
//! the range's ends); with no rollup in the range the answer is exactly what
//! raw spans give.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    AsArray, Int64Array, RecordBatch, StringArray, UInt16Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt16Type, UInt64Type};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::metadata::RowGroupMetaData;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::statistics::Statistics;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use weft_schema::layout;

use crate::engine::{QueryEngine, QueryError};
use crate::sketch::bucket_of;
use crate::stats::{EDGE_KINDS, EdgeKind, HOUR_NS, RequestFilter, WINDOW_MARGIN_NS};

pub const ROLLUPS_DIR: &str = "rollups";
/// The time resolution of a rollup.
pub const ROLLUP_STEP_NS: i64 = 10 * 60 * 1_000_000_000;
/// How long after an hour ends its rollup may be built: compaction finishes
/// an hour five minutes after it ends, and a call near the end of the hour
/// may be answered up to the join margin later.
const SETTLE_NS: i64 = WINDOW_MARGIN_NS + 10 * 60 * 1_000_000_000;

/// Changes whenever the rollup files' layout or meaning does, so that rollups
/// written by another version are rebuilt rather than misread.
const FORMAT: &str = "weft-rollup-3";
/// Rows per row group: small, so a question about one service reads little.
const ROWS_PER_GROUP: usize = 8 * 1024;

/// The kinds of row, in the order the rows are sorted by: edges first.
const REQUEST: &str = "request";

mod column {
    pub const BUCKET_START: &str = "bucket_start";
    pub const KIND: &str = "kind";
    pub const SERVICE: &str = "service";
    pub const NAME: &str = "name";
    pub const DURATION_BUCKET: &str = "duration_bucket";
    pub const COUNT: &str = "count";
    pub const ERRORS: &str = "errors";
    pub const WIDTH_NS: &str = "width_ns";
}

fn schema() -> SchemaRef {
    use column::*;
    Arc::new(Schema::new(vec![
        Field::new(BUCKET_START, DataType::Int64, false),
        Field::new(KIND, DataType::Utf8, false),
        Field::new(SERVICE, DataType::Utf8, false),
        Field::new(NAME, DataType::Utf8, false),
        Field::new(DURATION_BUCKET, DataType::UInt16, false),
        Field::new(COUNT, DataType::UInt64, false),
        Field::new(ERRORS, DataType::UInt64, false),
        Field::new(WIDTH_NS, DataType::Int64, false),
    ]))
}

/// One row of a rollup, borrowed from its batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RollupRow<'a> {
    pub bucket_start: i64,
    /// `request`, or an edge kind (`call`, `link`, `peer`).
    pub kind: &'a str,
    /// The service answering, or an edge's `from`.
    pub service: &'a str,
    /// The operation, or an edge's `to`.
    pub name: &'a str,
    pub duration_bucket: u16,
    pub count: u64,
    pub errors: u64,
}

impl RollupRow<'_> {
    pub(crate) fn is_request(&self) -> bool {
        self.kind == REQUEST
    }

    pub(crate) fn edge_kind(&self) -> Option<EdgeKind> {
        EDGE_KINDS
            .into_iter()
            .find(|kind| kind.as_str() == self.kind)
    }
}

/// Which rollup rows a question needs.
#[derive(Debug, Clone)]
pub(crate) enum Select {
    /// Requests, of one service or of all.
    Requests { service: Option<String> },
    /// Calls, links and peer calls.
    Edges,
}

impl Select {
    /// Whether a row group whose `kind` and `service` lie in these ranges may
    /// hold a wanted row (ranges unknown: it may).
    fn may_hold(&self, kinds: Option<(&str, &str)>, services: Option<(&str, &str)>) -> bool {
        // Both are sorted by the writer, so a row group holds a narrow range.
        let kinds_hold =
            |wanted: &dyn Fn(&str, &str) -> bool| kinds.is_none_or(|(min, max)| wanted(min, max));
        match self {
            Select::Edges => kinds_hold(&|min, _| min < REQUEST),
            Select::Requests { service } => {
                kinds_hold(&|min, max| min <= REQUEST && REQUEST <= max)
                    && service.as_deref().is_none_or(|service| {
                        services.is_none_or(|(min, max)| min <= service && service <= max)
                    })
            }
        }
    }
}

/// What the rollups answer of a range, and what is left for raw spans.
pub(crate) struct Coverage {
    batches: Vec<RecordBatch>,
    /// Starts of the ten-minute buckets served by ten-minute rows, sorted.
    covered: Vec<i64>,
    /// Starts of the hours served whole by hour rows, sorted.
    covered_hours: Vec<i64>,
    /// Inclusive ranges still to be read from spans.
    pub raw: Vec<(i64, i64)>,
}

impl Coverage {
    /// Calls `visit` for each rollup row of a covered bucket.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(RollupRow<'_>)) {
        for batch in &self.batches {
            let [
                starts,
                kinds,
                services,
                names,
                buckets,
                counts,
                errors,
                widths,
            ] = std::array::from_fn(|i| batch.column(i));
            let widths = widths.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let starts = starts.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let (kinds, services, names) = (
                kinds.as_string::<i32>(),
                services.as_string::<i32>(),
                names.as_string::<i32>(),
            );
            let buckets = buckets.as_primitive::<UInt16Type>();
            let (counts, errors) = (
                counts.as_primitive::<UInt64Type>(),
                errors.as_primitive::<UInt64Type>(),
            );
            for row in 0..batch.num_rows() {
                let bucket_start = starts.value(row);
                let covered = if widths.value(row) == HOUR_NS {
                    &self.covered_hours
                } else {
                    &self.covered
                };
                if covered.binary_search(&bucket_start).is_err() {
                    continue;
                }
                visit(RollupRow {
                    bucket_start,
                    kind: kinds.value(row),
                    service: services.value(row),
                    name: names.value(row),
                    duration_bucket: buckets.value(row),
                    count: counts.value(row),
                    errors: errors.value(row),
                });
            }
        }
    }
}

/// The smallest and largest number of a column in a row group, from its statistics.
fn int_range(group: &RowGroupMetaData, column: usize) -> Option<(i64, i64)> {
    let Some(Statistics::Int64(stats)) = group.column(column).statistics() else {
        return None;
    };
    Some((*stats.min_opt()?, *stats.max_opt()?))
}

/// The smallest and largest text of a column in a row group, from its statistics.
fn text_range(group: &RowGroupMetaData, column: usize) -> Option<(&str, &str)> {
    let Some(Statistics::ByteArray(stats)) = group.column(column).statistics() else {
        return None;
    };
    let min = stats.min_opt()?.as_utf8().ok()?;
    let max = stats.max_opt()?.as_utf8().ok()?;
    Some((min, max))
}

/// FNV-1a: a fingerprint that stays the same across builds of Weft.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hour_text(hour_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(hour_ns)
        .format("%Y-%m-%d/%H")
        .to_string()
}

/// The span files of each hour, by the hour's start.
#[derive(Default)]
pub(crate) struct HourFiles {
    hours: BTreeMap<i64, Vec<ObjectMeta>>,
}

impl HourFiles {
    /// Whether compaction is done with the hour: it has no flush file.
    pub(crate) fn is_finished(&self, hour: i64) -> bool {
        self.hours.get(&hour).is_some_and(|files| {
            files.iter().all(|f| {
                f.location
                    .filename()
                    .and_then(layout::flush_segment_of)
                    .is_none()
            })
        })
    }

    /// A fingerprint of the hour's files (names and sizes): it changes
    /// whenever a file is added, merged away or replaced.
    pub(crate) fn fingerprint(&self, hour: i64) -> Option<u64> {
        let files = self.hours.get(&hour)?;
        let mut names: Vec<String> = files
            .iter()
            .map(|f| format!("{}:{}", f.location, f.size))
            .collect();
        names.sort_unstable();
        Some(fingerprint(&format!("{FORMAT};{}", names.join(","))))
    }

    /// The files of `hour`.
    pub(crate) fn files_of(&self, hour: i64) -> &[ObjectMeta] {
        self.hours.get(&hour).map_or(&[], Vec::as_slice)
    }

    /// The hours that have files, by start.
    pub(crate) fn hours(&self) -> impl Iterator<Item = i64> + '_ {
        self.hours.keys().copied()
    }

    /// Where the rollup of `hour` built from its present files lives.
    fn rollup_path(&self, hour: i64) -> Option<String> {
        let print = self.fingerprint(hour)?;
        Some(format!(
            "{ROLLUPS_DIR}/{}-{print:016x}{}",
            hour_text(hour),
            layout::PARQUET_SUFFIX
        ))
    }
}

/// What one pass of rollup upkeep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RollupReport {
    pub built: usize,
    pub deleted: usize,
}

impl QueryEngine {
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, QueryError> {
        let prefix = ObjectPath::from(prefix);
        let files: Vec<ObjectMeta> = self
            .objects()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(datafusion::error::DataFusionError::from)?;
        Ok(files
            .into_iter()
            .filter(|f| f.location.as_ref().ends_with(layout::PARQUET_SUFFIX))
            .collect())
    }

    pub(crate) async fn span_files(&self) -> Result<HourFiles, QueryError> {
        let mut files = HourFiles::default();
        for file in self.list(layout::SPANS_DIR).await? {
            if let Some(hour) =
                layout::hour_of_path(file.location.as_ref()).and_then(|h| h.timestamp_nanos_opt())
            {
                files.hours.entry(hour).or_default().push(file);
            }
        }
        Ok(files)
    }

    /// Builds the rollups of finished hours that lack one (or whose files
    /// changed), and deletes rollups whose files are gone or replaced.
    pub async fn maintain_rollups(&self, now_ns: i64) -> Result<RollupReport, QueryError> {
        let files = self.span_files().await?;
        let existing: HashSet<String> = self
            .list(ROLLUPS_DIR)
            .await?
            .into_iter()
            .map(|f| f.location.to_string())
            .collect();
        let mut report = RollupReport::default();
        let mut wanted = HashSet::new();
        for &hour in files.hours.keys() {
            let Some(path) = files.rollup_path(hour) else {
                continue;
            };
            if hour + HOUR_NS + SETTLE_NS > now_ns || !files.is_finished(hour) {
                continue;
            }
            if !existing.contains(&path) {
                let batch = self.build_rollup(hour).await?;
                self.write_rollup(&path, batch).await?;
                report.built += 1;
                tracing::debug!(%path, "rollup built");
            }
            // Like a rollup, what an attribute search needs of a closed hour
            // is read once here, not on the first search (kept in memory).
            self.attribute_keys([hour]).await?;
            wanted.insert(path);
        }
        // A rollup whose hour's files changed stays until its replacement is
        // built; one whose hour is gone goes at once.
        let hour_of = |path: &str| path.rsplit_once('-').map(|(hour, _)| hour.to_owned());
        let replaced: HashSet<String> = wanted.iter().filter_map(|p| hour_of(p)).collect();
        let live: HashSet<String> = files
            .hours
            .keys()
            .map(|&hour| format!("{ROLLUPS_DIR}/{}", hour_text(hour)))
            .collect();
        for stale in existing.difference(&wanted) {
            let Some(hour) = hour_of(stale) else {
                continue;
            };
            if replaced.contains(&hour) || !live.contains(&hour) {
                self.objects()
                    .delete(&ObjectPath::from(stale.as_str()))
                    .await
                    .map_err(datafusion::error::DataFusionError::from)?;
                report.deleted += 1;
            }
        }
        Ok(report)
    }

    /// Requests and edge calls of one hour, per ten minutes and duration bucket.
    async fn build_rollup(&self, hour: i64) -> Result<RecordBatch, QueryError> {
        // (kind, service or from, operation or to, bucket start, duration
        // bucket), sorted: equal texts sit together and compress to almost
        // nothing, and row-group statistics on kind and service let a
        // question about one service skip the rest.
        type Key = (String, String, String, i64, u16);
        let mut rows: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
        let bucket_start = |start_ns: i64| start_ns - start_ns.rem_euclid(ROLLUP_STEP_NS);
        let hour_end = hour + HOUR_NS - 1;
        let filter = RequestFilter {
            start_ns: hour,
            end_ns: hour_end,
            ..RequestFilter::default()
        };
        self.for_each_request(
            &filter,
            |service, operation, start_ns, duration_ns, error| {
                let slot = rows
                    .entry((
                        REQUEST.to_owned(),
                        service.to_owned(),
                        operation.to_owned(),
                        bucket_start(start_ns),
                        bucket_of(duration_ns),
                    ))
                    .or_default();
                slot.0 += 1;
                slot.1 += u64::from(error);
            },
        )
        .await?;
        let known = self.known_services(hour, hour_end).await?.0;
        let (range_start, range_end) = (hour - WINDOW_MARGIN_NS, hour_end + WINDOW_MARGIN_NS);
        for call in self
            .edge_calls(range_start, range_end, hour, hour_end, &known)
            .await?
        {
            let slot = rows
                .entry((
                    call.kind.as_str().to_owned(),
                    call.from,
                    call.to,
                    bucket_start(call.start_ns),
                    bucket_of(call.latency_ns),
                ))
                .or_default();
            slot.0 += 1;
            slot.1 += u64::from(call.error);
        }
        // The same counts per whole hour: a range of whole hours reads these,
        // a sixth as many rows or fewer.
        let mut hour_rows: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
        for ((kind, service, name, _, bucket), (count, errors)) in &rows {
            let slot = hour_rows
                .entry((kind.clone(), service.clone(), name.clone(), hour, *bucket))
                .or_default();
            slot.0 += count;
            slot.1 += errors;
        }
        // Ten-minute rows first, then hour rows: each set sorted as above.
        let widths: Vec<i64> = std::iter::repeat_n(ROLLUP_STEP_NS, rows.len())
            .chain(std::iter::repeat_n(HOUR_NS, hour_rows.len()))
            .collect();
        let rows: Vec<(Key, (u64, u64))> = rows.into_iter().chain(hour_rows).collect();
        let keys = || rows.iter().map(|(k, _)| k);
        let values = || rows.iter().map(|(_, v)| v);
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(keys().map(|k| k.3).collect::<Int64Array>()),
                Arc::new(keys().map(|k| Some(k.0.as_str())).collect::<StringArray>()),
                Arc::new(keys().map(|k| Some(k.1.as_str())).collect::<StringArray>()),
                Arc::new(keys().map(|k| Some(k.2.as_str())).collect::<StringArray>()),
                Arc::new(keys().map(|k| k.4).collect::<UInt16Array>()),
                Arc::new(values().map(|v| v.0).collect::<UInt64Array>()),
                Arc::new(values().map(|v| v.1).collect::<UInt64Array>()),
                Arc::new(Int64Array::from(widths)),
            ],
        )?;
        Ok(batch)
    }

    async fn write_rollup(&self, path: &str, batch: RecordBatch) -> Result<(), QueryError> {
        let bytes = tokio::task::spawn_blocking(move || {
            // Not compressed: dictionaries and run lengths already make the file
            // small, and a zstd context per page cost more than reading it.
            let props = WriterProperties::builder()
                .set_compression(Compression::UNCOMPRESSED)
                .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
                .build();
            let mut out = Vec::new();
            let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
            writer.write(&batch)?;
            writer.close()?;
            Ok::<_, datafusion::parquet::errors::ParquetError>(out)
        })
        .await
        .map_err(|e| QueryError::Engine(datafusion::error::DataFusionError::External(e.into())))?
        .map_err(datafusion::error::DataFusionError::from)?;
        self.objects()
            .put(&ObjectPath::from(path), PutPayload::from(bytes))
            .await
            .map_err(datafusion::error::DataFusionError::from)?;
        Ok(())
    }

    /// The rows of one rollup that `select` wants, of width `width_ns`.
    async fn read_rollup(
        &self,
        path: &str,
        select: Select,
        width_ns: i64,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let bytes = self
            .objects()
            .get(&ObjectPath::from(path))
            .await
            .map_err(datafusion::error::DataFusionError::from)?
            .bytes()
            .await
            .map_err(datafusion::error::DataFusionError::from)?;
        let batches = tokio::task::spawn_blocking(move || {
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
            let groups: Vec<usize> = builder
                .metadata()
                .row_groups()
                .iter()
                .enumerate()
                .filter(|(_, group)| {
                    group.num_columns() > 7
                        && select.may_hold(text_range(group, 1), text_range(group, 2))
                        && int_range(group, 7)
                            .is_none_or(|(min, max)| min <= width_ns && width_ns <= max)
                })
                .map(|(i, _)| i)
                .collect();
            builder
                .with_row_groups(groups)
                .with_batch_size(64 * 1024)
                .build()?
                .collect::<Result<Vec<_>, _>>()
                .map_err(datafusion::parquet::errors::ParquetError::from)
        })
        .await
        .map_err(|e| QueryError::Engine(datafusion::error::DataFusionError::External(e.into())))?
        .map_err(datafusion::error::DataFusionError::from)?;
        // A file written by another version of Weft is not trusted.
        if batches
            .iter()
            .any(|b| b.schema().fields() != schema().fields())
        {
            return Ok(Vec::new());
        }
        Ok(batches)
    }

    /// Which of `[start_ns, end_ns]` the rollups can answer: whole hours from
    /// hour rows, whole ten minutes of other hours from ten-minute rows. With
    /// `series` (origin, step) a row is used only if it falls inside one step. `None` when no rollup applies: the caller reads raw spans only.
    pub(crate) async fn coverage(
        &self,
        start_ns: i64,
        end_ns: i64,
        series: Option<(i64, i64)>,
        select: &Select,
    ) -> Result<Option<Coverage>, QueryError> {
        let rollups: HashSet<String> = self
            .list(ROLLUPS_DIR)
            .await?
            .into_iter()
            .map(|f| f.location.to_string())
            .collect();
        if rollups.is_empty() {
            return Ok(None);
        }
        let files = self.span_files().await?;
        let (mut covered, mut covered_hours) = (Vec::new(), Vec::new());
        let mut batches = Vec::new();
        let in_one_step = |from: i64, to: i64| {
            series.is_none_or(|(origin, step)| {
                (from - origin).div_euclid(step) == (to - origin).div_euclid(step)
            })
        };
        let first_hour = start_ns - start_ns.rem_euclid(HOUR_NS);
        for (&hour, _) in files.hours.range(first_hour..=end_ns) {
            let Some(path) = files.rollup_path(hour).filter(|p| rollups.contains(p)) else {
                continue;
            };
            let last = hour + HOUR_NS - 1;
            if hour >= start_ns && last <= end_ns && in_one_step(hour, last) {
                covered_hours.push(hour);
                batches.extend(self.read_rollup(&path, select.clone(), HOUR_NS).await?);
                continue;
            }
            let before = covered.len();
            for bucket in (hour..hour + HOUR_NS).step_by(ROLLUP_STEP_NS as usize) {
                let last = bucket + ROLLUP_STEP_NS - 1;
                if bucket >= start_ns && last <= end_ns && in_one_step(bucket, last) {
                    covered.push(bucket);
                }
            }
            if covered.len() > before {
                batches.extend(
                    self.read_rollup(&path, select.clone(), ROLLUP_STEP_NS)
                        .await?,
                );
            }
        }
        if covered.is_empty() && covered_hours.is_empty() {
            return Ok(None);
        }
        let mut spans: Vec<(i64, i64)> = covered
            .iter()
            .map(|&b| (b, ROLLUP_STEP_NS))
            .chain(covered_hours.iter().map(|&h| (h, HOUR_NS)))
            .collect();
        spans.sort_unstable();
        let mut raw = Vec::new();
        let mut from = start_ns;
        for &(covered_start, width) in &spans {
            if covered_start > from {
                raw.push((from, covered_start - 1));
            }
            from = covered_start + width;
        }
        if from <= end_ns {
            raw.push((from, end_ns));
        }
        // A raw range over hours without files has nothing to read.
        raw.retain(|&(from, to)| {
            files
                .hours
                .range(from - from.rem_euclid(HOUR_NS)..=to)
                .next()
                .is_some()
        });
        Ok(Some(Coverage {
            batches,
            covered,
            covered_hours,
            raw,
        }))
    }
}
