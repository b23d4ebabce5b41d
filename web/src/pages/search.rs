//! `/`: find traces by service, operation, attributes, duration and errors;
//! a duration-over-time scatter and the result list, newest first.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use weft_query::{TraceSearch, assemble};

use super::charts::{Dot, scatter, service_colour};
use super::format::{duration, timestamp};
use super::{PageError, Range, RangeQuery, render};
use crate::params::parse_go_duration;
use crate::routes::AppState;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    service: Option<String>,
    operation: Option<String>,
    /// `key=value` pairs separated by spaces.
    tags: Option<String>,
    #[serde(rename = "minDuration")]
    min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    max_duration: Option<String>,
    lookback: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
    errors: Option<String>,
}

/// The form as the user left it.
struct Form {
    service: String,
    operation: String,
    tags: String,
    min_duration: String,
    max_duration: String,
    lookback: String,
    limit: String,
    errors: bool,
}

struct ResultRow {
    trace_id: String,
    short_id: String,
    root_service: String,
    root_operation: String,
    start: String,
    duration: String,
    span_count: usize,
    services: Vec<(String, usize, String)>,
    errors: usize,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    title: &'static str,
    nav: &'static str,
    form: Form,
    services: Vec<String>,
    operations: Vec<String>,
    lookbacks: Vec<(String, String)>,
    /// `start` and `end` as given, kept until another range is picked.
    explicit_range: Vec<(String, String)>,
    error: Option<String>,
    scatter: String,
    results: Vec<ResultRow>,
    range_text: String,
}

fn text(value: &Option<String>) -> String {
    value
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned()
}

/// Parses `key=value key2=value2`.
fn parse_tags(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(format!("attribute filter {pair:?} is not key=value")),
        })
        .collect()
}

fn parse_duration(name: &str, text: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    parse_go_duration(text)
        .map(Some)
        .ok_or_else(|| format!("{name} {text:?} is not a duration like 250ms, 1.5s or 2m"))
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<SearchQuery>,
) -> Result<Response, PageError> {
    let form = Form {
        service: text(&query.service),
        operation: text(&query.operation),
        tags: text(&query.tags),
        min_duration: text(&query.min_duration),
        max_duration: text(&query.max_duration),
        lookback: query
            .lookback
            .clone()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or_else(|| "1h".to_owned()),
        limit: query
            .limit
            .clone()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_LIMIT.to_string()),
        errors: query.errors.as_deref() == Some("true"),
    };
    let range = Range::resolve(&RangeQuery {
        lookback: Some(form.lookback.clone()),
        start: query.start.clone(),
        end: query.end.clone(),
    })?;
    let form = Form {
        lookback: range.lookback.clone(),
        ..form
    };
    let services = state.engine.services().await?;
    let operations = if form.service.is_empty() {
        Vec::new()
    } else {
        let mut names: Vec<String> = state
            .engine
            .operations(&form.service, None)
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.dedup();
        names
    };

    let search = (|| -> Result<TraceSearch, String> {
        let mut tags = parse_tags(&form.tags)?;
        if form.errors {
            tags.push(("error".to_owned(), "true".to_owned()));
        }
        let limit: usize = form
            .limit
            .parse()
            .map_err(|_| format!("limit {:?} is not a whole number", form.limit))?;
        Ok(TraceSearch {
            service: form.service.clone(),
            operation: Some(form.operation.clone()).filter(|o| !o.is_empty()),
            tags,
            min_duration_ns: parse_duration("min duration", &form.min_duration)?,
            max_duration_ns: parse_duration("max duration", &form.max_duration)?,
            start_ns: range.start_ns,
            end_ns: range.end_ns,
            limit: limit.clamp(1, MAX_LIMIT),
        })
    })();
    let (traces, error) = match search {
        Ok(search) => (state.engine.search_traces(&search).await?, None),
        Err(message) => (Vec::new(), Some(message)),
    };

    let mut results = Vec::new();
    let mut dots = Vec::new();
    for spans in traces {
        let Some(trace_id) = spans.first().map(|s| s.trace_id.clone()) else {
            continue;
        };
        let trace = assemble(&trace_id, spans);
        let (root_service, root_operation) = trace
            .main_root()
            .map(|r| (r.span.service_name.clone(), r.span.name.clone()))
            .unwrap_or_default();
        let href = format!("/traces/{trace_id}");
        dots.push(Dot {
            time_ns: trace.start_ns,
            duration_ns: trace.duration_ns(),
            error: trace.error_count() > 0,
            href,
            label: format!(
                "{root_service}: {root_operation} · {}",
                duration(trace.duration_ns())
            ),
        });
        results.push(ResultRow {
            short_id: trace_id.chars().take(8).collect(),
            trace_id,
            root_service,
            root_operation,
            start: timestamp(trace.start_ns),
            duration: duration(trace.duration_ns()),
            span_count: trace.spans.len(),
            services: trace
                .services()
                .into_iter()
                .map(|(name, count)| {
                    let colour = service_colour(&name);
                    (name, count, colour)
                })
                .collect(),
            errors: trace.error_count(),
        });
    }
    let page = SearchPage {
        title: "Search",
        nav: "search",
        lookbacks: range.options(),
        explicit_range: [("start", &query.start), ("end", &query.end)]
            .into_iter()
            .filter_map(|(name, value)| {
                value
                    .clone()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name.to_owned(), v))
            })
            .collect(),
        scatter: scatter(&dots, range.start_ns, range.end_ns),
        range_text: range.text(),
        form,
        services,
        operations,
        error,
        results,
    };
    Ok(render(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_filters_are_key_value_pairs() {
        assert_eq!(
            parse_tags(" http.route=/orders  app.user_id=42 "),
            Ok(vec![
                ("http.route".into(), "/orders".into()),
                ("app.user_id".into(), "42".into())
            ])
        );
        assert!(parse_tags("nokey").is_err());
        assert!(parse_tags("=x").is_err());
    }
}
