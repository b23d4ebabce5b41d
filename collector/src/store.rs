//! The Parquet store: every read and write of a data file goes through
//! `object_store`, so the local directory can become S3, GCS or Azure without a
//! rewrite. Encoding and decoding Parquet run off the async worker threads.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use datafusion::parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder,
};
use datafusion::parquet::schema::types::ColumnPath;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use weft_schema::{
    ATTRIBUTE_MAP_ENTRIES, ATTRIBUTE_MAP_KEY, SCHEMA_VERSION, SCHEMA_VERSION_KEY, spans,
};

use crate::empty_leaves::leaves_without_values;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// One table's files inside the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Spans,
    Metrics,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Spans, Table::Metrics];

    pub fn dir(self) -> &'static str {
        match self {
            Table::Spans => weft_schema::layout::SPANS_DIR,
            Table::Metrics => weft_schema::layout::METRICS_DIR,
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => weft_schema::spans::schema(),
            Table::Metrics => weft_schema::metrics::schema(),
        }
    }

    /// The column whose time decides a row's hour directory.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Spans => spans::START_TIME,
            Table::Metrics => weft_schema::metrics::TIME,
        }
    }
}

/// Handle to the store: a local directory, as an object store (for DataFusion)
/// and as files (to fsync them, and for merges to stream).
#[derive(Debug, Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    root: PathBuf,
}

