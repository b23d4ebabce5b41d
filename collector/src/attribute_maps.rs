//! Attribute map columns written page by page here, not by the Arrow writer.
//!
//! The Arrow writer encodes a map column as if every row were new: for every
//! entry of every row, after gathering it into storage order, its levels, a
//! dictionary lookup of its value and zstd over its key. Attribute maps
//! repeat themselves, which this module takes as given:
//!
//! - a span's resource and scope attributes are its resource's and scope's,
//!   and the types of its attributes its instrumentation's: each distinct map
//!   is encoded once, into the bits of its levels and dictionary indices,
//!   and a row is its map's bits appended to the page;
//! - a span's own attributes are nearly always its own, but their keys are
//!   those of every span its instrumentation makes: the keys are written a
//!   distinct set of keys at a time, the values through a dictionary
//!   ([`encode`] does both, as [`sharing_of`] says).
//!
//! A flush file of the ingest benchmark's spans took 1,836–1,915 ns per span
//! against 2,276–2,367 (`weft-stagecost`, 3 runs each in turn), the Arrow
//! writer's `resource_attributes` alone having been 258 ns, `attributes` 436.
//!
//! The pages are the Arrow writer's for a dictionary-encoded column: a plain
//! dictionary page, then v1 data pages of RLE-hybrid repetition and
//! definition levels and RLE_DICTIONARY indices (all as bit-packed runs,
//! simpler than choosing run lengths; with zstd over them the files came out
//! 0.5 bytes per span smaller than the Arrow writer's), compressed as the
//! file's settings say, with an offset index and no statistics, as maps have
//! none.
//! A column whose maps (or sets of keys) are mostly distinct, or whose
//! distinct maps would outgrow a dictionary page, goes to the Arrow writer
//! instead; the values of span attributes that would outgrow one are written
//! plain, as the Arrow writer goes on past that limit.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::ops::Range;

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, MapArray, StringArray};
use datafusion::common::HashMap;
use datafusion::parquet::basic::{Compression, Encoding, PageType};
use datafusion::parquet::column::page::{CompressedPage, Page, PageWriter};
use datafusion::parquet::column::writer::ColumnCloseResult;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{
    ColumnChunkMetaData, OffsetIndexBuilder, PageEncodingStats,
};
use datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::statistics::Statistics;
use datafusion::parquet::file::writer::{
    SerializedPageWriter, SerializedRowGroupWriter, TrackedWrite,
};
use datafusion::parquet::schema::types::ColumnDescPtr;
use weft_schema::{metrics, spans};

use crate::store::Table;

/// What the rows of an attribute map column share, if this module writes it.
///
/// A span's resource and scope attributes are its resource's and scope's,
/// the same for every span of a request's resource, and the types of its
/// attributes that are not strings are the same for every span its
/// instrumentation makes (`http.response.status_code` and `server.port` are
/// `int`, and so on): whole maps. A span's own attributes are its own, but
/// their keys are those of every span its instrumentation makes.
pub(crate) fn sharing_of(table: Table, column: &str) -> Option<Sharing> {
    let whole_maps: &[&str] = match table {
        Table::Spans => &[
            spans::RESOURCE_ATTRIBUTES,
            spans::RESOURCE_ATTRIBUTE_TYPES,
            spans::SCOPE_ATTRIBUTES,
            spans::SCOPE_ATTRIBUTE_TYPES,
            spans::ATTRIBUTE_TYPES,
        ],
        Table::Metrics => &[
            metrics::RESOURCE_ATTRIBUTES,
            metrics::RESOURCE_ATTRIBUTE_TYPES,
            metrics::SCOPE_ATTRIBUTES,
            metrics::SCOPE_ATTRIBUTE_TYPES,
            metrics::ATTRIBUTE_TYPES,
        ],
    };
    let keys = match table {
        Table::Spans => spans::ATTRIBUTES,
        Table::Metrics => metrics::ATTRIBUTES,
    };
    if whole_maps.contains(&column) {
        Some(Sharing::WholeMap)
    } else if column == keys {
        Some(Sharing::Keys)
    } else {
        None
    }
}

/// Where a page closes, as the Arrow writer's settings say: at `rows` rows or
/// about `bytes` bytes of encoded levels and indices, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageLimits {
    pub rows: usize,
    pub bytes: usize,
}

/// One leaf column chunk, encoded, waiting to be appended to its row group.
pub(crate) struct EncodedLeaf {
    bytes: Bytes,
    close: ColumnCloseResult,
}

impl EncodedLeaf {
    pub(crate) fn append_to_row_group<W: Write + Send>(
        self,
        row_group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> Result<(), ParquetError> {
        row_group.append_column(&self.bytes, self.close)
    }
}

/// Where a map column's two leaves go.
#[derive(Clone, Copy)]
pub(crate) struct MapLeaves<'a> {
    pub key: &'a ColumnDescPtr,
    pub value: &'a ColumnDescPtr,
    pub properties: &'a WriterProperties,
    pub limits: PageLimits,
}

