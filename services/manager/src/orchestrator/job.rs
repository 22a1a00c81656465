//! The job orchestrators' reconcile: replicated jobs (`total_completions` tasks run to
//! completion, at most `max_concurrent` at a time) and global jobs (one task run to
//! completion on every eligible node). Swarm's `orchestrator/jobs`.
//!
//! A job run is one *iteration* (`Service.job_status.job_iteration`); tasks of earlier
//! iterations still live are shut down. A task that COMPLETEs is never restarted, its
//! slot (node, for global jobs) is done; a task that fails goes through the restart
//! supervisor like a service's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use shoal_proto::v1::{Node, Service, Task, TaskState, service_spec::Mode};

use super::global::{accepts_new_tasks, eligible};
use super::replicated::restart_policy;
use super::restart::{RestartDecision, decide_restart};
use super::task::new_task_at;
use super::{
    Plan, is_dead_unhandled, is_live, newest_first, node_loss, observed, task_id, tasks_or_removal,
};

/// The iteration a job is on (0 before the first re-run).
fn service_iteration(service: &Service) -> u64 {
    service
        .job_status
        .as_ref()
        .and_then(|j| j.job_iteration.as_ref())
        .map(|v| v.index)
        .unwrap_or(0)
}

fn task_iteration(t: &Task) -> u64 {
    t.job_iteration.as_ref().map(|v| v.index).unwrap_or(0)
}

fn task_ids(list: &[&Task]) -> Vec<String> {
    list.iter().map(|t| task_id(t).to_string()).collect()
}

/// The service's tasks of the current iteration; older live or unhandled ones are put
/// on `plan.shutdown`.
fn current<'a>(service: &Service, ours: Vec<&'a Task>, plan: &mut Plan) -> Vec<&'a Task> {
    let iteration = service_iteration(service);
    let (now, old): (Vec<&Task>, Vec<&Task>) = ours
        .into_iter()
        .partition(|t| task_iteration(t) == iteration);
    plan.shutdown.extend(
        old.iter()
            .filter(|t| is_live(t) || is_dead_unhandled(t))
            .map(|t| task_id(t).to_string()),
    );
    now
}

/// `total_completions` and `max_concurrent` as Swarm reads them: no total means one run
/// per concurrent task, no concurrency means all at once; at least one of each.
fn job_sizes(service: &Service) -> Option<(u64, u64)> {
    let Some(Mode::ReplicatedJob(job)) = service.spec.as_ref().and_then(|s| s.mode.as_ref()) else {
        return None;
    };
    let total = if job.total_completions == 0 {
        job.max_concurrent.max(1)
    } else {
        job.total_completions
    };
    let concurrent = if job.max_concurrent == 0 {
        total
    } else {
        job.max_concurrent.min(total)
    };
    Some((total, concurrent))
}

