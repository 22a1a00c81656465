//! What the scheduler knows about one node while placing: the node itself plus what
//! its live tasks hold (reserved resources, host-mode ports, counts per service) and
//! the recent failures of each service on it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use shoal_proto::v1::port_config::PublishMode;
use shoal_proto::v1::{Node, Resources, Task, TaskState};

/// How far back a failure of a service on a node counts against the node (Swarm's
/// `monitorFailures`).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);

/// A host-mode published port: (protocol as its proto number, published port).
pub type HostPort = (i32, u32);

/// A node and the load its tasks put on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's id (`meta.id`), empty if the node has no meta.
    pub id: String,
    pub node: Node,
    /// Reservations of tasks that hold the node (not yet terminal).
    pub reserved: Resources,
    /// Tasks on the node that are not terminal and desired to run.
    pub active_tasks: usize,
    /// `active_tasks` per service id.
    pub tasks_by_service: HashMap<String, usize>,
    /// Failure / rejection times of each service's tasks on this node.
    pub recent_failures: HashMap<String, VecDeque<SystemTime>>,
    /// Host-mode published ports held by the node's live tasks.
    pub host_ports: HashSet<HostPort>,
}

/// Is the task holding its node, i.e. assigned and not yet terminal? A task still
/// PENDING on a node (a global task preset to it) holds nothing until it is placed
/// (Swarm's preassigned tasks).
fn is_live(task: &Task) -> bool {
    let state = task.status.as_ref().map_or(TaskState::New, |s| s.state());
    (TaskState::Assigned as i32..=TaskState::Running as i32).contains(&(state as i32))
}

fn is_failure(task: &Task) -> bool {
    matches!(
        task.status.as_ref().map(|s| s.state()),
        Some(TaskState::Failed | TaskState::Rejected)
    )
}

/// The host-mode ports a task publishes (after allocation, falling back to its spec).
pub fn task_host_ports(task: &Task) -> impl Iterator<Item = HostPort> + '_ {
    let endpoint = task.endpoint.as_ref();
    let ports = endpoint
        .map(|e| {
            if e.ports.is_empty() {
                e.spec.as_ref().map_or(&[][..], |s| &s.ports[..])
            } else {
                &e.ports[..]
            }
        })
        .unwrap_or(&[]);
    ports
        .iter()
        .filter(|p| p.publish_mode() == PublishMode::Host && p.published_port != 0)
        .map(|p| (p.protocol, p.published_port))
}

/// A task's reservations, zero when it has none.
pub fn task_reservations(task: &Task) -> Resources {
    task.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.reservations)
        .unwrap_or_default()
}

