//! `init` exports spans over OTLP gRPC to a collector, and a call through
//! `TraceInterceptor` → `GrpcTraceLayer` continues the caller's trace on the server.
//!
//! Own file: `init` installs the process-wide subscriber once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use shoal_telemetry::{GrpcTraceLayer, LogFormat, TelemetryConfig, TraceInterceptor};
use shoal_testkit::OtlpCollector;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::Instrument;

/// Some gRPC server that continues traces (`GrpcTraceLayer`): a second collector will do.
async fn serve_traced() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = tonic::transport::Server::builder()
        .layer(GrpcTraceLayer)
        .add_service(TraceServiceServer::new(OtlpCollector::default()));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_cross_grpc() -> anyhow::Result<()> {
    let (collector, collector_addr) = OtlpCollector::start().await?;

    let guard = shoal_telemetry::init(&TelemetryConfig {
        service_name: "otlp-test".to_owned(),
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        log_format: LogFormat::Text,
        log_filter: "info".to_owned(),
    })?;
    assert!(guard.exports_spans());

    let upstream_addr = serve_traced().await?;
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
    assert!(
        client_span
            .instance_id
            .as_ref()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(client_span.trace_id_hex(), client_trace_id);

    // The server span is in the caller's trace, as the caller's child.
    assert_eq!(server_span.span.trace_id, client_span.span.trace_id);
    assert_eq!(server_span.span.parent_span_id, client_span.span.span_id);
    assert_eq!(
        server_span.attribute("rpc.method").as_deref(),
        Some("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    );

    guard.shutdown().await?;
    Ok(())
}
