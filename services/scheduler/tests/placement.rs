//! The scheduler against a real etcd and NATS: nodes and PENDING tasks written straight
//! into the store, as the dispatcher and the orchestrator write them; the scheduler runs
//! as the library the binary runs.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use shoal_events::{EventFilter, SCHEDULE_WORK_SUBJECT};
use shoal_proto::v1::node_spec::Availability;
use shoal_proto::v1::node_status::State as NodeState;
use shoal_proto::v1::{NodeRole, Task, TaskState};
use shoal_store::{Object, WatchEvent};

#[tokio::test]
async fn five_tasks_over_three_nodes_are_assigned_two_two_one() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    for n in ["n1", "n2", "n3"] {
        c.add_node(node(n)).await?;
    }
    let _s = c.scheduler().await?;
    let mut events = c.bus.subscribe(&EventFilter::kind("task")).await?;

    c.add_tasks(replicas("svc-web", "web", 5, spec(&[], None, 0)))
        .await?;
    let tasks = c.wait_assigned("svc-web", 5).await?;

    let mut counts: Vec<usize> = per_node(&tasks).into_values().collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2, 2]);
    for t in &tasks {
        let status = t.status.clone().unwrap_or_default();
        assert_eq!(status.message, "scheduler assigned task to node");
        assert_eq!(status.err, "");
        assert!(status.timestamp.is_some());
        assert!(["n1", "n2", "n3"].contains(&t.node_id.as_str()));
        assert_eq!(t.desired_state, TaskState::Running as i32);
    }
    // The by-node index moved with the assignment.
    let on_n1 = c.store.tasks_by_node("n1").await?.objects;
    assert_eq!(
        on_n1.len(),
        per_node(&tasks).get("n1").copied().unwrap_or(0)
    );

    // Each assignment was announced after its commit, with the facts consumers filter on.
    let mut announced: HashMap<String, (u64, HashMap<String, String>)> = HashMap::new();
    while announced.len() < 5 {
        let ev = tokio::time::timeout(DEADLINE, events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
        announced.insert(ev.event.id.clone(), (ev.event.version, ev.event.attributes));
    }
    for t in &tasks {
        let (version, attrs) = &announced[t.id()];
        assert_eq!(*version, t.version());
        assert_eq!(attrs.get("service_id").map(String::as_str), Some("svc-web"));
        assert_eq!(attrs.get("node_id"), Some(&t.node_id));
        assert_eq!(attrs.get("state").map(String::as_str), Some("assigned"));
    }
    Ok(())
}

#[tokio::test]
async fn drained_paused_and_down_nodes_get_nothing_until_a_node_is_ready() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    c.add_node(with_availability(node("drained"), Availability::Drain))
        .await?;
    c.add_node(with_availability(node("paused"), Availability::Pause))
        .await?;
    c.add_node(with_state(node("down"), NodeState::Down))
        .await?;
    let _s = c.scheduler().await?;

    c.add_tasks(replicas("svc-a", "a", 2, spec(&[], None, 0)))
        .await?;
    let tasks = c.wait_settled("svc-a", 2, 0).await?;
    for t in &tasks {
        assert_eq!(
            err(t),
            "no suitable node (3 nodes not available for new tasks)"
        );
        assert_eq!(state(t), TaskState::Pending);
        assert_eq!(t.node_id, "");
        let status = t.status.clone().unwrap_or_default();
        assert_eq!(status.message, "pending task scheduling");
    }

    // A node coming up is retried at once (no hint, no scan).
    c.add_node(node("ready")).await?;
    let tasks = c.wait_assigned("svc-a", 2).await?;
    assert!(tasks.iter().all(|t| t.node_id == "ready"));
    assert!(tasks.iter().all(|t| err(t).is_empty()));
    Ok(())
}

#[tokio::test]
async fn constraint_on_the_manager_role_places_only_on_managers() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    c.add_node(node("w1")).await?;
    c.add_node(node("w2")).await?;
    let mut m = node("m1");
    m.role = NodeRole::Manager as i32;
    c.add_node(m).await?;
    let _s = c.scheduler().await?;

    c.add_tasks(replicas(
        "svc-mgr",
        "mgr",
        3,
        spec(&["node.role==manager"], None, 0),
    ))
    .await?;
    let tasks = c.wait_assigned("svc-mgr", 3).await?;
    assert!(tasks.iter().all(|t| t.node_id == "m1"), "{tasks:?}");
    Ok(())
}

