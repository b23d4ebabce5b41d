//! Aggregates over spans, computed live from the store for any time range: the
//! service map with per-edge statistics, RED metrics (rate, errors, duration)
//! per service and operation, and latency histograms.
//!
//! Percentiles are exact (`percentile_cont`, linear interpolation, the same as
//! `SELECT percentile_cont(duration_ns, 0.95)` over `/api/sql` or DuckDB's
//! `quantile_cont`), so a figure here can always be checked with SQL.

use std::collections::{BTreeMap, HashSet};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::JoinType;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::functions_nested::expr_fn::cardinality;
use datafusion::logical_expr::{Expr, when};
use datafusion::prelude::{DataFrame, cast, col, in_list, lit};
use weft_schema::spans as s;

use crate::engine::{QueryEngine, QueryError};
use crate::rollups::Select;
use crate::sketch::Samples;
use crate::traces::in_range;

/// Request count, errors and exact duration percentiles of a set of spans.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub errors: u64,
    pub p50_ns: f64,
    pub p95_ns: f64,
    pub p99_ns: f64,
    /// The percentiles came from rollup buckets (within 1 % of the exact
    /// value), not from every duration.
    pub estimated: bool,
}

impl LatencySummary {
    pub fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors as f64 / self.count as f64
        }
    }
}

/// How an edge of the service map was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// A client or producer span whose server or consumer child is in another service.
    Call,
    /// A consumer span that links to (is not the child of) a producer span in another service.
    Link,
    /// A client span with no server child, to the peer it names (`peer.service`,
    /// else `server.address`): a database, a cache, a service without tracing.
    Peer,
}

/// Every edge kind, in the order of their names.
pub(crate) const EDGE_KINDS: [EdgeKind; 3] = [EdgeKind::Call, EdgeKind::Link, EdgeKind::Peer];

impl EdgeKind {
    fn index(self) -> usize {
        match self {
            EdgeKind::Call => 0,
            EdgeKind::Link => 1,
            EdgeKind::Peer => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Call => "call",
            EdgeKind::Link => "link",
            EdgeKind::Peer => "peer",
        }
    }
}

/// One edge of the service map. Latency is what the caller waited (its client
/// span) for calls and peers, and the consumer's processing time for links.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    pub stats: LatencySummary,
}

/// RED figures of a service (and operation, when grouped by operation).
#[derive(Debug, Clone, PartialEq)]
pub struct RedRow {
    pub service: String,
    pub operation: Option<String>,
    pub stats: LatencySummary,
}

/// RED figures of one time bucket, `[start_ns, start_ns + step)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedBucket {
    pub start_ns: i64,
    pub stats: LatencySummary,
}

/// Spans with durations in `[min_ns, max_ns)`; `max_ns` is `None` for the last, open bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramBucket {
    pub min_ns: i64,
    pub max_ns: Option<i64>,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// From the first non-empty bucket to the last, empty ones between included.
    pub buckets: Vec<HistogramBucket>,
    pub stats: LatencySummary,
}

/// Which requests to count.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub start_ns: i64,
    pub end_ns: i64,
}

impl RequestFilter {
    fn select(&self) -> Select {
        Select::Requests {
            service: self.service.clone(),
        }
    }
}

/// Histogram bucket bounds: 1-2-5 steps from 1 µs to 500 s.
pub fn histogram_bounds() -> Vec<i64> {
    let mut bounds = Vec::new();
    let mut decade = 1_000i64;
    while decade <= 100_000_000_000 {
        bounds.extend([decade, 2 * decade, 5 * decade]);
        decade *= 10;
    }
    bounds
}

/// The spans a service answers requests with: its server and consumer spans,
/// and its root spans (an entry point with no instrumented caller).
fn is_request() -> Expr {
    in_list(col(s::KIND), vec![lit("SERVER"), lit("CONSUMER")], false)
        .or(col(s::PARENT_SPAN_ID).is_null())
}

fn is_error(status_column: &str) -> Expr {
    col(status_column).eq(lit("ERROR"))
}

