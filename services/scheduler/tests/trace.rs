//! The scheduler's "schedule <service> (<n> tasks)" span joins the trace stored on the
//! group's first task.
//!
//! Own file: `shoal_telemetry::init` installs the process-wide subscriber once.

mod common;

use common::*;
use shoal_proto::v1::TraceContext;
use shoal_telemetry::{LogFormat, TelemetryConfig};
use shoal_testkit::{OtlpCollector, wait_for};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_span_is_a_child_of_the_stored_task_trace() -> anyhow::Result<()> {
    let (collector, collector_addr) = OtlpCollector::start().await?;
    let guard = shoal_telemetry::init(&TelemetryConfig {
        service_name: "shoal-scheduler".to_owned(),
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        log_format: LogFormat::Text,
        log_filter: "info".to_owned(),
    })?;

    let c = Cluster::start().await?;
    c.add_node(node("n1")).await?;
    let _s = c.scheduler().await?;
    let mut tasks = replicas("svc-web", "web", 2, spec(&[], None, 0));
    for t in &mut tasks {
        t.trace_context = Some(TraceContext {
            traceparent: format!("00-{TRACE_ID}-{PARENT_ID}-01"),
            tracestate: String::new(),
        });
    }
    c.add_tasks(tasks).await?;
    let placed = c.wait_assigned("svc-web", 2).await?;

    let span = wait_for("the schedule span", DEADLINE, || async {
        let _ = guard.flush().await;
        collector
            .spans()
            .into_iter()
            .find(|s| s.span.name == "schedule web (2 tasks)")
    })
    .await?;
    assert_eq!(span.trace_id_hex(), TRACE_ID);
    assert_eq!(span.parent_span_id_hex(), PARENT_ID);
    // The stored trace context is left as the orchestrator wrote it.
    for t in &placed {
        assert_eq!(
            t.trace_context.clone().unwrap_or_default().traceparent,
            format!("00-{TRACE_ID}-{PARENT_ID}-01")
        );
    }
    Ok(())
}
