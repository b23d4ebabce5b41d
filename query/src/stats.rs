//! Aggregates over spans, computed live from the store for any time range: the
//! service map with per-edge statistics, RED metrics (rate, errors, duration)
//! per service and operation, and latency histograms.
//!
//! Percentiles are exact (`percentile_cont`, linear interpolation, the same as
//! `SELECT percentile_cont(duration_ns, 0.95)` over `/api/sql` or DuckDB's
//! `quantile_cont`), so a figure here can always be checked with SQL.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::JoinType;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions_aggregate::expr_fn::{count, percentile_cont, sum};
use datafusion::functions_nested::expr_fn::cardinality;
use datafusion::logical_expr::{Expr, when};
use datafusion::prelude::{DataFrame, cast, col, in_list, lit};
use weft_schema::spans as s;

use crate::engine::{QueryEngine, QueryError};
use crate::traces::in_range;

/// Request count, errors and exact duration percentiles of a set of spans.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub errors: u64,
    pub p50_ns: f64,
    pub p95_ns: f64,
    pub p99_ns: f64,
}

impl LatencySummary {
    pub fn error_rate(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.errors as f64 / self.count as f64 }
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

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Call => "call",
            EdgeKind::Link => "link",
            EdgeKind::Peer => "peer",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [EdgeKind::Call, EdgeKind::Link, EdgeKind::Peer].into_iter().find(|k| k.as_str() == text)
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
    in_list(col(s::KIND), vec![lit("SERVER"), lit("CONSUMER")], false).or(col(s::PARENT_SPAN_ID).is_null())
}

fn is_error(status_column: &str) -> Expr {
    col(status_column).eq(lit("ERROR"))
}

/// count, errors, p50, p95, p99 of `latency_ns` (in this order).
fn summary_aggregates(latency_ns: Expr, error: Expr) -> Vec<Expr> {
    let latency = cast(latency_ns, DataType::Float64);
    let percentile = |p: f64, name: &str| percentile_cont(latency.clone().sort(true, false), lit(p)).alias(name);
    vec![
        count(lit(1)).alias("count"),
        sum(cast(error, DataType::Int64)).alias("errors"),
        percentile(0.5, "p50"),
        percentile(0.95, "p95"),
        percentile(0.99, "p99"),
    ]
}

fn int_at(batch: &RecordBatch, index: usize, row: usize) -> u64 {
    let array = batch.column(index).as_primitive::<Int64Type>();
    if array.is_null(row) { 0 } else { u64::try_from(array.value(row)).unwrap_or_default() }
}

fn float_at(batch: &RecordBatch, index: usize, row: usize) -> f64 {
    let array = batch.column(index).as_primitive::<Float64Type>();
    if array.is_null(row) { 0.0 } else { array.value(row) }
}

fn text_at(batch: &RecordBatch, index: usize, row: usize) -> Option<String> {
    let array = batch.column(index).as_string::<i32>();
    (!array.is_null(row)).then(|| array.value(row).to_owned())
}

/// Reads the five columns written by [`summary_aggregates`], starting at `first`.
fn summary_at(batch: &RecordBatch, first: usize, row: usize) -> LatencySummary {
    LatencySummary {
        count: int_at(batch, first, row),
        errors: int_at(batch, first + 1, row),
        p50_ns: float_at(batch, first + 2, row),
        p95_ns: float_at(batch, first + 3, row),
        p99_ns: float_at(batch, first + 4, row),
    }
}

