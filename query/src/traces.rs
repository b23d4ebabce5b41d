//! Traces read back from the store into plain structs: the services and
//! operations seen, a trace by id, trace search, and service dependencies.
//! Queries are built with DataFusion expressions, so user input never becomes SQL text.

use std::collections::HashMap;

use datafusion::arrow::array::{
    Array, AsArray, ListArray, MapArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, max};
use datafusion::prelude::{DataFrame, Expr, col, in_list, lit};
use weft_schema::spans as s;
use weft_schema::{AttributeType, TIME_ZONE};

use crate::catalog::AttributeKeys;
use crate::engine::{QueryEngine, QueryError};
use crate::stats::HOUR_NS;

/// An attribute value with its OTLP type restored.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Base64 text of the bytes.
    Bytes(String),
    /// An array or key-value list, as OTLP/JSON text.
    Json(String),
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub key: String,
    pub value: AttributeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub time_ns: i64,
    pub name: String,
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
    pub trace_state: Option<String>,
    pub attributes: Vec<Attribute>,
}

/// One span as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanData {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub trace_state: Option<String>,
    pub flags: u32,
    pub name: String,
    /// `SERVER`, `CLIENT`, … as in the `kind` column.
    pub kind: String,
    pub start_ns: i64,
    pub duration_ns: i64,
    /// `UNSET`, `OK` or `ERROR`.
    pub status_code: String,
    pub status_message: Option<String>,
    pub service_name: String,
    pub attributes: Vec<Attribute>,
    pub resource_attributes: Vec<Attribute>,
    pub scope_name: Option<String>,
    pub scope_version: Option<String>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
}

/// A span name and kind seen for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: String,
    pub span_kind: String,
}

/// Calls from one service to another: client or parent spans in `parent`
/// whose child span is in `child`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

/// What to look for: the spans of a service in a time range, optionally with an
/// operation, attributes and duration bounds, all on one span.
#[derive(Debug, Clone, Default)]
pub struct TraceSearch {
    /// Empty: any service.
    pub service: String,
    pub operation: Option<String>,
    /// `key = value` on the span's or its resource's attributes. `error` matches
    /// the status (`true`: ERROR), `span.kind` the kind.
    pub tags: Vec<(String, String)>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub limit: usize,
}

pub(crate) fn timestamp(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some(TIME_ZONE.into()),
    ))
}

pub(crate) fn in_range(start_ns: i64, end_ns: i64) -> Expr {
    col(s::START_TIME)
        .gt_eq(timestamp(start_ns))
        .and(col(s::START_TIME).lt_eq(timestamp(end_ns)))
}

/// The filter of a tag that names a column rather than an attribute
/// (`error`, `span.kind`, `otel.status_code`, `otel.status_description`).
fn column_tag(key: &str, value: &str) -> Option<Expr> {
    Some(match key {
        "error" => {
            let is_error = col(s::STATUS_CODE).eq(lit("ERROR"));
            if value == "true" {
                is_error
            } else {
                col(s::STATUS_CODE).not_eq(lit("ERROR"))
            }
        }
        "span.kind" => col(s::KIND).eq(lit(value.to_ascii_uppercase())),
        "otel.status_code" => col(s::STATUS_CODE).eq(lit(value.to_ascii_uppercase())),
        "otel.status_description" => col(s::STATUS_MESSAGE).eq(lit(value)),
        _ => return None,
    })
}

/// `keys`: the attribute keys of the spans searched, when known: a map
/// without the key is not decoded at all.
fn tag_filter(key: &str, value: &str, keys: Option<&AttributeKeys>) -> Expr {
    if let Some(filter) = column_tag(key, value) {
        return filter;
    }
    let on_span = get_field(col(s::ATTRIBUTES), key).eq(lit(value));
    let on_resource = get_field(col(s::RESOURCE_ATTRIBUTES), key).eq(lit(value));
    match keys.map(|k| (k.span.contains(key), k.resource.contains(key))) {
        None | Some((true, true)) => on_span.or(on_resource),
        Some((true, false)) => on_span,
        Some((false, true)) => on_resource,
        Some((false, false)) => lit(false),
    }
}

impl QueryEngine {
    async fn spans_table(&self) -> Result<DataFrame, QueryError> {
        Ok(self.session()?.table("spans").await?)
    }

