//! Interservice insights: what the spans of a time range say about how
//! services talk to each other — retries, circuit breakers, load balancing,
//! versions side by side, asynchronous messaging, distributed transactions,
//! encryption, and per-edge traffic.
//!
//! Everything comes from OpenTelemetry semantic-convention attributes (and
//! the transaction attributes documented in README), so it works on any data
//! that follows them. The spans of the range are read once, narrow columns
//! only, and every view is computed from that one read; each figure names the
//! rule that made it in [`rules`], and each view keeps example trace ids.

use std::collections::{BTreeMap, HashMap, HashSet};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_nested::expr_fn::cardinality;
use datafusion::prelude::{Expr, cast, col, lit};
use serde::Serialize;
use weft_schema::spans as s;

use crate::engine::{QueryEngine, QueryError};
use crate::stats::{histogram_bounds, percentile};

/// The thresholds behind every verdict, in one place so README can cite them.
pub mod rules {
    /// A failed client span with no server span below it, shorter than this,
    /// failed fast (a breaker refused it, or the connection was refused).
    pub const FAST_FAILURE_NS: i64 = 5_000_000;
    /// Retries are a storm when, in the latest time bucket, at least this share
    /// of attempts are retries…
    pub const STORM_RETRY_SHARE: f64 = 0.3;
    /// …and there are at least this many of them.
    pub const STORM_MIN_RETRIES: u64 = 10;
    /// Fewer requests than this make no verdict about an instance or version.
    pub const MIN_REQUESTS: u64 = 20;
    /// An instance or version is slower when its p95 is this many times the
    /// others' (and at least [`MIN_LATENCY_GAP_NS`] more).
    pub const SLOW_RATIO: f64 = 1.5;
    pub const MIN_LATENCY_GAP_NS: f64 = 5_000_000.0;
    /// An instance or version errs more when its error rate is this much higher
    /// (absolute) and the difference is significant (two-proportion z ≥ 3).
    pub const ERROR_RATE_GAP: f64 = 0.02;
    pub const ERROR_Z: f64 = 3.0;
    /// A consumer falls behind when the queue lag's p95 in the last third of the
    /// range is this many times that of the first third (and over 100 ms).
    pub const LAG_GROWTH: f64 = 2.0;
    pub const MIN_LAG_NS: f64 = 100_000_000.0;
    /// Time buckets of the series.
    pub const BUCKETS: usize = 12;
    /// Example traces kept per entry.
    pub const EXAMPLES: usize = 5;
}

/// A caller and a callee: a service, or an uninstrumented peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EdgeKey {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Insights {
    pub start_ns: i64,
    pub end_ns: i64,
    pub retries: Vec<RetryInsight>,
    pub breakers: Vec<BreakerInsight>,
    pub instances: Vec<InstanceInsight>,
    pub versions: Vec<VersionInsight>,
    #[serde(rename = "async")]
    pub messaging: Vec<AsyncInsight>,
    pub transactions: Vec<TransactionInsight>,
    pub encryption: Vec<EncryptionInsight>,
    pub edges: Vec<EdgeInsight>,
}

impl Insights {
    /// Only what involves `service` (as caller, callee or owner).
    pub fn for_service(mut self, service: &str) -> Self {
        let touches = |edge: &EdgeKey| edge.from == service || edge.to == service;
        self.retries.retain(|r| touches(&r.edge));
        self.breakers.retain(|b| touches(&b.edge));
        self.instances.retain(|i| i.service == service);
        self.versions.retain(|v| v.service == service);
        self.messaging.retain(|a| touches(&a.edge));
        self.transactions.retain(|t| t.service == service);
        self.encryption.retain(|e| touches(&e.edge));
        self.edges.retain(|e| touches(&e.edge));
        self
    }
}

