//! `/services` (every service's RED figures with a sparkline) and
//! `/services/{service}` (RED over time, operations, latency histograms).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use weft_query::{RedBucket, RequestFilter};

use super::charts::{Bar, histogram, line_chart, service_colour, sparkline};
use super::format::{duration, percent, rate};
use super::{Figures, PageError, Range, RangeQuery, render, service_href, url_encode};
use crate::routes::AppState;

/// Buckets of the charts over any range.
const BUCKETS: i64 = 60;
/// A sparkline needs fewer points than a chart: a day's is hourly, which the
/// hour rollups answer.
const SPARKLINE_BUCKETS: i64 = 24;
/// Histograms drawn on a service page: its busiest operations.
const MAX_HISTOGRAMS: usize = 8;

struct ServiceRow {
    name: String,
    href: String,
    colour: String,
    figures: Figures,
    sparkline: String,
}

#[derive(Template)]
#[template(path = "services.html")]
struct ServicesPage {
    title: &'static str,
    nav: &'static str,
    lookbacks: Vec<(String, String)>,
    lookback: String,
    range_text: String,
    rows: Vec<ServiceRow>,
}

/// About `buckets` time buckets of a length people read easily, starting
/// at a multiple of it (as Grafana does): the range is widened to the start
/// of its first bucket, so every bucket is whole and closed hours' buckets
/// are answered from the rollups.
fn series_range(range: &Range, buckets: i64) -> (Range, i64) {
    let step = crate::params::readable_step_for(range.start_ns, range.end_ns, buckets)
        .max((range.end_ns - range.start_ns) / buckets);
    let mut aligned = range.clone();
    aligned.start_ns -= range.start_ns.rem_euclid(step);
    (aligned, step)
}