    /// Every service name in the store, sorted.
    pub async fn services(&self) -> Result<Vec<String>, QueryError> {
        let services: std::collections::BTreeSet<String> = self
            .catalog()
            .await?
            .into_iter()
            .map(|(service, _, _)| service)
            .collect();
        Ok(services.into_iter().collect())
    }

    /// The span names and kinds of `service`, sorted by name.
    pub async fn operations(
        &self,
        service: &str,
        span_kind: Option<&str>,
    ) -> Result<Vec<Operation>, QueryError> {
        let kind = span_kind
            .filter(|k| !k.is_empty())
            .map(str::to_ascii_uppercase);
        Ok(self
            .catalog()
            .await?
            .into_iter()
            .filter(|(s, _, k)| s == service && kind.as_ref().is_none_or(|wanted| wanted == k))
            .map(|(_, name, span_kind)| Operation { name, span_kind })
            .collect())
    }

    /// The spans of one trace (`trace_id` in 32 lowercase hex), by start time.
    /// Empty when the store has none.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<SpanData>, QueryError> {
        let mut traces = self.traces(&[trace_id.to_owned()]).await?;
        Ok(traces.pop().unwrap_or_default())
    }

    /// The spans of several traces, in the order of `trace_ids`; unknown ids are left out.
    pub async fn traces(&self, trace_ids: &[String]) -> Result<Vec<Vec<SpanData>>, QueryError> {
        if trace_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = trace_ids.iter().map(|id| lit(id.as_str())).collect();
        let filter = in_list(col(s::TRACE_ID), ids, false);
        // Only the hours that hold these traces: the other files are not even
        // opened for their bloom filters.
        let spans = match self.hours_of_traces(trace_ids).await? {
            Some(hours) if hours.is_empty() => return Ok(Vec::new()),
            Some(hours) => self.spans_of_hours(hours).await?,
            None => self.spans_table().await?,
        };
        // Only what a `SpanData` holds: the promoted copies of attributes,
        // dropped counts, scope attributes… are a third of the columns, and
        // each read column means one more page to decompress per trace.
        let frame = spans
            .filter(filter)?
            .select_columns(SPAN_DATA_COLUMNS)?
            .sort(vec![
                col(s::START_TIME).sort(true, false),
                col(s::SPAN_ID).sort(true, false),
            ])?;
        let mut by_trace: HashMap<String, Vec<SpanData>> = HashMap::new();
        for batch in self.collect(frame).await? {
            for span in read_spans(&batch)? {
                by_trace
                    .entry(span.trace_id.clone())
                    .or_default()
                    .push(span);
            }
        }
        Ok(trace_ids
            .iter()
            .filter_map(|id| by_trace.remove(id))
            .collect())
    }

    /// Traces with a span that matches `search`, newest first (by their latest
    /// matching span).
    ///
    /// The range is searched from its end backwards, in windows of one hour,
    /// then two, four…: once `limit` traces are found, a trace whose matching
    /// spans all lie before the window searched last starts before every one
    /// found, so the rest of the range need not be read.
    pub async fn search_traces(
        &self,
        search: &TraceSearch,
    ) -> Result<Vec<Vec<SpanData>>, QueryError> {
        let started = std::time::Instant::now();
        let mut filter: Option<Expr> = None;
        let mut and = |condition: Expr| {
            filter = Some(match filter.take() {
                Some(f) => f.and(condition),
                None => condition,
            });
        };
        if !search.service.is_empty() {
            and(col(s::SERVICE_NAME).eq(lit(search.service.as_str())));
        }
        if let Some(operation) = &search.operation {
            and(col(s::NAME).eq(lit(operation.as_str())));
        }
        if let Some(min) = search.min_duration_ns {
            and(col(s::DURATION_NS).gt_eq(lit(min)));
        }
        if let Some(max_ns) = search.max_duration_ns {
            and(col(s::DURATION_NS).lt_eq(lit(max_ns)));
        }
        let mut latest: HashMap<String, i64> = HashMap::new();
        let mut window_end = search.end_ns;
        let mut width = HOUR_NS;
        loop {
            let window_start = window_end.saturating_sub(width - 1).max(search.start_ns);
            let mut window = self.spans_in(window_start, window_end).await?;
            if let Some(f) = &filter {
                window = window.filter(f.clone())?;
            }
            let keys = if search
                .tags
                .iter()
                .any(|(key, value)| column_tag(key, value).is_none())
            {
                let first = window_start.div_euclid(HOUR_NS) * HOUR_NS;
                self.attribute_keys((first..=window_end).step_by(HOUR_NS as usize))
                    .await?
            } else {
                None
            };
            for (key, value) in &search.tags {
                window = window.filter(tag_filter(key, value, keys.as_ref()))?;
            }
            let frame = window
                .aggregate(
                    vec![col(s::TRACE_ID)],
                    vec![max(col(s::START_TIME)).alias("latest")],
                )?
                .sort(vec![
                    col("latest").sort(false, false),
                    col(s::TRACE_ID).sort(true, false),
                ])?
                .limit(0, Some(search.limit))?;
            for batch in self.collect(frame).await? {
                let ids = string_column(&batch, 0);
                let times = batch.column(1).as_primitive::<TimestampNanosecondType>();
                for row in 0..batch.num_rows() {
                    let time = times.value(row);
                    latest
                        .entry(ids.value(row).to_owned())
                        .and_modify(|t| *t = (*t).max(time))
                        .or_insert(time);
                }
            }
            if latest.len() >= search.limit || window_start <= search.start_ns {
                break;
            }
            window_end = window_start - 1;
            width = width.saturating_mul(2);
        }
        let mut found: Vec<(String, i64)> = latest.into_iter().collect();
        found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        found.truncate(search.limit);
        let ids: Vec<String> = found.into_iter().map(|(id, _)| id).collect();
        let searched = started.elapsed();
        let traces = self.traces(&ids).await?;
        tracing::debug!(
            traces = traces.len(),
            search_ms = searched.as_millis() as u64,
            fetch_ms = (started.elapsed() - searched).as_millis() as u64,
            "trace search"
        );
        Ok(traces)
    }

    /// Calls between services in a time range: a span whose parent span is in
    /// another service is one call from the parent's service to the child's.
    pub async fn dependencies(
        &self,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<Dependency>, QueryError> {
        let spans = self
            .spans_table()
            .await?
            .filter(in_range(start_ns, end_ns))?;
        let children = spans.clone().select(vec![
            col(s::TRACE_ID),
            col(s::PARENT_SPAN_ID),
            col(s::SERVICE_NAME),
        ])?;
        let parents = spans.select(vec![
            col(s::TRACE_ID).alias("parent_trace_id"),
            col(s::SPAN_ID).alias("parent_span"),
            col(s::SERVICE_NAME).alias("parent_service"),
        ])?;
        let frame = children
            .join(
                parents,
                JoinType::Inner,
                &[s::TRACE_ID, s::PARENT_SPAN_ID],
                &["parent_trace_id", "parent_span"],
                None,
            )?
            .filter(col("parent_service").not_eq(col(s::SERVICE_NAME)))?
            .aggregate(
                vec![col("parent_service"), col(s::SERVICE_NAME)],
                vec![count(lit(1)).alias("calls")],
            )?
            .sort(vec![
                col("parent_service").sort(true, false),
                col(s::SERVICE_NAME).sort(true, false),
            ])?;
        let mut dependencies = Vec::new();
        for batch in self.collect(frame).await? {
            let (parents, children) = (string_column(&batch, 0), string_column(&batch, 1));
            let calls = batch.column(2).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                dependencies.push(Dependency {
                    parent: parents.value(i).to_owned(),
                    child: children.value(i).to_owned(),
                    call_count: u64::try_from(calls.value(i)).unwrap_or_default(),
                });
            }
        }
        Ok(dependencies)
    }
}

