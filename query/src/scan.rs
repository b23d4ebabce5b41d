//! A direct read of a time range's span files, for a view that turns every
//! span of the range into rows of its own (insights).
//!
//! DataFusion spreads a scan over its partitions by whole row groups, so an
//! hour's file of four row groups splits 2½ : 1½ and one core does most of
//! the work; and it hands back every text as its own string. Here the rows
//! are cut into one equal run per core (a run may start inside a row group:
//! the page index lets the reader skip straight to it), and the columns the
//! caller names come back dictionary-encoded, as they are stored, so a text
//! repeated on many rows is looked at once per batch, not once per row.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, RecordBatch, Scalar, TimestampNanosecondArray, new_null_array,
};
use datafusion::arrow::compute::and;
use datafusion::arrow::compute::kernels::cmp::{gt_eq, lt_eq};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampNanosecondType};
use datafusion::arrow::error::ArrowError;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter, RowSelection, RowSelector,
};
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::PageIndexPolicy;
use datafusion::parquet::file::statistics::Statistics;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::StreamExt;
use object_store::ObjectMeta;
use weft_schema::spans as s;

use crate::engine::{QueryEngine, QueryError, is_missing_file};
use crate::stats::HOUR_NS;

/// Rows per batch handed to the fold.
const BATCH_ROWS: usize = 8192;

/// Which columns to read, and how.
pub(crate) struct SpanColumns {
    /// The columns of each batch, in this order; a column a file lacks (an
    /// older file) comes back all null.
    pub names: Vec<&'static str>,
    /// Those of `names` (text columns) read as `Dictionary(Int32, Utf8)`.
    pub dictionaries: Vec<&'static str>,
}

impl SpanColumns {
    /// The type each column comes back with.
    fn field(&self, name: &str) -> Option<Field> {
        let schema = s::schema();
        let field = schema.field_with_name(name).ok()?.clone();
        // Nullable: a column a file lacks comes back all null.
        let field = field.with_nullable(true);
        Some(if self.dictionaries.contains(&name) {
            field.with_data_type(dictionary())
        } else {
            field
        })
    }
}

fn dictionary() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// One file, opened: its footer with the page index, read with the types asked for.
struct OpenFile {
    meta: ObjectMeta,
    reader: ArrowReaderMetadata,
}

/// A run of one file's rows: the row groups it touches and which of their
/// rows; `filter` when some of those rows may lie outside the range.
struct Piece {
    file: usize,
    row_groups: Vec<usize>,
    selection: Vec<RowSelector>,
    filter: bool,
}

impl QueryEngine {
    /// Folds the spans of `[start_ns, end_ns]` (their `columns`) into one `T`
    /// per core, each from an equal share of the rows, read side by side.
    pub(crate) async fn fold_spans<T, F>(
        &self,
        start_ns: i64,
        end_ns: i64,
        columns: SpanColumns,
        fold: F,
    ) -> Result<Vec<T>, QueryError>
    where
        T: Default + Send + 'static,
        F: Fn(&mut T, &RecordBatch) + Send + Sync + 'static,
    {
        let _reading = match self.store_lock() {
            Some(lock) => Some(lock.read().await),
            None => None,
        };
        let fold = Arc::new(fold);
        let columns = Arc::new(columns);
        let work = async {
            // A file can vanish between listing and reading when another
            // process compacts the store; the next listing no longer names it.
            let mut attempts = 0;
            loop {
                attempts += 1;
                match self.try_fold_spans(start_ns, end_ns, &columns, &fold).await {
                    Err(QueryError::Engine(e)) if attempts < 3 && is_missing_file(&e) => continue,
                    other => return other,
                }
            }
        };
        tokio::time::timeout(self.limits().timeout, work)
            .await
            .map_err(|_| QueryError::Timeout(self.limits().timeout))?
    }

