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
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, ListArray, MapArray, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{Int32Type, Int64Type, TimestampNanosecondType};
use datafusion::error::DataFusionError;
use serde::Serialize;
use weft_schema::spans as s;

use crate::engine::{QueryEngine, QueryError};
use crate::scan::SpanColumns;
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

/// Text shared between spans (service names, routes…): one allocation per
/// distinct value, not per span.
type Text = Arc<str>;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Server,
    Client,
    Producer,
    Consumer,
    #[default]
    Other,
}

impl Kind {
    fn parse(text: &str) -> Self {
        match text {
            "SERVER" => Self::Server,
            "CLIENT" => Self::Client,
            "PRODUCER" => Self::Producer,
            "CONSUMER" => Self::Consumer,
            _ => Self::Other,
        }
    }
}

/// A span's trace id and span id, as numbers: cheap to hash, sort and compare.
type SpanKey = (u128, u64);

fn trace_hex(trace: u128) -> String {
    format!("{trace:032x}")
}

/// The columns one span contributes.
#[derive(Debug, Default)]
struct Span {
    trace: u128,
    id: u64,
    parent: Option<u64>,
    kind: Kind,
    name: Text,
    service: Text,
    version: Option<Text>,
    instance: Option<Text>,
    start_ns: i64,
    duration_ns: i64,
    error: bool,
    method: Option<Text>,
    route: Option<Text>,
    has_url: bool,
    url_template: Option<Text>,
    /// `url.scheme`, or the scheme of `url.full`.
    url_scheme: Option<Text>,
    rpc_system: Option<Text>,
    rpc_method: Option<Text>,
    messaging_system: Option<Text>,
    destination: Option<Text>,
    peer: Option<Text>,
    db_system: bool,
    graphql: bool,
    tls: bool,
    resend_count: i64,
    idempotency_key: bool,
    request_bytes: Option<f64>,
    response_bytes: Option<f64>,
    tx_name: Option<Text>,
    tx_outcome: Option<Text>,
    tx_failed_step: Option<Text>,
    tx_step: Option<Text>,
    compensation: bool,
    /// Spans this one links to.
    links: Vec<SpanKey>,
}

impl Span {
    fn key(&self) -> SpanKey {
        (self.trace, self.id)
    }
    fn end_ns(&self) -> i64 {
        self.start_ns + self.duration_ns
    }
    /// Swaps each text for its `canonical` copy (by address), where it has one.
    fn reintern(&mut self, canonical: &FastMap<usize, Text>) {
        let swap = |text: &mut Text| {
            if let Some(copy) = canonical.get(&address(text)) {
                *text = Arc::clone(copy);
            }
        };
        swap(&mut self.name);
        swap(&mut self.service);
        [
            &mut self.version,
            &mut self.instance,
            &mut self.method,
            &mut self.route,
            &mut self.url_template,
            &mut self.url_scheme,
            &mut self.rpc_system,
            &mut self.rpc_method,
            &mut self.messaging_system,
            &mut self.destination,
            &mut self.peer,
            &mut self.tx_name,
            &mut self.tx_outcome,
            &mut self.tx_failed_step,
            &mut self.tx_step,
        ]
        .into_iter()
        .flatten()
        .for_each(swap);
    }
    fn is_outgoing(&self) -> bool {
        matches!(self.kind, Kind::Client | Kind::Producer)
    }
    fn is_incoming(&self) -> bool {
        matches!(self.kind, Kind::Server | Kind::Consumer)
    }
    fn protocol(&self) -> &'static str {
        if self.graphql {
            "graphql"
        } else if self.messaging_system.is_some() {
            "messaging"
        } else if self.rpc_system.as_deref() == Some("grpc") {
            "grpc"
        } else if self.db_system {
            "db"
        } else if self.method.is_some() || self.has_url {
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
        match self.url_scheme.as_deref()? {
            "https" | "wss" | "grpcs" => Some(true),
            "http" | "ws" => Some(false),
            _ => None,
        }
    }
}

/// Text columns read for every span, in this order (see [`Row`]).
const COLUMNS: &[&str] = &[
    s::TRACE_ID,
    s::SPAN_ID,
    s::PARENT_SPAN_ID,
    s::KIND,
    s::NAME,
    s::SERVICE_NAME,
    s::STATUS_CODE,
    "service_version",
    "service_instance_id",
    "http_request_method",
    "http_route",
    "url_full",
    "rpc_system",
    "rpc_method",
    "messaging_system",
    "messaging_destination_name",
    "peer_service",
    "server_address",
    "db_system",
];

/// Span attributes read from the map, after [`COLUMNS`], in this order.
const ATTRIBUTES: &[&str] = &[
    "url.template",
    "url.scheme",
    "graphql.operation.type",
    "tls.protocol.version",
    "tls.established",
    "tls.cipher",
    "http.request.resend_count",
    "http.request.header.idempotency-key",
    "idempotency_key",
    "http.request.body.size",
    "http.response.body.size",
    "transaction.name",
    "transaction.outcome",
    "transaction.failed_step",
    "transaction.step",
    "transaction.compensation",
];

