//! `init` exports spans over OTLP gRPC to a collector, and a call through
//! `TraceInterceptor` → `GrpcTraceLayer` continues the caller's trace on the server.
//!
//! Own file: `init` installs the process-wide subscriber once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use shoal_telemetry::{GrpcTraceLayer, LogFormat, TelemetryConfig, TraceInterceptor};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::Instrument;

/// An OTLP trace collector that keeps every request it receives.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received
            .lock()
            .map_err(|_| tonic::Status::internal("poisoned"))?
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A received span with the `service.name` of the resource it came with.
#[derive(Debug, Clone)]
struct Seen {
    service_name: Option<String>,
    instance_id: Option<String>,
    span: Span,
}

impl Collector {
    fn spans(&self) -> Vec<Seen> {
        let received = self.received.lock().expect("collector lock");
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
                        out.push(Seen {
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

async fn serve(collector: Collector, with_trace_layer: bool) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = TcpListenerStream::new(listener);
    let service = TraceServiceServer::new(collector);
    if with_trace_layer {
        let router = tonic::transport::Server::builder()
            .layer(GrpcTraceLayer)
            .add_service(service);
        tokio::spawn(router.serve_with_incoming(incoming));
    } else {
        let router = tonic::transport::Server::builder().add_service(service);
        tokio::spawn(router.serve_with_incoming(incoming));
    }
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_cross_grpc() -> anyhow::Result<()> {
    let collector = Collector::default();
    let collector_addr = serve(collector.clone(), false).await?;

    let guard = shoal_telemetry::init(&TelemetryConfig {
        service_name: "otlp-test".to_owned(),
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        log_format: LogFormat::Text,
        log_filter: "info".to_owned(),
    })?;
    assert!(guard.exports_spans());

    // Some other gRPC server that continues traces: a second collector will do.
    let upstream_addr = serve(Collector::default(), true).await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{upstream_addr}"))?
        .connect()
        .await?;
    let mut client = TraceServiceClient::with_interceptor(channel, TraceInterceptor);

    let client_trace_id = async {
        client
            .export(ExportTraceServiceRequest::default())
            .await
            .map(|_| ())?;
        shoal_telemetry::current_trace_id().ok_or_else(|| anyhow::anyhow!("no trace id"))
    }
    .instrument(tracing::info_span!("client.call"))
    .await?;

    guard.flush().await?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let (client_span, server_span) = loop {
        let spans = collector.spans();
        let client = spans.iter().find(|s| s.span.name == "client.call").cloned();
        let server = spans
            .iter()
            .find(|s| s.span.name.ends_with("/Export"))
            .cloned();
        if let (Some(c), Some(s)) = (client, server) {
            break (c, s);
        }
        assert!(
            Instant::now() < deadline,
            "collector did not receive both spans; got {:?}",
            spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        guard.flush().await?;
    };

    assert_eq!(client_span.service_name.as_deref(), Some("otlp-test"));
    assert!(client_span.instance_id.is_some_and(|id| !id.is_empty()));
    assert_eq!(hex(&client_span.span.trace_id), client_trace_id);

    // The server span is in the caller's trace, as the caller's child.
    assert_eq!(server_span.span.trace_id, client_span.span.trace_id);
    assert_eq!(server_span.span.parent_span_id, client_span.span.span_id);
    let method = server_span
        .span
        .attributes
        .iter()
        .find(|kv| kv.key == "rpc.method")
        .and_then(|kv| kv.value.as_ref().and_then(|v| v.value.clone()));
    assert_eq!(
        method,
        Some(Value::StringValue(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export".to_owned()
        ))
    );

    guard.shutdown().await?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
