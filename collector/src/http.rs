//! OTLP/HTTP receivers: `POST /v1/traces` and `POST /v1/metrics`, protobuf or
//! JSON bodies, optionally gzip-compressed. Errors follow the OTLP/HTTP
//! specification: the status code says what kind of failure it is and the body
//! is a `google.rpc.Status` in the request's encoding saying why.

use std::io::Read;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use flate2::read::GzDecoder;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;

use crate::convert::spans::ConvertError;
use crate::ingest::{Ingest, IngestError, run_cpu_bound};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
/// What an overloaded collector asks exporters to wait, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Clone)]
struct HttpState {
    ingest: Ingest,
    max_body_bytes: usize,
}

/// The OTLP/HTTP routes. `max_body_bytes` bounds the body both as sent and
/// after decompression.
pub fn router(ingest: Ingest, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/traces", post(export_traces))
        .route("/v1/metrics", post(export_metrics))
        // The limit is enforced below, with an OTLP error body.
        .layer(DefaultBodyLimit::disable())
        .with_state(HttpState {
            ingest,
            max_body_bytes,
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error response.
#[derive(Clone, PartialEq, Message, Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An error response: HTTP status, gRPC code for the body, message.
struct OtlpError {
    status: StatusCode,
    encoding: Option<Encoding>,
    message: String,
    retry_after: bool,
}

impl OtlpError {
    fn new(status: StatusCode, encoding: Option<Encoding>, message: impl Into<String>) -> Self {
        Self {
            status,
            encoding,
            message: message.into(),
            retry_after: false,
        }
    }
}

impl IntoResponse for OtlpError {
    fn into_response(self) -> Response {
        let code = match self.status {
            StatusCode::BAD_REQUEST => 3,            // INVALID_ARGUMENT
            StatusCode::UNAUTHORIZED => 16,          // UNAUTHENTICATED
            StatusCode::PAYLOAD_TOO_LARGE => 11,     // OUT_OF_RANGE
            StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
            StatusCode::TOO_MANY_REQUESTS => 8,      // RESOURCE_EXHAUSTED
            StatusCode::SERVICE_UNAVAILABLE => 14,   // UNAVAILABLE
            _ => 13,                                 // INTERNAL
        };
        let body = RpcStatus {
            code,
            message: self.message,
        };
        let mut response = match self.encoding {
            Some(Encoding::Protobuf) => (
                self.status,
                [(header::CONTENT_TYPE, PROTOBUF)],
                body.encode_to_vec(),
            )
                .into_response(),
            Some(Encoding::Json) => {
                let json = serde_json::to_vec(&body).unwrap_or_default();
                (self.status, [(header::CONTENT_TYPE, JSON)], json).into_response()
            }
            None => (
                self.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                body.message,
            )
                .into_response(),
        };
        if self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// `401 Unauthorized` for a request without valid credentials, with a
/// `google.rpc.Status` body in the request's encoding (the check itself is
/// the server's, in front of these routes).
pub fn unauthenticated(headers: &HeaderMap, message: &str) -> Response {
    let encoding = request_encoding(headers).ok();
    let mut response = OtlpError::new(StatusCode::UNAUTHORIZED, encoding, message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn ingest_error(error: &IngestError, encoding: Encoding) -> OtlpError {
    match error {
        IngestError::Overloaded { .. } | IngestError::ShuttingDown => OtlpError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            encoding: Some(encoding),
            message: error.to_string(),
            retry_after: true,
        },
        IngestError::Spans(ConvertError::Malformed(_)) => {
            OtlpError::new(StatusCode::BAD_REQUEST, Some(encoding), error.to_string())
        }
        IngestError::Convert(_)
        | IngestError::Spans(_)
        | IngestError::Wal(_)
        | IngestError::Join(_) => OtlpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(encoding),
            error.to_string(),
        ),
    }
}

fn request_encoding(headers: &HeaderMap) -> Result<Encoding, OtlpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        "" => Err(OtlpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            format!("missing Content-Type; OTLP/HTTP accepts {PROTOBUF} or {JSON}"),
        )),
        other => Err(OtlpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            format!("unsupported Content-Type {other:?}; OTLP/HTTP accepts {PROTOBUF} or {JSON}"),
        )),
    }
}

/// The request body as sent, within the size limit, and its content coding.
async fn read_body(
    request: Request,
    encoding: Encoding,
    limit: usize,
) -> Result<(Bytes, String), OtlpError> {
    let content_encoding = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    if !matches!(content_encoding.as_str(), "" | "identity" | "gzip") {
        return Err(OtlpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some(encoding),
            format!("unsupported Content-Encoding {content_encoding:?}; use gzip or none"),
        ));
    }
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| too_large(encoding, limit))?;
    Ok((body, content_encoding))
}

