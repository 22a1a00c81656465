//! Container tasks through the Docker Engine (skipped, with a notice, where no engine
//! answers): an image built locally from busybox-static (never pulled), containers named
//! `<service>.<slot>.<task id>` as in the seeds, labelled with their task, removed with
//! the service; a missing image fails the task with Docker's words.

use std::time::Duration;

use shoal_proto::v1::{Task, TaskState};
use shoal_scenarios::{Stack, StackOptions, containers_of, task_state};
use shoal_testkit::docker::{busybox_image, docker_available};
use shoal_testkit::{Infra, wait_for};

const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_as_tasks_and_go_with_the_service() -> anyhow::Result<()> {
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; the docker executor scenario is skipped");
        return Ok(());
    }
    let image = busybox_image()?;
    let infra = Infra::start().await?;
    let stack = Stack::start(
        &infra,
        StackOptions {
            workers: 2,
            ..Default::default()
        },
    )
    .await?;

    let out = stack
        .cli_ok(&[
            "service",
            "create",
            "--name",
            "box",
            "--replicas",
            "2",
            "--env",
            "GREETING=hello",
            &image,
            "sh",
            "-c",
            "echo $GREETING; exec sleep 3600",
        ])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    let tasks = stack.tasks_of("box").await?;
    let running: Vec<&Task> = tasks
        .iter()
        .filter(|t| task_state(t) == TaskState::Running)
        .collect();
    assert_eq!(running.len(), 2);
    let names = containers_of("box")?;
    for t in &running {
        let id = t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        let want = format!("box.{}.{}", t.slot, id);
        assert!(names.contains(&want), "container {want} in {names:?}");
    }

    // The task's output reaches `service logs`.
    let logs = wait_for("box's output in service logs", DEADLINE, || async {
        let out = stack.cli(&["service", "logs", "box"]).await.ok()?;
        (out.stdout.matches("hello").count() == 2).then_some(out.stdout)
    })
    .await?;
    assert!(logs.lines().all(|l| l.starts_with("box.")), "{logs}");

    stack.cli_ok(&["service", "rm", "box"]).await?;
    wait_for("box's containers to be removed", DEADLINE, || async {
        containers_of("box").ok()?.is_empty().then_some(())
    })
    .await?;

    // No pulls: an image that is not here fails the task with Docker's words.
    stack
        .cli_ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            "ghost",
            "shoal-test/not-here:1",
        ])
        .await?;
    let failed =
        wait_for("ghost's task to fail", DEADLINE, || async {
            stack.tasks_of("ghost").await.ok()?.into_iter().find(|t| {
                task_state(t) == TaskState::Failed || task_state(t) == TaskState::Rejected
            })
        })
        .await?;
    let err = failed.status.map(|s| s.err).unwrap_or_default();
    assert!(
        err.contains("No such image: shoal-test/not-here:1"),
        "{err}"
    );
    Ok(())
}