/// Reconciles a replicated job: slots 1..=total_completions; a slot with a COMPLETE task
/// of this iteration is done; at most `max_concurrent` slots are active (a live task, or
/// a failed one waiting for its restart); free slots are started lowest first. A live
/// task on a down, drained or removed node is shut down and replaced in its slot; a
/// slot whose restarts are used up stays failed (under the current spec version).
pub fn reconcile_replicated_job(
    service: &Service,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
    now: SystemTime,
) -> Plan {
    let ours = match tasks_or_removal(service, tasks) {
        Ok(ours) => ours,
        Err(removal) => return removal,
    };
    let mut plan = Plan::default();
    let Some((total, concurrent)) = job_sizes(service) else {
        return plan;
    };
    let ours = current(service, ours, &mut plan);

    let mut by_slot: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for t in ours {
        if t.slot == 0 || t.slot > total {
            if is_live(t) || is_dead_unhandled(t) {
                plan.remove.push(task_id(t).to_string());
            }
        } else {
            by_slot.entry(t.slot).or_default().push(t);
        }
    }

    let mut active = 0u64;
    let mut settled: BTreeSet<u64> = BTreeSet::new();
    let mut create_slots: Vec<u64> = Vec::new();
    for (&slot, group) in by_slot.iter_mut() {
        group.sort_by(|a, b| newest_first(a, b));
        if group.iter().any(|t| observed(t) == TaskState::Complete) {
            // Done: whatever else is still running in the slot is extra.
            let extra: Vec<&Task> = group
                .iter()
                .copied()
                .filter(|t| {
                    is_live(t) || (is_dead_unhandled(t) && observed(t) != TaskState::Complete)
                })
                .collect();
            plan.shutdown.extend(task_ids(&extra));
            settled.insert(slot);
            continue;
        }
        let live: Vec<&Task> = group.iter().copied().filter(|t| is_live(t)).collect();
        let unhandled: Vec<&Task> = group
            .iter()
            .copied()
            .filter(|t| is_dead_unhandled(t))
            .collect();
        let (lost, healthy): (Vec<&Task>, Vec<&Task>) = live
            .iter()
            .partition(|t| node_loss(&t.node_id, nodes).is_some());
        if !healthy.is_empty() {
            plan.shutdown.extend(task_ids(&lost));
            plan.shutdown.extend(task_ids(&unhandled));
            active += 1;
            settled.insert(slot);
            continue;
        }
        if !lost.is_empty() {
            plan.shutdown.extend(task_ids(&lost));
            plan.shutdown.extend(task_ids(&unhandled));
            create_slots.push(slot);
            active += 1;
            settled.insert(slot);
            continue;
        }
        let Some(newest) = unhandled.first().or(group.first()).copied() else {
            continue;
        };
        let history: Vec<Task> = group.iter().map(|t| (*t).clone()).collect();
        match decide_restart(newest, &history, restart_policy(newest)) {
            RestartDecision::Restart { not_before }
                if !unhandled.is_empty() && not_before > now =>
            {
                plan.requeue(not_before);
                active += 1;
                settled.insert(slot);
            }
            RestartDecision::Restart { .. } if !unhandled.is_empty() => {
                plan.shutdown.extend(task_ids(&unhandled));
                create_slots.push(slot);
                active += 1;
                settled.insert(slot);
            }
            RestartDecision::Restart { .. } => {
                // Only history (shut down while replaced): free again.
            }
            RestartDecision::NoRestart => {
                plan.shutdown.extend(task_ids(&unhandled));
                if newest.spec_version == service.spec_version {
                    settled.insert(slot);
                }
            }
        }
    }

    let mut slot = 0u64;
    while active < concurrent && slot < total {
        slot += 1;
        if settled.contains(&slot) {
            continue;
        }
        create_slots.push(slot);
        active += 1;
    }

    create_slots.sort_unstable();
    plan.create = create_slots
        .into_iter()
        .map(|slot| new_task_at(service, slot, None, None, now))
        .collect();
    plan
}

