//! The task reaper's decision: which tasks to delete from the store. Swarm's
//! `taskreaper`, as a pure function over one service's tasks.

use std::collections::{BTreeMap, HashMap};

use shoal_proto::TaskStateExt;
use shoal_proto::v1::{Node, Service, Task, TaskState};

use super::{
    NodeLoss, created_time, is_being_removed, node_loss, observed, status_time, task_id, wanted,
};

/// Swarm's default `task-history-limit`: dead tasks kept per slot.
pub const DEFAULT_TASK_HISTORY_LIMIT: usize = 5;

/// What the reaper deletes for one service.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReapPlan {
    /// Task ids to delete (batched, each with its version compare).
    pub delete_tasks: Vec<String>,
    /// The service itself can go: it is being removed and has no task left after this.
    pub delete_service: bool,
}

/// A task that can be deleted without losing anything: it has finished, or nobody wants
/// it any more and it either never reached a node or its node is down or gone (its
/// worker will never report again, so waiting for it would block forever).
fn is_gone(t: &Task, nodes: &HashMap<String, Node>) -> bool {
    let state = observed(t);
    state.is_terminal()
        || (!wanted(t)
            && ((state as i32) < TaskState::Assigned as i32
                || t.node_id.is_empty()
                || matches!(
                    node_loss(&t.node_id, nodes),
                    Some(NodeLoss::Down | NodeLoss::Gone)
                )))
}

