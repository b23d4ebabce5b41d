//! Flat text columns of few distinct values written page by page here, not
//! by the Arrow writer: span names, services and their versions and
//! instances, scopes, routes, methods, addresses.
//!
//! For every row the Arrow writer copies the value into storage order
//! (`crate::gather`), looks it up in its dictionary, compares it with its
//! page's minimum and maximum, and pushes its definition level and index
//! through encoders made for any column. Here a row's value is looked up
//! once, where it lies in its batch; the minimum and maximum are compared as
//! places in the sorted dictionary; and levels and indices are packed as
//! bits ([`Bits`]). The result is what the Arrow writer writes for such a
//! column: a plain dictionary page, then v1 data pages of RLE-hybrid
//! definition levels and RLE_DICTIONARY indices, the chunk's statistics, and
//! a column index with each page's minimum, maximum and null count (a test
//! holds the two writers' statistics and page index equal).
//!
//! A column whose values are mostly distinct, whose dictionary would outgrow
//! a dictionary page, or whose values are longer than statistics keep them,
//! goes to the Arrow writer instead.

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::common::HashMap;
use datafusion::parquet::basic::{BoundaryOrder, Compression, Type};
use datafusion::parquet::data_type::ByteArray;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::ColumnIndexBuilder;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use datafusion::parquet::file::statistics::{Statistics, ValueStatistics};
use datafusion::parquet::schema::types::ColumnDescPtr;

use crate::attribute_maps::{Bits, ChunkWriter, EncodedLeaf, MOSTLY_DISTINCT, PageLimits};

/// The leaf chunk of the text column `columns` (one array per batch) at
/// `rows`, given as (batch, row); `None` where the Arrow writer is to write
/// it (see the module's notes), or for a column that is not flat text with
/// a dictionary in these settings.
pub(crate) fn encode(
    columns: &[&dyn Array],
    rows: &[(usize, usize)],
    leaf: &ColumnDescPtr,
    properties: &WriterProperties,
    limits: PageLimits,
) -> Result<Option<EncodedLeaf>, ParquetError> {
    let path = leaf.path();
    let compression = properties.compression(path);
    let statistics = properties.statistics_enabled(path);
    if rows.is_empty()
        || leaf.max_rep_level() != 0
        || leaf.max_def_level() > 1
        || leaf.physical_type() != Type::BYTE_ARRAY
        || !properties.dictionary_enabled(path)
        || properties.bloom_filter_properties(path).is_some()
        || properties.writer_version() != WriterVersion::PARQUET_1_0
        || !matches!(
            compression,
            Compression::UNCOMPRESSED | Compression::ZSTD(_)
        )
    {
        return Ok(None);
    }
    let Some(texts) = columns
        .iter()
        .map(|column| column.as_string_opt::<i32>())
        .collect::<Option<Vec<&StringArray>>>()
    else {
        return Ok(None);
    };
    let nullable = leaf.max_def_level() == 1;
    if !nullable && texts.iter().any(|text| text.null_count() > 0) {
        return Ok(None);
    }
    // Statistics cut longer values short, which is the Arrow writer's to do.
    let longest = [
        properties.column_index_truncate_length(),
        properties.statistics_truncate_length(),
    ]
    .into_iter()
    .flatten()
    .min();
    let Some(dictionary) = Dictionary::of(
        &texts,
        rows,
        properties.column_dictionary_page_size_limit(path),
        longest.filter(|_| statistics != EnabledStatistics::None),
    ) else {
        return Ok(None);
    };
    Ok(Some(write_pages(
        &dictionary,
        nullable,
        leaf,
        properties,
        limits,
    )?))
}

/// Marks a null row in [`Dictionary::ids`].
const NULL: u32 = u32::MAX;

/// The distinct values of the rows to write, and which one each row has.
struct Dictionary<'a> {
    values: Vec<&'a str>,
    /// Each row's index into `values`, or [`NULL`].
    ids: Vec<u32>,
    /// Each value's place among them all sorted byte by byte (the order of
    /// Parquet's statistics for text), so that a page's minimum and maximum
    /// are found comparing numbers.
    ranks: Vec<u32>,
    /// The values' indices in that order.
    by_rank: Vec<u32>,
}

