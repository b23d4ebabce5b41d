//! The `metrics` table: one row per OTLP data point, whatever the metric type.
//! Columns that do not apply to a type are NULL (e.g. `bucket_counts` on a gauge).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::{TIME_ZONE, attribute_map_field};

pub const SERVICE_NAME: &str = "service_name";
pub const METRIC_NAME: &str = "metric_name";
pub const METRIC_DESCRIPTION: &str = "metric_description";
pub const UNIT: &str = "unit";
pub const METRIC_TYPE: &str = "metric_type";
pub const AGGREGATION_TEMPORALITY: &str = "aggregation_temporality";
pub const IS_MONOTONIC: &str = "is_monotonic";
pub const START_TIME: &str = "start_time";
pub const TIME: &str = "time";
pub const VALUE: &str = "value";
pub const VALUE_INT: &str = "value_int";
pub const COUNT: &str = "count";
pub const SUM: &str = "sum";
pub const MIN: &str = "min";
pub const MAX: &str = "max";
pub const BUCKET_COUNTS: &str = "bucket_counts";
pub const EXPLICIT_BOUNDS: &str = "explicit_bounds";
pub const SCALE: &str = "scale";
pub const ZERO_COUNT: &str = "zero_count";
pub const ZERO_THRESHOLD: &str = "zero_threshold";
pub const POSITIVE_OFFSET: &str = "positive_offset";
pub const POSITIVE_BUCKET_COUNTS: &str = "positive_bucket_counts";
pub const NEGATIVE_OFFSET: &str = "negative_offset";
pub const NEGATIVE_BUCKET_COUNTS: &str = "negative_bucket_counts";
pub const QUANTILES: &str = "quantiles";
pub const FLAGS: &str = "flags";
pub const EXEMPLARS: &str = "exemplars";
pub const ATTRIBUTES: &str = "attributes";
pub const ATTRIBUTE_TYPES: &str = "attribute_types";
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
pub const RESOURCE_ATTRIBUTE_TYPES: &str = "resource_attribute_types";
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
pub const SCOPE_ATTRIBUTE_TYPES: &str = "scope_attribute_types";

/// Values of `metric_type`.
pub mod metric_type {
    pub const GAUGE: &str = "gauge";
    pub const SUM: &str = "sum";
    pub const HISTOGRAM: &str = "histogram";
    pub const EXPONENTIAL_HISTOGRAM: &str = "exponential_histogram";
    pub const SUMMARY: &str = "summary";
}

/// Fields of one `quantiles` element (summaries).
pub mod quantile {
    pub const QUANTILE: &str = "quantile";
    pub const VALUE: &str = "value";
}

/// Fields of one `exemplars` element.
pub mod exemplar {
    pub const TIME: &str = "time";
    pub const VALUE: &str = "value";
    pub const VALUE_INT: &str = "value_int";
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const FILTERED_ATTRIBUTES: &str = "filtered_attributes";
    pub const FILTERED_ATTRIBUTE_TYPES: &str = "filtered_attribute_types";
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some(TIME_ZONE.into()))
}

pub fn list_of(data_type: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", data_type, false)))
}

pub fn quantile_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new(quantile::QUANTILE, DataType::Float64, false),
        Field::new(quantile::VALUE, DataType::Float64, false),
    ]))
}

pub fn exemplar_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new(exemplar::TIME, timestamp(), false),
        Field::new(exemplar::VALUE, DataType::Float64, true),
        Field::new(exemplar::VALUE_INT, DataType::Int64, true),
        Field::new(exemplar::TRACE_ID, DataType::Utf8, true),
        Field::new(exemplar::SPAN_ID, DataType::Utf8, true),
        attribute_map_field(exemplar::FILTERED_ATTRIBUTES),
        attribute_map_field(exemplar::FILTERED_ATTRIBUTE_TYPES),
    ]))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(SERVICE_NAME, DataType::Utf8, false),
        Field::new(METRIC_NAME, DataType::Utf8, false),
        Field::new(METRIC_DESCRIPTION, DataType::Utf8, true),
        Field::new(UNIT, DataType::Utf8, true),
        Field::new(METRIC_TYPE, DataType::Utf8, false),
        Field::new(AGGREGATION_TEMPORALITY, DataType::Utf8, true),
        Field::new(IS_MONOTONIC, DataType::Boolean, true),
        Field::new(START_TIME, timestamp(), true),
        Field::new(TIME, timestamp(), false),
        Field::new(VALUE, DataType::Float64, true),
        Field::new(VALUE_INT, DataType::Int64, true),
        Field::new(COUNT, DataType::UInt64, true),
        Field::new(SUM, DataType::Float64, true),
        Field::new(MIN, DataType::Float64, true),
        Field::new(MAX, DataType::Float64, true),
        Field::new(BUCKET_COUNTS, list_of(DataType::UInt64), true),
        Field::new(EXPLICIT_BOUNDS, list_of(DataType::Float64), true),
        Field::new(SCALE, DataType::Int32, true),
        Field::new(ZERO_COUNT, DataType::UInt64, true),
        Field::new(ZERO_THRESHOLD, DataType::Float64, true),
        Field::new(POSITIVE_OFFSET, DataType::Int32, true),
        Field::new(POSITIVE_BUCKET_COUNTS, list_of(DataType::UInt64), true),
        Field::new(NEGATIVE_OFFSET, DataType::Int32, true),
        Field::new(NEGATIVE_BUCKET_COUNTS, list_of(DataType::UInt64), true),
        Field::new(QUANTILES, list_of(quantile_type()), true),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(EXEMPLARS, list_of(exemplar_type()), false),
        attribute_map_field(ATTRIBUTES),
        attribute_map_field(ATTRIBUTE_TYPES),
        attribute_map_field(RESOURCE_ATTRIBUTES),
        attribute_map_field(RESOURCE_ATTRIBUTE_TYPES),
        Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, true),
        Field::new(SCOPE_NAME, DataType::Utf8, true),
        Field::new(SCOPE_VERSION, DataType::Utf8, true),
        attribute_map_field(SCOPE_ATTRIBUTES),
        attribute_map_field(SCOPE_ATTRIBUTE_TYPES),
    ]))
});

/// The Arrow schema of the `metrics` table.
pub fn schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}
