//! The orchestrator controller against real etcd and NATS: run as a library under a real
//! `manager` election, with the test playing scheduler and worker by writing task
//! placements and states into the store.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use shoal_events::{EventFilter, SCHEDULE_WORK_SUBJECT};
use shoal_manager::leadership;
use shoal_proto::v1::node_spec::Availability;
use shoal_proto::v1::restart_policy::Condition;
use shoal_proto::v1::service_spec::Mode;
use shoal_proto::v1::{
    Annotations, GlobalService, Meta, Placement, ReplicatedJob, ReplicatedService, RestartPolicy,
    Service, ServiceSpec, Task, TaskSpec, TaskState, Version, node_status,
};
use shoal_store::Object;
use shoal_testkit::wait_for;

mod common;

use common::{Cluster, DEADLINE};

impl Cluster {
    async fn create_service(&self, name: &str, mode: Mode) -> anyhow::Result<Service> {
        Ok(self.store.create(service(name, mode)).await?)
    }
}

fn service(name: &str, mode: Mode) -> Service {
    Service {
        meta: Some(Meta::default()),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: Default::default(),
            }),
            task: Some(TaskSpec::default()),
            mode: Some(mode),
            ..Default::default()
        }),
        spec_version: Some(Version { index: 1 }),
        ..Default::default()
    }
}

fn replicated(replicas: u64) -> Mode {
    Mode::Replicated(ReplicatedService { replicas })
}