impl<'a> Dictionary<'a> {
    /// `None` when more than one row in [`MOSTLY_DISTINCT`] has a value of
    /// its own, the dictionary page would pass `page_limit` bytes, or a value
    /// is longer than `longest`.
    fn of(
        texts: &[&'a StringArray],
        rows: &[(usize, usize)],
        page_limit: usize,
        longest: Option<usize>,
    ) -> Option<Self> {
        let most = (rows.len() / MOSTLY_DISTINCT).max(1);
        let mut lookup: HashMap<&'a str, u32> = HashMap::default();
        let mut values = Vec::new();
        let mut page_bytes = 0;
        let mut ids = Vec::with_capacity(rows.len());
        for &(batch, row) in rows {
            let text = texts.get(batch)?;
            if text.is_null(row) {
                ids.push(NULL);
                continue;
            }
            let value = text.value(row);
            let id = match lookup.get(value) {
                Some(&id) => id,
                None => {
                    page_bytes += 4 + value.len();
                    if values.len() == most
                        || page_bytes > page_limit
                        || longest.is_some_and(|longest| value.len() > longest)
                    {
                        return None;
                    }
                    let id = values.len() as u32;
                    values.push(value);
                    lookup.insert(value, id);
                    id
                }
            };
            ids.push(id);
        }
        let mut by_rank: Vec<u32> = (0..values.len() as u32).collect();
        by_rank.sort_unstable_by_key(|&id| values[id as usize].as_bytes());
        let mut ranks = vec![0; values.len()];
        for (rank, &id) in by_rank.iter().enumerate() {
            ranks[id as usize] = rank as u32;
        }
        Some(Self {
            values,
            ids,
            ranks,
            by_rank,
        })
    }

    /// The value of rank `rank`.
    fn ranked(&self, rank: u32) -> &'a str {
        self.values[self.by_rank[rank as usize] as usize]
    }
}

/// The rows of one data page so far.
struct TextPage {
    definition: Bits,
    indices: Bits,
    rows: usize,
    nulls: usize,
    /// The lowest and highest rank of the page's values.
    ranks: Option<(u32, u32)>,
}

impl TextPage {
    fn new() -> Self {
        Self {
            definition: Bits::default(),
            indices: Bits::default(),
            rows: 0,
            nulls: 0,
            ranks: None,
        }
    }

    fn encoded_bytes(&self, index_width: usize) -> usize {
        (self.rows + (self.rows - self.nulls) * index_width) / 8
    }

    /// The page as the v1 format lays it out: definition levels after their
    /// length (a nullable column's), then the indices after their bit width,
    /// or nothing when the column has no value at all (plain, and empty).
    fn body(&self, nullable: bool, index_width: Option<usize>) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.encoded_bytes(index_width.unwrap_or(0)) + 16);
        if nullable {
            body.extend_from_slice(&[0; 4]);
            // All null or none: one repeated run, a few bytes where the bits
            // would be one per row (an empty column's pages go uncompressed).
            match self.nulls {
                0 => repeated_run(self.rows, 1, &mut body),
                nulls if nulls == self.rows => repeated_run(self.rows, 0, &mut body),
                _ => self.definition.write_run(self.rows, 1, &mut body),
            }
            let length = (body.len() - 4) as u32;
            body[..4].copy_from_slice(&length.to_le_bytes());
        }
        if let Some(width) = index_width {
            body.push(width as u8);
            let values = self.rows - self.nulls;
            if values > 0 {
                self.indices.write_run(values, width, &mut body);
            }
        }
        body
    }
}

/// `count` times `value` (of one bit) as one repeated run of the RLE-hybrid
/// encoding: its length, then the value in a byte.
fn repeated_run(count: usize, value: u8, out: &mut Vec<u8>) {
    let mut header = (count as u64) << 1;
    while header >= 0x80 {
        out.push((header as u8) | 0x80);
        header >>= 7;
    }
    out.push(header as u8);
    out.push(value);
}