/// The two leaf chunks (keys, then values) of the maps at `rows`, given as
/// (batch, row) into `maps`, whose rows share what `sharing` says. `None`
/// if they share little after all (the maps, or sets of keys, are mostly
/// distinct), a dictionary would outgrow the writer's dictionary page limit,
/// or there is nothing to write: the Arrow writer does as well there.
///
/// Whole maps: each distinct map is encoded once, its keys and values both.
/// Keys: each distinct set of keys is encoded once; values are written a
/// value at a time, through a dictionary, or plain if theirs would outgrow
/// a dictionary page (as the Arrow writer goes on past that limit).
pub(crate) fn encode(
    sharing: Sharing,
    maps: &[&MapArray],
    rows: &[(usize, usize)],
    leaves: MapLeaves<'_>,
) -> Result<Option<[EncodedLeaf; 2]>, ParquetError> {
    // zstd or nothing, as the store's settings say; another codec would be
    // the Arrow writer's to apply.
    let compressed_here = |leaf: &ColumnDescPtr| {
        matches!(
            leaves.properties.compression(leaf.path()),
            Compression::UNCOMPRESSED | Compression::ZSTD(_)
        )
    };
    if !compressed_here(leaves.key) || !compressed_here(leaves.value) {
        return Ok(None);
    }
    let Some(sources) = sources_of(maps, leaves.key, leaves.value) else {
        return Ok(None);
    };
    let Some(distinct) = Distinct::of(&sources, rows, sharing) else {
        return Ok(None);
    };
    // A dictionary page as large as the Arrow writer lets one grow, at most:
    // past it, that writer goes on without (a resource can be megabytes).
    let limit = leaves.properties.dictionary_page_size_limit();
    let keys = LeafPatterns::keys(&distinct);
    if keys.dictionary.page_bytes() > limit {
        return Ok(None);
    }
    let row_maps = &distinct.row_maps;
    let chunks = match sharing {
        Sharing::WholeMap => {
            let values = LeafPatterns::values(&distinct);
            if values.dictionary.is_empty() || values.dictionary.page_bytes() > limit {
                return Ok(None);
            }
            leaves.write(&keys, row_maps, &values.dictionary, |row, page| {
                page.add(&values.maps[row_maps[row] as usize])
            })?
        }
        Sharing::Keys => {
            let Some(values) = RowValues::of(&sources, rows, limit) else {
                return Ok(None);
            };
            let all_present = all_present_levels(&keys);
            let index_width = values.dictionary.index_width;
            leaves.write(&keys, row_maps, &values.dictionary, |index, page| {
                let set = &keys.maps[row_maps[index] as usize];
                page.repetition.extend(&set.repetition);
                page.rows += 1;
                page.levels += set.levels;
                if let Some(ids) = values.ids(index)
                    && ids.len() == set.values
                {
                    page.definition
                        .extend(&all_present[row_maps[index] as usize]);
                    for id in ids {
                        page.indices.push(u64::from(*id), index_width);
                    }
                    page.values += ids.len();
                    return;
                }
                // Some of the row's values are null, which their levels say,
                // or the values go plain: a value at a time.
                // `Distinct::of` has looked up every row's batch already.
                let (batch, row) = rows[index];
                let map = sources[batch].map(row, Sharing::WholeMap);
                if map.entries().is_empty() {
                    page.definition.push(0, 2);
                }
                let ids = values.ids(index);
                let mut next_id = ids.unwrap_or_default().iter();
                for entry in map.entries() {
                    let Some(text) = map.value(entry) else {
                        page.definition.push(1, 2);
                        continue;
                    };
                    page.definition.push(2, 2);
                    page.values += 1;
                    match ids {
                        Some(_) => {
                            let id = next_id.next().copied().unwrap_or_default();
                            page.indices.push(u64::from(id), index_width);
                        }
                        None => {
                            page.plain
                                .extend_from_slice(&(text.len() as u32).to_le_bytes());
                            page.plain.extend_from_slice(text.as_bytes());
                        }
                    }
                }
            })?
        }
    };
    Ok(Some(chunks))
}

impl MapLeaves<'_> {
    /// The key leaf, a row's keys being those of its distinct map (or set of
    /// keys) in `row_keys`, and the value leaf, put on its pages by `add_values`.
    fn write(
        &self,
        keys: &LeafPatterns<'_>,
        row_keys: &[u32],
        values: &LeafDictionary<'_>,
        add_values: impl FnMut(usize, &mut PageBits),
    ) -> Result<[EncodedLeaf; 2], ParquetError> {
        let rows = row_keys.len();
        let add_keys = |row: usize, page: &mut PageBits| {
            page.add(&keys.maps[row_keys[row] as usize]);
        };
        Ok([
            write_leaf(
                &keys.dictionary,
                rows,
                add_keys,
                self.key,
                self.properties,
                self.limits,
            )?,
            write_leaf(
                values,
                rows,
                add_values,
                self.value,
                self.properties,
                self.limits,
            )?,
        ])
    }
}

/// For each distinct set of keys, a row's definition levels when none of its
/// values is null: two per entry (the entry, its value), or none for an
/// empty map.
fn all_present_levels(keys: &LeafPatterns<'_>) -> Vec<Bits> {
    keys.maps
        .iter()
        .map(|set| {
            let mut levels = Bits::default();
            if set.values == 0 {
                levels.push(0, 2);
            }
            for _ in 0..set.values {
                levels.push(2, 2);
            }
            levels
        })
        .collect()
}

/// The typed parts of each batch's map column, if the leaves are of the
/// schema's map shape (required map, required key, optional value): the
/// levels here are written for that one.
fn sources_of<'a>(
    maps: &[&'a MapArray],
    key: &ColumnDescPtr,
    value: &ColumnDescPtr,
) -> Option<Vec<MapSource<'a>>> {
    let levels = |leaf: &ColumnDescPtr| (leaf.max_def_level(), leaf.max_rep_level());
    if levels(key) != (1, 1) || levels(value) != (2, 1) {
        return None;
    }
    maps.iter().map(|map| MapSource::of(map)).collect()
}

/// Each row's non-null values as indices into a dictionary of them all, or,
/// where that dictionary would outgrow a dictionary page, the mark to write
/// them plain (as the Arrow writer goes on past that limit).
struct RowValues<'a> {
    dictionary: LeafDictionary<'a>,
    ids: Vec<u32>,
    /// Where each row's indices start in `ids`, and where the last ends.
    starts: Vec<usize>,
}

