//! Placement decisions, as a pure library: no I/O, no clock (callers pass `now`).
//!
//! The pipeline for a group of pending tasks of one service and spec version:
//!
//! 1. [`node_info::NodeInfo`] per node: the node plus what its live tasks hold —
//!    reserved CPU/memory, host-mode published ports, active tasks per service — and
//!    the recent failures of each service on it.
//! 2. [`filter::Pipeline`], set up from the group's first task, runs Swarm's filters in
//!    order (ready & active, resources, [`constraint`]s, platform, executor for the
//!    runtime, host-mode ports, max replicas per node); a node's first failing filter
//!    is counted against it.
//! 3. [`spread::schedule_group`] arranges the nodes that pass in a tree by placement
//!    preference and assigns the tasks one by one down the least-loaded branch to the
//!    best node of a heap (fewest tasks of this service, then fewest tasks, nodes with
//!    many recent failures of this service last, node id as the tie-break), updating
//!    the counts as it goes.
//! 4. Tasks left over get [`filter::explain`]'s `no suitable node (...)`, built from
//!    the filter failures over every node after the group's assignments.

pub mod constraint;
pub mod filter;
pub mod node_info;
pub mod spread;

pub use constraint::{
    Constraint, ConstraintError, ConstraintKey, Operator, parse as parse_constraint,
};
pub use filter::{Failures, FilterKind, Pipeline, explain};
pub use node_info::{FAILURE_WINDOW, NodeInfo};
pub use spread::{GroupPlacement, SpreadOptions, schedule_group};

#[cfg(test)]
pub(crate) mod test_support;