/// How far around a window the other side of a call or link is looked for:
/// a server span may start a little before its client's (clock skew), a
/// consumer long after its producer (queue lag).
pub(crate) const WINDOW_MARGIN_NS: i64 = 10 * 60 * 1_000_000_000;
pub(crate) const HOUR_NS: i64 = 3_600 * 1_000_000_000;
/// Ranges of more hours than this list the whole table rather than each hour.
const MAX_LISTED_HOURS: i64 = 24 * 32;

/// Spans per join window: a day of the benchmark store (10 million spans)
/// needs about 1.1 GB to join at once; this keeps a window near 300 MB.
const SPANS_PER_WINDOW: u64 = 2_500_000;

/// `[start, end]` cut at boundaries of `hours` whole hours (the store's
/// partitions), as half-open windows except the last, which includes `end`.
fn hour_windows(start_ns: i64, end_ns: i64, hours: i64) -> Vec<(i64, i64)> {
    let width = HOUR_NS * hours.max(1);
    let mut windows = Vec::new();
    let mut from = start_ns;
    while from <= end_ns {
        let next_hour = (from.div_euclid(width) + 1) * width;
        if next_hour > end_ns {
            windows.push((from, end_ns));
            break;
        }
        // `spans_in` includes its end: stop a nanosecond before the next window.
        windows.push((from, next_hour - 1));
        from = next_hour;
    }
    windows
}

/// One client or producer span and what answered it.
struct CallRow {
    start_ns: i64,
    caller: String,
    caller_is_client: bool,
    callee: Option<String>,
    peer: Option<String>,
    latency_ns: i64,
    error: bool,
}

/// One call along an edge of the service map, read from spans.
pub(crate) struct EdgeCall {
    /// When the caller's span (or, for a link, the consumer's) started.
    pub start_ns: i64,
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    pub latency_ns: i64,
    pub error: bool,
}

/// `percentile_cont` of sorted values: linear interpolation between the two
/// nearest ranks, as DataFusion, DuckDB and PostgreSQL compute it.
pub(crate) fn percentile(sorted: &[i64], p: f64) -> f64 {
    let Some(&last) = sorted.last() else {
        return 0.0;
    };
    let rank = p * (sorted.len() - 1) as f64;
    let (lower, upper) = (rank.floor() as usize, rank.ceil() as usize);
    let (a, b) = (
        sorted.get(lower).copied().unwrap_or(last) as f64,
        sorted.get(upper).copied().unwrap_or(last) as f64,
    );
    a + (b - a) * (rank - lower as f64)
}

/// A nullable Int64 cell; null reads as 0.
fn latency_at(array: &datafusion::arrow::array::Int64Array, row: usize) -> i64 {
    if array.is_null(row) {
        0
    } else {
        array.value(row)
    }
}

/// A nullable Boolean cell; null reads as false.
fn flag_at(array: &datafusion::arrow::array::BooleanArray, row: usize) -> bool {
    array.is_valid(row) && array.value(row)
}

fn int_at(batch: &RecordBatch, index: usize, row: usize) -> u64 {
    let array = batch.column(index).as_primitive::<Int64Type>();
    if array.is_null(row) {
        0
    } else {
        u64::try_from(array.value(row)).unwrap_or_default()
    }
}

fn text_at(batch: &RecordBatch, index: usize, row: usize) -> Option<String> {
    let array = batch.column(index).as_string::<i32>();
    (!array.is_null(row)).then(|| array.value(row).to_owned())
}

/// Samples per service, operation and time slot (or from, to and edge kind).
type RequestSamples = BTreeMap<String, BTreeMap<String, BTreeMap<usize, Samples>>>;

/// The samples of one group, created when first seen; texts are copied only then.
fn samples_of<'g>(
    groups: &'g mut RequestSamples,
    service: &str,
    operation: &str,
    slot: usize,
) -> Option<&'g mut Samples> {
    if !groups.contains_key(service) {
        groups.insert(service.to_owned(), BTreeMap::new());
    }
    let operations = groups.get_mut(service)?;
    if !operations.contains_key(operation) {
        operations.insert(operation.to_owned(), BTreeMap::new());
    }
    Some(operations.get_mut(operation)?.entry(slot).or_default())
}

