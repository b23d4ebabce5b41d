//! OTLP/gRPC receivers: `TraceService/Export` and `MetricsService/Export`.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::ingest::{Ingest, IngestError};

/// The gRPC status an ingest failure maps to. Overload is `UNAVAILABLE`, which
/// every OTLP exporter retries with backoff.
pub fn status_of(error: &IngestError) -> Status {
    match error {
        IngestError::Overloaded { .. } | IngestError::ShuttingDown => {
            Status::unavailable(error.to_string())
        }
        IngestError::Convert(_) | IngestError::Wal(_) | IngestError::Join(_) => {
            Status::internal(error.to_string())
        }
    }
}

pub struct TraceReceiver {
    ingest: Ingest,
}

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let rejected = self
            .ingest
            .export_traces(request.into_inner(), None)
            .await
            .map_err(|e| status_of(&e))?;
        let partial_success = (rejected.count > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected.count,
            error_message: rejected.summary("span"),
        });
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
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
    let traces = TraceServiceServer::new(TraceReceiver {
        ingest: ingest.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(max_message_bytes);
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
    fn overload_is_a_retryable_status() {
        let status = status_of(&IngestError::Overloaded { used: 2, limit: 1 });
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("memory limit"));
    }
}
