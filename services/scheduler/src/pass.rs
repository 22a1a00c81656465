//! One scheduling pass as decisions: which pending tasks go where, and which stay
//! pending with what explanation. Pure (no I/O, `now` passed in); the
//! [`crate::scheduler`] loop gathers the inputs from its caches and writes the output.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use shoal_proto::v1::{Task, TaskState, TaskStatus, TraceContext};
use shoal_store::Object;

use crate::placement::{NodeInfo, Pipeline, SpreadOptions, explain, schedule_group};

/// The message of a task the scheduler placed (Swarm's).
pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";

/// Is `task` waiting for the scheduler: observed PENDING, desired to run (or, for job
/// tasks, to complete; or, for a stop-first update's replacement, to be made READY)?
pub fn is_schedulable(task: &Task) -> bool {
    let pending = task.status.as_ref().map(|s| s.state()) == Some(TaskState::Pending);
    pending
        && (task.desired_state == TaskState::Running as i32
            || task.desired_state == TaskState::Complete as i32
            || task.desired_state == TaskState::Ready as i32)
}

/// Does `task` hold (or count against) a node, so a node's NodeInfo includes it?
/// Tasks still PENDING are placed by this very pass and hold nothing yet.
pub fn is_on_node(task: &Task) -> bool {
    !task.node_id.is_empty()
        && task.status.as_ref().map_or(0, |s| s.state) >= TaskState::Assigned as i32
}

/// The task's name as Swarm shows it: `<service>.<slot>`, `<service>.<node id>` for
/// global tasks.
pub fn task_name(task: &Task) -> String {
    let service = service_name(task);
    if task.slot == 0 {
        format!("{service}.{}", task.node_id)
    } else {
        format!("{service}.{}", task.slot)
    }
}

/// The task's service name, its id when the task does not carry the name.
pub fn service_name(task: &Task) -> &str {
    task.service_annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(&task.service_id)
}

/// One change the pass wants to write: `new` replaces `old` (the cached copy, its
/// version the CAS condition).
#[derive(Debug, Clone)]
pub struct Change {
    pub old: Arc<Task>,
    pub new: Task,
}

impl Change {
    /// The change places the task (otherwise it records why it cannot be placed).
    pub fn is_assignment(&self) -> bool {
        self.new.status.as_ref().map(|s| s.state()) == Some(TaskState::Assigned)
    }
}

/// The tasks of one service at one spec version, and what the pass decided for them.
#[derive(Debug, Clone)]
pub struct Group {
    pub service_id: String,
    pub service_name: String,
    /// The first task's stored trace context: the group's span hangs under it.
    pub trace_context: TraceContext,
    pub tasks: Vec<Arc<Task>>,
}

/// What a group's placement decided.
#[derive(Debug, Clone, Default)]
pub struct GroupOutcome {
    pub changes: Vec<Change>,
    pub placed: usize,
    pub unplaced: usize,
    /// The explanation of the unplaced tasks (the last one, if they differ).
    pub explanation: Option<String>,
}

/// Groups pending tasks by (service, spec version), at most `limit` tasks in all; groups
/// in (service id, spec version) order, tasks by slot then id.
pub fn group(pending: Vec<Arc<Task>>, limit: usize) -> (Vec<Group>, usize) {
    let mut by_key: BTreeMap<(String, u64), Vec<Arc<Task>>> = BTreeMap::new();
    for t in pending {
        let version = t.spec_version.as_ref().map_or(0, |v| v.index);
        by_key
            .entry((t.service_id.clone(), version))
            .or_default()
            .push(t);
    }
    let mut left = limit;
    let mut deferred = 0;
    let mut groups = Vec::with_capacity(by_key.len());
    for ((service_id, _), mut tasks) in by_key {
        if left == 0 {
            deferred += tasks.len();
            continue;
        }
        tasks.sort_by(|a, b| (a.slot, a.id()).cmp(&(b.slot, b.id())));
        if tasks.len() > left {
            deferred += tasks.len() - left;
            tasks.truncate(left);
        }
        left -= tasks.len();
        let first = &tasks[0];
        groups.push(Group {
            service_name: service_name(first).to_string(),
            trace_context: first.trace_context.clone().unwrap_or_default(),
            service_id,
            tasks,
        });
    }
    (groups, deferred)
}

