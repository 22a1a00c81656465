//! An OTLP trace collector for tests: a real `TraceService` gRPC server on loopback
//! that keeps every span exported to it, so a test can assert which process emitted
//! which span in which trace.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_stream::wrappers::TcpListenerStream;

/// A span as received, with the resource attributes it came with.
#[derive(Debug, Clone)]
pub struct SeenSpan {
    /// `service.name` of the exporting process.
    pub service_name: Option<String>,
    /// `service.instance.id` of the exporting process.
    pub instance_id: Option<String>,
    pub span: Span,
}

impl SeenSpan {
    /// The span's trace id in lowercase hex, as `traceparent` writes it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id_hex(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// A string attribute of the span.
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                },
            )
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The collector. Cheap to clone; clones share what was received.
#[derive(Debug, Clone, Default)]
pub struct OtlpCollector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for OtlpCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received
            .lock()
            .map_err(|_| tonic::Status::internal("collector lock poisoned"))?
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpCollector {
    /// Serves a new collector on `127.0.0.1:0`; returns it and its address (use
    /// `http://{addr}` as the OTLP endpoint). It runs until the runtime ends.
    pub async fn start() -> anyhow::Result<(OtlpCollector, SocketAddr)> {
        let collector = OtlpCollector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()));
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        Ok((collector, addr))
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SeenSpan> {
        let Ok(received) = self.received.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for req in received.iter() {
            for rs in &req.resource_spans {
                let attr = |key: &str| {
                    rs.resource.as_ref().and_then(|r| {
                        r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
                            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(s)) => Some(s.clone()),
                                _ => None,
                            }
                        })
                    })
                };
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push(SeenSpan {
                            service_name: attr("service.name"),
                            instance_id: attr("service.instance.id"),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}
