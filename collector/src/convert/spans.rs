//! OTLP trace requests to `spans` record batches. Pure: no I/O, no `.await`.
//!
//! Requests are read from their protobuf bytes ([`super::wire`]), not from
//! prost's structs: the bytes are what arrives and what the write-ahead log
//! keeps, and reading them in place skips an allocation per field.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, ListArray, RecordBatch, StringBuilder, StructArray,
    TimestampNanosecondBuilder, UInt32Builder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use weft_schema::TIME_ZONE;
use weft_schema::spans::{self, PROMOTED, Source};

use super::attributes::{AttributeColumns, SharedAttributes, find, find_view, with_view_text};
use super::hex::append_hex;
use super::sizing::{LastBatch, Sizes};
use super::validate;
use super::wire::{
    EventView, Group, KeyValueView, LinkView, ResourceView, ScopeView, SpanView, ValueView,
    WireError, resource_spans,
};

/// Why the spans of a request were not converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("body is not a valid OTLP protobuf message: {0}")]
    Malformed(#[from] WireError),
    /// The request must go through [`validate::traces`] first.
    #[error("span {name:?}: {problem}")]
    InvalidSpan { name: String, problem: String },
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// A `ScopeSpans` message, split.
struct ScopeGroup<'a> {
    scope: Option<ScopeView<'a>>,
    schema_url: &'a str,
    spans: Vec<&'a [u8]>,
}

/// A `ResourceSpans` message, split.
struct ResourceGroup<'a> {
    resource: Option<ResourceView<'a>>,
    schema_url: &'a str,
    scopes: Vec<ScopeGroup<'a>>,
}

fn split_request(request: &[u8]) -> Result<Vec<ResourceGroup<'_>>, WireError> {
    resource_spans(request)?
        .into_iter()
        .map(|message| {
            let group = Group::split(message, "ResourceSpans")?;
            let scopes = group
                .items
                .iter()
                .map(|message| {
                    let scope = Group::split(message, "ScopeSpans")?;
                    Ok(ScopeGroup {
                        scope: scope.scope()?,
                        schema_url: scope.schema_url,
                        spans: scope.items,
                    })
                })
                .collect::<Result<_, WireError>>()?;
            Ok(ResourceGroup {
                resource: group.resource()?,
                schema_url: group.schema_url,
                scopes,
            })
        })
        .collect()
}

/// A span's place among the requests converted and the key it is stored by.
struct SpanInRequest<'a> {
    /// The trace id as a number, which orders like its hex form; 0 for an id
    /// of the wrong length, which fails validation below.
    trace_id: u128,
    start_time_unix_nano: u64,
    /// Index into the requests' resources and their scopes.
    resource: usize,
    scope: usize,
    message: &'a [u8],
}

/// Converts every span of a protobuf-encoded `ExportTraceServiceRequest` into
/// one batch. A span that [`validate`] would reject fails the whole request
/// with [`ConvertError::InvalidSpan`]: the caller validates and retries.
///
/// Rows come in storage order (by trace, then start time; see
/// `crate::sorted`), not in the request's. Sorting a request's few hundred
/// spans costs little while they are in cache; a flush then gathers tens of
/// thousands of rows from batches it reads front to back instead of at
/// random, which was a fifth of the server's CPU at full speed.
pub fn protobuf_to_record_batch(request: &[u8]) -> Result<RecordBatch, ConvertError> {
    protobufs_to_record_batch(&[request])
}

/// The spans of several protobuf-encoded requests as one batch in storage
/// order, as [`protobuf_to_record_batch`] converts one; spans with equal keys
/// keep the order of the requests and of the spans in them. Ingest converts a
/// request at a time and gathers at the flush: `weft-stagecost` times the two
/// (converting a flush's requests at once was the slower in all, README,
/// Performance, session 17).
pub fn protobufs_to_record_batch(requests: &[&[u8]]) -> Result<RecordBatch, ConvertError> {
    let groups = requests
        .iter()
        .map(|request| split_request(request))
        .collect::<Result<Vec<_>, _>>()?;
    let mut spans = Vec::with_capacity(
        groups
            .iter()
            .flatten()
            .flat_map(|r| &r.scopes)
            .map(|s| s.spans.len())
            .sum(),
    );
    let mut resources = Vec::with_capacity(groups.iter().map(Vec::len).sum());
    for group in groups.iter().flatten() {
        let resource = resources.len();
        let mut scopes = Vec::with_capacity(group.scopes.len());
        for (scope, scope_group) in group.scopes.iter().enumerate() {
            for &message in &scope_group.spans {
                let (trace_id, start_time_unix_nano) = SpanView::storage_key(message)?;
                spans.push(SpanInRequest {
                    trace_id: trace_id.try_into().map(u128::from_be_bytes).unwrap_or(0),
                    start_time_unix_nano,
                    resource,
                    scope,
                    message,
                });
            }
            scopes.push(ScopeContext::new(
                scope_group.scope.as_ref(),
                scope_group.schema_url,
            ));
        }
        let context = ResourceContext::from_view(group.resource.as_ref(), group.schema_url);
        let attributes = group
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        resources.push((context, promoted_values(attributes, &RESOURCE_KEYS), scopes));
    }
    // Stable: spans with equal keys keep the requests' order.
    spans.sort_by_key(|span| (span.trace_id, span.start_time_unix_nano));

    let mut spans_per_scope: Vec<Vec<usize>> = resources
        .iter()
        .map(|(_, _, scopes)| vec![0; scopes.len()])
        .collect();
    for place in &spans {
        spans_per_scope[place.resource][place.scope] += 1;
    }
    let repeated =
        resources
            .iter()
            .zip(&spans_per_scope)
            .flat_map(|((resource, _, scopes), counts)| {
                scopes
                    .iter()
                    .zip(counts)
                    .map(move |(scope, rows)| (resource, scope, *rows))
            });
    let mut builder = SpanBatchBuilder::with_capacity(spans.len(), repeated, &LAST_BATCH.sizes());
    let mut span = SpanView::default();
    for place in &spans {
        span.read(place.message)?;
        let links = span.links.iter().map(|l| (l.trace_id, l.span_id));
        if let Some(problem) =
            validate::ids_problem(span.trace_id, span.span_id, span.parent_span_id, links)
        {
            return Err(ConvertError::InvalidSpan {
                name: span.name.to_owned(),
                problem,
            });
        }
        let (resource, resource_promoted, scopes) = &resources[place.resource];
        builder.append(resource, resource_promoted, &scopes[place.scope], &span)?;
    }
    let batch = builder.finish()?;
    LAST_BATCH.remember(&batch);
    Ok(batch)
}

