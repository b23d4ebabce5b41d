//! `/explore`: pick a metric (and a service), chart its series over time.
//! (`/metrics` stays free for Weft's own Prometheus metrics.)

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use weft_query::MetricInfo;

use super::charts::line_chart;
use super::format::duration;
use super::{PageError, Range, RangeQuery, render, url_encode};
use crate::routes::AppState;

const BUCKETS: i64 = 60;

#[derive(Debug, Default, Deserialize)]
pub struct ExploreQuery {
    metric: Option<String>,
    service: Option<String>,
    lookback: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

struct MetricLink {
    name: String,
    metric_type: String,
    unit: String,
    services: String,
    points: u64,
    href: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "explore.html")]
struct ExplorePage {
    title: &'static str,
    nav: &'static str,
    lookbacks: Vec<(String, String)>,
    lookback: String,
    range_text: String,
    metrics: Vec<MetricLink>,
    metric: String,
    service: String,
    services: Vec<String>,
    description: String,
    chart: String,
}

fn plain(value: f64) -> String {
    if value.abs() >= 1000.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<ExploreQuery>,
) -> Result<Response, PageError> {
    let range = Range::resolve(&RangeQuery {
        lookback: query.lookback.clone(),
        start: query.start.clone(),
        end: query.end.clone(),
    })?;
    let metric = query.metric.clone().unwrap_or_default();
    let service = query.service.clone().unwrap_or_default();
    let known: Vec<MetricInfo> = state
        .engine
        .metric_names(range.start_ns, range.end_ns)
        .await?;
    let services = known
        .iter()
        .find(|m| m.name == metric)
        .map(|m| m.services.clone())
        .unwrap_or_default();
    let (mut chart, mut description) = (String::new(), String::new());
    if !metric.is_empty() {
        let step = ((range.end_ns - range.start_ns) / BUCKETS).max(1_000_000_000);
        let data = state
            .engine
            .metric_chart(
                &metric,
                Some(service.as_str()).filter(|s| !s.is_empty()),
                range.start_ns,
                range.end_ns,
                step,
            )
            .await?;
        description = match (data.metric_type.as_str(), data.temporality.as_str()) {
            ("", _) => "No data points in this range.".to_owned(),
            ("histogram", _) => format!(
                "histogram ({}): p50, p95 and p99 estimated from the bucket counts, per {}",
                data.temporality,
                duration(step)
            ),
            ("sum", "delta") => format!("delta sum: total per second, per {}", duration(step)),
            (kind, _) => format!("{kind}: mean per {}", duration(step)),
        };
        let unit = data.unit.clone();
        let series: Vec<(&str, Vec<(i64, f64)>)> = data
            .series
            .iter()
            .map(|s| (s.label.as_str(), s.points.clone()))
            .collect();
        let title = if unit.is_empty() {
            metric.clone()
        } else {
            format!("{metric} ({unit})")
        };
        chart = line_chart(&title, &series, range.start_ns, range.end_ns, plain);
    }
    let metrics = known
        .into_iter()
        .map(|m| MetricLink {
            href: format!("/explore?metric={}&{}", url_encode(&m.name), range.query()),
            selected: m.name == metric,
            services: m.services.join(", "),
            name: m.name,
            metric_type: m.metric_type,
            unit: m.unit,
            points: m.points,
        })
        .collect();
    let page = ExplorePage {
        title: "Metrics",
        nav: "explore",
        lookbacks: range.options(),
        lookback: range.lookback.clone(),
        range_text: range.text(),
        metrics,
        metric,
        service,
        services,
        description,
        chart,
    };
    Ok(render(&page))
}
