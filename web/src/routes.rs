//! `fn app(state) -> Router`: the web UI, the JSON API and the health check on `--http-addr`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use weft_query::{QueryEngine, QueryError, Refusal};

use crate::auth::AuthToken;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<QueryEngine>,
}

/// With a token, everything but `/healthz`, `/login` and the stylesheet asks for it.
pub fn app(state: AppState, token: Option<AuthToken>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/sql", post(sql))
        .merge(crate::jaeger::routes())
        .merge(crate::api::routes())
        .merge(crate::pages::routes())
        .fallback(crate::pages::not_found)
        .layer(DefaultBodyLimit::max(1 << 20));
    let router = match token {
        Some(token) => router
            .merge(crate::auth::routes(token.clone()))
            .layer(axum::middleware::from_fn_with_state(token, crate::auth::ui)),
        None => router,
    };
    router.with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Debug, Deserialize)]
struct SqlRequest {
    sql: String,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

/// A JSON error with its status.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let status = match &error {
            QueryError::Refused(Refusal::Forbidden(_)) => StatusCode::FORBIDDEN,
            QueryError::Refused(_) | QueryError::Invalid(_) | QueryError::ResourcesExhausted(_) => {
                StatusCode::BAD_REQUEST
            }
            QueryError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            QueryError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(%error, "SQL query failed");
        }
        Self {
            status,
            message: error.to_string(),
        }
    }
}

/// `POST /api/sql {"sql": "…"}` → `{"columns", "rows", "truncated"}`, or CSV
/// with `Accept: text/csv`.
async fn sql(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        message: format!(
            "expected a JSON body like {{\"sql\": \"SELECT …\"}}: {}",
            rejection.body_text()
        ),
    })?;
    let result = state.engine.sql(&request.sql).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    if wants_csv {
        Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            result.to_csv(),
        )
            .into_response())
    } else {
        Ok(Json(result.to_json()).into_response())
    }
}