impl<'a> RowValues<'a> {
    /// `None` if no row has a value.
    fn of(sources: &'a [MapSource<'a>], rows: &[(usize, usize)], limit: usize) -> Option<Self> {
        let mut lookup: HashMap<&'a str, u32> = HashMap::default();
        let mut values = Vec::new();
        let mut page_bytes = 0;
        let mut ids = Vec::new();
        let mut starts = Vec::with_capacity(rows.len() + 1);
        starts.push(0);
        for &(batch, row) in rows {
            let map = sources.get(batch)?.map(row, Sharing::WholeMap);
            for entry in map.entries() {
                let Some(text) = map.value(entry) else {
                    continue;
                };
                let id = match lookup.get(text) {
                    Some(id) => *id,
                    None => {
                        page_bytes += 4 + text.len();
                        if page_bytes > limit {
                            return Some(Self::plain());
                        }
                        let id = values.len() as u32;
                        values.push(text);
                        lookup.insert(text, id);
                        id
                    }
                };
                ids.push(id);
            }
            starts.push(ids.len());
        }
        if values.is_empty() {
            return None;
        }
        let index_width = bit_width(values.len() as u64 - 1);
        Some(Self {
            dictionary: LeafDictionary {
                values: Some(values),
                def_width: 2,
                index_width,
            },
            ids,
            starts,
        })
    }

    fn plain() -> Self {
        Self {
            dictionary: LeafDictionary {
                values: None,
                def_width: 2,
                index_width: 0,
            },
            ids: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// The indices of row `index`'s values; `None` when they are written plain.
    fn ids(&self, index: usize) -> Option<&[u32]> {
        self.dictionary.values.as_ref()?;
        Some(&self.ids[self.starts[index]..self.starts[index + 1]])
    }
}

/// One batch's map column, its parts typed.
struct MapSource<'a> {
    offsets: &'a [i32],
    keys: &'a StringArray,
    values: &'a StringArray,
}

impl<'a> MapSource<'a> {
    fn of(map: &'a MapArray) -> Option<Self> {
        // The schema's maps are never null; one that is goes the general way.
        if map.null_count() > 0 {
            return None;
        }
        Some(Self {
            offsets: map.value_offsets(),
            keys: map.keys().as_string_opt::<i32>()?,
            values: map.values().as_string_opt::<i32>()?,
        })
    }

    fn map(&'a self, row: usize, sharing: Sharing) -> MapRef<'a> {
        MapRef {
            source: self,
            start: self.offsets[row] as usize,
            end: self.offsets[row + 1] as usize,
            sharing,
        }
    }
}

/// What rows share: their whole map, or its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    WholeMap,
    Keys,
}

/// One row's map, compared and hashed by its entries (or their keys).
#[derive(Clone, Copy)]
struct MapRef<'a> {
    source: &'a MapSource<'a>,
    start: usize,
    end: usize,
    sharing: Sharing,
}

impl<'a> MapRef<'a> {
    fn entries(&self) -> Range<usize> {
        self.start..self.end
    }

    fn key(&self, entry: usize) -> &'a str {
        self.source.keys.value(entry)
    }

    fn value(&self, entry: usize) -> Option<&'a str> {
        let values = self.source.values;
        values.is_valid(entry).then(|| values.value(entry))
    }
}

impl Hash for MapRef<'_> {
    // The entries' text end to end: two writes, however many entries. Equal
    // text with other boundaries collides and is told apart by `eq`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let entries = self.entries();
        state.write_usize(entries.len());
        state.write(entries_text(self.source.keys, &entries));
        if self.sharing == Sharing::WholeMap {
            state.write(entries_text(self.source.values, &entries));
        }
    }
}

impl PartialEq for MapRef<'_> {
    // Rows of one resource hold byte-for-byte copies of its map, so the text
    // end to end is compared first (one `memcmp`, values first: the maps of
    // a request's resources mostly have the same keys), and then where the
    // entries cut it. Against comparing entry by entry, a string at a time:
    // the lookup in `Distinct::of` fell from 3.1 to 2.7 % of the server's
    // samples at 10,000 spans/s, and the server took 0.98-0.99 times the CPU
    // (README, Performance, session 26).
    fn eq(&self, other: &Self) -> bool {
        let (entries, other_entries) = (self.entries(), other.entries());
        let whole = self.sharing == Sharing::WholeMap;
        let same_text = |array: &StringArray, other_array: &StringArray| {
            entries_text(array, &entries) == entries_text(other_array, &other_entries)
        };
        let same_cuts = |array: &StringArray, other_array: &StringArray| {
            same_boundaries(
                &array.value_offsets()[entries.start..=entries.end],
                &other_array.value_offsets()[other_entries.start..=other_entries.end],
            )
        };
        let (keys, values) = (self.source.keys, self.source.values);
        let (other_keys, other_values) = (other.source.keys, other.source.values);
        entries.len() == other_entries.len()
            && (!whole || same_text(values, other_values))
            && same_text(keys, other_keys)
            && same_cuts(keys, other_keys)
            && (!whole
                || (same_cuts(values, other_values)
                    && entries
                        .clone()
                        .zip(other_entries.clone())
                        .all(|(a, b)| values.is_valid(a) == other_values.is_valid(b))))
    }
}

/// The keys' (or values') text of all `entries`, end to end.
fn entries_text<'t>(array: &'t StringArray, entries: &Range<usize>) -> &'t [u8] {
    let offsets = array.value_offsets();
    &array.value_data()[offsets[entries.start] as usize..offsets[entries.end] as usize]
}

/// Whether two runs of offsets cut their text at the same places.
fn same_boundaries(offsets: &[i32], other: &[i32]) -> bool {
    let (Some(&start), Some(&other_start)) = (offsets.first(), other.first()) else {
        return offsets.len() == other.len();
    };
    offsets.len() == other.len()
        && offsets
            .iter()
            .zip(other)
            .all(|(offset, other_offset)| offset - start == other_offset - other_start)
}