impl Store {
    /// A store in a local directory, created if missing.
    pub fn local(root: &std::path::Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            path: root.to_owned(),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| StoreError::Io {
            path: root.to_owned(),
            source,
        })?;
        let objects = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Self {
            objects: Arc::new(objects),
            root,
        })
    }

    pub fn objects(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.objects)
    }

    /// The file behind a store path.
    pub fn file_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// Moves a finished, fsynced file written beside the store's files to
    /// `path`, durably.
    pub fn publish(&self, written: &std::path::Path, path: &str) -> Result<(), StoreError> {
        let target = self.file_path(path);
        std::fs::rename(written, &target).map_err(|source| StoreError::Io {
            path: target.clone(),
            source,
        })?;
        sync_parent(&target)
    }

    /// Every Parquet file under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = ObjectPath::from(prefix);
        let files: Vec<ObjectMeta> = self.objects.list(Some(&prefix)).try_collect().await?;
        Ok(files
            .into_iter()
            .filter(|f| {
                f.location
                    .as_ref()
                    .ends_with(weft_schema::layout::PARQUET_SUFFIX)
            })
            .collect())
    }

    pub async fn exists(&self, path: &str) -> Result<bool, StoreError> {
        match self.objects.head(&ObjectPath::from(path)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The rows of each row group of a Parquet file, from its footer alone
    /// (two small reads).
    pub async fn row_group_rows(&self, file: &ObjectMeta) -> Result<Vec<usize>, StoreError> {
        // A Parquet file ends with the footer's length (4 bytes, LE) and `PAR1`.
        let size = file.size;
        let tail = self
            .objects
            .get_range(&file.location, size.saturating_sub(8)..size)
            .await?;
        let length = match tail.get(..4).map(<[u8; 4]>::try_from) {
            Some(Ok(bytes)) if tail.get(4..) == Some(b"PAR1".as_slice()) => {
                u64::from(u32::from_le_bytes(bytes))
            }
            _ => {
                return Err(StoreError::Parquet(ParquetError::General(format!(
                    "{} does not end like a Parquet file",
                    file.location
                ))));
            }
        };
        let start = size.checked_sub(8 + length).ok_or_else(|| {
            StoreError::Parquet(ParquetError::General(format!(
                "{}: footer longer than the file",
                file.location
            )))
        })?;
        let footer = self
            .objects
            .get_range(&file.location, start..size - 8)
            .await?;
        let metadata = ParquetMetaDataReader::decode_metadata(&footer)?;
        Ok(metadata
            .row_groups()
            .iter()
            .map(|group| usize::try_from(group.num_rows()).unwrap_or(0))
            .collect())
    }

    /// Writes `batches` as one Parquet file at `path`, durably, in the order given.
    pub async fn write_parquet(
        &self,
        table: Table,
        path: &str,
        batches: Vec<RecordBatch>,
    ) -> Result<u64, StoreError> {
        let bytes = tokio::task::spawn_blocking(move || encode_parquet(table, &batches)).await??;
        self.write_encoded(path, bytes).await
    }

    /// Writes an encoded Parquet file at `path`, durably.
    pub async fn write_encoded(&self, path: &str, bytes: Bytes) -> Result<u64, StoreError> {
        let size = bytes.len() as u64;
        let location = ObjectPath::from(path);
        self.objects.put(&location, PutPayload::from(bytes)).await?;
        self.sync_local(path)?;
        Ok(size)
    }

    /// The object store renames a finished file into place but does not fsync;
    /// the write-ahead log is deleted after this, so the file must be on disk.
    fn sync_local(&self, path: &str) -> Result<(), StoreError> {
        let file = self.file_path(path);
        sync_path(&file)?;
        sync_parent(&file)
    }

    /// A file's bytes as stored.
    pub async fn read_bytes(&self, path: &str) -> Result<Bytes, StoreError> {
        Ok(self
            .objects
            .get(&ObjectPath::from(path))
            .await?
            .bytes()
            .await?)
    }

    pub async fn read_parquet(&self, path: &str) -> Result<Vec<RecordBatch>, StoreError> {
        let bytes = self.read_bytes(path).await?;
        tokio::task::spawn_blocking(move || decode_parquet(bytes)).await?
    }

    pub async fn delete(&self, path: &str) -> Result<(), StoreError> {
        match self.objects.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn sync_path(path: &std::path::Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Makes a file's name (a rename or a creation) durable.
fn sync_parent(file: &std::path::Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(parent) => sync_path(parent),
        None => Ok(()),
    }
}

/// Rows per row group of a data file.
pub const ROWS_PER_GROUP: usize = 128 * 1024;
/// A data page closes at 256 KiB of encoded values or 8,192 rows, whichever
/// comes first. Fetching a trace decompresses one page of each column it
/// reads, so small pages make trace fetches cheaper, and long pages compress
/// better. Measured (ingest benchmark bytes per span / service search of the
/// query benchmark): 2,048 rows 44.7–46.9 B / 94–96 ms, 8,192 rows
/// 43.7–43.8 B / 107–110 ms, 20,000 rows 40.0–41.2 B / 132–135 ms. The
/// byte bound keeps the wide attribute columns at a few thousand rows.
const PAGE_ROWS: usize = 8 * 1024;
const PAGE_BYTES: usize = 256 * 1024;

/// Writer settings: zstd, page statistics, dictionaries for the repetitive
/// columns, and a bloom filter on `trace_id` so a lookup by id skips row groups.
pub fn writer_properties(table: Table, rows: usize) -> Result<WriterProperties, StoreError> {
    Ok(properties_builder(table, rows, &[])?.build())
}

/// [`writer_properties`] for a file of `batches`, with every leaf column that
/// holds no value in them written uncompressed: its pages are only levels,
/// and each compressed column costs a zstd context pair (see
/// [`crate::empty_leaves`]). In the ingest benchmark's flushes 13 top-level
/// columns and every field of `links` hold nothing: 10,000 spans/s took
/// 6.9–8.1 % of a core (median 7.1) against 6.9–7.9 % (median 7.5) before,
/// 7 runs each in turn, and flush files 0.1 byte per span smaller.
pub fn flush_writer_properties(
    table: Table,
    batches: &[RecordBatch],
) -> Result<WriterProperties, StoreError> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let empty = leaves_without_values(&table.schema(), batches);
    Ok(properties_builder(table, rows, &empty)?.build())
}

/// The store's settings; `empty_leaves`, if it has one entry per leaf column,
/// says which leaves to leave uncompressed.
fn properties_builder(
    table: Table,
    rows: usize,
    empty_leaves: &[bool],
) -> Result<WriterPropertiesBuilder, StoreError> {
    let mut builder = WriterProperties::builder()
        // Level 1: each file is encoded once, as it is flushed, so encoding
        // speed is ingest speed; level 3 was 8 % slower for 1 % fewer bytes.
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        // 128k rows: 16k-row groups made a lookup by trace id faster (49 -> 30
        // ms on the benchmark store) but the ingest benchmark's files 21 %
        // larger (42.4 -> 51.4 bytes per span, over the 45 target).
        .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_data_page_size_limit(PAGE_BYTES)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_VERSION_KEY.to_owned(),
            SCHEMA_VERSION.to_string(),
        )]));
    if table == Table::Spans {
        let trace_id = ColumnPath::from(spans::TRACE_ID);
        builder = builder
            .set_column_bloom_filter_enabled(trace_id.clone(), true)
            .set_column_bloom_filter_fpp(trace_id.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(trace_id, rows.clamp(1, ROWS_PER_GROUP) as u64);
    }
    let parquet_schema = ArrowSchemaConverter::new().convert(&table.schema())?;
    let by_leaf = empty_leaves.len() == parquet_schema.num_columns();
    for (index, leaf) in parquet_schema.columns().iter().enumerate() {
        let path = leaf.path();
        let parts = path.parts();
        if by_leaf && empty_leaves[index] {
            builder = builder.set_column_compression(path.clone(), Compression::UNCOMPRESSED);
        }
        // No reader prunes by the minimum and maximum of an attribute map's
        // keys or values, and computing them compares every string written
        // (about a tenth of the encoding time).
        if parts.len() >= 2 && parts[parts.len() - 2] == ATTRIBUTE_MAP_ENTRIES {
            builder = builder.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
        }
        if table == Table::Spans
            && let Some(encoding) = span_encoding_without_dictionary(parts)
        {
            builder = builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path.clone(), encoding);
        }
    }
    Ok(builder)
}