#[tokio::test]
async fn an_impossible_constraint_is_explained_until_a_node_gets_the_label() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    for n in ["n1", "n2", "n3"] {
        c.add_node(node(n)).await?;
    }
    let _s = c.scheduler().await?;
    c.add_tasks(replicas(
        "svc-z",
        "z",
        2,
        spec(&["node.labels.zone==east"], None, 0),
    ))
    .await?;
    let tasks = c.wait_settled("svc-z", 2, 0).await?;
    for t in &tasks {
        assert_eq!(
            err(t),
            "no suitable node (scheduling constraints not satisfied on 3 nodes)"
        );
    }
    // The explanation is written once, not on every pass.
    let versions: HashSet<u64> = tasks.iter().map(|t| t.version()).collect();

    let n2: shoal_proto::v1::Node = c.store.get("n2").await?;
    c.store.update(with_label(n2, "zone", "east")).await?;
    let placed = c.wait_assigned("svc-z", 2).await?;
    assert!(placed.iter().all(|t| t.node_id == "n2"));
    assert!(placed.iter().all(|t| !versions.contains(&t.version())));
    Ok(())
}

#[tokio::test]
async fn reservations_beyond_capacity_stay_pending() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    for n in ["n1", "n2", "n3"] {
        c.add_node(node(n)).await?;
    }
    let _s = c.scheduler().await?;
    // 3 CPUs each: one per 4-CPU node.
    c.add_tasks(replicas(
        "svc-big",
        "big",
        4,
        spec(&[], Some((3 * CPU, GIB)), 0),
    ))
    .await?;
    let tasks = c.wait_settled("svc-big", 4, 3).await?;
    let mut counts: Vec<usize> = per_node(&tasks).into_values().collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 1]);
    let pending: Vec<&Task> = tasks
        .iter()
        .filter(|t| state(t) == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        err(pending[0]),
        "no suitable node (insufficient resources on 3 nodes)"
    );

    // Capacity freed by a task that finished lets the pending one in.
    let done = tasks
        .iter()
        .find(|t| state(t) == TaskState::Assigned)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no assigned task"))?;
    let freed_node = done.node_id.clone();
    let mut finished = done.clone();
    if let Some(s) = finished.status.as_mut() {
        s.set_state(TaskState::Complete);
    }
    c.store.update(finished).await?;
    let pending_id = pending[0].id().to_string();
    let placed = c
        .wait_tasks("the pending task placed", "svc-big", |ts| {
            ts.iter()
                .any(|t| t.id() == pending_id && state(t) == TaskState::Assigned)
        })
        .await?;
    let t = placed
        .iter()
        .find(|t| t.id() == pending_id)
        .ok_or_else(|| anyhow::anyhow!("task gone"))?;
    assert_eq!(t.node_id, freed_node);
    Ok(())
}