fn string_column(batch: &RecordBatch, index: usize) -> &StringArray {
    batch.column(index).as_string::<i32>()
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, QueryError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| QueryError::Invalid(format!("the spans table has no column {name}")))
}

fn optional(array: &StringArray, row: usize) -> Option<String> {
    (!array.is_null(row)).then(|| array.value(row).to_owned())
}

fn typed(text: Option<&str>, kind: Option<&str>) -> AttributeValue {
    let Some(text) = text else {
        return AttributeValue::Empty;
    };
    match kind.and_then(AttributeType::from_name) {
        None | Some(AttributeType::String) | Some(AttributeType::StringIndex) => {
            AttributeValue::String(text.to_owned())
        }
        Some(AttributeType::Bool) => AttributeValue::Bool(text == "true"),
        Some(AttributeType::Int) => text
            .parse()
            .map(AttributeValue::Int)
            .unwrap_or_else(|_| AttributeValue::String(text.to_owned())),
        Some(AttributeType::Double) => match text {
            "Infinity" => AttributeValue::Double(f64::INFINITY),
            "-Infinity" => AttributeValue::Double(f64::NEG_INFINITY),
            _ => text
                .parse()
                .map(AttributeValue::Double)
                .unwrap_or(AttributeValue::Double(f64::NAN)),
        },
        Some(AttributeType::Bytes) => AttributeValue::Bytes(text.to_owned()),
        Some(AttributeType::Array) | Some(AttributeType::KvList) => {
            AttributeValue::Json(text.to_owned())
        }
        Some(AttributeType::Empty) => AttributeValue::Empty,
    }
}

