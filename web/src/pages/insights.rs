//! `/insights`: one view per question engineers ask about how their services
//! talk — retries, breakers, load balancing, versions, sync and async,
//! transactions, encryption, traffic per edge — each with example traces.
//! The service page shows the same views narrowed to one service.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use weft_query::{HistogramBar, Insights, Latencies, Point};

use super::charts::{escape, sparkline};
use super::format::{duration, percent, rate};
use super::{PageError, Range, RangeQuery, render, url_encode};
use crate::routes::AppState;

/// A trace id and its link.
pub struct Example {
    pub id: String,
    pub href: String,
}

fn examples(ids: &[String]) -> Vec<Example> {
    ids.iter()
        .map(|id| Example {
            id: id.chars().take(8).collect(),
            href: format!("/traces/{id}"),
        })
        .collect()
}

pub struct Figures {
    pub requests: u64,
    pub rate: String,
    pub error_rate: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
}

fn figures(l: &Latencies) -> Figures {
    Figures {
        requests: l.requests,
        rate: rate(l.rate_per_sec),
        error_rate: percent(l.error_rate),
        p50: duration(l.p50_ns as i64),
        p95: duration(l.p95_ns as i64),
        p99: duration(l.p99_ns as i64),
    }
}

pub struct RetryRow {
    pub from: String,
    pub to: String,
    pub route: String,
    pub attempts: u64,
    pub retries: u64,
    pub retried_calls: u64,
    pub share: String,
    pub extra_load: String,
    pub non_idempotent: u64,
    pub storm: bool,
    pub sparkline: String,
    pub examples: Vec<Example>,
}

pub struct BreakerRow {
    pub from: String,
    pub to: String,
    pub calls: u64,
    pub errors: u64,
    pub fast_failures: u64,
    pub fast_p50: String,
    pub changes: usize,
    pub open: String,
    pub timeline: String,
    pub examples: Vec<Example>,
}

pub struct InstanceRow {
    pub name: String,
    pub share: String,
    pub figures: Figures,
    pub outlier: bool,
    pub examples: Vec<Example>,
}

pub struct InstanceGroup {
    pub service: String,
    pub imbalance: String,
    pub outlier: Option<String>,
    pub evidence: String,
    pub rows: Vec<InstanceRow>,
}

pub struct VersionRow {
    pub name: String,
    pub figures: Figures,
    pub regression: bool,
    pub baseline: bool,
    pub examples: Vec<Example>,
}

pub struct VersionGroup {
    pub service: String,
    pub verdict: String,
    pub regression: bool,
    pub evidence: String,
    pub chart: String,
    pub rows: Vec<VersionRow>,
}

pub struct EdgeRow {
    pub from: String,
    pub to: String,
    pub protocols: String,
    pub mode: &'static str,
    pub figures: Figures,
    pub success_rate: String,
    pub request_bytes: String,
    pub response_bytes: String,
    pub chart: String,
    pub examples: Vec<Example>,
}

pub struct AsyncRow {
    pub from: String,
    pub to: String,
    pub destination: String,
    pub messages: u64,
    pub consumer_errors: u64,
    pub lag_p50: String,
    pub lag_p95: String,
    pub falling_behind: bool,
    pub sparkline: String,
    pub examples: Vec<Example>,
}

pub struct TransactionRow {
    pub service: String,
    pub name: String,
    pub total: u64,
    pub outcomes: String,
    pub failed_steps: String,
    pub compensated: u64,
    pub compensation_p50: String,
    pub compensation_p95: String,
    pub half_done: u64,
    pub compensated_examples: Vec<Example>,
    pub half_done_examples: Vec<Example>,
}

pub struct EncryptionRow {
    pub from: String,
    pub to: String,
    pub calls: u64,
    pub tls: u64,
    pub plain: u64,
    pub unknown: u64,
    pub share: String,
    pub plain_text: bool,
    pub examples: Vec<Example>,
}