impl Eq for MapRef<'_> {}

/// The distinct maps of the rows to write, and which one each row has.
struct Distinct<'a> {
    maps: Vec<MapRef<'a>>,
    row_maps: Vec<u32>,
}

impl<'a> Distinct<'a> {
    /// `None` when more than one row in [`MOSTLY_DISTINCT`] has a map of its
    /// own, or no row has an entry.
    fn of(sources: &'a [MapSource<'a>], rows: &[(usize, usize)], sharing: Sharing) -> Option<Self> {
        // A column without entries (scope attributes, mostly) has nothing to share.
        if sources
            .iter()
            .all(|source| source.offsets.first() == source.offsets.last())
        {
            return None;
        }
        let mut ids: HashMap<MapRef<'a>, u32> = HashMap::default();
        let mut maps: Vec<MapRef<'a>> = Vec::new();
        // The distinct maps met in each batch so far. A request has a few
        // resources, so a row's map is nearly always one of these, found by
        // comparing without hashing the row.
        let mut seen: Vec<Vec<u32>> = vec![Vec::new(); sources.len()];
        let mut row_maps = Vec::with_capacity(rows.len());
        let most = (rows.len() / MOSTLY_DISTINCT).max(1);
        for &(batch, row) in rows {
            let map = sources.get(batch)?.map(row, sharing);
            let seen = &mut seen[batch];
            let id = match seen.iter().find(|&&id| maps[id as usize] == map) {
                Some(&id) => id,
                None => {
                    let id = *ids.entry(map).or_insert_with(|| {
                        maps.push(map);
                        (maps.len() - 1) as u32
                    });
                    if seen.len() < SEEN_PER_BATCH {
                        seen.push(id);
                    }
                    id
                }
            };
            if maps.len() > most {
                return None;
            }
            row_maps.push(id);
        }
        Some(Self { maps, row_maps })
    }
}

/// Distinct maps per batch compared before hashing: the ingest benchmark's
/// requests have 4 resources each.
const SEEN_PER_BATCH: usize = 8;

/// Dedup pays when rows share maps; with more than one distinct map in this
/// many rows, the column is left to the Arrow writer.
pub(crate) const MOSTLY_DISTINCT: usize = 4;

/// Each distinct map's part of one leaf column: its levels and indices as
/// bits, how many of each, and the leaf's dictionary.
struct LeafPatterns<'a> {
    maps: Vec<MapPattern>,
    dictionary: LeafDictionary<'a>,
}

/// How a leaf's values are written: through a dictionary (its values and the
/// bit width of the indices), or plain; and the bit width of its definition
/// levels.
struct LeafDictionary<'a> {
    /// `None`: plain, each value after its length.
    values: Option<Vec<&'a str>>,
    def_width: usize,
    index_width: usize,
}

impl LeafDictionary<'_> {
    /// The dictionary page's size before compression: each value after its length.
    fn page_bytes(&self) -> usize {
        self.values
            .iter()
            .flatten()
            .map(|value| 4 + value.len())
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.values.as_ref().is_none_or(Vec::is_empty)
    }
}

struct MapPattern {
    repetition: Bits,
    definition: Bits,
    indices: Bits,
    /// Levels (one per entry, or one for an empty map) and indices (one per
    /// non-null value).
    levels: usize,
    values: usize,
}

impl<'a> LeafPatterns<'a> {
    /// The `key` leaf: required, one level of definition (the entry exists).
    fn keys(distinct: &Distinct<'a>) -> Self {
        Self::build(distinct, 1, |map, entry| Some(map.key(entry)))
    }

    /// The `value` leaf: optional, two levels of definition (the entry
    /// exists, its value is not null).
    fn values(distinct: &Distinct<'a>) -> Self {
        Self::build(distinct, 2, |map, entry| map.value(entry))
    }

    fn build(
        distinct: &Distinct<'a>,
        max_definition: i16,
        text: impl Fn(&MapRef<'a>, usize) -> Option<&'a str>,
    ) -> Self {
        let mut ids: HashMap<&'a str, u64> = HashMap::default();
        let mut dictionary = Vec::new();
        let mut map_ids: Vec<Vec<Option<u64>>> = Vec::with_capacity(distinct.maps.len());
        for map in &distinct.maps {
            let entries = map.entries().map(|entry| {
                text(map, entry).map(|text| {
                    *ids.entry(text).or_insert_with(|| {
                        dictionary.push(text);
                        (dictionary.len() - 1) as u64
                    })
                })
            });
            map_ids.push(entries.collect());
        }
        let def_width = bit_width(max_definition as u64);
        let index_width = bit_width(dictionary.len().saturating_sub(1) as u64);
        let maps = map_ids
            .iter()
            .map(|ids| {
                let mut pattern = MapPattern {
                    repetition: Bits::default(),
                    definition: Bits::default(),
                    indices: Bits::default(),
                    levels: ids.len().max(1),
                    values: 0,
                };
                if ids.is_empty() {
                    pattern.repetition.push(0, 1);
                    pattern.definition.push(0, def_width);
                }
                for (entry, id) in ids.iter().enumerate() {
                    pattern.repetition.push(u64::from(entry > 0), 1);
                    match id {
                        Some(id) => {
                            pattern.definition.push(max_definition as u64, def_width);
                            pattern.indices.push(*id, index_width);
                            pattern.values += 1;
                        }
                        None => pattern
                            .definition
                            .push(max_definition as u64 - 1, def_width),
                    }
                }
                pattern
            })
            .collect();
        Self {
            maps,
            dictionary: LeafDictionary {
                values: Some(dictionary),
                def_width,
                index_width,
            },
        }
    }
}

/// Bits to hold `max`, at least one (some readers take a width of 0 badly).
pub(crate) fn bit_width(max: u64) -> usize {
    (64 - max.leading_zeros() as usize).max(1)
}

/// Bits in the order Parquet packs them: the first value in the lowest bits
/// of the first byte.
#[derive(Default)]
pub(crate) struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    /// Appends the low `width` bits of `value`, which has no others set.
    pub(crate) fn push(&mut self, value: u64, width: usize) {
        if width == 0 {
            return;
        }
        let offset = self.len % 64;
        match self.words.last_mut() {
            Some(last) if offset > 0 => {
                *last |= value << offset;
                if offset + width > 64 {
                    self.words.push(value >> (64 - offset));
                }
            }
            _ => self.words.push(value),
        }
        self.len += width;
    }

