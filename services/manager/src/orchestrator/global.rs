//! The global orchestrator's reconcile: one task per eligible node.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use shoal_proto::v1::node_spec::Availability;
use shoal_proto::v1::{Node, Service, Task, node_status, service_spec::Mode};
use shoal_scheduler::placement::constraint;

use super::replicated::restart_policy;
use super::restart::{RestartDecision, decide_restart};
use super::task::new_task_at;
use super::update::{self, Unit};
use super::{
    Plan, availability, is_dead_unhandled, is_live, newest_first, node_loss, node_state, task_id,
    tasks_or_removal,
};

/// Whether `service` may run on `node` at all: its placement constraints
/// (`node.role==manager`, `node.labels.*`, ...) match, with the scheduler's own
/// constraint code. A service whose constraints do not parse runs nowhere (the
/// Control API refuses such specs; this only guards stored data). A node that stops
/// matching loses its task.
pub fn eligible(node: &Node, service: &Service) -> bool {
    has_executor(node, service) && constraints_match(node, service)
}

/// Whether the node offers an executor for the service's runtime (containers need
/// Docker, processes the process executor). A node that runs no worker — a manager
/// alone on its host — offers none and gets no global task, as the scheduler would
/// find no executor there either.
fn has_executor(node: &Node, service: &Service) -> bool {
    use shoal_proto::v1::executor_description::Kind;
    use shoal_proto::v1::task_spec::Runtime;
    let want = match service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.as_ref())
    {
        Some(Runtime::Container(_)) => Kind::Docker,
        Some(Runtime::Process(_)) => Kind::Process,
        None => return true,
    };
    node.description
        .as_ref()
        .is_some_and(|d| d.executors.iter().any(|e| e.kind() == want))
}

fn constraints_match(node: &Node, service: &Service) -> bool {
    let exprs: &[String] = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.placement.as_ref())
        .map(|p| p.constraints.as_slice())
        .unwrap_or_default();
    if exprs.is_empty() {
        return true;
    }
    match constraint::parse_all(exprs) {
        Ok(constraints) => constraint::matches_all(&constraints, node),
        Err(_) => false,
    }
}

/// Whether a new task may go to `node` now: READY and ACTIVE (a paused node keeps its
/// tasks but gets no new one; a disconnected one waits).
pub(crate) fn accepts_new_tasks(node: &Node) -> bool {
    node_state(node) == node_status::State::Ready && availability(node) == Availability::Active
}

/// Reconciles a global service: `tasks` may hold other services' tasks (ignored);
/// `nodes` are all nodes by id.
///
/// - Every READY, ACTIVE, [`eligible`] node without a live task of the service gets a
///   new one (assigned to it: global tasks are created with their node), so a node
///   that joins gets one.
/// - A DOWN, drained, removed or no longer eligible node has its tasks shut down and
///   nothing replaces them elsewhere.
/// - A paused or disconnected node keeps what it has and gets nothing new.
/// - Extra live tasks on one node (should not happen) are shut down but one, the most
///   advanced and newest.
/// - A task that died while desired RUNNING goes through the restart supervisor, on
///   the same node; a node whose last task the policy gave up on (under the current
///   spec version) gets no new one.
///
/// Non-global services get an empty plan, a `pending_delete` one has every task set
/// desired REMOVE.
pub fn reconcile_global(
    service: &Service,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
    now: SystemTime,
) -> Plan {
    let ours = match tasks_or_removal(service, tasks) {
        Ok(ours) => ours,
        Err(removal) => return *removal,
    };
    let mut plan = Plan::default();
    if !matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::Global(_))
    ) {
        return plan;
    }

    let mut create_on: Vec<&str> = Vec::new();
    // Nodes that keep live tasks: the update supervisor's units.
    let mut staying: Vec<(&str, Vec<&Task>, Vec<&Task>)> = Vec::new();
    for (node_id, mut group) in tasks_by_node(ours, nodes) {
        group.sort_by(|a, b| newest_first(a, b));
        let live: Vec<&Task> = group.iter().copied().filter(|t| is_live(t)).collect();
        let unhandled: Vec<&Task> = group
            .iter()
            .copied()
            .filter(|t| is_dead_unhandled(t))
            .collect();
        let Some(node) = keeping_node(node_id, nodes, service) else {
            plan.shut_down(&live);
            plan.shut_down(&unhandled);
            continue;
        };
        if !live.is_empty() {
            plan.shut_down(&unhandled);
            let (shut, start) = update::settle(service, &live, &group, nodes);
            plan.shut_down(&shut);
            plan.start
                .extend(start.iter().map(|t| task_id(t).to_string()));
            staying.push((node_id, live, group));
            continue;
        }
        if restart_on_node(service, node, &group, &unhandled, now, &mut plan) {
            create_on.push(node_id);
        }
    }

    let units: Vec<Unit> = staying
        .iter()
        .map(|(_, live, group)| Unit {
            healthy: live,
            all: group,
        })
        .collect();
    let decision = update::supervise(service, &units, now);
    plan.note_update(&decision);
    let mut ready_on: Vec<&str> = Vec::new();
    for (node_id, live, _) in decision.replace.iter().filter_map(|i| staying.get(*i)) {
        if decision.start_first {
            create_on.push(node_id);
        } else {
            plan.shut_down(live);
            ready_on.push(node_id);
        }
    }

    plan.create = new_tasks_on_nodes(service, create_on, now);
    plan.create.extend(
        new_tasks_on_nodes(service, ready_on, now)
            .into_iter()
            .map(update::prepared_only),
    );
    plan
}

