//! Choosing nodes for a group of identical tasks (same service, same spec version).
//!
//! Nodes that pass the static filters are arranged in a tree, one level per placement
//! preference (`spread=node.labels.zone`: one branch per label value, nodes without
//! the label in a branch of their own). Each task goes down the tree to the branch
//! holding the fewest tasks of the service so far, so tasks spread evenly across
//! label values whatever the number of nodes behind each value; at a leaf a min-heap
//! picks the node with (too many recent failures of this service, tasks of this
//! service, tasks overall, node id) smallest. Counts are updated as tasks are
//! assigned; a node that stops passing the filters (resources, ports, max replicas
//! only ever get tighter during a group) is dropped from its heap, and a branch whose
//! nodes are all gone is dropped from its parent. Cost is O((tasks + nodes) · log
//! nodes · levels), never tasks × nodes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, SystemTime};

use shoal_proto::v1::{Node, PlacementPreference, Task};

use super::constraint::{ENGINE_LABEL_PREFIX, NODE_LABEL_PREFIX};
use super::filter::{Pipeline, explain};
use super::node_info::{FAILURE_WINDOW, NodeInfo};

/// Tuning of the spread.
#[derive(Debug, Clone)]
pub struct SpreadOptions {
    /// A node where the service failed at least this many times within
    /// `failure_window` is used only when no better node is left (Swarm: 5).
    pub max_failures: usize,
    /// How far back failures count (Swarm: 5 minutes). Must not exceed
    /// [`FAILURE_WINDOW`], the horizon [`NodeInfo`] keeps.
    pub failure_window: Duration,
}

impl Default for SpreadOptions {
    fn default() -> Self {
        SpreadOptions {
            max_failures: 5,
            failure_window: FAILURE_WINDOW,
        }
    }
}

/// The decisions for one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPlacement {
    /// (index into the group's tasks, node id), in task order.
    pub assigned: Vec<(usize, String)>,
    /// Indices of the tasks no node could take.
    pub unplaced: Vec<usize>,
    /// Swarm's `no suitable node (...)` for the unplaced tasks; `None` if all placed.
    pub explanation: Option<String>,
}

/// A node's rank in its leaf heap: smaller is better.
type Rank = (usize, usize, usize, String);

#[derive(Debug, Default)]
struct Leaf {
    heap: BinaryHeap<Reverse<(Rank, usize)>>,
}

#[derive(Debug)]
enum Subtree {
    Leaf(Leaf),
    Branches {
        /// (tasks of the service under the branch, branch key, subtree), keyed by
        /// position; `live` holds the positions still usable, as a heap.
        children: Vec<Branch>,
        live: BinaryHeap<Reverse<(usize, usize)>>,
    },
}

#[derive(Debug)]
struct Branch {
    tasks: usize,
    tree: Subtree,
}

/// The value a spread descriptor picks from a node; `None` when the node lacks it.
fn descriptor_value(descriptor: &str, node: &Node) -> Option<String> {
    let d = descriptor.trim();
    let d = d.strip_prefix("spread=").unwrap_or(d);
    if let Some(label) = d
        .get(..NODE_LABEL_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(NODE_LABEL_PREFIX))
    {
        let name = &d[label.len()..];
        return node
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .and_then(|a| a.labels.get(name))
            .cloned();
    }
    if let Some(label) = d
        .get(..ENGINE_LABEL_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(ENGINE_LABEL_PREFIX))
    {
        let name = &d[label.len()..];
        return node
            .description
            .as_ref()
            .and_then(|x| x.engine.as_ref())
            .and_then(|e| e.labels.get(name))
            .cloned();
    }
    None
}

struct Ctx<'a> {
    nodes: &'a mut [NodeInfo],
    pipeline: &'a Pipeline,
    service_id: &'a str,
    penalized: Vec<bool>,
}

impl Ctx<'_> {
    fn rank(&self, i: usize) -> Rank {
        let n = &self.nodes[i];
        (
            usize::from(self.penalized[i]),
            n.service_tasks(self.service_id),
            n.active_tasks,
            n.id.clone(),
        )
    }
}

