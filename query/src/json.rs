//! One Arrow value to JSON, recursively for lists, structs and maps.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{self as types, DataType};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

/// The JSON form of `array[row]`. Times and other types without a JSON
/// counterpart become their Arrow display text (RFC 3339 for timestamps).
pub fn value(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => Value::from(array.as_primitive::<types::Int8Type>().value(row)),
        DataType::Int16 => Value::from(array.as_primitive::<types::Int16Type>().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<types::Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<types::Int64Type>().value(row)),
        DataType::UInt8 => Value::from(array.as_primitive::<types::UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(array.as_primitive::<types::UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(array.as_primitive::<types::UInt32Type>().value(row)),
        DataType::UInt64 => Value::from(array.as_primitive::<types::UInt64Type>().value(row)),
        DataType::Float32 => float(f64::from(
            array.as_primitive::<types::Float32Type>().value(row),
        )),
        DataType::Float64 => float(array.as_primitive::<types::Float64Type>().value(row)),
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(array.as_string_view().value(row)),
        DataType::Binary => Value::from(BASE64.encode(array.as_binary::<i32>().value(row))),
        DataType::LargeBinary => Value::from(BASE64.encode(array.as_binary::<i64>().value(row))),
        DataType::BinaryView => Value::from(BASE64.encode(array.as_binary_view().value(row))),
        DataType::List(_) => list(array.as_list::<i32>().value(row).as_ref()),
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row).as_ref()),
        DataType::FixedSizeList(_, _) => list(array.as_fixed_size_list().value(row).as_ref()),
        DataType::Struct(fields) => {
            let structs = array.as_struct();
            let object: Map<String, Value> = fields
                .iter()
                .zip(structs.columns())
                .map(|(field, column)| (field.name().clone(), value(column.as_ref(), row)))
                .collect();
            Value::Object(object)
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            let object: Map<String, Value> = (0..entries.len())
                .map(|i| {
                    let key = match value(keys.as_ref(), i) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, value(values.as_ref(), i))
                })
                .collect();
            Value::Object(object)
        }
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            let key = dictionary.normalized_keys()[row];
            value(dictionary.values().as_ref(), key)
        }
        _ => display(array, row),
    }
}

fn list(items: &dyn Array) -> Value {
    Value::Array((0..items.len()).map(|i| value(items, i)).collect())
}

fn display(array: &dyn Array, row: usize) -> Value {
    let options = FormatOptions::default();
    match ArrayFormatter::try_new(array, &options) {
        Ok(formatter) => Value::String(formatter.value(row).to_string()),
        Err(e) => Value::String(format!("<{e}>")),
    }
}