fn assigned(old: &Task, node_id: &str, now: SystemTime) -> Task {
    let mut new = old.clone();
    new.node_id = node_id.to_string();
    new.status = Some(TaskStatus {
        timestamp: Some(now.into()),
        state: TaskState::Assigned as i32,
        message: ASSIGNED_MESSAGE.to_string(),
        ..Default::default()
    });
    new
}

/// The change recording `explanation` on a task that stays pending; `None` when the
/// task already says so.
fn unplaceable(old: &Arc<Task>, explanation: &str) -> Option<Change> {
    let status = old.status.clone().unwrap_or_default();
    if status.err == explanation {
        return None;
    }
    let mut new = Task::clone(old);
    new.status = Some(TaskStatus {
        err: explanation.to_string(),
        ..status
    });
    Some(Change {
        old: old.clone(),
        new,
    })
}

/// Places one group on `nodes` (updating their counts, so later groups see the
/// decisions). Tasks without a node go through the filters and the spread over every
/// node; tasks preset to a node (global services) are only checked against that node.
pub fn place_group(
    group: &Group,
    nodes: &mut [NodeInfo],
    by_id: &HashMap<String, usize>,
    now: SystemTime,
    opts: &SpreadOptions,
) -> GroupOutcome {
    let mut out = GroupOutcome::default();
    let (preset, free): (Vec<&Arc<Task>>, Vec<&Arc<Task>>) =
        group.tasks.iter().partition(|t| !t.node_id.is_empty());

    if !free.is_empty() {
        let tasks: Vec<Task> = free.iter().map(|t| Task::clone(t)).collect();
        let placement = schedule_group(&tasks, nodes, now, opts);
        for (i, node_id) in &placement.assigned {
            let old = free[*i];
            out.changes.push(Change {
                old: old.clone(),
                new: assigned(old, node_id, now),
            });
            out.placed += 1;
        }
        if let Some(explanation) = &placement.explanation {
            for i in &placement.unplaced {
                out.unplaced += 1;
                out.changes.extend(unplaceable(free[*i], explanation));
            }
            out.explanation = Some(explanation.clone());
        }
    }

    if let Some(first) = preset.first() {
        let pipeline = Pipeline::for_task(first);
        for old in preset {
            match by_id.get(&old.node_id).map(|i| &mut nodes[*i]) {
                Some(info) => match pipeline.check(info) {
                    Ok(()) => {
                        info.assign(old);
                        out.changes.push(Change {
                            old: old.clone(),
                            new: assigned(old, &old.node_id, now),
                        });
                        out.placed += 1;
                    }
                    Err(_) => {
                        let explanation = explain(&pipeline.failures([&*info]), 1);
                        out.unplaced += 1;
                        out.changes.extend(unplaceable(old, &explanation));
                        out.explanation = Some(explanation);
                    }
                },
                None => {
                    let explanation = explain(&Default::default(), 0);
                    out.unplaced += 1;
                    out.changes.extend(unplaceable(old, &explanation));
                    out.explanation = Some(explanation);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::test_support::{constrain, node, pending_task, reserve};
    use shoal_proto::v1::{Annotations, Version, node_spec::Availability};

    fn arc(t: Task) -> Arc<Task> {
        Arc::new(t)
    }

    fn infos(ids: &[&str]) -> (Vec<NodeInfo>, HashMap<String, usize>) {
        let nodes: Vec<NodeInfo> = ids.iter().map(|id| NodeInfo::new(node(id), &[])).collect();
        let by_id = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        (nodes, by_id)
    }

    fn versioned(mut t: Task, service: &str, version: u64, slot: u64) -> Task {
        t.spec_version = Some(Version { index: version });
        t.slot = slot;
        t.service_annotations = Some(Annotations {
            name: format!("{service}-name"),
            ..Default::default()
        });
        t
    }

    #[test]
    fn groups_by_service_and_version_within_the_limit() {
        let tasks = vec![
            arc(versioned(pending_task("b2", "b"), "b", 1, 2)),
            arc(versioned(pending_task("a1", "a"), "a", 7, 1)),
            arc(versioned(pending_task("b1", "b"), "b", 1, 1)),
            arc(versioned(pending_task("b9", "b"), "b", 2, 1)),
        ];
        let (groups, deferred) = group(tasks.clone(), 10);
        assert_eq!(deferred, 0);
        let shape: Vec<(String, Vec<&str>)> = groups
            .iter()
            .map(|g| {
                (
                    g.service_name.clone(),
                    g.tasks.iter().map(|t| t.id()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("a-name".to_string(), vec!["a1"]),
                ("b-name".to_string(), vec!["b1", "b2"]),
                ("b-name".to_string(), vec!["b9"]),
            ]
        );
        let (groups, deferred) = group(tasks, 2);
        assert_eq!(deferred, 2);
        assert_eq!(groups.iter().map(|g| g.tasks.len()).sum::<usize>(), 2);
    }

    #[test]
    fn places_free_tasks_and_checks_preset_ones_on_their_node() {
        let (mut nodes, by_id) = infos(&["n1", "n2"]);
        nodes[1]
            .node
            .spec
            .as_mut()
            .expect("spec")
            .set_availability(Availability::Drain);
        let mut g1 = pending_task("g1", "svc");
        g1.node_id = "n1".into();
        let mut g2 = pending_task("g2", "svc");
        g2.node_id = "n2".into();
        let mut g3 = pending_task("g3", "svc");
        g3.node_id = "gone".into();
        let group = Group {
            service_id: "svc".into(),
            service_name: "svc".into(),
            trace_context: TraceContext::default(),
            tasks: vec![arc(g1), arc(g2), arc(g3), arc(pending_task("r1", "svc"))],
        };
        let now = SystemTime::now();
        let out = place_group(&group, &mut nodes, &by_id, now, &SpreadOptions::default());
        assert_eq!((out.placed, out.unplaced), (2, 2));
        let by_task: HashMap<&str, &Change> = out.changes.iter().map(|c| (c.new.id(), c)).collect();
        assert!(by_task["r1"].is_assignment());
        assert_eq!(by_task["r1"].new.node_id, "n1");
        assert!(by_task["g1"].is_assignment());
        let status = by_task["g1"].new.status.clone().unwrap_or_default();
        assert_eq!(status.message, ASSIGNED_MESSAGE);
        assert!(status.timestamp.is_some());
        assert!(!by_task["g2"].is_assignment());
        assert_eq!(
            by_task["g2"].new.status.as_ref().map(|s| s.err.as_str()),
            Some("no suitable node (1 node not available for new tasks)")
        );
        assert_eq!(
            by_task["g3"].new.status.as_ref().map(|s| s.err.as_str()),
            Some("no suitable node")
        );
        assert_eq!(nodes[0].service_tasks("svc"), 2);
    }

    #[test]
    fn an_unchanged_explanation_is_not_rewritten() {
        let (mut nodes, by_id) = infos(&["n1"]);
        let mut t = pending_task("t", "svc");
        constrain(&mut t, &["node.labels.zone==east"]);
        let explanation = "no suitable node (scheduling constraints not satisfied on 1 node)";
        let mut already = t.clone();
        if let Some(s) = already.status.as_mut() {
            s.err = explanation.to_string();
        }
        let mut big = pending_task("big", "other");
        reserve(&mut big, 64_000_000_000, 0);
        let now = SystemTime::now();
        for (task, writes) in [(t, 1), (already, 0)] {
            let group = Group {
                service_id: "svc".into(),
                service_name: "svc".into(),
                trace_context: TraceContext::default(),
                tasks: vec![arc(task)],
            };
            let out = place_group(&group, &mut nodes, &by_id, now, &SpreadOptions::default());
            assert_eq!(out.unplaced, 1);
            assert_eq!(out.changes.len(), writes);
            assert_eq!(out.explanation.as_deref(), Some(explanation));
        }
        let group = Group {
            service_id: "other".into(),
            service_name: "other".into(),
            trace_context: TraceContext::default(),
            tasks: vec![arc(big)],
        };
        let out = place_group(&group, &mut nodes, &by_id, now, &SpreadOptions::default());
        assert_eq!(
            out.explanation.as_deref(),
            Some("no suitable node (insufficient resources on 1 node)")
        );
    }

    #[test]
    fn names_and_predicates() {
        let mut t = versioned(pending_task("t", "svc"), "web", 1, 3);
        assert_eq!(task_name(&t), "web-name.3");
        assert!(is_schedulable(&t));
        assert!(!is_on_node(&t));
        t.slot = 0;
        t.node_id = "n1".into();
        assert_eq!(task_name(&t), "web-name.n1");
        assert!(!is_on_node(&t), "a preset pending task holds nothing yet");
        t.desired_state = TaskState::Shutdown as i32;
        assert!(!is_schedulable(&t));
        if let Some(s) = t.status.as_mut() {
            s.set_state(TaskState::Running);
        }
        assert!(is_on_node(&t));
    }
}