/// Adds rollup rows to their groups. Rows come sorted by group, so rows of
/// the same group in a row are gathered first and looked up once.
struct RunAdder<'g> {
    groups: &'g mut RequestSamples,
    key: (String, String, usize),
    run: Samples,
}

impl<'g> RunAdder<'g> {
    fn new(groups: &'g mut RequestSamples) -> Self {
        Self {
            groups,
            key: (String::new(), String::new(), 0),
            run: Samples::default(),
        }
    }

    fn add(&mut self, group: (&str, &str, usize), bucket: u16, count: u64, errors: u64) {
        let (a, b, slot) = group;
        if self.key.2 != slot || self.key.0 != a || self.key.1 != b {
            self.flush();
            self.key = (a.to_owned(), b.to_owned(), slot);
        }
        self.run.add_rollup(bucket, count, errors);
    }

    fn flush(&mut self) {
        if self.run.count() == 0 {
            return;
        }
        let run = std::mem::take(&mut self.run);
        if let Some(samples) = samples_of(self.groups, &self.key.0, &self.key.1, self.key.2) {
            samples.merge(&run);
        }
    }
}

impl QueryEngine {
    /// The spans that start in `[start_ns, end_ns]`.
    pub(crate) async fn spans_in(
        &self,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<DataFrame, QueryError> {
        let first = start_ns.max(0).div_euclid(HOUR_NS) * HOUR_NS;
        let frame = if end_ns < first {
            self.spans_of_hours([]).await?
        } else if (end_ns - first) / HOUR_NS < MAX_LISTED_HOURS {
            self.spans_of_hours((first..=end_ns).step_by(HOUR_NS as usize))
                .await?
        } else {
            self.session()?.table("spans").await?
        };
        Ok(frame.filter(in_range(start_ns, end_ns))?)
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<DataFrame, QueryError> {
        let mut condition = is_request();
        if let Some(service) = &filter.service {
            condition = condition.and(col(s::SERVICE_NAME).eq(lit(service.as_str())));
        }
        if let Some(operation) = &filter.operation {
            condition = condition.and(col(s::NAME).eq(lit(operation.as_str())));
        }
        Ok(self
            .spans_in(filter.start_ns, filter.end_ns)
            .await?
            .filter(condition)?)
    }

    /// Calls `visit(service, operation, start_ns, duration_ns, error)` for each
    /// request that matches `filter`, read from spans.
    pub(crate) async fn for_each_request(
        &self,
        filter: &RequestFilter,
        mut visit: impl FnMut(&str, &str, i64, i64, bool),
    ) -> Result<(), QueryError> {
        let frame = self.requests(filter).await?.select(vec![
            col(s::SERVICE_NAME),
            col(s::NAME),
            cast(col(s::START_TIME), DataType::Int64),
            col(s::DURATION_NS),
            is_error(s::STATUS_CODE),
        ])?;
        for batch in self.collect(frame).await? {
            let services = batch.column(0).as_string::<i32>();
            let names = batch.column(1).as_string::<i32>();
            let start = batch.column(2).as_primitive::<Int64Type>();
            let duration = batch.column(3).as_primitive::<Int64Type>();
            let error = batch.column(4).as_boolean();
            for row in 0..batch.num_rows() {
                visit(
                    services.value(row),
                    names.value(row),
                    latency_at(start, row),
                    latency_at(duration, row),
                    flag_at(error, row),
                );
            }
        }
        Ok(())
    }

    /// The requests of `filter`, per service, operation and time slot: whole
    /// ten minutes of closed hours from the rollups, the rest from spans.
    /// With `step_ns`, slot `i` is `[start + i·step, start + (i+1)·step)`.
    pub async fn request_stats(
        &self,
        filter: &RequestFilter,
        step_ns: Option<i64>,
    ) -> Result<RequestStats, QueryError> {
        if step_ns.is_some_and(|step| step <= 0) {
            return Err(QueryError::Invalid("the step must be positive".into()));
        }
        let step = step_ns.unwrap_or(i64::MAX);
        let slots = usize::try_from((filter.end_ns - filter.start_ns) / step + 1).unwrap_or(1);
        let slot = |start: i64| {
            usize::try_from((start - filter.start_ns) / step)
                .ok()
                .filter(|&i| i < slots)
        };
        let series = step_ns.map(|step| (filter.start_ns, step));
        let coverage = self
            .coverage(filter.start_ns, filter.end_ns, series, &filter.select())
            .await?;
        let mut groups = RequestSamples::new();
        let wanted = |service: &str, operation: &str| {
            filter.service.as_deref().is_none_or(|s| s == service)
                && filter.operation.as_deref().is_none_or(|o| o == operation)
        };
        let raw = match &coverage {
            None => vec![(filter.start_ns, filter.end_ns)],
            Some(coverage) => {
                let mut adder = RunAdder::new(&mut groups);
                coverage.for_each(|row| {
                    if row.is_request()
                        && wanted(row.service, row.name)
                        && let Some(slot) = slot(row.bucket_start)
                    {
                        adder.add(
                            (row.service, row.name, slot),
                            row.duration_bucket,
                            row.count,
                            row.errors,
                        );
                    }
                });
                adder.flush();
                coverage.raw.clone()
            }
        };
        for (start_ns, end_ns) in raw {
            let part = RequestFilter {
                start_ns,
                end_ns,
                ..filter.clone()
            };
            self.for_each_request(&part, |service, operation, start, duration, error| {
                if let Some(slot) = slot(start)
                    && let Some(samples) = samples_of(&mut groups, service, operation, slot)
                {
                    samples.add(duration, error);
                }
            })
            .await?;
        }
        Ok(RequestStats {
            groups,
            start_ns: filter.start_ns,
            step_ns: step,
            slots,
        })
    }

    /// Every edge of the service map in a time range, sorted by `from`, `to`, kind.
    ///
    /// Whole ten minutes of closed hours come from the rollups; the rest is
    /// joined from spans over windows of whole hours (the store's partitions)
    /// of at most about [`SPANS_PER_WINDOW`] spans, so memory stays bounded
    /// over any range. Percentiles are exact when no rollup was used.
    pub async fn service_map(&self, start_ns: i64, end_ns: i64) -> Result<Vec<Edge>, QueryError> {
        // from → to → kind (as its index in EDGE_KINDS) → samples.
        let mut edges = RequestSamples::new();
        let coverage = self
            .coverage(start_ns, end_ns, None, &Select::Edges)
            .await?;
        let mut known = HashSet::new();
        let raw = match &coverage {
            None => vec![(start_ns, end_ns)],
            Some(coverage) => {
                let mut adder = RunAdder::new(&mut edges);
                coverage.for_each(|row| {
                    let Some(kind) = row.edge_kind() else {
                        return;
                    };
                    // Instrumented services: every edge's caller and every call's callee.
                    let callee = (kind == EdgeKind::Call).then_some(row.name);
                    for service in [Some(row.service), callee].into_iter().flatten() {
                        if !known.contains(service) {
                            known.insert(service.to_owned());
                        }
                    }
                    adder.add(
                        (row.service, row.name, kind.index()),
                        row.duration_bucket,
                        row.count,
                        row.errors,
                    );
                });
                adder.flush();
                coverage.raw.clone()
            }
        };
        for (raw_start, raw_end) in raw {
            let (services, spans) = self.known_services(raw_start, raw_end).await?;
            known.extend(services);
            // As few windows as memory allows: each join reads its inputs again.
            let windows = spans.div_ceil(SPANS_PER_WINDOW).max(1) as i64;
            let hours = ((raw_end - raw_start) / HOUR_NS + 1)
                .div_euclid(windows)
                .max(1);
            for (window_start, window_end) in hour_windows(raw_start, raw_end, hours) {
                for call in self
                    .edge_calls(start_ns, end_ns, window_start, window_end, &known)
                    .await?
                {
                    if let Some(samples) =
                        samples_of(&mut edges, &call.from, &call.to, call.kind.index())
                    {
                        samples.add(call.latency_ns, call.error);
                    }
                }
            }
        }
        // Already sorted by from, to and kind.
        let mut list = Vec::new();
        for (from, tos) in edges {
            for (to, kinds) in tos {
                for (index, samples) in kinds {
                    list.push(Edge {
                        from: from.clone(),
                        to: to.clone(),
                        kind: EDGE_KINDS[index],
                        stats: samples.summary(),
                    });
                }
            }
        }
        Ok(list)
    }

    /// The calls, links and peer calls whose caller (or consumer) starts in the
    /// window; their other side is looked for in `[start_ns, end_ns]`.
    pub(crate) async fn edge_calls(
        &self,
        start_ns: i64,
        end_ns: i64,
        window_start: i64,
        window_end: i64,
        known: &HashSet<String>,
    ) -> Result<Vec<EdgeCall>, QueryError> {
        let mut calls = Vec::new();
        for row in self
            .call_rows(start_ns, end_ns, window_start, window_end)
            .await?
        {
            let CallRow {
                start_ns,
                caller,
                caller_is_client,
                callee,
                peer,
                latency_ns,
                error,
            } = row;
            let (to, kind) = match (callee, peer) {
                (Some(callee), _) if callee != caller => (callee, EdgeKind::Call),
                (Some(_), _) => continue,
                // A client span with no server child whose peer is an
                // instrumented service is still a call to that service (it
                // failed fast, timed out, or the callee's spans are lost).
                (None, Some(peer))
                    if caller_is_client && known.contains(&peer) && peer != caller =>
                {
                    (peer, EdgeKind::Call)
                }
                (None, Some(peer)) if caller_is_client && !known.contains(&peer) => {
                    (peer, EdgeKind::Peer)
                }
                _ => continue,
            };
            calls.push(EdgeCall {
                start_ns,
                from: caller,
                to,
                kind,
                latency_ns,
                error,
            });
        }
        calls.extend(
            self.link_rows(start_ns, end_ns, window_start, window_end)
                .await?,
        );
        Ok(calls)
    }

    /// The services with spans in the range, and how many spans there are.
    pub(crate) async fn known_services(
        &self,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<(HashSet<String>, u64), QueryError> {
        let frame = self.spans_in(start_ns, end_ns).await?.aggregate(
            vec![col(s::SERVICE_NAME)],
            vec![count(lit(1)).alias("spans")],
        )?;
        let (mut services, mut spans) = (HashSet::new(), 0);
        for batch in self.collect(frame).await? {
            for row in 0..batch.num_rows() {
                spans += int_at(&batch, 1, row);
                services.extend(text_at(&batch, 0, row));
            }
        }
        Ok((services, spans))
    }

    /// Client and producer spans that start in the window, each with its server
    /// or consumer child if it has one (children are looked for a margin
    /// around the window, inside the range).
    async fn call_rows(
        &self,
        start_ns: i64,
        end_ns: i64,
        window_start: i64,
        window_end: i64,
    ) -> Result<Vec<CallRow>, QueryError> {
        let callers = self
            .spans_in(window_start, window_end)
            .await?
            .filter(in_list(
                col(s::KIND),
                vec![lit("CLIENT"), lit("PRODUCER")],
                false,
            ))?
            .select(vec![
                cast(col(s::START_TIME), DataType::Int64).alias("caller_start"),
                col(s::TRACE_ID).alias("caller_trace"),
                col(s::SPAN_ID).alias("caller_span"),
                col(s::SERVICE_NAME).alias("caller_service"),
                col(s::KIND).alias("caller_kind"),
                col(s::DURATION_NS).alias("caller_duration"),
                col(s::STATUS_CODE).alias("caller_status"),
                coalesce(vec![col("peer_service"), col("server_address")]).alias("peer"),
            ])?;
        let callees = self
            .spans_in(
                (window_start - WINDOW_MARGIN_NS).max(start_ns),
                (window_end + WINDOW_MARGIN_NS).min(end_ns),
            )
            .await?
            .filter(
                in_list(col(s::KIND), vec![lit("SERVER"), lit("CONSUMER")], false)
                    .and(col(s::PARENT_SPAN_ID).is_not_null()),
            )?
            .select(vec![
                col(s::TRACE_ID).alias("callee_trace"),
                col(s::PARENT_SPAN_ID).alias("callee_parent"),
                col(s::SERVICE_NAME).alias("callee_service"),
                col(s::DURATION_NS).alias("callee_duration"),
                col(s::STATUS_CODE).alias("callee_status"),
            ])?;
        let is_client = col("caller_kind").eq(lit("CLIENT"));
        let latency =
            when(is_client.clone(), col("caller_duration")).otherwise(col("callee_duration"))?;
        let error =
            is_error("caller_status").or(coalesce(vec![is_error("callee_status"), lit(false)]));
        let frame = callers
            .join(
                callees,
                JoinType::Left,
                &["caller_trace", "caller_span"],
                &["callee_trace", "callee_parent"],
                None,
            )?
            .filter(
                col("callee_service")
                    .is_not_null()
                    .or(is_client.clone().and(col("peer").is_not_null())),
            )?
            .select(vec![
                col("caller_start"),
                col("caller_service"),
                is_client.alias("is_client"),
                col("callee_service"),
                col("peer"),
                cast(latency, DataType::Int64).alias("latency"),
                error.alias("error"),
            ])?;
        let mut rows = Vec::new();
        for batch in self.collect(frame).await? {
            let start = batch.column(0).as_primitive::<Int64Type>();
            let is_client = batch.column(2).as_boolean();
            let latency = batch.column(5).as_primitive::<Int64Type>();
            let error = batch.column(6).as_boolean();
            for row in 0..batch.num_rows() {
                let Some(caller) = text_at(&batch, 1, row) else {
                    continue;
                };
                rows.push(CallRow {
                    start_ns: latency_at(start, row),
                    caller,
                    caller_is_client: flag_at(is_client, row),
                    callee: text_at(&batch, 3, row),
                    peer: text_at(&batch, 4, row),
                    latency_ns: latency_at(latency, row),
                    error: flag_at(error, row),
                });
            }
        }
        Ok(rows)
    }

    /// Consumer spans starting in the window that link to a producer span in
    /// another service without being its child; latency is the consumer's duration.
    async fn link_rows(
        &self,
        start_ns: i64,
        end_ns: i64,
        window_start: i64,
        window_end: i64,
    ) -> Result<Vec<EdgeCall>, QueryError> {
        let consumers = self
            .spans_in(window_start, window_end)
            .await?
            .filter(cardinality(col(s::LINKS)).gt(lit(0u64)))?
            .select(vec![
                cast(col(s::START_TIME), DataType::Int64).alias("consumer_start"),
                col(s::PARENT_SPAN_ID).alias("consumer_parent"),
                col(s::SERVICE_NAME).alias("consumer_service"),
                col(s::DURATION_NS).alias("consumer_duration"),
                col(s::STATUS_CODE).alias("consumer_status"),
                col(s::LINKS),
            ])?
            .unnest_columns(&[s::LINKS])?
            .select(vec![
                col("consumer_start"),
                col("consumer_parent"),
                col("consumer_service"),
                col("consumer_duration"),
                col("consumer_status"),
                get_field(col(s::LINKS), s::link::TRACE_ID).alias("link_trace"),
                get_field(col(s::LINKS), s::link::SPAN_ID).alias("link_span"),
            ])?;
        // The linked span came first: look a margin before the window.
        let producers = self
            .spans_in(
                (window_start - WINDOW_MARGIN_NS).max(start_ns),
                window_end.min(end_ns),
            )
            .await?
            .select(vec![
                col(s::TRACE_ID).alias("producer_trace"),
                col(s::SPAN_ID).alias("producer_span"),
                col(s::SERVICE_NAME).alias("producer_service"),
            ])?;
        let not_child = col("consumer_parent")
            .is_null()
            .or(col("consumer_parent").not_eq(col("link_span")));
        let frame = consumers
            .join(
                producers,
                JoinType::Inner,
                &["link_trace", "link_span"],
                &["producer_trace", "producer_span"],
                None,
            )?
            .filter(
                col("producer_service")
                    .not_eq(col("consumer_service"))
                    .and(not_child),
            )?
            .select(vec![
                col("consumer_start"),
                col("producer_service"),
                col("consumer_service"),
                cast(col("consumer_duration"), DataType::Int64).alias("latency"),
                is_error("consumer_status").alias("error"),
            ])?;
        let mut rows = Vec::new();
        for batch in self.collect(frame).await? {
            let start = batch.column(0).as_primitive::<Int64Type>();
            let latency = batch.column(3).as_primitive::<Int64Type>();
            let error = batch.column(4).as_boolean();
            for row in 0..batch.num_rows() {
                if let (Some(from), Some(to)) = (text_at(&batch, 1, row), text_at(&batch, 2, row)) {
                    rows.push(EdgeCall {
                        start_ns: latency_at(start, row),
                        from,
                        to,
                        kind: EdgeKind::Link,
                        latency_ns: latency_at(latency, row),
                        error: flag_at(error, row),
                    });
                }
            }
        }
        Ok(rows)
    }

    /// RED figures over the whole range: per service when `filter.service` is
    /// `None`, else per operation of that service. Sorted by name.
    pub async fn red_summary(&self, filter: &RequestFilter) -> Result<Vec<RedRow>, QueryError> {
        let stats = self.request_stats(filter, None).await?;
        Ok(match &filter.service {
            None => stats.services(),
            Some(service) => stats.operations(service),
        })
    }

    /// RED figures per time bucket of `step_ns`, from `filter.start_ns`; every
    /// bucket of the range is present, empty ones with zero counts.
    pub async fn red_series(
        &self,
        filter: &RequestFilter,
        step_ns: i64,
    ) -> Result<Vec<RedBucket>, QueryError> {
        Ok(self.request_stats(filter, Some(step_ns)).await?.series())
    }

    /// Request counts per service per time bucket of `step_ns` (for
    /// sparklines), every bucket present.
    pub async fn request_counts(
        &self,
        filter: &RequestFilter,
        step_ns: i64,
    ) -> Result<Vec<(String, Vec<u64>)>, QueryError> {
        Ok(self.request_stats(filter, Some(step_ns)).await?.counts())
    }

    /// The duration histogram of the requests that match `filter`.
    pub async fn histogram(&self, filter: &RequestFilter) -> Result<Histogram, QueryError> {
        Ok(self.request_stats(filter, None).await?.histogram(None))
    }
}

/// Requests of a range per service, operation and time slot, from which the
/// RED figures, series and histograms are drawn without reading again.
#[derive(Debug)]
pub struct RequestStats {
    groups: RequestSamples,
    start_ns: i64,
    step_ns: i64,
    slots: usize,
}

impl RequestStats {
    fn merged<'a>(samples: impl Iterator<Item = &'a Samples>) -> Samples {
        let mut all = Samples::default();
        for s in samples {
            all.merge(s);
        }
        all
    }

    /// Every service's figures, sorted by name.
    pub fn services(&self) -> Vec<RedRow> {
        self.groups
            .iter()
            .map(|(service, operations)| RedRow {
                service: service.clone(),
                operation: None,
                stats: Self::merged(operations.values().flat_map(BTreeMap::values)).summary(),
            })
            .collect()
    }

    /// One service's figures per operation, sorted by name.
    pub fn operations(&self, service: &str) -> Vec<RedRow> {
        self.groups
            .get(service)
            .into_iter()
            .flatten()
            .map(|(operation, slots)| RedRow {
                service: service.to_owned(),
                operation: Some(operation.clone()),
                stats: Self::merged(slots.values()).summary(),
            })
            .collect()
    }

    /// Figures per time slot over every request counted.
    pub fn series(&self) -> Vec<RedBucket> {
        let mut slots: Vec<Samples> = (0..self.slots).map(|_| Samples::default()).collect();
        for (index, samples) in self.groups.values().flat_map(BTreeMap::values).flatten() {
            if let Some(slot) = slots.get_mut(*index) {
                slot.merge(samples);
            }
        }
        slots
            .into_iter()
            .enumerate()
            .map(|(i, samples)| RedBucket {
                start_ns: self.start_ns + i as i64 * self.step_ns,
                stats: samples.summary(),
            })
            .collect()
    }

    /// Request counts per service per time slot.
    pub fn counts(&self) -> Vec<(String, Vec<u64>)> {
        self.groups
            .iter()
            .map(|(service, operations)| {
                let mut counts = vec![0; self.slots];
                for (index, samples) in operations.values().flatten() {
                    if let Some(count) = counts.get_mut(*index) {
                        *count += samples.count();
                    }
                }
                (service.clone(), counts)
            })
            .collect()
    }

    /// The duration histogram of one operation, or of every request counted.
    pub fn histogram(&self, operation: Option<&str>) -> Histogram {
        let all = Self::merged(
            self.groups
                .values()
                .flat_map(|operations| operations.iter())
                .filter(|(name, _)| operation.is_none_or(|o| o == name.as_str()))
                .flat_map(|(_, slots)| slots.values()),
        );
        let counts = all.histogram_counts();
        histogram_from_counts(&histogram_bounds(), &counts, all.summary())
    }
}

/// A histogram from its counts per bucket of `bounds`, from the first
/// non-empty bucket to the last.
fn histogram_from_counts(bounds: &[i64], counts: &[u64], stats: LatencySummary) -> Histogram {
    let (Some(first), Some(last)) = (
        counts.iter().position(|&c| c > 0),
        counts.iter().rposition(|&c| c > 0),
    ) else {
        return Histogram {
            buckets: Vec::new(),
            stats,
        };
    };
    Histogram {
        buckets: (first..=last)
            .map(|i| HistogramBucket {
                min_ns: if i == 0 { 0 } else { bounds[i - 1] },
                max_ns: bounds.get(i).copied(),
                count: counts[i],
            })
            .collect(),
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_percentile_cont() {
        let values = [10, 20, 30, 40, 50];
        assert_eq!(percentile(&values, 0.5), 30.0);
        assert_eq!(percentile(&values, 0.95), 48.0);
        assert_eq!(percentile(&values, 0.99), 49.6);
        assert_eq!(percentile(&[7], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn windows_follow_hour_boundaries_and_cover_the_range() {
        let h = HOUR_NS;
        assert_eq!(
            hour_windows(h / 2, h / 2 + 10, 1),
            vec![(h / 2, h / 2 + 10)]
        );
        assert_eq!(
            hour_windows(h / 2, 2 * h + 5, 1),
            vec![(h / 2, h - 1), (h, 2 * h - 1), (2 * h, 2 * h + 5)]
        );
        assert_eq!(
            hour_windows(h, 2 * h, 1),
            vec![(h, 2 * h - 1), (2 * h, 2 * h)]
        );
        assert_eq!(
            hour_windows(0, 24 * h, 6),
            vec![
                (0, 6 * h - 1),
                (6 * h, 12 * h - 1),
                (12 * h, 18 * h - 1),
                (18 * h, 24 * h - 1),
                (24 * h, 24 * h)
            ]
        );
    }

    #[test]
    fn histogram_bounds_step_one_two_five() {
        let bounds = histogram_bounds();
        assert_eq!(&bounds[..4], &[1_000, 2_000, 5_000, 10_000]);
        assert_eq!(bounds.last(), Some(&500_000_000_000));
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
    }
}