    async fn try_fold_spans<T, F>(
        &self,
        start_ns: i64,
        end_ns: i64,
        columns: &Arc<SpanColumns>,
        fold: &Arc<F>,
    ) -> Result<Vec<T>, QueryError>
    where
        T: Default + Send + 'static,
        F: Fn(&mut T, &RecordBatch) + Send + Sync + 'static,
    {
        let listed = self.span_files().await?;
        let first_hour = start_ns.div_euclid(HOUR_NS) * HOUR_NS;
        let mut files = Vec::new();
        for hour in listed.hours().filter(|&h| h >= first_hour && h <= end_ns) {
            for meta in listed.files_of(hour) {
                files.push(self.open(meta.clone(), columns).await?);
            }
        }
        let parts = split(
            &files,
            start_ns,
            end_ns,
            std::thread::available_parallelism().map_or(2, usize::from),
        );
        let files = Arc::new(files);
        let readers = Arc::new(DefaultParquetFileReaderFactory::new(Arc::clone(
            self.objects(),
        )));
        let output: SchemaRef = Arc::new(Schema::new(
            columns
                .names
                .iter()
                .map(|name| {
                    columns
                        .field(name)
                        .ok_or_else(|| QueryError::Invalid(format!("no span column {name}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ));
        // Dropping the set (on a timeout) aborts the tasks.
        let mut tasks = tokio::task::JoinSet::new();
        for (index, pieces) in parts.into_iter().enumerate() {
            let (files, fold, output) = (Arc::clone(&files), Arc::clone(fold), Arc::clone(&output));
            let columns = Arc::clone(columns);
            let readers = Arc::clone(&readers);
            tasks.spawn(async move {
                let mut part = T::default();
                for piece in pieces {
                    let file = &files[piece.file];
                    let mut batches =
                        read_piece(readers.as_ref(), file, &piece, &columns, start_ns, end_ns)?;
                    while let Some(batch) = batches.next().await {
                        fold(&mut part, &arrange(&batch?, &output)?);
                    }
                }
                Ok::<_, DataFusionError>((index, part))
            });
        }
        let mut parts = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            let part = joined.map_err(|e| DataFusionError::External(Box::new(e)))??;
            parts.push(part);
        }
        parts.sort_by_key(|(index, _)| *index);
        Ok(parts.into_iter().map(|(_, part)| part).collect())
    }

    async fn open(&self, meta: ObjectMeta, columns: &SpanColumns) -> Result<OpenFile, QueryError> {
        let factory = DefaultParquetFileReaderFactory::new(Arc::clone(self.objects()));
        let mut reader = file_reader(&factory, &meta)?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let stored = ArrowReaderMetadata::load_async(&mut reader, options.clone())
            .await
            .map_err(parquet_error)?;
        // The file's own types, but dictionaries where asked for.
        let hinted = Schema::new_with_metadata(
            stored
                .schema()
                .fields()
                .iter()
                .map(|field| {
                    let wanted = columns.dictionaries.contains(&field.name().as_str())
                        && field.data_type() == &DataType::Utf8;
                    let field = field.as_ref().clone();
                    if wanted {
                        field.with_data_type(dictionary())
                    } else {
                        field
                    }
                })
                .collect::<Vec<_>>(),
            stored.schema().metadata().clone(),
        );
        let reader = ArrowReaderMetadata::try_new(
            Arc::clone(stored.metadata()),
            options.with_schema(Arc::new(hinted)),
        )
        .map_err(parquet_error)?;
        Ok(OpenFile { meta, reader })
    }
}

/// The rows of `files` that may hold spans of the range, cut into `parts`
/// runs of (nearly) equal length, in file order.
fn split(files: &[OpenFile], start_ns: i64, end_ns: i64, parts: usize) -> Vec<Vec<Piece>> {
    // (file, row group, rows, whether all its rows lie in the range)
    let mut groups = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let metadata = file.reader.metadata();
        let time = file.reader.schema().index_of(s::START_TIME).ok();
        for (group, row_group) in metadata.row_groups().iter().enumerate() {
            let bounds = time.and_then(|column| match row_group.column(column).statistics() {
                Some(Statistics::Int64(stats)) => Some((*stats.min_opt()?, *stats.max_opt()?)),
                _ => None,
            });
            match bounds {
                Some((min, max)) if max < start_ns || min > end_ns => {}
                Some((min, max)) => groups.push((
                    index,
                    group,
                    row_group.num_rows() as usize,
                    min >= start_ns && max <= end_ns,
                )),
                None => groups.push((index, group, row_group.num_rows() as usize, false)),
            }
        }
    }
    let total: usize = groups.iter().map(|g| g.2).sum();
    let share = total.div_ceil(parts.max(1)).max(1);
    let mut out: Vec<Vec<Piece>> = Vec::new();
    let mut room = 0;
    for (file, group, rows, inside) in groups {
        let mut done = 0;
        while done < rows {
            if room == 0 {
                out.push(Vec::new());
                room = share;
            }
            let take = room.min(rows - done);
            let Some(pieces) = out.last_mut() else { break };
            // Runs of one file next to each other become one piece.
            match pieces.last_mut() {
                Some(piece) if piece.file == file && done == 0 => {
                    piece.row_groups.push(group);
                    piece.selection.push(RowSelector::select(take));
                    piece.filter |= !inside;
                }
                _ => {
                    let mut selection = Vec::new();
                    if done > 0 {
                        selection.push(RowSelector::skip(done));
                    }
                    selection.push(RowSelector::select(take));
                    pieces.push(Piece {
                        file,
                        row_groups: vec![group],
                        selection,
                        filter: !inside,
                    });
                }
            }
            if done + take < rows
                && let Some(piece) = out.last_mut().and_then(|p| p.last_mut())
            {
                piece.selection.push(RowSelector::skip(rows - done - take));
            }
            done += take;
            room -= take;
        }
    }
    out
}

/// The batches of one piece, only the rows in the range when some may not be.
fn file_reader(
    factory: &DefaultParquetFileReaderFactory,
    meta: &ObjectMeta,
) -> Result<Box<dyn AsyncFileReader>, DataFusionError> {
    // (`AsyncFileReader` is `Send` itself: the plain box is still `Send`.)
    Ok(factory.create_reader(
        0,
        PartitionedFile::from(meta.clone()),
        None,
        &ExecutionPlanMetricsSet::new(),
    )?)
}

fn read_piece(
    factory: &DefaultParquetFileReaderFactory,
    file: &OpenFile,
    piece: &Piece,
    columns: &SpanColumns,
    start_ns: i64,
    end_ns: i64,
) -> Result<ParquetRecordBatchStream<Box<dyn AsyncFileReader>>, DataFusionError> {
    let reader = file_reader(factory, &file.meta)?;
    let descriptor = file.reader.metadata().file_metadata().schema_descr_ptr();
    let schema = file.reader.schema();
    let wanted = columns
        .names
        .iter()
        .filter_map(|name| schema.index_of(name).ok());
    let mut builder =
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.reader.clone())
            .with_projection(ProjectionMask::roots(&descriptor, wanted))
            .with_row_groups(piece.row_groups.clone())
            .with_row_selection(RowSelection::from(piece.selection.clone()))
            .with_batch_size(BATCH_ROWS);
    if piece.filter
        && let Ok(time) = file.reader.schema().index_of(s::START_TIME)
    {
        let mask = ProjectionMask::roots(&descriptor, [time]);
        let in_range = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let times = batch
                .column(0)
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| ArrowError::CastError("start_time is not a timestamp".into()))?;
            // The bounds in the column's own time zone, or they do not compare.
            let bound = |ns: i64| {
                Scalar::new(
                    TimestampNanosecondArray::from_value(ns, 1)
                        .with_timezone_opt(times.timezone().map(Arc::<str>::from)),
                )
            };
            let (start, end) = (bound(start_ns), bound(end_ns));
            let from: BooleanArray = gt_eq(times, &start)?;
            and(&from, &lt_eq(times, &end)?)
        });
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(in_range)]));
    }
    builder
        .build()
        .map_err(|e| DataFusionError::ParquetError(Box::new(e)))
}