/// Positions in [`COLUMNS`].
mod at {
    pub const TRACE_ID: usize = 0;
    pub const SPAN_ID: usize = 1;
    pub const PARENT: usize = 2;
    pub const KIND: usize = 3;
    pub const NAME: usize = 4;
    pub const SERVICE: usize = 5;
    pub const STATUS: usize = 6;
    pub const VERSION: usize = 7;
    pub const INSTANCE: usize = 8;
    pub const METHOD: usize = 9;
    pub const ROUTE: usize = 10;
    pub const URL_FULL: usize = 11;
    pub const RPC_SYSTEM: usize = 12;
    pub const RPC_METHOD: usize = 13;
    pub const MESSAGING_SYSTEM: usize = 14;
    pub const DESTINATION: usize = 15;
    pub const PEER_SERVICE: usize = 16;
    pub const SERVER_ADDRESS: usize = 17;
    pub const DB_SYSTEM: usize = 18;
}

/// Positions in [`ATTRIBUTES`].
mod attr {
    pub const URL_TEMPLATE: usize = 0;
    pub const URL_SCHEME: usize = 1;
    pub const GRAPHQL: usize = 2;
    pub const TLS_VERSION: usize = 3;
    pub const TLS_ESTABLISHED: usize = 4;
    pub const TLS_CIPHER: usize = 5;
    pub const RESEND_COUNT: usize = 6;
    pub const IDEMPOTENCY_KEY: usize = 7;
    pub const IDEMPOTENCY_KEY_PLAIN: usize = 8;
    pub const REQUEST_BYTES: usize = 9;
    pub const RESPONSE_BYTES: usize = 10;
    pub const TX_NAME: usize = 11;
    pub const TX_OUTCOME: usize = 12;
    pub const TX_FAILED_STEP: usize = 13;
    pub const TX_STEP: usize = 14;
    pub const TX_COMPENSATION: usize = 15;
}

/// Those of [`COLUMNS`] with a text per span (ids, URLs); the others hold
/// few distinct texts and are read dictionary-encoded, so each distinct text
/// is interned once per batch.
const UNIQUE_COLUMNS: &[&str] = &[s::TRACE_ID, s::SPAN_ID, s::PARENT_SPAN_ID, "url_full"];

/// One batch's text column.
enum TextColumn {
    Plain(StringArray),
    /// Each row's index into `texts`, the dictionary's values interned.
    Dictionary {
        keys: Int32Array,
        texts: Vec<Option<Text>>,
    },
    Missing,
}

impl TextColumn {
    fn new(column: &ArrayRef, interner: &mut Interner) -> Self {
        if let Some(plain) = column.as_string_opt::<i32>() {
            return TextColumn::Plain(plain.clone());
        }
        let Some(dictionary) = column.as_dictionary_opt::<Int32Type>() else {
            return TextColumn::Missing;
        };
        let Some(values) = dictionary.values().as_string_opt::<i32>() else {
            return TextColumn::Missing;
        };
        TextColumn::Dictionary {
            keys: dictionary.keys().clone(),
            texts: values
                .iter()
                .map(|value| value.map(|v| interner.text(v)))
                .collect(),
        }
    }
}

/// One batch's text columns by position.
struct Row {
    texts: Vec<TextColumn>,
}

impl Row {
    fn get(&self, column: usize, row: usize) -> Option<&str> {
        match self.texts.get(column)? {
            TextColumn::Plain(array) => (!array.is_null(row)).then(|| array.value(row)),
            TextColumn::Dictionary { keys, texts } => self.entry(keys, texts, row).map(|t| &**t),
            TextColumn::Missing => None,
        }
    }

    /// The row's text, interned.
    fn text(&self, column: usize, row: usize, interner: &mut Interner) -> Option<Text> {
        match self.texts.get(column)? {
            TextColumn::Plain(array) => {
                (!array.is_null(row)).then(|| interner.text(array.value(row)))
            }
            TextColumn::Dictionary { keys, texts } => self.entry(keys, texts, row).cloned(),
            TextColumn::Missing => None,
        }
    }

    fn entry<'a>(
        &self,
        keys: &Int32Array,
        texts: &'a [Option<Text>],
        row: usize,
    ) -> Option<&'a Text> {
        if keys.is_null(row) {
            return None;
        }
        let key = usize::try_from(keys.value(row)).ok()?;
        texts.get(key)?.as_ref()
    }
}