/// Decides what to delete among `tasks`, the tasks of one service (`None`: the service
/// no longer exists), keeping `history_limit` dead tasks per slot. `nodes` are all nodes
/// by id (a node missing from it counts as removed).
///
/// - A removed service (absent, or `pending_delete`) loses each of its tasks once it is
///   gone (finished; or no longer wanted and never assigned, or on a node that is down
///   or removed). The orchestrator first sets them desired REMOVE. Once none is left,
///   a `pending_delete` service itself can be deleted.
/// - A task set desired REMOVE (scale down) is deleted once it is gone.
/// - Per slot (per node for global services, whose tasks have slot 0), the dead tasks
///   no longer wanted (desired past RUNNING; observed finished, or stranded on a down or
///   removed node) are history: the `history_limit` newest stay, older ones are deleted.
///   Tasks still desired RUNNING and live ones are never touched.
pub fn reap(
    service: Option<&Service>,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
    history_limit: usize,
) -> ReapPlan {
    let removed = service.is_none_or(|s| s.pending_delete);
    if removed {
        let delete_tasks: Vec<String> = tasks
            .iter()
            .filter(|t| is_gone(t, nodes))
            .map(|t| task_id(t).to_string())
            .collect();
        return ReapPlan {
            delete_service: service.is_some() && delete_tasks.len() == tasks.len(),
            delete_tasks,
        };
    }

    let mut plan = ReapPlan::default();
    let mut history: BTreeMap<(u64, &str), Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        if is_being_removed(t) {
            if is_gone(t, nodes) {
                plan.delete_tasks.push(task_id(t).to_string());
            }
        } else if !wanted(t) && is_gone(t, nodes) {
            let node = if t.slot == 0 { t.node_id.as_str() } else { "" };
            history.entry((t.slot, node)).or_default().push(t);
        }
    }
    for (_, mut dead) in history {
        // Newest first: when it died, then when it was made, then id.
        dead.sort_by(|a, b| {
            (status_time(b), created_time(b), task_id(b)).cmp(&(
                status_time(a),
                created_time(a),
                task_id(a),
            ))
        });
        plan.delete_tasks.extend(
            dead.iter()
                .skip(history_limit)
                .map(|t| task_id(t).to_string()),
        );
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;

    fn ns() -> HashMap<String, shoal_proto::v1::Node> {
        nodes(vec![ready("n1"), ready("n2")])
    }

    fn history(id: &str, slot: u64, died: u64) -> Task {
        task_full(
            id,
            slot,
            "n1",
            TaskState::Failed,
            TaskState::Shutdown,
            died,
            died,
        )
    }

    #[test]
    fn keeps_exactly_the_five_newest_dead_tasks_per_slot() {
        let svc = replicated_service("svc1", "web", 2);
        let mut tasks: Vec<Task> = (0..8).map(|i| history(&format!("a{i}"), 1, i)).collect();
        tasks.extend((0..5).map(|i| history(&format!("b{i}"), 2, i)));
        tasks.push(task("a-live", 1, "n1", TaskState::Running));
        tasks.push(task("b-live", 2, "n1", TaskState::Running));
        let plan = reap(Some(&svc), &tasks, &ns(), DEFAULT_TASK_HISTORY_LIMIT);
        assert_eq!(ids(&plan.delete_tasks), vec!["a0", "a1", "a2"]);
        assert!(!plan.delete_service);
    }

    #[test]
    fn the_limit_is_configurable() {
        let svc = replicated_service("svc1", "web", 1);
        let tasks: Vec<Task> = (0..3).map(|i| history(&format!("a{i}"), 1, i)).collect();
        assert_eq!(
            ids(&reap(Some(&svc), &tasks, &ns(), 1).delete_tasks),
            vec!["a0", "a1"]
        );
        assert_eq!(
            ids(&reap(Some(&svc), &tasks, &ns(), 0).delete_tasks),
            vec!["a0", "a1", "a2"]
        );
    }

    #[test]
    fn global_history_is_kept_per_node() {
        let svc = global_service("svc1", "agent");
        let mut tasks: Vec<Task> = Vec::new();
        for i in 0..6 {
            let mut t = history(&format!("x{i}"), 0, i);
            t.node_id = "n1".into();
            tasks.push(t);
            let mut t = history(&format!("y{i}"), 0, i);
            t.node_id = "n2".into();
            tasks.push(t);
        }
        let plan = reap(Some(&svc), &tasks, &ns(), 5);
        assert_eq!(ids(&plan.delete_tasks), vec!["x0", "y0"]);
    }

    #[test]
    fn tasks_awaiting_a_restart_or_still_running_are_not_history() {
        let svc = replicated_service("svc1", "web", 1);
        let mut tasks: Vec<Task> = (0..5)
            .map(|i| history(&format!("a{i}"), 1, 10 + i))
            .collect();
        // Desired RUNNING but dead: the restart supervisor has not decided yet.
        tasks.push(dead_task("d", 1, TaskState::Failed, 0, 0));
        // Desired SHUTDOWN but still running (its node is down).
        tasks.push(task_full(
            "s",
            1,
            "n2",
            TaskState::Running,
            TaskState::Shutdown,
            0,
            0,
        ));
        assert!(reap(Some(&svc), &tasks, &ns(), 5).delete_tasks.is_empty());
    }

    #[test]
    fn scaled_down_tasks_go_once_they_are_dead() {
        let svc = replicated_service("svc1", "web", 1);
        let tasks = vec![
            task_full("r1", 3, "n1", TaskState::Running, TaskState::Remove, 0, 0),
            task_full("r2", 4, "n1", TaskState::Shutdown, TaskState::Remove, 0, 0),
            task_full("r3", 5, "", TaskState::Pending, TaskState::Remove, 0, 0),
        ];
        assert_eq!(
            ids(&reap(Some(&svc), &tasks, &ns(), 5).delete_tasks),
            vec!["r2", "r3"]
        );
    }

    #[test]
    fn a_removed_service_loses_each_task_once_it_is_dead() {
        let mut svc = replicated_service("svc1", "web", 1);
        svc.pending_delete = true;
        let mut tasks = vec![
            history("h1", 1, 0),
            task_full("r1", 1, "n1", TaskState::Running, TaskState::Remove, 1, 1),
        ];
        let plan = reap(Some(&svc), &tasks, &ns(), 5);
        assert_eq!(ids(&plan.delete_tasks), vec!["h1"]);
        assert!(!plan.delete_service);
        if let Some(s) = tasks.get_mut(1).and_then(|t| t.status.as_mut()) {
            s.state = TaskState::Shutdown as i32;
        }
        let plan = reap(Some(&svc), &tasks, &ns(), 5);
        assert_eq!(ids(&plan.delete_tasks), vec!["h1", "r1"]);
        assert!(plan.delete_service);
        // Already deleted service: its leftover tasks go, no service to delete.
        let plan = reap(None, &tasks, &ns(), 5);
        assert_eq!(ids(&plan.delete_tasks), vec!["h1", "r1"]);
        assert!(!plan.delete_service);
        // Nothing left: the service can go.
        assert!(reap(Some(&svc), &[], &ns(), 5).delete_service);
    }

    #[test]
    fn removed_tasks_on_a_down_or_removed_node_or_never_assigned_go_at_once() {
        let svc = replicated_service("svc1", "web", 1);
        let down = node(
            "n3",
            shoal_proto::v1::node_status::State::Down,
            shoal_proto::v1::node_spec::Availability::Active,
        );
        let ns = nodes(vec![ready("n1"), down]);
        let tasks = vec![
            task_full(
                "on-ready",
                2,
                "n1",
                TaskState::Running,
                TaskState::Remove,
                0,
                0,
            ),
            task_full(
                "on-down",
                3,
                "n3",
                TaskState::Running,
                TaskState::Remove,
                0,
                0,
            ),
            task_full(
                "on-gone",
                4,
                "n9",
                TaskState::Running,
                TaskState::Remove,
                0,
                0,
            ),
            task_full(
                "unassigned",
                5,
                "",
                TaskState::Pending,
                TaskState::Remove,
                0,
                0,
            ),
        ];
        assert_eq!(
            ids(&reap(Some(&svc), &tasks, &ns, 5).delete_tasks),
            vec!["on-down", "on-gone", "unassigned"]
        );
        // An orphan (service deleted) on a live node waits for its worker.
        assert_eq!(
            ids(&reap(None, &tasks, &ns, 5).delete_tasks),
            vec!["on-down", "on-gone", "unassigned"]
        );
    }
}