fn filter(range: &Range, service: Option<&str>, operation: Option<&str>) -> RequestFilter {
    RequestFilter {
        service: service.map(str::to_owned),
        operation: operation.map(str::to_owned),
        start_ns: range.start_ns,
        end_ns: range.end_ns,
    }
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, PageError> {
    let range = Range::resolve(&query)?;
    let (series, step) = series_range(&range, SPARKLINE_BUCKETS);
    let stats = state
        .engine
        .request_stats(&filter(&series, None, None), Some(step))
        .await?;
    // A range that starts on a step (a whole day, say) is read once for both.
    let summary = if series.start_ns == range.start_ns {
        stats.services()
    } else {
        state
            .engine
            .red_summary(&filter(&range, None, None))
            .await?
    };
    let counts = stats.counts();
    let mut rows = Vec::with_capacity(summary.len());
    for row in summary {
        let counts: Vec<f64> = counts
            .iter()
            .find(|(service, _)| *service == row.service)
            .map(|(_, counts)| counts.iter().map(|&c| c as f64).collect())
            .unwrap_or_default();
        rows.push(ServiceRow {
            href: service_href(&row.service, &range),
            colour: service_colour(&row.service),
            figures: Figures::new(&row.stats, range.seconds()),
            sparkline: sparkline(&counts),
            name: row.service,
        });
    }
    let page = ServicesPage {
        title: "Services",
        nav: "services",
        lookbacks: range.options(),
        lookback: range.lookback.clone(),
        range_text: range.text(),
        rows,
    };
    Ok(render(&page))
}

struct OperationRow {
    name: String,
    href: String,
    figures: Figures,
}

struct HistogramView {
    operation: String,
    summary: String,
    svg: String,
}

#[derive(Template)]
#[template(path = "service.html")]
struct ServicePage {
    title: String,
    nav: &'static str,
    service: String,
    colour: String,
    lookbacks: Vec<(String, String)>,
    lookback: String,
    range_text: String,
    figures: Figures,
    traces_href: String,
    rate_chart: String,
    error_chart: String,
    latency_chart: String,
    operations: Vec<OperationRow>,
    histograms: Vec<HistogramView>,
    insights_href: String,
}

/// The search for a service's (and operation's) traces in a duration bucket.
fn traces_href(
    service: &str,
    operation: Option<&str>,
    min_ns: Option<i64>,
    max_ns: Option<i64>,
    range: &Range,
) -> String {
    let mut href = format!("/?service={}&{}", url_encode(service), range.query());
    if let Some(operation) = operation {
        href.push_str(&format!("&operation={}", url_encode(operation)));
    }
    if let Some(min) = min_ns {
        href.push_str(&format!("&minDuration={}us", min / 1000));
    }
    if let Some(max) = max_ns {
        // Buckets are [min, max); the search bound is inclusive.
        href.push_str(&format!("&maxDuration={}us", (max / 1000 - 1).max(0)));
    }
    href
}

fn charts(buckets: &[RedBucket], step: i64, range: &Range) -> (String, String, String) {
    let seconds = step as f64 / 1e9;
    let points = |value: &dyn Fn(&RedBucket) -> f64| -> Vec<(i64, f64)> {
        buckets
            .iter()
            .map(|b| (b.start_ns + step / 2, value(b)))
            .collect()
    };
    // An empty bucket has no error rate or latency: those lines skip it
    // rather than drop to zero.
    let measured = |value: &dyn Fn(&RedBucket) -> f64| -> Vec<(i64, f64)> {
        buckets
            .iter()
            .filter(|b| b.stats.count > 0)
            .map(|b| (b.start_ns + step / 2, value(b)))
            .collect()
    };
    let rate_chart = line_chart(
        "Requests per second",
        &[("rate", points(&|b| b.stats.count as f64 / seconds))],
        range.start_ns,
        range.end_ns,
        rate,
    );
    let error_chart = line_chart(
        "Error rate",
        &[("errors", measured(&|b| b.stats.error_rate()))],
        range.start_ns,
        range.end_ns,
        percent,
    );
    let latency_chart = line_chart(
        "Latency",
        &[
            ("p50", measured(&|b| b.stats.p50_ns)),
            ("p95", measured(&|b| b.stats.p95_ns)),
            ("p99", measured(&|b| b.stats.p99_ns)),
        ],
        range.start_ns,
        range.end_ns,
        |ns| duration(ns as i64),
    );
    (rate_chart, error_chart, latency_chart)
}

pub async fn page(
    State(state): State<AppState>,
    Path(service): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, PageError> {
    let range = Range::resolve(&query)?;
    // One read for the figures, operations and histograms, one for the series.
    let stats = state
        .engine
        .request_stats(&filter(&range, Some(&service), None), None)
        .await?;
    let overall = stats.services().into_iter().next();
    if overall.is_none() && !state.engine.services().await?.contains(&service) {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Service not found",
            format!("No span of a service named {service:?} is in the store."),
        ));
    }
    let (series_range, step) = series_range(&range, BUCKETS);
    let series = state
        .engine
        .red_series(&filter(&series_range, Some(&service), None), step)
        .await?;
    let (rate_chart, error_chart, latency_chart) = charts(&series, step, &series_range);
    let mut operations = stats.operations(&service);
    operations.sort_by(|a, b| {
        b.stats
            .count
            .cmp(&a.stats.count)
            .then_with(|| a.operation.cmp(&b.operation))
    });

    let mut histograms = Vec::new();
    for row in operations.iter().take(MAX_HISTOGRAMS) {
        let Some(operation) = row.operation.as_deref() else {
            continue;
        };
        let histogram_data = stats.histogram(Some(operation));
        let bars: Vec<Bar> = histogram_data
            .buckets
            .iter()
            .map(|b| Bar {
                label: duration(b.min_ns),
                count: b.count,
                href: traces_href(&service, Some(operation), Some(b.min_ns), b.max_ns, &range),
            })
            .collect();
        histograms.push(HistogramView {
            operation: operation.to_owned(),
            summary: format!(
                "{} requests · p50 {} · p95 {} · p99 {}",
                histogram_data.stats.count,
                duration(histogram_data.stats.p50_ns as i64),
                duration(histogram_data.stats.p95_ns as i64),
                duration(histogram_data.stats.p99_ns as i64)
            ),
            svg: histogram(&bars),
        });
    }

    let insights_href = format!(
        "/insights?service={}&{}",
        url_encode(&service),
        range.query()
    );
    let seconds = range.seconds();
    let page = ServicePage {
        title: service.clone(),
        nav: "services",
        colour: service_colour(&service),
        lookbacks: range.options(),
        lookback: range.lookback.clone(),
        range_text: range.text(),
        figures: Figures::new(&overall.map(|r| r.stats).unwrap_or_default(), seconds),
        traces_href: traces_href(&service, None, None, None, &range),
        rate_chart,
        error_chart,
        latency_chart,
        operations: operations
            .into_iter()
            .map(|row| {
                let name = row.operation.unwrap_or_default();
                OperationRow {
                    href: traces_href(&service, Some(&name), None, None, &range),
                    figures: Figures::new(&row.stats, seconds),
                    name,
                }
            })
            .collect(),
        histograms,
        insights_href,
        service,
    };
    Ok(render(&page))
}