fn too_large(encoding: Encoding, limit: usize) -> OtlpError {
    OtlpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Some(encoding),
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

/// Decompresses within the limit. CPU-bound: runs on the blocking pool.
fn decompress(
    body: Bytes,
    content_encoding: &str,
    encoding: Encoding,
    limit: usize,
) -> Result<Bytes, OtlpError> {
    if content_encoding != "gzip" {
        return Ok(body);
    }
    let mut out = Vec::new();
    // Read one byte past the limit to tell "exactly at" from "over".
    match GzDecoder::new(body.as_ref())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
    {
        Ok(n) if n > limit => Err(too_large(encoding, limit)),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(OtlpError::new(
            StatusCode::BAD_REQUEST,
            Some(encoding),
            format!("body is not valid gzip: {e}"),
        )),
    }
}

/// How much work reading a body is, in protobuf bytes, for `run_cpu_bound`.
/// Per byte, inflating gzip and decoding JSON take far longer than reading
/// protobuf, and a gzip body's size says little about its inflated one: those
/// count as unbounded, so they always go to the blocking pool.
fn work_bytes(body_len: usize, content_encoding: &str, encoding: Encoding) -> usize {
    if content_encoding == "gzip" || encoding == Encoding::Json {
        usize::MAX
    } else {
        body_len
    }
}

/// Reads and decompresses a request's body, then runs `decode` on it; the
/// CPU work runs in place for a small protobuf body and on the blocking pool
/// otherwise, as conversion does (`ingest::run_cpu_bound`).
async fn read_then<T: Send + 'static>(
    request: Request,
    encoding: Encoding,
    limit: usize,
    decode: impl FnOnce(Bytes) -> Result<T, OtlpError> + Send + 'static,
) -> Result<T, OtlpError> {
    let (body, content_encoding) = read_body(request, encoding, limit).await?;
    let work_bytes = work_bytes(body.len(), &content_encoding, encoding);
    run_cpu_bound(work_bytes, move || {
        decode(decompress(body, &content_encoding, encoding, limit)?)
    })
    .await
    .map_err(|e| {
        OtlpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(encoding),
            e.to_string(),
        )
    })?
}

/// Reads, decompresses and decodes a request.
async fn read_message<T>(
    request: Request,
    encoding: Encoding,
    limit: usize,
) -> Result<(T, Bytes), OtlpError>
where
    T: Message + Default + serde::de::DeserializeOwned + Send + 'static,
{
    read_then(request, encoding, limit, move |body| {
        let message = decode::<T>(&body, encoding)?;
        Ok((message, body))
    })
    .await
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
) -> Result<T, OtlpError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| {
            OtlpError::new(
                StatusCode::BAD_REQUEST,
                Some(encoding),
                format!("body is not a valid OTLP protobuf message: {e}"),
            )
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            OtlpError::new(
                StatusCode::BAD_REQUEST,
                Some(encoding),
                format!("body is not valid OTLP/JSON: {e}"),
            )
        }),
    }
}

fn encode<T: Message + Serialize>(response: &T, encoding: Encoding) -> Response {
    match encoding {
        Encoding::Protobuf => {
            ([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response()
        }
        Encoding::Json => match serde_json::to_vec(response) {
            Ok(json) => ([(header::CONTENT_TYPE, JSON)], json).into_response(),
            Err(e) => OtlpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(encoding),
                e.to_string(),
            )
            .into_response(),
        },
    }
}

async fn export_traces(
    State(state): State<HttpState>,
    request: Request<Body>,
) -> Result<Response, OtlpError> {
    let encoding = request_encoding(request.headers())?;
    let limit = state.max_body_bytes;
    // Protobuf goes to the collector as it came (it reads the bytes in place);
    // OTLP/JSON is decoded here.
    let stored = match encoding {
        Encoding::Protobuf => {
            let body = read_then(request, encoding, limit, Ok).await?;
            state.ingest.export_trace_protobuf(body).await
        }
        Encoding::Json => {
            let (message, _) =
                read_message::<ExportTraceServiceRequest>(request, encoding, limit).await?;
            state.ingest.export_traces(message).await
        }
    };
    let rejected = stored.map_err(|e| ingest_error(&e, encoding))?;
    let partial_success = (rejected.count > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected.count,
        error_message: rejected.summary("span"),
    });
    Ok(encode(
        &ExportTraceServiceResponse { partial_success },
        encoding,
    ))
}

async fn export_metrics(
    State(state): State<HttpState>,
    request: Request<Body>,
) -> Result<Response, OtlpError> {
    let encoding = request_encoding(request.headers())?;
    let (message, body) =
        read_message::<ExportMetricsServiceRequest>(request, encoding, state.max_body_bytes)
            .await?;
    let protobuf = (encoding == Encoding::Protobuf).then_some(body);
    let rejected = state
        .ingest
        .export_metrics(message, protobuf)
        .await
        .map_err(|e| ingest_error(&e, encoding))?;
    let partial_success = (rejected.count > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: rejected.count,
        error_message: rejected.summary("data point"),
    });
    Ok(encode(
        &ExportMetricsServiceResponse { partial_success },
        encoding,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_protobuf_bodies_are_sized_by_their_length() {
        assert_eq!(work_bytes(1000, "identity", Encoding::Protobuf), 1000);
        assert_eq!(work_bytes(1000, "", Encoding::Protobuf), 1000);
        assert_eq!(work_bytes(1000, "gzip", Encoding::Protobuf), usize::MAX);
        assert_eq!(work_bytes(1000, "identity", Encoding::Json), usize::MAX);
        assert_eq!(work_bytes(1000, "gzip", Encoding::Json), usize::MAX);
    }
}
