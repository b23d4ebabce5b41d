//! The web UI: server-rendered pages (askama templates in `web/templates`),
//! SVG charts drawn here, a little plain JavaScript. Every view's state is in
//! its query string, so every URL can be shared.

mod charts;
mod compare;
mod explore;
mod format;
mod insights;
mod map;
mod otlp;
mod search;
mod services;
mod sql;
mod trace;

use askama::Template;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use weft_query::{LatencySummary, QueryError};

use crate::params::time_range;
use crate::routes::AppState;

/// The largest trace file `/upload` takes.
const UPLOAD_LIMIT: usize = 64 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(search::page))
        .route("/traces/{trace_id}", get(trace::page))
        .route("/traces/{trace_id}/otlp.json", get(otlp::download))
        .route("/compare", get(compare::page))
        .route(
            "/upload",
            get(otlp::upload_form)
                .post(otlp::upload)
                .layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route("/services", get(services::list))
        .route("/services/{service}", get(services::page))
        .route("/map", get(map::page))
        .route("/insights", get(insights::page))
        .route("/sql", get(sql::page))
        .route("/explore", get(explore::page))
        .route(
            "/static/weft.css",
            get(|| async {
                asset(
                    "text/css; charset=utf-8",
                    include_str!("../../static/weft.css"),
                )
            }),
        )
        .route(
            "/static/weft.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../../static/weft.js"),
                )
            }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Renders a page; a template failure becomes an error page, never a blank.
fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The page could not be drawn",
            error.to_string(),
        )
        .into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    nav: &'a str,
    heading: &'a str,
    message: &'a str,
    status: u16,
}

/// An error shown as a page, with its HTTP status.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    heading: String,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, heading: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            heading: heading.into(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "That request cannot be answered",
            message,
        )
    }
}

impl From<QueryError> for PageError {
    fn from(error: QueryError) -> Self {
        if error.is_client_error() {
            Self::bad_request(error.to_string())
        } else {
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The query failed",
                error.to_string(),
            )
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            title: &self.heading,
            nav: "",
            heading: &self.heading,
            message: &self.message,
            status: self.status.as_u16(),
        };
        let html = page
            .render()
            .unwrap_or_else(|_| format!("{}: {}", self.heading, self.message));
        (self.status, Html(html)).into_response()
    }
}

/// Any path no route knows.
pub async fn not_found(uri: axum::http::Uri) -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "Page not found",
        format!("Nothing lives at {}.", uri.path()),
    )
}

/// The time-range presets every page offers.
const LOOKBACKS: [(&str, &str); 7] = [
    ("5m", "Last 5 minutes"),
    ("15m", "Last 15 minutes"),
    ("1h", "Last hour"),
    ("6h", "Last 6 hours"),
    ("24h", "Last 24 hours"),
    ("2d", "Last 2 days"),
    ("7d", "Last 7 days"),
];

fn lookbacks() -> Vec<(String, String)> {
    LOOKBACKS
        .iter()
        .map(|(value, label)| ((*value).to_owned(), (*label).to_owned()))
        .collect()
}

/// `lookback` (a preset or any Go duration), or `start`/`end` in µs since the epoch.
#[derive(Debug, Default, Deserialize)]
pub struct RangeQuery {
    lookback: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

/// A resolved time range and how to say it.
#[derive(Debug, Clone)]
pub struct Range {
    start_ns: i64,
    end_ns: i64,
    /// The preset or duration chosen; empty for an explicit `start`/`end`.
    lookback: String,
    /// `start=…&end=…` when the range was given explicitly.
    explicit: Option<String>,
}

impl Range {
    fn resolve(query: &RangeQuery) -> Result<Self, PageError> {
        let given = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let (start, end) = (given(&query.start), given(&query.end));
        let explicit = (start.is_some() || end.is_some()).then(|| {
            [("start", &start), ("end", &end)]
                .iter()
                .filter_map(|(name, value)| {
                    value.as_ref().map(|v| format!("{name}={}", url_encode(v)))
                })
                .collect::<Vec<_>>()
                .join("&")
        });
        let lookback = if explicit.is_some() {
            String::new()
        } else {
            given(&query.lookback).unwrap_or_else(|| "1h".to_owned())
        };
        let (start_ns, end_ns) = time_range(
            start.as_deref(),
            end.as_deref(),
            Some(&lookback),
            3_600_000_000_000,
        )
        .map_err(PageError::bad_request)?;
        Ok(Self {
            start_ns,
            end_ns,
            lookback,
            explicit,
        })
    }

    fn text(&self) -> String {
        format!(
            "{} to {}",
            format::timestamp(self.start_ns),
            format::timestamp(self.end_ns)
        )
    }

    fn seconds(&self) -> f64 {
        ((self.end_ns - self.start_ns) as f64 / 1e9).max(1e-9)
    }

