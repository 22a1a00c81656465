//! The filter pipeline: the checks a node must pass to receive a task, in Swarm's
//! order, and the explanation of why a task found no node.

use std::fmt;

use shoal_proto::v1::executor_description::Kind;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{Platform, Resources, Task, node_spec::Availability, node_status::State};

use super::constraint::{self, Constraint, ConstraintError};
use super::node_info::{HostPort, NodeInfo, task_host_ports, task_reservations};

/// One filter of the pipeline; the order of the variants is the order they run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilterKind {
    /// Status READY and availability ACTIVE.
    Ready,
    /// CPU / memory reservations fit the node's available resources.
    Resources,
    /// `--constraint`s hold.
    Constraints,
    /// The node's platform is one of `placement.platforms`.
    Platform,
    /// The node offers an executor for the task's runtime.
    Executor,
    /// No live task on the node holds one of the task's host-mode ports.
    HostPort,
    /// `--replicas-max-per-node`.
    MaxReplicas,
}

impl FilterKind {
    /// Every filter, in pipeline order.
    pub const ALL: [FilterKind; 7] = [
        FilterKind::Ready,
        FilterKind::Resources,
        FilterKind::Constraints,
        FilterKind::Platform,
        FilterKind::Executor,
        FilterKind::HostPort,
        FilterKind::MaxReplicas,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Swarm's explanation of this filter failing on `nodes` nodes.
    pub fn explain(self, nodes: usize) -> String {
        let on = if nodes == 1 {
            "on 1 node".to_string()
        } else {
            format!("on {nodes} nodes")
        };
        match self {
            FilterKind::Ready if nodes == 1 => "1 node not available for new tasks".into(),
            FilterKind::Ready => format!("{nodes} nodes not available for new tasks"),
            FilterKind::Resources => format!("insufficient resources {on}"),
            FilterKind::Constraints => format!("scheduling constraints not satisfied {on}"),
            FilterKind::Platform => format!("unsupported platform {on}"),
            FilterKind::Executor => format!("no executor for the task's runtime {on}"),
            FilterKind::HostPort => format!("host-mode port already in use {on}"),
            FilterKind::MaxReplicas => "max replicas per node limit exceed".into(),
        }
    }
}

/// How many nodes each filter turned away (each node counts for its first failure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    counts: [usize; FilterKind::ALL.len()],
}

impl Failures {
    /// Counts one node turned away by `kind`.
    pub fn add(&mut self, kind: FilterKind) {
        self.counts[kind.index()] += 1;
    }

    /// Nodes turned away by `kind`.
    pub fn count(&self, kind: FilterKind) -> usize {
        self.counts[kind.index()]
    }

    /// Nodes turned away by any filter.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// No node was turned away.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// Swarm's task error for a task that found no node among `total` nodes:
/// `no suitable node (insufficient resources on 2 nodes; 1 node not available for new
/// tasks)`, filters with the most failures first (pipeline order among equals), and
/// plain `no suitable node` when no filter failed (e.g. no nodes at all).
pub fn explain(failures: &Failures, total: usize) -> String {
    let mut kinds: Vec<(FilterKind, usize)> = FilterKind::ALL
        .iter()
        .map(|k| (*k, failures.count(*k)))
        .filter(|(_, c)| *c > 0)
        .collect();
    if kinds.is_empty() || total == 0 {
        return "no suitable node".to_string();
    }
    // Stable: equal counts keep pipeline order.
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    let parts: Vec<String> = kinds.iter().map(|(k, c)| k.explain(*c)).collect();
    format!("no suitable node ({})", parts.join("; "))
}

/// The filters set up for one task (and so for every task of its group).
#[derive(Debug, Clone)]
pub struct Pipeline {
    service_id: String,
    reservations: Resources,
    constraints: Result<Vec<Constraint>, ConstraintError>,
    platforms: Vec<Platform>,
    executor: Option<Kind>,
    host_ports: Vec<HostPort>,
    max_replicas: u64,
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipeline for service {}", self.service_id)
    }
}

fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

impl Pipeline {
    /// Sets the filters up for `task`. A constraint that does not parse (the manager
    /// refuses those, so only old or hand-written specs) fails the constraint filter
    /// on every node rather than being ignored.
    pub fn for_task(task: &Task) -> Pipeline {
        let spec = task.spec.as_ref();
        let placement = spec.and_then(|s| s.placement.as_ref());
        let constraints =
            placement.map_or_else(|| Ok(Vec::new()), |p| constraint::parse_all(&p.constraints));
        let executor = spec.and_then(|s| s.runtime.as_ref()).map(|r| match r {
            Runtime::Container(_) => Kind::Docker,
            Runtime::Process(_) => Kind::Process,
        });
        Pipeline {
            service_id: task.service_id.clone(),
            reservations: task_reservations(task),
            constraints,
            platforms: placement.map(|p| p.platforms.clone()).unwrap_or_default(),
            executor,
            host_ports: task_host_ports(task).collect(),
            max_replicas: placement.map_or(0, |p| p.max_replicas),
        }
    }

