//! OTLP trace requests to `spans` record batches. Pure: no I/O, no `.await`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, ListArray, RecordBatch, StringBuilder, StructArray,
    TimestampNanosecondBuilder, UInt32Builder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use weft_schema::TIME_ZONE;
use weft_schema::spans::{self, PROMOTED, Source};

use super::attributes::{AttributeColumns, Rendered, find, render, render_all};
use super::hex::hex;

/// Converts every span of `request` (already validated) into one batch.
pub fn to_record_batch(request: &ExportTraceServiceRequest) -> Result<RecordBatch, ArrowError> {
    let rows = span_count(request);
    let mut builder = SpanBatchBuilder::with_capacity(rows);
    for resource_spans in &request.resource_spans {
        let resource =
            ResourceContext::new(resource_spans.resource.as_ref(), &resource_spans.schema_url);
        for scope_spans in &resource_spans.scope_spans {
            let scope = ScopeContext::new(scope_spans.scope.as_ref(), &scope_spans.schema_url);
            for span in &scope_spans.spans {
                builder.append(&resource, &scope, span);
            }
        }
    }
    builder.finish()
}

pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// What every span of one `ResourceSpans` shares.
pub struct ResourceContext<'a> {
    pub(super) attributes: &'a [KeyValue],
    /// Rendered once, appended to every row of the resource.
    pub(super) rendered: Vec<Rendered>,
    dropped_attributes_count: u32,
    pub(super) schema_url: &'a str,
    pub(super) service_name: String,
}

impl<'a> ResourceContext<'a> {
    pub fn new(resource: Option<&'a Resource>, schema_url: &'a str) -> Self {
        let attributes = resource
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let service_name = match find(attributes, &["service.name"]).and_then(|v| v.value.as_ref())
        {
            Some(Value::StringValue(name)) if !name.is_empty() => name.clone(),
            _ => spans::UNKNOWN_SERVICE.to_owned(),
        };
        Self {
            attributes,
            rendered: render_all(attributes),
            dropped_attributes_count: resource
                .map(|r| r.dropped_attributes_count)
                .unwrap_or_default(),
            schema_url,
            service_name,
        }
    }
}

/// What every span of one `ScopeSpans` shares.
pub struct ScopeContext<'a> {
    scope: Option<&'a InstrumentationScope>,
    rendered: Vec<Rendered>,
    schema_url: &'a str,
}

impl<'a> ScopeContext<'a> {
    pub fn new(scope: Option<&'a InstrumentationScope>, schema_url: &'a str) -> Self {
        Self {
            scope,
            rendered: render_all(scope.map(|s| s.attributes.as_slice()).unwrap_or_default()),
            schema_url,
        }
    }
}

enum PromotedColumn {
    Text(StringBuilder),
    Int(Int64Builder),
}

fn timestamp_builder(capacity: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(capacity).with_timezone(TIME_ZONE)
}

/// Nanoseconds since the epoch as Arrow stores them. OTLP times past year 2262
/// do not fit an i64 and are clamped rather than wrapped.
pub fn nanos(time_unix_nano: u64) -> i64 {
    i64::try_from(time_unix_nano).unwrap_or(i64::MAX)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

struct EventColumns {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: AttributeColumns,
    dropped_attributes_count: UInt32Builder,
}

impl EventColumns {
    fn with_capacity(spans: usize) -> Self {
        let mut offsets = Vec::with_capacity(spans + 1);
        offsets.push(0);
        Self {
            offsets,
            time: timestamp_builder(spans),
            name: StringBuilder::new(),
            attributes: AttributeColumns::with_capacity(spans),
            dropped_attributes_count: UInt32Builder::new(),
        }
    }

    fn append(&mut self, events: &[Event]) {
        for event in events {
            self.time.append_value(nanos(event.time_unix_nano));
            self.name.append_value(&event.name);
            self.attributes.append(&event.attributes);
            self.dropped_attributes_count
                .append_value(event.dropped_attributes_count);
        }
        push_offset(&mut self.offsets, events.len());
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let (attributes, attribute_types) = self.attributes.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.name.finish()),
            attributes,
            attribute_types,
            Arc::new(self.dropped_attributes_count.finish()),
        ];
        list_of_structs(
            spans::event_type(),
            std::mem::take(&mut self.offsets),
            columns,
        )
    }
}

