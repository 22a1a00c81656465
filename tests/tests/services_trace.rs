//! One `shoal service create --replicas 2` is one trace: every process exports OTLP to
//! a collector this test runs, and the spans of the CLI, the manager (the RPC and the
//! orchestrator's reconcile), the scheduler, the dispatcher and the worker all hang in
//! that trace, each under its parent, with names a reader understands.

use std::collections::HashSet;
use std::time::Duration;

use shoal_scenarios::{Stack, StackOptions};
use shoal_testkit::{Infra, OtlpCollector, SeenSpan, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_create_is_one_trace_across_every_service() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let (collector, collector_addr) = OtlpCollector::start().await?;
    let otlp = format!("http://{collector_addr}");
    let stack = Stack::start(
        &infra,
        StackOptions {
            workers: 2,
            extra: format!("otlp_endpoint = \"{otlp}\"\n"),
            ..Default::default()
        },
    )
    .await?;

    let out = tokio::process::Command::new(shoal_testkit::binary("shoal")?)
        .args([
            "service",
            "create",
            "--process",
            "--name",
            "web",
            "--replicas",
            "2",
            "sleep",
            "3600",
        ])
        .env("SHOAL_HOST", &stack.swarm.manager.addr)
        .env("SHOAL_CERT_DIR", &stack.cli_dir)
        .env("SHOAL_OTLP_ENDPOINT", &otlp)
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The trace is the one the CLI's root span started.
    let root = wait_for("the CLI's span", Duration::from_secs(30), || async {
        collector.spans().into_iter().find(|s| {
            s.service_name.as_deref() == Some("shoal-cli") && s.parent_span_id_hex().is_empty()
        })
    })
    .await;
    let root = match root {
        Ok(root) => root,
        Err(e) => {
            let cli: Vec<String> = collector
                .spans()
                .into_iter()
                .filter(|s| s.service_name.as_deref() == Some("shoal-cli"))
                .map(|s| format!("{} (parent {:?})", s.span.name, s.parent_span_id_hex()))
                .collect();
            anyhow::bail!(
                "{e}; the CLI's spans: {cli:?}; CLI stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let trace = root.trace_id_hex();
    let wanted: &[(&str, &str)] = &[
        ("shoal-manager", "CreateService"),
        ("shoal-manager", "reconcile web"),
        ("shoal-scheduler", "schedule web (2 tasks)"),
        ("shoal-dispatcher", "assign web.1"),
        ("shoal-dispatcher", "assign web.2"),
        ("shoal-worker", "start web.1"),
        ("shoal-worker", "start web.2"),
    ];
    let spans = wait_for(
        "spans of every service in the CLI's trace",
        Duration::from_secs(60),
        || async {
            let spans: Vec<SeenSpan> = collector
                .spans()
                .into_iter()
                .filter(|s| s.trace_id_hex() == trace)
                .collect();
            let complete = wanted.iter().all(|(service, name)| {
                spans.iter().any(|s| {
                    s.service_name.as_deref() == Some(*service) && s.span.name.contains(name)
                })
            });
            (complete && orphans(&spans, &root).is_empty()).then_some(spans)
        },
    )
    .await;
    if let Err(e) = spans {
        let spans: Vec<SeenSpan> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id_hex() == trace)
            .collect();
        let seen: Vec<String> = spans
            .iter()
            .map(|s| format!("{:?}: {}", s.service_name, s.span.name))
            .collect();
        anyhow::bail!(
            "{e}\nseen in the trace: {seen:#?}\norphans: {:?}",
            orphans(&spans, &root)
        );
    }
    Ok(())
}

/// Spans of the trace whose parent is not in it (the root excepted): a broken link.
fn orphans(spans: &[SeenSpan], root: &SeenSpan) -> Vec<String> {
    let ids: HashSet<String> = spans.iter().map(|s| s.span_id_hex()).collect();
    spans
        .iter()
        .filter(|s| s.span_id_hex() != root.span_id_hex())
        .filter(|s| !ids.contains(&s.parent_span_id_hex()))
        .map(|s| format!("{:?}: {}", s.service_name, s.span.name))
        .collect()
}
