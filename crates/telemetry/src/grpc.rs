//! Trace context over gRPC: an interceptor for clients, a tower layer for servers.

use std::task::{Context as TaskContext, Poll};

use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::propagation::{
    HttpHeaders, HttpHeadersRef, current_context, extract_context, inject_context,
};

/// Writes the current span's trace context into a request's metadata.
pub fn inject_grpc<T>(req: &mut tonic::Request<T>) {
    inject_context(
        &current_context(),
        &mut HttpHeaders(req.metadata_mut().as_mut()),
    );
}

/// Reads the caller's trace context from request metadata; empty when absent.
pub fn extract_grpc(metadata: &tonic::metadata::MetadataMap) -> opentelemetry::Context {
    extract_context(&HttpHeadersRef(metadata.as_ref()))
}

/// Client interceptor: every outgoing call carries the caller's current trace context.
///
/// `FooClient::with_interceptor(channel, TraceInterceptor)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceInterceptor;

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_grpc(&mut req);
        Ok(req)
    }
}

/// Server layer: each request runs inside a `grpc.request` span whose parent is the
/// caller's span (from `traceparent`), so a trace continues across the process.
///
/// `Server::builder().layer(GrpcTraceLayer).add_service(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTraceService { inner }
    }
}

/// The service [`GrpcTraceLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct GrpcTraceService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcTraceService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let parent = extract_context(&HttpHeadersRef(req.headers()));
        let path = req.uri().path();
        // Exported under the method's name (`shoal.v1.Control/CreateService`), the way
        // Jaeger users look for it; `grpc.request` is only the local tracing name.
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %path,
        );
        // Must happen before the span is first entered.
        crate::set_parent(&span, parent);
        let future = span.in_scope(|| self.inner.call(req));
        future.instrument(span)
    }
}