    /// The service the pipeline was set up for.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The constraint error of the task's spec, if its constraints did not parse.
    pub fn constraint_error(&self) -> Option<&ConstraintError> {
        self.constraints.as_ref().err()
    }

    /// Runs the filters in order; the first that fails is the answer.
    pub fn check(&self, info: &NodeInfo) -> Result<(), FilterKind> {
        for kind in FilterKind::ALL {
            if !self.passes(kind, info) {
                return Err(kind);
            }
        }
        Ok(())
    }

    /// Does `info` pass the one filter `kind`?
    pub fn passes(&self, kind: FilterKind, info: &NodeInfo) -> bool {
        let node = &info.node;
        match kind {
            FilterKind::Ready => {
                let ready = node.status.as_ref().map(|s| s.state()) == Some(State::Ready);
                let active = node
                    .spec
                    .as_ref()
                    .map_or(Availability::Active, |s| s.availability())
                    == Availability::Active;
                ready && active
            }
            FilterKind::Resources => {
                let want = self.reservations;
                if want.nano_cpus <= 0 && want.memory_bytes <= 0 {
                    return true;
                }
                let avail = info.available();
                want.nano_cpus <= avail.nano_cpus && want.memory_bytes <= avail.memory_bytes
            }
            FilterKind::Constraints => match &self.constraints {
                Ok(cs) => constraint::matches_all(cs, node),
                Err(_) => false,
            },
            FilterKind::Platform => {
                if self.platforms.is_empty() {
                    return true;
                }
                let np = node
                    .description
                    .as_ref()
                    .and_then(|d| d.platform.clone())
                    .unwrap_or_default();
                self.platforms.iter().any(|p| {
                    (p.architecture.is_empty()
                        || normalize_arch(&p.architecture) == normalize_arch(&np.architecture))
                        && (p.os.is_empty() || p.os.eq_ignore_ascii_case(&np.os))
                })
            }
            FilterKind::Executor => match self.executor {
                None => true,
                Some(kind) => node
                    .description
                    .as_ref()
                    .is_some_and(|d| d.executors.iter().any(|e| e.kind() == kind)),
            },
            FilterKind::HostPort => self.host_ports.iter().all(|p| !info.host_ports.contains(p)),
            FilterKind::MaxReplicas => {
                self.max_replicas == 0
                    || (info.service_tasks(&self.service_id) as u64) < self.max_replicas
            }
        }
    }

