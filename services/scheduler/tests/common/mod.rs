//! A real etcd + NATS with schedulers running as libraries, and builders for the
//! nodes and tasks the tests write straight into the store.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use shoal_events::EventBus;
use shoal_grpc_host::{ClusterState, ShutdownToken};
use shoal_proto::v1::executor_description::Kind as ExecutorKind;
use shoal_proto::v1::node_spec::Availability;
use shoal_proto::v1::node_status::State as NodeState;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{
    Annotations, ContainerSpec, ExecutorDescription, Meta, Node, NodeDescription, NodeRole,
    NodeSpec, NodeStatus, Placement, Platform, ResourceRequirements, Resources, Task, TaskSpec,
    TaskState, TaskStatus, TraceContext, Version,
};
use shoal_scheduler::{Scheduler, SchedulerOptions};
use shoal_store::{Object, Store};
use shoal_testkit::Infra;

pub const DEADLINE: Duration = Duration::from_secs(20);
pub const GIB: i64 = 1 << 30;
pub const CPU: i64 = 1_000_000_000;

pub struct Cluster {
    pub infra: Infra,
    pub store: Store,
    pub bus: EventBus,
    pub shutdown: ShutdownToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Cluster> {
        let infra = Infra::start().await?;
        let store = Store::connect(&[infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;
        let bus = EventBus::connect(&infra.nats.url(), "scheduler-test").await?;
        Ok(Cluster {
            infra,
            store,
            bus,
            shutdown: ShutdownToken::new(),
        })
    }

    /// A scheduler with its own etcd and NATS connections.
    pub async fn scheduler(&self) -> anyhow::Result<Scheduler> {
        let store =
            Store::connect(&[self.infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;
        let bus = EventBus::connect(&self.infra.nats.url(), "shoal-scheduler").await?;
        let options = SchedulerOptions {
            // Long enough that the tests exercise the hints and cache events, not the scan.
            scan_interval: Duration::from_secs(30),
            ..SchedulerOptions::default()
        };
        Ok(Scheduler::start(ClusterState { store, bus }, options, self.shutdown.clone()).await?)
    }

    pub async fn add_node(&self, node: Node) -> anyhow::Result<Node> {
        Ok(self.store.create(node).await?)
    }

    pub async fn add_tasks(&self, tasks: Vec<Task>) -> anyhow::Result<Vec<Task>> {
        self.store
            .create_many(tasks)
            .await
            .into_iter()
            .map(|r| r.map_err(anyhow::Error::from))
            .collect()
    }

    /// The service's tasks as stored.
    pub async fn tasks(&self, service_id: &str) -> anyhow::Result<Vec<Task>> {
        Ok(self.store.tasks_by_service(service_id).await?.objects)
    }

    /// Waits until `cond` holds for the service's stored tasks, returns them.
    pub async fn wait_tasks(
        &self,
        what: &str,
        service_id: &str,
        cond: impl Fn(&[Task]) -> bool,
    ) -> anyhow::Result<Vec<Task>> {
        shoal_testkit::wait_for(what, DEADLINE, || async {
            let tasks = self.tasks(service_id).await.ok()?;
            cond(&tasks).then_some(tasks)
        })
        .await
    }

    /// Waits until every task of the service is ASSIGNED.
    pub async fn wait_assigned(&self, service_id: &str, n: usize) -> anyhow::Result<Vec<Task>> {
        self.wait_tasks(
            &format!("{n} tasks of {service_id} assigned"),
            service_id,
            |ts| ts.len() == n && ts.iter().all(|t| state(t) == TaskState::Assigned),
        )
        .await
    }

    /// Waits until `n` tasks are assigned and the others carry an explanation.
    pub async fn wait_settled(
        &self,
        service_id: &str,
        total: usize,
        assigned: usize,
    ) -> anyhow::Result<Vec<Task>> {
        self.wait_tasks(
            &format!("{assigned} of {total} tasks of {service_id} assigned, the rest explained"),
            service_id,
            |ts| {
                ts.len() == total
                    && ts
                        .iter()
                        .filter(|t| state(t) == TaskState::Assigned)
                        .count()
                        == assigned
                    && ts
                        .iter()
                        .filter(|t| state(t) == TaskState::Pending)
                        .all(|t| !err(t).is_empty())
            },
        )
        .await
    }
}

pub fn state(t: &Task) -> TaskState {
    t.status.as_ref().map_or(TaskState::New, |s| s.state())
}

pub fn err(t: &Task) -> &str {
    t.status.as_ref().map_or("", |s| s.err.as_str())
}

/// Tasks per node id.
pub fn per_node(tasks: &[Task]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for t in tasks.iter().filter(|t| state(t) == TaskState::Assigned) {
        *m.entry(t.node_id.clone()).or_default() += 1;
    }
    m
}

/// A READY, ACTIVE worker with 4 CPUs and 8 GiB, linux/amd64, both executors.
pub fn node(id: &str) -> Node {
    Node {
        meta: Some(Meta {
            id: id.to_string(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations::default()),
            availability: Availability::Active as i32,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: format!("host-{id}"),
            platform: Some(Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
            }),
            resources: Some(Resources {
                nano_cpus: 4 * CPU,
                memory_bytes: 8 * GIB,
                ..Default::default()
            }),
            executors: vec![
                ExecutorDescription {
                    kind: ExecutorKind::Docker as i32,
                    version: String::new(),
                },
                ExecutorDescription {
                    kind: ExecutorKind::Process as i32,
                    version: String::new(),
                },
            ],
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            addr: "127.0.0.1".into(),
            ..Default::default()
        }),
        role: NodeRole::Worker as i32,
        ..Default::default()
    }
}

pub fn with_availability(mut n: Node, a: Availability) -> Node {
    if let Some(s) = n.spec.as_mut() {
        s.set_availability(a);
    }
    n
}

pub fn with_state(mut n: Node, st: NodeState) -> Node {
    if let Some(s) = n.status.as_mut() {
        s.set_state(st);
    }
    n
}

pub fn with_label(mut n: Node, key: &str, value: &str) -> Node {
    if let Some(s) = n.spec.as_mut() {
        s.annotations
            .get_or_insert_with(Default::default)
            .labels
            .insert(key.into(), value.into());
    }
    n
}

/// The tasks the orchestrator creates for a replicated service: slots 1..=n, PENDING,
/// desired RUNNING, no node.
pub fn replicas(service_id: &str, name: &str, n: u64, spec: TaskSpec) -> Vec<Task> {
    (1..=n)
        .map(|slot| task(service_id, name, slot, "", spec.clone()))
        .collect()
}

pub fn task(service_id: &str, name: &str, slot: u64, node_id: &str, spec: TaskSpec) -> Task {
    Task {
        spec: Some(spec),
        service_id: service_id.to_string(),
        slot,
        node_id: node_id.to_string(),
        service_annotations: Some(Annotations {
            name: name.to_string(),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: TaskState::Pending as i32,
            message: "pending task scheduling".into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        spec_version: Some(Version { index: 1 }),
        trace_context: Some(TraceContext::default()),
        ..Default::default()
    }
}

/// A container task spec with optional constraints, reservations and max replicas.
pub fn spec(constraints: &[&str], reserve: Option<(i64, i64)>, max_replicas: u64) -> TaskSpec {
    TaskSpec {
        runtime: Some(Runtime::Container(ContainerSpec {
            image: "busybox:latest".into(),
            ..Default::default()
        })),
        resources: reserve.map(|(nano_cpus, memory_bytes)| ResourceRequirements {
            limits: None,
            reservations: Some(Resources {
                nano_cpus,
                memory_bytes,
                ..Default::default()
            }),
        }),
        placement: Some(Placement {
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            max_replicas,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn id(o: &impl Object) -> String {
    o.id().to_string()
}