/// What the columns held per row in the last batch converted, for the
/// next batch's builders to start as large.
static LAST_BATCH: LazyLock<LastBatch> = LazyLock::new(LastBatch::default);

/// Converts every span of `request` (already validated) into one batch.
pub fn to_record_batch(request: &ExportTraceServiceRequest) -> Result<RecordBatch, ConvertError> {
    protobuf_to_record_batch(&request.encode_to_vec())
}

/// What every span or data point of one resource shares.
pub struct ResourceContext<'a> {
    pub(super) attributes: SharedAttributes,
    dropped_attributes_count: u32,
    pub(super) schema_url: &'a str,
    pub(super) service_name: String,
}

fn service_name_or_unknown(name: Option<&str>) -> String {
    match name {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => spans::UNKNOWN_SERVICE.to_owned(),
    }
}

impl<'a> ResourceContext<'a> {
    pub fn new(resource: Option<&Resource>, schema_url: &'a str) -> Self {
        let attributes = resource
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let name = match find(attributes, &["service.name"]).and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(name)) => Some(name.as_str()),
            _ => None,
        };
        Self {
            attributes: SharedAttributes::from_key_values(attributes),
            dropped_attributes_count: resource
                .map(|r| r.dropped_attributes_count)
                .unwrap_or_default(),
            schema_url,
            service_name: service_name_or_unknown(name),
        }
    }

    fn from_view(resource: Option<&ResourceView<'_>>, schema_url: &'a str) -> Self {
        let attributes = resource
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let name = match find_view(attributes, &["service.name"]) {
            Some(ValueView::Str(name)) => Some(*name),
            _ => None,
        };
        Self {
            attributes: SharedAttributes::from_views(attributes),
            dropped_attributes_count: resource
                .map(|r| r.dropped_attributes_count)
                .unwrap_or_default(),
            schema_url,
            service_name: service_name_or_unknown(name),
        }
    }
}

/// What every span of one `ScopeSpans` shares.
struct ScopeContext<'a> {
    scope: Option<&'a ScopeView<'a>>,
    attributes: SharedAttributes,
    schema_url: &'a str,
}

impl<'a> ScopeContext<'a> {
    fn new(scope: Option<&'a ScopeView<'a>>, schema_url: &'a str) -> Self {
        Self {
            scope,
            attributes: SharedAttributes::from_views(
                scope.map(|s| s.attributes.as_slice()).unwrap_or_default(),
            ),
            schema_url,
        }
    }
}

enum PromotedColumn {
    Text(StringBuilder),
    Int(Int64Builder),
}

/// The value of each promoted column found in one attribute set, in
/// `PROMOTED` order.
type PromotedValues<'v, 'a> = [Option<&'v ValueView<'a>>; PROMOTED.len()];