/// Reconciles a global job: every READY, ACTIVE, eligible node runs one task of the
/// current iteration to completion. A node with a COMPLETE task is done; a failed task
/// is restarted on its node by the restart supervisor; a node that goes down, is
/// drained or no longer eligible has its live task shut down, not replaced.
pub fn reconcile_global_job(
    service: &Service,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
    now: SystemTime,
) -> Plan {
    let ours = match tasks_or_removal(service, tasks) {
        Ok(ours) => ours,
        Err(removal) => return removal,
    };
    let mut plan = Plan::default();
    if !matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::GlobalJob(_))
    ) {
        return plan;
    }
    let ours = current(service, ours, &mut plan);

    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in ours {
        by_node.entry(t.node_id.as_str()).or_default().push(t);
    }
    for id in nodes.keys() {
        by_node.entry(id.as_str()).or_default();
    }

    let mut create_on: Vec<&str> = Vec::new();
    for (node_id, mut group) in by_node {
        group.sort_by(|a, b| newest_first(a, b));
        let live: Vec<&Task> = group.iter().copied().filter(|t| is_live(t)).collect();
        let unhandled: Vec<&Task> = group
            .iter()
            .copied()
            .filter(|t| is_dead_unhandled(t) && observed(t) != TaskState::Complete)
            .collect();
        let node = nodes.get(node_id);
        let keeps_tasks = !node_id.is_empty()
            && node_loss(node_id, nodes).is_none()
            && node.is_some_and(|n| eligible(n, service));
        let Some(node) = node.filter(|_| keeps_tasks) else {
            plan.shutdown.extend(task_ids(&live));
            plan.shutdown.extend(task_ids(&unhandled));
            continue;
        };
        if group.iter().any(|t| observed(t) == TaskState::Complete) {
            plan.shutdown.extend(task_ids(&live));
            plan.shutdown.extend(task_ids(&unhandled));
            continue;
        }
        if let Some((_, extra)) = live.split_first() {
            plan.shutdown.extend(task_ids(extra));
            plan.shutdown.extend(task_ids(&unhandled));
            continue;
        }
        if !accepts_new_tasks(node) {
            continue;
        }
        let Some(newest) = unhandled.first().or(group.first()).copied() else {
            create_on.push(node_id);
            continue;
        };
        let history: Vec<Task> = group.iter().map(|t| (*t).clone()).collect();
        match decide_restart(newest, &history, restart_policy(newest)) {
            RestartDecision::Restart { not_before }
                if !unhandled.is_empty() && not_before > now =>
            {
                plan.requeue(not_before);
            }
            RestartDecision::Restart { .. } => {
                plan.shutdown.extend(task_ids(&unhandled));
                create_on.push(node_id);
            }
            RestartDecision::NoRestart => {
                plan.shutdown.extend(task_ids(&unhandled));
                if newest.spec_version != service.spec_version {
                    create_on.push(node_id);
                }
            }
        }
    }

    plan.create = create_on
        .into_iter()
        .map(|node_id| new_task_at(service, 0, Some(node_id), None, now))
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;
    use shoal_proto::v1::{GlobalJob, ReplicatedJob};

    fn job(total: u64, concurrent: u64) -> Service {
        let mut svc = replicated_service("svc1", "batch", 1);
        if let Some(spec) = svc.spec.as_mut() {
            spec.mode = Some(Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent: concurrent,
                total_completions: total,
            }));
        }
        svc
    }

    fn three_nodes() -> HashMap<String, Node> {
        nodes(vec![ready("n1"), ready("n2"), ready("n3")])
    }

    #[test]
    fn a_replicated_job_starts_max_concurrent_tasks() {
        let plan = reconcile_replicated_job(&job(6, 2), &[], &three_nodes(), at(0));
        assert_eq!(created_slots(&plan.create), vec![1, 2]);
        assert!(plan.create.iter().all(|t| t.job_iteration.is_some()));
    }

    #[test]
    fn completed_slots_are_never_rerun_and_the_next_ones_start() {
        let tasks = vec![
            task("a", 1, "n1", TaskState::Complete),
            task("b", 2, "n2", TaskState::Running),
        ];
        let plan = reconcile_replicated_job(&job(6, 2), &tasks, &three_nodes(), at(0));
        assert_eq!(created_slots(&plan.create), vec![3]);
        assert!(plan.shutdown.is_empty() && plan.remove.is_empty());
    }

    #[test]
    fn a_finished_job_needs_nothing() {
        let tasks: Vec<Task> = (1..=6)
            .map(|i| task(&format!("t{i}"), i, "n1", TaskState::Complete))
            .collect();
        assert!(reconcile_replicated_job(&job(6, 2), &tasks, &three_nodes(), at(0)).is_empty());
    }

    #[test]
    fn a_failed_job_task_is_restarted_in_its_slot_after_the_delay() {
        let tasks = vec![
            dead_task("a", 1, TaskState::Failed, 0, 10),
            task("b", 2, "n2", TaskState::Running),
        ];
        let early = reconcile_replicated_job(&job(6, 2), &tasks, &three_nodes(), at(11));
        assert!(early.create.is_empty());
        assert!(early.requeue_at.is_some());
        let late = reconcile_replicated_job(&job(6, 2), &tasks, &three_nodes(), at(20));
        assert_eq!(created_slots(&late.create), vec![1]);
        assert_eq!(ids(&late.shutdown), vec!["a"]);
    }

    #[test]
    fn a_global_job_runs_once_per_node() {
        let mut svc = global_service("svc1", "once");
        if let Some(spec) = svc.spec.as_mut() {
            spec.mode = Some(Mode::GlobalJob(GlobalJob {}));
        }
        let tasks = vec![task("a", 0, "n1", TaskState::Complete)];
        let plan = reconcile_global_job(&svc, &tasks, &three_nodes(), at(0));
        let mut on: Vec<&str> = plan.create.iter().map(|t| t.node_id.as_str()).collect();
        on.sort_unstable();
        assert_eq!(on, vec!["n2", "n3"]);
    }
}