fn state(t: &Task) -> TaskState {
    t.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

fn to_system(ts: Option<&prost_types::Timestamp>) -> SystemTime {
    ts.and_then(|ts| SystemTime::try_from(*ts).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn created(t: &Task) -> SystemTime {
    to_system(t.meta.as_ref().and_then(|m| m.created_at.as_ref()))
}

fn status_time(t: &Task) -> SystemTime {
    to_system(t.status.as_ref().and_then(|s| s.timestamp.as_ref()))
}

fn desired(t: &Task) -> TaskState {
    TaskState::try_from(t.desired_state).unwrap_or(TaskState::New)
}

fn wanted(t: &Task) -> bool {
    desired(t) == TaskState::Running
}

/// Slots of the tasks still desired RUNNING, sorted.
fn running_slots(tasks: &[Task]) -> Vec<u64> {
    let mut v: Vec<u64> = tasks.iter().filter(|t| wanted(t)).map(|t| t.slot).collect();
    v.sort_unstable();
    v
}

fn in_slot(tasks: &[Task], slot: u64) -> Vec<&Task> {
    tasks.iter().filter(|t| t.slot == slot).collect()
}

fn ms(n: i32) -> prost_types::Duration {
    prost_types::Duration {
        seconds: 0,
        nanos: n * 1_000_000,
    }
}

#[tokio::test]
async fn replicated_service_scales_up_and_down_by_slot() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _m = c.manager("m1").await?;
    let mut hints = c.bus.subscribe_raw(SCHEDULE_WORK_SUBJECT).await?;
    let mut events = c.bus.subscribe(&EventFilter::kind("task")).await?;

    let svc = c.create_service("web", replicated(3)).await?;
    let tasks = c
        .wait_tasks("3 tasks", svc.id(), |ts| ts.len() == 3)
        .await?;
    assert_eq!(running_slots(&tasks), vec![1, 2, 3]);
    for t in &tasks {
        assert_eq!(state(t), TaskState::Pending);
        assert_eq!(
            t.status.as_ref().map(|s| s.message.as_str()),
            Some("pending task scheduling")
        );
        assert_eq!(t.node_id, "");
        assert_eq!(t.service_id, svc.id());
        assert_eq!(
            t.annotations.as_ref().map(|a| a.name.clone()),
            Some(format!("web.{}", t.slot))
        );
    }
    let hint = tokio::time::timeout(DEADLINE, hints.next()).await?;
    let revision: Option<u64> = hint.and_then(|m| {
        std::str::from_utf8(&m.payload)
            .ok()
            .and_then(|p| p.parse().ok())
    });
    let newest = tasks.iter().map(|t| t.version()).max().unwrap_or(0);
    assert_eq!(
        revision,
        Some(newest),
        "the scheduling hint carries the new tasks' revision"
    );
    let ev = tokio::time::timeout(DEADLINE, events.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
    assert_eq!(ev.event.action, "create");
    assert_eq!(
        ev.event.attributes.get("service_id").map(String::as_str),
        Some(svc.id())
    );
    assert_eq!(
        ev.event.attributes.get("state").map(String::as_str),
        Some("pending")
    );

    c.scale(svc.id(), 5).await?;
    let tasks = c
        .wait_tasks("5 tasks", svc.id(), |ts| running_slots(ts).len() == 5)
        .await?;
    assert_eq!(running_slots(&tasks), vec![1, 2, 3, 4, 5]);

    // Scale down: the highest slots go; never assigned, they are deleted at once.
    c.scale(svc.id(), 2).await?;
    let tasks = c
        .wait_tasks("2 tasks left", svc.id(), |ts| ts.len() == 2)
        .await?;
    assert_eq!(running_slots(&tasks), vec![1, 2]);
    Ok(())
}

#[tokio::test]
async fn tasks_on_a_down_or_drained_node_are_replaced_in_their_slot() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _m = c.manager("m1").await?;
    let n1 = c.add_node("n1").await?;
    let n2 = c.add_node("n2").await?;
    let svc = c.create_service("web", replicated(2)).await?;
    let tasks = c
        .wait_tasks("2 tasks", svc.id(), |ts| ts.len() == 2)
        .await?;
    let mut by_slot: BTreeMap<u64, String> = BTreeMap::new();
    for t in &tasks {
        let node = if t.slot == 1 { n1.id() } else { n2.id() };
        c.set_task(t.id(), Some(node), TaskState::Running).await?;
        by_slot.insert(t.slot, t.id().to_string());
    }

    // n1 goes down: slot 1 gets a new task, the old one is shut down and kept.
    c.update_node(n1.id(), |n| {
        if let Some(s) = n.status.as_mut() {
            s.state = node_status::State::Down as i32;
        }
    })
    .await?;
    let old1 = by_slot.get(&1).cloned().unwrap_or_default();
    let tasks = c
        .wait_tasks("slot 1 replaced", svc.id(), |ts| {
            in_slot(ts, 1).len() == 2
                && ts
                    .iter()
                    .any(|t| t.id() == old1 && desired(t) == TaskState::Shutdown)
        })
        .await?;
    let new1 = tasks
        .iter()
        .find(|t| t.slot == 1 && t.id() != old1)
        .ok_or_else(|| anyhow::anyhow!("no replacement"))?;
    assert_eq!(state(new1), TaskState::Pending);
    assert_eq!(new1.node_id, "");
    assert_eq!(running_slots(&tasks), vec![1, 2]);
    let new1_id = new1.id().to_string();
    c.set_task(&new1_id, Some(n2.id()), TaskState::Running)
        .await?;

    // n1 is back: nothing moves. Scaling to 3 is the barrier that shows the
    // orchestrator has looked at the service since.
    c.update_node(n1.id(), |n| {
        if let Some(s) = n.status.as_mut() {
            s.state = node_status::State::Ready as i32;
        }
    })
    .await?;
    c.scale(svc.id(), 3).await?;
    let tasks = c
        .wait_tasks("slot 3 created", svc.id(), |ts| in_slot(ts, 3).len() == 1)
        .await?;
    assert_eq!(in_slot(&tasks, 1).len(), 2, "nothing moved back: {tasks:?}");
    assert!(
        tasks
            .iter()
            .any(|t| t.id() == new1_id && desired(t) == TaskState::Running)
    );

    // n2 drained: both its tasks (slot 1's replacement and slot 2) are replaced.
    c.update_node(n2.id(), |n| {
        if let Some(s) = n.spec.as_mut() {
            s.availability = Availability::Drain as i32;
        }
    })
    .await?;
    let tasks = c
        .wait_tasks("drained tasks replaced", svc.id(), |ts| {
            ts.iter()
                .filter(|t| t.node_id == n2.id())
                .all(|t| desired(t) == TaskState::Shutdown)
                && running_slots(ts) == vec![1, 2, 3]
        })
        .await?;
    for t in tasks.iter().filter(|t| wanted(t)) {
        assert_ne!(t.node_id, n2.id());
    }
    assert_eq!(in_slot(&tasks, 2).len(), 2);
    Ok(())
}

#[tokio::test]
async fn global_service_runs_one_task_per_eligible_node() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _m = c.manager("m1").await?;
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(c.add_node(name).await?);
    }
    let svc = c
        .create_service("agent", Mode::Global(GlobalService {}))
        .await?;
    let tasks = c
        .wait_tasks("3 tasks", svc.id(), |ts| ts.len() == 3)
        .await?;
    let mut on: Vec<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
    on.sort_unstable();
    let mut expected: Vec<&str> = nodes.iter().map(|n| n.id()).collect();
    expected.sort_unstable();
    assert_eq!(on, expected);
    for t in &tasks {
        assert_eq!(t.slot, 0);
        assert_eq!(
            t.annotations.as_ref().map(|a| a.name.clone()),
            Some(format!("agent.{}", t.node_id))
        );
    }

    let n4 = c.add_node("n4").await?;
    let tasks = c
        .wait_tasks("4 tasks", svc.id(), |ts| ts.len() == 4)
        .await?;
    assert!(tasks.iter().any(|t| t.node_id == n4.id()));

    // Drained: its task shut down, nothing replaces it.
    let n1 = nodes
        .first()
        .map(|n| n.id().to_string())
        .unwrap_or_default();
    c.update_node(&n1, |n| {
        if let Some(s) = n.spec.as_mut() {
            s.availability = Availability::Drain as i32;
        }
    })
    .await?;
    let tasks = c
        .wait_tasks("n1's task shut down", svc.id(), |ts| {
            ts.iter()
                .any(|t| t.node_id == n1 && desired(t) == TaskState::Shutdown)
        })
        .await?;
    assert_eq!(tasks.len(), 4);
    assert_eq!(tasks.iter().filter(|t| wanted(t)).count(), 3);

    // Constraints: only the labelled node is eligible.
    let mut spec_svc = service("zoned", Mode::Global(GlobalService {}));
    if let Some(task) = spec_svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
        task.placement = Some(Placement {
            constraints: vec!["node.labels.zone==east".into()],
            ..Default::default()
        });
    }
    c.update_node(n4.id(), |n| {
        if let Some(a) = n.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
            a.labels.insert("zone".into(), "east".into());
        }
    })
    .await?;
    let zoned = c.store.create(spec_svc).await?;
    let tasks = c
        .wait_tasks("1 zoned task", zoned.id(), |ts| !ts.is_empty())
        .await?;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks.first().map(|t| t.node_id.as_str()), Some(n4.id()));
    Ok(())
}

