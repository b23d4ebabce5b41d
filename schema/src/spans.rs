//! The `spans` table: one row per span. Events and links are nested lists, never
//! extra rows, so `count(*)` counts spans.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::{TIME_ZONE, attribute_map_field};

pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const TRACE_STATE: &str = "trace_state";
pub const FLAGS: &str = "flags";
pub const NAME: &str = "name";
pub const KIND: &str = "kind";
pub const START_TIME: &str = "start_time";
pub const END_TIME: &str = "end_time";
pub const DURATION_NS: &str = "duration_ns";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const SERVICE_NAME: &str = "service_name";
pub const ATTRIBUTES: &str = "attributes";
pub const ATTRIBUTE_TYPES: &str = "attribute_types";
pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
pub const EVENTS: &str = "events";
pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
pub const LINKS: &str = "links";
pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
pub const RESOURCE_ATTRIBUTE_TYPES: &str = "resource_attribute_types";
pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
pub const SCOPE_ATTRIBUTE_TYPES: &str = "scope_attribute_types";
pub const SCOPE_DROPPED_ATTRIBUTES_COUNT: &str = "scope_dropped_attributes_count";
pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";

/// Fields of one element of `events`.
pub mod event {
    pub const TIME: &str = "time";
    pub const NAME: &str = "name";
}

/// Fields of one element of `links`.
pub mod link {
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const FLAGS: &str = "flags";
}

/// Where a promoted column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Resource,
    Span,
}

/// A semantic-convention attribute copied into a typed column of its own, so the
/// common filters read one narrow column. The attribute also stays in its map.
#[derive(Debug, Clone, Copy)]
pub struct Promoted {
    pub column: &'static str,
    pub source: Source,
    /// Attribute keys, current convention first, then older names still sent by
    /// instrumentation in the wild.
    pub keys: &'static [&'static str],
    /// `true` for an Int64 column, `false` for Utf8.
    pub integer: bool,
}

const fn text(column: &'static str, source: Source, keys: &'static [&'static str]) -> Promoted {
    Promoted {
        column,
        source,
        keys,
        integer: false,
    }
}

const fn int(column: &'static str, source: Source, keys: &'static [&'static str]) -> Promoted {
    Promoted {
        column,
        source,
        keys,
        integer: true,
    }
}

pub const PROMOTED: &[Promoted] = &[
    text("service_version", Source::Resource, &["service.version"]),
    text(
        "service_instance_id",
        Source::Resource,
        &["service.instance.id"],
    ),
    text(
        "service_namespace",
        Source::Resource,
        &["service.namespace"],
    ),
    text(
        "http_request_method",
        Source::Span,
        &["http.request.method", "http.method"],
    ),
    text("http_route", Source::Span, &["http.route"]),
    int(
        "http_response_status_code",
        Source::Span,
        &["http.response.status_code", "http.status_code"],
    ),
    text("url_full", Source::Span, &["url.full", "http.url"]),
    text("rpc_system", Source::Span, &["rpc.system"]),
    text("rpc_service", Source::Span, &["rpc.service"]),
    text("rpc_method", Source::Span, &["rpc.method"]),
    text("db_system", Source::Span, &["db.system.name", "db.system"]),
    text("messaging_system", Source::Span, &["messaging.system"]),
    text(
        "messaging_destination_name",
        Source::Span,
        &["messaging.destination.name", "messaging.destination"],
    ),
    text(
        "messaging_operation_type",
        Source::Span,
        &["messaging.operation.type", "messaging.operation"],
    ),
    text("peer_service", Source::Span, &["peer.service"]),
    text(
        "server_address",
        Source::Span,
        &["server.address", "net.peer.name"],
    ),
    int(
        "server_port",
        Source::Span,
        &["server.port", "net.peer.port"],
    ),
    text("error_type", Source::Span, &["error.type"]),
];

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some(TIME_ZONE.into()))
}

fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new(event::TIME, timestamp(), false),
        Field::new(event::NAME, DataType::Utf8, false),
        attribute_map_field(ATTRIBUTES),
        attribute_map_field(ATTRIBUTE_TYPES),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new(link::TRACE_ID, DataType::Utf8, false),
        Field::new(link::SPAN_ID, DataType::Utf8, false),
        Field::new(link::TRACE_STATE, DataType::Utf8, true),
        Field::new(link::FLAGS, DataType::UInt32, false),
        attribute_map_field(ATTRIBUTES),
        attribute_map_field(ATTRIBUTE_TYPES),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

/// The struct type of one `events` element.
pub fn event_type() -> DataType {
    DataType::Struct(event_fields())
}

/// The struct type of one `links` element.
pub fn link_type() -> DataType {
    DataType::Struct(link_fields())
}

/// The list item field used by `events` and `links`.
pub fn list_item(data_type: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", data_type, false))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new(TRACE_ID, DataType::Utf8, false),
        Field::new(SPAN_ID, DataType::Utf8, false),
        Field::new(PARENT_SPAN_ID, DataType::Utf8, true),
        Field::new(TRACE_STATE, DataType::Utf8, true),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(NAME, DataType::Utf8, false),
        Field::new(KIND, DataType::Utf8, false),
        Field::new(START_TIME, timestamp(), false),
        Field::new(END_TIME, timestamp(), false),
        Field::new(DURATION_NS, DataType::Int64, false),
        Field::new(STATUS_CODE, DataType::Utf8, false),
        Field::new(STATUS_MESSAGE, DataType::Utf8, true),
        Field::new(SERVICE_NAME, DataType::Utf8, false),
    ];
    fields.extend(PROMOTED.iter().map(|p| {
        let data_type = if p.integer {
            DataType::Int64
        } else {
            DataType::Utf8
        };
        Field::new(p.column, data_type, true)
    }));
    fields.extend([
        attribute_map_field(ATTRIBUTES),
        attribute_map_field(ATTRIBUTE_TYPES),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(EVENTS, DataType::List(list_item(event_type())), false),
        Field::new(DROPPED_EVENTS_COUNT, DataType::UInt32, false),
        Field::new(LINKS, DataType::List(list_item(link_type())), false),
        Field::new(DROPPED_LINKS_COUNT, DataType::UInt32, false),
        attribute_map_field(RESOURCE_ATTRIBUTES),
        attribute_map_field(RESOURCE_ATTRIBUTE_TYPES),
        Field::new(RESOURCE_DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, true),
        Field::new(SCOPE_NAME, DataType::Utf8, true),
        Field::new(SCOPE_VERSION, DataType::Utf8, true),
        attribute_map_field(SCOPE_ATTRIBUTES),
        attribute_map_field(SCOPE_ATTRIBUTE_TYPES),
        Field::new(SCOPE_DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(SCOPE_SCHEMA_URL, DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
});

/// The Arrow schema of the `spans` table.
pub fn schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// Text stored in `kind` for an OTLP `SpanKind` number.
pub fn kind_name(kind: i32) -> std::borrow::Cow<'static, str> {
    match kind {
        0 => "UNSPECIFIED".into(),
        1 => "INTERNAL".into(),
        2 => "SERVER".into(),
        3 => "CLIENT".into(),
        4 => "PRODUCER".into(),
        5 => "CONSUMER".into(),
        other => other.to_string().into(),
    }
}

/// Text stored in `status_code` for an OTLP `Status.code` number.
pub fn status_name(code: i32) -> std::borrow::Cow<'static, str> {
    match code {
        0 => "UNSET".into(),
        1 => "OK".into(),
        2 => "ERROR".into(),
        other => other.to_string().into(),
    }
}

/// `service.name` when a resource does not say, as the OpenTelemetry SDKs do.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_unique() {
        let schema = schema();
        let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn promoted_columns_have_their_types() {
        let schema = schema();
        let status = schema
            .field_with_name("http_response_status_code")
            .map(|f| f.data_type().clone());
        assert_eq!(status.ok(), Some(DataType::Int64));
        let route = schema
            .field_with_name("http_route")
            .map(|f| f.data_type().clone());
        assert_eq!(route.ok(), Some(DataType::Utf8));
    }
}