/// One row's attribute set from its values map and types map.
fn read_attributes(values: &MapArray, types: &MapArray, row: usize) -> Vec<Attribute> {
    let entries = values.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let texts = entries.column(1).as_string::<i32>();
    let type_entries = types.value(row);
    let type_keys = type_entries.column(0).as_string::<i32>();
    let type_names = type_entries.column(1).as_string::<i32>();
    let kinds: HashMap<&str, &str> = (0..type_entries.len())
        .map(|i| (type_keys.value(i), type_names.value(i)))
        .collect();
    (0..entries.len())
        .map(|i| {
            let key = keys.value(i);
            let text = (!texts.is_null(i)).then(|| texts.value(i));
            Attribute {
                key: key.to_owned(),
                value: typed(text, kinds.get(key).copied()),
            }
        })
        .collect()
}

fn struct_map<'a>(items: &'a StructArray, name: &str) -> Result<&'a MapArray, QueryError> {
    items
        .column_by_name(name)
        .map(|c| c.as_map())
        .ok_or_else(|| QueryError::Invalid(format!("nested column {name} is missing")))
}

fn read_events(list: &ListArray, row: usize) -> Result<Vec<SpanEvent>, QueryError> {
    let items = list.value(row);
    let items = items.as_struct();
    let times = items
        .column_by_name(s::event::TIME)
        .map(|c| c.as_primitive::<TimestampNanosecondType>());
    let names = items
        .column_by_name(s::event::NAME)
        .map(|c| c.as_string::<i32>());
    let (Some(times), Some(names)) = (times, names) else {
        return Err(QueryError::Invalid("events lack time or name".into()));
    };
    let (values, types) = (
        struct_map(items, s::ATTRIBUTES)?,
        struct_map(items, s::ATTRIBUTE_TYPES)?,
    );
    Ok((0..items.len())
        .map(|i| SpanEvent {
            time_ns: times.value(i),
            name: names.value(i).to_owned(),
            attributes: read_attributes(values, types, i),
        })
        .collect())
}

fn read_links(list: &ListArray, row: usize) -> Result<Vec<SpanLink>, QueryError> {
    let items = list.value(row);
    let items = items.as_struct();
    let text = |name: &str| items.column_by_name(name).map(|c| c.as_string::<i32>());
    let (Some(trace_ids), Some(span_ids), Some(states)) = (
        text(s::link::TRACE_ID),
        text(s::link::SPAN_ID),
        text(s::link::TRACE_STATE),
    ) else {
        return Err(QueryError::Invalid("links lack their ids".into()));
    };
    let (values, types) = (
        struct_map(items, s::ATTRIBUTES)?,
        struct_map(items, s::ATTRIBUTE_TYPES)?,
    );
    Ok((0..items.len())
        .map(|i| SpanLink {
            trace_id: trace_ids.value(i).to_owned(),
            span_id: span_ids.value(i).to_owned(),
            trace_state: optional(states, i),
            attributes: read_attributes(values, types, i),
        })
        .collect())
}

/// Rows of the `spans` table (all columns) as [`SpanData`].
/// The columns [`read_spans`] reads.
const SPAN_DATA_COLUMNS: &[&str] = &[
    s::TRACE_ID,
    s::SPAN_ID,
    s::PARENT_SPAN_ID,
    s::TRACE_STATE,
    s::FLAGS,
    s::NAME,
    s::KIND,
    s::START_TIME,
    s::DURATION_NS,
    s::STATUS_CODE,
    s::STATUS_MESSAGE,
    s::SERVICE_NAME,
    s::ATTRIBUTES,
    s::ATTRIBUTE_TYPES,
    s::RESOURCE_ATTRIBUTES,
    s::RESOURCE_ATTRIBUTE_TYPES,
    s::SCOPE_NAME,
    s::SCOPE_VERSION,
    s::EVENTS,
    s::LINKS,
];