#[tokio::test]
async fn on_failure_restarts_exactly_max_attempts_times() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _m = c.manager("m1").await?;
    let n1 = c.add_node("n1").await?;
    let mut svc = service("flaky", replicated(1));
    if let Some(task) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
        task.restart = Some(RestartPolicy {
            condition: Condition::OnFailure as i32,
            delay: Some(ms(300)),
            max_attempts: 2,
            window: None,
        });
    }
    let svc = c.store.create(svc).await?;
    for attempt in 1..=3usize {
        let tasks = c
            .wait_tasks(&format!("attempt {attempt}"), svc.id(), |ts| {
                ts.len() == attempt
                    && ts
                        .iter()
                        .filter(|t| wanted(t) && state(t) == TaskState::Pending)
                        .count()
                        == 1
            })
            .await?;
        let live = tasks
            .iter()
            .find(|t| wanted(t) && state(t) == TaskState::Pending)
            .ok_or_else(|| anyhow::anyhow!("no live task"))?;
        assert_eq!(live.slot, 1);
        c.set_task(live.id(), Some(n1.id()), TaskState::Failed)
            .await?;
    }
    // The third failure is final: it is shut down, and no fourth task comes.
    let tasks = c
        .wait_tasks("given up", svc.id(), |ts| {
            ts.len() == 3 && ts.iter().all(|t| desired(t) == TaskState::Shutdown)
        })
        .await?;
    assert!(
        tasks
            .iter()
            .all(|t| t.slot == 1 && state(t) == TaskState::Failed)
    );
    // Each restart was created no earlier than its predecessor's death plus the delay.
    let mut by_creation: Vec<&Task> = tasks.iter().collect();
    by_creation.sort_by_key(|t| created(t));
    for pair in by_creation.windows(2) {
        if let [dead, next] = pair {
            let died = status_time(dead);
            assert!(
                created(next) >= died + Duration::from_millis(300),
                "restart created before the delay: {died:?} -> {:?}",
                created(next)
            );
        }
    }
    // Barrier: a scale-up is served, the slot stays given up.
    c.scale(svc.id(), 2).await?;
    let tasks = c
        .wait_tasks("slot 2", svc.id(), |ts| in_slot(ts, 2).len() == 1)
        .await?;
    assert_eq!(in_slot(&tasks, 1).len(), 3);
    Ok(())
}