/// The slot of a wanted attribute key (a `match` compiles to a length switch
/// and one comparison, not a search), kept in step with [`ATTRIBUTES`].
fn attribute_slot(key: &str) -> Option<usize> {
    match key {
        "url.template" => Some(attr::URL_TEMPLATE),
        "url.scheme" => Some(attr::URL_SCHEME),
        "graphql.operation.type" => Some(attr::GRAPHQL),
        "tls.protocol.version" => Some(attr::TLS_VERSION),
        "tls.established" => Some(attr::TLS_ESTABLISHED),
        "tls.cipher" => Some(attr::TLS_CIPHER),
        "http.request.resend_count" => Some(attr::RESEND_COUNT),
        "http.request.header.idempotency-key" => Some(attr::IDEMPOTENCY_KEY),
        "idempotency_key" => Some(attr::IDEMPOTENCY_KEY_PLAIN),
        "http.request.body.size" => Some(attr::REQUEST_BYTES),
        "http.response.body.size" => Some(attr::RESPONSE_BYTES),
        "transaction.name" => Some(attr::TX_NAME),
        "transaction.outcome" => Some(attr::TX_OUTCOME),
        "transaction.failed_step" => Some(attr::TX_FAILED_STEP),
        "transaction.step" => Some(attr::TX_STEP),
        "transaction.compensation" => Some(attr::TX_COMPENSATION),
        _ => None,
    }
}

/// The attributes [`ATTRIBUTES`] names, found in one pass over a row's map
/// (one look at each entry, instead of one map lookup per attribute).
fn wanted_attributes<'a>(
    attributes: &'a MapArray,
    keys: &'a StringArray,
    values: &'a StringArray,
    row: usize,
) -> [Option<&'a str>; ATTRIBUTES.len()] {
    let mut found = [None; ATTRIBUTES.len()];
    if attributes.is_null(row) {
        return found;
    }
    let offsets = attributes.value_offsets();
    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
    for entry in start..end {
        let key = keys.value(entry);
        if let Some(slot) = attribute_slot(key) {
            found[slot] = (!values.is_null(entry)).then(|| values.value(entry));
        }
    }
    found
}

/// A fast hasher for in-process maps of short keys (the Fx hash of rustc):
/// the maps here hold span ids and names from one query, not hostile input
/// that could aim for collisions, so SipHash's protection is not needed.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// One `Arc<str>` per distinct text.
#[derive(Default)]
struct Interner(FastMap<Text, ()>);

impl Interner {
    fn text(&mut self, value: &str) -> Text {
        if let Some((text, _)) = self.0.get_key_value(value) {
            return Arc::clone(text);
        }
        let text: Text = Arc::from(value);
        self.0.insert(Arc::clone(&text), ());
        text
    }
    fn maybe(&mut self, value: Option<&str>) -> Option<Text> {
        value.map(|v| self.text(v))
    }
}

impl QueryEngine {
    /// Every view over `[start_ns, end_ns]`.
    pub async fn insights(&self, start_ns: i64, end_ns: i64) -> Result<Insights, QueryError> {
        let started = std::time::Instant::now();
        let parts = self.scan(start_ns, end_ns).await?;
        let read = started.elapsed();
        let count: usize = parts.iter().map(Scanned::len).sum();
        let insights = tokio::task::spawn_blocking(move || {
            let (chunks, events) = Scanned::merge(parts);
            // The spans stay where the scan put them: `compute` looks at
            // them through references (~400k spans of ~400 bytes an hour).
            let spans: Vec<&Span> = chunks.iter().flatten().collect();
            compute(&spans, events, start_ns, end_ns)
        })
        .await
        .map_err(|e| QueryError::Engine(DataFusionError::External(Box::new(e))))?;
        tracing::debug!(
            spans = count,
            read_ms = read.as_millis() as u64,
            compute_ms = (started.elapsed() - read).as_millis() as u64,
            "insights"
        );
        Ok(insights)
    }

    /// The spans of the range that matter and their breaker events, read in
    /// one scan, one part per core (see [`Scanned::merge`]).
    async fn scan(&self, start_ns: i64, end_ns: i64) -> Result<Vec<Scanned>, QueryError> {
        let mut names = COLUMNS.to_vec();
        names.extend([
            s::ATTRIBUTES,
            s::START_TIME,
            s::DURATION_NS,
            s::LINKS,
            s::EVENTS,
        ]);
        let columns = SpanColumns {
            names,
            dictionaries: COLUMNS
                .iter()
                .copied()
                .filter(|column| !UNIQUE_COLUMNS.contains(column))
                .collect(),
        };
        let parts = self
            .fold_spans(start_ns, end_ns, columns, |part: &mut Scanned, batch| {
                part.add(batch)
            })
            .await?;
        tracing::debug!(
            partitions = parts.len(),
            spans = ?parts.iter().map(Scanned::len).collect::<Vec<_>>(),
            "insights scan"
        );
        Ok(parts)
    }
}

/// What one partition of the scan yields. Each partition interns its own
/// texts; [`Scanned::merge`] makes equal texts one `Arc` again, as `compute`
/// compares interned texts by address.
#[derive(Default)]
struct Scanned {
    interner: Interner,
    /// One vector per batch, each allocated once at its batch's size: an hour
    /// is ~400k spans of ~400 bytes, and one growing vector copied them
    /// several times over (page faults and copies were a fifth of the scan).
    spans: Vec<Vec<Span>>,
    events: Vec<(SpanKey, BreakerEvent)>,
}

impl Scanned {
    fn len(&self) -> usize {
        self.spans.iter().map(Vec::len).sum()
    }

