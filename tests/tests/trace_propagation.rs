//! One request, one trace: a client's W3C trace context crosses gRPC into a real
//! manager process (whose spans reach an OTLP collector as children of the client's
//! span) and crosses NATS in the event the manager publishes after the commit.

use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use shoal_events::{EventBus, EventFilter};
use shoal_proto::v1::{Annotations, ConfigSpec, CreateConfigRequest};
use shoal_scenarios::Swarm;
use shoal_testkit::{Infra, OtlpCollector, wait_for};
use tokio_stream::StreamExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trace_crosses_grpc_and_nats() -> anyhow::Result<()> {
    // This process reads W3C headers like every shoal process does.
    shoal_telemetry::install_propagator();
    let infra = Infra::start().await?;
    let (collector, collector_addr) = OtlpCollector::start().await?;
    let swarm = Swarm::start(
        &infra,
        &format!("otlp_endpoint = \"http://{collector_addr}\"\n"),
    )
    .await?;

    let bus = EventBus::connect(&infra.nats.url(), "trace-test").await?;
    let mut events = bus.subscribe(&EventFilter::kind("config")).await?;

    let mut request = tonic::Request::new(CreateConfigRequest {
        spec: Some(ConfigSpec {
            annotations: Some(Annotations {
                name: "traced".into(),
                labels: Default::default(),
            }),
            data: b"x".to_vec(),
            ..Default::default()
        }),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01").parse()?,
    );
    swarm
        .manager
        .control(&swarm.admin)
        .await?
        .create_config(request)
        .await?;

    // NATS: the event carries the request's trace.
    let received = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await?
        .expect("event stream open");
    assert_eq!(received.event.action, "create");
    let trace_id = received.trace.span().span_context().trace_id().to_string();
    assert_eq!(trace_id, TRACE_ID, "event trace id");

    // gRPC → OTLP: the manager's server span is a child of the client's span.
    let span = wait_for(
        "the manager's CreateConfig span at the collector",
        Duration::from_secs(30),
        || async {
            collector.spans().into_iter().find(|s| {
                s.service_name.as_deref() == Some("shoal-manager")
                    && s.span.name == "shoal.v1.Control/CreateConfig"
            })
        },
    )
    .await?;
    assert_eq!(span.trace_id_hex(), TRACE_ID);
    assert_eq!(span.parent_span_id_hex(), PARENT_SPAN_ID);
    assert!(span.instance_id.is_some_and(|id| !id.is_empty()));
    Ok(())
}