/// Builds the (sub)tree over `members` (indices of eligible nodes) for `prefs`; a
/// branch's load is the service's tasks on its eligible nodes.
fn build(ctx: &Ctx<'_>, prefs: &[PlacementPreference], members: Vec<usize>) -> Subtree {
    let Some((pref, rest)) = prefs.split_first() else {
        let mut leaf = Leaf::default();
        for i in members {
            leaf.heap.push(Reverse((ctx.rank(i), i)));
        }
        return Subtree::Leaf(leaf);
    };
    // BTreeMap: deterministic branch order; nodes lacking the value sort first (None).
    let mut groups: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for i in members {
        groups
            .entry(descriptor_value(
                &pref.spread_descriptor,
                &ctx.nodes[i].node,
            ))
            .or_default()
            .push(i);
    }
    let mut children = Vec::with_capacity(groups.len());
    let mut live = BinaryHeap::with_capacity(groups.len());
    for (pos, (_, members)) in groups.into_iter().enumerate() {
        let tasks = members
            .iter()
            .map(|i| ctx.nodes[*i].service_tasks(ctx.service_id))
            .sum();
        live.push(Reverse((tasks, pos)));
        children.push(Branch {
            tasks,
            tree: build(ctx, rest, members),
        });
    }
    Subtree::Branches { children, live }
}

/// Places one task under `tree`; returns the node index, or `None` when the subtree
/// has no room left (it is then empty and stays so).
fn place_one(ctx: &mut Ctx<'_>, tree: &mut Subtree, task: &Task) -> Option<usize> {
    match tree {
        Subtree::Leaf(leaf) => {
            while let Some(Reverse((_, i))) = leaf.heap.pop() {
                if ctx.pipeline.check(&ctx.nodes[i]).is_err() {
                    continue; // only ever gets tighter within a group: drop it
                }
                ctx.nodes[i].assign(task);
                let rank = ctx.rank(i);
                leaf.heap.push(Reverse((rank, i)));
                return Some(i);
            }
            None
        }
        Subtree::Branches { children, live } => {
            while let Some(Reverse((tasks, pos))) = live.pop() {
                let branch = &mut children[pos];
                if let Some(i) = place_one(ctx, &mut branch.tree, task) {
                    branch.tasks = tasks + 1;
                    live.push(Reverse((branch.tasks, pos)));
                    return Some(i);
                }
            }
            None
        }
    }
}