    /// The rows of one batch with the columns [`QueryEngine::scan`] selects.
    fn add(&mut self, batch: &RecordBatch) {
        let texts = COLUMNS.len();
        let attributes = batch.column(texts).as_map_opt();
        let entries = attributes.and_then(|map| {
            Some((
                map.keys().as_string_opt::<i32>()?,
                map.values().as_string_opt::<i32>()?,
            ))
        });
        let row_data = Row {
            texts: (0..texts)
                .map(|i| TextColumn::new(batch.column(i), &mut self.interner))
                .collect(),
        };
        let starts = batch
            .column(texts + 1)
            .as_primitive_opt::<TimestampNanosecondType>();
        let durations = batch.column(texts + 2).as_primitive_opt::<Int64Type>();
        let links = batch.column(texts + 3).as_list_opt::<i32>();
        let events = batch.column(texts + 4).as_list_opt::<i32>();
        // Most spans have no links or events: look at the offsets before slicing.
        let items = |list: Option<&ListArray>, row: usize| {
            list.filter(|l| l.is_valid(row) && l.value_length(row) > 0)
                .map(|l| l.value(row))
        };
        let mut spans = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let r = &row_data;
            let found = match (attributes, entries) {
                (Some(map), Some((keys, values))) => wanted_attributes(map, keys, values, row),
                _ => [None; ATTRIBUTES.len()],
            };
            // INTERNAL spans matter only as parts of a transaction.
            let internal = !matches!(
                r.get(at::KIND, row),
                Some("SERVER" | "CLIENT" | "PRODUCER" | "CONSUMER")
            );
            let in_transaction = found[attr::TX_COMPENSATION].is_some()
                || found[attr::TX_OUTCOME].is_some()
                || found[attr::TX_STEP].is_some();
            if internal && !in_transaction {
                continue;
            }
            let Some(span) = read_span(r, &found, row, &mut self.interner) else {
                continue;
            };
            if span.is_outgoing()
                && let Some(events) = items(events, row)
            {
                breaker_events(&events, span.key(), &mut self.events);
            }
            spans.push(Span {
                start_ns: starts.map_or(0, |a| a.value(row)),
                duration_ns: durations.map_or(0, |a| a.value(row)),
                links: items(links, row).map(|l| link_keys(&l)).unwrap_or_default(),
                ..span
            });
        }
        self.spans.push(spans);
    }

    /// All partitions' spans and events, the texts of every partition after
    /// the first swapped (in place) for the first's copies.
    fn merge(parts: Vec<Scanned>) -> (Vec<Vec<Span>>, Vec<(SpanKey, BreakerEvent)>) {
        let mut chunks = Vec::new();
        let mut events = Vec::new();
        let mut interner = Interner::default();
        for (index, mut part) in parts.into_iter().enumerate() {
            if index == 0 {
                interner = part.interner;
            } else {
                let canonical: FastMap<usize, Text> = part
                    .interner
                    .0
                    .keys()
                    .map(|text| (address(text), interner.text(text)))
                    .collect();
                for span in part.spans.iter_mut().flatten() {
                    span.reintern(&canonical);
                }
            }
            chunks.append(&mut part.spans);
            events.append(&mut part.events);
        }
        (chunks, events)
    }
}

/// `circuit_breaker.state_change` events among one outgoing span's `events`.
fn breaker_events(events: &ArrayRef, span: SpanKey, found: &mut Vec<(SpanKey, BreakerEvent)>) {
    let Some(events) = events.as_struct_opt() else {
        return;
    };
    let names = events
        .column_by_name(s::event::NAME)
        .and_then(|c| c.as_string_opt::<i32>());
    let times = events
        .column_by_name(s::event::TIME)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>());
    let attributes = events
        .column_by_name(s::ATTRIBUTES)
        .and_then(|c| c.as_map_opt());
    let (Some(names), Some(attributes)) = (names, attributes) else {
        return;
    };
    let (Some(keys), Some(values)) = (
        attributes.keys().as_string_opt::<i32>(),
        attributes.values().as_string_opt::<i32>(),
    ) else {
        return;
    };
    for i in 0..events.len() {
        if names.is_null(i) || names.value(i) != "circuit_breaker.state_change" {
            continue;
        }
        let offsets = attributes.value_offsets();
        let attribute = |key: &str| {
            (offsets[i] as usize..offsets[i + 1] as usize)
                .find(|&entry| keys.value(entry) == key)
                .filter(|&entry| !values.is_null(entry))
                .map(|entry| values.value(entry).to_owned())
        };
        let Some(state) = attribute("circuit_breaker.state") else {
            continue;
        };
        found.push((
            span,
            BreakerEvent {
                time_ns: times.map_or(0, |t| t.value(i)),
                name: attribute("circuit_breaker.name"),
                state,
                previous_state: attribute("circuit_breaker.previous_state"),
                trace_id: trace_hex(span.0),
            },
        ));
    }
}

/// The address of an interned text: equal texts of one interner share it.
fn address(text: &Text) -> usize {
    Arc::as_ptr(text).cast::<u8>() as usize
}

fn parse_trace(hex: &str) -> Option<u128> {
    u128::from_str_radix(hex, 16).ok()
}

