//! Builders for the placement tests.

use std::time::SystemTime;

use shoal_proto::v1::executor_description::Kind;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{
    Annotations, ContainerSpec, ExecutorDescription, Meta, Node, NodeDescription, NodeSpec,
    NodeStatus, Placement, Platform, ResourceRequirements, Resources, Task, TaskSpec, TaskState,
    TaskStatus, node_status,
};

/// A READY, ACTIVE worker with 4 CPUs, 8 GiB, linux/amd64, both executors, addr 10.0.0.5.
pub fn node(id: &str) -> Node {
    Node {
        meta: Some(Meta {
            id: id.to_string(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations::default()),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: format!("host-{id}"),
            platform: Some(Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
            }),
            resources: Some(Resources {
                nano_cpus: 4_000_000_000,
                memory_bytes: 8 << 30,
                ..Default::default()
            }),
            executors: vec![
                ExecutorDescription {
                    kind: Kind::Docker as i32,
                    version: String::new(),
                },
                ExecutorDescription {
                    kind: Kind::Process as i32,
                    version: String::new(),
                },
            ],
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: node_status::State::Ready as i32,
            addr: "10.0.0.5".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sets a node label.
pub fn label(mut n: Node, key: &str, value: &str) -> Node {
    if let Some(s) = n.spec.as_mut() {
        s.annotations
            .get_or_insert_with(Default::default)
            .labels
            .insert(key.to_string(), value.to_string());
    }
    n
}

/// A PENDING container task of `service`, with empty placement and zero reservations.
pub fn pending_task(id: &str, service: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: id.to_string(),
            ..Default::default()
        }),
        service_id: service.to_string(),
        spec: Some(TaskSpec {
            runtime: Some(Runtime::Container(ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            })),
            resources: Some(ResourceRequirements {
                limits: None,
                reservations: Some(Resources::default()),
            }),
            placement: Some(Placement::default()),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: TaskState::Pending as i32,
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

/// A task of `service` on `node` in `state`, its status stamped `at`.
pub fn task_on(id: &str, service: &str, node: &str, state: TaskState, at: SystemTime) -> Task {
    let mut t = pending_task(id, service);
    t.node_id = node.to_string();
    t.status = Some(TaskStatus {
        state: state as i32,
        timestamp: Some(at.into()),
        ..Default::default()
    });
    t
}

/// Sets a task's reservations.
pub fn reserve(t: &mut Task, nano_cpus: i64, memory_bytes: i64) {
    if let Some(s) = t.spec.as_mut() {
        s.resources = Some(ResourceRequirements {
            limits: None,
            reservations: Some(Resources {
                nano_cpus,
                memory_bytes,
                ..Default::default()
            }),
        });
    }
}

/// Sets a task's constraints.
pub fn constrain(t: &mut Task, constraints: &[&str]) {
    if let Some(p) = t.spec.as_mut().and_then(|s| s.placement.as_mut()) {
        p.constraints = constraints.iter().map(|c| c.to_string()).collect();
    }
}