impl QueryEngine {
    async fn spans_in(&self, start_ns: i64, end_ns: i64) -> Result<DataFrame, QueryError> {
        Ok(self.session()?.table("spans").await?.filter(in_range(start_ns, end_ns))?)
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<DataFrame, QueryError> {
        let mut condition = is_request();
        if let Some(service) = &filter.service {
            condition = condition.and(col(s::SERVICE_NAME).eq(lit(service.as_str())));
        }
        if let Some(operation) = &filter.operation {
            condition = condition.and(col(s::NAME).eq(lit(operation.as_str())));
        }
        Ok(self.spans_in(filter.start_ns, filter.end_ns).await?.filter(condition)?)
    }

    /// Every edge of the service map in a time range, sorted by `from`, `to`, kind.
    pub async fn service_map(&self, start_ns: i64, end_ns: i64) -> Result<Vec<Edge>, QueryError> {
        let mut edges = self.call_and_peer_edges(start_ns, end_ns).await?;
        edges.extend(self.link_edges(start_ns, end_ns).await?);
        edges.sort_by(|a, b| (&a.from, &a.to, a.kind.as_str()).cmp(&(&b.from, &b.to, b.kind.as_str())));
        Ok(edges)
    }

    /// Client and producer spans joined to their server and consumer children.
    async fn call_and_peer_edges(&self, start_ns: i64, end_ns: i64) -> Result<Vec<Edge>, QueryError> {
        let spans = self.spans_in(start_ns, end_ns).await?;
        let callers = spans
            .clone()
            .filter(in_list(col(s::KIND), vec![lit("CLIENT"), lit("PRODUCER")], false))?
            .select(vec![
                col(s::TRACE_ID).alias("caller_trace"),
                col(s::SPAN_ID).alias("caller_span"),
                col(s::SERVICE_NAME).alias("caller_service"),
                col(s::KIND).alias("caller_kind"),
                col(s::DURATION_NS).alias("caller_duration"),
                col(s::STATUS_CODE).alias("caller_status"),
                coalesce(vec![col("peer_service"), col("server_address")]).alias("peer"),
            ])?;
        let callees = spans
            .clone()
            .filter(in_list(col(s::KIND), vec![lit("SERVER"), lit("CONSUMER")], false).and(col(s::PARENT_SPAN_ID).is_not_null()))?
            .select(vec![
                col(s::TRACE_ID).alias("callee_trace"),
                col(s::PARENT_SPAN_ID).alias("callee_parent"),
                col(s::SERVICE_NAME).alias("callee_service"),
                col(s::DURATION_NS).alias("callee_duration"),
                col(s::STATUS_CODE).alias("callee_status"),
            ])?;
        // A client span with no server child whose peer is an instrumented
        // service is still a call to that service (it failed fast, timed out,
        // or the callee's spans are lost): it belongs on that edge, not on a
        // peer edge of its own.
        let services = spans
            .aggregate(vec![col(s::SERVICE_NAME)], vec![])?
            .select(vec![col(s::SERVICE_NAME).alias("known_service")])?;
        let matched = col("callee_service").is_not_null();
        let answered = matched.clone().and(col("callee_service").not_eq(col("caller_service")));
        let unanswered = col("callee_service").is_null().and(col("caller_kind").eq(lit("CLIENT"))).and(col("peer").is_not_null());
        let to_service = unanswered.clone().and(col("known_service").is_not_null()).and(col("peer").not_eq(col("caller_service")));
        let to_peer = unanswered.and(col("known_service").is_null());
        let latency = when(col("caller_kind").eq(lit("CLIENT")), col("caller_duration")).otherwise(col("callee_duration"))?;
        let error = is_error("caller_status").or(coalesce(vec![is_error("callee_status"), lit(false)]));
        let frame = callers
            .join(callees, JoinType::Left, &["caller_trace", "caller_span"], &["callee_trace", "callee_parent"], None)?
            .join(services, JoinType::Left, &["peer"], &["known_service"], None)?
            .filter(answered.or(to_service).or(to_peer.clone()))?
            .select(vec![
                col("caller_service"),
                when(matched, col("callee_service")).otherwise(col("peer"))?.alias("to"),
                when(to_peer, lit(EdgeKind::Peer.as_str())).otherwise(lit(EdgeKind::Call.as_str()))?.alias("edge_kind"),
                latency.alias("latency"),
                error.alias("error"),
            ])?
            .aggregate(vec![col("caller_service"), col("to"), col("edge_kind")], summary_aggregates(col("latency"), col("error")))?;
        self.read_edges(frame).await
    }

    /// Consumer spans that link to a producer span in another service without being its child.
    async fn link_edges(&self, start_ns: i64, end_ns: i64) -> Result<Vec<Edge>, QueryError> {
        let spans = self.spans_in(start_ns, end_ns).await?;
        let consumers = spans
            .clone()
            .filter(cardinality(col(s::LINKS)).gt(lit(0u64)))?
            .select(vec![
                col(s::PARENT_SPAN_ID).alias("consumer_parent"),
                col(s::SERVICE_NAME).alias("consumer_service"),
                col(s::DURATION_NS).alias("consumer_duration"),
                col(s::STATUS_CODE).alias("consumer_status"),
                col(s::LINKS),
            ])?
            .unnest_columns(&[s::LINKS])?
            .select(vec![
                col("consumer_parent"),
                col("consumer_service"),
                col("consumer_duration"),
                col("consumer_status"),
                get_field(col(s::LINKS), s::link::TRACE_ID).alias("link_trace"),
                get_field(col(s::LINKS), s::link::SPAN_ID).alias("link_span"),
            ])?;
        let producers = spans.select(vec![
            col(s::TRACE_ID).alias("producer_trace"),
            col(s::SPAN_ID).alias("producer_span"),
            col(s::SERVICE_NAME).alias("producer_service"),
        ])?;
        let not_child = col("consumer_parent").is_null().or(col("consumer_parent").not_eq(col("link_span")));
        let frame = consumers
            .join(producers, JoinType::Inner, &["link_trace", "link_span"], &["producer_trace", "producer_span"], None)?
            .filter(col("producer_service").not_eq(col("consumer_service")).and(not_child))?
            .select(vec![
                col("producer_service"),
                col("consumer_service").alias("to"),
                lit(EdgeKind::Link.as_str()).alias("edge_kind"),
                col("consumer_duration").alias("latency"),
                is_error("consumer_status").alias("error"),
            ])?
            .aggregate(vec![col("producer_service"), col("to"), col("edge_kind")], summary_aggregates(col("latency"), col("error")))?;
        self.read_edges(frame).await
    }

    async fn read_edges(&self, frame: DataFrame) -> Result<Vec<Edge>, QueryError> {
        let mut edges = Vec::new();
        for batch in self.collect(frame).await? {
            for row in 0..batch.num_rows() {
                let (Some(from), Some(to), Some(kind)) = (text_at(&batch, 0, row), text_at(&batch, 1, row), text_at(&batch, 2, row)) else {
                    continue;
                };
                let kind = EdgeKind::parse(&kind).ok_or_else(|| QueryError::Invalid(format!("unknown edge kind {kind}")))?;
                edges.push(Edge { from, to, kind, stats: summary_at(&batch, 3, row) });
            }
        }
        Ok(edges)
    }

    /// RED figures over the whole range: per service when `filter.service` is
    /// `None`, else per operation of that service. Sorted by name.
    pub async fn red_summary(&self, filter: &RequestFilter) -> Result<Vec<RedRow>, QueryError> {
        let by_operation = filter.service.is_some();
        let mut groups = vec![col(s::SERVICE_NAME)];
        if by_operation {
            groups.push(col(s::NAME));
        }
        let first = groups.len();
        let frame = self
            .requests(filter)
            .await?
            .aggregate(groups.clone(), summary_aggregates(col(s::DURATION_NS), is_error(s::STATUS_CODE)))?
            .sort(groups.into_iter().map(|g| g.sort(true, false)).collect())?;
        let mut rows = Vec::new();
        for batch in self.collect(frame).await? {
            for row in 0..batch.num_rows() {
                rows.push(RedRow {
                    service: text_at(&batch, 0, row).unwrap_or_default(),
                    operation: if by_operation { text_at(&batch, 1, row) } else { None },
                    stats: summary_at(&batch, first, row),
                });
            }
        }
        Ok(rows)
    }

    /// RED figures per time bucket of `step_ns`, from `filter.start_ns`; every
    /// bucket of the range is present, empty ones with zero counts.
    pub async fn red_series(&self, filter: &RequestFilter, step_ns: i64) -> Result<Vec<RedBucket>, QueryError> {
        if step_ns <= 0 {
            return Err(QueryError::Invalid("the step must be positive".into()));
        }
        let bucket = (cast(col(s::START_TIME), DataType::Int64) - lit(filter.start_ns)) / lit(step_ns);
        let frame = self
            .requests(filter)
            .await?
            .select(vec![bucket.alias("bucket"), col(s::DURATION_NS), col(s::STATUS_CODE)])?
            .aggregate(vec![col("bucket")], summary_aggregates(col(s::DURATION_NS), is_error(s::STATUS_CODE)))?;
        let buckets = usize::try_from((filter.end_ns - filter.start_ns) / step_ns + 1).unwrap_or(1);
        let mut series: Vec<RedBucket> = (0..buckets)
            .map(|i| RedBucket { start_ns: filter.start_ns + i as i64 * step_ns, stats: LatencySummary::default() })
            .collect();
        for batch in self.collect(frame).await? {
            let index = batch.column(0).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                if let Some(slot) = usize::try_from(index.value(row)).ok().and_then(|i| series.get_mut(i)) {
                    slot.stats = summary_at(&batch, 1, row);
                }
            }
        }
        Ok(series)
    }