    /// The range as query parameters, for links to other views of it.
    fn query(&self) -> String {
        match &self.explicit {
            Some(explicit) => explicit.clone(),
            None => format!("lookback={}", url_encode(&self.lookback)),
        }
    }

    /// Options for the range select; a custom lookback or explicit range is kept as an option.
    fn options(&self) -> Vec<(String, String)> {
        let mut options = lookbacks();
        if self.explicit.is_some() {
            options.insert(0, (String::new(), format!("{} (as linked)", self.text())));
        } else if !options.iter().any(|(value, _)| *value == self.lookback) {
            options.push((self.lookback.clone(), format!("Last {}", self.lookback)));
        }
        options
    }
}

/// Request figures as they read in tables.
pub struct Figures {
    requests: u64,
    rate: String,
    errors: u64,
    error_rate: String,
    p50: String,
    p95: String,
    p99: String,
}

impl Figures {
    fn new(stats: &LatencySummary, seconds: f64) -> Self {
        Self {
            requests: stats.count,
            rate: format::rate(stats.count as f64 / seconds),
            errors: stats.errors,
            error_rate: format::percent(stats.error_rate()),
            p50: format::duration(stats.p50_ns as i64),
            p95: format::duration(stats.p95_ns as i64),
            p99: format::duration(stats.p99_ns as i64),
        }
    }
}

/// Percent-encodes a query-string or path value.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn service_href(service: &str, range: &Range) -> String {
    format!("/services/{}?{}", url_encode(service), range.query())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;
    use weft_query::{QueryEngine, QueryLimits};

    use super::*;

    /// The whole app over an empty store in `dir`.
    fn app(dir: &std::path::Path) -> Router {
        let store = weft_collector::Store::local(dir).expect("a store in a temporary directory");
        let engine =
            QueryEngine::new(store.objects(), None, QueryLimits::default()).expect("an engine");
        crate::routes::app(
            AppState {
                engine: Arc::new(engine),
            },
            None,
        )
    }

    async fn get(app: Router, uri: &str) -> (StatusCode, String, String) {
        let request = Request::get(uri).body(Body::empty()).expect("a request");
        let response = app.oneshot(request).await.expect("a response");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .expect("a body");
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn every_page_renders_over_an_empty_store() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (uri, text) in [
            ("/", "No traces match"),
            ("/services", "No requests in this range"),
            ("/map", "<svg class=\"chart map\""),
            ("/sql", "Examples"),
            ("/explore", "No metrics in this range"),
            ("/compare", "Compare traces"),
            ("/upload", "Open a trace file"),
            ("/sql?q=SELECT%201%20AS%20one", "<th>one</th>"),
        ] {
            let (status, content_type, body) = get(app(dir.path()), uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert!(
                content_type.starts_with("text/html"),
                "{uri}: {content_type}"
            );
            assert!(body.contains(text), "{uri} lacks {text:?}");
        }
    }

    #[tokio::test]
    async fn errors_are_pages_with_their_status() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (uri, status, text) in [
            (
                "/traces/0123456789abcdef0123456789abcdef",
                StatusCode::NOT_FOUND,
                "Trace not found",
            ),
            (
                "/traces/not-hex",
                StatusCode::NOT_FOUND,
                "is not a trace id",
            ),
            (
                "/services/nobody",
                StatusCode::NOT_FOUND,
                "Service not found",
            ),
            ("/no/such/page", StatusCode::NOT_FOUND, "Page not found"),
            (
                "/services?lookback=soon",
                StatusCode::BAD_REQUEST,
                "lookback",
            ),
            ("/?minDuration=fast", StatusCode::OK, "is not a duration"),
            (
                "/sql?q=DROP%20TABLE%20spans",
                StatusCode::OK,
                "class=\"sql-error\"",
            ),
        ] {
            let (actual, content_type, body) = get(app(dir.path()), uri).await;
            assert_eq!(actual, status, "{uri}: {body}");
            assert!(
                content_type.starts_with("text/html"),
                "{uri}: {content_type}"
            );
            assert!(body.contains(text), "{uri} lacks {text:?}: {body}");
        }
    }

    #[tokio::test]
    async fn assets_are_served_with_their_types() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (status, content_type, body) = get(app(dir.path()), "/static/weft.css").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "text/css; charset=utf-8")
        );
        assert!(body.contains("--bg"));
        let (_, content_type, _) = get(app(dir.path()), "/static/weft.js").await;
        assert_eq!(content_type, "text/javascript; charset=utf-8");
    }

    #[test]
    fn values_are_encoded_for_urls() {
        assert_eq!(url_encode("GET /orders/{id}"), "GET%20%2Forders%2F%7Bid%7D");
        assert_eq!(url_encode("delivery-scheduler"), "delivery-scheduler");
    }
}