#[tokio::test]
async fn history_beyond_five_dead_tasks_per_slot_is_reaped() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _m = c.manager("m1").await?;
    let n1 = c.add_node("n1").await?;
    let mut svc = service("crashy", replicated(1));
    if let Some(task) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
        task.restart = Some(RestartPolicy {
            condition: Condition::Any as i32,
            delay: Some(ms(50)),
            max_attempts: 0,
            window: None,
        });
    }
    let svc = c.store.create(svc).await?;
    let mut seen_max = 0usize;
    for round in 0..8 {
        let tasks = c
            .wait_tasks(&format!("live task {round}"), svc.id(), |ts| {
                ts.iter()
                    .any(|t| wanted(t) && state(t) == TaskState::Pending)
            })
            .await?;
        seen_max = seen_max.max(tasks.len());
        let live = tasks
            .iter()
            .find(|t| wanted(t) && state(t) == TaskState::Pending)
            .ok_or_else(|| anyhow::anyhow!("no live task"))?;
        c.set_task(live.id(), Some(n1.id()), TaskState::Failed)
            .await?;
    }
    let tasks = c
        .wait_tasks("1 live + 5 history", svc.id(), |ts| {
            ts.len() == 6 && ts.iter().filter(|t| wanted(t)).count() == 1
        })
        .await?;
    assert!(seen_max <= 7, "history was bounded: saw {seen_max} tasks");
    assert_eq!(
        tasks
            .iter()
            .filter(|t| desired(t) == TaskState::Shutdown)
            .count(),
        5
    );
    Ok(())
}

