//! The orchestrator's "reconcile <service>" span joins the trace stored on the service,
//! and the tasks it creates carry that span's context.
//!
//! Own file: `shoal_telemetry::init` installs the process-wide subscriber once.

use std::time::Duration;

use shoal_events::EventBus;
use shoal_grpc_host::ShutdownToken;
use shoal_manager::leadership;
use shoal_manager::orchestrator::{ControllerOptions, run_while_leading};
use shoal_proto::v1::service_spec::Mode;
use shoal_proto::v1::{
    Annotations, Meta, ReplicatedService, Service, ServiceSpec, Task, TaskSpec, TraceContext,
    Version,
};
use shoal_store::{Object, Store};
use shoal_telemetry::{LogFormat, TelemetryConfig};
use shoal_testkit::{Infra, OtlpCollector, wait_for};

const DEADLINE: Duration = Duration::from_secs(20);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_joins_the_services_trace_and_tasks_carry_it() -> anyhow::Result<()> {
    let (collector, collector_addr) = OtlpCollector::start().await?;
    let guard = shoal_telemetry::init(&TelemetryConfig {
        service_name: "shoal-manager".to_owned(),
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        log_format: LogFormat::Text,
        log_filter: "info".to_owned(),
    })?;

    let infra = Infra::start().await?;
    let store = Store::connect(&[infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;
    let bus = EventBus::connect(&infra.nats.url(), "orchestrator-trace").await?;
    let shutdown = ShutdownToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (held, leader) = tokio::sync::watch::channel(None);
    tokio::spawn(leadership::hold(
        store.clone(),
        leadership::ELECTION.to_string(),
        "m1".to_string(),
        Duration::from_secs(3),
        shutdown.clone(),
        held,
    ));
    tokio::spawn(run_while_leading(
        store.clone(),
        bus,
        leader,
        shutdown.clone(),
        ControllerOptions::default(),
    ));

    let svc = store
        .create(Service {
            meta: Some(Meta::default()),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: "web".into(),
                    labels: Default::default(),
                }),
                task: Some(TaskSpec::default()),
                mode: Some(Mode::Replicated(ReplicatedService { replicas: 2 })),
                ..Default::default()
            }),
            spec_version: Some(Version { index: 1 }),
            trace_context: Some(TraceContext {
                traceparent: format!("00-{TRACE_ID}-{PARENT_ID}-01"),
                tracestate: String::new(),
            }),
            ..Default::default()
        })
        .await?;

    let tasks: Vec<Task> = wait_for("2 tasks", DEADLINE, || async {
        let tasks = store.tasks_by_service(svc.id()).await.ok()?.objects;
        (tasks.len() == 2).then_some(tasks)
    })
    .await?;

    let span = wait_for("the reconcile span", DEADLINE, || async {
        let _ = guard.flush().await;
        collector
            .spans()
            .into_iter()
            .find(|s| s.span.name == "reconcile web")
    })
    .await?;
    assert_eq!(span.trace_id_hex(), TRACE_ID);
    assert_eq!(span.parent_span_id_hex(), PARENT_ID);
    for t in &tasks {
        let tc = t.trace_context.clone().unwrap_or_default();
        assert_eq!(
            tc.traceparent,
            format!("00-{TRACE_ID}-{}-01", span.span_id_hex()),
            "task {} carries the reconcile span's context",
            t.id()
        );
    }
    Ok(())
}
