//! Which Parquet leaf columns of a flush hold no value at all.
//!
//! Most promoted columns, and every field of `links` when no span has a link,
//! hold nothing in a typical flush: their pages are a few bytes of levels.
//! Compressing them gains nothing, and each compressed column costs a zstd
//! context pair, whose creation asks the CPU for its features (`cpuid`); on a
//! virtual machine every such question traps to the hypervisor. So the store
//! writes these leaves uncompressed ([`crate::store::flush_writer_properties`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema};

/// For each Parquet leaf column of `schema`, in the order Parquet lays them
/// out (depth first, fields in order), whether no row of `batches` holds a
/// value in it. Errs towards "holds a value": a leaf is only called empty
/// when every array above it is null or empty.
pub fn leaves_without_values(schema: &Schema, batches: &[RecordBatch]) -> Vec<bool> {
    let mut leaves = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        let columns: Vec<ArrayRef> = batches
            .iter()
            .filter_map(|batch| batch.columns().get(index).cloned())
            .collect();
        push_leaves(field.data_type(), &columns, &mut leaves);
    }
    leaves
}

fn push_leaves(data_type: &DataType, arrays: &[ArrayRef], leaves: &mut Vec<bool>) {
    if arrays
        .iter()
        .all(|array| array.logical_null_count() == array.len())
    {
        leaves.extend(std::iter::repeat_n(true, leaf_count(data_type)));
        return;
    }
    let children = |child: &dyn Fn(&ArrayRef) -> Option<ArrayRef>| -> Option<Vec<ArrayRef>> {
        arrays.iter().map(child).collect()
    };
    let nested = match data_type {
        DataType::Struct(fields) => {
            let mut columns = Vec::with_capacity(fields.len());
            for index in 0..fields.len() {
                match children(&|array| array.as_struct_opt()?.columns().get(index).cloned()) {
                    Some(column) => columns.push(column),
                    None => break,
                }
            }
            (columns.len() == fields.len()).then(|| {
                for (field, column) in fields.iter().zip(&columns) {
                    push_leaves(field.data_type(), column, leaves);
                }
            })
        }
        DataType::List(item) => children(&|array| {
            let list = array.as_list_opt::<i32>()?;
            let (first, len) = used_range(list.value_offsets())?;
            Some(list.values().slice(first, len))
        })
        .map(|items| push_leaves(item.data_type(), &items, leaves)),
        DataType::Map(entries, _) => children(&|array| {
            let map = array.as_map_opt()?;
            let (first, len) = used_range(map.value_offsets())?;
            Some(Arc::new(map.entries().slice(first, len)) as ArrayRef)
        })
        .map(|items| push_leaves(entries.data_type(), &items, leaves)),
        _ => None,
    };
    // A leaf value, or a type the store does not use: not looked into.
    if nested.is_none() {
        leaves.extend(std::iter::repeat_n(false, leaf_count(data_type)));
    }
}

/// Where the values of a list array's rows lie among its child values.
fn used_range(offsets: &[i32]) -> Option<(usize, usize)> {
    let first = usize::try_from(*offsets.first()?).ok()?;
    let last = usize::try_from(*offsets.last()?).ok()?;
    Some((first, last.checked_sub(first)?))
}

/// The Parquet leaf columns a field of this type becomes.
fn leaf_count(data_type: &DataType) -> usize {
    match data_type {
        DataType::Struct(fields) => fields.iter().map(|f| leaf_count(f.data_type())).sum(),
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::FixedSizeList(item, _)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::Map(item, _) => leaf_count(item.data_type()),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Int64Array, ListArray, MapArray, StringArray, StructArray, new_null_array,
    };
    use datafusion::arrow::buffer::OffsetBuffer;
    use datafusion::arrow::datatypes::{Field, Fields};
    use datafusion::arrow::error::ArrowError;
    use datafusion::parquet::arrow::ArrowSchemaConverter;

    fn text_map(keys: Vec<&str>, values: Vec<Option<&str>>, offsets: Vec<i32>) -> MapArray {
        let entries = StructArray::new(
            entry_fields(),
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(StringArray::from(values)),
            ],
            None,
        );
        MapArray::new(
            entry_field(),
            OffsetBuffer::new(offsets.into()),
            entries,
            None,
            false,
        )
    }

    fn entry_fields() -> Fields {
        Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])
    }

    fn entry_field() -> Arc<Field> {
        Arc::new(Field::new(
            "entries",
            DataType::Struct(entry_fields()),
            false,
        ))
    }

    /// `events`-like lists: each item a name and a map.
    fn item_fields() -> Fields {
        Fields::from(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("attributes", DataType::Map(entry_field(), false), false),
        ])
    }

    fn items(names: Vec<Option<&str>>, offsets: Vec<i32>) -> ListArray {
        let count = names.len();
        let maps = text_map(vec![], vec![], vec![0; count + 1]);
        let structs = StructArray::new(
            item_fields(),
            vec![Arc::new(StringArray::from(names)), Arc::new(maps)],
            None,
        );
        ListArray::new(
            Arc::new(Field::new("item", DataType::Struct(item_fields()), true)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(structs),
            None,
        )
    }

    #[test]
    fn a_leaf_is_empty_when_every_array_above_it_is_null_or_empty() -> Result<(), ArrowError> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("nothing", DataType::Utf8, true),
            Field::new("number", DataType::Int64, true),
            Field::new(
                "items",
                DataType::List(Arc::new(Field::new(
                    "item",
                    DataType::Struct(item_fields()),
                    true,
                ))),
                false,
            ),
            Field::new("map", DataType::Map(entry_field(), false), false),
        ]));
        // Two rows per batch; the first batch's lists are empty, the second's
        // second row has one item with a name and no attributes.
        let first = RecordBatch::try_new(
            schema.clone(),
            vec![
                new_null_array(&DataType::Utf8, 2),
                Arc::new(Int64Array::from(vec![None, None])),
                Arc::new(items(vec![], vec![0, 0, 0])),
                Arc::new(text_map(vec!["k"], vec![None], vec![0, 0, 1])),
            ],
        )?;
        let second = RecordBatch::try_new(
            schema.clone(),
            vec![
                new_null_array(&DataType::Utf8, 2),
                Arc::new(Int64Array::from(vec![None, Some(7)])),
                Arc::new(items(vec![Some("n")], vec![0, 0, 1])),
                Arc::new(text_map(vec![], vec![], vec![0, 0, 0])),
            ],
        )?;
        let empty = leaves_without_values(&schema, &[first.clone(), second.clone()]);
        // nothing; number; items' name, attribute keys, attribute values; map keys, values.
        assert_eq!(empty, [true, false, false, true, true, false, true]);
        let parquet = ArrowSchemaConverter::new()
            .convert(&schema)
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        assert_eq!(empty.len(), parquet.num_columns());
        // Alone, the first batch has no item names and no number.
        let empty = leaves_without_values(&schema, &[first]);
        assert_eq!(empty, [true, true, true, true, true, false, true]);
        // A slice sees only its own rows' items.
        let empty = leaves_without_values(&schema, &[second.slice(0, 1)]);
        assert_eq!(empty, [true, true, true, true, true, true, true]);
        Ok(())
    }
}
