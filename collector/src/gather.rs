//! Gathering rows of many batches into one array, in storage order.
//!
//! A flush file is written sorted by trace, so every column of the buffered
//! request batches is gathered row by row into that order. arrow's
//! `interleave` does this for any type; for an attribute map
//! (`Map<Utf8, Utf8>`) it lists every entry of every row and copies keys and
//! values one entry at a time, and that was the largest single cost of a
//! flush. A row's entries lie side by side in its batch, so here they are
//! copied a row at a time: one copy of its keys' bytes, one of its values'.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, MapArray, NullBufferBuilder, StringArray, StructArray, new_null_array,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields};
use datafusion::arrow::error::ArrowError;

/// The rows at `positions` ((batch, row) each) of `columns`, one array;
/// `columns` are the same column of each batch.
pub fn gather(
    columns: &[&dyn Array],
    positions: &[(usize, usize)],
) -> Result<ArrayRef, ArrowError> {
    // Most promoted columns are null in most spans: nothing to copy.
    if let Some(first) = columns.first()
        && columns
            .iter()
            .all(|column| column.logical_null_count() == column.len())
    {
        return Ok(new_null_array(first.data_type(), positions.len()));
    }
    match columns
        .first()
        .and_then(|column| text_map_type(column.data_type()))
    {
        Some(map_type) => {
            let maps: Vec<&MapArray> = columns.iter().map(|column| column.as_map()).collect();
            Ok(Arc::new(gather_text_map(&maps, positions, map_type)?))
        }
        None => interleave(columns, positions),
    }
}

/// The parts of a map with text keys and text values (how attributes are
/// stored) that a gathered copy is built from.
struct TextMapType<'a> {
    entries: &'a FieldRef,
    entry_fields: &'a Fields,
    ordered: bool,
}

fn text_map_type(data_type: &DataType) -> Option<TextMapType<'_>> {
    let DataType::Map(entries, ordered) = data_type else {
        return None;
    };
    let DataType::Struct(entry_fields) = entries.data_type() else {
        return None;
    };
    let text = entry_fields.len() == 2
        && entry_fields
            .iter()
            .all(|field| field.data_type() == &DataType::Utf8);
    text.then_some(TextMapType {
        entries,
        entry_fields,
        ordered: *ordered,
    })
}

fn gather_text_map(
    maps: &[&MapArray],
    positions: &[(usize, usize)],
    map_type: TextMapType<'_>,
) -> Result<MapArray, ArrowError> {
    let keys: Vec<&StringArray> = maps.iter().map(|map| map.keys().as_string()).collect();
    let values: Vec<&StringArray> = maps.iter().map(|map| map.values().as_string()).collect();

    // Sizes first, so every buffer is allocated once.
    let (mut entries, mut key_bytes, mut value_bytes) = (0, 0, 0);
    for &(batch, row) in positions {
        let (start, end) = entry_range(maps[batch], row);
        entries += end - start;
        key_bytes += byte_len(keys[batch], start, end);
        value_bytes += byte_len(values[batch], start, end);
    }
    let mut map_offsets = Vec::with_capacity(positions.len() + 1);
    map_offsets.push(0i32);
    let mut map_nulls = NullBufferBuilder::new(positions.len());
    let mut gathered_keys = TextColumn::with_capacity(entries, key_bytes);
    let mut gathered_values = TextColumn::with_capacity(entries, value_bytes);
    for &(batch, row) in positions {
        let (start, end) = entry_range(maps[batch], row);
        gathered_keys.extend(keys[batch], start, end);
        gathered_values.extend(values[batch], start, end);
        map_nulls.append(maps[batch].is_valid(row));
        map_offsets.push(offset(gathered_keys.len())?);
    }

    let entries = StructArray::try_new(
        map_type.entry_fields.clone(),
        vec![
            Arc::new(gathered_keys.finish()?),
            Arc::new(gathered_values.finish()?),
        ],
        None,
    )?;
    MapArray::try_new(
        Arc::clone(map_type.entries),
        OffsetBuffer::new(ScalarBuffer::from(map_offsets)),
        entries,
        map_nulls.finish(),
        map_type.ordered,
    )
}

/// The entries of `row` of `map`, as indices into its keys and values.
fn entry_range(map: &MapArray, row: usize) -> (usize, usize) {
    let offsets = map.value_offsets();
    (offsets[row] as usize, offsets[row + 1] as usize)
}

/// Bytes taken by the strings `start..end` of `strings`.
fn byte_len(strings: &StringArray, start: usize, end: usize) -> usize {
    let offsets = strings.value_offsets();
    (offsets[end] - offsets[start]) as usize
}

fn offset(len: usize) -> Result<i32, ArrowError> {
    i32::try_from(len).map_err(|_| ArrowError::OffsetOverflowError(len))
}