/// Every view, ready for the template.
pub struct InsightViews {
    pub retries: Vec<RetryRow>,
    pub breakers: Vec<BreakerRow>,
    pub instances: Vec<InstanceGroup>,
    pub versions: Vec<VersionGroup>,
    pub edges: Vec<EdgeRow>,
    pub messaging: Vec<AsyncRow>,
    pub transactions: Vec<TransactionRow>,
    pub encryption: Vec<EncryptionRow>,
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bytes(value: Option<f64>) -> String {
    match value {
        None => "—".to_owned(),
        Some(b) if b >= 1_048_576.0 => format!("{:.1} MiB", b / 1_048_576.0),
        Some(b) if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        Some(b) => format!("{b:.0} B"),
    }
}

fn values(points: &[Point]) -> Vec<f64> {
    points.iter().map(|p| p.value).collect()
}

/// A strip over the range with the breaker's open periods in red.
fn timeline(periods: &[(i64, i64)], start_ns: i64, end_ns: i64) -> String {
    let width = 240.0;
    let span = (end_ns - start_ns).max(1) as f64;
    let mut svg = format!(
        r#"<svg class="timeline" viewBox="0 0 {width} 12" width="{width}" height="12" role="img" aria-label="open periods"><rect class="closed" x="0" y="2" width="{width}" height="8"/>"#
    );
    for (from, to) in periods {
        let x = ((from - start_ns) as f64 / span * width).clamp(0.0, width);
        let w = (((to - from) as f64 / span) * width).max(1.0);
        svg.push_str(&format!(
            r#"<rect class="open" x="{x:.1}" y="0" width="{w:.1}" height="12"><title>open {}</title></rect>"#,
            duration(to - from)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Latency histograms of several versions over the same buckets, as shares,
/// one line each so they can be read on top of each other.
fn overlaid(series: &[(String, &[HistogramBar])]) -> String {
    let (width, height, left, bottom) = (480.0, 120.0, 8.0, 100.0);
    let Some((_, first)) = series.first() else {
        return String::new();
    };
    // Only the buckets some version uses, so the lines spread over the chart.
    let used: Vec<usize> = (0..first.len())
        .filter(|&i| {
            series
                .iter()
                .any(|(_, bars)| bars.get(i).is_some_and(|b| b.count > 0))
        })
        .collect();
    let (Some(&lo), Some(&hi)) = (used.first(), used.last()) else {
        return String::new();
    };
    let slots = (hi - lo + 1) as f64;
    let x_of = |i: usize| left + (i - lo) as f64 / (slots - 1.0).max(1.0) * (width - 2.0 * left);
    let mut svg = format!(
        r#"<svg class="chart overlaid" viewBox="0 0 {width} {height}" role="img" aria-label="latency histograms by version">"#
    );
    for (index, (name, bars)) in series.iter().enumerate() {
        let total: u64 = bars.iter().map(|b| b.count).sum::<u64>().max(1);
        let points: Vec<String> = (lo..=hi)
            .map(|i| {
                let share = bars.get(i).map_or(0, |b| b.count) as f64 / total as f64;
                format!("{:.1},{:.1}", x_of(i), bottom - share * (bottom - 12.0))
            })
            .collect();
        svg.push_str(&format!(
            r#"<polyline class="series s{index}" points="{}"><title>{}</title></polyline><text class="legend s{index}" x="{:.1}" y="10" text-anchor="end">{}</text>"#,
            points.join(" "),
            escape(name),
            width - 8.0 - 70.0 * (series.len() - 1 - index) as f64,
            escape(name)
        ));
    }
    for i in [lo, hi] {
        let label = first
            .get(i)
            .and_then(|b| b.le_ns)
            .map_or("more".to_owned(), |le| format!("≤{}", duration(le)));
        svg.push_str(&format!(
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="{}">{}</text>"#,
            x_of(i),
            bottom + 14.0,
            if i == lo { "start" } else { "end" },
            escape(&label)
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn mini_histogram(bars: &[HistogramBar]) -> String {
    let values: Vec<f64> = bars.iter().map(|b| b.count as f64).collect();
    let first = values.iter().position(|v| *v > 0.0).unwrap_or(0);
    let last = values.iter().rposition(|v| *v > 0.0).unwrap_or(0);
    sparkline(&values[first..=last.max(first)])
}

impl InsightViews {
    pub fn new(insights: &Insights) -> Self {
        let (start_ns, end_ns) = (insights.start_ns, insights.end_ns);
        Self {
            retries: insights
                .retries
                .iter()
                .map(|r| RetryRow {
                    from: r.edge.from.clone(),
                    to: r.edge.to.clone(),
                    route: match &r.method {
                        Some(method) => format!("{method} {}", r.route),
                        None => r.route.clone(),
                    },
                    attempts: r.attempts,
                    retries: r.retries,
                    retried_calls: r.retried_calls,
                    share: percent(r.retry_share),
                    extra_load: percent(r.extra_load),
                    non_idempotent: r.non_idempotent_retries,
                    storm: r.storm,
                    sparkline: sparkline(&values(&r.series)),
                    examples: examples(&r.example_traces),
                })
                .collect(),
            breakers: insights
                .breakers
                .iter()
                .map(|b| BreakerRow {
                    from: b.edge.from.clone(),
                    to: b.edge.to.clone(),
                    calls: b.calls,
                    errors: b.errors,
                    fast_failures: b.fast_failures,
                    fast_p50: duration(b.fast_failure_p50_ns as i64),
                    changes: b.state_changes.len(),
                    open: duration(b.open_ns),
                    timeline: timeline(
                        &b.open_periods
                            .iter()
                            .map(|p| (p.start_ns, p.end_ns))
                            .collect::<Vec<_>>(),
                        start_ns,
                        end_ns,
                    ),
                    examples: examples(&b.example_traces),
                })
                .collect(),
            instances: insights
                .instances
                .iter()
                .map(|i| InstanceGroup {
                    service: i.service.clone(),
                    imbalance: format!("{:.2}", i.imbalance),
                    outlier: i.outlier.clone(),
                    evidence: i.evidence.clone(),
                    rows: i
                        .instances
                        .iter()
                        .map(|s| InstanceRow {
                            name: s.instance.clone(),
                            share: percent(s.share),
                            figures: figures(&s.latencies),
                            outlier: i.outlier.as_deref() == Some(s.instance.as_str()),
                            examples: examples(&s.example_traces),
                        })
                        .collect(),
                })
                .collect(),
            versions: insights
                .versions
                .iter()
                .map(|v| VersionGroup {
                    service: v.service.clone(),
                    verdict: v.verdict.clone(),
                    regression: v.regression.is_some(),
                    evidence: v.evidence.clone(),
                    chart: overlaid(
                        &v.versions
                            .iter()
                            .map(|s| (s.version.clone(), s.histogram.as_slice()))
                            .collect::<Vec<_>>(),
                    ),
                    rows: v
                        .versions
                        .iter()
                        .map(|s| VersionRow {
                            name: s.version.clone(),
                            figures: figures(&s.latencies),
                            regression: v.regression.as_deref() == Some(s.version.as_str()),
                            baseline: v.baseline == s.version,
                            examples: examples(&s.example_traces),
                        })
                        .collect(),
                })
                .collect(),
            edges: insights
                .edges
                .iter()
                .map(|e| EdgeRow {
                    from: e.edge.from.clone(),
                    to: e.edge.to.clone(),
                    protocols: counts(&e.protocols),
                    mode: if e.synchronous { "sync" } else { "async" },
                    figures: figures(&e.latencies),
                    success_rate: percent(e.success_rate),
                    request_bytes: bytes(e.request_bytes_avg),
                    response_bytes: bytes(e.response_bytes_avg),
                    chart: mini_histogram(&e.histogram),
                    examples: examples(&e.example_traces),
                })
                .collect(),
            messaging: insights
                .messaging
                .iter()
                .map(|a| AsyncRow {
                    from: a.edge.from.clone(),
                    to: a.edge.to.clone(),
                    destination: a.destination.clone().unwrap_or_default(),
                    messages: a.messages,
                    consumer_errors: a.consumer_errors,
                    lag_p50: duration(a.lag_p50_ns as i64),
                    lag_p95: duration(a.lag_p95_ns as i64),
                    falling_behind: a.falling_behind,
                    sparkline: sparkline(&values(&a.lag_series)),
                    examples: examples(&a.example_traces),
                })
                .collect(),
            transactions: insights
                .transactions
                .iter()
                .map(|t| TransactionRow {
                    service: t.service.clone(),
                    name: t.name.clone(),
                    total: t.total,
                    outcomes: counts(&t.outcomes),
                    failed_steps: counts(&t.failed_steps),
                    compensated: t.compensated,
                    compensation_p50: duration(t.compensation_p50_ns as i64),
                    compensation_p95: duration(t.compensation_p95_ns as i64),
                    half_done: t.half_done,
                    compensated_examples: examples(&t.compensated_traces),
                    half_done_examples: examples(&t.half_done_traces),
                })
                .collect(),
            encryption: insights
                .encryption
                .iter()
                .map(|e| EncryptionRow {
                    from: e.edge.from.clone(),
                    to: e.edge.to.clone(),
                    calls: e.calls,
                    tls: e.tls,
                    plain: e.plain,
                    unknown: e.unknown,
                    share: e.tls_share.map_or("unknown".to_owned(), percent),
                    plain_text: e.plain_text,
                    examples: examples(&e.example_traces),
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "insights.html")]
struct InsightsPage {
    title: String,
    nav: &'static str,
    lookbacks: Vec<(String, String)>,
    lookback: String,
    range_text: String,
    /// The service the views are narrowed to; empty for all.
    service: String,
    services: Vec<String>,
    views: InsightViews,
    json_href: String,
}

/// `/insights?service=&lookback=` (or `start`/`end`).
#[derive(Debug, Deserialize)]
pub struct InsightsQuery {
    service: Option<String>,
    lookback: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<InsightsQuery>,
) -> Result<Response, PageError> {
    let range = Range::resolve(&RangeQuery {
        lookback: query.lookback,
        start: query.start,
        end: query.end,
    })?;
    let service = query.service.unwrap_or_default().trim().to_owned();
    let mut insights = state.engine.insights(range.start_ns, range.end_ns).await?;
    let mut json_href = format!("/api/insights?{}", range.query());
    if !service.is_empty() {
        insights = insights.for_service(&service);
        json_href.push_str(&format!("&service={}", url_encode(&service)));
    }
    Ok(render(&InsightsPage {
        title: if service.is_empty() {
            "Insights".to_owned()
        } else {
            format!("Insights: {service}")
        },
        nav: "insights",
        lookbacks: range.options(),
        lookback: range.lookback.clone(),
        range_text: range.text(),
        services: state.engine.services().await?,
        service,
        views: InsightViews::new(&insights),
        json_href,
    }))
}