    /// Runs every node through the pipeline and counts the failures.
    pub fn failures<'a>(&self, nodes: impl IntoIterator<Item = &'a NodeInfo>) -> Failures {
        let mut f = Failures::default();
        for n in nodes {
            if let Err(kind) = self.check(n) {
                f.add(kind);
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::test_support::{node, pending_task, task_on};
    use shoal_proto::v1::port_config::PublishMode;
    use shoal_proto::v1::{Endpoint, PortConfig, ProcessSpec, TaskState};
    use std::time::SystemTime;

    fn info(n: shoal_proto::v1::Node) -> NodeInfo {
        NodeInfo::new(n, &[])
    }

    #[test]
    fn ready_filter() {
        let t = pending_task("t", "svc");
        let p = Pipeline::for_task(&t);
        assert_eq!(p.check(&info(node("a"))), Ok(()));
        let mut down = node("b");
        if let Some(s) = down.status.as_mut() {
            s.state = State::Down as i32;
        }
        assert_eq!(p.check(&info(down)), Err(FilterKind::Ready));
        for av in [Availability::Pause, Availability::Drain] {
            let mut n = node("c");
            if let Some(s) = n.spec.as_mut() {
                s.availability = av as i32;
            }
            assert_eq!(p.check(&info(n)), Err(FilterKind::Ready));
        }
    }

    #[test]
    fn resources_filter() {
        let mut t = pending_task("t", "svc");
        crate::placement::test_support::reserve(&mut t, 3_000_000_000, 1 << 30);
        let p = Pipeline::for_task(&t);
        let mut i = info(node("a")); // 4 CPUs, 8 GiB
        assert_eq!(p.check(&i), Ok(()));
        i.assign(&t);
        assert_eq!(p.check(&i), Err(FilterKind::Resources));
        // no reservation: always fits, even on a full node
        let p0 = Pipeline::for_task(&pending_task("u", "svc"));
        assert_eq!(p0.check(&i), Ok(()));
    }

    #[test]
    fn constraint_filter() {
        let mut t = pending_task("t", "svc");
        crate::placement::test_support::constrain(&mut t, &["node.role==manager"]);
        let p = Pipeline::for_task(&t);
        assert_eq!(p.check(&info(node("a"))), Err(FilterKind::Constraints));
        let mut m = node("m");
        m.role = shoal_proto::v1::NodeRole::Manager as i32;
        assert_eq!(p.check(&info(m)), Ok(()));

        let mut bad = pending_task("t", "svc");
        crate::placement::test_support::constrain(&mut bad, &["node.colour==red"]);
        let p = Pipeline::for_task(&bad);
        assert!(p.constraint_error().is_some());
        assert_eq!(p.check(&info(node("a"))), Err(FilterKind::Constraints));
    }

    #[test]
    fn platform_filter() {
        let mut t = pending_task("t", "svc");
        if let Some(pl) = t.spec.as_mut().and_then(|s| s.placement.as_mut()) {
            pl.platforms = vec![Platform {
                architecture: "x86_64".into(),
                os: "linux".into(),
            }];
        }
        let p = Pipeline::for_task(&t);
        assert_eq!(p.check(&info(node("a"))), Ok(())); // amd64/linux
        let mut arm = node("b");
        if let Some(pl) = arm.description.as_mut().and_then(|d| d.platform.as_mut()) {
            pl.architecture = "aarch64".into();
        }
        assert_eq!(p.check(&info(arm)), Err(FilterKind::Platform));
    }

    #[test]
    fn executor_filter() {
        let container = pending_task("t", "svc"); // container runtime
        let mut process = pending_task("u", "svc");
        if let Some(s) = process.spec.as_mut() {
            s.runtime = Some(Runtime::Process(ProcessSpec {
                command: vec!["sleep".into()],
                ..Default::default()
            }));
        }
        let mut docker_only = node("d");
        if let Some(d) = docker_only.description.as_mut() {
            d.executors.retain(|e| e.kind() == Kind::Docker);
        }
        let mut process_only = node("p");
        if let Some(d) = process_only.description.as_mut() {
            d.executors.retain(|e| e.kind() == Kind::Process);
        }
        let pc = Pipeline::for_task(&container);
        let pp = Pipeline::for_task(&process);
        assert_eq!(pc.check(&info(docker_only.clone())), Ok(()));
        assert_eq!(
            pc.check(&info(process_only.clone())),
            Err(FilterKind::Executor)
        );
        assert_eq!(pp.check(&info(process_only)), Ok(()));
        assert_eq!(pp.check(&info(docker_only)), Err(FilterKind::Executor));
    }

    #[test]
    fn host_port_filter() {
        let host_port = |port| Endpoint {
            ports: vec![PortConfig {
                target_port: 80,
                published_port: port,
                publish_mode: PublishMode::Host as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut running = task_on("r", "other", "a", TaskState::Running, SystemTime::now());
        running.endpoint = Some(host_port(8080));
        let i = NodeInfo::new(node("a"), &[running]);
        let mut t = pending_task("t", "svc");
        t.endpoint = Some(host_port(8080));
        assert_eq!(Pipeline::for_task(&t).check(&i), Err(FilterKind::HostPort));
        t.endpoint = Some(host_port(8081));
        assert_eq!(Pipeline::for_task(&t).check(&i), Ok(()));
    }

    #[test]
    fn max_replicas_filter() {
        let mut t = pending_task("t", "svc");
        if let Some(pl) = t.spec.as_mut().and_then(|s| s.placement.as_mut()) {
            pl.max_replicas = 2;
        }
        let p = Pipeline::for_task(&t);
        let mut i = info(node("a"));
        i.assign(&t);
        assert_eq!(p.check(&i), Ok(()));
        i.assign(&t);
        assert_eq!(p.check(&i), Err(FilterKind::MaxReplicas));
    }

    #[test]
    fn explanation_format() {
        let mut f = Failures::default();
        assert_eq!(explain(&f, 3), "no suitable node");
        f.add(FilterKind::Ready);
        f.add(FilterKind::Resources);
        f.add(FilterKind::Resources);
        assert_eq!(
            explain(&f, 3),
            "no suitable node (insufficient resources on 2 nodes; 1 node not available for new tasks)"
        );
        let mut g = Failures::default();
        g.add(FilterKind::Constraints);
        g.add(FilterKind::Ready);
        g.add(FilterKind::MaxReplicas);
        g.add(FilterKind::HostPort);
        g.add(FilterKind::HostPort);
        assert_eq!(
            explain(&g, 5),
            "no suitable node (host-mode port already in use on 2 nodes; \
             1 node not available for new tasks; scheduling constraints not satisfied on 1 node; \
             max replicas per node limit exceed)"
        );
        assert_eq!(explain(&Failures::default(), 0), "no suitable node");
        assert_eq!(
            FilterKind::Ready.explain(2),
            "2 nodes not available for new tasks"
        );
        assert_eq!(
            FilterKind::Platform.explain(1),
            "unsupported platform on 1 node"
        );
        assert_eq!(g.total(), 5);
    }
}