fn parse_span(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex, 16).ok()
}

/// The (trace, span) of each element of one span's `links` list.
fn link_keys(links: &datafusion::arrow::array::ArrayRef) -> Vec<SpanKey> {
    let Some(links) = links.as_struct_opt() else {
        return Vec::new();
    };
    let field = |name: &str| {
        links
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>().cloned())
    };
    let (Some(traces), Some(spans)) = (field(s::link::TRACE_ID), field(s::link::SPAN_ID)) else {
        return Vec::new();
    };
    (0..links.len())
        .filter_map(|i| {
            let trace = (!traces.is_null(i)).then(|| traces.value(i))?;
            let span = (!spans.is_null(i)).then(|| spans.value(i))?;
            Some((parse_trace(trace)?, parse_span(span)?))
        })
        .collect()
}

/// One row as a [`Span`] (without times and links), or `None` without ids.
fn read_span(
    r: &Row,
    attributes: &[Option<&str>; ATTRIBUTES.len()],
    row: usize,
    interner: &mut Interner,
) -> Option<Span> {
    let trace = parse_trace(r.get(at::TRACE_ID, row)?)?;
    let id = parse_span(r.get(at::SPAN_ID, row)?)?;
    let get = |column: usize| r.get(column, row);
    let attribute = |index: usize| attributes[index];
    let kind = Kind::parse(get(at::KIND).unwrap_or_default());
    let span = Span {
        trace,
        id,
        parent: get(at::PARENT)
            .filter(|p| !p.is_empty())
            .and_then(parse_span),
        kind,
        name: r
            .text(at::NAME, row, interner)
            .unwrap_or_else(|| interner.text("")),
        service: r
            .text(at::SERVICE, row, interner)
            .unwrap_or_else(|| interner.text("")),
        version: r.text(at::VERSION, row, interner),
        instance: r.text(at::INSTANCE, row, interner),
        error: get(at::STATUS) == Some("ERROR"),
        route: r.text(at::ROUTE, row, interner),
        tx_name: interner.maybe(attribute(attr::TX_NAME)),
        tx_outcome: interner.maybe(attribute(attr::TX_OUTCOME)),
        tx_failed_step: interner.maybe(attribute(attr::TX_FAILED_STEP)),
        tx_step: interner.maybe(attribute(attr::TX_STEP)),
        compensation: attribute(attr::TX_COMPENSATION) == Some("true"),
        ..Span::default()
    };
    if !matches!(kind, Kind::Client | Kind::Producer) {
        return Some(span);
    }
    // What only the caller's side of a call is asked for.
    let number = |index: usize| attribute(index).and_then(|v| v.parse::<f64>().ok());
    let url_full = get(at::URL_FULL);
    let scheme = attribute(attr::URL_SCHEME)
        .or_else(|| {
            url_full
                .and_then(|u| u.split_once("://"))
                .map(|(scheme, _)| scheme)
        })
        .map(|scheme| interner.text(&scheme.to_ascii_lowercase()));
    Some(Span {
        method: r.text(at::METHOD, row, interner),
        has_url: url_full.is_some(),
        url_template: interner.maybe(attribute(attr::URL_TEMPLATE)),
        url_scheme: scheme,
        rpc_system: r.text(at::RPC_SYSTEM, row, interner),
        rpc_method: r.text(at::RPC_METHOD, row, interner),
        messaging_system: r.text(at::MESSAGING_SYSTEM, row, interner),
        destination: r.text(at::DESTINATION, row, interner),
        peer: r
            .text(at::PEER_SERVICE, row, interner)
            .or_else(|| r.text(at::SERVER_ADDRESS, row, interner)),
        db_system: get(at::DB_SYSTEM).is_some(),
        graphql: attribute(attr::GRAPHQL).is_some(),
        tls: attribute(attr::TLS_VERSION).is_some()
            || attribute(attr::TLS_CIPHER).is_some()
            || attribute(attr::TLS_ESTABLISHED) == Some("true"),
        resend_count: number(attr::RESEND_COUNT).unwrap_or(0.0) as i64,
        idempotency_key: attribute(attr::IDEMPOTENCY_KEY).is_some()
            || attribute(attr::IDEMPOTENCY_KEY_PLAIN).is_some(),
        request_bytes: number(attr::REQUEST_BYTES),
        response_bytes: number(attr::RESPONSE_BYTES),
        ..span
    })
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

fn push_example(examples: &mut Vec<String>, trace: u128) {
    if examples.len() < rules::EXAMPLES {
        push_hex(examples, &trace_hex(trace));
    }
}

fn push_hex(examples: &mut Vec<String>, trace_id: &str) {
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

/// Indexes sorted by key: a key's entries are one binary search away.
type SortedIndex = Vec<(SpanKey, usize)>;

fn entries(index: &[(SpanKey, usize)], key: SpanKey) -> impl Iterator<Item = usize> + '_ {
    let first = index.partition_point(|(k, _)| *k < key);
    index[first..]
        .iter()
        .take_while(move |(k, _)| *k == key)
        .map(|(_, i)| *i)
}

/// Caller and callee, as the spans name them.
type EdgeName = (Text, Text);

fn edge_key((from, to): &EdgeName) -> EdgeKey {
    EdgeKey {
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// The spans of one range, indexed for walking calls.
struct Graph<'a> {
    spans: &'a [&'a Span],
    /// (trace, parent) → children.
    children: SortedIndex,
    /// Linked span → consumers that link to it without being its child.
    linked_by: SortedIndex,
}

impl<'a> Graph<'a> {
    fn new(spans: &'a [&'a Span]) -> Self {
        let mut children: SortedIndex = spans
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some(((s.trace, s.parent?), i)))
            .collect();
        let mut linked_by: SortedIndex = spans
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.links
                    .iter()
                    .filter(move |(_, linked)| s.parent != Some(*linked))
                    .map(move |linked| (*linked, i))
            })
            .collect();
        children.sort_unstable();
        linked_by.sort_unstable();
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
        let other = |j: &usize| {
            let callee = &self.spans[*j];
            callee.is_incoming() && callee.service != span.service
        };
        let mut callees: Vec<usize> = entries(&self.children, span.key()).filter(other).collect();
        if span.kind == Kind::Producer {
            callees.extend(entries(&self.linked_by, span.key()).filter(other));
        }
        callees
    }

    /// The edge an outgoing span is on, with the spans that answered it.
    fn edge(&self, i: usize) -> Option<(EdgeName, Vec<usize>)> {
        let span = &self.spans[i];
        let callees = self.callees(i);
        let to = match callees.first() {
            Some(&j) => Arc::clone(&self.spans[j].service),
            None => span.peer.clone().filter(|peer| *peer != span.service)?,
        };
        Some(((Arc::clone(&span.service), to), callees))
    }

    /// The route a call asks for.
    fn route(&self, i: usize, callees: &[usize]) -> Text {
        let span = &self.spans[i];
        span.url_template
            .clone()
            .or_else(|| callees.first().and_then(|&j| self.spans[j].route.clone()))
            .or_else(|| span.rpc_method.clone())
            .unwrap_or_else(|| Arc::clone(&span.name))
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
    retried_calls: HashSet<(u128, u64)>,
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
    spans: &[&Span],
    events: Vec<(SpanKey, BreakerEvent)>,
    start_ns: i64,
    end_ns: i64,
) -> Insights {
    let seconds = (end_ns - start_ns) as f64 / 1e9;
    // The views of services' own requests share nothing with those of calls
    // but the spans: they take a second core.
    std::thread::scope(|scope| {
        let requests = scope.spawn(|| {
            let by_service = requests_by_service(spans);
            (
                instance_insights(&by_service, seconds),
                version_insights(&by_service, seconds),
                transaction_insights(spans),
            )
        });
        let calls = call_insights(spans, events, start_ns, end_ns);
        let (instances, versions, transactions) = requests
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Insights {
            instances,
            versions,
            transactions,
            ..calls
        }
    })
}