    fn extend(&mut self, other: &Bits) {
        let full = other.len / 64;
        for word in &other.words[..full] {
            self.push(*word, 64);
        }
        let rest = other.len % 64;
        if rest > 0 {
            self.push(other.words[full], rest);
        }
    }

    fn clear(&mut self) {
        self.words.clear();
        self.len = 0;
    }

    /// `count` values of `width` bits as one bit-packed run of the RLE-hybrid
    /// encoding: a header, then whole groups of eight values, the last padded.
    pub(crate) fn write_run(&self, count: usize, width: usize, out: &mut Vec<u8>) {
        let groups = count.div_ceil(8);
        write_varint(((groups as u64) << 1) | 1, out);
        let bytes = groups * width;
        let start = out.len();
        for word in &self.words {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.resize(start + bytes, 0);
    }
}

fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A leaf's pages: its dictionary, then `rows` rows, each put on its page by
/// `add_row` (given the row's index).
fn write_leaf(
    dictionary: &LeafDictionary<'_>,
    rows: usize,
    mut add_row: impl FnMut(usize, &mut PageBits),
    descriptor: &ColumnDescPtr,
    properties: &WriterProperties,
    limits: PageLimits,
) -> Result<EncodedLeaf, ParquetError> {
    let mut chunk = ChunkWriter::new(descriptor, properties)?;
    if let Some(values) = &dictionary.values {
        chunk.dictionary_page(values)?;
    }
    let mut page = PageBits::default();
    for index in 0..rows {
        add_row(index, &mut page);
        let last = index + 1 == rows;
        if last || page.rows >= limits.rows || page.encoded_bytes(dictionary) >= limits.bytes {
            chunk.data_page(&page.body(dictionary), page.rows, page.levels)?;
            page.clear();
        }
    }
    chunk.finish(None, None, true)
}

/// A leaf column chunk as its pages are written: a plain dictionary page, if
/// it has one, then v1 data pages of RLE levels and dictionary indices (or
/// plain values without a dictionary), compressed as the column's settings
/// say; and its offset index and sizes, for its metadata.
pub(crate) struct ChunkWriter {
    descriptor: ColumnDescPtr,
    compression: Compression,
    compressor: PageCompressor,
    sink: TrackedWrite<Vec<u8>>,
    offsets: OffsetIndexBuilder,
    has_dictionary: bool,
    data_page_offset: u64,
    data_pages: i32,
    uncompressed: usize,
    levels: usize,
    rows: usize,
}

impl ChunkWriter {
    pub(crate) fn new(
        descriptor: &ColumnDescPtr,
        properties: &WriterProperties,
    ) -> Result<Self, ParquetError> {
        let compression = properties.compression(descriptor.path());
        Ok(Self {
            descriptor: descriptor.clone(),
            compression,
            compressor: PageCompressor::new(compression)?,
            sink: TrackedWrite::new(Vec::new()),
            offsets: OffsetIndexBuilder::new(),
            has_dictionary: false,
            data_page_offset: 0,
            data_pages: 0,
            uncompressed: 0,
            levels: 0,
            rows: 0,
        })
    }

    /// The dictionary page of `values`, plain; before any data page.
    pub(crate) fn dictionary_page(&mut self, values: &[&str]) -> Result<(), ParquetError> {
        let mut plain = Vec::new();
        for text in values {
            plain.extend_from_slice(&(text.len() as u32).to_le_bytes());
            plain.extend_from_slice(text.as_bytes());
        }
        let page = self.compressor.page(&plain, |buf| Page::DictionaryPage {
            buf,
            num_values: values.len() as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        })?;
        let spec = SerializedPageWriter::new(&mut self.sink).write_page(page)?;
        self.uncompressed += spec.uncompressed_size;
        self.data_page_offset = spec.offset + spec.bytes_written;
        self.has_dictionary = true;
        Ok(())
    }

    fn value_encoding(&self) -> Encoding {
        match self.has_dictionary {
            true => Encoding::RLE_DICTIONARY,
            false => Encoding::PLAIN,
        }
    }

    /// A data page of `rows` rows and `levels` levels (one a row for a flat
    /// column) whose body, uncompressed, is `body`.
    pub(crate) fn data_page(
        &mut self,
        body: &[u8],
        rows: usize,
        levels: usize,
    ) -> Result<(), ParquetError> {
        let encoding = self.value_encoding();
        let page = self.compressor.page(body, |buf| Page::DataPage {
            buf,
            num_values: levels as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        })?;
        let spec = SerializedPageWriter::new(&mut self.sink).write_page(page)?;
        self.offsets
            .append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        self.offsets.append_row_count(rows as i64);
        self.uncompressed += spec.uncompressed_size;
        self.levels += levels;
        self.rows += rows;
        self.data_pages += 1;
        Ok(())
    }

