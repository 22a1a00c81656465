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

use super::global::{keeping_node, new_tasks_on_nodes, restart_on_node, tasks_by_node};
use super::replicated::{SlotView, free_slots, new_tasks_in_slots};
use super::{Plan, is_dead_unhandled, is_live, newest_first, observed, task_id, tasks_or_removal};

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

/// The job's tasks of the current iteration, with the plan begun (older iterations' live
/// or unhandled tasks shut down) — or, as `Err`, the whole plan: every task removed for
/// a service being deleted, nothing for a service whose mode `is_mode` does not accept.
fn current_job_tasks<'a>(
    service: &Service,
    tasks: &'a [Task],
    is_mode: impl Fn(&Mode) -> bool,
) -> Result<(Vec<&'a Task>, Plan), Box<Plan>> {
    let ours = tasks_or_removal(service, tasks)?;
    let mut plan = Plan::default();
    if !service
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .is_some_and(is_mode)
    {
        return Err(Box::new(plan));
    }
    let ours = current(service, ours, &mut plan);
    Ok((ours, plan))
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
    let (ours, mut plan) =
        match current_job_tasks(service, tasks, |m| matches!(m, Mode::ReplicatedJob(_))) {
            Ok(started) => started,
            Err(plan) => return *plan,
        };
    let Some((total, concurrent)) = job_sizes(service) else {
        return plan;
    };

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
    for (slot, group) in by_slot {
        if group.iter().any(|t| observed(t) == TaskState::Complete) {
            // Done: whatever else is still running in the slot is extra.
            let extra: Vec<&Task> = group
                .iter()
                .copied()
                .filter(|t| {
                    is_live(t) || (is_dead_unhandled(t) && observed(t) != TaskState::Complete)
                })
                .collect();
            plan.shut_down(&extra);
            settled.insert(slot);
            continue;
        }
        let view = SlotView::new(slot, group, service, nodes);
        if view.occupied {
            settled.insert(slot);
        }
        if view.active() {
            active += 1;
        }
        if view.reconcile(now, &mut plan) {
            create_slots.push(slot);
        }
    }

    create_slots.extend(free_slots(
        &settled,
        concurrent.saturating_sub(active),
        total,
    ));
    plan.create = new_tasks_in_slots(service, create_slots, now);
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
    let (ours, mut plan) =
        match current_job_tasks(service, tasks, |m| matches!(m, Mode::GlobalJob(_))) {
            Ok(started) => started,
            Err(plan) => return *plan,
        };

    let mut create_on: Vec<&str> = Vec::new();
    for (node_id, mut group) in tasks_by_node(ours, nodes) {
        group.sort_by(|a, b| newest_first(a, b));
        let live: Vec<&Task> = group.iter().copied().filter(|t| is_live(t)).collect();
        let unhandled: Vec<&Task> = group
            .iter()
            .copied()
            .filter(|t| is_dead_unhandled(t) && observed(t) != TaskState::Complete)
            .collect();
        let Some(node) = keeping_node(node_id, nodes, service) else {
            plan.shut_down(&live);
            plan.shut_down(&unhandled);
            continue;
        };
        if group.iter().any(|t| observed(t) == TaskState::Complete) {
            plan.shut_down(&live);
            plan.shut_down(&unhandled);
            continue;
        }
        if let Some((_, extra)) = live.split_first() {
            plan.shut_down(extra);
            plan.shut_down(&unhandled);
            continue;
        }
        if restart_on_node(service, node, &group, &unhandled, now, &mut plan) {
            create_on.push(node_id);
        }
    }

    plan.create = new_tasks_on_nodes(service, create_on, now);
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