/// `batch`'s columns in the order and types of `output`; a column the file
/// lacks, all null.
fn arrange(batch: &RecordBatch, output: &SchemaRef) -> Result<RecordBatch, DataFusionError> {
    let columns = output
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(Arc::clone(column)),
            Some(column) => Ok(datafusion::arrow::compute::cast(column, field.data_type())?),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, DataFusionError>>()?;
    let options =
        datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(output),
        columns,
        &options,
    )?)
}

fn parquet_error(error: ParquetError) -> QueryError {
    QueryError::Engine(DataFusionError::ParquetError(Box::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};
    use weft_schema::layout;

    use crate::engine::QueryLimits;

    const HOUR_A: i64 = 1_795_219_200_000_000_000;
    const HOUR_B: i64 = HOUR_A + HOUR_NS;

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    /// A file of `(service, start)` rows in row groups of 10 and pages of 4,
    /// so that shares start inside row groups and pages.
    async fn put_file(store: &InMemory, name: &str, rows: &[(String, i64)]) -> TestResult {
        let schema = Arc::new(Schema::new(vec![
            Field::new(s::SERVICE_NAME, DataType::Utf8, true),
            Field::new(
                s::START_TIME,
                DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Nanosecond,
                    Some(weft_schema::TIME_ZONE.into()),
                ),
                true,
            ),
        ]));
        let services = StringArray::from_iter_values(rows.iter().map(|(s, _)| s.as_str()));
        let starts = TimestampNanosecondArray::from_iter_values(rows.iter().map(|(_, t)| *t))
            .with_timezone(weft_schema::TIME_ZONE);
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(services), Arc::new(starts)],
        )?;
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(10))
            .set_data_page_row_count_limit(4)
            .set_write_batch_size(4)
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(properties))?;
        writer.write(&batch)?;
        writer.close()?;
        let path = format!(
            "{}/{name}{}",
            layout::hour_dir(layout::SPANS_DIR, rows[0].1),
            layout::PARQUET_SUFFIX
        );
        store
            .put(
                &object_store::path::Path::from(path),
                PutPayload::from(bytes),
            )
            .await?;
        Ok(())
    }

    fn rows(hour: i64, count: usize, tag: &str) -> Vec<(String, i64)> {
        (0..count)
            .map(|i| (format!("{tag}{}", i % 3), hour + i as i64 * 60_000_000_000))
            .collect()
    }

    /// Each part's rows as (service, start).
    #[derive(Default)]
    struct Seen(Vec<(String, i64)>);

    async fn scan(
        engine: &QueryEngine,
        start: i64,
        end: i64,
    ) -> TestResult<Vec<Vec<(String, i64)>>> {
        let columns = SpanColumns {
            names: vec![s::START_TIME, s::SERVICE_NAME, s::TRACE_ID],
            dictionaries: vec![s::SERVICE_NAME],
        };
        let parts = engine
            .fold_spans(start, end, columns, |seen: &mut Seen, batch| {
                assert!(matches!(
                    batch.column(1).data_type(),
                    DataType::Dictionary(..)
                ));
                assert_eq!(
                    batch.column(2).null_count(),
                    batch.num_rows(),
                    "no trace_id column"
                );
                let starts = batch.column(0).as_primitive::<TimestampNanosecondType>();
                let services = datafusion::arrow::compute::cast(batch.column(1), &DataType::Utf8)
                    .expect("service names cast to text");
                let services = services.as_string::<i32>();
                for row in 0..batch.num_rows() {
                    seen.0
                        .push((services.value(row).to_owned(), starts.value(row)));
                }
            })
            .await?;
        Ok(parts.into_iter().map(|seen| seen.0).collect())
    }

    #[test]
    fn a_file_gone_under_the_parquet_reader_counts_as_missing() {
        let gone = || object_store::Error::NotFound {
            path: "spans/2026-11-20/23/c.parquet".into(),
            source: "deleted by compaction".into(),
        };
        let wrapped =
            DataFusionError::ParquetError(Box::new(ParquetError::External(Box::new(gone()))));
        assert!(is_missing_file(&wrapped));
        assert!(is_missing_file(&DataFusionError::ObjectStore(Box::new(
            gone()
        ))));
        let other =
            DataFusionError::ParquetError(Box::new(ParquetError::General("corrupt footer".into())));
        assert!(!is_missing_file(&other));
    }

    #[tokio::test]
    async fn every_row_of_the_range_is_read_once_in_equal_shares() -> TestResult {
        let store = Arc::new(InMemory::new());
        let (a, b1, b2) = (
            rows(HOUR_A, 25, "a"),
            rows(HOUR_B, 13, "b"),
            rows(HOUR_B, 7, "c"),
        );
        put_file(&store, "a", &a).await?;
        put_file(&store, "b1", &b1).await?;
        put_file(&store, "b2", &b2).await?;
        let engine = QueryEngine::new(store, None, QueryLimits::default())?;

        let parts = scan(&engine, HOUR_A, HOUR_B + HOUR_NS - 1).await?;
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        let share = 45usize.div_ceil(parts.len());
        assert!(sizes.iter().all(|&n| n > 0 && n <= share), "{sizes:?}");
        let mut seen: Vec<_> = parts.into_iter().flatten().collect();
        let mut all: Vec<_> = [a.clone(), b1.clone(), b2.clone()].concat();
        seen.sort();
        all.sort();
        assert_eq!(seen, all);

        // A range that ends inside hour B and starts inside hour A: only its rows.
        let (start, end) = (HOUR_A + 20 * 60_000_000_000, HOUR_B + 5 * 60_000_000_000);
        let mut seen: Vec<_> = scan(&engine, start, end)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let mut wanted: Vec<_> = all
            .into_iter()
            .filter(|(_, t)| (start..=end).contains(t))
            .collect();
        seen.sort();
        wanted.sort();
        assert_eq!(seen.len(), 5 + 6 + 6);
        assert_eq!(seen, wanted);
        Ok(())
    }
}