/// A string column being assembled from runs of other string columns.
struct TextColumn {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl TextColumn {
    fn with_capacity(strings: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(strings + 1);
        offsets.push(0);
        TextColumn {
            offsets,
            bytes: Vec::with_capacity(bytes),
            nulls: NullBufferBuilder::new(strings),
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Appends the strings `start..end` of `strings`.
    fn extend(&mut self, strings: &StringArray, start: usize, end: usize) {
        if start == end {
            return;
        }
        let source = strings.value_offsets();
        let (first, last) = (source[start], source[end]);
        // Only offsets and bytes within i32 reach here: `finish` checks the total.
        let shift = self.bytes.len() as i64 - i64::from(first);
        self.offsets.extend(
            source[start + 1..=end]
                .iter()
                .map(|&offset| (i64::from(offset) + shift) as i32),
        );
        self.bytes
            .extend_from_slice(&strings.value_data()[first as usize..last as usize]);
        match strings.nulls() {
            Some(nulls) => self.nulls.append_buffer(&nulls.slice(start, end - start)),
            None => self.nulls.append_n_non_nulls(end - start),
        }
    }

    fn finish(mut self) -> Result<StringArray, ArrowError> {
        offset(self.bytes.len())?;
        // `try_new` checks the offsets and that the bytes are UTF-8: they are
        // whole strings of UTF-8 arrays, so it cannot fail unless this code is wrong.
        StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Buffer::from_vec(self.bytes),
            self.nulls.finish(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{MapBuilder, StringBuilder};

    /// A map column of `rows` rows: row `i` has `i % 4` entries, some of
    /// them with a NULL value, and every fifth row is NULL.
    fn maps(tag: &str, rows: usize) -> Result<ArrayRef, ArrowError> {
        let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for row in 0..rows {
            if row % 5 == 4 {
                builder.append(false)?;
                continue;
            }
            for entry in 0..row % 4 {
                builder.keys().append_value(format!("{tag}.key.{entry}"));
                match (row + entry) % 3 {
                    0 => builder.values().append_null(),
                    _ => builder.values().append_value(format!("{tag} value é{row}")),
                }
            }
            builder.append(true)?;
        }
        Ok(Arc::new(builder.finish()))
    }

    #[test]
    fn gathered_text_maps_equal_what_interleave_gives() -> Result<(), ArrowError> {
        let columns = [maps("a", 30)?, maps("b", 12)?, maps("c", 40)?];
        let columns: Vec<&dyn Array> = columns.iter().map(|c| c.as_ref()).collect();
        assert!(text_map_type(columns[0].data_type()).is_some());
        // Runs of one batch, single rows, rows out of order, a batch's last row.
        let positions: Vec<(usize, usize)> = [
            (0, 0..4),
            (1, 3..4),
            (0, 4..9),
            (2, 39..40),
            (2, 0..39),
            (1, 0..3),
            (1, 4..12),
            (0, 20..30),
            (0, 9..20),
        ]
        .into_iter()
        .flat_map(|(batch, rows)| rows.map(move |row| (batch, row)))
        .collect();
        let gathered = gather(&columns, &positions)?;
        assert_eq!(gathered.len(), 30 + 12 + 40);
        assert_eq!(&gathered, &interleave(&columns, &positions)?);
        // Sliced inputs (offsets not starting at zero) too.
        let sliced: Vec<ArrayRef> = columns.iter().map(|c| c.slice(2, c.len() - 2)).collect();
        let sliced: Vec<&dyn Array> = sliced.iter().map(|c| c.as_ref()).collect();
        let positions = [(0, 0), (2, 5), (1, 9), (0, 27), (2, 1)];
        assert_eq!(
            &gather(&sliced, &positions)?,
            &interleave(&sliced, &positions)?
        );
        Ok(())
    }

    #[test]
    fn columns_null_in_every_batch_gather_to_nulls_of_their_type() -> Result<(), ArrowError> {
        use datafusion::arrow::array::Int64Array;

        let texts: [ArrayRef; 2] = [
            Arc::new(StringArray::from(vec![None::<&str>; 3])),
            Arc::new(StringArray::from(vec![None::<&str>; 2])),
        ];
        let ints: [ArrayRef; 2] = [
            Arc::new(Int64Array::from(vec![None; 3])),
            Arc::new(Int64Array::from(vec![None; 2])),
        ];
        let positions = [(1, 1), (0, 2), (0, 0), (1, 0)];
        for columns in [texts, ints] {
            let columns: Vec<&dyn Array> = columns.iter().map(|c| c.as_ref()).collect();
            let gathered = gather(&columns, &positions)?;
            assert_eq!(gathered.data_type(), columns[0].data_type());
            assert_eq!(&gathered, &interleave(&columns, &positions)?);
        }
        // One value anywhere, and the column is gathered as usual.
        let columns: [ArrayRef; 2] = [
            Arc::new(StringArray::from(vec![None, None, Some("x")])),
            Arc::new(StringArray::from(vec![None::<&str>; 2])),
        ];
        let columns: Vec<&dyn Array> = columns.iter().map(|c| c.as_ref()).collect();
        let gathered = gather(&columns, &positions)?;
        let expected: ArrayRef = Arc::new(StringArray::from(vec![None, Some("x"), None, None]));
        assert_eq!(&gathered, &expected);
        Ok(())
    }

    #[test]
    fn other_columns_are_interleaved() -> Result<(), ArrowError> {
        let columns: [ArrayRef; 2] = [
            Arc::new(StringArray::from(vec![Some("a"), None])),
            Arc::new(StringArray::from(vec!["c"])),
        ];
        let columns: Vec<&dyn Array> = columns.iter().map(|c| c.as_ref()).collect();
        let gathered = gather(&columns, &[(1, 0), (0, 1), (0, 0)])?;
        let expected: ArrayRef = Arc::new(StringArray::from(vec![Some("c"), None, Some("a")]));
        assert_eq!(&gathered, &expected);
        Ok(())
    }
}