/// One point of a series: the bucket's start and a value.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub time_ns: i64,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryInsight {
    #[serde(flatten)]
    pub edge: EdgeKey,
    /// `url.template`, `http.route` of the callee, `rpc.method` or the span name.
    pub route: String,
    pub method: Option<String>,
    /// Client spans on this edge and route, retries included.
    pub attempts: u64,
    /// Attempts that were retries: `http.request.resend_count` ≥ 1, or a
    /// sibling to the same callee and route after a failed one.
    pub retries: u64,
    /// Calls (first attempts) that needed at least one retry.
    pub retried_calls: u64,
    /// `retries / attempts`.
    pub retry_share: f64,
    /// Extra load the retries caused: `retries / (attempts - retries)`.
    pub extra_load: f64,
    /// Retries of POST/PATCH calls without an idempotency key attribute.
    pub non_idempotent_retries: u64,
    pub storm: bool,
    /// Retries per bucket.
    pub series: Vec<Point>,
    pub example_traces: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakerEvent {
    pub time_ns: i64,
    pub name: Option<String>,
    pub state: String,
    pub previous_state: Option<String>,
    pub trace_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenPeriod {
    pub start_ns: i64,
    pub end_ns: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakerInsight {
    #[serde(flatten)]
    pub edge: EdgeKey,
    pub calls: u64,
    pub errors: u64,
    /// Failed client spans with no server span below them, shorter than
    /// [`rules::FAST_FAILURE_NS`].
    pub fast_failures: u64,
    pub fast_failure_p50_ns: f64,
    /// `circuit_breaker.state_change` events on this edge's spans, in time order.
    pub state_changes: Vec<BreakerEvent>,
    pub open_periods: Vec<OpenPeriod>,
    pub open_ns: i64,
    pub example_traces: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub rate_per_sec: f64,
    pub p50_ns: f64,
    pub p95_ns: f64,
    pub p99_ns: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStats {
    pub instance: String,
    pub share: f64,
    #[serde(flatten)]
    pub latencies: Latencies,
    pub example_traces: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceInsight {
    pub service: String,
    pub instances: Vec<InstanceStats>,
    /// Largest share over the even share (1.0: perfectly even; 2.0: one
    /// instance takes twice its part).
    pub imbalance: f64,
    pub outlier: Option<String>,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistogramBar {
    /// Upper bound of the bucket in ns (the last bucket has none).
    pub le_ns: Option<i64>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionStats {
    pub version: String,
    #[serde(flatten)]
    pub latencies: Latencies,
    pub histogram: Vec<HistogramBar>,
    pub example_traces: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionInsight {
    pub service: String,
    /// The version with the most requests, which the others are held against.
    pub baseline: String,
    pub versions: Vec<VersionStats>,
    /// `"regression"` or `"no difference"`.
    pub verdict: String,
    pub regression: Option<String>,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AsyncInsight {
    #[serde(flatten)]
    pub edge: EdgeKey,
    pub destination: Option<String>,
    pub system: Option<String>,
    pub messages: u64,
    pub consumer_errors: u64,
    /// Consumer start − producer end.
    pub lag_p50_ns: f64,
    pub lag_p95_ns: f64,
    /// Lag p95 per bucket.
    pub lag_series: Vec<Point>,
    pub falling_behind: bool,
    pub example_traces: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransactionInsight {
    pub service: String,
    /// `transaction.name`.
    pub name: String,
    pub total: u64,
    /// Count per `transaction.outcome`.
    pub outcomes: BTreeMap<String, u64>,
    /// Count per `transaction.failed_step`.
    pub failed_steps: BTreeMap<String, u64>,
    /// Transactions whose steps were undone.
    pub compensated: u64,
    /// From the first compensating span's start to the last one's end.
    pub compensation_p50_ns: f64,
    pub compensation_p95_ns: f64,
    /// A step succeeded, a later one failed, and no compensation followed (or
    /// a compensation itself failed).
    pub half_done: u64,
    pub compensated_traces: Vec<String>,
    pub half_done_traces: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EncryptionInsight {
    #[serde(flatten)]
    pub edge: EdgeKey,
    pub calls: u64,
    pub tls: u64,
    pub plain: u64,
    /// Calls whose attributes say neither.
    pub unknown: u64,
    /// `tls / (tls + plain)`, when either is known.
    pub tls_share: Option<f64>,
    pub plain_text: bool,
    pub example_traces: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EdgeInsight {
    #[serde(flatten)]
    pub edge: EdgeKey,
    /// Calls per protocol: `http`, `grpc`, `messaging`, `graphql`, `db`, `other`.
    pub protocols: BTreeMap<String, u64>,
    pub synchronous: bool,
    #[serde(flatten)]
    pub latencies: Latencies,
    pub success_rate: f64,
    pub histogram: Vec<HistogramBar>,
    pub request_bytes_avg: Option<f64>,
    pub response_bytes_avg: Option<f64>,
    pub example_traces: Vec<String>,
}

/// The columns one span contributes.
#[derive(Debug, Default)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    kind: String,
    name: String,
    service: String,
    version: Option<String>,
    instance: Option<String>,
    start_ns: i64,
    duration_ns: i64,
    error: bool,
    method: Option<String>,
    route: Option<String>,
    url_full: Option<String>,
    url_template: Option<String>,
    url_scheme: Option<String>,
    rpc_system: Option<String>,
    rpc_method: Option<String>,
    messaging_system: Option<String>,
    destination: Option<String>,
    peer: Option<String>,
    db_system: Option<String>,
    graphql: bool,
    tls: bool,
    resend_count: i64,
    idempotency_key: bool,
    request_bytes: Option<f64>,
    response_bytes: Option<f64>,
    tx_name: Option<String>,
    tx_outcome: Option<String>,
    tx_failed_step: Option<String>,
    tx_step: Option<String>,
    compensation: bool,
}

impl Span {
    fn end_ns(&self) -> i64 {
        self.start_ns + self.duration_ns
    }
    fn is_outgoing(&self) -> bool {
        matches!(self.kind.as_str(), "CLIENT" | "PRODUCER")
    }
    fn is_incoming(&self) -> bool {
        matches!(self.kind.as_str(), "SERVER" | "CONSUMER")
    }
    fn protocol(&self) -> &'static str {
        if self.graphql {
            "graphql"
        } else if self.messaging_system.is_some() {
            "messaging"
        } else if self.rpc_system.as_deref() == Some("grpc") {
            "grpc"
        } else if self.db_system.is_some() {
            "db"
        } else if self.method.is_some() || self.url_full.is_some() {
            "http"
        } else if self.rpc_system.is_some() {
            "grpc"
        } else {
            "other"
        }
    }
    /// `Some(true)` over TLS, `Some(false)` in plain text, `None` unknown.
    fn encrypted(&self) -> Option<bool> {
        if self.tls {
            return Some(true);
        }
        let scheme = self.url_scheme.clone().or_else(|| {
            self.url_full
                .as_deref()
                .and_then(|u| u.split_once("://"))
                .map(|(scheme, _)| scheme.to_ascii_lowercase())
        })?;
        match scheme.as_str() {
            "https" | "wss" | "grpcs" => Some(true),
            "http" | "ws" => Some(false),
            _ => None,
        }
    }
}

/// Text columns, read as `Utf8` whatever the file stores.
const TEXT_COLUMNS: &[(&str, &str)] = &[
    ("trace_id", s::TRACE_ID),
    ("span_id", s::SPAN_ID),
    ("parent", s::PARENT_SPAN_ID),
    ("kind", s::KIND),
    ("name", s::NAME),
    ("service", s::SERVICE_NAME),
    ("status", s::STATUS_CODE),
    ("version", "service_version"),
    ("instance", "service_instance_id"),
    ("method", "http_request_method"),
    ("route", "http_route"),
    ("url_full", "url_full"),
    ("rpc_system", "rpc_system"),
    ("rpc_method", "rpc_method"),
    ("messaging_system", "messaging_system"),
    ("destination", "messaging_destination_name"),
    ("peer_service", "peer_service"),
    ("server_address", "server_address"),
    ("db_system", "db_system"),
];

/// Span attributes read from the map (their values are text there).
const ATTRIBUTE_COLUMNS: &[(&str, &str)] = &[
    ("url_template", "url.template"),
    ("url_scheme", "url.scheme"),
    ("graphql", "graphql.operation.type"),
    ("tls_version", "tls.protocol.version"),
    ("tls_established", "tls.established"),
    ("tls_cipher", "tls.cipher"),
    ("resend_count", "http.request.resend_count"),
    ("idempotency_key", "http.request.header.idempotency-key"),
    ("idempotency_key_plain", "idempotency_key"),
    ("request_bytes", "http.request.body.size"),
    ("response_bytes", "http.response.body.size"),
    ("tx_name", "transaction.name"),
    ("tx_outcome", "transaction.outcome"),
    ("tx_failed_step", "transaction.failed_step"),
    ("tx_step", "transaction.step"),
    ("tx_compensation", "transaction.compensation"),
];

fn text(batch: &RecordBatch, name: &str) -> Option<StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>().cloned())
}

fn cell(array: &Option<StringArray>, row: usize) -> Option<String> {
    let array = array.as_ref()?;
    (!array.is_null(row)).then(|| array.value(row).to_owned())
}

impl QueryEngine {
    /// Every view over `[start_ns, end_ns]`.
    pub async fn insights(&self, start_ns: i64, end_ns: i64) -> Result<Insights, QueryError> {
        let spans = self.insight_spans(start_ns, end_ns).await?;
        let links = self.insight_links(start_ns, end_ns).await?;
        let events = self.breaker_events(start_ns, end_ns).await?;
        Ok(compute(spans, &links, events, start_ns, end_ns))
    }

    async fn insight_spans(&self, start_ns: i64, end_ns: i64) -> Result<Vec<Span>, QueryError> {
        let mut columns: Vec<Expr> = TEXT_COLUMNS
            .iter()
            .map(|(alias, column)| cast(col(*column), DataType::Utf8).alias(*alias))
            .collect();
        columns.extend(ATTRIBUTE_COLUMNS.iter().map(|(alias, key)| {
            cast(get_field(col(s::ATTRIBUTES), *key), DataType::Utf8).alias(*alias)
        }));
        columns.push(cast(col(s::START_TIME), DataType::Int64).alias("start_ns"));
        columns.push(cast(col(s::DURATION_NS), DataType::Int64).alias("duration_ns"));
        let frame = self.spans_in(start_ns, end_ns).await?.select(columns)?;
        let mut spans = Vec::new();
        for batch in self.collect(frame).await? {
            let texts: HashMap<&str, Option<StringArray>> = TEXT_COLUMNS
                .iter()
                .chain(ATTRIBUTE_COLUMNS)
                .map(|(alias, _)| (*alias, text(&batch, alias)))
                .collect();
            let get = |name: &str, row: usize| texts.get(name).and_then(|a| cell(a, row));
            let int = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_primitive_opt::<Int64Type>().cloned())
            };
            let (starts, durations) = (int("start_ns"), int("duration_ns"));
            for row in 0..batch.num_rows() {
                let number = |name: &str| get(name, row).and_then(|v| v.parse::<f64>().ok());
                let (Some(trace_id), Some(span_id)) = (get("trace_id", row), get("span_id", row))
                else {
                    continue;
                };
                spans.push(Span {
                    trace_id,
                    span_id,
                    parent: get("parent", row).filter(|p| !p.is_empty()),
                    kind: get("kind", row).unwrap_or_default(),
                    name: get("name", row).unwrap_or_default(),
                    service: get("service", row).unwrap_or_default(),
                    version: get("version", row),
                    instance: get("instance", row),
                    start_ns: starts.as_ref().map_or(0, |a| a.value(row)),
                    duration_ns: durations.as_ref().map_or(0, |a| a.value(row)),
                    error: get("status", row).as_deref() == Some("ERROR"),
                    method: get("method", row),
                    route: get("route", row),
                    url_full: get("url_full", row),
                    url_template: get("url_template", row),
                    url_scheme: get("url_scheme", row).map(|s| s.to_ascii_lowercase()),
                    rpc_system: get("rpc_system", row),
                    rpc_method: get("rpc_method", row),
                    messaging_system: get("messaging_system", row),
                    destination: get("destination", row),
                    peer: get("peer_service", row).or_else(|| get("server_address", row)),
                    db_system: get("db_system", row),
                    graphql: get("graphql", row).is_some(),
                    tls: get("tls_version", row).is_some()
                        || get("tls_cipher", row).is_some()
                        || get("tls_established", row).as_deref() == Some("true"),
                    resend_count: number("resend_count").unwrap_or(0.0) as i64,
                    idempotency_key: get("idempotency_key", row).is_some()
                        || get("idempotency_key_plain", row).is_some(),
                    request_bytes: number("request_bytes"),
                    response_bytes: number("response_bytes"),
                    tx_name: get("tx_name", row),
                    tx_outcome: get("tx_outcome", row),
                    tx_failed_step: get("tx_failed_step", row),
                    tx_step: get("tx_step", row),
                    compensation: get("tx_compensation", row).as_deref() == Some("true"),
                });
            }
        }
        Ok(spans)
    }

    /// `(trace, span) → (linked trace, linked span)` for spans with links.
    async fn insight_links(
        &self,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<((String, String), (String, String))>, QueryError> {
        let frame = self
            .spans_in(start_ns, end_ns)
            .await?
            .filter(cardinality(col(s::LINKS)).gt(lit(0u64)))?
            .select(vec![col(s::TRACE_ID), col(s::SPAN_ID), col(s::LINKS)])?
            .unnest_columns(&[s::LINKS])?
            .select(vec![
                cast(col(s::TRACE_ID), DataType::Utf8),
                cast(col(s::SPAN_ID), DataType::Utf8),
                cast(get_field(col(s::LINKS), s::link::TRACE_ID), DataType::Utf8),
                cast(get_field(col(s::LINKS), s::link::SPAN_ID), DataType::Utf8),
            ])?;
        let mut links = Vec::new();
        for batch in self.collect(frame).await? {
            let columns: Vec<_> = (0..4)
                .map(|i| batch.column(i).as_string_opt::<i32>().cloned())
                .collect();
            for row in 0..batch.num_rows() {
                let value = |i: usize| cell(&columns[i], row);
                if let (Some(a), Some(b), Some(c), Some(d)) =
                    (value(0), value(1), value(2), value(3))
                {
                    links.push(((a, b), (c, d)));
                }
            }
        }
        Ok(links)
    }

    /// `circuit_breaker.state_change` events: (trace, span, event).
    async fn breaker_events(
        &self,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<(String, String, BreakerEvent)>, QueryError> {
        let attribute = |key: &str| {
            cast(
                get_field(get_field(col(s::EVENTS), "attributes"), key),
                DataType::Utf8,
            )
        };
        let frame = self
            .spans_in(start_ns, end_ns)
            .await?
            .filter(cardinality(col(s::EVENTS)).gt(lit(0u64)))?
            .select(vec![col(s::TRACE_ID), col(s::SPAN_ID), col(s::EVENTS)])?
            .unnest_columns(&[s::EVENTS])?
            .filter(
                get_field(col(s::EVENTS), s::event::NAME).eq(lit("circuit_breaker.state_change")),
            )?
            .select(vec![
                cast(col(s::TRACE_ID), DataType::Utf8),
                cast(col(s::SPAN_ID), DataType::Utf8),
                cast(get_field(col(s::EVENTS), s::event::TIME), DataType::Int64),
                attribute("circuit_breaker.name"),
                attribute("circuit_breaker.state"),
                attribute("circuit_breaker.previous_state"),
            ])?;
        let mut events = Vec::new();
        for batch in self.collect(frame).await? {
            let texts: Vec<_> = [0, 1, 3, 4, 5]
                .iter()
                .map(|&i| batch.column(i).as_string_opt::<i32>().cloned())
                .collect();
            let times = batch.column(2).as_primitive_opt::<Int64Type>().cloned();
            for row in 0..batch.num_rows() {
                let value = |i: usize| cell(&texts[i], row);
                let (Some(trace), Some(span), Some(state)) = (value(0), value(1), value(3)) else {
                    continue;
                };
                events.push((
                    trace.clone(),
                    span,
                    BreakerEvent {
                        time_ns: times.as_ref().map_or(0, |t| t.value(row)),
                        name: value(2),
                        state,
                        previous_state: value(4),
                        trace_id: trace,
                    },
                ));
            }
        }
        Ok(events)
    }
}

fn summarize(durations: &mut [i64], errors: u64, seconds: f64) -> Latencies {
    durations.sort_unstable();
    let requests = durations.len() as u64;
    Latencies {
        requests,
        errors,
        error_rate: ratio(errors, requests),
        rate_per_sec: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        p50_ns: percentile(durations, 0.5),
        p95_ns: percentile(durations, 0.95),
        p99_ns: percentile(durations, 0.99),
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn histogram(durations: &[i64]) -> Vec<HistogramBar> {
    let bounds = histogram_bounds();
    let mut counts = vec![0u64; bounds.len() + 1];
    for &d in durations {
        let index = bounds.partition_point(|&b| b < d);
        counts[index] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| HistogramBar {
            le_ns: bounds.get(i).copied(),
            count,
        })
        .collect()
}

/// Two-proportion z statistic of `a` errors in `n` against `b` in `m`.
fn z_score(a: u64, n: u64, b: u64, m: u64) -> f64 {
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (p1, p2) = (ratio(a, n), ratio(b, m));
    let pooled = ratio(a + b, n + m);
    let se = (pooled * (1.0 - pooled) * (1.0 / n as f64 + 1.0 / m as f64)).sqrt();
    if se == 0.0 { 0.0 } else { (p1 - p2) / se }
}

fn push_example(examples: &mut Vec<String>, trace_id: &str) {
    if examples.len() < rules::EXAMPLES && !examples.iter().any(|t| t == trace_id) {
        examples.push(trace_id.to_owned());
    }
}

fn ms(ns: f64) -> String {
    format!("{:.1} ms", ns / 1e6)
}

struct Buckets {
    start_ns: i64,
    width_ns: i64,
}

impl Buckets {
    fn new(start_ns: i64, end_ns: i64) -> Self {
        let width_ns = ((end_ns - start_ns) / rules::BUCKETS as i64).max(1);
        Self { start_ns, width_ns }
    }
    fn index(&self, time_ns: i64) -> usize {
        (((time_ns - self.start_ns) / self.width_ns).max(0) as usize).min(rules::BUCKETS - 1)
    }
    fn time(&self, index: usize) -> i64 {
        self.start_ns + index as i64 * self.width_ns
    }
}

/// The spans of one range, indexed for walking calls.
struct Graph<'a> {
    spans: &'a [Span],
    children: HashMap<(&'a str, &'a str), Vec<usize>>,
    /// Consumers that link to a span without being its child.
    linked_by: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> Graph<'a> {
    fn new(spans: &'a [Span], links: &'a [((String, String), (String, String))]) -> Self {
        let mut children: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, span) in spans.iter().enumerate() {
            index.insert((&span.trace_id, &span.span_id), i);
            if let Some(parent) = &span.parent {
                children
                    .entry((&span.trace_id, parent))
                    .or_default()
                    .push(i);
            }
        }
        let mut linked_by: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for ((trace, span), (linked_trace, linked_span)) in links {
            let Some(&consumer) = index.get(&(trace.as_str(), span.as_str())) else {
                continue;
            };
            if spans[consumer].parent.as_deref() == Some(linked_span.as_str()) {
                continue;
            }
            linked_by
                .entry((linked_trace, linked_span))
                .or_default()
                .push(consumer);
        }
        Self {
            spans,
            children,
            linked_by,
        }
    }

    /// What answered an outgoing span: server or consumer spans of other
    /// services below it or linking to it.
    fn callees(&self, i: usize) -> Vec<usize> {
        let span = &self.spans[i];
        let key = (span.trace_id.as_str(), span.span_id.as_str());
        let other = |&&j: &&usize| {
            let callee = &self.spans[j];
            callee.is_incoming() && callee.service != span.service
        };
        let mut callees: Vec<usize> = self
            .children
            .get(&key)
            .into_iter()
            .flatten()
            .filter(other)
            .copied()
            .collect();
        if span.kind == "PRODUCER" {
            callees.extend(self.linked_by.get(&key).into_iter().flatten().filter(other));
        }
        callees
    }

    /// The edge an outgoing span is on, with the spans that answered it.
    fn edge(&self, i: usize) -> Option<(EdgeKey, Vec<usize>)> {
        let span = &self.spans[i];
        let callees = self.callees(i);
        let to = match callees.first() {
            Some(&j) => self.spans[j].service.clone(),
            None => span.peer.clone().filter(|peer| *peer != span.service)?,
        };
        Some((
            EdgeKey {
                from: span.service.clone(),
                to,
            },
            callees,
        ))
    }

    /// The route a call asks for.
    fn route(&self, i: usize, callees: &[usize]) -> String {
        let span = &self.spans[i];
        span.url_template
            .clone()
            .or_else(|| callees.first().and_then(|&j| self.spans[j].route.clone()))
            .or_else(|| span.rpc_method.clone())
            .unwrap_or_else(|| span.name.clone())
    }
}

#[derive(Default)]
struct EdgeAcc {
    durations: Vec<i64>,
    errors: u64,
    protocols: BTreeMap<String, u64>,
    request_bytes: (f64, u64),
    response_bytes: (f64, u64),
    tls: u64,
    plain: u64,
    examples: Vec<String>,
    error_examples: Vec<String>,
    plain_examples: Vec<String>,
    fast_failures: Vec<i64>,
    fast_examples: Vec<String>,
}

#[derive(Default)]
struct RetryAcc {
    method: Option<String>,
    attempts: u64,
    retries: u64,
    retried_calls: HashSet<(String, String)>,
    non_idempotent: u64,
    per_bucket: Vec<(u64, u64)>,
    examples: Vec<String>,
}

#[derive(Default)]
struct AsyncAcc {
    destination: Option<String>,
    system: Option<String>,
    lags: Vec<(i64, i64)>,
    consumer_errors: u64,
    examples: Vec<String>,
}

fn compute(
    spans: Vec<Span>,
    links: &[((String, String), (String, String))],
    events: Vec<(String, String, BreakerEvent)>,
    start_ns: i64,
    end_ns: i64,
) -> Insights {
    let seconds = (end_ns - start_ns) as f64 / 1e9;
    let buckets = Buckets::new(start_ns, end_ns);
    let graph = Graph::new(&spans, links);

    let mut edges: BTreeMap<EdgeKey, EdgeAcc> = BTreeMap::new();
    let mut retries: BTreeMap<(EdgeKey, String), RetryAcc> = BTreeMap::new();
    let mut messaging: BTreeMap<(EdgeKey, Option<String>), AsyncAcc> = BTreeMap::new();
    let mut span_edges: HashMap<(&str, &str), EdgeKey> = HashMap::new();
    // Siblings to the same callee and route: (trace, parent, edge, route) → attempts.
    let mut siblings: HashMap<(&str, &str, EdgeKey, String), Vec<usize>> = HashMap::new();

    for (i, span) in spans.iter().enumerate() {
        if !span.is_outgoing() {
            continue;
        }
        let Some((edge, callees)) = graph.edge(i) else {
            continue;
        };
        span_edges.insert((&span.trace_id, &span.span_id), edge.clone());
        if span.kind == "PRODUCER" {
            // A message read by several services is a call to each of them.
            let mut consumers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for &j in &callees {
                consumers.entry(&spans[j].service).or_default().push(j);
            }
            if consumers.is_empty() {
                add_call(edges.entry(edge).or_default(), span, &[], &spans);
            }
            for (service, readers) in consumers {
                let edge = EdgeKey {
                    from: span.service.clone(),
                    to: service.to_owned(),
                };
                add_call(
                    edges.entry(edge.clone()).or_default(),
                    span,
                    &readers,
                    &spans,
                );
                let acc = messaging
                    .entry((edge, span.destination.clone()))
                    .or_default();
                acc.destination = span.destination.clone();
                acc.system = span.messaging_system.clone();
                for &j in &readers {
                    let consumer = &spans[j];
                    acc.lags
                        .push((consumer.start_ns, consumer.start_ns - span.end_ns()));
                    acc.consumer_errors += u64::from(consumer.error);
                    push_example(&mut acc.examples, &consumer.trace_id);
                }
            }
            continue;
        }
        add_call(
            edges.entry(edge.clone()).or_default(),
            span,
            &callees,
            &spans,
        );

        let route = graph.route(i, &callees);
        let acc = retries
            .entry((edge.clone(), route.clone()))
            .or_insert_with(|| RetryAcc {
                per_bucket: vec![(0, 0); rules::BUCKETS],
                ..RetryAcc::default()
            });
        acc.attempts += 1;
        acc.method = acc.method.take().or_else(|| span.method.clone());
        acc.per_bucket[buckets.index(span.start_ns)].0 += 1;
        if span.resend_count > 0 {
            count_retry(acc, span, &buckets);
        } else if let Some(parent) = &span.parent {
            siblings
                .entry((&span.trace_id, parent, edge, route))
                .or_default()
                .push(i);
        }
    }
    // Repeated siblings without `resend_count`: an attempt after a failed one is a retry.
    for ((_, _, edge, route), mut attempts) in siblings {
        if attempts.len() < 2 {
            continue;
        }
        attempts.sort_by_key(|&i| spans[i].start_ns);
        let Some(acc) = retries.get_mut(&(edge, route)) else {
            continue;
        };
        for pair in attempts.windows(2) {
            if spans[pair[0]].error {
                count_retry(acc, &spans[pair[1]], &buckets);
            }
        }
    }

    let breakers = breaker_insights(&edges, events, &span_edges, end_ns);
    Insights {
        start_ns,
        end_ns,
        retries: retry_insights(retries, &buckets),
        breakers,
        instances: instance_insights(&spans, seconds),
        versions: version_insights(&spans, seconds),
        messaging: async_insights(messaging, &buckets, start_ns, end_ns),
        transactions: transaction_insights(&spans),
        encryption: encryption_insights(&edges),
        edges: edge_insights(edges, seconds),
    }
}

/// One call on an edge, as its caller saw it.
fn add_call(acc: &mut EdgeAcc, span: &Span, callees: &[usize], spans: &[Span]) {
    acc.durations.push(span.duration_ns);
    acc.errors += u64::from(span.error);
    *acc.protocols.entry(span.protocol().to_owned()).or_default() += 1;
    if let Some(bytes) = span.request_bytes {
        acc.request_bytes.0 += bytes;
        acc.request_bytes.1 += 1;
    }
    if let Some(bytes) = span.response_bytes {
        acc.response_bytes.0 += bytes;
        acc.response_bytes.1 += 1;
    }
    match span.encrypted() {
        Some(true) => acc.tls += 1,
        Some(false) => {
            acc.plain += 1;
            push_example(&mut acc.plain_examples, &span.trace_id);
        }
        None => {}
    }
    push_example(&mut acc.examples, &span.trace_id);
    if span.error {
        push_example(&mut acc.error_examples, &span.trace_id);
        let answered = callees.iter().any(|&j| spans[j].kind == "SERVER");
        if span.kind == "CLIENT" && !answered && span.duration_ns < rules::FAST_FAILURE_NS {
            acc.fast_failures.push(span.duration_ns);
            push_example(&mut acc.fast_examples, &span.trace_id);
        }
    }
}

fn count_retry(acc: &mut RetryAcc, span: &Span, buckets: &Buckets) {
    acc.retries += 1;
    acc.per_bucket[buckets.index(span.start_ns)].1 += 1;
    acc.retried_calls.insert((
        span.trace_id.clone(),
        span.parent.clone().unwrap_or_default(),
    ));
    let unsafe_method = matches!(span.method.as_deref(), Some("POST" | "PATCH"));
    if unsafe_method && !span.idempotency_key {
        acc.non_idempotent += 1;
    }
    push_example(&mut acc.examples, &span.trace_id);
}

fn retry_insights(
    retries: BTreeMap<(EdgeKey, String), RetryAcc>,
    buckets: &Buckets,
) -> Vec<RetryInsight> {
    let mut out: Vec<RetryInsight> = retries
        .into_iter()
        .filter(|(_, acc)| acc.retries > 0)
        .map(|((edge, route), acc)| {
            let latest = acc
                .per_bucket
                .iter()
                .rev()
                .find(|(attempts, _)| *attempts > 0)
                .copied()
                .unwrap_or_default();
            RetryInsight {
                edge,
                route,
                method: acc.method,
                attempts: acc.attempts,
                retries: acc.retries,
                retried_calls: acc.retried_calls.len() as u64,
                retry_share: ratio(acc.retries, acc.attempts),
                extra_load: ratio(acc.retries, acc.attempts.saturating_sub(acc.retries)),
                non_idempotent_retries: acc.non_idempotent,
                storm: latest.1 >= rules::STORM_MIN_RETRIES
                    && ratio(latest.1, latest.0) >= rules::STORM_RETRY_SHARE,
                series: acc
                    .per_bucket
                    .iter()
                    .enumerate()
                    .map(|(i, (_, retries))| Point {
                        time_ns: buckets.time(i),
                        value: *retries as f64,
                    })
                    .collect(),
                example_traces: acc.examples,
            }
        })
        .collect();
    out.sort_by(|a, b| b.retries.cmp(&a.retries));
    out
}

fn breaker_insights(
    edges: &BTreeMap<EdgeKey, EdgeAcc>,
    events: Vec<(String, String, BreakerEvent)>,
    span_edges: &HashMap<(&str, &str), EdgeKey>,
    end_ns: i64,
) -> Vec<BreakerInsight> {
    let mut changes: BTreeMap<EdgeKey, Vec<BreakerEvent>> = BTreeMap::new();
    for (trace, span, event) in events {
        if let Some(edge) = span_edges.get(&(trace.as_str(), span.as_str())) {
            changes.entry(edge.clone()).or_default().push(event);
        }
    }
    let mut out = Vec::new();
    for (edge, acc) in edges {
        let mut state_changes = changes.remove(edge).unwrap_or_default();
        if acc.fast_failures.is_empty() && state_changes.is_empty() {
            continue;
        }
        state_changes.sort_by_key(|e| e.time_ns);
        let mut open_periods = Vec::new();
        let mut opened: Option<i64> = None;
        for event in &state_changes {
            match (event.state.as_str(), opened) {
                ("open", None) => opened = Some(event.time_ns),
                ("open", Some(_)) => {}
                (_, Some(start)) => {
                    open_periods.push(OpenPeriod {
                        start_ns: start,
                        end_ns: event.time_ns,
                    });
                    opened = None;
                }
                (_, None) => {}
            }
        }
        if let Some(start) = opened {
            open_periods.push(OpenPeriod {
                start_ns: start,
                end_ns,
            });
        }
        let mut fast = acc.fast_failures.clone();
        fast.sort_unstable();
        let mut examples = acc.fast_examples.clone();
        for event in &state_changes {
            push_example(&mut examples, &event.trace_id);
        }
        out.push(BreakerInsight {
            edge: edge.clone(),
            calls: acc.durations.len() as u64,
            errors: acc.errors,
            fast_failures: fast.len() as u64,
            fast_failure_p50_ns: percentile(&fast, 0.5),
            open_ns: open_periods.iter().map(|p| p.end_ns - p.start_ns).sum(),
            open_periods,
            state_changes,
            example_traces: examples,
        });
    }
    out.sort_by(|a, b| b.fast_failures.cmp(&a.fast_failures));
    out
}

/// The spans that measure a service's own work: its server spans, or its
/// consumer spans when it has no server spans.
fn requests_by_service(spans: &[Span]) -> BTreeMap<&str, Vec<&Span>> {
    let mut servers: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    let mut consumers: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for span in spans {
        match span.kind.as_str() {
            "SERVER" => servers.entry(&span.service).or_default().push(span),
            "CONSUMER" => consumers.entry(&span.service).or_default().push(span),
            _ => {}
        }
    }
    for (service, spans) in consumers {
        servers.entry(service).or_insert(spans);
    }
    servers
}

/// Requests grouped by a resource attribute, with their summary.
struct Group<'a> {
    name: String,
    spans: Vec<&'a Span>,
    latencies: Latencies,
}

fn groups<'a>(
    spans: &[&'a Span],
    key: impl Fn(&Span) -> Option<&String>,
    seconds: f64,
) -> Vec<Group<'a>> {
    let mut by: BTreeMap<String, Vec<&Span>> = BTreeMap::new();
    for &span in spans {
        if let Some(name) = key(span) {
            by.entry(name.clone()).or_default().push(span);
        }
    }
    by.into_iter()
        .map(|(name, spans)| {
            let mut durations: Vec<i64> = spans.iter().map(|s| s.duration_ns).collect();
            let errors = spans.iter().filter(|s| s.error).count() as u64;
            Group {
                latencies: summarize(&mut durations, errors, seconds),
                name,
                spans,
            }
        })
        .collect()
}

/// Why `candidate` is worse than `others`, if it is: slower p95 or more errors.
fn worse(candidate: &Latencies, others: &Latencies) -> Option<String> {
    if candidate.requests < rules::MIN_REQUESTS || others.requests < rules::MIN_REQUESTS {
        return None;
    }
    let mut reasons = Vec::new();
    if candidate.p95_ns >= others.p95_ns * rules::SLOW_RATIO
        && candidate.p95_ns - others.p95_ns >= rules::MIN_LATENCY_GAP_NS
    {
        reasons.push(format!(
            "p95 {} against {} ({:.1}×)",
            ms(candidate.p95_ns),
            ms(others.p95_ns),
            candidate.p95_ns / others.p95_ns.max(1.0)
        ));
    }
    let z = z_score(
        candidate.errors,
        candidate.requests,
        others.errors,
        others.requests,
    );
    if candidate.error_rate - others.error_rate >= rules::ERROR_RATE_GAP && z >= rules::ERROR_Z {
        reasons.push(format!(
            "errors {:.1}% against {:.1}% (z = {z:.1})",
            candidate.error_rate * 100.0,
            others.error_rate * 100.0
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

fn pooled(groups: &[&Group<'_>], seconds: f64) -> Latencies {
    let mut durations: Vec<i64> = groups
        .iter()
        .flat_map(|g| g.spans.iter().map(|s| s.duration_ns))
        .collect();
    let errors = groups.iter().map(|g| g.latencies.errors).sum();
    summarize(&mut durations, errors, seconds)
}

fn instance_insights(spans: &[Span], seconds: f64) -> Vec<InstanceInsight> {
    let mut out = Vec::new();
    for (service, requests) in requests_by_service(spans) {
        let instances = groups(&requests, |s| s.instance.as_ref(), seconds);
        if instances.len() < 2 {
            continue;
        }
        let total: u64 = instances.iter().map(|g| g.latencies.requests).sum();
        let mut outlier: Option<(String, String, f64)> = None;
        for candidate in &instances {
            let others: Vec<&Group> = instances
                .iter()
                .filter(|g| g.name != candidate.name)
                .collect();
            let rest = pooled(&others, seconds);
            if let Some(why) = worse(&candidate.latencies, &rest) {
                let severity = candidate.latencies.p95_ns / rest.p95_ns.max(1.0)
                    + candidate.latencies.error_rate / rest.error_rate.max(0.001);
                if outlier.as_ref().is_none_or(|(_, _, s)| severity > *s) {
                    outlier = Some((candidate.name.clone(), why, severity));
                }
            }
        }
        let largest = instances
            .iter()
            .map(|g| ratio(g.latencies.requests, total))
            .fold(0.0, f64::max);
        let evidence = match &outlier {
            Some((name, why, _)) => format!("{name}: {why}, against the other instances"),
            None => "no instance differs from the others beyond the thresholds".to_owned(),
        };
        out.push(InstanceInsight {
            service: service.to_owned(),
            imbalance: largest * instances.len() as f64,
            instances: instances
                .iter()
                .map(|g| {
                    let mut examples = Vec::new();
                    let mut slowest: Vec<&&Span> = g.spans.iter().collect();
                    slowest.sort_by_key(|s| std::cmp::Reverse(s.duration_ns));
                    for span in slowest {
                        push_example(&mut examples, &span.trace_id);
                    }
                    InstanceStats {
                        instance: g.name.clone(),
                        share: ratio(g.latencies.requests, total),
                        latencies: g.latencies.clone(),
                        example_traces: examples,
                    }
                })
                .collect(),
            outlier: outlier.map(|(name, _, _)| name),
            evidence,
        });
    }
    out
}

fn version_insights(spans: &[Span], seconds: f64) -> Vec<VersionInsight> {
    let mut out = Vec::new();
    for (service, requests) in requests_by_service(spans) {
        let versions = groups(&requests, |s| s.version.as_ref(), seconds);
        if versions.len() < 2 {
            continue;
        }
        let Some(baseline) = versions.iter().max_by_key(|g| g.latencies.requests) else {
            continue;
        };
        let mut regression: Option<(String, String)> = None;
        for candidate in versions.iter().filter(|g| g.name != baseline.name) {
            if let Some(why) = worse(&candidate.latencies, &baseline.latencies) {
                if regression.is_none() {
                    regression = Some((candidate.name.clone(), why));
                }
            }
        }
        let evidence = match &regression {
            Some((version, why)) => format!("{version} against {}: {why}", baseline.name),
            None => format!(
                "every version within the thresholds of {} (p95 {}, errors {:.1}%)",
                baseline.name,
                ms(baseline.latencies.p95_ns),
                baseline.latencies.error_rate * 100.0
            ),
        };
        out.push(VersionInsight {
            service: service.to_owned(),
            baseline: baseline.name.clone(),
            versions: versions
                .iter()
                .map(|g| {
                    let durations: Vec<i64> = g.spans.iter().map(|s| s.duration_ns).collect();
                    let mut examples = Vec::new();
                    for span in g.spans.iter().filter(|s| s.error).chain(&g.spans) {
                        push_example(&mut examples, &span.trace_id);
                    }
                    VersionStats {
                        version: g.name.clone(),
                        latencies: g.latencies.clone(),
                        histogram: histogram(&durations),
                        example_traces: examples,
                    }
                })
                .collect(),
            verdict: if regression.is_some() {
                "regression"
            } else {
                "no difference"
            }
            .to_owned(),
            regression: regression.map(|(version, _)| version),
            evidence,
        });
    }
    out
}

fn async_insights(
    messaging: BTreeMap<(EdgeKey, Option<String>), AsyncAcc>,
    buckets: &Buckets,
    start_ns: i64,
    end_ns: i64,
) -> Vec<AsyncInsight> {
    let third = (end_ns - start_ns) / 3;
    messaging
        .into_iter()
        .map(|((edge, _), acc)| {
            let mut lags: Vec<i64> = acc.lags.iter().map(|(_, lag)| *lag).collect();
            lags.sort_unstable();
            let p95_of = |from: i64, to: i64| {
                let mut part: Vec<i64> = acc
                    .lags
                    .iter()
                    .filter(|(t, _)| *t >= from && *t < to)
                    .map(|(_, lag)| *lag)
                    .collect();
                part.sort_unstable();
                (part.len(), percentile(&part, 0.95))
            };
            let (first_n, first) = p95_of(start_ns, start_ns + third);
            let (last_n, last) = p95_of(end_ns - third, end_ns + 1);
            let mut per_bucket = vec![Vec::new(); rules::BUCKETS];
            for (time, lag) in &acc.lags {
                per_bucket[buckets.index(*time)].push(*lag);
            }
            AsyncInsight {
                edge,
                destination: acc.destination,
                system: acc.system,
                messages: acc.lags.len() as u64,
                consumer_errors: acc.consumer_errors,
                lag_p50_ns: percentile(&lags, 0.5),
                lag_p95_ns: percentile(&lags, 0.95),
                lag_series: per_bucket
                    .iter_mut()
                    .enumerate()
                    .map(|(i, lags)| {
                        lags.sort_unstable();
                        Point {
                            time_ns: buckets.time(i),
                            value: percentile(lags, 0.95),
                        }
                    })
                    .collect(),
                falling_behind: first_n > 0
                    && last_n > 0
                    && last >= first * rules::LAG_GROWTH
                    && last >= rules::MIN_LAG_NS,
                example_traces: acc.examples,
            }
        })
        .collect()
}

fn transaction_insights(spans: &[Span]) -> Vec<TransactionInsight> {
    let mut by_trace: HashMap<&str, Vec<&Span>> = HashMap::new();
    for span in spans {
        if span.tx_outcome.is_some() || span.tx_step.is_some() || span.compensation {
            by_trace.entry(&span.trace_id).or_default().push(span);
        }
    }
    let mut out: BTreeMap<(String, String), TransactionInsight> = BTreeMap::new();
    let mut compensation_times: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut traces: Vec<_> = by_trace.into_iter().collect();
    traces.sort_by_key(|(trace, spans)| (spans.iter().map(|s| s.start_ns).min(), *trace));
    for (trace_id, spans) in traces {
        let Some(root) = spans.iter().find(|s| s.tx_outcome.is_some()) else {
            continue;
        };
        let key = (
            root.service.clone(),
            root.tx_name.clone().unwrap_or_else(|| root.name.clone()),
        );
        let entry = out
            .entry(key.clone())
            .or_insert_with(|| TransactionInsight {
                service: key.0.clone(),
                name: key.1.clone(),
                total: 0,
                outcomes: BTreeMap::new(),
                failed_steps: BTreeMap::new(),
                compensated: 0,
                compensation_p50_ns: 0.0,
                compensation_p95_ns: 0.0,
                half_done: 0,
                compensated_traces: Vec::new(),
                half_done_traces: Vec::new(),
            });
        entry.total += 1;
        if let Some(outcome) = &root.tx_outcome {
            *entry.outcomes.entry(outcome.clone()).or_default() += 1;
        }
        if let Some(step) = &root.tx_failed_step {
            *entry.failed_steps.entry(step.clone()).or_default() += 1;
        }
        let compensations: Vec<&&Span> = spans.iter().filter(|s| s.compensation).collect();
        // A step's outcome is that of its last attempt.
        let mut steps: HashMap<&str, &Span> = HashMap::new();
        for span in spans.iter().filter(|s| !s.compensation && s.is_outgoing()) {
            if let Some(step) = &span.tx_step {
                let latest = steps.entry(step).or_insert(span);
                if span.start_ns > latest.start_ns {
                    *latest = span;
                }
            }
        }
        let failed = steps.values().any(|s| s.error);
        let succeeded = steps.values().any(|s| !s.error);
        if !compensations.is_empty() {
            entry.compensated += 1;
            push_example(&mut entry.compensated_traces, trace_id);
            let first = compensations.iter().map(|s| s.start_ns).min().unwrap_or(0);
            let last = compensations.iter().map(|s| s.end_ns()).max().unwrap_or(0);
            compensation_times
                .entry(key)
                .or_default()
                .push(last - first);
        }
        let compensation_failed = compensations.iter().any(|s| s.error);
        if (failed && succeeded && compensations.is_empty()) || compensation_failed {
            entry.half_done += 1;
            push_example(&mut entry.half_done_traces, trace_id);
        }
    }
    for (key, mut times) in compensation_times {
        times.sort_unstable();
        if let Some(entry) = out.get_mut(&key) {
            entry.compensation_p50_ns = percentile(&times, 0.5);
            entry.compensation_p95_ns = percentile(&times, 0.95);
        }
    }
    out.into_values().collect()
}

fn encryption_insights(edges: &BTreeMap<EdgeKey, EdgeAcc>) -> Vec<EncryptionInsight> {
    edges
        .iter()
        .map(|(edge, acc)| {
            let calls = acc.durations.len() as u64;
            let known = acc.tls + acc.plain;
            EncryptionInsight {
                edge: edge.clone(),
                calls,
                tls: acc.tls,
                plain: acc.plain,
                unknown: calls - known,
                tls_share: (known > 0).then(|| ratio(acc.tls, known)),
                plain_text: acc.plain > 0,
                example_traces: acc.plain_examples.clone(),
            }
        })
        .collect()
}

fn edge_insights(edges: BTreeMap<EdgeKey, EdgeAcc>, seconds: f64) -> Vec<EdgeInsight> {
    edges
        .into_iter()
        .map(|(edge, mut acc)| {
            let latencies = summarize(&mut acc.durations, acc.errors, seconds);
            let average = |(sum, n): (f64, u64)| (n > 0).then(|| sum / n as f64);
            let mut examples = acc.error_examples.clone();
            for trace in &acc.examples {
                push_example(&mut examples, trace);
            }
            let synchronous = acc.protocols.keys().any(|p| p != "messaging");
            EdgeInsight {
                edge,
                synchronous,
                histogram: histogram(&acc.durations),
                success_rate: 1.0 - latencies.error_rate,
                latencies,
                protocols: acc.protocols,
                request_bytes_avg: average(acc.request_bytes),
                response_bytes_avg: average(acc.response_bytes),
                example_traces: examples,
            }
        })
        .collect()
}