/// New tasks of `service`, one assigned to each of these nodes.
pub(crate) fn new_tasks_on_nodes(
    service: &Service,
    node_ids: Vec<&str>,
    now: SystemTime,
) -> Vec<Task> {
    node_ids
        .into_iter()
        .map(|node_id| new_task_at(service, 0, Some(node_id), None, now))
        .collect()
}

/// The service's tasks `ours` by node id, with an entry (maybe empty) for every node
/// in `nodes`; unassigned tasks are under the empty id.
pub(crate) fn tasks_by_node<'a>(
    ours: Vec<&'a Task>,
    nodes: &'a HashMap<String, Node>,
) -> BTreeMap<&'a str, Vec<&'a Task>> {
    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in ours {
        by_node.entry(t.node_id.as_str()).or_default().push(t);
    }
    for id in nodes.keys() {
        by_node.entry(id.as_str()).or_default();
    }
    by_node
}

/// The node `node_id`, if it may keep the service's tasks: a known node, not down,
/// drained or removed, and [`eligible`]. `None` means its tasks are to be shut down.
pub(crate) fn keeping_node<'a>(
    node_id: &str,
    nodes: &'a HashMap<String, Node>,
    service: &Service,
) -> Option<&'a Node> {
    if node_id.is_empty() || node_loss(node_id, nodes).is_some() {
        return None;
    }
    nodes.get(node_id).filter(|n| eligible(n, service))
}