/// The views of calls between services: retries, breakers, messaging,
/// encryption and edges (the others left empty).
fn call_insights(
    spans: &[&Span],
    events: Vec<(SpanKey, BreakerEvent)>,
    start_ns: i64,
    end_ns: i64,
) -> Insights {
    let seconds = (end_ns - start_ns) as f64 / 1e9;
    let buckets = Buckets::new(start_ns, end_ns);
    let graph = Graph::new(spans);

    let mut edges: FastMap<EdgeName, EdgeAcc> = FastMap::default();
    let mut retries: FastMap<(EdgeName, Text), RetryAcc> = FastMap::default();
    let mut messaging: FastMap<(EdgeName, Option<Text>), AsyncAcc> = FastMap::default();
    // Attempts without resend_count: (trace, parent, edge, route, start, span).
    // The edge and route by the address of their interned text, to sort fast.
    let mut siblings: Vec<(u128, u64, usize, usize, usize, i64, usize)> = Vec::new();

    for (i, span) in spans.iter().enumerate() {
        if !span.is_outgoing() {
            continue;
        }
        let Some((edge, callees)) = graph.edge(i) else {
            continue;
        };
        if span.kind == Kind::Producer {
            // A message read by several services is a call to each of them.
            let mut consumers: BTreeMap<&Text, Vec<usize>> = BTreeMap::new();
            for &j in &callees {
                consumers.entry(&spans[j].service).or_default().push(j);
            }
            if consumers.is_empty() {
                add_call(edges.entry(edge).or_default(), span, &[], spans);
            }
            for (service, readers) in consumers {
                let edge: EdgeName = (Arc::clone(&span.service), Arc::clone(service));
                add_call(
                    edges.entry(edge.clone()).or_default(),
                    span,
                    &readers,
                    spans,
                );
                let acc = messaging
                    .entry((edge, span.destination.clone()))
                    .or_default();
                acc.destination = span.destination.as_deref().map(str::to_owned);
                acc.system = span.messaging_system.as_deref().map(str::to_owned);
                for &j in &readers {
                    let consumer = &spans[j];
                    acc.lags
                        .push((consumer.start_ns, consumer.start_ns - span.end_ns()));
                    acc.consumer_errors += u64::from(consumer.error);
                    push_example(&mut acc.examples, consumer.trace);
                }
            }
            continue;
        }
        add_call(
            edges.entry(edge.clone()).or_default(),
            span,
            &callees,
            spans,
        );

        let route = graph.route(i, &callees);
        let acc = retries
            .entry((edge.clone(), Arc::clone(&route)))
            .or_insert_with(|| RetryAcc {
                per_bucket: vec![(0, 0); rules::BUCKETS],
                ..RetryAcc::default()
            });
        acc.attempts += 1;
        if acc.method.is_none() {
            acc.method = span.method.as_deref().map(str::to_owned);
        }
        acc.per_bucket[buckets.index(span.start_ns)].0 += 1;
        if span.resend_count > 0 {
            count_retry(acc, span, &buckets);
        } else if let Some(parent) = span.parent {
            siblings.push((
                span.trace,
                parent,
                address(&edge.0),
                address(&edge.1),
                address(&route),
                span.start_ns,
                i,
            ));
        }
    }
    // Repeated siblings without `resend_count`: an attempt after a failed one is a retry.
    siblings.sort_unstable();
    for pair in siblings.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let same_call = (a.0, a.1, a.2, a.3, a.4) == (b.0, b.1, b.2, b.3, b.4);
        if same_call && spans[a.6].error {
            let Some((edge, callees)) = graph.edge(b.6) else {
                continue;
            };
            let route = graph.route(b.6, &callees);
            if let Some(acc) = retries.get_mut(&(edge, route)) {
                count_retry(acc, spans[b.6], &buckets);
            }
        }
    }

    let mut changes: BTreeMap<EdgeKey, Vec<BreakerEvent>> = BTreeMap::new();
    // Few spans carry breaker events: find them in one pass, not through an index of all.
    let wanted: HashMap<SpanKey, usize> = events
        .iter()
        .enumerate()
        .map(|(n, (key, _))| (*key, n))
        .collect();
    let mut positions: Vec<Option<usize>> = vec![None; events.len()];
    if !wanted.is_empty() {
        for (i, span) in spans.iter().enumerate() {
            if let Some(&n) = wanted.get(&span.key()) {
                positions[n] = Some(i);
            }
        }
    }
    for ((_, event), position) in events.into_iter().zip(positions) {
        if let Some((edge, _)) = position.and_then(|i| graph.edge(i)) {
            changes.entry(edge_key(&edge)).or_default().push(event);
        }
    }
    let edges: BTreeMap<EdgeKey, EdgeAcc> = edges
        .into_iter()
        .map(|(edge, acc)| (edge_key(&edge), acc))
        .collect();
    let retries: BTreeMap<(EdgeKey, String), RetryAcc> = retries
        .into_iter()
        .map(|((edge, route), acc)| ((edge_key(&edge), route.to_string()), acc))
        .collect();
    let messaging: BTreeMap<(EdgeKey, Option<String>), AsyncAcc> = messaging
        .into_iter()
        .map(|((edge, destination), acc)| {
            ((edge_key(&edge), destination.map(|d| d.to_string())), acc)
        })
        .collect();
    Insights {
        start_ns,
        end_ns,
        retries: retry_insights(retries, &buckets),
        breakers: breaker_insights(&edges, changes, end_ns),
        instances: Vec::new(),
        versions: Vec::new(),
        messaging: async_insights(messaging, &buckets, start_ns, end_ns),
        transactions: Vec::new(),
        encryption: encryption_insights(&edges),
        edges: edge_insights(edges, seconds),
    }
}