    /// The chunk, with `statistics` and `column_index` if given, and its
    /// offset index if `offset_index`.
    pub(crate) fn finish(
        mut self,
        statistics: Option<Statistics>,
        column_index: Option<ColumnIndexMetaData>,
        offset_index: bool,
    ) -> Result<EncodedLeaf, ParquetError> {
        SerializedPageWriter::new(&mut self.sink).close()?;
        let bytes_written = self.sink.bytes_written() as u64;
        let value_encoding = self.value_encoding();
        let dictionary_page = self.has_dictionary.then_some(0);
        let mut metadata = ColumnChunkMetaData::builder(self.descriptor)
            .set_compression(self.compression)
            .set_encodings(match dictionary_page {
                Some(_) => vec![Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY],
                None => vec![Encoding::PLAIN, Encoding::RLE],
            })
            .set_page_encoding_stats(
                dictionary_page
                    .map(|_| PageEncodingStats {
                        page_type: PageType::DICTIONARY_PAGE,
                        encoding: Encoding::PLAIN,
                        count: 1,
                    })
                    .into_iter()
                    .chain([PageEncodingStats {
                        page_type: PageType::DATA_PAGE,
                        encoding: value_encoding,
                        count: self.data_pages,
                    }])
                    .collect(),
            )
            .set_total_compressed_size(bytes_written as i64)
            .set_total_uncompressed_size(self.uncompressed as i64)
            .set_num_values(self.levels as i64)
            .set_dictionary_page_offset(dictionary_page)
            .set_data_page_offset(self.data_page_offset as i64);
        if let Some(statistics) = statistics {
            metadata = metadata.set_statistics(statistics);
        }
        Ok(EncodedLeaf {
            bytes: Bytes::from(self.sink.into_inner()?),
            close: ColumnCloseResult {
                bytes_written,
                rows_written: self.rows as u64,
                metadata: metadata.build()?,
                bloom_filter: None,
                column_index,
                offset_index: offset_index.then(|| self.offsets.build()),
            },
        })
    }
}

/// The rows of one data page so far.
#[derive(Default)]
struct PageBits {
    repetition: Bits,
    definition: Bits,
    indices: Bits,
    /// Values written plain, each after its length.
    plain: Vec<u8>,
    rows: usize,
    levels: usize,
    values: usize,
}

impl PageBits {
    fn add(&mut self, map: &MapPattern) {
        self.repetition.extend(&map.repetition);
        self.definition.extend(&map.definition);
        self.indices.extend(&map.indices);
        self.rows += 1;
        self.levels += map.levels;
        self.values += map.values;
    }

    fn encoded_bytes(&self, dictionary: &LeafDictionary<'_>) -> usize {
        (self.levels * (1 + dictionary.def_width) + self.values * dictionary.index_width) / 8
            + self.plain.len()
    }

    /// The page as the v1 format lays it out: repetition levels and
    /// definition levels, each after its length, then the indices after
    /// their bit width, or the plain values.
    fn body(&self, dictionary: &LeafDictionary<'_>) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.encoded_bytes(dictionary) + 32);
        for (levels, width) in [
            (&self.repetition, 1),
            (&self.definition, dictionary.def_width),
        ] {
            let start = body.len();
            body.extend_from_slice(&[0; 4]);
            levels.write_run(self.levels, width, &mut body);
            let length = (body.len() - start - 4) as u32;
            body[start..start + 4].copy_from_slice(&length.to_le_bytes());
        }
        if dictionary.values.is_none() {
            body.extend_from_slice(&self.plain);
            return body;
        }
        body.push(dictionary.index_width as u8);
        if self.values > 0 {
            self.indices
                .write_run(self.values, dictionary.index_width, &mut body);
        }
        body
    }

    fn clear(&mut self) {
        self.repetition.clear();
        self.definition.clear();
        self.indices.clear();
        self.plain.clear();
        self.rows = 0;
        self.levels = 0;
        self.values = 0;
    }
}

/// Compresses pages as the column's settings say (zstd or nothing).
struct PageCompressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl PageCompressor {
    fn new(compression: Compression) -> Result<Self, ParquetError> {
        let zstd = match compression {
            Compression::UNCOMPRESSED => None,
            Compression::ZSTD(level) => Some(
                zstd::bulk::Compressor::new(level.compression_level())
                    .map_err(|error| ParquetError::External(Box::new(error)))?,
            ),
            other => {
                return Err(ParquetError::NYI(format!(
                    "repeated maps compressed with {other:?}"
                )));
            }
        };
        Ok(Self { zstd })
    }

