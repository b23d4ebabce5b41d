//! OTLP/gRPC receivers: `TraceService/Export` and `MetricsService/Export`.
//!
//! The trace service is written out here rather than generated: its requests
//! reach the collector as the protobuf bytes they came as (read in place, and
//! kept by the WAL as they are), where the generated service would hand over
//! prost's decoded structs.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::convert::spans::ConvertError;

use crate::ingest::{Ingest, IngestError};

/// The gRPC status an ingest failure maps to. Overload is `UNAVAILABLE`, which
/// every OTLP exporter retries with backoff.
pub fn status_of(error: &IngestError) -> Status {
    match error {
        IngestError::Overloaded { .. } | IngestError::ShuttingDown => {
            Status::unavailable(error.to_string())
        }
        IngestError::Spans(ConvertError::Malformed(_)) => {
            Status::invalid_argument(error.to_string())
        }
        IngestError::Convert(_)
        | IngestError::Spans(_)
        | IngestError::Wal(_)
        | IngestError::Join(_) => Status::internal(error.to_string()),
    }
}

/// Hands a request message over as its bytes; encodes responses with prost.
struct RawRequestCodec<Response>(PhantomData<Response>);

impl<R: Message + Send + 'static> Codec for RawRequestCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct ProstEncoder<R>(PhantomData<R>);

impl<R: Message> Encoder for ProstEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        if dst.remaining_mut() < item.encoded_len() {
            dst.reserve(item.encoded_len());
        }
        item.encode(dst)
            .map_err(|e| Status::internal(format!("could not encode the response: {e}")))
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `opentelemetry.proto.collector.trace.v1.TraceService`, with requests as bytes.
#[derive(Clone)]
pub struct TraceReceiver {
    ingest: Ingest,
    max_message_bytes: usize,
}

const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl NamedService for TraceReceiver {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl UnaryService<Bytes> for TraceReceiver {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let rejected = ingest
                .export_trace_protobuf(request.into_inner())
                .await
                .map_err(|e| status_of(&e))?;
            let partial_success = (rejected.count > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected.count,
                error_message: rejected.summary("span"),
            });
            Ok(Response::new(ExportTraceServiceResponse {
                partial_success,
            }))
        })
    }
}

impl Service<http::Request<Body>> for TraceReceiver {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let receiver = self.clone();
        Box::pin(async move {
            if request.uri().path() != TRACE_EXPORT_PATH {
                return Ok(Status::unimplemented("TraceService has only Export").into_http());
            }
            let mut grpc = Grpc::new(RawRequestCodec(PhantomData))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(receiver.max_message_bytes);
            Ok(grpc.unary(receiver, request).await)
        })
    }
}

pub struct MetricsReceiver {
    ingest: Ingest,
}

#[tonic::async_trait]
impl MetricsService for MetricsReceiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let rejected = self
            .ingest
            .export_metrics(request.into_inner(), None)
            .await
            .map_err(|e| status_of(&e))?;
        let partial_success = (rejected.count > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected.count,
            error_message: rejected.summary("data point"),
        });
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success,
        }))
    }
}

/// The tonic router with both services, gzip in and out, and the size limit.
pub fn router(ingest: Ingest, max_message_bytes: usize) -> tonic::service::Routes {
    let traces = TraceReceiver {
        ingest: ingest.clone(),
        max_message_bytes,
    };
    let metrics = MetricsServiceServer::new(MetricsReceiver { ingest })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes);
    tonic::service::Routes::new(traces).add_service(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_request_is_an_invalid_argument() {
        let malformed = crate::convert::wire::resource_spans(&[0x0a, 0x05])
            .err()
            .map(|e| IngestError::Spans(ConvertError::Malformed(e)));
        let status = malformed.map(|e| status_of(&e));
        assert_eq!(
            status.as_ref().map(Status::code),
            Some(tonic::Code::InvalidArgument)
        );
        assert!(status.is_some_and(|s| {
            s.message()
                .starts_with("body is not a valid OTLP protobuf message")
        }));
    }

    #[tokio::test]
    async fn a_method_other_than_export_is_unimplemented() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let store = crate::store::Store::local(&dir.path().join("store"))?;
        let collector = crate::Collector::start(
            store,
            dir.path(),
            &crate::CollectorSettings::default(),
            Default::default(),
        )
        .await?;
        let mut receiver = TraceReceiver {
            ingest: collector.ingest().clone(),
            max_message_bytes: 1 << 20,
        };
        let request = http::Request::builder()
            .method("POST")
            .uri("/opentelemetry.proto.collector.trace.v1.TraceService/Other")
            .header("content-type", "application/grpc")
            .body(Body::default())?;
        let response = Service::call(&mut receiver, request).await?;
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(b"12".as_slice())
        );
        Ok(())
    }

    #[test]
    fn overload_is_a_retryable_status() {
        let status = status_of(&IngestError::Overloaded { used: 2, limit: 1 });
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("memory limit"));
    }
}