impl NodeInfo {
    /// Builds the info of `node` from tasks; tasks on other nodes are ignored, so the
    /// caller may pass every task it knows.
    pub fn new<'a>(node: Node, tasks: impl IntoIterator<Item = &'a Task>) -> NodeInfo {
        let id = node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        let mut info = NodeInfo {
            id,
            node,
            reserved: Resources::default(),
            active_tasks: 0,
            tasks_by_service: HashMap::new(),
            recent_failures: HashMap::new(),
            host_ports: HashSet::new(),
        };
        for t in tasks {
            if !info.id.is_empty() && t.node_id == info.id {
                info.add_task(t);
            }
        }
        for times in info.recent_failures.values_mut() {
            times.make_contiguous().sort();
        }
        info
    }

    /// Accounts a task already on this node (its state decides what it holds).
    pub fn add_task(&mut self, task: &Task) {
        if is_live(task) {
            self.hold(task);
        } else if is_failure(task) {
            let when = task
                .status
                .as_ref()
                .and_then(|s| s.timestamp)
                .and_then(|ts| SystemTime::try_from(ts).ok());
            if let Some(when) = when {
                self.record_failure(&task.service_id, when);
            }
        }
    }

    /// Accounts a task the scheduler has just decided to place here.
    pub fn assign(&mut self, task: &Task) {
        self.hold(task);
    }

    fn hold(&mut self, task: &Task) {
        let r = task_reservations(task);
        self.reserved.nano_cpus = self.reserved.nano_cpus.saturating_add(r.nano_cpus.max(0));
        self.reserved.memory_bytes = self
            .reserved
            .memory_bytes
            .saturating_add(r.memory_bytes.max(0));
        self.host_ports.extend(task_host_ports(task));
        if task.desired_state <= TaskState::Running as i32 {
            self.active_tasks += 1;
            *self
                .tasks_by_service
                .entry(task.service_id.clone())
                .or_default() += 1;
        }
    }

    /// Notes that a task of `service_id` failed on this node at `when`.
    pub fn record_failure(&mut self, service_id: &str, when: SystemTime) {
        self.recent_failures
            .entry(service_id.to_string())
            .or_default()
            .push_back(when);
    }

    /// Failures of `service_id` on this node within [`FAILURE_WINDOW`] before `now`.
    pub fn recent_failure_count(&self, service_id: &str, now: SystemTime) -> usize {
        self.recent_failures.get(service_id).map_or(0, |times| {
            times
                .iter()
                .filter(|t| {
                    now.duration_since(**t)
                        .map_or(true, |age| age <= FAILURE_WINDOW)
                })
                .count()
        })
    }

    /// Forgets failures older than [`FAILURE_WINDOW`].
    pub fn expire_failures(&mut self, now: SystemTime) {
        self.recent_failures.retain(|_, times| {
            times.retain(|t| {
                now.duration_since(*t)
                    .map_or(true, |age| age <= FAILURE_WINDOW)
            });
            !times.is_empty()
        });
    }

    /// Active tasks of `service_id` on this node.
    pub fn service_tasks(&self, service_id: &str) -> usize {
        self.tasks_by_service.get(service_id).copied().unwrap_or(0)
    }

    /// The node's capacity minus what its live tasks reserve (never negative).
    pub fn available(&self) -> Resources {
        let total = self
            .node
            .description
            .as_ref()
            .and_then(|d| d.resources)
            .unwrap_or_default();
        Resources {
            nano_cpus: total
                .nano_cpus
                .saturating_sub(self.reserved.nano_cpus)
                .max(0),
            memory_bytes: total
                .memory_bytes
                .saturating_sub(self.reserved.memory_bytes)
                .max(0),
            pids: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::test_support::{node, task_on};
    use shoal_proto::v1::{Endpoint, PortConfig};

    #[test]
    fn accounts_live_tasks_only() {
        let n = node("n1");
        let now = SystemTime::now();
        let mut running = task_on("t1", "svc", "n1", TaskState::Running, now);
        if let Some(r) = running
            .spec
            .as_mut()
            .and_then(|s| s.resources.as_mut())
            .and_then(|r| r.reservations.as_mut())
        {
            r.nano_cpus = 1_000_000_000;
            r.memory_bytes = 1 << 30;
        }
        running.endpoint = Some(Endpoint {
            ports: vec![
                PortConfig {
                    published_port: 8080,
                    target_port: 80,
                    publish_mode: PublishMode::Host as i32,
                    ..Default::default()
                },
                PortConfig {
                    published_port: 9090,
                    target_port: 90,
                    publish_mode: PublishMode::Ingress as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let tasks = vec![
            running,
            task_on("t2", "svc", "n1", TaskState::Assigned, now),
            task_on("t3", "other", "n1", TaskState::Starting, now),
            task_on("t4", "svc", "n1", TaskState::Complete, now),
            task_on("t5", "svc", "n1", TaskState::Failed, now),
            task_on("t6", "svc", "n2", TaskState::Running, now),
            task_on("t7", "svc", "n1", TaskState::Pending, now),
        ];
        let info = NodeInfo::new(n, &tasks);
        assert_eq!(info.id, "n1");
        assert_eq!(info.active_tasks, 3);
        assert_eq!(info.service_tasks("svc"), 2);
        assert_eq!(info.service_tasks("other"), 1);
        assert_eq!(info.service_tasks("none"), 0);
        assert_eq!(info.recent_failure_count("svc", now), 1);
        assert_eq!(
            info.recent_failure_count("svc", now + FAILURE_WINDOW * 2),
            0
        );
        assert!(info.host_ports.contains(&(0, 8080)));
        assert!(!info.host_ports.contains(&(0, 9090)));
        let avail = info.available();
        assert_eq!(avail.nano_cpus, 4_000_000_000 - 1_000_000_000);
        assert_eq!(avail.memory_bytes, (8 << 30) - (1 << 30));
    }

    #[test]
    fn available_never_negative_and_expiry() {
        let mut info = NodeInfo::new(node("n1"), &[]);
        info.reserved.nano_cpus = i64::MAX;
        assert_eq!(info.available().nano_cpus, 0);
        let now = SystemTime::now();
        info.record_failure("s", now - FAILURE_WINDOW * 2);
        info.record_failure("s", now);
        assert_eq!(info.recent_failure_count("s", now), 1);
        info.expire_failures(now);
        assert_eq!(info.recent_failures.get("s").map(VecDeque::len), Some(1));
    }
}
