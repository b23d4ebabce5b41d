//! DataFusion over the Weft store.
//!
//! [`QueryEngine`] owns the one place where the DataFusion session is built and
//! the `spans` and `metrics` tables are registered (so a distributed engine can
//! take its place later), and runs read-only SQL in a sandbox. Results leave this
//! crate as [`SqlResult`], which renders itself as JSON rows, CSV or a text
//! table, so callers never handle Arrow arrays. Beside SQL it answers the
//! questions the API and pages ask: traces assembled (`assembly`), the
//! service map, RED figures and histograms (`stats`, from `rollups` of closed
//! hours where they exist), metric series (`metrics`).

mod assembly;
mod catalog;
mod engine;
mod insights;
mod json;
mod metrics;
mod rollups;
mod sandbox;
mod scan;
mod sketch;
mod stats;
mod traces;

pub use assembly::{AssembledTrace, CriticalSegment, TraceSpan, assemble};
pub use engine::{QueryEngine, QueryError, QueryLimits, SqlColumn, SqlJson, SqlResult};
pub use insights::{
    AsyncInsight, BreakerEvent, BreakerInsight, EdgeInsight, EdgeKey, EncryptionInsight,
    HistogramBar, Insights, InstanceInsight, InstanceStats, Latencies, OpenPeriod, Point,
    RetryInsight, TransactionInsight, VersionInsight, VersionStats, rules as insight_rules,
};
pub use metrics::{MetricChart, MetricInfo, MetricSeries, histogram_quantile};
pub use rollups::{ROLLUP_STEP_NS, ROLLUPS_DIR, RollupReport};
pub use sandbox::Refusal;
pub use stats::{
    Edge, EdgeKind, Histogram, HistogramBucket, LatencySummary, RedBucket, RedRow, RequestFilter,
    RequestStats, histogram_bounds,
};
pub use traces::{
    Attribute, AttributeValue, Dependency, Operation, SpanData, SpanEvent, SpanLink, TraceSearch,
    read_spans,
};