pub fn read_spans(batch: &RecordBatch) -> Result<Vec<SpanData>, QueryError> {
    let text = |name| column(batch, name).map(|c| c.as_string::<i32>());
    let map = |name| column(batch, name).map(|c| c.as_map());
    let (trace_ids, span_ids, parents, states, names, kinds) = (
        text(s::TRACE_ID)?,
        text(s::SPAN_ID)?,
        text(s::PARENT_SPAN_ID)?,
        text(s::TRACE_STATE)?,
        text(s::NAME)?,
        text(s::KIND)?,
    );
    let (status_codes, status_messages, services) = (
        text(s::STATUS_CODE)?,
        text(s::STATUS_MESSAGE)?,
        text(s::SERVICE_NAME)?,
    );
    let (scope_names, scope_versions) = (text(s::SCOPE_NAME)?, text(s::SCOPE_VERSION)?);
    let flags = column(batch, s::FLAGS)?.as_primitive::<UInt32Type>();
    let starts: &TimestampNanosecondArray =
        column(batch, s::START_TIME)?.as_primitive::<TimestampNanosecondType>();
    let durations = column(batch, s::DURATION_NS)?.as_primitive::<Int64Type>();
    let (attributes, attribute_types) = (map(s::ATTRIBUTES)?, map(s::ATTRIBUTE_TYPES)?);
    let (resource_attributes, resource_types) = (
        map(s::RESOURCE_ATTRIBUTES)?,
        map(s::RESOURCE_ATTRIBUTE_TYPES)?,
    );
    let events = column(batch, s::EVENTS)?.as_list::<i32>();
    let links = column(batch, s::LINKS)?.as_list::<i32>();
    (0..batch.num_rows())
        .map(|i| {
            Ok(SpanData {
                trace_id: trace_ids.value(i).to_owned(),
                span_id: span_ids.value(i).to_owned(),
                parent_span_id: optional(parents, i),
                trace_state: optional(states, i),
                flags: flags.value(i),
                name: names.value(i).to_owned(),
                kind: kinds.value(i).to_owned(),
                start_ns: starts.value(i),
                duration_ns: durations.value(i),
                status_code: status_codes.value(i).to_owned(),
                status_message: optional(status_messages, i),
                service_name: services.value(i).to_owned(),
                attributes: read_attributes(attributes, attribute_types, i),
                resource_attributes: read_attributes(resource_attributes, resource_types, i),
                scope_name: optional(scope_names, i),
                scope_version: optional(scope_versions, i),
                events: read_events(events, i)?,
                links: read_links(links, i)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_filter_reads_only_the_maps_that_hold_its_key() {
        let keys = AttributeKeys {
            span: ["app.user_id".to_owned()].into(),
            resource: ["host.name".to_owned()].into(),
        };
        let filter =
            |key: &str, keys: Option<&AttributeKeys>| tag_filter(key, "x", keys).to_string();
        let span_only = filter("app.user_id", Some(&keys));
        assert!(span_only.contains(s::ATTRIBUTES), "{span_only}");
        assert!(!span_only.contains(s::RESOURCE_ATTRIBUTES), "{span_only}");
        let resource_only = filter("host.name", Some(&keys));
        assert!(
            resource_only.contains(s::RESOURCE_ATTRIBUTES),
            "{resource_only}"
        );
        assert!(
            !resource_only.contains(&format!("({}", s::ATTRIBUTES)),
            "{resource_only}"
        );
        assert_eq!(filter("nowhere", Some(&keys)), lit(false).to_string());
        // A tag naming a column reads the column, whatever the keys.
        let error = filter("error", Some(&keys));
        assert!(
            error.contains(s::STATUS_CODE) && !error.contains("attributes"),
            "{error}"
        );
        // Keys not known (an open hour): both maps.
        let both = filter("nowhere", None);
        assert!(
            both.contains(s::ATTRIBUTES) && both.contains(s::RESOURCE_ATTRIBUTES),
            "{both}"
        );
    }
}
