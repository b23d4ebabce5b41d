//! Parquet files in storage order, written one column at a time.
//!
//! Flushes and merges both write through here. A flush writes its in-memory
//! rows sorted, with the settings of a file that stays. A merge copies the
//! large row groups of its inputs as they are (their encoded bytes, bloom
//! filters and page index; nothing decoded) and decodes, sorts and writes
//! again only the small ones. So a span is Parquet-encoded once, unless it
//! came in a small flush: encoding was most of the collector's CPU, and a
//! merge that rewrote every row cost more than the flush itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves,
};
use datafusion::parquet::arrow::{ArrowWriter, ProjectionMask};
use datafusion::parquet::bloom_filter::Sbbf;
use datafusion::parquet::column::writer::ColumnCloseResult;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::PageIndexPolicy;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::reader::ChunkReader;
use datafusion::parquet::file::writer::SerializedFileWriter;
use datafusion::parquet::schema::types::ColumnDescPtr;
use weft_schema::{metrics, spans};

use crate::attribute_maps::{self, EncodedLeaf, MapLeaves, PageLimits, sharing_of};
use crate::gather::gather;
use crate::store::{
    ROWS_PER_GROUP, StoreError, Table, concat, flush_writer_properties, writer_properties,
};
use crate::text_columns;

/// Row groups with at least this many rows are copied by a merge, not
/// rewritten. A 1-second flush at 8,192 spans/s or more makes them; smaller
/// groups compress worse (dictionaries and pages per group) and are merged
/// into full ones.
pub const COPY_MIN_ROWS: usize = 8 * 1024;
/// Rows gathered into one array at a time while writing.
const WRITE_CHUNK_ROWS: usize = 8192;
/// Rows per batch when reading a merge's inputs.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// Files are sorted so that equal values sit together (smaller files) and
/// row-group statistics on the sort keys skip most of a group: spans by trace
/// then time, so a trace is read from one place; metrics by series then time.
fn sort_keys(table: Table) -> &'static [&'static str] {
    match table {
        Table::Spans => &[spans::TRACE_ID, spans::START_TIME],
        Table::Metrics => &[metrics::METRIC_NAME, metrics::SERVICE_NAME, metrics::TIME],
    }
}

/// The order of `batches`' rows (as indices into them all, end to end) for storage.
fn storage_order(table: Table, batches: &[RecordBatch]) -> Result<UInt32Array, StoreError> {
    if table == Table::Spans
        && let Some(order) = span_order(batches)
    {
        return Ok(order);
    }
    let mut columns = Vec::new();
    for key in sort_keys(table) {
        let parts: Vec<&dyn Array> = batches
            .iter()
            .filter_map(|batch| batch.column_by_name(key).map(|c| c.as_ref()))
            .collect();
        if parts.len() == batches.len() {
            columns.push(SortColumn {
                values: datafusion::arrow::compute::concat(&parts)?,
                options: Some(SortOptions::default()),
            });
        }
    }
    Ok(lexsort_to_indices(&columns, None)?)
}

/// Spans in storage order, sorted as numbers rather than as text: a trace id
/// is 32 lowercase hex digits, which order as numbers as they do as text. Text
/// comparisons through `lexsort_to_indices` were a sixth of a flush's sorting
/// and gathering. Rows with equal keys keep their order. `None` if an id has
/// another form (Weft writes none), for `lexsort_to_indices` to order.
fn span_order(batches: &[RecordBatch]) -> Option<UInt32Array> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let mut keys: Vec<(u128, i64, u32)> = Vec::with_capacity(rows);
    for batch in batches {
        let ids = batch
            .column_by_name(spans::TRACE_ID)?
            .as_string_opt::<i32>()?;
        let starts = batch
            .column_by_name(spans::START_TIME)?
            .as_primitive_opt::<TimestampNanosecondType>()?;
        if ids.null_count() > 0 || starts.null_count() > 0 {
            return None;
        }
        for (id, start) in ids.iter().zip(starts.values()) {
            let row = u32::try_from(keys.len()).ok()?;
            keys.push((lowercase_hex_id(id?)?, *start, row));
        }
    }
    keys.sort_unstable();
    Some(keys.into_iter().map(|(_, _, row)| row).collect())
}