/// The encoding of a `spans` column whose values a dictionary does not pay
/// for, by its leaf path; `None` keeps the default (a dictionary, plain when
/// it grows too large). The default looks every value up in a hash table
/// first: a fifth of a flush file's encoding, 8 % of the server's CPU at
/// 10,000 spans/s. The price: the Parquet crate's delta encoders each
/// allocate 1 MiB up front, and glibc keeps those blocks, so RSS at 10,000
/// spans/s rose by about 20 MiB (README, Performance). Each column of a flush of
/// the ingest benchmark's spans encoded alone, before and after
/// (`weft-stagecost --per-column`, ns and bytes per span):
///
/// - ids (hex of random bytes, nothing to share): delta-encoded lengths
///   (the lengths are all the same) and the text as it is: `span_id` 71 ns /
///   8.8 B to 35 / 8.2, `parent_span_id` 96 / 9.1 to 38 / 7.2, `trace_id`
///   2.6 to 2.3 B.
/// - times and durations (nearly all distinct): differences between
///   neighbours, bit-packed: `start_time` 43 / 7.4 to 17 / 4.2, `end_time`
///   51 / 6.9 to 18 / 4.2, `duration_ns` 53 / 5.4 to 17 / 3.5, event times
///   0.8 B less.
/// - attribute keys: few distinct, but zstd finds their repeats as well as a
///   dictionary does, for less: `attributes` 467 to 420 ns (8.9 to 9.0 B).
/// - counts, flags, kinds, status codes, ports and HTTP statuses (a handful
///   of values, mostly one): zstd shrinks their plain pages as far, 0.1 B
///   either way, for 15 to 9 ns per count column, 26 to 20 for `kind` and
///   `status_code`, 18 to 13 and 15 to 11 for the two integers. Plain text
///   for every other column was larger (46.7 to 52.3 B per span in flush
///   files) and no faster.
fn span_encoding_without_dictionary(parts: &[String]) -> Option<Encoding> {
    let leaf = parts.last()?.as_str();
    let parent = parts.len().checked_sub(2).map(|i| parts[i].as_str());
    match (parent, leaf) {
        (_, spans::TRACE_ID | spans::SPAN_ID | spans::PARENT_SPAN_ID) => {
            Some(Encoding::DELTA_LENGTH_BYTE_ARRAY)
        }
        (None, spans::START_TIME | spans::END_TIME | spans::DURATION_NS) => {
            Some(Encoding::DELTA_BINARY_PACKED)
        }
        (Some(_), spans::event::TIME) if parts[0] == spans::EVENTS => {
            Some(Encoding::DELTA_BINARY_PACKED)
        }
        (Some(ATTRIBUTE_MAP_ENTRIES), ATTRIBUTE_MAP_KEY) => Some(Encoding::PLAIN),
        (
            None,
            spans::FLAGS
            | spans::DROPPED_ATTRIBUTES_COUNT
            | spans::DROPPED_EVENTS_COUNT
            | spans::DROPPED_LINKS_COUNT
            | spans::RESOURCE_DROPPED_ATTRIBUTES_COUNT
            | spans::SCOPE_DROPPED_ATTRIBUTES_COUNT
            | spans::KIND
            | spans::STATUS_CODE
            | "http_response_status_code"
            | "server_port",
        ) => Some(Encoding::PLAIN),
        _ => None,
    }
}

