//! package's gRPC face: `package.v1.PackageService/GetPackage`, which the
//! scheduler calls to read a package's label after creating it. Served with
//! tonic's gRPC machinery on package's own (axum) port, called with tonic's
//! client; the messages are written here with prost's derive, so no protoc is
//! needed. Spans follow the RPC semantic conventions (`rpc.system = grpc`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and the trace context
//! travels in gRPC metadata (`traceparent`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::PathAndQuery;
use axum::response::{IntoResponse, Response};
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tonic::codegen::BoxFuture;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use crate::services::Simulation;
use crate::telemetry::{ServiceTracer, extract, inject};

pub const SERVICE: &str = "package.v1.PackageService";
pub const GET_PACKAGE: &str = "GetPackage";
pub const GET_PACKAGE_PATH: &str = "/package.v1.PackageService/GetPackage";

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPackageRequest {
    #[prost(string, tag = "1")]
    pub package_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PackageLabel {
    #[prost(string, tag = "1")]
    pub package_id: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub label: String,
}

fn rpc_attributes(status: Option<tonic::Code>) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", SERVICE),
        KeyValue::new("rpc.method", GET_PACKAGE),
    ];
    if let Some(code) = status {
        attributes.push(KeyValue::new("rpc.grpc.status_code", code as i64));
    }
    attributes
}

/// The server side, as an axum handler on package's router.
#[derive(Clone)]
pub struct PackageGrpc {
    pub tracer: ServiceTracer,
    pub version: &'static str,
    pub simulation: Arc<Simulation>,
}

impl tonic::server::UnaryService<GetPackageRequest> for PackageGrpc {
    type Response = PackageLabel;
    type Future = BoxFuture<tonic::Response<PackageLabel>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<GetPackageRequest>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let parent = extract(&request.metadata().clone().into_headers());
            let span = this
                .tracer
                .tracer
                .span_builder(format!("{SERVICE}/{GET_PACKAGE}"))
                .with_kind(SpanKind::Server)
                .with_attributes(rpc_attributes(None))
                .start_with_context(&this.tracer.tracer, &parent);
            let context = parent.with_span(span);
            let id = request.into_inner().package_id;
            let reply = async {
                tokio::time::sleep(this.simulation.latency(2, 4)).await;
                if id.is_empty() {
                    return Err(tonic::Status::invalid_argument("package_id is empty"));
                }
                Ok(tonic::Response::new(PackageLabel {
                    label: format!("DRN-{}", id.trim_start_matches("pkg-")),
                    package_id: id,
                    version: this.version.to_owned(),
                }))
            }
            .with_context(context.clone())
            .await;
            let code = reply
                .as_ref()
                .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
            let span = context.span();
            span.set_attributes(rpc_attributes(Some(code)));
            // As the conventions say for servers: these codes are the server's fault.
            if matches!(
                code,
                tonic::Code::Unknown
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unimplemented
                    | tonic::Code::Internal
                    | tonic::Code::Unavailable
                    | tonic::Code::DataLoss
            ) {
                span.set_status(Status::error(format!("gRPC {code:?}")));
            }
            span.end();
            reply
        })
    }
}

/// `POST /package.v1.PackageService/GetPackage` on package's router.
pub async fn serve_get_package(State(service): State<PackageGrpc>, request: Request) -> Response {
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
    grpc.unary(service, request)
        .await
        .map(Body::new)
        .into_response()
}

/// The client side: one CLIENT span per call, the context in the metadata.
pub async fn get_package(
    tracer: &ServiceTracer,
    base_url: &str,
    package_id: &str,
    timeout: Duration,
) -> Result<PackageLabel, tonic::Status> {
    let (address, port) = base_url
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map(|(host, port)| (host.to_owned(), port.parse::<i64>().unwrap_or(0)))
        .unwrap_or_default();
    let parent = Context::current();
    let mut attributes = rpc_attributes(None);
    attributes.extend([
        KeyValue::new("server.address", address),
        KeyValue::new("server.port", port),
        KeyValue::new("peer.service", crate::services::PACKAGE),
    ]);
    let span = tracer
        .tracer
        .span_builder(format!("{SERVICE}/{GET_PACKAGE}"))
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(&tracer.tracer, &parent);
    let context = parent.with_span(span);
    let outcome = call(&context, base_url, package_id, timeout).await;
    let span = context.span();
    let code = outcome
        .as_ref()
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
    if let Err(status) = &outcome {
        span.set_attribute(KeyValue::new("error.type", format!("{code:?}")));
        span.set_status(Status::error(status.message().to_owned()));
    }
    span.end();
    outcome
}

async fn call(
    context: &Context,
    base_url: &str,
    package_id: &str,
    timeout: Duration,
) -> Result<PackageLabel, tonic::Status> {
    let channel = Channel::from_shared(base_url.to_owned())
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut headers = axum::http::HeaderMap::new();
    inject(context, &mut headers);
    let mut request = tonic::Request::new(GetPackageRequest {
        package_id: package_id.to_owned(),
    });
    *request.metadata_mut() = MetadataMap::from_headers(headers);
    client
        .unary(
            request,
            PathAndQuery::from_static(GET_PACKAGE_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}
