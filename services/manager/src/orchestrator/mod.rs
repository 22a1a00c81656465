//! The orchestrators' decision logic: what tasks a service should have, as pure functions.
//!
//! The orchestrators run on the leader manager in the kube-rs controller shape:
//!
//! 1. **cache**: services, tasks and nodes come from list + watch reflectors
//!    (`shoal_store::Cache`), never from scanning etcd on the hot path;
//! 2. **queue**: every change (a service written, a task changing state, a node going
//!    down or drained, a NATS hint) enqueues the affected service ids, deduplicated;
//! 3. **reconcile**: level-triggered — for one service, look at *everything* the cache
//!    holds for it now and compute the difference to the desired state, whatever event
//!    caused the call. Running it twice on the same input gives the same answer, so a
//!    lost or repeated event never matters;
//! 4. **resync**: every service is enqueued again periodically, at startup and after
//!    every leader change, and at a [`Plan::requeue_at`] a decision asked for (a restart
//!    waiting out its delay).
//!
//! Steps 1, 2 and 4 live in [`controller`] (run on the leader by
//! [`run_while_leading`], fenced on its leadership). The other submodules are step 3:
//! the functions take a service, its tasks and the nodes, and return a [`Plan`] (tasks
//! to create, tasks whose desired state moves on) or the ids to reap. They do no I/O,
//! spawn nothing and read no clock except through their `now` argument; the controller
//! applies a plan as batched compare-and-swap writes and simply reconciles again when
//! a write loses a race.
//!
//! Semantics are Swarm's (moby/swarmkit `manager/orchestrator`): slots, replacement of
//! tasks on down or drained nodes by a new task in the same slot, restart policies, and
//! a bounded task history per slot.

pub mod controller;
pub mod global;
pub mod job;
pub mod reaper;
pub mod replicated;
pub mod restart;
pub mod task;
pub mod update;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use shoal_proto::TaskStateExt;
use shoal_proto::v1::node_spec::Availability;
use shoal_proto::v1::{Node, Task, TaskState, UpdateStatus, node_status};

pub use controller::{Controller, ControllerOptions, run_while_leading};
pub use global::reconcile_global;
pub use job::{reconcile_global_job, reconcile_replicated_job};
pub use reaper::{DEFAULT_TASK_HISTORY_LIMIT, ReapPlan, reap};
pub use replicated::reconcile_replicated;
pub use restart::{DEFAULT_RESTART_DELAY, RestartDecision, decide_restart};
pub use task::{new_task, new_task_at};

/// What one reconcile pass wants written. Applying it is the caller's job; every id
/// appears in at most one list.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// New tasks (desired RUNNING, state PENDING), ready to be stored.
    pub create: Vec<Task>,
    /// Tasks whose desired state becomes SHUTDOWN: replaced, failed for good, or on a
    /// node that lost them. They stay as history.
    pub shutdown: Vec<String>,
    /// Tasks whose desired state becomes REMOVE (scale down, service removal): the
    /// worker stops them and the reaper deletes them once they are dead.
    pub remove: Vec<String>,
    /// Tasks whose desired state moves from READY to RUNNING: a stop-first update's
    /// replacement, once the task it replaces has stopped.
    pub start: Vec<String>,
    /// The service's update status changes (an update starts, pauses, rolls back or
    /// completes): written, compare-and-swap on the service, before any task.
    pub update_status: Option<UpdateStatus>,
    /// The update's failure action rolls the service back: its spec and previous spec
    /// swap (with `update_status`). Nothing else of the pass is written; the next pass
    /// works from the rolled-back spec.
    pub rollback: bool,
    /// Reconcile this service again at this time (a restart waiting out its delay, an
    /// update's delay or monitor window ending).
    pub requeue_at: Option<SystemTime>,
}