    fn page(
        &mut self,
        body: &[u8],
        page: impl FnOnce(Bytes) -> Page,
    ) -> Result<CompressedPage, ParquetError> {
        let buf = match &mut self.zstd {
            Some(zstd) => zstd
                .compress(body)
                .map_err(|error| ParquetError::External(Box::new(error)))?,
            None => body.to_vec(),
        };
        Ok(CompressedPage::new(page(Bytes::from(buf)), body.len()))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::parquet::arrow::arrow_reader::{
        ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
    };
    use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;
    use crate::sorted::{encode_batches_sorted, sort_for_storage};
    use crate::store::{concat, decode_parquet};
    use crate::test_requests::{leaf_at, metadata_of, numbered_span, request_of, text};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// One request of `resources`, each with `spans_each` spans; span ids
    /// and trace ids from `first` on, so requests interleave when sorted.
    fn request(resources: &[Vec<KeyValue>], spans_each: usize, first: usize) -> RecordBatch {
        request_of(resources, spans_each, first, &numbered_span)
    }

    /// [`request`] with the attributes `attributes` gives span number `i`.
    fn request_with(
        resources: &[Vec<KeyValue>],
        spans_each: usize,
        first: usize,
        attributes: &dyn Fn(usize) -> Vec<KeyValue>,
    ) -> RecordBatch {
        request_of(resources, spans_each, first, &|n| Span {
            attributes: attributes(n),
            ..numbered_span(n)
        })
    }

    /// Encodings of the key leaf of `column`, and its pages in the first
    /// row group.
    fn key_leaf(metadata: &ParquetMetaData, column: &str) -> (Vec<Encoding>, usize) {
        leaf(metadata, column, "key")
    }

    /// [`key_leaf`] for the `key` or `value` leaf.
    fn leaf(metadata: &ParquetMetaData, column: &str, name: &str) -> (Vec<Encoding>, usize) {
        let leaf = leaf_at(metadata, &format!("{column}.entries.{name}"));
        let encodings = metadata.row_group(0).column(leaf).encodings().collect();
        let pages = metadata
            .offset_index()
            .map_or(0, |index| index[0][leaf].page_locations().len());
        (encodings, pages)
    }

    fn written(
        batches: &[RecordBatch],
    ) -> Result<(Bytes, ParquetMetaData), Box<dyn std::error::Error>> {
        let file = encode_batches_sorted(Table::Spans, batches)?;
        let metadata = metadata_of(&file)?;
        Ok((file, metadata))
    }

    #[test]
    fn shared_maps_are_written_once_each_and_read_back_row_for_row() -> TestResult {
        let mut empty_value = text("absent", "");
        empty_value.value = Some(AnyValue { value: None });
        // Longer than a 64-bit word of levels, with a NULL value among them.
        let mut wide: Vec<KeyValue> = (0..70)
            .map(|i| text(&format!("k{i}"), &format!("v{}", i % 9)))
            .collect();
        wide.insert(30, empty_value);
        let resources = [
            vec![
                text("service.name", "checkout"),
                text("host.name", "node-1"),
            ],
            wide,
            vec![],
            vec![
                text("service.name", "checkout"),
                text("host.name", "node-2"),
            ],
        ];
        let batches: Vec<RecordBatch> = (0..6)
            .map(|request| self::request(&resources, 1_000, request * 4_000))
            .collect();
        let (file, metadata) = written(&batches)?;

        let (encodings, pages) = key_leaf(&metadata, spans::RESOURCE_ATTRIBUTES);
        // The Arrow writer writes keys plain; a dictionary says they came from here.
        assert!(
            encodings.contains(&Encoding::RLE_DICTIONARY),
            "{encodings:?}"
        );
        assert!(
            pages > 2,
            "24,000 rows, most of 71 entries, in {pages} pages"
        );

        let sorted = assert_reads_back_in_storage_order(file.clone(), batches)?;
        assert_pages_skip_to_the_same_rows(file, &sorted, 15_000)
    }

    /// `file` holds the rows of `batches` in storage order, which it returns.
    fn assert_reads_back_in_storage_order(
        file: Bytes,
        batches: Vec<RecordBatch>,
    ) -> Result<RecordBatch, Box<dyn std::error::Error>> {
        let sorted = sort_for_storage(Table::Spans, batches)?;
        let read = concat(Table::Spans, &decode_parquet(file)?)?;
        assert_eq!(read.columns(), sorted.columns());
        Ok(sorted)
    }

    /// Maps whose text end to end is the same but cut elsewhere, or whose
    /// values differ only in being empty or null, are told apart.
    #[test]
    fn maps_of_the_same_text_cut_elsewhere_are_distinct() -> TestResult {
        let mut null_value = text("k", "");
        null_value.value = Some(AnyValue { value: None });
        let resources = [
            // Keys "abc" and values "xy" end to end, cut in other places.
            vec![text("a", "x"), text("bc", "y")],
            vec![text("ab", "x"), text("c", "y")],
            vec![text("ab", ""), text("c", "xy")],
            vec![text("k", "")],
            vec![null_value],
            vec![text("k", "v")],
        ];
        let batches: Vec<RecordBatch> = (0..2)
            .map(|request| self::request(&resources, 2_000, request * 12_000))
            .collect();
        let (file, metadata) = written(&batches)?;
        let (encodings, _) = key_leaf(&metadata, spans::RESOURCE_ATTRIBUTES);
        assert!(
            encodings.contains(&Encoding::RLE_DICTIONARY),
            "written by attribute_maps: {encodings:?}"
        );
        assert_reads_back_in_storage_order(file, batches)?;
        Ok(())
    }

    /// Skipping `skip` rows by the offset index lands on the same rows.
    fn assert_pages_skip_to_the_same_rows(
        file: Bytes,
        sorted: &RecordBatch,
        skip: usize,
    ) -> TestResult {
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let selection = RowSelection::from(vec![
            RowSelector::skip(skip),
            RowSelector::select(sorted.num_rows() - skip),
        ]);
        let tail = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)?
            .with_row_selection(selection)
            .build()?
            .collect::<Result<Vec<_>, _>>()?;
        let tail = concat(Table::Spans, &tail)?;
        assert_eq!(
            tail.columns(),
            sorted.slice(skip, sorted.num_rows() - skip).columns()
        );
        Ok(())
    }

    #[test]
    fn mostly_distinct_maps_are_left_to_the_arrow_writer() -> TestResult {
        // Every span its own resource: nothing to share.
        let resources: Vec<Vec<KeyValue>> = (0..400)
            .map(|i| vec![text("service.instance.id", &format!("i-{i}"))])
            .collect();
        assert_left_to_the_arrow_writer(request(&resources, 1, 0), spans::RESOURCE_ATTRIBUTES)
    }

    #[test]
    fn a_resource_larger_than_a_dictionary_page_is_left_to_the_arrow_writer() -> TestResult {
        // Shared by every span, but 2 MiB: over the writer's 1 MiB dictionary page.
        let huge = "x".repeat(2 << 20);
        let resources = [vec![text("service.name", "checkout"), text("blob", &huge)]];
        assert_left_to_the_arrow_writer(request(&resources, 100, 0), spans::RESOURCE_ATTRIBUTES)
    }

