//! The dispatcher's "assign <task name>" span joins the trace stored on the task, the
//! first time the task is sent to its node.
//!
//! Own file: `shoal_telemetry::init` installs the process-wide subscriber once.

mod common;

use std::time::Duration;

use common::*;
use shoal_proto::v1::{TaskState, TraceContext};
use shoal_telemetry::{LogFormat, TelemetryConfig};
use shoal_testkit::{OtlpCollector, wait_for};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assign_span_is_a_child_of_the_stored_task_trace() -> anyhow::Result<()> {
    let (collector, collector_addr) = OtlpCollector::start().await?;
    let guard = shoal_telemetry::init(&TelemetryConfig {
        service_name: "shoal-dispatcher".to_owned(),
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        log_format: LogFormat::Text,
        log_filter: "info".to_owned(),
    })?;

    let swarm = Swarm::start(Duration::from_secs(30)).await?;
    let d = swarm.start_dispatcher().await?;
    let mut a = swarm.worker_session(&d).await?;
    let mut task = task_on(&a.node_id, "web", 1, TaskState::Assigned);
    task.trace_context = Some(TraceContext {
        traceparent: format!("00-{TRACE_ID}-{PARENT_ID}-01"),
        tracestate: String::new(),
    });
    swarm.store().create(task).await?;
    let mut stream = open_assignments(&mut a.client, &a.session_id).await?;
    let complete = next_assignments(&mut stream).await?;
    assert_eq!(updated_ids(&complete).len(), 1);

    let span = wait_for("the assign span", DEADLINE, || async {
        let _ = guard.flush().await;
        collector
            .spans()
            .into_iter()
            .find(|s| s.span.name == "assign web.1")
    })
    .await?;
    assert_eq!(span.trace_id_hex(), TRACE_ID);
    assert_eq!(span.parent_span_id_hex(), PARENT_ID);
    assert_eq!(span.attribute("node.id"), Some(a.node_id.clone()));
    d.stop().await
}