impl Plan {
    /// Whether the pass found nothing to write.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.shutdown.is_empty()
            && self.remove.is_empty()
            && self.start.is_empty()
            && self.update_status.is_none()
            && !self.rollback
    }

    /// Takes the update supervisor's decision: the status change and the time to look
    /// again (the replacements are the mode's to make).
    fn note_update(&mut self, decision: &update::Decision) {
        self.update_status = decision.status.clone();
        self.rollback = decision.rollback;
        if let Some(at) = decision.requeue_at {
            self.requeue(at);
        }
    }

    /// Sets these tasks desired SHUTDOWN.
    fn shut_down(&mut self, tasks: &[&Task]) {
        self.shutdown
            .extend(tasks.iter().map(|t| task_id(t).to_string()));
    }

    fn requeue(&mut self, at: SystemTime) {
        self.requeue_at = Some(match self.requeue_at {
            Some(t) if t <= at => t,
            _ => at,
        });
    }
}

/// Reconciles one service by its mode (replicated, global, replicated job, global job).
/// `tasks` may hold other services' tasks (ignored); `nodes` are all nodes by id.
pub fn reconcile(
    service: &shoal_proto::v1::Service,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
    now: SystemTime,
) -> Plan {
    let mut plan = reconcile_mode(service, tasks, nodes, now);
    number_restarts(&mut plan.create, tasks);
    plan.shutdown.sort_unstable();
    plan.shutdown.dedup();
    plan.start.retain(|id| !plan.shutdown.contains(id));
    plan
}

/// Gives each new task its `restart_count`: one more than the newest task of the same
/// slot (node, for global tasks) under the same spec version, 0 for a fresh slot or a
/// new spec. The count survives the reaper, so `--restart-max-attempts` above the task
/// history limit still stops.
pub fn number_restarts(created: &mut [Task], tasks: &[Task]) {
    for new in created.iter_mut() {
        let same_slot = |t: &&Task| {
            t.service_id == new.service_id
                && t.slot == new.slot
                && (new.slot != 0 || t.node_id == new.node_id)
        };
        let predecessor = tasks
            .iter()
            .filter(same_slot)
            .min_by(|a, b| newest_first(a, b));
        new.restart_count = match predecessor {
            Some(p) if p.spec_version == new.spec_version => p.restart_count + 1,
            _ => 0,
        };
    }
}

fn reconcile_mode(
    service: &shoal_proto::v1::Service,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
    now: SystemTime,
) -> Plan {
    use shoal_proto::v1::service_spec::Mode;
    match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(Mode::Global(_)) => reconcile_global(service, tasks, nodes, now),
        Some(Mode::ReplicatedJob(_)) => reconcile_replicated_job(service, tasks, nodes, now),
        Some(Mode::GlobalJob(_)) => reconcile_global_job(service, tasks, nodes, now),
        Some(Mode::Replicated(_)) => reconcile_replicated(service, tasks, nodes, now),
        None => match tasks_or_removal(service, tasks) {
            Err(removal) => *removal,
            Ok(_) => Plan::default(),
        },
    }
}

/// The plan for the tasks of a service that no longer exists (`service rm` deletes the
/// Service object at once): every one not already being removed is set desired REMOVE;
/// the reaper deletes them once they are dead.
pub fn orphans(tasks: &[Task]) -> Plan {
    Plan {
        remove: tasks
            .iter()
            .filter(|t| !is_being_removed(t))
            .map(|t| task_id(t).to_string())
            .collect(),
        ..Plan::default()
    }
}

/// The task's observed state (an unknown number reads as NEW).
pub(crate) fn observed(t: &Task) -> TaskState {
    t.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

/// The task's desired state (an unknown number reads as NEW).
pub(crate) fn desired(t: &Task) -> TaskState {
    TaskState::try_from(t.desired_state).unwrap_or(TaskState::New)
}

/// Desired RUNNING or earlier: the orchestrator still wants the task.
pub(crate) fn wanted(t: &Task) -> bool {
    desired(t) as i32 <= TaskState::Running as i32
}

/// Wanted and not finished: the task holds its slot.
pub(crate) fn is_live(t: &Task) -> bool {
    wanted(t) && observed(t).is_live()
}

/// Desired at most RUNNING but finished: the restart supervisor has to decide.
pub(crate) fn is_dead_unhandled(t: &Task) -> bool {
    wanted(t) && observed(t).is_terminal()
}

/// Being removed (scale down, service removal): no longer part of any slot.
/// The service's tasks that are not already being removed — or, when the service itself
/// is being deleted, the plan that sets every one of them desired REMOVE.
pub(crate) fn tasks_or_removal<'a>(
    service: &shoal_proto::v1::Service,
    tasks: &'a [Task],
) -> Result<Vec<&'a Task>, Box<Plan>> {
    let service_id = service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let ours: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.service_id == service_id && !is_being_removed(t))
        .collect();
    if service.pending_delete {
        return Err(Box::new(Plan {
            remove: ours.iter().map(|t| task_id(t).to_string()).collect(),
            ..Plan::default()
        }));
    }
    Ok(ours)
}

