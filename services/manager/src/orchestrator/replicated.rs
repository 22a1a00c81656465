//! The replicated orchestrator's reconcile: slots 1..N, each with at most one live task.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use shoal_proto::v1::{Node, Service, Task, TaskState, service_spec::Mode};

use super::restart::{RestartDecision, decide_restart};
use super::task::new_task_at;
use super::update::{self, Unit};
use super::{
    Plan, is_dead_unhandled, is_live, newest_first, node_loss, observed, task_id, tasks_or_removal,
};

/// One slot's tasks, sorted out (for replicated services and replicated jobs).
pub(super) struct SlotView<'a> {
    slot: u64,
    all: Vec<&'a Task>,
    /// Live tasks on nodes that can keep them (or not assigned yet).
    healthy: Vec<&'a Task>,
    /// Live tasks on a node that is down, drained or gone.
    lost: Vec<&'a Task>,
    /// Finished while still desired RUNNING: waiting for the restart decision.
    unhandled: Vec<&'a Task>,
    /// The restart decision for the newest unhandled task, or, for a slot with only
    /// history, for its newest task.
    decision: Option<RestartDecision>,
    /// The slot counts towards the replicas (for a job: is not free to start anew).
    pub(super) occupied: bool,
}

impl<'a> SlotView<'a> {
    pub(super) fn new(
        slot: u64,
        mut all: Vec<&'a Task>,
        service: &Service,
        nodes: &HashMap<String, Node>,
    ) -> Self {
        all.sort_by(|a, b| newest_first(a, b));
        let (mut healthy, mut lost, mut unhandled) = (Vec::new(), Vec::new(), Vec::new());
        for t in &all {
            if is_live(t) {
                if node_loss(&t.node_id, nodes).is_some() {
                    lost.push(*t);
                } else {
                    healthy.push(*t);
                }
            } else if is_dead_unhandled(t) {
                unhandled.push(*t);
            }
        }
        let owned: Vec<Task> = if healthy.is_empty() && lost.is_empty() {
            all.iter().map(|t| (*t).clone()).collect()
        } else {
            Vec::new()
        };
        let judge = |t: &Task| decide_restart(t, &owned, restart_policy(t));
        let (decision, occupied) = if !healthy.is_empty() || !lost.is_empty() {
            (None, true)
        } else if let Some(newest) = unhandled.first().or(all.first()) {
            let d = judge(newest);
            let given_up =
                d == RestartDecision::NoRestart && newest.spec_version == service.spec_version;
            // An unhandled death holds the slot while its restart waits; history alone
            // holds it only when the slot was given up under the current spec.
            let occupied = given_up || (!unhandled.is_empty() && d != RestartDecision::NoRestart);
            (Some(d), occupied)
        } else {
            (None, false)
        };
        SlotView {
            slot,
            all,
            healthy,
            lost,
            unhandled,
            decision,
            occupied,
        }
    }

    /// Whether the slot has a task at work: a live one, or a dead one waiting for its
    /// restart (an occupied slot the restart policy gave up on is not).
    pub(super) fn active(&self) -> bool {
        self.occupied && self.decision != Some(RestartDecision::NoRestart)
    }

    /// Puts what the slot's own tasks need on `plan`, and tells whether the slot gets a
    /// new task: with a healthy live task, the lost and unhandled ones are shut down;
    /// with only lost live tasks, those and the unhandled ones are shut down and
    /// replaced; a dead task is restarted once its delay is over (until then the
    /// service is requeued), or shut down for good when the policy gave up.
    pub(super) fn reconcile(&self, now: SystemTime, plan: &mut Plan) -> bool {
        if !self.healthy.is_empty() {
            plan.shut_down(&self.lost);
            plan.shut_down(&self.unhandled);
            false
        } else if !self.lost.is_empty() {
            plan.shut_down(&self.lost);
            plan.shut_down(&self.unhandled);
            true
        } else if !self.unhandled.is_empty() {
            match self.decision {
                Some(RestartDecision::Restart { not_before }) if not_before > now => {
                    plan.requeue(not_before);
                    false
                }
                Some(RestartDecision::Restart { .. }) => {
                    plan.shut_down(&self.unhandled);
                    true
                }
                _ => {
                    plan.shut_down(&self.unhandled);
                    false
                }
            }
        } else {
            false
        }
    }