/// A trace id's 32 lowercase hex digits as a number.
fn lowercase_hex_id(id: &str) -> Option<u128> {
    if id.len() != 32 {
        return None;
    }
    id.bytes().try_fold(0u128, |number, digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(number << 4 | u128::from(value))
    })
}

/// `batches` as one batch, sorted for storage.
pub fn sort_for_storage(
    table: Table,
    batches: Vec<RecordBatch>,
) -> Result<RecordBatch, StoreError> {
    // Each step frees the copy before it, so this holds at most two.
    let order = storage_order(table, &batches)?;
    let batch = concat(table, &batches)?;
    drop(batches);
    Ok(take_record_batch(&batch, &order)?)
}

/// `batches` encoded as one Parquet file in storage order, in row groups of
/// [`ROWS_PER_GROUP`].
pub fn encode_batches_sorted(table: Table, batches: &[RecordBatch]) -> Result<Bytes, StoreError> {
    let mut out = Vec::new();
    let properties = flush_writer_properties(table, batches)?;
    let (mut file, factory) = file_writer(table, properties, &mut out)?;
    write_sorted(table, batches, &mut file, &factory, ROWS_PER_GROUP)?;
    file.close()?;
    Ok(Bytes::from(out))
}

/// A merge input, which the Parquet reader takes by value: read again from
/// the start by a copy of the handle.
pub trait MergeSource: ChunkReader + 'static {
    fn reopen(&self) -> std::io::Result<Self>
    where
        Self: Sized;
}

impl MergeSource for Bytes {
    fn reopen(&self) -> std::io::Result<Self> {
        Ok(self.clone())
    }
}

impl MergeSource for std::fs::File {
    fn reopen(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
}

/// Parquet files (`inputs`) merged into one written to `out`; returns its rows.
///
/// Row groups of at least [`COPY_MIN_ROWS`] are copied as they are. The rows
/// of the smaller ones are decoded, sorted together and written in row groups
/// of `rows_per_group`, after the copied ones.
pub fn merge_files<R: MergeSource, W: Write + Send>(
    table: Table,
    inputs: Vec<R>,
    out: W,
    rows_per_group: usize,
) -> Result<usize, StoreError> {
    let inputs = inputs
        .into_iter()
        .map(|source| MergeInput::open(table, source))
        .collect::<Result<Vec<_>, _>>()?;
    let rewritten: usize = inputs.iter().map(MergeInput::small_rows).sum();
    let (mut file, factory) = file_writer(table, writer_properties(table, rewritten)?, out)?;
    let mut rows = 0;
    for input in &inputs {
        rows += input.copy_large_groups(&mut file)?;
    }
    rows += write_sorted(
        table,
        inputs.as_slice(),
        &mut file,
        &factory,
        rows_per_group,
    )?;
    file.close()?;
    Ok(rows)
}

/// [`merge_files`] from and into memory; returns the file and its rows.
pub fn merge_in_memory(
    table: Table,
    inputs: &[Bytes],
    rows_per_group: usize,
) -> Result<(Bytes, usize), StoreError> {
    let mut out = Vec::new();
    let rows = merge_files(table, inputs.to_vec(), &mut out, rows_per_group)?;
    Ok((Bytes::from(out), rows))
}

/// The Parquet files at `inputs` merged into a new file at `output`, made
/// durable; returns its rows. Inputs are read a column chunk at a time and the
/// output written as it goes: a merge read whole and built in memory was the
/// collector's memory peak at a steady rate (up to 500,000 rows in and out),
/// and the allocator kept what it freed.
pub fn merge_into_file(
    table: Table,
    inputs: &[PathBuf],
    output: &Path,
    rows_per_group: usize,
) -> Result<usize, StoreError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    };
    let files = inputs
        .iter()
        .map(|path| std::fs::File::open(path).map_err(io(path)))
        .collect::<Result<Vec<_>, _>>()?;
    let out = std::fs::File::create(output).map_err(io(output))?;
    let rows = merge_files(table, files, &out, rows_per_group)?;
    out.sync_all().map_err(io(output))?;
    Ok(rows)
}