struct LinkColumns {
    offsets: Vec<i32>,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    attributes: AttributeColumns,
    dropped_attributes_count: UInt32Builder,
}

impl LinkColumns {
    fn with_capacity(spans: usize) -> Self {
        let mut offsets = Vec::with_capacity(spans + 1);
        offsets.push(0);
        Self {
            offsets,
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attributes: AttributeColumns::with_capacity(0),
            dropped_attributes_count: UInt32Builder::new(),
        }
    }

    fn append(&mut self, links: &[Link]) {
        for link in links {
            self.trace_id.append_value(hex(&link.trace_id));
            self.span_id.append_value(hex(&link.span_id));
            self.trace_state.append_option(non_empty(&link.trace_state));
            self.flags.append_value(link.flags);
            self.attributes.append(&link.attributes);
            self.dropped_attributes_count
                .append_value(link.dropped_attributes_count);
        }
        push_offset(&mut self.offsets, links.len());
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let (attributes, attribute_types) = self.attributes.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            attributes,
            attribute_types,
            Arc::new(self.dropped_attributes_count.finish()),
        ];
        list_of_structs(
            spans::link_type(),
            std::mem::take(&mut self.offsets),
            columns,
        )
    }
}

fn push_offset(offsets: &mut Vec<i32>, added: usize) {
    let last = offsets.last().copied().unwrap_or_default();
    // A batch holds far fewer than 2^31 events; saturate rather than wrap if not.
    offsets.push(last.saturating_add(i32::try_from(added).unwrap_or(i32::MAX)));
}

/// Assembles a `List<Struct>` column from flat child columns and list offsets.
pub fn list_of_structs(
    item_type: datafusion::arrow::datatypes::DataType,
    offsets: Vec<i32>,
    columns: Vec<ArrayRef>,
) -> Result<ArrayRef, ArrowError> {
    let datafusion::arrow::datatypes::DataType::Struct(fields) = &item_type else {
        return Err(ArrowError::SchemaError("list item must be a struct".into()));
    };
    let values = StructArray::try_new(fields.clone(), columns, None)?;
    let list = ListArray::try_new(
        spans::list_item(item_type.clone()),
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    )?;
    Ok(Arc::new(list))
}

/// Column builders for the `spans` table, filled one span at a time.
pub struct SpanBatchBuilder {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    service_name: StringBuilder,
    promoted: Vec<PromotedColumn>,
    attributes: AttributeColumns,
    dropped_attributes_count: UInt32Builder,
    events: EventColumns,
    dropped_events_count: UInt32Builder,
    links: LinkColumns,
    dropped_links_count: UInt32Builder,
    resource_attributes: AttributeColumns,
    resource_dropped_attributes_count: UInt32Builder,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttributeColumns,
    scope_dropped_attributes_count: UInt32Builder,
    scope_schema_url: StringBuilder,
}