/// Places the tasks of one group (same service and spec) on `nodes`, updating the
/// nodes' counts, reservations and ports as it assigns, so the next group sees them.
/// The pipeline is set up from the first task; `now` decides which failures are
/// recent.
pub fn schedule_group(
    tasks: &[Task],
    nodes: &mut [NodeInfo],
    now: SystemTime,
    opts: &SpreadOptions,
) -> GroupPlacement {
    let Some(first) = tasks.first() else {
        return GroupPlacement::default();
    };
    let pipeline = Pipeline::for_task(first);
    let service_id = first.service_id.clone();
    let prefs: Vec<PlacementPreference> = first
        .spec
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map(|p| p.preferences.clone())
        .unwrap_or_default();

    let penalized = nodes
        .iter()
        .map(|n| {
            let recent = n.recent_failures.get(&service_id).map_or(0, |times| {
                times
                    .iter()
                    .filter(|t| {
                        now.duration_since(**t)
                            .map_or(true, |age| age <= opts.failure_window)
                    })
                    .count()
            });
            recent >= opts.max_failures.max(1)
        })
        .collect();
    let eligible: Vec<usize> = (0..nodes.len())
        .filter(|i| pipeline.check(&nodes[*i]).is_ok())
        .collect();

    let mut ctx = Ctx {
        nodes,
        pipeline: &pipeline,
        service_id: &service_id,
        penalized,
    };
    let mut tree = build(&ctx, &prefs, eligible);

    let mut out = GroupPlacement::default();
    for (idx, task) in tasks.iter().enumerate() {
        match place_one(&mut ctx, &mut tree, task) {
            Some(i) => out.assigned.push((idx, ctx.nodes[i].id.clone())),
            None => out.unplaced.push(idx),
        }
    }
    if !out.unplaced.is_empty() {
        let failures = pipeline.failures(ctx.nodes.iter());
        out.explanation = Some(explain(&failures, ctx.nodes.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::test_support::{constrain, label, node, pending_task, reserve, task_on};
    use shoal_proto::v1::{TaskState, node_spec::Availability};
    use std::collections::HashMap;

    fn group(n: usize, svc: &str) -> Vec<Task> {
        (0..n)
            .map(|i| pending_task(&format!("t{i}"), svc))
            .collect()
    }

    fn per_node(p: &GroupPlacement) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (_, n) in &p.assigned {
            *m.entry(n.clone()).or_default() += 1;
        }
        m
    }

    fn infos(ids: &[&str]) -> Vec<NodeInfo> {
        ids.iter().map(|id| NodeInfo::new(node(id), &[])).collect()
    }

    #[test]
    fn spreads_evenly_over_three_nodes() {
        let mut nodes = infos(&["c", "a", "b"]);
        let p = schedule_group(
            &group(10, "svc"),
            &mut nodes,
            SystemTime::now(),
            &SpreadOptions::default(),
        );
        assert!(p.unplaced.is_empty());
        assert_eq!(p.explanation, None);
        let m = per_node(&p);
        assert_eq!((m["a"], m["b"], m["c"]), (4, 3, 3));
        assert_eq!(
            p.assigned.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(
            nodes.iter().map(|n| n.service_tasks("svc")).sum::<usize>(),
            10
        );
    }

    #[test]
    fn existing_tasks_are_balanced_first() {
        let now = SystemTime::now();
        let existing = vec![
            task_on("x1", "svc", "a", TaskState::Running, now),
            task_on("x2", "svc", "a", TaskState::Running, now),
            task_on("y1", "other", "b", TaskState::Running, now),
        ];
        let mut nodes: Vec<NodeInfo> = ["a", "b", "c"]
            .iter()
            .map(|id| NodeInfo::new(node(id), &existing))
            .collect();
        let p = schedule_group(&group(3, "svc"), &mut nodes, now, &SpreadOptions::default());
        // b and c have no svc tasks; c has fewer tasks overall so goes first, then b,
        // then c again (fewer overall than b); a already has 2 of the service.
        let order: Vec<&str> = p.assigned.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(order, ["c", "b", "c"]);
    }

    #[test]
    fn zone_preference_spreads_across_values_not_nodes() {
        let mut ns = vec![label(node("a1"), "zone", "a")];
        for id in ["b1", "b2", "b3"] {
            ns.push(label(node(id), "zone", "b"));
        }
        ns.push(node("nolabel"));
        let mut nodes: Vec<NodeInfo> = ns.into_iter().map(|n| NodeInfo::new(n, &[])).collect();
        let mut tasks = group(9, "svc");
        for t in &mut tasks {
            if let Some(pl) = t.spec.as_mut().and_then(|s| s.placement.as_mut()) {
                pl.preferences = vec![PlacementPreference {
                    spread_descriptor: "node.labels.zone".into(),
                }];
            }
        }
        let p = schedule_group(
            &tasks,
            &mut nodes,
            SystemTime::now(),
            &SpreadOptions::default(),
        );
        assert!(p.unplaced.is_empty());
        let m = per_node(&p);
        assert_eq!(m["a1"], 3);
        assert_eq!(m["b1"] + m["b2"] + m["b3"], 3);
        assert_eq!((m["b1"], m["b2"], m["b3"]), (1, 1, 1));
        assert_eq!(m["nolabel"], 3);
    }

    #[test]
    fn resource_exhaustion_leaves_tasks_unplaced() {
        let mut nodes = infos(&["a", "b", "c"]); // 4 CPUs each
        if let Some(s) = nodes[2].node.spec.as_mut() {
            s.availability = Availability::Drain as i32;
        }
        let mut tasks = group(6, "svc");
        for t in &mut tasks {
            reserve(t, 3_000_000_000, 0);
        }
        let p = schedule_group(
            &tasks,
            &mut nodes,
            SystemTime::now(),
            &SpreadOptions::default(),
        );
        assert_eq!(p.assigned.len(), 2);
        assert_eq!(p.unplaced, vec![2, 3, 4, 5]);
        assert_eq!(
            p.explanation.as_deref(),
            Some(
                "no suitable node (insufficient resources on 2 nodes; 1 node not available for new tasks)"
            )
        );
        let m = per_node(&p);
        assert_eq!((m["a"], m["b"]), (1, 1));
    }

    #[test]
    fn impossible_constraint_and_no_nodes() {
        let mut nodes = infos(&["a", "b"]);
        let mut tasks = group(2, "svc");
        for t in &mut tasks {
            constrain(t, &["node.labels.gpu==true"]);
        }
        let p = schedule_group(
            &tasks,
            &mut nodes,
            SystemTime::now(),
            &SpreadOptions::default(),
        );
        assert_eq!(p.unplaced, vec![0, 1]);
        assert_eq!(
            p.explanation.as_deref(),
            Some("no suitable node (scheduling constraints not satisfied on 2 nodes)")
        );
        let p = schedule_group(
            &tasks,
            &mut [],
            SystemTime::now(),
            &SpreadOptions::default(),
        );
        assert_eq!(p.explanation.as_deref(), Some("no suitable node"));
        assert_eq!(
            schedule_group(
                &[],
                &mut nodes,
                SystemTime::now(),
                &SpreadOptions::default()
            ),
            GroupPlacement::default()
        );
    }

    #[test]
    fn max_replicas_per_node() {
        let mut nodes = infos(&["a", "b"]);
        let mut tasks = group(5, "svc");
        for t in &mut tasks {
            if let Some(pl) = t.spec.as_mut().and_then(|s| s.placement.as_mut()) {
                pl.max_replicas = 2;
            }
        }
        let p = schedule_group(
            &tasks,
            &mut nodes,
            SystemTime::now(),
            &SpreadOptions::default(),
        );
        assert_eq!(p.assigned.len(), 4);
        assert_eq!(p.unplaced, vec![4]);
        assert_eq!(
            p.explanation.as_deref(),
            Some("no suitable node (max replicas per node limit exceed)")
        );
    }

    #[test]
    fn recently_failed_node_is_avoided() {
        let now = SystemTime::now();
        let mut nodes = infos(&["a", "b", "c"]);
        for _ in 0..5 {
            nodes[0].record_failure("svc", now - Duration::from_secs(30));
        }
        // failures of another service or long ago do not count
        for _ in 0..5 {
            nodes[1].record_failure("other", now);
            nodes[2].record_failure("svc", now - Duration::from_secs(600));
        }
        let p = schedule_group(&group(4, "svc"), &mut nodes, now, &SpreadOptions::default());
        let m = per_node(&p);
        assert_eq!(m.get("a"), None);
        assert_eq!((m["b"], m["c"]), (2, 2));
        // with nowhere else to go the failing node is still used
        let mut only = infos(&["a"]);
        for _ in 0..5 {
            only[0].record_failure("svc", now);
        }
        let p = schedule_group(&group(1, "svc"), &mut only, now, &SpreadOptions::default());
        assert_eq!(p.assigned, vec![(0, "a".to_string())]);
    }

    #[test]
    fn deterministic() {
        let run = || {
            let mut nodes: Vec<NodeInfo> = (0..20)
                .map(|i| {
                    NodeInfo::new(
                        label(node(&format!("n{i:02}")), "zone", &format!("z{}", i % 3)),
                        &[],
                    )
                })
                .collect();
            let mut tasks = group(47, "svc");
            for t in &mut tasks {
                if let Some(pl) = t.spec.as_mut().and_then(|s| s.placement.as_mut()) {
                    pl.preferences = vec![PlacementPreference {
                        spread_descriptor: "node.labels.zone".into(),
                    }];
                }
            }
            schedule_group(
                &tasks,
                &mut nodes,
                SystemTime::UNIX_EPOCH,
                &SpreadOptions::default(),
            )
        };
        let first = run();
        for _ in 0..5 {
            assert_eq!(run(), first);
        }
    }

    #[test]
    fn large_groups_are_fast_and_even() {
        let mut nodes: Vec<NodeInfo> = (0..1_000)
            .map(|i| {
                NodeInfo::new(
                    label(node(&format!("n{i:04}")), "zone", &format!("z{}", i % 7)),
                    &[],
                )
            })
            .collect();
        let mut tasks = group(5_000, "svc");
        for t in &mut tasks {
            if let Some(pl) = t.spec.as_mut().and_then(|s| s.placement.as_mut()) {
                pl.preferences = vec![PlacementPreference {
                    spread_descriptor: "node.labels.zone".into(),
                }];
            }
        }
        let started = std::time::Instant::now();
        let p = schedule_group(
            &tasks,
            &mut nodes,
            SystemTime::now(),
            &SpreadOptions::default(),
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(p.assigned.len(), 5_000);
        let counts: Vec<usize> = nodes.iter().map(|n| n.service_tasks("svc")).collect();
        let (min, max) = (counts.iter().min().copied(), counts.iter().max().copied());
        assert!(
            max.zip(min).is_some_and(|(mx, mn)| mx - mn <= 2),
            "{min:?}..{max:?}"
        );
    }
}