/// `batches` as one Parquet file, rows in the order given.
pub fn encode_parquet(table: Table, batches: &[RecordBatch]) -> Result<Bytes, StoreError> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let props = writer_properties(table, rows)?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, table.schema(), Some(props))?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(Bytes::from(out))
}

pub fn decode_parquet(bytes: Bytes) -> Result<Vec<RecordBatch>, StoreError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// All `batches` as one batch of `table`'s schema.
pub fn concat(table: Table, batches: &[RecordBatch]) -> Result<RecordBatch, StoreError> {
    Ok(concat_batches(&table.schema(), batches)?)
}

/// `spans` of one resource and scope as a request, for tests.
#[cfg(test)]
pub(crate) fn request_of(
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `spans` of one resource and scope as a record batch, for tests.
#[cfg(test)]
pub(crate) fn batch_of(
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> Result<RecordBatch, Box<dyn std::error::Error>> {
    Ok(crate::convert::spans::to_record_batch(&request_of(spans))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use opentelemetry_proto::tonic::trace::v1::Span;

    /// `count` spans with ids 1, 2, 3…
    fn spans(count: u8) -> Result<RecordBatch, Box<dyn std::error::Error>> {
        batch_of(
            (1..=count)
                .map(|i| Span {
                    trace_id: vec![i; 16],
                    span_id: vec![i; 8],
                    name: "s".into(),
                    ..Default::default()
                })
                .collect(),
        )
    }

    #[test]
    fn span_files_use_zstd_statistics_and_a_trace_id_bloom_filter()
    -> Result<(), Box<dyn std::error::Error>> {
        let bytes = encode_parquet(Table::Spans, &[spans(3)?])?;
        let reader = SerializedFileReader::new(bytes)?;
        let metadata = reader.metadata();
        let version = metadata
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| {
                kv.iter()
                    .find(|k| k.key == SCHEMA_VERSION_KEY)
                    .and_then(|k| k.value.clone())
            });
        assert_eq!(version, Some(SCHEMA_VERSION.to_string()));
        let row_group = metadata.row_group(0);
        let trace_id = row_group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == spans::TRACE_ID)
            .ok_or("no trace_id")?;
        assert!(matches!(trace_id.compression(), Compression::ZSTD(_)));
        assert!(
            trace_id.bloom_filter_offset().is_some(),
            "trace_id has a bloom filter"
        );
        assert!(trace_id.statistics().is_some());
        // Attribute maps, nested ones too, are written without statistics.
        for path in [
            "attributes.entries.key",
            "events.list.item.attributes.entries.value",
        ] {
            let column = row_group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == path)
                .ok_or(path)?;
            assert!(column.statistics().is_none(), "{path} has statistics");
        }
        Ok(())
    }

    #[test]
    fn flush_files_leave_the_columns_without_values_uncompressed()
    -> Result<(), Box<dyn std::error::Error>> {
        let bytes = crate::sorted::encode_batches_sorted(Table::Spans, &[spans(3)?])?;
        let reader = SerializedFileReader::new(bytes)?;
        let compression = |path: &str| {
            reader
                .metadata()
                .row_group(0)
                .columns()
                .iter()
                .find(|c| c.column_path().string() == path)
                .map(|c| c.compression())
                .ok_or(format!("no column {path}"))
        };
        // Set in every span.
        for path in [spans::TRACE_ID, spans::NAME, spans::START_TIME] {
            assert!(matches!(compression(path)?, Compression::ZSTD(_)), "{path}");
        }
        // Null in every span, or under an empty list or map.
        for path in [
            spans::TRACE_STATE,
            spans::STATUS_MESSAGE,
            "links.list.item.trace_id",
            "attributes.entries.value",
            "events.list.item.name",
        ] {
            assert_eq!(compression(path)?, Compression::UNCOMPRESSED, "{path}");
        }
        // Files of merges keep zstd everywhere.
        let merged = writer_properties(Table::Spans, 3)?;
        assert!(matches!(
            merged.compression(&ColumnPath::from(spans::TRACE_STATE)),
            Compression::ZSTD(_)
        ));
        Ok(())
    }

    #[test]
    fn ids_times_counts_and_attribute_keys_are_written_without_a_dictionary()
    -> Result<(), Box<dyn std::error::Error>> {
        let bytes = encode_parquet(Table::Spans, &[spans(3)?])?;
        let reader = SerializedFileReader::new(bytes.clone())?;
        let row_group = reader.metadata().row_group(0);
        let encodings = |path: &str| -> Result<Vec<Encoding>, String> {
            let column = row_group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == path)
                .ok_or(path.to_owned())?;
            assert!(
                column.dictionary_page_offset().is_none(),
                "{path} has a dictionary"
            );
            Ok(column.encodings().collect())
        };
        for (path, encoding) in [
            (spans::SPAN_ID, Encoding::DELTA_LENGTH_BYTE_ARRAY),
            (spans::TRACE_ID, Encoding::DELTA_LENGTH_BYTE_ARRAY),
            (spans::PARENT_SPAN_ID, Encoding::DELTA_LENGTH_BYTE_ARRAY),
            ("links.list.item.span_id", Encoding::DELTA_LENGTH_BYTE_ARRAY),
            (spans::START_TIME, Encoding::DELTA_BINARY_PACKED),
            (spans::END_TIME, Encoding::DELTA_BINARY_PACKED),
            (spans::DURATION_NS, Encoding::DELTA_BINARY_PACKED),
            ("events.list.item.time", Encoding::DELTA_BINARY_PACKED),
            ("attributes.entries.key", Encoding::PLAIN),
            ("resource_attributes.entries.key", Encoding::PLAIN),
            (spans::FLAGS, Encoding::PLAIN),
            (spans::DROPPED_ATTRIBUTES_COUNT, Encoding::PLAIN),
            (spans::DROPPED_EVENTS_COUNT, Encoding::PLAIN),
            (spans::DROPPED_LINKS_COUNT, Encoding::PLAIN),
            (spans::RESOURCE_DROPPED_ATTRIBUTES_COUNT, Encoding::PLAIN),
            (spans::SCOPE_DROPPED_ATTRIBUTES_COUNT, Encoding::PLAIN),
            (spans::KIND, Encoding::PLAIN),
            (spans::STATUS_CODE, Encoding::PLAIN),
            ("http_response_status_code", Encoding::PLAIN),
            ("server_port", Encoding::PLAIN),
        ] {
            assert!(
                encodings(path)?.contains(&encoding),
                "{path} is not {encoding:?}"
            );
        }
        // Repetitive text keeps its dictionary.
        let name = row_group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == spans::NAME)
            .ok_or("no name")?;
        assert!(name.dictionary_page_offset().is_some());
        // And every value reads back as written.
        let read = concat(Table::Spans, &decode_parquet(bytes)?)?;
        assert_eq!(read, spans(3)?);
        Ok(())
    }

    #[tokio::test]
    async fn a_files_row_groups_come_from_its_footer() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::local(dir.path())?;
        let path = "spans/2026-11-22/04/c-test.parquet";
        store
            .write_parquet(Table::Spans, path, vec![spans(5)?])
            .await?;
        let files = store.list("spans/").await?;
        let file = files.first().ok_or("no file")?;
        assert_eq!(store.row_group_rows(file).await?, [5]);
        store
            .objects()
            .put(&file.location, PutPayload::from_static(b"not parquet"))
            .await?;
        let mut broken = file.clone();
        broken.size = 11;
        assert!(store.row_group_rows(&broken).await.is_err());
        Ok(())
    }
}
