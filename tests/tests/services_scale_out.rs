//! The card's shape: two managers, two schedulers and two dispatchers at once, each
//! stopped and started on its own while a service is scaled, and every task still
//! placed once and run once.

use std::collections::HashSet;
use std::time::Duration;

use shoal_proto::v1::TaskState;
use shoal_scenarios::{Stack, StackOptions, task_desired, task_processes, task_state};
use shoal_testkit::{Infra, wait_for};

const DEADLINE: Duration = Duration::from_secs(90);

/// Waits until `name` has exactly `n` wanted, RUNNING tasks in distinct slots 1..=n,
/// each a live process, and no other live process of the service.
async fn wait_converged(stack: &Stack, host: &str, name: &str, n: usize) -> anyhow::Result<()> {
    let marker = format!("SHOAL_SERVICE_NAME={name}");
    let waited = wait_for(&format!("{name} converged at {n}"), DEADLINE, || async {
        let tasks = stack.tasks_of_on(host, name).await.ok()?;
        let running: Vec<_> = tasks
            .iter()
            .filter(|t| {
                task_state(t) == TaskState::Running && task_desired(t) == TaskState::Running
            })
            .collect();
        let slots: HashSet<u64> = running.iter().map(|t| t.slot).collect();
        let nodes: Vec<String> = stack
            .node_ids()
            .iter()
            .map(|id| format!("SHOAL_NODE_ID={id}"))
            .collect();
        let procs = task_processes()
            .into_iter()
            .filter(|(_, env)| env.contains(&marker) && env.iter().any(|e| nodes.contains(e)))
            .count();
        (running.len() == n && slots == (1..=n as u64).collect() && procs == n).then_some(())
    })
    .await;
    if let Err(e) = waited {
        let tasks = stack.tasks_of_on(host, name).await.unwrap_or_default();
        let seen: Vec<String> = tasks
            .iter()
            .map(|t| {
                format!(
                    "{}.{} on {:?}: {:?} (desired {:?}) {:?}",
                    name,
                    t.slot,
                    t.node_id,
                    task_state(t),
                    task_desired(t),
                    t.status.as_ref().map(|s| (&s.message, &s.err))
                )
            })
            .collect();
        anyhow::bail!("{e}\ntasks: {seen:#?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_each_control_plane_process_stopped_and_started_independently() -> anyhow::Result<()>
{
    let infra = Infra::start().await?;
    let mut stack = Stack::start(
        &infra,
        StackOptions {
            replicas: 2,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(stack.replicas.len(), 3);
    let first_manager = stack.swarm.manager.addr.clone();
    let second_manager = stack.replicas[0].addr.clone();
    stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "web",
            "--replicas",
            "6",
            "sleep",
            "3600",
        ])
        .await?;
    wait_converged(&stack, &first_manager, "web", 6).await?;

    // The first manager stops (it led: the second takes over the orchestrators), the
    // first scheduler and the first dispatcher die; the service is scaled through the
    // second manager.
    stack.swarm.manager.process.signal_term()?;
    stack
        .swarm
        .manager
        .process
        .wait_exit(Duration::from_secs(10))
        .await?;
    stack.scheduler.process.kill_now();
    stack.dispatcher.process.kill_now();
    let out = stack
        .cli_on(&second_manager, &["service", "scale", "web=9"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("verify: Service converged"), "{out:?}");
    wait_converged(&stack, &second_manager, "web", 9).await?;

    // They come back; the others go: still one task per slot, one process per task.
    stack.swarm.manager.restart(&infra)?;
    stack.scheduler.restart(&infra)?;
    stack.dispatcher.restart(&infra)?;
    stack
        .scheduler
        .wait_serving(&stack.swarm.admin, "swarm-manager")
        .await?;
    stack
        .dispatcher
        .wait_serving(&stack.swarm.admin, "swarm-manager")
        .await?;
    stack
        .swarm
        .manager
        .wait_serving(&stack.swarm.admin, "swarm-manager")
        .await?;
    for r in stack.replicas.iter_mut() {
        r.process.signal_term()?;
        r.process.wait_exit(Duration::from_secs(10)).await?;
    }
    stack.cli_ok(&["service", "scale", "web=3"]).await?;
    wait_converged(&stack, &first_manager, "web", 3).await?;
    Ok(())
}