/// The dictionary page, the data pages, and the chunk's metadata, statistics
/// and page index.
fn write_pages(
    dictionary: &Dictionary<'_>,
    nullable: bool,
    leaf: &ColumnDescPtr,
    properties: &WriterProperties,
    limits: PageLimits,
) -> Result<EncodedLeaf, ParquetError> {
    let statistics = properties.statistics_enabled(leaf.path());
    let mut chunk = ChunkWriter::new(leaf, properties)?;
    let mut column_index = ColumnIndexBuilder::new(Type::BYTE_ARRAY);
    // A column without a value has no dictionary: its pages are levels only.
    let index_width = (!dictionary.values.is_empty())
        .then(|| crate::attribute_maps::bit_width(dictionary.values.len() as u64 - 1));
    if index_width.is_some() {
        chunk.dictionary_page(&dictionary.values)?;
    }

    let rows = dictionary.ids.len();
    let mut page = TextPage::new();
    let mut nulls = 0;
    let mut chunk_ranks: Option<(u32, u32)> = None;
    // Whether the pages' minimums and maximums never fall (or never rise).
    let mut last_ranks: Option<(u32, u32)> = None;
    let (mut ascending, mut descending) = (true, true);
    for (index, &id) in dictionary.ids.iter().enumerate() {
        if id == NULL {
            page.definition.push(0, 1);
            page.nulls += 1;
        } else {
            page.definition.push(1, 1);
            page.indices.push(u64::from(id), index_width.unwrap_or(0));
            let rank = dictionary.ranks[id as usize];
            page.ranks = Some(match page.ranks {
                Some((low, high)) => (low.min(rank), high.max(rank)),
                None => (rank, rank),
            });
        }
        page.rows += 1;
        let last = index + 1 == rows;
        if !last
            && page.rows < limits.rows
            && page.encoded_bytes(index_width.unwrap_or(0)) < limits.bytes
        {
            continue;
        }
        chunk.data_page(&page.body(nullable, index_width), page.rows, page.rows)?;
        nulls += page.nulls;
        match page.ranks {
            None => column_index.append(true, Vec::new(), Vec::new(), page.nulls as i64),
            Some((low, high)) => {
                column_index.append(
                    false,
                    dictionary.ranked(low).as_bytes().to_vec(),
                    dictionary.ranked(high).as_bytes().to_vec(),
                    page.nulls as i64,
                );
                if let Some((last_low, last_high)) = last_ranks {
                    ascending &= last_low <= low && last_high <= high;
                    descending &= last_low >= low && last_high >= high;
                }
                last_ranks = Some((low, high));
                chunk_ranks = Some(match chunk_ranks {
                    Some((chunk_low, chunk_high)) => (chunk_low.min(low), chunk_high.max(high)),
                    None => (low, high),
                });
            }
        }
        page = TextPage::new();
    }

    let chunk_statistics = (statistics != EnabledStatistics::None).then(|| {
        let value = |rank: u32| ByteArray::from(dictionary.ranked(rank).as_bytes().to_vec());
        Statistics::ByteArray(
            ValueStatistics::new(
                chunk_ranks.map(|(low, _)| value(low)),
                chunk_ranks.map(|(_, high)| value(high)),
                None,
                Some(nulls as u64),
                false,
            )
            .with_backwards_compatible_min_max(leaf.sort_order().is_signed()),
        )
    });
    let column_index = match statistics {
        EnabledStatistics::Page => {
            column_index.set_boundary_order(match (ascending, descending) {
                (true, _) => BoundaryOrder::ASCENDING,
                (false, true) => BoundaryOrder::DESCENDING,
                (false, false) => BoundaryOrder::UNORDERED,
            });
            Some(column_index.build()?)
        }
        _ => None,
    };
    chunk.finish(
        chunk_statistics,
        column_index,
        !properties.offset_index_disabled(),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use datafusion::arrow::array::RecordBatch;
    use datafusion::parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
    use datafusion::parquet::file::metadata::ParquetMetaData;
    use datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use weft_schema::spans;

    use super::*;
    use crate::sorted::{encode_batches_sorted, sort_for_storage};
    use crate::store::{Table, concat, decode_parquet, flush_writer_properties};
    use crate::test_requests::{leaf_at, metadata_of, numbered_span, request_of, text};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A request of four services, 1,000 spans each, numbered from `first`
    /// on: five span names, a route on two spans in three, a method on every
    /// span, a version on two of the services, and never an `rpc.system`.
    fn request(first: usize) -> RecordBatch {
        let names = ["GET /orders", "POST /pay", "SELECT", "publish", "Äpfel"];
        let services: Vec<Vec<KeyValue>> = (0..4)
            .map(|service| {
                let mut attributes = vec![text("service.name", &format!("service-{service}"))];
                if service % 2 == 0 {
                    attributes.push(text("service.version", &format!("1.{service}")));
                }
                attributes
            })
            .collect();
        request_of(&services, 1_000, first, &|n| Span {
            name: names[n % names.len()].into(),
            attributes: (!n.is_multiple_of(3))
                .then(|| text("http.route", &format!("/r/{}", n % 7)))
                .into_iter()
                .chain([text("http.request.method", "GET")])
                .collect(),
            ..numbered_span(n)
        })
    }

    /// A page's entry in the column index: null page, null count, minimum, maximum.
    type PageStatistics = (bool, Option<i64>, Vec<u8>, Vec<u8>);

    fn page_statistics(index: &ColumnIndexMetaData) -> Vec<PageStatistics> {
        let ColumnIndexMetaData::BYTE_ARRAY(text) = index else {
            panic!("not a text column's index: {index:?}");
        };
        (0..index.num_pages() as usize)
            .map(|page| {
                let bytes = |value: Option<&[u8]>| value.unwrap_or_default().to_vec();
                (
                    index.is_null_page(page),
                    index.null_count(page),
                    bytes(text.min_value(page)),
                    bytes(text.max_value(page)),
                )
            })
            .collect()
    }

    #[test]
    fn text_columns_carry_the_arrow_writers_statistics_and_page_index() -> TestResult {
        let batches: Vec<RecordBatch> = (0..5)
            .map(|request| self::request(request * 4_000))
            .collect();
        let ours = encode_batches_sorted(Table::Spans, &batches)?;
        let sorted = sort_for_storage(Table::Spans, batches.clone())?;
        let mut reference = Vec::new();
        let properties = flush_writer_properties(Table::Spans, &batches)?;
        let mut writer =
            ArrowWriter::try_new(&mut reference, Table::Spans.schema(), Some(properties))?;
        writer.write(&sorted)?;
        writer.close()?;
        let reference = Bytes::from(reference);

        let read = concat(Table::Spans, &decode_parquet(ours.clone())?)?;
        assert_eq!(read.columns(), sorted.columns());
        let (ours, reference) = (metadata_of(&ours)?, metadata_of(&reference)?);
        let index = |metadata: &ParquetMetaData, leaf: usize| {
            metadata
                .column_index()
                .map(|index| page_statistics(&index[0][leaf]))
        };
        let page_rows = |metadata: &ParquetMetaData, leaf: usize| {
            metadata.offset_index().map(|index| {
                let pages = index[0][leaf].page_locations();
                pages
                    .iter()
                    .map(|page| page.first_row_index)
                    .collect::<Vec<_>>()
            })
        };
        for column in [
            spans::NAME,
            spans::SERVICE_NAME,
            "service_version",
            "http_route",
            "http_request_method",
            "rpc_system",
        ] {
            let leaf = leaf_at(&ours, column);
            let (chunk, reference_chunk) = (
                ours.row_group(0).column(leaf),
                reference.row_group(0).column(leaf),
            );
            // The Arrow writer records the text's unencoded size; this module does not.
            assert_eq!(
                chunk.unencoded_byte_array_data_bytes(),
                None,
                "{column} written here"
            );
            assert!(reference_chunk.unencoded_byte_array_data_bytes().is_some());
            assert_eq!(chunk.statistics(), reference_chunk.statistics(), "{column}");
            let pages = index(&ours, leaf);
            assert_eq!(pages, index(&reference, leaf), "{column}");
            assert_eq!(
                pages.map(|pages| pages.len()),
                Some(3),
                "{column}: 20,000 rows in 3 pages"
            );
            let order = |metadata: &ParquetMetaData| {
                metadata
                    .column_index()
                    .and_then(|index| index[0][leaf].get_boundary_order())
            };
            assert_eq!(order(&ours), order(&reference), "{column}");
            assert_eq!(
                page_rows(&ours, leaf),
                page_rows(&reference, leaf),
                "{column}"
            );
        }
        Ok(())
    }

    /// Mostly distinct values, values longer than the page index keeps, or
    /// a column that is not flat text go to the Arrow writer.
    #[test]
    fn only_flat_text_of_few_short_values_is_written_here() -> TestResult {
        let batch = request(0);
        let properties = flush_writer_properties(Table::Spans, std::slice::from_ref(&batch))?;
        let parquet = ArrowSchemaConverter::new().convert(&Table::Spans.schema())?;
        let leaf = |path: &str| {
            (0..parquet.num_columns())
                .map(|leaf| parquet.column(leaf))
                .find(|leaf| leaf.path().string() == path)
                .expect("a leaf of that path")
        };
        let limits = PageLimits {
            rows: 8_192,
            bytes: 256 << 10,
        };
        let rows: Vec<(usize, usize)> = (0..400).map(|row| (0, row)).collect();
        let encoded = |values: &StringArray, path: &str| {
            encode(
                &[values as &dyn Array],
                &rows,
                &leaf(path),
                &properties,
                limits,
            )
            .map(|leaf| leaf.is_some())
        };
        let few = StringArray::from_iter_values((0..400).map(|i| format!("op-{}", i % 100)));
        assert!(encoded(&few, spans::NAME)?, "100 values in 400 rows");
        let many = StringArray::from_iter_values((0..400).map(|i| format!("op-{}", i % 101)));
        assert!(!encoded(&many, spans::NAME)?, "101 values in 400 rows");
        let long = StringArray::from_iter_values((0..400).map(|i| format!("{:>65}", i % 2)));
        assert!(!encoded(&long, spans::NAME)?, "65-byte values");
        // Nulls in a required column, and text written without a dictionary.
        let nulls = StringArray::from_iter((0..400).map(|i| (i % 2 == 0).then_some("x")));
        assert!(encoded(&nulls, "http_route")?);
        assert!(!encoded(&nulls, spans::NAME)?);
        assert!(!encoded(&few, spans::SPAN_ID)?);
        Ok(())
    }
}