/// One call on an edge, as its caller saw it.
fn add_call(acc: &mut EdgeAcc, span: &Span, callees: &[usize], spans: &[&Span]) {
    acc.durations.push(span.duration_ns);
    acc.errors += u64::from(span.error);
    match acc.protocols.get_mut(span.protocol()) {
        Some(count) => *count += 1,
        None => {
            acc.protocols.insert(span.protocol().to_owned(), 1);
        }
    }
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
            push_example(&mut acc.plain_examples, span.trace);
        }
        None => {}
    }
    push_example(&mut acc.examples, span.trace);
    if span.error {
        push_example(&mut acc.error_examples, span.trace);
        let answered = callees.iter().any(|&j| spans[j].kind == Kind::Server);
        if span.kind == Kind::Client && !answered && span.duration_ns < rules::FAST_FAILURE_NS {
            acc.fast_failures.push(span.duration_ns);
            push_example(&mut acc.fast_examples, span.trace);
        }
    }
}

fn count_retry(acc: &mut RetryAcc, span: &Span, buckets: &Buckets) {
    acc.retries += 1;
    acc.per_bucket[buckets.index(span.start_ns)].1 += 1;
    acc.retried_calls
        .insert((span.trace, span.parent.unwrap_or_default()));
    let unsafe_method = matches!(span.method.as_deref(), Some("POST" | "PATCH"));
    if unsafe_method && !span.idempotency_key {
        acc.non_idempotent += 1;
    }
    push_example(&mut acc.examples, span.trace);
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
    out.sort_by_key(|insight| std::cmp::Reverse(insight.retries));
    out
}