    /// Request counts per service per time bucket of `step_ns` (for
    /// sparklines): one scan for every service, every bucket present.
    pub async fn request_counts(&self, filter: &RequestFilter, step_ns: i64) -> Result<Vec<(String, Vec<u64>)>, QueryError> {
        if step_ns <= 0 {
            return Err(QueryError::Invalid("the step must be positive".into()));
        }
        let bucket = (cast(col(s::START_TIME), DataType::Int64) - lit(filter.start_ns)) / lit(step_ns);
        let frame = self
            .requests(filter)
            .await?
            .select(vec![col(s::SERVICE_NAME), bucket.alias("bucket")])?
            .aggregate(vec![col(s::SERVICE_NAME), col("bucket")], vec![count(lit(1)).alias("count")])?;
        let buckets = usize::try_from((filter.end_ns - filter.start_ns) / step_ns + 1).unwrap_or(1);
        let mut series: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
        for batch in self.collect(frame).await? {
            let index = batch.column(1).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                let Some(service) = text_at(&batch, 0, row) else { continue };
                let counts = series.entry(service).or_insert_with(|| vec![0; buckets]);
                if let Some(slot) = usize::try_from(index.value(row)).ok().and_then(|i| counts.get_mut(i)) {
                    *slot = int_at(&batch, 2, row);
                }
            }
        }
        Ok(series.into_iter().collect())
    }

    /// The duration histogram of the requests that match `filter`.
    pub async fn histogram(&self, filter: &RequestFilter) -> Result<Histogram, QueryError> {
        let bounds = histogram_bounds();
        let mut case = when(col(s::DURATION_NS).lt(lit(bounds[0])), lit(0i64));
        for (i, bound) in bounds.iter().enumerate().skip(1) {
            case.when(col(s::DURATION_NS).lt(lit(*bound)), lit(i as i64));
        }
        let bucket = case.otherwise(lit(bounds.len() as i64))?;
        let requests = self.requests(filter).await?;
        let totals = requests.clone().aggregate(vec![], summary_aggregates(col(s::DURATION_NS), is_error(s::STATUS_CODE)))?;
        let counts = requests.select(vec![bucket.alias("bucket")])?.aggregate(vec![col("bucket")], vec![count(lit(1)).alias("count")])?;
        let mut histogram = Histogram::default();
        for batch in self.collect(totals).await? {
            if batch.num_rows() > 0 {
                histogram.stats = summary_at(&batch, 0, 0);
            }
        }
        let mut per_bucket = vec![0u64; bounds.len() + 1];
        for batch in self.collect(counts).await? {
            for row in 0..batch.num_rows() {
                let index = batch.column(0).as_primitive::<Int64Type>().value(row);
                if let Some(slot) = usize::try_from(index).ok().and_then(|i| per_bucket.get_mut(i)) {
                    *slot = int_at(&batch, 1, row);
                }
            }
        }
        let (Some(first), Some(last)) = (per_bucket.iter().position(|&c| c > 0), per_bucket.iter().rposition(|&c| c > 0)) else {
            return Ok(histogram);
        };
        histogram.buckets = (first..=last)
            .map(|i| HistogramBucket {
                min_ns: if i == 0 { 0 } else { bounds[i - 1] },
                max_ns: bounds.get(i).copied(),
                count: per_bucket[i],
            })
            .collect();
        Ok(histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_step_one_two_five() {
        let bounds = histogram_bounds();
        assert_eq!(&bounds[..4], &[1_000, 2_000, 5_000, 10_000]);
        assert_eq!(bounds.last(), Some(&500_000_000_000));
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
    }
}