/// A Parquet writer taken apart so that row groups can be written column by
/// column or copied.
fn file_writer<W: Write + Send>(
    table: Table,
    properties: WriterProperties,
    out: W,
) -> Result<(SerializedFileWriter<W>, ArrowRowGroupWriterFactory), StoreError> {
    Ok(ArrowWriter::try_new(out, table.schema(), Some(properties))?.into_serialized_writer()?)
}

/// Rows to write in storage order, column by column.
trait ColumnSource {
    /// The named top-level columns of every row, in batches: the same batches
    /// whichever columns are asked for.
    fn columns(&self, names: &[&str]) -> Result<Vec<RecordBatch>, StoreError>;
}

impl ColumnSource for [RecordBatch] {
    fn columns(&self, names: &[&str]) -> Result<Vec<RecordBatch>, StoreError> {
        self.iter()
            .map(|batch| {
                let schema = batch.schema();
                let indices = names
                    .iter()
                    .map(|name| schema.index_of(name))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(batch.project(&indices)?)
            })
            .collect()
    }
}

/// The rows of the merge inputs' small row groups.
impl<R: MergeSource> ColumnSource for [MergeInput<R>] {
    fn columns(&self, names: &[&str]) -> Result<Vec<RecordBatch>, StoreError> {
        let mut batches = Vec::new();
        for input in self {
            batches.extend(input.read_small_groups(names)?);
        }
        Ok(batches)
    }
}