fn breaker_insights(
    edges: &BTreeMap<EdgeKey, EdgeAcc>,
    mut changes: BTreeMap<EdgeKey, Vec<BreakerEvent>>,
    end_ns: i64,
) -> Vec<BreakerInsight> {
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
            push_hex(&mut examples, &event.trace_id);
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
    out.sort_by_key(|insight| std::cmp::Reverse(insight.fast_failures));
    out
}

/// The spans that measure a service's own work: its server spans, or its
/// consumer spans when it has no server spans.
fn requests_by_service<'a>(spans: &[&'a Span]) -> BTreeMap<&'a str, Vec<&'a Span>> {
    let mut servers: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    let mut consumers: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for span in spans {
        match span.kind {
            Kind::Server => servers.entry(&span.service).or_default().push(span),
            Kind::Consumer => consumers.entry(&span.service).or_default().push(span),
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
    key: impl Fn(&'a Span) -> Option<&'a Text>,
    seconds: f64,
) -> Vec<Group<'a>> {
    let mut by: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for &span in spans {
        if let Some(name) = key(span) {
            by.entry(name).or_default().push(span);
        }
    }
    by.into_iter()
        .map(|(name, spans)| {
            let name = name.to_owned();
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

fn instance_insights(
    by_service: &BTreeMap<&str, Vec<&Span>>,
    seconds: f64,
) -> Vec<InstanceInsight> {
    let mut out = Vec::new();
    for (&service, requests) in by_service {
        let instances = groups(requests, |s| s.instance.as_ref(), seconds);
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
                        push_example(&mut examples, span.trace);
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

fn version_insights(by_service: &BTreeMap<&str, Vec<&Span>>, seconds: f64) -> Vec<VersionInsight> {
    let mut out = Vec::new();
    for (&service, requests) in by_service {
        let versions = groups(requests, |s| s.version.as_ref(), seconds);
        if versions.len() < 2 {
            continue;
        }
        let Some(baseline) = versions.iter().max_by_key(|g| g.latencies.requests) else {
            continue;
        };
        let mut regression: Option<(String, String)> = None;
        for candidate in versions.iter().filter(|g| g.name != baseline.name) {
            if let Some(why) = worse(&candidate.latencies, &baseline.latencies)
                && regression.is_none()
            {
                regression = Some((candidate.name.clone(), why));
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
                        push_example(&mut examples, span.trace);
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

fn transaction_insights(spans: &[&Span]) -> Vec<TransactionInsight> {
    let mut by_trace: HashMap<u128, Vec<&Span>> = HashMap::new();
    for span in spans {
        if span.tx_outcome.is_some() || span.tx_step.is_some() || span.compensation {
            by_trace.entry(span.trace).or_default().push(span);
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
            root.service.to_string(),
            root.tx_name.as_deref().unwrap_or(&root.name).to_owned(),
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
            *entry.outcomes.entry(outcome.to_string()).or_default() += 1;
        }
        if let Some(step) = &root.tx_failed_step {
            *entry.failed_steps.entry(step.to_string()).or_default() += 1;
        }
        let compensations: Vec<&&Span> = spans.iter().filter(|s| s.compensation).collect();
        // A step's outcome is that of its last attempt.
        let mut steps: HashMap<&str, &Span> = HashMap::new();
        for span in spans.iter().filter(|s| !s.compensation && s.is_outgoing()) {
            if let Some(step) = &span.tx_step {
                let latest = steps.entry(step.as_ref()).or_insert(span);
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
                push_hex(&mut examples, trace);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wanted_attribute_has_its_own_slot() {
        for (index, key) in ATTRIBUTES.iter().enumerate() {
            assert_eq!(attribute_slot(key), Some(index), "{key}");
        }
        assert_eq!(attribute_slot("http.route"), None);
    }

    #[test]
    fn merged_partitions_share_one_copy_of_each_text() {
        let part = |service: &str, peer: &str| {
            let mut scanned = Scanned::default();
            let span = Span {
                service: scanned.interner.text(service),
                name: scanned.interner.text("GET /"),
                peer: Some(scanned.interner.text(peer)),
                ..Span::default()
            };
            scanned.spans.push(vec![span]);
            scanned
        };
        let (chunks, _) = Scanned::merge(vec![part("a", "b"), part("b", "a"), part("a", "c")]);
        let spans: Vec<&Span> = chunks.iter().flatten().collect();
        assert_eq!(spans.len(), 3);
        let same = |x: &Text, y: &Text| address(x) == address(y);
        assert!(same(&spans[0].service, &spans[2].service), "a");
        assert!(same(&spans[0].name, &spans[1].name), "GET /");
        assert!(
            spans[0]
                .peer
                .as_ref()
                .is_some_and(|peer| same(&spans[1].service, peer)),
            "b"
        );
        assert_eq!(&*spans[2].peer.clone().unwrap_or_default(), "c");
    }
}