#[tokio::test]
async fn max_replicas_per_node_is_kept() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    for n in ["n1", "n2", "n3"] {
        c.add_node(node(n)).await?;
    }
    let _s = c.scheduler().await?;
    c.add_tasks(replicas("svc-max", "max", 5, spec(&[], None, 1)))
        .await?;
    let tasks = c.wait_settled("svc-max", 5, 3).await?;
    let counts = per_node(&tasks);
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|n| *n == 1));
    for t in tasks.iter().filter(|t| state(t) == TaskState::Pending) {
        assert_eq!(
            err(t),
            "no suitable node (max replicas per node limit exceed)"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_global_task_is_only_checked_against_its_own_node() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    c.add_node(node("good")).await?;
    c.add_node(with_availability(node("drained"), Availability::Drain))
        .await?;
    c.add_node(node("other")).await?;
    let _s = c.scheduler().await?;
    let mut global = vec![
        task("svc-g", "g", 0, "good", spec(&[], None, 0)),
        task("svc-g", "g", 0, "drained", spec(&[], None, 0)),
        // Fails the constraint on its node, though "other" would pass it.
        task(
            "svc-g",
            "g",
            0,
            "other",
            spec(&["node.hostname==host-good"], None, 0),
        ),
    ];
    global[2].spec_version = Some(shoal_proto::v1::Version { index: 2 });
    c.add_tasks(global).await?;
    let tasks = c.wait_settled("svc-g", 3, 1).await?;
    for t in &tasks {
        match t.node_id.as_str() {
            "good" => assert_eq!(state(t), TaskState::Assigned),
            "drained" => {
                assert_eq!(state(t), TaskState::Pending);
                assert_eq!(
                    err(t),
                    "no suitable node (1 node not available for new tasks)"
                );
            }
            "other" => {
                assert_eq!(state(t), TaskState::Pending);
                assert_eq!(
                    err(t),
                    "no suitable node (scheduling constraints not satisfied on 1 node)"
                );
            }
            n => anyhow::bail!("task moved to node {n:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_hint_carrying_a_revision_is_served() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    c.add_node(node("n1")).await?;
    let s = c.scheduler().await?;
    let created = c
        .add_tasks(replicas("svc-h", "h", 1, spec(&[], None, 0)))
        .await?;
    let revision = created.iter().map(|t| t.version()).max().unwrap_or(0);
    c.bus
        .publish_raw(SCHEDULE_WORK_SUBJECT, Bytes::from(revision.to_string()))
        .await?;
    c.wait_assigned("svc-h", 1).await?;
    // The counter moves once the pass has handled its results, just after the commit.
    shoal_testkit::wait_for("the placement counted", DEADLINE, || async {
        (s.stats().placed.load(std::sync::atomic::Ordering::Relaxed) == 1).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn two_schedulers_assign_a_thousand_tasks_exactly_once() -> anyhow::Result<()> {
    const TASKS: usize = 1_000;
    let c = Cluster::start().await?;
    for i in 0..20 {
        c.add_node(node(&format!("n{i:02}"))).await?;
    }
    let start = c.store.revision().await?;
    let mut watch = c.store.watch_kind::<Task>(Some(start));
    let a = c.scheduler().await?;
    let b = c.scheduler().await?;

    // Written in several batches while both run, with hints, as an orchestrator would.
    let mut all = replicas("svc-many", "many", TASKS as u64, spec(&[], None, 0));
    let mut ids = HashSet::new();
    while !all.is_empty() {
        let rest = all.split_off(all.len().saturating_sub(100));
        let created = c.add_tasks(rest).await?;
        ids.extend(created.iter().map(|t| t.id().to_string()));
        c.bus
            .publish_raw(SCHEDULE_WORK_SUBJECT, Bytes::from_static(b"svc-many"))
            .await?;
    }
    assert_eq!(ids.len(), TASKS);

    // Count the ASSIGNED transitions of every task from the store's own change feed.
    // Nothing but the schedulers writes these tasks after creating them, so every
    // write that shows ASSIGNED is one assignment.
    let mut assigned: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while assigned.len() < TASKS {
        let ev = tokio::time::timeout_at(deadline, watch.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {TASKS} tasks assigned", assigned.len()))?
            .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
        let t = match ev {
            WatchEvent::Added(t) | WatchEvent::Modified(t) => t,
            _ => continue,
        };
        if state(&t) == TaskState::Assigned {
            *assigned.entry(t.id().to_string()).or_default() += 1;
        }
    }
    // Give a duplicate the time to show up: wait until both schedulers are idle.
    shoal_testkit::wait_for("both schedulers caught up", DEADLINE, || async {
        let pending = |s: &shoal_scheduler::Scheduler| {
            s.tasks()
                .list()
                .iter()
                .filter(|t| t.service_id == "svc-many" && state(t) != TaskState::Assigned)
                .count()
        };
        (a.tasks().len() >= TASKS
            && b.tasks().len() >= TASKS
            && pending(&a) == 0
            && pending(&b) == 0)
            .then_some(())
    })
    .await?;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
        if let WatchEvent::Modified(t) = ev
            && state(&t) == TaskState::Assigned
        {
            *assigned.entry(t.id().to_string()).or_default() += 1;
        }
    }

    assert_eq!(assigned.len(), TASKS);
    let twice: Vec<_> = assigned.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "assigned more than once: {twice:?}");
    let counted = || {
        a.stats().placed.load(std::sync::atomic::Ordering::Relaxed)
            + b.stats().placed.load(std::sync::atomic::Ordering::Relaxed)
    };
    // The counters move once a pass has handled its results, just after the commit.
    let placed = shoal_testkit::wait_for("placements counted", DEADLINE, || async {
        let n = counted();
        (n >= TASKS as u64).then_some(n)
    })
    .await?;
    assert_eq!(
        placed, TASKS as u64,
        "committed placements of both schedulers"
    );
    println!(
        "lost CAS: {} + {}",
        a.stats()
            .conflicts
            .load(std::sync::atomic::Ordering::Relaxed),
        b.stats()
            .conflicts
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    let stored = c.tasks("svc-many").await?;
    assert_eq!(stored.len(), TASKS);
    assert!(stored.iter().all(|t| state(t) == TaskState::Assigned));
    let counts = per_node(&stored);
    assert_eq!(counts.len(), 20);
    // Both spread over every node (each sees the other's placements through its cache).
    assert!(
        counts.values().all(|n| (20..=100).contains(n)),
        "{counts:?}"
    );
    Ok(())
}