#[tokio::test]
async fn a_removed_service_tasks_are_removed_then_reaped_once_dead() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _m = c.manager("m1").await?;
    let n1 = c.add_node("n1").await?;
    let svc = c.create_service("gone", replicated(2)).await?;
    let tasks = c
        .wait_tasks("2 tasks", svc.id(), |ts| ts.len() == 2)
        .await?;
    let running = tasks
        .iter()
        .find(|t| t.slot == 1)
        .ok_or_else(|| anyhow::anyhow!("no slot 1"))?;
    let running_id = running.id().to_string();
    c.set_task(&running_id, Some(n1.id()), TaskState::Running)
        .await?;

    c.store.delete::<Service>(svc.id(), None).await?;
    // The never-assigned one goes at once; the running one waits for its worker.
    let tasks = c
        .wait_tasks("running task set REMOVE", svc.id(), |ts| {
            ts.len() == 1
                && ts
                    .iter()
                    .all(|t| t.id() == running_id && desired(t) == TaskState::Remove)
        })
        .await?;
    assert_eq!(state(&tasks[0]), TaskState::Running);
    c.set_task(&running_id, None, TaskState::Shutdown).await?;
    c.wait_tasks("all reaped", svc.id(), |ts| ts.is_empty())
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_leader_change_midway_creates_no_duplicate_slots() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let m1 = c.manager("m1").await?;
    let svc = c.create_service("web", replicated(3)).await?;
    c.wait_tasks("3 tasks", svc.id(), |ts| ts.len() == 3)
        .await?;
    let _m2 = c.manager("m2").await?;

    // m1 resigns while a scale-up is on its way; m2 takes over.
    c.scale(svc.id(), 8).await?;
    m1.candidacy.cancel();
    let election = shoal_store::Election::new(
        &c.store,
        leadership::ELECTION,
        "probe",
        Duration::from_secs(3),
    );
    wait_for("m2 leads", DEADLINE, || async {
        let leader = election.leader().await.ok()??;
        (leader.candidate_id == "m2").then_some(())
    })
    .await?;
    c.scale(svc.id(), 10).await?;
    let tasks = c
        .wait_tasks("10 tasks", svc.id(), |ts| running_slots(ts).len() >= 10)
        .await?;
    assert_eq!(running_slots(&tasks), (1..=10).collect::<Vec<u64>>());
    let mut per_slot: HashMap<u64, usize> = HashMap::new();
    for t in &tasks {
        *per_slot.entry(t.slot).or_default() += 1;
    }
    assert!(
        per_slot.values().all(|n| *n == 1),
        "duplicate slots: {per_slot:?}"
    );
    Ok(())
}

#[tokio::test]
async fn replicated_job_runs_six_completions_two_at_a_time() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _m = c.manager("m1").await?;
    let n1 = c.add_node("n1").await?;
    let svc = c
        .create_service(
            "batch",
            Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent: 2,
                total_completions: 6,
            }),
        )
        .await?;
    let mut completed = 0usize;
    while completed < 6 {
        let tasks = c
            .wait_tasks("a pending job task", svc.id(), |ts| {
                ts.iter().any(|t| state(t) == TaskState::Pending)
            })
            .await?;
        let live = tasks
            .iter()
            .filter(|t| state(t) != TaskState::Complete)
            .count();
        assert!(live <= 2, "at most 2 at a time, saw {live}: {tasks:?}");
        for t in tasks.iter().filter(|t| state(t) == TaskState::Pending) {
            c.set_task(t.id(), Some(n1.id()), TaskState::Complete)
                .await?;
            completed += 1;
        }
    }
    // Barrier: another service is served; the job has made nothing more.
    let other = c.create_service("other", replicated(1)).await?;
    c.wait_tasks("other's task", other.id(), |ts| ts.len() == 1)
        .await?;
    let tasks = c.tasks(svc.id()).await?;
    assert_eq!(tasks.len(), 6);
    let mut slots: Vec<u64> = tasks.iter().map(|t| t.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![1, 2, 3, 4, 5, 6]);
    assert!(tasks.iter().all(|t| state(t) == TaskState::Complete));
    Ok(())
}

#[tokio::test]
async fn a_thousand_replicas_are_created_in_batches() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _m = c.manager("m1").await?;
    // Let the controller take the leadership and sync before timing.
    let warm = c.create_service("warm", replicated(1)).await?;
    c.wait_tasks("warm-up", warm.id(), |ts| ts.len() == 1)
        .await?;

    let cache = shoal_store::Cache::tasks(&c.store);
    cache.wait_until_synced().await?;
    let started = Instant::now();
    let svc = c.create_service("big", replicated(1000)).await?;
    wait_for("1000 tasks", DEADLINE, || async {
        (cache
            .by_index(shoal_store::cache::TASKS_BY_SERVICE, svc.id())
            .len()
            >= 1000)
            .then_some(())
    })
    .await?;
    let took = started.elapsed();
    println!("orchestrator created 1000 replicas in {took:?}");
    let tasks = c.tasks(svc.id()).await?;
    assert_eq!(running_slots(&tasks), (1..=1000).collect::<Vec<u64>>());
    Ok(())
}