/// For a node that keeps the service's tasks but has no live one: whether it gets a
/// new task now. Only a READY, ACTIVE node does; `group` is the node's tasks (newest
/// first), `unhandled` those that died while desired RUNNING. With no task at all the
/// node gets one; else the restart supervisor judges the newest unhandled (or newest)
/// task: a restart still in its delay requeues the service, a due one shuts the dead
/// tasks down and restarts on the node, and a policy that gave up shuts them down and
/// starts anew only for a task of an older spec version.
pub(crate) fn restart_on_node(
    service: &Service,
    node: &Node,
    group: &[&Task],
    unhandled: &[&Task],
    now: SystemTime,
    plan: &mut Plan,
) -> bool {
    if !accepts_new_tasks(node) {
        return false;
    }
    let Some(newest) = unhandled.first().or(group.first()).copied() else {
        return true;
    };
    let history: Vec<Task> = group.iter().map(|t| (*t).clone()).collect();
    match decide_restart(newest, &history, restart_policy(newest)) {
        RestartDecision::Restart { not_before } if !unhandled.is_empty() && not_before > now => {
            plan.requeue(not_before);
            false
        }
        RestartDecision::Restart { .. } => {
            plan.shut_down(unhandled);
            true
        }
        RestartDecision::NoRestart => {
            plan.shut_down(unhandled);
            newest.spec_version != service.spec_version
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;
    use shoal_proto::v1::{RestartPolicy, TaskState, restart_policy::Condition};

    #[test]
    fn a_node_without_an_executor_for_the_runtime_is_not_eligible() {
        use shoal_proto::v1::executor_description::Kind;
        use shoal_proto::v1::{ExecutorDescription, NodeDescription, ProcessSpec, task_spec};
        let mut svc = global_service("s", "agent");
        if let Some(task) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
            task.runtime = Some(task_spec::Runtime::Process(ProcessSpec {
                command: vec!["sleep".into()],
                ..Default::default()
            }));
        }
        let bare = ready("manager");
        let mut docker_only = ready("d");
        docker_only.description = Some(NodeDescription {
            executors: vec![ExecutorDescription {
                kind: Kind::Docker as i32,
                version: String::new(),
            }],
            ..Default::default()
        });
        let mut both = docker_only.clone();
        if let Some(d) = both.description.as_mut() {
            d.executors.push(ExecutorDescription {
                kind: Kind::Process as i32,
                version: String::new(),
            });
        }
        assert!(!eligible(&bare, &svc));
        assert!(!eligible(&docker_only, &svc));
        assert!(eligible(&both, &svc));
    }

    fn on_node(id: &str, node: &str) -> Task {
        task(id, 0, node, TaskState::Running)
    }

    fn created_nodes(plan: &Plan) -> Vec<&str> {
        let mut v: Vec<&str> = plan.create.iter().map(|t| t.node_id.as_str()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn one_task_per_ready_active_node() {
        let svc = global_service("svc1", "agent");
        let ns = nodes(vec![ready("n1"), ready("n2"), ready("n3")]);
        let plan = reconcile_global(&svc, &[], &ns, at(0));
        assert_eq!(created_nodes(&plan), vec!["n1", "n2", "n3"]);
        assert!(
            plan.create
                .iter()
                .all(|t| t.slot == 0 && t.desired_state == TaskState::Running as i32)
        );
        assert!(plan.shutdown.is_empty() && plan.remove.is_empty());
    }

    #[test]
    fn a_node_that_joins_gets_a_task() {
        let svc = global_service("svc1", "agent");
        let ns = nodes(vec![ready("n1"), ready("n2"), ready("n3"), ready("n4")]);
        let tasks = vec![on_node("a", "n1"), on_node("b", "n2"), on_node("c", "n3")];
        let plan = reconcile_global(&svc, &tasks, &ns, at(0));
        assert_eq!(created_nodes(&plan), vec!["n4"]);
        assert!(plan.shutdown.is_empty());
    }

    #[test]
    fn a_converged_global_service_needs_nothing() {
        let svc = global_service("svc1", "agent");
        let ns = nodes(vec![ready("n1"), ready("n2")]);
        let tasks = vec![
            on_node("a", "n1"),
            task("b", 0, "n2", TaskState::Pending),
            task_full("old", 0, "n2", TaskState::Failed, TaskState::Shutdown, 0, 0),
        ];
        assert!(reconcile_global(&svc, &tasks, &ns, at(0)).is_empty());
    }

    #[test]
    fn drained_down_and_removed_nodes_lose_their_task_without_replacement() {
        let svc = global_service("svc1", "agent");
        let ns = nodes(vec![
            ready("n1"),
            node("n2", node_status::State::Ready, Availability::Drain),
            node("n3", node_status::State::Down, Availability::Active),
        ]);
        let tasks = vec![
            on_node("a", "n1"),
            on_node("b", "n2"),
            on_node("c", "n3"),
            on_node("d", "gone"),
        ];
        let plan = reconcile_global(&svc, &tasks, &ns, at(0));
        assert_eq!(ids(&plan.shutdown), vec!["b", "c", "d"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn paused_and_disconnected_nodes_keep_tasks_and_get_none() {
        let svc = global_service("svc1", "agent");
        let ns = nodes(vec![
            node("n1", node_status::State::Ready, Availability::Pause),
            node("n2", node_status::State::Ready, Availability::Pause),
            node("n3", node_status::State::Disconnected, Availability::Active),
        ]);
        let tasks = vec![on_node("a", "n1")];
        assert!(reconcile_global(&svc, &tasks, &ns, at(0)).is_empty());
    }

    #[test]
    fn a_drained_node_made_active_again_gets_a_new_task() {
        let svc = global_service("svc1", "agent");
        let ns = nodes(vec![ready("n1")]);
        let tasks = vec![task_full(
            "a",
            0,
            "n1",
            TaskState::Shutdown,
            TaskState::Shutdown,
            0,
            5,
        )];
        let plan = reconcile_global(&svc, &tasks, &ns, at(10));
        assert_eq!(created_nodes(&plan), vec!["n1"]);
    }

    #[test]
    fn extra_tasks_on_one_node_are_shut_down_but_one() {
        let svc = global_service("svc1", "agent");
        let ns = nodes(vec![ready("n1")]);
        let tasks = vec![
            task_full("old", 0, "n1", TaskState::Running, TaskState::Running, 1, 1),
            task_full("new", 0, "n1", TaskState::Pending, TaskState::Running, 2, 2),
        ];
        let plan = reconcile_global(&svc, &tasks, &ns, at(10));
        assert_eq!(ids(&plan.shutdown), vec!["new"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn a_failed_global_task_restarts_on_its_node_after_the_delay() {
        let p = RestartPolicy {
            condition: Condition::OnFailure as i32,
            delay: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            max_attempts: 0,
            window: None,
        };
        let svc = with_restart(global_service("svc1", "agent"), p);
        let ns = nodes(vec![ready("n1")]);
        let dead = task_with_restart(
            task_full("a", 0, "n1", TaskState::Failed, TaskState::Running, 0, 10),
            &p,
        );
        let tasks = vec![dead];
        let plan = reconcile_global(&svc, &tasks, &ns, at(11));
        assert!(plan.is_empty());
        assert_eq!(plan.requeue_at, Some(at(15)));
        let plan = reconcile_global(&svc, &tasks, &ns, at(15));
        assert_eq!(ids(&plan.shutdown), vec!["a"]);
        assert_eq!(created_nodes(&plan), vec!["n1"]);
    }

    #[test]
    fn a_completed_task_with_on_failure_is_not_replaced() {
        let p = RestartPolicy {
            condition: Condition::OnFailure as i32,
            ..Default::default()
        };
        let svc = with_restart(global_service("svc1", "agent"), p);
        let ns = nodes(vec![ready("n1")]);
        let mut tasks = vec![task_with_restart(
            task_full("a", 0, "n1", TaskState::Complete, TaskState::Running, 0, 10),
            &p,
        )];
        let plan = reconcile_global(&svc, &tasks, &ns, at(20));
        assert_eq!(ids(&plan.shutdown), vec!["a"]);
        assert!(plan.create.is_empty());
        if let Some(t) = tasks.first_mut() {
            t.desired_state = TaskState::Shutdown as i32;
        }
        assert!(reconcile_global(&svc, &tasks, &ns, at(30)).is_empty());
    }

    #[test]
    fn a_removed_global_service_has_all_its_tasks_removed() {
        let mut svc = global_service("svc1", "agent");
        svc.pending_delete = true;
        let ns = nodes(vec![ready("n1")]);
        let plan = reconcile_global(&svc, &[on_node("a", "n1")], &ns, at(0));
        assert_eq!(ids(&plan.remove), vec!["a"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn a_replicated_service_is_not_ours() {
        let svc = replicated_service("svc1", "web", 1);
        let ns = nodes(vec![ready("n1")]);
        assert!(reconcile_global(&svc, &[], &ns, at(0)).is_empty());
    }
}