    /// `batch` written, `column` by the Arrow writer (its keys plain), and
    /// read back the same.
    fn assert_left_to_the_arrow_writer(batch: RecordBatch, column: &str) -> TestResult {
        let batches = [batch];
        let (file, metadata) = written(&batches)?;
        let (encodings, _) = key_leaf(&metadata, column);
        assert!(
            !encodings.contains(&Encoding::RLE_DICTIONARY),
            "{encodings:?}"
        );
        let read = concat(Table::Spans, &decode_parquet(file)?)?;
        let sorted = sort_for_storage(Table::Spans, batches.to_vec())?;
        assert_eq!(read.columns(), sorted.columns());
        Ok(())
    }

    #[test]
    fn shared_keys_are_written_a_set_at_a_time_and_values_through_a_dictionary() -> TestResult {
        let attributes = |i: usize| -> Vec<KeyValue> {
            match i % 3 {
                0 => {
                    let mut note = text("note", "x");
                    if i.is_multiple_of(11) {
                        note.value = Some(AnyValue { value: None });
                    }
                    vec![
                        text("http.request.method", ["GET", "POST"][i % 2]),
                        text("http.route", &format!("/orders/{}", i % 7)),
                        text("order.id", &format!("o-{i}")),
                        note,
                    ]
                }
                // More levels than a 64-bit word.
                1 => (0..70)
                    .map(|k| text(&format!("k{k}"), &format!("{}", (i + k) % 13)))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let resources = [vec![text("service.name", "checkout")]];
        let batches: Vec<RecordBatch> = (0..6)
            .map(|request| request_with(&resources, 4_000, request * 4_000, &attributes))
            .collect();
        let (file, metadata) = written(&batches)?;

        let (encodings, pages) = key_leaf(&metadata, spans::ATTRIBUTES);
        assert!(
            encodings.contains(&Encoding::RLE_DICTIONARY),
            "{encodings:?}"
        );
        assert!(pages > 2, "24,000 rows in {pages} pages");

        let sorted = sort_for_storage(Table::Spans, batches)?;
        let read = concat(Table::Spans, &decode_parquet(file.clone())?)?;
        assert_eq!(read.columns(), sorted.columns());
        assert_pages_skip_to_the_same_rows(file, &sorted, 9_000)
    }

    #[test]
    fn keys_of_their_own_go_to_the_arrow_writer() -> TestResult {
        let resources = [vec![text("service.name", "checkout")]];
        let own_keys = |i: usize| vec![text(&format!("key.{i}"), "v")];
        let batch = request_with(&resources, 400, 0, &own_keys);
        assert_left_to_the_arrow_writer(batch, spans::ATTRIBUTES)
    }

    #[test]
    fn values_too_many_for_a_dictionary_page_are_written_plain() -> TestResult {
        let resources = [vec![text("service.name", "checkout")]];
        // 20,000 distinct values of 64 bytes: over the 1 MiB dictionary page
        // limit; a NULL among them now and then, and spans without attributes.
        let attributes = |i: usize| {
            if i.is_multiple_of(5) {
                return Vec::new();
            }
            let mut note = text("note", "x");
            if i.is_multiple_of(7) {
                note.value = Some(AnyValue { value: None });
            }
            vec![text("payload", &format!("{i:064}")), note]
        };
        let batches = [request_with(&resources, 20_000, 0, &attributes)];
        let (file, metadata) = written(&batches)?;
        let (keys, _) = key_leaf(&metadata, spans::ATTRIBUTES);
        let (values, pages) = leaf(&metadata, spans::ATTRIBUTES, "value");
        assert!(keys.contains(&Encoding::RLE_DICTIONARY), "{keys:?}");
        assert!(!values.contains(&Encoding::RLE_DICTIONARY), "{values:?}");
        assert!(pages > 2, "20,000 rows of 64-byte values in {pages} pages");
        let read = concat(Table::Spans, &decode_parquet(file.clone())?)?;
        let sorted = sort_for_storage(Table::Spans, batches.to_vec())?;
        assert_eq!(read.columns(), sorted.columns());
        assert_pages_skip_to_the_same_rows(file, &sorted, 12_345)
    }

    #[test]
    fn a_codec_other_than_zstd_or_none_is_left_to_the_arrow_writer() -> TestResult {
        let resources = [vec![text("service.name", "checkout")]];
        let batch = request(&resources, 100, 0);
        let maps = [batch
            .column_by_name(spans::RESOURCE_ATTRIBUTES)
            .and_then(|column| column.as_map_opt())
            .ok_or("a resource attribute map")?];
        let rows: Vec<(usize, usize)> = (0..batch.num_rows()).map(|row| (0, row)).collect();
        let schema = datafusion::parquet::arrow::ArrowSchemaConverter::new()
            .convert(&Table::Spans.schema())?;
        let leaf = |name: &str| {
            (0..schema.num_columns())
                .map(|leaf| schema.column(leaf))
                .find(|leaf| {
                    leaf.path().string() == format!("{}.entries.{name}", spans::RESOURCE_ATTRIBUTES)
                })
                .ok_or("a leaf of that name")
        };
        let (key, value) = (leaf("key")?, leaf("value")?);
        let limits = PageLimits {
            rows: 8192,
            bytes: 1 << 18,
        };
        for (compression, written_here) in [
            (Compression::ZSTD(Default::default()), true),
            (Compression::UNCOMPRESSED, true),
            (Compression::GZIP(Default::default()), false),
        ] {
            let properties = WriterProperties::builder()
                .set_compression(compression)
                .build();
            let leaves = MapLeaves {
                key: &key,
                value: &value,
                properties: &properties,
                limits,
            };
            let encoded = encode(Sharing::WholeMap, &maps, &rows, leaves)?;
            assert_eq!(encoded.is_some(), written_here, "{compression:?}");
        }
        Ok(())
    }
}