    /// The one task that is there and RUNNING, if the slot is exactly that.
    fn running(&self) -> bool {
        self.lost.is_empty()
            && self.healthy.len() == 1
            && self
                .healthy
                .first()
                .is_some_and(|t| observed(t) == TaskState::Running)
    }

    /// The node of the slot's single healthy, assigned task (what balance is about).
    fn balance_node(&self) -> Option<&'a str> {
        match (self.healthy.as_slice(), self.lost.is_empty()) {
            ([t], true) if !t.node_id.is_empty() => Some(t.node_id.as_str()),
            _ => None,
        }
    }
}

/// The restart policy a task ran with.
pub(crate) fn restart_policy(t: &Task) -> Option<&shoal_proto::v1::RestartPolicy> {
    t.spec.as_ref().and_then(|s| s.restart.as_ref())
}

/// The `count` lowest slot numbers in 1..=`last` that are not `taken` (fewer if the
/// range runs out).
pub(crate) fn free_slots(
    taken: &BTreeSet<u64>,
    count: u64,
    last: u64,
) -> impl Iterator<Item = u64> + '_ {
    (1..=last)
        .filter(|slot| !taken.contains(slot))
        .take(usize::try_from(count).unwrap_or(usize::MAX))
}

/// New unassigned tasks of `service` for these slots, in slot order.
pub(crate) fn new_tasks_in_slots(
    service: &Service,
    mut slots: Vec<u64>,
    now: SystemTime,
) -> Vec<Task> {
    slots.sort_unstable();
    slots
        .into_iter()
        .map(|slot| new_task_at(service, slot, None, None, now))
        .collect()
}

