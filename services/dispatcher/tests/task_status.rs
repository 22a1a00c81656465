//! Task status reports through `UpdateTaskStatus`: they land in etcd (and are
//! announced) by the time the call answers; another node's task and a state moving
//! backwards are rejected with a reason; a thousand updates in one call are written.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use shoal_events::EventFilter;
use shoal_proto::v1::{Task, TaskState};
use shoal_store::Object;

const LONG_PERIOD: Duration = Duration::from_secs(30);

fn state(t: &Task) -> TaskState {
    t.status.as_ref().map(|s| s.state()).unwrap_or_default()
}

#[tokio::test]
async fn reports_land_in_the_store_and_bad_ones_are_rejected() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let mut a = swarm.worker_session(&d).await?;
    let b = swarm.worker_session(&d).await?;
    let mine = swarm
        .store()
        .create(task_on(&a.node_id, "web", 1, TaskState::Assigned))
        .await?;
    let theirs = swarm
        .store()
        .create(task_on(&b.node_id, "web", 2, TaskState::Assigned))
        .await?;
    let mut events = swarm
        .state
        .bus
        .subscribe(&EventFilter::kind("task").with_action("update"))
        .await?;

    // A worker's usual sequence in one call, plus another node's task and a task that
    // does not exist.
    let rejected = update_status(
        &mut a.client,
        &a.session_id,
        vec![
            status_update(mine.id(), TaskState::Accepted, "accepted"),
            status_update(mine.id(), TaskState::Preparing, "preparing"),
            status_update(mine.id(), TaskState::Running, "started"),
            status_update(theirs.id(), TaskState::Running, "started"),
            status_update("nosuchtask0000000000000000", TaskState::Running, "started"),
        ],
    )
    .await?;
    let reasons: Vec<(String, String)> = rejected
        .iter()
        .map(|r| (r.task_id.clone(), r.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.contains(&(
        theirs.id().to_string(),
        format!("task {} is not assigned to this node", theirs.id())
    )));
    assert!(reasons.contains(&(
        "nosuchtask0000000000000000".to_string(),
        "task nosuchtask0000000000000000 not found".to_string()
    )));

    // Landed by the time the call answered.
    let stored: Task = swarm.store().get(mine.id()).await?;
    let landed = stored.status.clone().unwrap_or_default();
    assert_eq!(landed.state(), TaskState::Running);
    assert_eq!(landed.message, "started");
    assert!(landed.timestamp.is_some());
    assert_eq!(stored.desired_state, TaskState::Running as i32);
    let untouched: Task = swarm.store().get(theirs.id()).await?;
    assert_eq!(state(&untouched), TaskState::Assigned);

    let ev = tokio::time::timeout(DEADLINE, events.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
    assert_eq!(ev.event.id, mine.id());
    assert_eq!(ev.event.version, stored.version());
    let attr = |k: &str| ev.event.attributes.get(k).cloned().unwrap_or_default();
    assert_eq!(attr("state"), "running");
    assert_eq!(attr("node_id"), a.node_id);
    assert_eq!(attr("service_id"), mine.service_id);

    // Backwards is refused and changes nothing; the same state with a new message is fine.
    let rejected = update_status(
        &mut a.client,
        &a.session_id,
        vec![status_update(mine.id(), TaskState::Starting, "starting")],
    )
    .await?;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].task_id, mine.id());
    assert_eq!(
        rejected[0].reason,
        format!(
            "task {}: state cannot move backwards from running to starting",
            mine.id()
        )
    );
    let rejected = update_status(
        &mut a.client,
        &a.session_id,
        vec![status_update(mine.id(), TaskState::Running, "healthy")],
    )
    .await?;
    assert!(rejected.is_empty(), "{rejected:?}");
    let stored: Task = swarm.store().get(mine.id()).await?;
    assert_eq!(state(&stored), TaskState::Running);
    assert_eq!(stored.status.unwrap_or_default().message, "healthy");

    // The exit of a failed task, with its exit code.
    let mut failed = status(TaskState::Failed, "started");
    failed.err = "task: non-zero exit (3)".into();
    failed.runtime_status = Some(shoal_proto::v1::task_status::RuntimeStatus::Container(
        shoal_proto::v1::ContainerStatus {
            exit_code: 3,
            ..Default::default()
        },
    ));
    let rejected = update_status(
        &mut a.client,
        &a.session_id,
        vec![
            shoal_proto::v1::update_task_status_request::TaskStatusUpdate {
                task_id: mine.id().to_string(),
                status: Some(failed.clone()),
            },
        ],
    )
    .await?;
    assert!(rejected.is_empty(), "{rejected:?}");
    let stored: Task = swarm.store().get(mine.id()).await?;
    let s = stored.status.unwrap_or_default();
    assert_eq!(s.state(), TaskState::Failed);
    assert_eq!(s.err, failed.err);
    assert_eq!(s.runtime_status, failed.runtime_status);
    d.stop().await
}

#[tokio::test]
async fn a_thousand_updates_in_one_call_are_written() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let mut a = swarm.worker_session(&d).await?;
    let tasks: Vec<Task> = (1..=1000)
        .map(|slot| task_on(&a.node_id, "big", slot, TaskState::Assigned))
        .collect();
    let ids: Vec<String> = tasks.iter().map(|t| t.id().to_string()).collect();
    for r in swarm.store().create_many(tasks).await {
        r?;
    }
    // The dispatcher's cache has them once the worker's COMPLETE lists them all.
    let mut stream = open_assignments(&mut a.client, &a.session_id).await?;
    let mut have = std::collections::HashSet::new();
    while have.len() < ids.len() {
        have.extend(updated_ids(&next_assignments(&mut stream).await?));
    }

    let before = d.dispatcher.task_status_stats();
    let rejected = update_status(
        &mut a.client,
        &a.session_id,
        ids.iter()
            .map(|id| status_update(id, TaskState::Running, "started"))
            .collect(),
    )
    .await?;
    assert!(rejected.is_empty(), "{:?}", rejected.first());
    let stored = swarm.store().get_many::<Task>(&ids).await?;
    assert_eq!(stored.len(), 1000);
    assert!(
        stored.iter().all(|t| state(t) == TaskState::Running),
        "every task RUNNING in etcd when the call answered"
    );
    let after = d.dispatcher.task_status_stats();
    assert_eq!(after.written - before.written, 1000);
    d.stop().await
}