/// The keys of the promoted columns filled from one source, by key length:
/// `(key, index in PROMOTED, rank among that column's keys)`.
type KeysByLength = Vec<Vec<(&'static str, usize, usize)>>;

fn keys_by_length(source: Source) -> KeysByLength {
    let mut by_length = KeysByLength::new();
    for (column, promoted) in PROMOTED.iter().enumerate() {
        if promoted.source != source {
            continue;
        }
        for (rank, key) in promoted.keys.iter().enumerate() {
            if by_length.len() <= key.len() {
                by_length.resize_with(key.len() + 1, Vec::new);
            }
            by_length[key.len()].push((key, column, rank));
        }
    }
    by_length
}

static SPAN_KEYS: LazyLock<KeysByLength> = LazyLock::new(|| keys_by_length(Source::Span));
static RESOURCE_KEYS: LazyLock<KeysByLength> = LazyLock::new(|| keys_by_length(Source::Resource));

/// The promoted values in `attributes` for the columns `keys` lists, chosen as
/// [`find_view`] chooses (a column's first key present; of equal keys, the
/// first attribute) but in one pass over the attributes. Scanning them once
/// per column and key was a twentieth of the conversion.
fn promoted_values<'v, 'a>(
    attributes: &'v [KeyValueView<'a>],
    keys: &KeysByLength,
) -> PromotedValues<'v, 'a> {
    let mut found: [Option<(usize, &'v ValueView<'a>)>; PROMOTED.len()] = [None; PROMOTED.len()];
    for kv in attributes {
        let Some(candidates) = keys.get(kv.key.len()) else {
            continue;
        };
        for &(key, column, rank) in candidates {
            if key == kv.key && found[column].is_none_or(|(best, _)| rank < best) {
                found[column] = Some((rank, &kv.value));
            }
        }
    }
    found.map(|value| value.map(|(_, value)| value))
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
    fn sized(sizes: &Sizes, spans: usize) -> Self {
        let mut offsets = Vec::with_capacity(spans + 1);
        offsets.push(0);
        let path = |field: &str| format!("{}.{field}", spans::EVENTS);
        Self {
            offsets,
            time: timestamp_builder(sizes.items(&path(spans::event::TIME), spans, 1)),
            name: sizes.text(&path(spans::event::NAME), spans, (1, 16)),
            attributes: AttributeColumns::sized(
                sizes,
                &path(spans::ATTRIBUTES),
                &path(spans::ATTRIBUTE_TYPES),
                spans,
                1,
            ),
            dropped_attributes_count: UInt32Builder::with_capacity(sizes.items(
                &path(spans::DROPPED_ATTRIBUTES_COUNT),
                spans,
                1,
            )),
        }
    }

    fn append(&mut self, events: &[EventView<'_>]) {
        for event in events {
            self.time.append_value(nanos(event.time_unix_nano));
            self.name.append_value(event.name);
            self.attributes.append_views(&event.attributes);
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
    fn sized(sizes: &Sizes, spans: usize) -> Self {
        let mut offsets = Vec::with_capacity(spans + 1);
        offsets.push(0);
        let path = |field: &str| format!("{}.{field}", spans::LINKS);
        let items = |field: &str| sizes.items(&path(field), spans, 0);
        Self {
            offsets,
            trace_id: sizes.text(&path(spans::link::TRACE_ID), spans, (0, 0)),
            span_id: sizes.text(&path(spans::link::SPAN_ID), spans, (0, 0)),
            trace_state: sizes.text(&path(spans::link::TRACE_STATE), spans, (0, 0)),
            flags: UInt32Builder::with_capacity(items(spans::link::FLAGS)),
            attributes: AttributeColumns::sized(
                sizes,
                &path(spans::ATTRIBUTES),
                &path(spans::ATTRIBUTE_TYPES),
                spans,
                0,
            ),
            dropped_attributes_count: UInt32Builder::with_capacity(items(
                spans::DROPPED_ATTRIBUTES_COUNT,
            )),
        }
    }

    fn append(&mut self, links: &[LinkView<'_>]) {
        for link in links {
            append_hex(&mut self.trace_id, link.trace_id);
            append_hex(&mut self.span_id, link.span_id);
            self.trace_state.append_option(non_empty(link.trace_state));
            self.flags.append_value(link.flags);
            self.attributes.append_views(&link.attributes);
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
struct SpanBatchBuilder {
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
    /// Builders for `rows` spans; `repeated` says how many of them each
    /// resource and scope has, for the columns that repeat theirs to be
    /// sized exactly; the others are as large as the last batch's `sizes`.
    fn with_capacity<'r, 'a: 'r>(
        rows: usize,
        repeated: impl Iterator<Item = (&'r ResourceContext<'a>, &'r ScopeContext<'a>, usize)> + Clone,
        sizes: &Sizes,
    ) -> Self {
        let text = |column: &str| sizes.text(column, rows, (1, 16));
        let repeated_text = |bytes: fn(&ResourceContext<'_>, &ScopeContext<'_>) -> usize| {
            let bytes = repeated
                .clone()
                .map(|(resource, scope, rows)| rows * bytes(resource, scope))
                .sum();
            StringBuilder::with_capacity(rows, bytes)
        };

        Self {
            trace_id: StringBuilder::with_capacity(rows, rows * 32),
            span_id: StringBuilder::with_capacity(rows, rows * 16),
            parent_span_id: StringBuilder::with_capacity(rows, rows * 16),
            trace_state: text(spans::TRACE_STATE),
            flags: UInt32Builder::with_capacity(rows),
            name: text(spans::NAME),
            kind: text(spans::KIND),
            start_time: timestamp_builder(rows),
            end_time: timestamp_builder(rows),
            duration_ns: Int64Builder::with_capacity(rows),
            status_code: text(spans::STATUS_CODE),
            status_message: text(spans::STATUS_MESSAGE),
            service_name: repeated_text(|resource, _| resource.service_name.len()),
            promoted: PROMOTED
                .iter()
                .map(|p| {
                    if p.integer {
                        PromotedColumn::Int(Int64Builder::with_capacity(rows))
                    } else {
                        PromotedColumn::Text(text(p.column))
                    }
                })
                .collect(),
            attributes: AttributeColumns::sized(
                sizes,
                spans::ATTRIBUTES,
                spans::ATTRIBUTE_TYPES,
                rows,
                8,
            ),
            dropped_attributes_count: UInt32Builder::with_capacity(rows),
            events: EventColumns::sized(sizes, rows),
            dropped_events_count: UInt32Builder::with_capacity(rows),
            links: LinkColumns::sized(sizes, rows),
            dropped_links_count: UInt32Builder::with_capacity(rows),
            resource_attributes: AttributeColumns::for_repeated(
                repeated
                    .clone()
                    .map(|(resource, _, rows)| (&resource.attributes, rows)),
            ),
            resource_dropped_attributes_count: UInt32Builder::with_capacity(rows),
            resource_schema_url: repeated_text(|resource, _| resource.schema_url.len()),
            scope_name: repeated_text(|_, scope| scope.scope.map_or(0, |s| s.name.len())),
            scope_version: repeated_text(|_, scope| scope.scope.map_or(0, |s| s.version.len())),
            scope_attributes: AttributeColumns::for_repeated(
                repeated
                    .clone()
                    .map(|(_, scope, rows)| (&scope.attributes, rows)),
            ),
            scope_dropped_attributes_count: UInt32Builder::with_capacity(rows),
            scope_schema_url: repeated_text(|_, scope| scope.schema_url.len()),
        }
    }

    fn append(
        &mut self,
        resource: &ResourceContext<'_>,
        resource_promoted: &PromotedValues<'_, '_>,
        scope: &ScopeContext<'_>,
        span: &SpanView<'_>,
    ) -> Result<(), ArrowError> {
        append_hex(&mut self.trace_id, span.trace_id);
        append_hex(&mut self.span_id, span.span_id);
        if span.parent_span_id.is_empty() {
            self.parent_span_id.append_null();
        } else {
            append_hex(&mut self.parent_span_id, span.parent_span_id);
        }
        self.trace_state.append_option(non_empty(span.trace_state));
        self.flags.append_value(span.flags);
        self.name.append_value(span.name);
        self.kind.append_value(spans::kind_name(span.kind));
        let start = nanos(span.start_time_unix_nano);
        let end = nanos(span.end_time_unix_nano);
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ns.append_value(end.saturating_sub(start));
        self.status_code
            .append_value(spans::status_name(span.status_code));
        self.status_message
            .append_option(non_empty(span.status_message));
        self.service_name.append_value(&resource.service_name);

        let span_promoted = promoted_values(&span.attributes, &SPAN_KEYS);
        let found = span_promoted.iter().zip(resource_promoted);
        for (column, (from_span, from_resource)) in self.promoted.iter_mut().zip(found) {
            // A column takes its values from the span or from the resource, never both.
            let value = from_span.or(*from_resource);
            match column {
                PromotedColumn::Text(builder) => match value {
                    Some(value) => with_view_text(value, |text, _| builder.append_option(text)),
                    None => builder.append_null(),
                },
                PromotedColumn::Int(builder) => {
                    let int = match value {
                        Some(ValueView::Int(i)) => Some(*i),
                        Some(ValueView::Str(s)) => s.parse().ok(),
                        _ => None,
                    };
                    builder.append_option(int);
                }
            }
        }

        self.attributes.append_views(&span.attributes);
        self.dropped_attributes_count
            .append_value(span.dropped_attributes_count);
        self.events.append(&span.events);
        self.dropped_events_count
            .append_value(span.dropped_events_count);
        self.links.append(&span.links);
        self.dropped_links_count
            .append_value(span.dropped_links_count);

        self.resource_attributes
            .append_shared(&resource.attributes)?;
        self.resource_dropped_attributes_count
            .append_value(resource.dropped_attributes_count);
        self.resource_schema_url
            .append_option(non_empty(resource.schema_url));
        self.scope_name.append_option(scope.scope.map(|s| s.name));
        self.scope_version
            .append_option(scope.scope.and_then(|s| non_empty(s.version)));
        self.scope_attributes.append_shared(&scope.attributes)?;
        self.scope_dropped_attributes_count.append_value(
            scope
                .scope
                .map(|s| s.dropped_attributes_count)
                .unwrap_or_default(),
        );
        self.scope_schema_url
            .append_option(non_empty(scope.schema_url));
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
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
        super::fitted_batch(spans::schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::wire::{Fields, Wire};
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn attribute(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }

    fn every_field() -> ExportTraceServiceRequest {
        let attributes = vec![
            attribute("s", Value::StringValue("text".into())),
            attribute("http.response.status_code", Value::IntValue(503)),
            attribute("d", Value::DoubleValue(0.25)),
            attribute("b", Value::BoolValue(true)),
            attribute("bytes", Value::BytesValue(vec![0, 1, 255])),
            attribute(
                "array",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList {
                            values: vec![attribute("k", Value::IntValue(-1))],
                        })),
                    }],
                }),
            ),
            KeyValue {
                key: "empty".into(),
                value: None,
                key_strindex: 0,
            },
        ];
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: "k=v".into(),
            parent_span_id: vec![3; 8],
            flags: 0x301,
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: 1_800_000_000_000_000_000,
            end_time_unix_nano: 1_800_000_000_123_456_789,
            attributes: attributes.clone(),
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: 1_800_000_000_100_000_000,
                name: "exception".into(),
                attributes: attributes.clone(),
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![Link {
                trace_id: vec![4; 16],
                span_id: vec![5; 8],
                trace_state: "a=b".into(),
                attributes: attributes.clone(),
                dropped_attributes_count: 4,
                flags: 1,
            }],
            dropped_links_count: 5,
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        attribute("service.name", Value::StringValue("checkout".into())),
                        attribute("service.version", Value::StringValue("2.1".into())),
                    ],
                    dropped_attributes_count: 6,
                    entity_refs: vec![],
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.0".into(),
                        attributes: attributes.clone(),
                        dropped_attributes_count: 7,
                    }),
                    spans: vec![
                        span.clone(),
                        Span {
                            name: "second".into(),
                            ..span
                        },
                    ],
                    schema_url: "https://scope".into(),
                }],
                schema_url: "https://resource".into(),
            }],
        }
    }

    /// A field's number, value, and raw bytes (key included).
    type RawField<'a> = (u32, Wire<'a>, &'a [u8]);
    /// What to do with a length-delimited field's body: `Some` replaces it.
    type Nested<'f> = &'f dyn Fn(u32, &[u8]) -> Option<Vec<u8>>;

    fn raw_fields(message: &[u8]) -> Result<Vec<RawField<'_>>, WireError> {
        let mut fields = Fields::new(message);
        let mut found = Vec::new();
        let mut start = 0;
        while let Some((number, wire)) = fields.next_field()? {
            let end = message.len() - fields.remaining();
            found.push((number, wire, &message[start..end]));
            start = end;
        }
        Ok(found)
    }

    fn length_delimited(number: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    /// `message` with its fields from the highest number to the lowest (a
    /// repeated field's items keep their order), an unknown field in front,
    /// and `nested` applied to the body of each length-delimited field.
    fn reordered(message: &[u8], nested: Nested<'_>) -> Vec<u8> {
        let mut out = vec![0xf8, 0x06, 0x2a]; // field 111, varint 42
        let Ok(mut fields) = raw_fields(message) else {
            return out;
        };
        fields.sort_by_key(|(number, _, _)| std::cmp::Reverse(*number));
        for (number, wire, raw) in fields {
            match wire {
                Wire::Bytes(body) => match nested(number, body) {
                    Some(inner) => out.extend(length_delimited(number, &inner)),
                    None => out.extend_from_slice(raw),
                },
                _ => out.extend_from_slice(raw),
            }
        }
        out
    }

    #[test]
    fn fields_in_any_order_and_unknown_fields_read_as_in_order() -> TestResult {
        let request = every_field();
        let in_order = to_record_batch(&request)?;
        assert_eq!(in_order.num_rows(), 2);
        // Every level down to the spans: schema URLs come before what they
        // describe, a span's status and flags before its ids.
        // Inside a span: its events, links and status.
        let span =
            |n: u32, body: &[u8]| matches!(n, 11 | 13 | 15).then(|| reordered(body, &|_, _| None));
        let scope_spans = |n: u32, body: &[u8]| (n == 2).then(|| reordered(body, &span));
        let resource_spans = |n: u32, body: &[u8]| (n == 2).then(|| reordered(body, &scope_spans));
        let request_level = |_: u32, body: &[u8]| Some(reordered(body, &resource_spans));
        let shuffled = reordered(&request.encode_to_vec(), &request_level);
        assert_ne!(shuffled, request.encode_to_vec());
        // prost reads the shuffled bytes as the same request, and so does the converter.
        assert_eq!(
            ExportTraceServiceRequest::decode(shuffled.as_slice())?,
            request
        );
        assert_eq!(protobuf_to_record_batch(&shuffled)?, in_order);
        Ok(())
    }

    #[test]
    fn a_split_resource_is_merged_as_prost_merges_it() -> TestResult {
        let request = every_field();
        let whole = to_record_batch(&request)?;
        // The same resource sent as two `resource` fields, one attribute each.
        let resource_spans = &request.resource_spans[0];
        let resource = resource_spans.resource.clone().unwrap_or_default();
        let mut message = Vec::new();
        for attribute in &resource.attributes {
            let part = Resource {
                attributes: vec![attribute.clone()],
                dropped_attributes_count: resource.dropped_attributes_count,
                entity_refs: vec![],
            };
            message.extend(length_delimited(1, &part.encode_to_vec()));
        }
        for scope_spans in &resource_spans.scope_spans {
            message.extend(length_delimited(2, &scope_spans.encode_to_vec()));
        }
        message.extend(length_delimited(3, resource_spans.schema_url.as_bytes()));
        let split = length_delimited(1, &message);
        assert_eq!(
            ExportTraceServiceRequest::decode(split.as_slice())?,
            request
        );
        assert_eq!(protobuf_to_record_batch(&split)?, whole);
        Ok(())
    }

    #[test]
    fn an_invalid_span_fails_the_request_for_validation() {
        let mut request = every_field();
        request.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1; 3];
        match protobuf_to_record_batch(&request.encode_to_vec()) {
            Err(ConvertError::InvalidSpan { name, problem }) => {
                assert_eq!(name, "second");
                assert_eq!(problem, "trace_id is 3 bytes long, it must be 16");
            }
            other => panic!("expected an invalid span, got {other:?}"),
        }
    }

    #[test]
    fn a_converted_batch_holds_about_the_bytes_its_values_need() -> TestResult {
        // Many spans, so that builders grow past their first capacities.
        let mut request = every_field();
        let scope_spans = &mut request.resource_spans[0].scope_spans[0];
        let span = scope_spans.spans[0].clone();
        scope_spans.spans = (0..300u32)
            .map(|i| Span {
                name: format!("span {i}"),
                attributes: span.attributes[..(i % 7) as usize].to_vec(),
                events: span.events[..(i % 2) as usize].to_vec(),
                ..span.clone()
            })
            .collect();
        let batch = to_record_batch(&request)?;
        assert_eq!(batch.num_rows(), 300);
        let mut used = 0;
        for column in batch.columns() {
            used += column.to_data().get_slice_memory_size()?;
        }
        let allocated = batch.get_array_memory_size();
        // Only the arrays' own structs and a few aligned tails on top of the values.
        assert!(
            allocated <= used + used / 10,
            "{allocated} bytes allocated for {used} bytes of values"
        );
        Ok(())
    }
    #[test]
    fn a_promoted_column_takes_its_first_key_present_and_of_equal_keys_the_first() -> TestResult {
        use datafusion::arrow::array::{Array, AsArray, Int64Array, StringArray};
        use datafusion::arrow::datatypes::Int64Type;

        let mut request = every_field();
        let resource = &mut request.resource_spans[0];
        if let Some(resource) = &mut resource.resource {
            resource.attributes = vec![
                attribute("service.version", Value::StringValue("1.2".into())),
                attribute("http.route", Value::StringValue("/from-resource".into())),
            ];
        }
        let span = &mut resource.scope_spans[0].spans[0];
        span.attributes = vec![
            // The older name before the current one, and the current one twice.
            attribute("http.method", Value::StringValue("GET".into())),
            attribute("http.request.method", Value::StringValue("POST".into())),
            attribute("http.request.method", Value::StringValue("PUT".into())),
            // Only the older name, as an int; a resource key on a span is not promoted.
            attribute("net.peer.port", Value::IntValue(8080)),
            attribute("service.version", Value::StringValue("span".into())),
            attribute("db.system", Value::StringValue("redis".into())),
            attribute("db.system.name", Value::StringValue("valkey".into())),
        ];
        let batch = to_record_batch(&request)?;
        let text = |name: &str| -> Result<Option<String>, Box<dyn std::error::Error>> {
            let column = batch.column_by_name(name).ok_or(name.to_owned())?;
            let column: &StringArray = column.as_string();
            Ok(column.is_valid(0).then(|| column.value(0).to_owned()))
        };
        assert_eq!(text("http_request_method")?.as_deref(), Some("POST"));
        assert_eq!(text("db_system")?.as_deref(), Some("valkey"));
        assert_eq!(text("service_version")?.as_deref(), Some("1.2"));
        // http.route is a span attribute: the resource's is not taken.
        assert_eq!(text("http_route")?, None);
        let port: &Int64Array = batch
            .column_by_name("server_port")
            .ok_or("server_port")?
            .as_primitive::<Int64Type>();
        assert_eq!(port.value(0), 8080);
        assert!(port.is_valid(0));
        Ok(())
    }

    #[test]
    fn each_row_holds_its_resources_and_scopes_attributes_and_types() -> TestResult {
        use datafusion::arrow::array::{AsArray, MapArray};

        let mut request = every_field();
        let resource = &mut request.resource_spans[0];
        if let Some(resource) = &mut resource.resource {
            resource
                .attributes
                .push(attribute("host.cpus", Value::IntValue(8)));
        }
        // The first scope has an attribute of every type; the second has none.
        let mut bare = resource.scope_spans[0].clone();
        bare.scope = None;
        bare.spans.truncate(1);
        bare.spans[0].trace_id = vec![9; 16];
        resource.scope_spans.push(bare);
        let batch = to_record_batch(&request)?;
        assert_eq!(batch.num_rows(), 3);
        let map = |name: &str| -> Result<MapArray, String> {
            let column = batch.column_by_name(name).ok_or(name.to_owned())?;
            Ok(column.as_map().clone())
        };
        let keys = |map: &MapArray, row: usize| -> Vec<String> {
            let entries = map.value(row);
            let keys = entries.column(0).as_string::<i32>();
            keys.iter().flatten().map(str::to_owned).collect()
        };
        let scope_attributes = map(spans::SCOPE_ATTRIBUTES)?;
        let scope_types = map(spans::SCOPE_ATTRIBUTE_TYPES)?;
        let resource_types = map(spans::RESOURCE_ATTRIBUTE_TYPES)?;
        let resource_attributes = map(spans::RESOURCE_ATTRIBUTES)?;
        let typed = [
            "http.response.status_code",
            "d",
            "b",
            "bytes",
            "array",
            "empty",
        ];
        // Rows in storage order: trace ids [1; 16] (the first scope) before [9; 16].
        for row in 0..2 {
            assert_eq!(keys(&scope_attributes, row).len(), 7);
            assert_eq!(keys(&scope_types, row), typed);
        }
        assert!(keys(&scope_attributes, 2).is_empty());
        assert!(keys(&scope_types, 2).is_empty());
        for row in 0..3 {
            assert_eq!(
                keys(&resource_attributes, row),
                ["service.name", "service.version", "host.cpus"]
            );
            assert_eq!(keys(&resource_types, row), ["host.cpus"]);
        }
        Ok(())
    }

    #[test]
    fn rows_come_in_storage_order_each_with_its_own_resource_and_scope() -> TestResult {
        use datafusion::arrow::array::{AsArray, StringArray};
        use datafusion::arrow::datatypes::TimestampNanosecondType;

        let template = every_field();
        let mut request = template.clone();
        let resource_template = &template.resource_spans[0];
        let span = &resource_template.scope_spans[0].spans[0];
        // Two resources of two scopes each; spans with trace ids counting down
        // and two spans per trace, the later one first.
        request.resource_spans = ["front", "back"]
            .iter()
            .enumerate()
            .map(|(r, service)| {
                let mut resource = resource_template.clone();
                if let Some(res) = &mut resource.resource {
                    res.attributes = vec![attribute(
                        "service.name",
                        Value::StringValue((*service).into()),
                    )];
                }
                resource.scope_spans = ["s0", "s1"]
                    .iter()
                    .enumerate()
                    .map(|(sc, scope_name)| {
                        let mut scope = resource_template.scope_spans[0].clone();
                        if let Some(scope) = &mut scope.scope {
                            scope.name = (*scope_name).into();
                        }
                        scope.spans = (0..6u8)
                            .map(|i| {
                                let n = (r * 12 + sc * 6) as u8 + i;
                                Span {
                                    trace_id: vec![
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        100 - n / 2,
                                    ],
                                    start_time_unix_nano: span.start_time_unix_nano
                                        - u64::from(n % 2),
                                    name: format!("{service}/{scope_name}/{n}"),
                                    ..span.clone()
                                }
                            })
                            .collect();
                        scope
                    })
                    .collect();
                resource
            })
            .collect();

        let batch = protobuf_to_record_batch(&request.encode_to_vec())?;
        assert_eq!(batch.num_rows(), 24);
        let text = |name: &str| -> Result<StringArray, Box<dyn std::error::Error>> {
            Ok(batch
                .column_by_name(name)
                .ok_or(name.to_owned())?
                .as_string::<i32>()
                .clone())
        };
        let (trace_ids, names) = (text(spans::TRACE_ID)?, text(spans::NAME)?);
        let (services, scopes) = (text(spans::SERVICE_NAME)?, text(spans::SCOPE_NAME)?);
        let starts = batch
            .column_by_name(spans::START_TIME)
            .ok_or("start_time")?
            .as_primitive::<TimestampNanosecondType>();
        let keys: Vec<(&str, i64)> = (0..24)
            .map(|row| (trace_ids.value(row), starts.value(row)))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let mut seen: Vec<&str> = Vec::new();
        for row in 0..24 {
            // Each span keeps the resource and scope it came under.
            let name = names.value(row);
            let mut parts = name.split('/');
            assert_eq!(parts.next(), Some(services.value(row)), "{name}");
            assert_eq!(parts.next(), Some(scopes.value(row)), "{name}");
            seen.push(name);
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 24);
        Ok(())
    }

    #[test]
    fn requests_converted_together_are_their_rows_in_one_storage_order() -> TestResult {
        use datafusion::arrow::array::AsArray;

        // Two requests whose spans share traces: the second's start earlier
        // and come under another resource.
        let first = every_field();
        let mut second = every_field();
        for resource in &mut second.resource_spans {
            if let Some(resource) = &mut resource.resource {
                resource
                    .attributes
                    .push(attribute("request", Value::StringValue("second".into())));
            }
            for span in resource.scope_spans.iter_mut().flat_map(|s| &mut s.spans) {
                span.start_time_unix_nano -= 1;
                span.name.push_str(" (second)");
            }
        }
        let (first, second) = (first.encode_to_vec(), second.encode_to_vec());
        let together = protobufs_to_record_batch(&[&first, &second])?;
        let apart = crate::sorted::sort_for_storage(
            crate::store::Table::Spans,
            vec![
                protobuf_to_record_batch(&first)?,
                protobuf_to_record_batch(&second)?,
            ],
        )?;
        assert!(together.num_rows() >= 2);
        assert_eq!(together, apart);
        // The second request's spans start first, so its rows lead.
        let names = together
            .column_by_name(spans::NAME)
            .ok_or("name")?
            .as_string::<i32>();
        assert!(names.value(0).ends_with(" (second)"));
        Ok(())
    }

    /// A small deterministic generator (xorshift64*), so that a failure repeats.
    struct Dice(u64);

    impl Dice {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// `message` damaged in one to three places (mostly a single byte): a bit flipped, a byte
    /// replaced, a run cut out or repeated, random bytes put in, or the end cut off.
    fn damaged(message: &[u8], dice: &mut Dice) -> Vec<u8> {
        let mut out = message.to_vec();
        for _ in 0..=dice.below(2) {
            let at = dice.below(out.len() + 1);
            let run = 1 + dice.below(8);
            match dice.below(11) {
                0..=3 if at < out.len() => out[at] ^= 1 << dice.below(8),
                4..=6 if at < out.len() => out[at] = dice.next() as u8,
                7 => {
                    let end = (at + run).min(out.len());
                    out.drain(at..end);
                }
                8 => {
                    let end = (at + run).min(out.len());
                    let copy = out[at..end].to_vec();
                    out.splice(at..at, copy);
                }
                9 => {
                    let noise: Vec<u8> = (0..run).map(|_| dice.next() as u8).collect();
                    out.splice(at..at, noise);
                }
                _ => out.truncate(at),
            }
        }
        out
    }

    /// Whether `a` and `b` hold the same rows, in any order: the order of a
    /// request's rows comes from the first trace id and start time of each
    /// span (`SpanView::storage_key`), not from the last, which prost keeps
    /// when a field is repeated.
    fn same_rows(a: &RecordBatch, b: &RecordBatch) -> bool {
        let mut unmatched: Vec<RecordBatch> = (0..b.num_rows()).map(|i| b.slice(i, 1)).collect();
        a.num_rows() == b.num_rows()
            && (0..a.num_rows()).all(|i| {
                let row = a.slice(i, 1);
                match unmatched.iter().position(|other| *other == row) {
                    Some(found) => {
                        unmatched.swap_remove(found);
                        true
                    }
                    None => false,
                }
            })
    }

    /// The parts of [`every_field`]'s first span as protobuf bytes: the span,
    /// its resource and its scope.
    fn first_span_parts() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let request = every_field();
        let resource_spans = &request.resource_spans[0];
        let scope_spans = &resource_spans.scope_spans[0];
        let resource = resource_spans.resource.clone().unwrap_or_default();
        let scope = scope_spans.scope.clone().unwrap_or_default();
        (
            scope_spans.spans[0].encode_to_vec(),
            resource.encode_to_vec(),
            scope.encode_to_vec(),
        )
    }

    /// A request of one span, resource and scope, each given as bytes.
    fn request_around(span: &[u8], resource: &[u8], scope: &[u8]) -> Vec<u8> {
        let mut scope_message = length_delimited(1, scope);
        scope_message.extend(length_delimited(2, span));
        let mut resource_message = length_delimited(1, resource);
        resource_message.extend(length_delimited(2, &scope_message));
        length_delimited(1, &resource_message)
    }

    /// Protobuf's rarer forms, each accepted or refused as prost decides.
    #[test]
    fn rare_wire_forms_are_accepted_or_refused_as_prost_decides() {
        let (span, resource, scope) = first_span_parts();
        let with = |message: &[u8], extra: &[u8]| [message, extra].concat();
        // Field 100 as a group holding a varint (start key 100 << 3 | 3, end 100 << 3 | 4).
        let group_100 = [0xa3, 0x06, 0x08, 0x05, 0xa4, 0x06];
        let entity_ref = |id_key: &[u8]| {
            let mut entity = length_delimited(2, b"service");
            entity.extend(length_delimited(3, id_key));
            length_delimited(3, &entity)
        };
        let cases: [(&str, Vec<u8>, bool); 8] = [
            (
                "an unknown group is skipped",
                request_around(&with(&span, &group_100), &resource, &scope),
                true,
            ),
            (
                "a group must end with its own number",
                request_around(&with(&span, &[0xa3, 0x06, 0xac, 0x06]), &resource, &scope),
                false,
            ),
            (
                "a group must end",
                request_around(&with(&span, &[0xa3, 0x06, 0x08, 0x05]), &resource, &scope),
                false,
            ),
            (
                "a known field cannot be a group",
                request_around(&with(&span, &[0x73, 0x74]), &resource, &scope),
                false,
            ),
            (
                "a key is at most 32 bits",
                request_around(
                    &with(&span, &[0x88, 0x80, 0x80, 0x80, 0x10, 0x01]),
                    &resource,
                    &scope,
                ),
                false,
            ),
            (
                "an attribute's key_strindex is a varint",
                request_around(
                    &with(&span, &length_delimited(9, &length_delimited(3, b"x"))),
                    &resource,
                    &scope,
                ),
                false,
            ),
            (
                "a resource's entity_refs decode",
                request_around(
                    &span,
                    &with(&resource, &entity_ref(b"service.name")),
                    &scope,
                ),
                true,
            ),
            (
                "a resource's entity_refs hold UTF-8",
                request_around(&span, &with(&resource, &entity_ref(&[0xff])), &scope),
                false,
            ),
        ];
        let mut wrong = Vec::new();
        for (case, request, valid) in cases {
            let prost = ExportTraceServiceRequest::decode(request.as_slice());
            assert_eq!(prost.is_ok(), valid, "{case}: prost decides otherwise");
            match protobuf_to_record_batch(&request) {
                Ok(_) if !valid => wrong.push(format!("{case}: accepted")),
                Err(error) if valid => wrong.push(format!("{case}: {error}")),
                _ => {}
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    /// Damaged requests, whole or with the damage inside a span, a resource or
    /// a scope (their lengths made right again, so the damage reaches the
    /// fields within): the converter never panics, never accepts what prost
    /// rejects, refuses what prost accepts only for a span the validation
    /// also rejects, and reads what it accepts as prost reads it.
    #[test]
    fn damaged_requests_read_as_prost_reads_them_or_fail_cleanly() -> TestResult {
        let request = every_field();
        let (span, resource, scope) = first_span_parts();
        let wrap = request_around;
        let whole = request.encode_to_vec();

        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        let (mut same, mut refused_both, mut invalid_span) = (0, 0, 0);
        for round in 0..8000 {
            let damaged_request = match round % 4 {
                0 => damaged(&whole, &mut dice),
                1 => wrap(&damaged(&span, &mut dice), &resource, &scope),
                2 => wrap(&span, &damaged(&resource, &mut dice), &scope),
                _ => wrap(&span, &resource, &damaged(&scope, &mut dice)),
            };
            let ours = protobuf_to_record_batch(&damaged_request);
            let prost = ExportTraceServiceRequest::decode(damaged_request.as_slice());
            match (ours, prost) {
                (Ok(batch), Ok(decoded)) => {
                    assert!(
                        same_rows(&batch, &to_record_batch(&decoded)?),
                        "read otherwise than prost reads it: {damaged_request:02x?}"
                    );
                    same += 1;
                }
                (Ok(_), Err(error)) => {
                    panic!("accepted what prost rejects ({error}): {damaged_request:02x?}")
                }
                (Err(ConvertError::InvalidSpan { .. }), Ok(mut decoded)) => {
                    let rejected = validate::traces(&mut decoded);
                    assert!(
                        rejected.count > 0,
                        "an invalid span the validation keeps: {damaged_request:02x?}"
                    );
                    invalid_span += 1;
                }
                (Err(error), Ok(_)) => {
                    panic!("refused what prost accepts ({error}): {damaged_request:02x?}")
                }
                (Err(_), Err(_)) => refused_both += 1,
            }
        }
        // Each outcome came up often enough to have been checked.
        assert!(
            same > 1000 && refused_both > 1000 && invalid_span > 5,
            "{same} read alike, {refused_both} refused by both, {invalid_span} with an invalid span"
        );
        Ok(())
    }
}
