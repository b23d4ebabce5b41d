//! How OTLP attributes are stored.
//!
//! Every attribute set is two maps: `…attributes` holds each value rendered as
//! text (so `attributes['http.route']` is all a query needs) and
//! `…attribute_types` holds the OTLP type of the values that are *not* strings.
//! Together they give back the original value exactly: integers as decimal text,
//! doubles in their shortest round-trip form, booleans as `true`/`false`, bytes as
//! base64, arrays and key-value lists as OTLP/JSON.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};

pub const ATTRIBUTE_MAP_KEY: &str = "key";
pub const ATTRIBUTE_MAP_VALUE: &str = "value";
pub const ATTRIBUTE_MAP_ENTRIES: &str = "entries";

/// The OTLP type of an attribute value, as stored in an `…attribute_types` map.
/// Strings are the default and are not listed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    String,
    Bool,
    Int,
    Double,
    Bytes,
    Array,
    KvList,
    /// An AnyValue with no value set; its text is NULL.
    Empty,
    /// A profiling-only string-table index (`stringValueStrindex`).
    StringIndex,
}

impl AttributeType {
    pub const fn name(self) -> &'static str {
        match self {
            AttributeType::String => "string",
            AttributeType::Bool => "bool",
            AttributeType::Int => "int",
            AttributeType::Double => "double",
            AttributeType::Bytes => "bytes",
            AttributeType::Array => "array",
            AttributeType::KvList => "kvlist",
            AttributeType::Empty => "empty",
            AttributeType::StringIndex => "strindex",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "string" => AttributeType::String,
            "bool" => AttributeType::Bool,
            "int" => AttributeType::Int,
            "double" => AttributeType::Double,
            "bytes" => AttributeType::Bytes,
            "array" => AttributeType::Array,
            "kvlist" => AttributeType::KvList,
            "empty" => AttributeType::Empty,
            "strindex" => AttributeType::StringIndex,
            _ => return None,
        })
    }
}

/// `Map<Utf8, Utf8>` with the entry names Parquet readers expect.
pub fn attribute_map_type() -> DataType {
    let entries = Field::new(
        ATTRIBUTE_MAP_ENTRIES,
        DataType::Struct(Fields::from(vec![
            Field::new(ATTRIBUTE_MAP_KEY, DataType::Utf8, false),
            Field::new(ATTRIBUTE_MAP_VALUE, DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

pub fn attribute_map_field(name: &str) -> Field {
    Field::new(name, attribute_map_type(), false)
}
