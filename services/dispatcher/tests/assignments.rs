//! A worker's assignments as its dispatcher streams them: the COMPLETE set of its node's
//! tasks, INCREMENTAL changes chained by sequence numbers, removals, a fresh COMPLETE on
//! reconnect and after an overflow, and refusals of a session that is not the node's.

mod common;

use std::time::Duration;

use common::*;
use shoal_dispatcher::DispatcherOptions;
use shoal_proto::v1::assignments_message::Type as MessageType;
use shoal_proto::v1::{Task, TaskState};
use shoal_store::Object;
use tonic::Code;

/// Long enough that no test needs heartbeats to keep its sessions.
const LONG_PERIOD: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_worker_gets_its_tasks_then_changes_then_removals() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let mut a = swarm.worker_session(&d).await?;
    let b = swarm.worker_session(&d).await?;

    // Playing the scheduler: two tasks assigned to A, one to B, one of A's still pending
    // (a global task placed on A but not yet accepted by the scheduler), one unassigned.
    let a1 = task_on(&a.node_id, "web", 1, TaskState::Assigned);
    let a2 = task_on(&a.node_id, "web", 2, TaskState::Assigned);
    let a_pending = task_on(&a.node_id, "agent", 0, TaskState::Pending);
    let b1 = task_on(&b.node_id, "web", 3, TaskState::Assigned);
    let unassigned = task_on("", "web", 4, TaskState::Pending);
    for r in swarm
        .store()
        .create_many(vec![a1.clone(), a2.clone(), a_pending, b1, unassigned])
        .await
    {
        r?;
    }

    let mut stream = open_assignments(&mut a.client, &a.session_id).await?;
    let complete = next_assignments(&mut stream).await?;
    assert_eq!(complete.r#type(), MessageType::Complete);
    assert_eq!(complete.applies_to, "");
    assert!(!complete.results_in.is_empty());
    assert_eq!(
        updated_ids(&complete),
        sorted(vec![a1.id().to_string(), a2.id().to_string()]),
        "exactly A's assigned tasks"
    );
    let sent = updated_tasks(&complete);
    assert!(sent.iter().all(|t| t.spec.is_some()
        && t.desired_state == TaskState::Running as i32
        && t.node_id == a.node_id));

    // A new assignment arrives on top of the COMPLETE; B's does not.
    let b2 = task_on(&b.node_id, "web", 5, TaskState::Assigned);
    swarm.store().create(b2).await?;
    let a3 = swarm
        .store()
        .create(task_on(&a.node_id, "web", 6, TaskState::Assigned))
        .await?;
    let inc = next_assignments(&mut stream).await?;
    assert_eq!(inc.r#type(), MessageType::Incremental);
    assert_eq!(inc.applies_to, complete.results_in);
    assert_ne!(inc.results_in, inc.applies_to);
    assert_eq!(updated_ids(&inc), vec![a3.id().to_string()]);
    assert!(removed_ids(&inc).is_empty());

    // The worker's own status report is not echoed back; a desired-state change is.
    let rejected = update_status(
        &mut a.client,
        &a.session_id,
        vec![status_update(a1.id(), TaskState::Accepted, "accepted")],
    )
    .await?;
    assert!(rejected.is_empty(), "{rejected:?}");
    let mut stored: Task = swarm.store().get(a2.id()).await?;
    stored.desired_state = TaskState::Shutdown as i32;
    swarm.store().update(stored).await?;
    let inc2 = next_assignments(&mut stream).await?;
    assert_eq!(inc2.r#type(), MessageType::Incremental);
    assert_eq!(inc2.applies_to, inc.results_in);
    assert_eq!(
        updated_ids(&inc2),
        vec![a2.id().to_string()],
        "only the task whose desired state changed"
    );
    assert_eq!(
        updated_tasks(&inc2)[0].desired_state,
        TaskState::Shutdown as i32
    );

    // A deleted task arrives as a REMOVE carrying only its id.
    swarm.store().delete::<Task>(a2.id(), None).await?;
    let inc3 = next_assignments(&mut stream).await?;
    assert_eq!(inc3.applies_to, inc2.results_in);
    assert_eq!(removed_ids(&inc3), vec![a2.id().to_string()]);
    assert!(updated_ids(&inc3).is_empty());
    let removed = inc3.changes[0]
        .assignment
        .as_ref()
        .and_then(|a| match a.item.as_ref()? {
            shoal_proto::v1::assignment::Item::Task(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_default();
    assert!(removed.spec.is_none() && removed.status.is_none());
    assert_eq!(d.dispatcher.assignment_streams(), 1);
    d.stop().await
}

#[tokio::test]
async fn a_new_session_gets_a_fresh_complete_and_ends_the_old_stream() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let (node_id, creds) = swarm.join(shoal_pki::Role::Worker).await?;
    let mut client = connect_as(d.addr, &creds).await?;
    let (first, _session) = open_session(&mut client, "w").await?;
    let t1 = swarm
        .store()
        .create(task_on(&node_id, "web", 1, TaskState::Assigned))
        .await?;
    let mut old = open_assignments(&mut client, &first.session_id).await?;
    let complete = next_assignments(&mut old).await?;
    assert_eq!(updated_ids(&complete), vec![t1.id().to_string()]);

    // The worker reports progress, then reconnects.
    let rejected = update_status(
        &mut client,
        &first.session_id,
        vec![status_update(t1.id(), TaskState::Running, "started")],
    )
    .await?;
    assert!(rejected.is_empty(), "{rejected:?}");
    let t2 = swarm
        .store()
        .create(task_on(&node_id, "web", 2, TaskState::Assigned))
        .await?;
    let mut client2 = connect_as(d.addr, &creds).await?;
    let (second, _session2) = open_session(&mut client2, "w").await?;

    // The old session's stream ends (possibly after delivering t2), with ABORTED.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match old.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await?;
    assert_eq!(ended.map(|s| s.code()), Some(Code::Aborted));
    let err = open_assignments(&mut client, &first.session_id)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the replaced session still opened assignments"))?;
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut fresh = open_assignments(&mut client2, &second.session_id).await?;
    let complete2 = next_assignments(&mut fresh).await?;
    assert_eq!(complete2.r#type(), MessageType::Complete);
    assert_eq!(complete2.applies_to, "");
    assert_eq!(
        updated_ids(&complete2),
        sorted(vec![t1.id().to_string(), t2.id().to_string()])
    );
    let running = updated_tasks(&complete2)
        .into_iter()
        .find(|t| t.id() == t1.id())
        .and_then(|t| t.status)
        .unwrap_or_default();
    assert_eq!(
        running.state(),
        TaskState::Running,
        "the task as stored now"
    );
    d.stop().await
}

#[tokio::test]
async fn an_overflowing_backlog_turns_into_a_complete() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let d = swarm
        .start_dispatcher_with(DispatcherOptions {
            assignment_backlog: 2,
            assignment_window: Duration::from_millis(300),
            ..DispatcherOptions::default()
        })
        .await?;
    let mut a = swarm.worker_session(&d).await?;
    let mut stream = open_assignments(&mut a.client, &a.session_id).await?;
    let empty = next_assignments(&mut stream).await?;
    assert_eq!(empty.r#type(), MessageType::Complete);
    assert!(empty.changes.is_empty());

    let tasks: Vec<Task> = (1..=20)
        .map(|slot| task_on(&a.node_id, "web", slot, TaskState::Assigned))
        .collect();
    let ids = sorted(tasks.iter().map(|t| t.id().to_string()).collect());
    for r in swarm.store().create_many(tasks).await {
        r?;
    }
    // However the changes were split, the worker ends up with all 20, and at least
    // one message was a COMPLETE standing in for a backlog of more than 2.
    let mut have = std::collections::BTreeSet::new();
    let mut completes = 0;
    while have.len() < ids.len() {
        let msg = next_assignments(&mut stream).await?;
        if msg.r#type() == MessageType::Complete {
            completes += 1;
            assert_eq!(msg.applies_to, "");
            have.clear();
        }
        have.extend(updated_ids(&msg));
    }
    assert_eq!(have.into_iter().collect::<Vec<_>>(), ids);
    assert!(
        completes >= 1,
        "20 changes with a backlog of 2 sent no COMPLETE"
    );
    d.stop().await
}

#[tokio::test]
async fn a_session_that_is_not_the_nodes_is_refused() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let mut a = swarm.worker_session(&d).await?;
    let b = swarm.worker_session(&d).await?;

    for session in ["", "bogus.123", b.session_id.as_str()] {
        let err = open_assignments(&mut a.client, session)
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("session {session:?} opened assignments"))?;
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("session invalid"), "{err:?}");
        let err = update_status(&mut a.client, session, Vec::new())
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("session {session:?} updated task status"))?;
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    // Without a certificate nothing is served either.
    let mut anonymous = connect(d.addr, anonymous_tls(swarm.ca.cert_pem())).await?;
    let err = open_assignments(&mut anonymous, &a.session_id)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an anonymous caller opened assignments"))?;
    assert_eq!(err.code(), Code::Unauthenticated);
    d.stop().await
}

#[tokio::test]
async fn shutdown_ends_the_stream_with_unavailable() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let mut a = swarm.worker_session(&d).await?;
    let mut stream = open_assignments(&mut a.client, &a.session_id).await?;
    next_assignments(&mut stream).await?;
    d.stop().await?;
    let end = tokio::time::timeout(DEADLINE, stream.message()).await?;
    let code = match end {
        Err(status) => status.code(),
        Ok(_) => Code::Ok,
    };
    // UNAVAILABLE from the dispatcher, or the connection going away under it.
    assert!(
        matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled),
        "{code:?}"
    );
    Ok(())
}

#[tokio::test]
async fn removing_the_node_ends_its_assignment_stream() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let mut a = swarm.worker_session(&d).await?;
    let mut stream = open_assignments(&mut a.client, &a.session_id).await?;
    next_assignments(&mut stream).await?;
    swarm
        .store()
        .delete::<shoal_proto::v1::Node>(&a.node_id, None)
        .await?;
    let end = tokio::time::timeout(DEADLINE, stream.message()).await?;
    assert_eq!(
        end.err().map(|s| s.code()),
        Some(Code::Aborted),
        "the stream ends with the session"
    );
    shoal_testkit::wait_for("no assignment stream left", DEADLINE, || async {
        (d.dispatcher.assignment_streams() == 0).then_some(())
    })
    .await?;
    d.stop().await
}