pub(crate) fn is_being_removed(t: &Task) -> bool {
    desired(t) as i32 >= TaskState::Remove as i32
}

pub(crate) fn to_time(ts: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|ts| SystemTime::try_from(*ts).ok())
}

/// When the task last changed state (falls back to its creation time, then the epoch).
pub(crate) fn status_time(t: &Task) -> SystemTime {
    to_time(t.status.as_ref().and_then(|s| s.timestamp.as_ref()))
        .or_else(|| created_time(t))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// When the task was created (store meta, else its first status timestamp).
pub(crate) fn created_time(t: &Task) -> Option<SystemTime> {
    to_time(t.meta.as_ref().and_then(|m| m.created_at.as_ref()))
}

/// Newest first: by creation time, then status time, then id (total and stable).
pub(crate) fn newest_first(a: &Task, b: &Task) -> std::cmp::Ordering {
    let key = |t: &Task| (created_time(t), status_time(t));
    key(b).cmp(&key(a)).then_with(|| task_id(b).cmp(task_id(a)))
}

pub(crate) fn task_id(t: &Task) -> &str {
    t.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// Why a node can no longer hold its tasks, if it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeLoss {
    /// Not in the store any more (`node rm`).
    Gone,
    /// No heartbeat for 3 periods.
    Down,
    /// `node update --availability drain`.
    Drained,
}

/// Whether the tasks on `node_id` must be moved off it. Unassigned tasks never are.
pub(crate) fn node_loss(node_id: &str, nodes: &HashMap<String, Node>) -> Option<NodeLoss> {
    if node_id.is_empty() {
        return None;
    }
    let Some(node) = nodes.get(node_id) else {
        return Some(NodeLoss::Gone);
    };
    if node_state(node) == node_status::State::Down {
        return Some(NodeLoss::Down);
    }
    if availability(node) == Availability::Drain {
        return Some(NodeLoss::Drained);
    }
    None
}

pub(crate) fn node_state(node: &Node) -> node_status::State {
    node.status
        .as_ref()
        .and_then(|s| node_status::State::try_from(s.state).ok())
        .unwrap_or(node_status::State::Unknown)
}

pub(crate) fn availability(node: &Node) -> Availability {
    node.spec
        .as_ref()
        .and_then(|s| Availability::try_from(s.availability).ok())
        .unwrap_or(Availability::Active)
}

pub(crate) fn duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(*d).ok())
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn new_tasks_count_the_restarts_of_their_slot() {
        let mut old = dead_task("a", 1, TaskState::Failed, 10, 11);
        old.service_id = "svc1".into();
        old.restart_count = 3;
        let mut other_slot = dead_task("b", 2, TaskState::Failed, 12, 13);
        other_slot.service_id = "svc1".into();
        let mut created = vec![old.clone(), other_slot.clone()];
        for (t, id) in created.iter_mut().zip(["n1", "n2"]) {
            t.meta = Some(shoal_proto::v1::Meta {
                id: id.into(),
                ..Default::default()
            });
            t.restart_count = 0;
        }
        let mut fresh = old.clone();
        fresh.slot = 3;
        created.push(fresh);
        let mut new_spec = old.clone();
        new_spec.spec_version = Some(shoal_proto::v1::Version { index: 99 });
        created.push(new_spec);
        number_restarts(&mut created, &[old, other_slot]);
        let counts: Vec<u64> = created.iter().map(|t| t.restart_count).collect();
        assert_eq!(counts, vec![4, 1, 0, 0]);
    }
}
