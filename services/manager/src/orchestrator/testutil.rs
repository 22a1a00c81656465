//! Builders for the orchestrator tests.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use shoal_proto::v1::node_spec::Availability;
use shoal_proto::v1::{
    Annotations, GlobalService, Meta, Node, NodeSpec, NodeStatus, ReplicatedService, RestartPolicy,
    Service, ServiceSpec, Task, TaskSpec, TaskState, TaskStatus, Version, node_status,
    service_spec::Mode,
};

pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

pub fn ts(secs: u64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at(secs))
}

fn service(id: &str, name: &str, mode: Mode) -> Service {
    Service {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: Default::default(),
            }),
            task: Some(TaskSpec::default()),
            mode: Some(mode),
            ..Default::default()
        }),
        spec_version: Some(Version { index: 1 }),
        ..Default::default()
    }
}

pub fn replicated_service(id: &str, name: &str, replicas: u64) -> Service {
    service(id, name, Mode::Replicated(ReplicatedService { replicas }))
}

pub fn global_service(id: &str, name: &str) -> Service {
    service(id, name, Mode::Global(GlobalService {}))
}

/// Sets the restart policy on the service and on every given task's spec.
pub fn with_restart(mut svc: Service, policy: RestartPolicy) -> Service {
    if let Some(task) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
        task.restart = Some(policy);
    }
    svc
}

pub fn node(id: &str, state: node_status::State, availability: Availability) -> Node {
    Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            availability: availability as i32,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ready(id: &str) -> Node {
    node(id, node_status::State::Ready, Availability::Active)
}

pub fn nodes(list: Vec<Node>) -> HashMap<String, Node> {
    list.into_iter()
        .map(|n| (n.meta.clone().unwrap_or_default().id, n))
        .collect()
}

/// A task of service `svc1`, created at `created` and last changed at `changed`.
pub fn task_full(
    id: &str,
    slot: u64,
    node_id: &str,
    state: TaskState,
    desired: TaskState,
    created: u64,
    changed: u64,
) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            created_at: Some(ts(created)),
            ..Default::default()
        }),
        spec: Some(TaskSpec::default()),
        service_id: "svc1".into(),
        slot,
        node_id: node_id.into(),
        status: Some(TaskStatus {
            timestamp: Some(ts(changed)),
            state: state as i32,
            ..Default::default()
        }),
        desired_state: desired as i32,
        spec_version: Some(Version { index: 1 }),
        ..Default::default()
    }
}

/// A live task desired RUNNING.
pub fn task(id: &str, slot: u64, node_id: &str, state: TaskState) -> Task {
    task_full(id, slot, node_id, state, TaskState::Running, 1, 1)
}

/// A task that finished in `state` at `died` while still desired RUNNING.
pub fn dead_task(id: &str, slot: u64, state: TaskState, created: u64, died: u64) -> Task {
    task_full(id, slot, "n1", state, TaskState::Running, created, died)
}

/// Copies `policy` into a task's spec (tasks keep the restart policy they ran with).
pub fn task_with_restart(mut t: Task, policy: &RestartPolicy) -> Task {
    if let Some(spec) = t.spec.as_mut() {
        spec.restart = Some(*policy);
    }
    t
}

pub fn ids(list: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = list.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

pub fn created_slots(list: &[Task]) -> Vec<u64> {
    let mut v: Vec<u64> = list.iter().map(|t| t.slot).collect();
    v.sort_unstable();
    v
}