/// Writes the rows of `source` sorted for storage as new row groups of
/// `file`; returns how many rows.
///
/// Only the sort keys of every row, and one column of every row, are decoded
/// at once: all columns of a large merge together were most of the server's
/// memory (a merge of 500,000 spans held about 1 GB).
fn write_sorted<S: ColumnSource + ?Sized, W: Write + Send>(
    table: Table,
    source: &S,
    file: &mut SerializedFileWriter<W>,
    factory: &ArrowRowGroupWriterFactory,
    rows_per_group: usize,
) -> Result<usize, StoreError> {
    let keys = source.columns(sort_keys(table))?;
    let batch_rows: Vec<usize> = keys.iter().map(RecordBatch::num_rows).collect();
    if batch_rows.iter().sum::<usize>() == 0 {
        return Ok(0);
    }
    let order = storage_order(table, &keys)?;
    drop(keys);
    // Where each batch starts among all rows, then (batch, row) of each output row.
    let starts: Vec<usize> = batch_rows
        .iter()
        .scan(0, |next, rows| {
            let start = *next;
            *next += rows;
            Some(start)
        })
        .collect();
    let positions: Vec<(usize, usize)> = order
        .values()
        .iter()
        .map(|&row| {
            let row = row as usize;
            let batch = starts.partition_point(|&start| start <= row) - 1;
            (batch, row - starts[batch])
        })
        .collect();
    let rows = positions.len();
    let groups: Vec<&[(usize, usize)]> = positions.chunks(rows_per_group.max(1)).collect();

    let schema = table.schema();
    // A top-level column is written by one writer per Parquet leaf column under it.
    let descriptor = file.schema_descr();
    let leaf_descriptors: Vec<ColumnDescPtr> = (0..descriptor.num_columns())
        .map(|leaf| descriptor.column(leaf))
        .collect();
    let mut leaves = vec![0; schema.fields().len()];
    for leaf in 0..descriptor.num_columns() {
        leaves[descriptor.get_column_root_idx(leaf)] += 1;
    }
    let properties = Arc::clone(file.properties());
    let page_limits = PageLimits {
        rows: properties.data_page_row_count_limit(),
        bytes: properties.data_page_size_limit(),
    };
    let first_group = file.flushed_row_groups().len();
    let mut writers = (0..groups.len())
        .map(|group| {
            factory
                .create_column_writers(first_group + group)
                .map(Vec::into_iter)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut chunks: Vec<Vec<Chunk>> = groups.iter().map(|_| Vec::new()).collect();
    let mut first_leaf = 0;
    for (field, leaf_count) in schema.fields().iter().zip(leaves) {
        let field_leaves = &leaf_descriptors[first_leaf..first_leaf + leaf_count];
        first_leaf += leaf_count;
        let columns: Vec<ArrayRef> = source
            .columns(&[field.name()])?
            .iter()
            .map(|batch| Arc::clone(batch.column(0)))
            .collect();
        if columns
            .iter()
            .map(|c| c.len())
            .ne(batch_rows.iter().copied())
        {
            return Err(ArrowError::InvalidArgumentError(format!(
                "column {} of the rows to write came in other batches than their keys",
                field.name()
            ))
            .into());
        }
        // Attribute maps, which their own writer writes faster than the Arrow writer.
        let sharing = sharing_of(table, field.name());
        let maps: Option<Vec<&MapArray>> = match (sharing, field_leaves) {
            (Some(_), [_, _]) => columns.iter().map(|c| c.as_map_opt()).collect(),
            _ => None,
        };
        let columns: Vec<&dyn Array> = columns.iter().map(|c| c.as_ref()).collect();
        for ((group, group_writers), group_chunks) in
            groups.iter().zip(&mut writers).zip(&mut chunks)
        {
            let mut leaf_writers: Vec<_> = group_writers.by_ref().take(leaf_count).collect();
            if let (Some(sharing), Some(maps), [key, value]) = (sharing, &maps, field_leaves)
                && let Some(encoded) = attribute_maps::encode(
                    sharing,
                    maps,
                    group,
                    MapLeaves {
                        key,
                        value,
                        properties: &properties,
                        limits: page_limits,
                    },
                )?
            {
                group_chunks.extend(encoded.map(Chunk::Encoded));
                continue;
            }
            // Text of few distinct values, which its own writer writes faster too.
            if let [leaf] = field_leaves
                && let Some(encoded) =
                    text_columns::encode(&columns, group, leaf, &properties, page_limits)?
            {
                group_chunks.push(Chunk::Encoded(encoded));
                continue;
            }
            for chunk in group.chunks(WRITE_CHUNK_ROWS) {
                let sorted = gather(&columns, chunk)?;
                for (writer, leaf) in leaf_writers.iter_mut().zip(compute_leaves(field, &sorted)?) {
                    writer.write(&leaf)?;
                }
            }
            for writer in leaf_writers {
                group_chunks.push(Chunk::Arrow(writer.close()?));
            }
        }
    }
    for group_chunks in chunks {
        let mut row_group = file.next_row_group()?;
        for chunk in group_chunks {
            match chunk {
                Chunk::Arrow(chunk) => chunk.append_to_row_group(&mut row_group)?,
                Chunk::Encoded(chunk) => chunk.append_to_row_group(&mut row_group)?,
            }
        }
        row_group.close()?;
    }
    Ok(rows)
}

/// A leaf column chunk ready for its row group: from the Arrow writer, or
/// from [`attribute_maps`].
enum Chunk {
    Arrow(ArrowColumnChunk),
    Encoded(EncodedLeaf),
}

/// One input file of a merge, its footer and page index read once.
struct MergeInput<R> {
    source: R,
    metadata: ArrowReaderMetadata,
    /// Row groups too small to copy.
    small_groups: Vec<usize>,
}

impl<R: MergeSource> MergeInput<R> {
    fn open(table: Table, source: R) -> Result<Self, StoreError> {
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let metadata = ArrowReaderMetadata::load(&source, options)?;
        // Encoded bytes can only be copied into a file of the same schema; a
        // file of an older schema is rewritten whole, its columns read by name.
        let same_schema = metadata.schema().fields() == table.schema().fields();
        let small_groups = metadata
            .metadata()
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, group)| !same_schema || (group.num_rows() as usize) < COPY_MIN_ROWS)
            .map(|(index, _)| index)
            .collect();
        Ok(Self {
            source,
            metadata,
            small_groups,
        })
    }

    fn small_rows(&self) -> usize {
        let groups = self.metadata.metadata().row_groups();
        self.small_groups
            .iter()
            .map(|&g| groups[g].num_rows() as usize)
            .sum()
    }

    /// Appends the large row groups to `file` as they are; returns their rows.
    fn copy_large_groups<W: Write + Send>(
        &self,
        file: &mut SerializedFileWriter<W>,
    ) -> Result<usize, StoreError> {
        let parquet = self.metadata.metadata();
        let mut rows = 0;
        for (index, group) in parquet.row_groups().iter().enumerate() {
            if self.small_groups.contains(&index) {
                continue;
            }
            let column_indexes = parquet.column_index().and_then(|c| c.get(index));
            let offset_indexes = parquet.offset_index().and_then(|o| o.get(index));
            let mut out = file.next_row_group()?;
            for (leaf, column) in group.columns().iter().enumerate() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: group.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: Sbbf::read_from_column_chunk(column, &self.source)?,
                    column_index: column_indexes.and_then(|c| c.get(leaf)).cloned(),
                    offset_index: offset_indexes.and_then(|o| o.get(leaf)).cloned(),
                };
                out.append_column(&self.source, close)?;
            }
            out.close()?;
            rows += group.num_rows() as usize;
        }
        Ok(rows)
    }

    /// The named top-level columns of the small row groups, in batches of
    /// `READ_BATCH_ROWS` rows (the same batches whichever columns are read).
    fn read_small_groups(&self, names: &[&str]) -> Result<Vec<RecordBatch>, StoreError> {
        if self.small_groups.is_empty() {
            return Ok(Vec::new());
        }
        let schema = self.metadata.schema();
        let mut roots = Vec::with_capacity(names.len());
        for name in names {
            roots.push(schema.index_of(name).map_err(|_| {
                ArrowError::SchemaError(format!("a file to merge has no column {name}"))
            })?);
        }
        let projection = ProjectionMask::roots(self.metadata.parquet_schema(), roots);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.source.reopen().map_err(ParquetError::from)?,
            self.metadata.clone(),
        )
        .with_projection(projection)
        .with_row_groups(self.small_groups.clone())
        .with_batch_size(READ_BATCH_ROWS)
        .build()?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{batch_of, decode_parquet, encode_parquet};
    use datafusion::arrow::array::StringArray;
    use datafusion::parquet::file::metadata::ParquetMetaData;
    use opentelemetry_proto::tonic::trace::v1::Span;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const START_NS: u64 = 1_795_320_000_000_000_000; // 2026-11-22T04:00:00Z

    /// `count` spans whose trace ids run from `first` (mod 256) up.
    fn batch(first: usize, count: usize) -> Result<RecordBatch, Box<dyn std::error::Error>> {
        let spans = (first..first + count)
            .map(|i| {
                let id = (i % 255) as u8 + 1; // ids of zeros are invalid
                Span {
                    trace_id: vec![id; 16],
                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    name: format!("span {i}"),
                    start_time_unix_nano: START_NS + i as u64,
                    end_time_unix_nano: START_NS + 1_000_000,
                    ..Default::default()
                }
            })
            .collect();
        batch_of(spans)
    }

    #[test]
    fn spans_sort_by_their_ids_as_numbers_as_they_do_as_text() -> TestResult {
        // Overlapping ids and, between the two copies of one batch, equal keys.
        let batches = [
            batch(250, 20)?,
            batch(3, 7)?,
            batch(250, 20)?,
            batch(0, 300)?,
        ];
        let order = span_order(&batches).ok_or("no numeric order")?;
        // Text order, with the row number as the last key so ties keep row order.
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let row_numbers = UInt32Array::from_iter_values(0..rows as u32);
        let mut columns = Vec::new();
        for key in [spans::TRACE_ID, spans::START_TIME] {
            let parts: Vec<&dyn Array> = batches
                .iter()
                .map(|b| b.column_by_name(key).map(|c| c.as_ref()).ok_or(key))
                .collect::<Result<_, _>>()?;
            columns.push(SortColumn {
                values: datafusion::arrow::compute::concat(&parts)?,
                options: None,
            });
        }
        columns.push(SortColumn {
            values: Arc::new(row_numbers),
            options: None,
        });
        assert_eq!(order, lexsort_to_indices(&columns, None)?);
        assert_eq!(storage_order(Table::Spans, &batches)?, order);
        Ok(())
    }

    #[test]
    fn only_lowercase_hex_ids_are_sorted_as_numbers() {
        assert_eq!(
            lowercase_hex_id(&"0a".repeat(16)),
            Some(0x0a0a_0a0a_0a0a_0a0a_0a0a_0a0a_0a0a_0a0a)
        );
        assert_eq!(lowercase_hex_id(&"ff".repeat(16)), Some(u128::MAX));
        // As text 'A' sorts between '9' and 'a', so mixed case would order otherwise.
        assert_eq!(lowercase_hex_id(&"0A".repeat(16)), None);
        assert_eq!(lowercase_hex_id(&format!("+{}", "1".repeat(31))), None);
        assert_eq!(lowercase_hex_id(&"1".repeat(31)), None);
    }

    fn metadata_of(file: &Bytes) -> Result<ArrowReaderMetadata, StoreError> {
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        Ok(ArrowReaderMetadata::load(file, options)?)
    }

    /// What the whole-file writer gives a file: the Arrow schema, the trace
    /// id bloom filter in every row group, and the page index.
    fn assert_like_a_whole_file_write(metadata: &ArrowReaderMetadata, parquet: &ParquetMetaData) {
        assert_eq!(metadata.schema().fields(), Table::Spans.schema().fields());
        for group in parquet.row_groups() {
            assert!(group.column(0).bloom_filter_offset().is_some());
        }
        assert!(parquet.offset_index().is_some() && parquet.column_index().is_some());
    }

    #[test]
    fn rows_written_column_by_column_are_sorted_like_one_whole_sort() -> TestResult {
        // 45 files of 200 rows, trace ids falling back and forth: more rows
        // than one chunk, and every chunk gathers rows of many files.
        let batches = (0..45)
            .map(|i| batch(i * 7 % 50, 200))
            .collect::<Result<Vec<_>, _>>()?;
        let files = batches
            .iter()
            .map(|b| encode_parquet(Table::Spans, std::slice::from_ref(b)))
            .collect::<Result<Vec<_>, _>>()?;
        let sorted = sort_for_storage(Table::Spans, batches.clone())?;
        assert!(sorted.num_rows() > WRITE_CHUNK_ROWS);
        // One row group, and row groups smaller than a chunk (each column's
        // part of every group written before the next column is read).
        for (rows_per_group, groups) in [(ROWS_PER_GROUP, 1), (2_000, 5)] {
            let (file, rows) = merge_in_memory(Table::Spans, &files, rows_per_group)?;
            assert_eq!(rows, sorted.num_rows());
            let metadata = metadata_of(&file)?;
            assert_eq!(metadata.metadata().num_row_groups(), groups);
            assert_like_a_whole_file_write(&metadata, metadata.metadata());
            let written = concat(Table::Spans, &decode_parquet(file)?)?;
            assert_eq!(written.columns(), sorted.columns());
        }
        // A flush writes its batches the same way.
        let flushed = encode_batches_sorted(Table::Spans, &batches)?;
        let metadata = metadata_of(&flushed)?;
        assert_like_a_whole_file_write(&metadata, metadata.metadata());
        let written = concat(Table::Spans, &decode_parquet(flushed)?)?;
        assert_eq!(written.columns(), sorted.columns());
        Ok(())
    }

    #[test]
    fn large_row_groups_are_copied_and_small_ones_rewritten_together() -> TestResult {
        let large = encode_batches_sorted(Table::Spans, &[batch(0, COPY_MIN_ROWS + 100)?])?;
        let smalls = [batch(3, 50)?, batch(1, 70)?];
        let mut inputs = vec![large.clone()];
        for small in &smalls {
            inputs.push(encode_batches_sorted(
                Table::Spans,
                std::slice::from_ref(small),
            )?);
        }
        let (merged, rows) = merge_in_memory(Table::Spans, &inputs, ROWS_PER_GROUP)?;
        assert_eq!(rows, COPY_MIN_ROWS + 100 + 50 + 70);

        let metadata = metadata_of(&merged)?;
        let parquet = metadata.metadata();
        assert_like_a_whole_file_write(&metadata, parquet);
        assert_eq!(parquet.num_row_groups(), 2);
        // The large group's column chunks are the input's, byte for byte.
        let large_metadata = metadata_of(&large)?;
        let source = large_metadata.metadata().row_group(0);
        let copied = parquet.row_group(0);
        assert_eq!(copied.num_rows(), source.num_rows());
        for (out, input) in copied.columns().iter().zip(source.columns()) {
            let (out_start, length) = out.byte_range();
            let (in_start, in_length) = input.byte_range();
            assert_eq!(length, in_length);
            assert_eq!(
                merged.slice(out_start as usize..(out_start + length) as usize),
                large.slice(in_start as usize..(in_start + length) as usize)
            );
        }
        // Its bloom filter came along and still answers.
        let first_trace = concat(Table::Spans, &decode_parquet(large.clone())?)?;
        let ids = first_trace
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("trace_id is not text")?;
        let bloom = Sbbf::read_from_column_chunk(copied.column(0), &merged)?
            .ok_or("no bloom filter in the copied group")?;
        assert!(bloom.check(&ids.value(0)));

        // Every row once: the large group as it was, then the small files' rows sorted together.
        let read = decode_parquet(merged)?;
        let written = concat(Table::Spans, &read)?;
        let expected_large = concat(Table::Spans, &decode_parquet(large)?)?;
        assert_eq!(
            written.slice(0, expected_large.num_rows()).columns(),
            expected_large.columns()
        );
        let expected_small = sort_for_storage(Table::Spans, smalls.to_vec())?;
        assert_eq!(
            written
                .slice(expected_large.num_rows(), expected_small.num_rows())
                .columns(),
            expected_small.columns()
        );
        Ok(())
    }

    #[test]
    fn a_merge_of_only_large_groups_copies_them_all() -> TestResult {
        let inputs = [
            encode_batches_sorted(Table::Spans, &[batch(0, COPY_MIN_ROWS)?])?,
            encode_batches_sorted(Table::Spans, &[batch(9, COPY_MIN_ROWS)?])?,
        ];
        let (merged, rows) = merge_in_memory(Table::Spans, &inputs, ROWS_PER_GROUP)?;
        assert_eq!(rows, 2 * COPY_MIN_ROWS);
        let metadata = metadata_of(&merged)?;
        assert_eq!(metadata.metadata().num_row_groups(), 2);
        assert_like_a_whole_file_write(&metadata, metadata.metadata());
        let mut expected = Vec::new();
        for input in inputs {
            expected.extend(decode_parquet(input)?);
        }
        let written = concat(Table::Spans, &decode_parquet(merged)?)?;
        assert_eq!(
            written.columns(),
            concat(Table::Spans, &expected)?.columns()
        );
        Ok(())
    }
}