impl SpanBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        let text = || StringBuilder::with_capacity(rows, rows * 16);
        Self {
            trace_id: StringBuilder::with_capacity(rows, rows * 32),
            span_id: StringBuilder::with_capacity(rows, rows * 16),
            parent_span_id: StringBuilder::with_capacity(rows, rows * 16),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::with_capacity(rows),
            name: text(),
            kind: text(),
            start_time: timestamp_builder(rows),
            end_time: timestamp_builder(rows),
            duration_ns: Int64Builder::with_capacity(rows),
            status_code: text(),
            status_message: StringBuilder::new(),
            service_name: text(),
            promoted: PROMOTED
                .iter()
                .map(|p| {
                    if p.integer {
                        PromotedColumn::Int(Int64Builder::with_capacity(rows))
                    } else {
                        PromotedColumn::Text(StringBuilder::new())
                    }
                })
                .collect(),
            attributes: AttributeColumns::with_capacity(rows),
            dropped_attributes_count: UInt32Builder::with_capacity(rows),
            events: EventColumns::with_capacity(rows),
            dropped_events_count: UInt32Builder::with_capacity(rows),
            links: LinkColumns::with_capacity(rows),
            dropped_links_count: UInt32Builder::with_capacity(rows),
            resource_attributes: AttributeColumns::with_capacity(rows),
            resource_dropped_attributes_count: UInt32Builder::with_capacity(rows),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attributes: AttributeColumns::with_capacity(rows),
            scope_dropped_attributes_count: UInt32Builder::with_capacity(rows),
            scope_schema_url: StringBuilder::new(),
        }
    }

    pub fn append(
        &mut self,
        resource: &ResourceContext<'_>,
        scope: &ScopeContext<'_>,
        span: &Span,
    ) {
        self.trace_id.append_value(hex(&span.trace_id));
        self.span_id.append_value(hex(&span.span_id));
        if span.parent_span_id.is_empty() {
            self.parent_span_id.append_null();
        } else {
            self.parent_span_id.append_value(hex(&span.parent_span_id));
        }
        self.trace_state.append_option(non_empty(&span.trace_state));
        self.flags.append_value(span.flags);
        self.name.append_value(&span.name);
        self.kind.append_value(spans::kind_name(span.kind));
        let start = nanos(span.start_time_unix_nano);
        let end = nanos(span.end_time_unix_nano);
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ns.append_value(end.saturating_sub(start));
        let status = span.status.as_ref();
        self.status_code.append_value(spans::status_name(
            status.map(|s| s.code).unwrap_or_default(),
        ));
        self.status_message
            .append_option(status.and_then(|s| non_empty(&s.message)));
        self.service_name.append_value(&resource.service_name);

        for (column, promoted) in self.promoted.iter_mut().zip(PROMOTED) {
            let attributes = match promoted.source {
                Source::Resource => resource.attributes,
                Source::Span => &span.attributes,
            };
            let value = find(attributes, promoted.keys);
            match column {
                PromotedColumn::Text(builder) => {
                    builder.append_option(value.and_then(|v| render(Some(v)).0));
                }
                PromotedColumn::Int(builder) => {
                    let int = match value.and_then(|v| v.value.as_ref()) {
                        Some(Value::IntValue(i)) => Some(*i),
                        Some(Value::StringValue(s)) => s.parse().ok(),
                        _ => None,
                    };
                    builder.append_option(int);
                }
            }
        }

        self.attributes.append(&span.attributes);
        self.dropped_attributes_count
            .append_value(span.dropped_attributes_count);
        self.events.append(&span.events);
        self.dropped_events_count
            .append_value(span.dropped_events_count);
        self.links.append(&span.links);
        self.dropped_links_count
            .append_value(span.dropped_links_count);

        self.resource_attributes.append_rendered(&resource.rendered);
        self.resource_dropped_attributes_count
            .append_value(resource.dropped_attributes_count);
        self.resource_schema_url
            .append_option(non_empty(resource.schema_url));
        self.scope_name
            .append_option(scope.scope.map(|s| s.name.as_str()));
        self.scope_version
            .append_option(scope.scope.and_then(|s| non_empty(&s.version)));
        self.scope_attributes.append_rendered(&scope.rendered);
        self.scope_dropped_attributes_count.append_value(
            scope
                .scope
                .map(|s| s.dropped_attributes_count)
                .unwrap_or_default(),
        );
        self.scope_schema_url
            .append_option(non_empty(scope.schema_url));
    }

    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.service_name.finish()),
        ];
        for column in &mut self.promoted {
            columns.push(match column {
                PromotedColumn::Text(b) => Arc::new(b.finish()),
                PromotedColumn::Int(b) => Arc::new(b.finish()),
            });
        }
        let (attributes, attribute_types) = self.attributes.finish();
        let (resource_attributes, resource_attribute_types) = self.resource_attributes.finish();
        let (scope_attributes, scope_attribute_types) = self.scope_attributes.finish();
        columns.extend([
            attributes,
            attribute_types,
            Arc::new(self.dropped_attributes_count.finish()) as ArrayRef,
            self.events.finish()?,
            Arc::new(self.dropped_events_count.finish()),
            self.links.finish()?,
            Arc::new(self.dropped_links_count.finish()),
            resource_attributes,
            resource_attribute_types,
            Arc::new(self.resource_dropped_attributes_count.finish()),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            scope_attributes,
            scope_attribute_types,
            Arc::new(self.scope_dropped_attributes_count.finish()),
            Arc::new(self.scope_schema_url.finish()),
        ]);
        RecordBatch::try_new(spans::schema(), columns)
    }
}
