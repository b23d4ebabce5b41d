//! Weft's table schemas, shared by the writer (collector) and the reader (query).
//!
//! Column names are constants and each Arrow schema is built once. There is no
//! I/O here: this crate only says what the `spans` and `metrics` tables look like
//! and where their files live inside the store.

mod attributes;
pub mod layout;
pub mod metrics;
pub mod spans;

pub use attributes::{
    ATTRIBUTE_MAP_ENTRIES, ATTRIBUTE_MAP_KEY, ATTRIBUTE_MAP_VALUE, AttributeType,
    attribute_map_field, attribute_map_type,
};

/// Bumped whenever a column is added, removed or changes type. Written into every
/// Parquet file's key-value metadata under [`SCHEMA_VERSION_KEY`].
pub const SCHEMA_VERSION: u32 = 1;
pub const SCHEMA_VERSION_KEY: &str = "weft.schema_version";

/// Timestamps are nanoseconds since the Unix epoch, in UTC, as OTLP sends them.
pub const TIME_ZONE: &str = "UTC";