/// Reconciles a replicated service: `tasks` may hold other services' tasks (ignored);
/// `nodes` are all nodes by id (a node missing from it counts as removed).
///
/// - A slot is held by a live task (desired and observed at most RUNNING), by a dead one
///   whose restart is pending, or by a dead one the restart policy gave up on (under the
///   current spec version: a service update revives it). Dead tasks desired SHUTDOWN
///   are history.
/// - Scale up fills the lowest free slot numbers from 1.
/// - Scale down follows Swarm: slots whose task runs come before others, each slot gets
///   the rank of its task among the service's tasks on that node (1st, 2nd, ... copy),
///   slots without exactly one healthy assigned task rank last; the first N are kept.
///   So the nodes with the most copies and the tasks not running lose first; ties go to
///   the highest slot numbers. Every task of a removed slot is set desired REMOVE.
/// - A live task on a DOWN, drained or removed node is shut down and replaced at once
///   by a new task in the same slot (unassigned: the scheduler places it elsewhere).
///   Nothing moves back when the node returns: the old task is history by then.
/// - A task that died while desired RUNNING goes to the restart supervisor
///   ([`decide_restart`], policy of the spec it ran with): restarted in its slot once
///   the delay has passed (until then [`Plan::requeue_at`]), or shut down for good.
///
/// New tasks carry no trace context; the caller sets the one of the request being
/// served. Non-replicated services get an empty plan, a `pending_delete` one has every
/// task set desired REMOVE.
pub fn reconcile_replicated(
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
    let Some(Mode::Replicated(mode)) = service.spec.as_ref().and_then(|s| s.mode.as_ref()) else {
        return plan;
    };
    let replicas = mode.replicas;

    let mut by_slot: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for t in ours {
        if t.slot == 0 {
            // Not a replicated task (no slot): it has no place here.
            plan.remove.push(task_id(t).to_string());
        } else {
            by_slot.entry(t.slot).or_default().push(t);
        }
    }
    let views: Vec<SlotView> = by_slot
        .into_iter()
        .map(|(slot, all)| SlotView::new(slot, all, service, nodes))
        .collect();

    // Which occupied slots stay: Swarm's scale-down order.
    let mut occupied: Vec<&SlotView> = views.iter().filter(|v| v.occupied).collect();
    occupied.sort_by_key(|v| (!v.running(), v.slot));
    let mut per_node: HashMap<&str, i64> = HashMap::new();
    let mut ranked: Vec<(i64, &SlotView)> = occupied
        .into_iter()
        .map(|v| match v.balance_node() {
            Some(node) => {
                let n = per_node.entry(node).or_default();
                *n += 1;
                (*n, v)
            }
            None => (i64::MAX, v),
        })
        .collect();
    ranked.sort_by_key(|(rank, v)| (*rank, !v.running(), v.slot));
    let keep_count = usize::try_from(replicas).unwrap_or(usize::MAX);
    let mut kept: BTreeSet<u64> = BTreeSet::new();
    for (i, (_, v)) in ranked.iter().enumerate() {
        if i < keep_count {
            kept.insert(v.slot);
        } else {
            plan.remove
                .extend(v.all.iter().map(|t| task_id(t).to_string()));
        }
    }

    let mut create_slots: Vec<u64> = Vec::new();
    for v in views
        .iter()
        .filter(|v| !v.occupied || kept.contains(&v.slot))
    {
        if v.reconcile(now, &mut plan) {
            create_slots.push(v.slot);
        }
    }

    // The update supervisor, over the slots that stay.
    let staying: Vec<&SlotView> = views.iter().filter(|v| kept.contains(&v.slot)).collect();
    for v in &staying {
        let (shut, start) = update::settle(service, &v.healthy, &v.all, nodes);
        plan.shut_down(&shut);
        plan.start
            .extend(start.iter().map(|t| task_id(t).to_string()));
    }
    let units: Vec<Unit> = staying
        .iter()
        .map(|v| Unit {
            healthy: &v.healthy,
            all: &v.all,
        })
        .collect();
    let decision = update::supervise(service, &units, now);
    plan.note_update(&decision);
    let mut ready_slots: Vec<u64> = Vec::new();
    for v in decision.replace.iter().filter_map(|i| staying.get(*i)) {
        if !decision.start_first {
            plan.shut_down(&v.healthy);
            ready_slots.push(v.slot);
        } else {
            create_slots.push(v.slot);
        }
    }

    // Scale up: the lowest free slot numbers.
    let held = kept.len() as u64;
    create_slots.extend(free_slots(&kept, replicas.saturating_sub(held), u64::MAX));
    plan.create = new_tasks_in_slots(service, create_slots, now);
    plan.create.extend(
        new_tasks_in_slots(service, ready_slots, now)
            .into_iter()
            .map(update::prepared_only),
    );
    debug_assert!(plan.shutdown.iter().all(|id| !plan.remove.contains(id)));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;
    use shoal_proto::v1::node_spec::Availability;
    use shoal_proto::v1::{RestartPolicy, node_status, restart_policy::Condition};

    fn three_nodes() -> HashMap<String, Node> {
        nodes(vec![ready("n1"), ready("n2"), ready("n3")])
    }

    fn running(id: &str, slot: u64, node: &str) -> Task {
        task(id, slot, node, TaskState::Running)
    }

    #[test]
    fn a_new_service_gets_slots_one_to_n() {
        let svc = replicated_service("svc1", "web", 3);
        let plan = reconcile_replicated(&svc, &[], &three_nodes(), at(0));
        assert_eq!(created_slots(&plan.create), vec![1, 2, 3]);
        assert!(plan.shutdown.is_empty() && plan.remove.is_empty());
        assert!(plan.create.iter().all(|t| t.node_id.is_empty()
            && t.desired_state == TaskState::Running as i32
            && t.service_id == "svc1"));
    }

    #[test]
    fn a_converged_service_needs_nothing_and_ignores_other_services() {
        let svc = replicated_service("svc1", "web", 2);
        let mut other = running("o1", 1, "n1");
        other.service_id = "svc2".into();
        let tasks = vec![running("a", 1, "n1"), running("b", 2, "n2"), other];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.requeue_at, None);
    }

    #[test]
    fn scale_up_adds_the_missing_slots() {
        let svc = replicated_service("svc1", "web", 5);
        let tasks = vec![running("a", 1, "n1")];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(created_slots(&plan.create), vec![2, 3, 4, 5]);
        assert!(plan.shutdown.is_empty() && plan.remove.is_empty());
    }

    #[test]
    fn scale_up_fills_holes_first() {
        let svc = replicated_service("svc1", "web", 4);
        let tasks = vec![running("a", 1, "n1"), running("c", 3, "n2")];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(created_slots(&plan.create), vec![2, 4]);
    }

    #[test]
    fn pending_tasks_hold_their_slots() {
        let svc = replicated_service("svc1", "web", 2);
        let tasks = vec![
            task("a", 1, "", TaskState::Pending),
            task("b", 2, "n1", TaskState::Assigned),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn balanced_scale_down_removes_the_highest_slots() {
        // 5 tasks 2/2/1 over three nodes, scaled to 3.
        let svc = replicated_service("svc1", "web", 3);
        let mut tasks = vec![
            running("a", 1, "n1"),
            running("b", 2, "n2"),
            running("c", 3, "n3"),
            running("d", 4, "n1"),
            running("e", 5, "n2"),
        ];
        // History of a removed slot goes with it.
        tasks.push(task_full(
            "e0",
            5,
            "n3",
            TaskState::Failed,
            TaskState::Shutdown,
            0,
            0,
        ));
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(ids(&plan.remove), vec!["d", "e", "e0"]);
        assert!(plan.create.is_empty() && plan.shutdown.is_empty());
    }

    #[test]
    fn scale_down_prefers_the_node_with_the_most_copies() {
        // n1 holds slots 1,2,3; n2 holds 4. Down to 2: keep one on each node.
        let svc = replicated_service("svc1", "web", 2);
        let tasks = vec![
            running("a", 1, "n1"),
            running("b", 2, "n1"),
            running("c", 3, "n1"),
            running("d", 4, "n2"),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(ids(&plan.remove), vec!["b", "c"]);
    }

    #[test]
    fn scale_down_prefers_tasks_not_yet_running() {
        // Balanced (one per node); slot 1 is still starting, so it goes before slot 3.
        let svc = replicated_service("svc1", "web", 2);
        let tasks = vec![
            task("a", 1, "n1", TaskState::Starting),
            running("b", 2, "n2"),
            running("c", 3, "n3"),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(ids(&plan.remove), vec!["a"]);
        // Unassigned (pending) tasks go first of all.
        let tasks = vec![
            running("a", 1, "n1"),
            task("b", 2, "", TaskState::Pending),
            running("c", 3, "n1"),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(ids(&plan.remove), vec!["b"]);
    }

    #[test]
    fn scale_to_zero_removes_everything() {
        let svc = replicated_service("svc1", "web", 0);
        let tasks = vec![running("a", 1, "n1"), running("b", 2, "n2")];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(ids(&plan.remove), vec!["a", "b"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn tasks_being_removed_are_not_counted() {
        let svc = replicated_service("svc1", "web", 2);
        let tasks = vec![
            running("a", 1, "n1"),
            task_full("b", 2, "n2", TaskState::Running, TaskState::Remove, 1, 1),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(created_slots(&plan.create), vec![2]);
        assert!(plan.remove.is_empty() && plan.shutdown.is_empty());
    }

    #[test]
    fn a_down_nodes_task_is_replaced_in_the_same_slot() {
        let svc = replicated_service("svc1", "web", 3);
        let mut ns = three_nodes();
        ns.insert(
            "n2".into(),
            node("n2", node_status::State::Down, Availability::Active),
        );
        let tasks = vec![
            running("a", 1, "n1"),
            running("b", 2, "n2"),
            running("c", 3, "n3"),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &ns, at(0));
        assert_eq!(ids(&plan.shutdown), vec!["b"]);
        assert_eq!(created_slots(&plan.create), vec![2]);
        assert_eq!(plan.create.first().map(|t| t.node_id.as_str()), Some(""));
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn a_drained_or_removed_nodes_tasks_are_replaced() {
        let svc = replicated_service("svc1", "web", 3);
        let mut ns = three_nodes();
        ns.insert(
            "n1".into(),
            node("n1", node_status::State::Ready, Availability::Drain),
        );
        ns.remove("n3");
        let tasks = vec![
            running("a", 1, "n1"),
            running("b", 2, "n2"),
            running("c", 3, "n3"),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &ns, at(0));
        assert_eq!(ids(&plan.shutdown), vec!["a", "c"]);
        assert_eq!(created_slots(&plan.create), vec![1, 3]);
    }

    #[test]
    fn a_paused_or_disconnected_node_keeps_its_tasks() {
        let svc = replicated_service("svc1", "web", 2);
        let ns = nodes(vec![
            node("n1", node_status::State::Ready, Availability::Pause),
            node("n2", node_status::State::Disconnected, Availability::Active),
        ]);
        let tasks = vec![running("a", 1, "n1"), running("b", 2, "n2")];
        assert!(reconcile_replicated(&svc, &tasks, &ns, at(0)).is_empty());
    }

    #[test]
    fn nothing_moves_back_when_the_node_returns() {
        // After the replacement: the old task (desired SHUTDOWN) still says RUNNING on
        // the returned node; the new one runs elsewhere.
        let svc = replicated_service("svc1", "web", 3);
        let tasks = vec![
            running("a", 1, "n1"),
            task_full("b", 2, "n2", TaskState::Running, TaskState::Shutdown, 1, 1),
            task_full("b2", 2, "n3", TaskState::Running, TaskState::Running, 5, 5),
            running("c", 3, "n3"),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(10));
        assert!(plan.is_empty(), "{plan:?}");
        // Same while the node is still down.
        let mut ns = three_nodes();
        ns.insert(
            "n2".into(),
            node("n2", node_status::State::Down, Availability::Active),
        );
        assert!(reconcile_replicated(&svc, &tasks, &ns, at(10)).is_empty());
    }

    #[test]
    fn reconcile_is_idempotent_after_applying_a_plan() {
        let svc = replicated_service("svc1", "web", 3);
        let mut ns = three_nodes();
        ns.insert(
            "n2".into(),
            node("n2", node_status::State::Down, Availability::Active),
        );
        let mut tasks = vec![running("a", 1, "n1"), running("b", 2, "n2")];
        let plan = reconcile_replicated(&svc, &tasks, &ns, at(0));
        for t in tasks.iter_mut() {
            if plan.shutdown.contains(&task_id(t).to_string()) {
                t.desired_state = TaskState::Shutdown as i32;
            }
        }
        tasks.extend(plan.create.clone());
        let again = reconcile_replicated(&svc, &tasks, &ns, at(0));
        assert!(again.is_empty(), "{again:?}");
    }

    fn on_failure(max: u64, delay_s: i64) -> RestartPolicy {
        RestartPolicy {
            condition: Condition::OnFailure as i32,
            delay: Some(prost_types::Duration {
                seconds: delay_s,
                nanos: 0,
            }),
            max_attempts: max,
            window: None,
        }
    }

    #[test]
    fn a_failed_task_is_restarted_in_its_slot_after_the_delay() {
        let p = on_failure(0, 5);
        let svc = with_restart(replicated_service("svc1", "web", 1), p);
        let dead = task_with_restart(dead_task("a", 1, TaskState::Failed, 0, 10), &p);
        let tasks = vec![dead];
        // Before the delay: nothing yet, come back at 15.
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(12));
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.requeue_at, Some(at(15)));
        // After it: the dead one becomes history, a new task takes slot 1.
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(15));
        assert_eq!(ids(&plan.shutdown), vec!["a"]);
        assert_eq!(created_slots(&plan.create), vec![1]);
        assert_eq!(plan.requeue_at, None);
    }

    #[test]
    fn on_failure_restarts_exactly_max_attempts_times() {
        let p = on_failure(2, 0);
        let svc = with_restart(replicated_service("svc1", "web", 1), p);
        let ns = three_nodes();
        let mut tasks: Vec<Task> = Vec::new();
        let mut restarts = 0;
        // Run the loop: every task dies right after it is created.
        let mut plan = reconcile_replicated(&svc, &tasks, &ns, at(0));
        for round in 1..10u64 {
            for t in tasks.iter_mut() {
                if plan.shutdown.contains(&task_id(t).to_string()) {
                    t.desired_state = TaskState::Shutdown as i32;
                }
            }
            if round > 1 {
                restarts += plan.create.len();
            }
            for mut t in plan.create.drain(..) {
                t = task_with_restart(t, &p);
                if let Some(m) = t.meta.as_mut() {
                    m.created_at = Some(ts(round * 10));
                }
                if let Some(s) = t.status.as_mut() {
                    s.state = TaskState::Failed as i32;
                    s.timestamp = Some(ts(round * 10 + 1));
                }
                tasks.push(t);
            }
            plan = reconcile_replicated(&svc, &tasks, &ns, at(round * 10 + 5));
        }
        assert_eq!(restarts, 2);
        assert_eq!(tasks.len(), 3);
        // The last one stays failed, given up, and the slot is not refilled.
        assert!(plan.create.is_empty());
        assert!(tasks.iter().all(|t| observed(t) == TaskState::Failed));
    }

    #[test]
    fn condition_none_leaves_the_slot_dead_until_the_spec_changes() {
        let p = RestartPolicy {
            condition: Condition::None as i32,
            ..Default::default()
        };
        let mut svc = with_restart(replicated_service("svc1", "web", 2), p);
        let dead = task_with_restart(dead_task("a", 1, TaskState::Complete, 0, 10), &p);
        let tasks = vec![dead, task_with_restart(running("b", 2, "n2"), &p)];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(20));
        assert_eq!(ids(&plan.shutdown), vec!["a"]);
        assert!(plan.create.is_empty());
        // Once shut down it is history and still holds the slot.
        let mut tasks = tasks;
        if let Some(t) = tasks.first_mut() {
            t.desired_state = TaskState::Shutdown as i32;
        }
        assert!(reconcile_replicated(&svc, &tasks, &three_nodes(), at(30)).is_empty());
        // A service update (new spec version) brings slot 1 back.
        svc.spec_version = Some(shoal_proto::v1::Version { index: 2 });
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(40));
        assert_eq!(created_slots(&plan.create), vec![1]);
    }

    #[test]
    fn a_removed_service_has_all_its_tasks_removed() {
        let mut svc = replicated_service("svc1", "web", 2);
        svc.pending_delete = true;
        let tasks = vec![
            running("a", 1, "n1"),
            task_full("h", 1, "n1", TaskState::Failed, TaskState::Shutdown, 0, 0),
        ];
        let plan = reconcile_replicated(&svc, &tasks, &three_nodes(), at(0));
        assert_eq!(ids(&plan.remove), vec!["a", "h"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn a_global_service_is_not_ours() {
        let svc = global_service("svc1", "agent");
        assert!(reconcile_replicated(&svc, &[], &three_nodes(), at(0)).is_empty());
    }
}
