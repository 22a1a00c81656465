//! A new task for a service: Swarm's `orchestrator.NewTask`.

use std::time::SystemTime;

use shoal_proto::v1::{
    Annotations, Endpoint, Meta, Service, Task, TaskState, TaskStatus, TraceContext, Version,
    service_spec::Mode,
};

/// The status message of a task waiting for the scheduler (Swarm's allocator sets the
/// same one when it moves a task from NEW to PENDING).
pub const PENDING_MESSAGE: &str = "pending task scheduling";

/// A new task of `service` for `slot` (replicated; 0 for global) or for `node_id`
/// (global), desired RUNNING, state PENDING, stamped now. See [`new_task_at`].
pub fn new_task(
    service: &Service,
    slot: u64,
    node_id: Option<&str>,
    trace: Option<TraceContext>,
) -> Task {
    new_task_at(service, slot, node_id, trace, SystemTime::now())
}

/// A new task of `service`, as Swarm makes it: a copy of the service's task spec and
/// annotations, its spec version (and job iteration for jobs), a fresh id, desired
/// RUNNING and state PENDING with `PENDING_MESSAGE` at `now`. Its name is
/// `<service>.<slot>` (replicated) or `<service>.<node id>` (global); the task id is
/// appended only for display, as Docker does.
///
/// Swarm creates tasks in NEW and lets the allocator move them to PENDING; shoal's
/// orchestrator writes PENDING directly so the scheduler can take them at once.
pub fn new_task_at(
    service: &Service,
    slot: u64,
    node_id: Option<&str>,
    trace: Option<TraceContext>,
    now: SystemTime,
) -> Task {
    let spec = service.spec.clone().unwrap_or_default();
    let service_name = spec
        .annotations
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let node_id = node_id.unwrap_or_default().to_string();
    let name = if slot == 0 && !node_id.is_empty() {
        format!("{service_name}.{node_id}")
    } else {
        format!("{service_name}.{slot}")
    };
    let is_job = matches!(
        spec.mode,
        Some(Mode::ReplicatedJob(_)) | Some(Mode::GlobalJob(_))
    );
    let job_iteration = if is_job {
        service
            .job_status
            .as_ref()
            .and_then(|j| j.job_iteration)
            .or(Some(Version { index: 0 }))
    } else {
        None
    };
    let task_spec = spec.task.clone();
    let log_driver = task_spec.as_ref().and_then(|t| t.log_driver.clone());
    let ts = prost_types::Timestamp::from(now);
    Task {
        meta: Some(Meta {
            id: shoal_store::new_id(),
            version: None,
            created_at: Some(ts),
            updated_at: Some(ts),
        }),
        spec: task_spec,
        service_id: service
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default(),
        slot,
        node_id,
        annotations: Some(Annotations {
            name,
            labels: Default::default(),
        }),
        service_annotations: spec.annotations.clone(),
        status: Some(TaskStatus {
            timestamp: Some(ts),
            state: TaskState::Pending as i32,
            message: PENDING_MESSAGE.to_string(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        networks: Vec::new(),
        endpoint: spec.endpoint.clone().map(|e| Endpoint {
            spec: Some(e),
            ..Default::default()
        }),
        log_driver,
        spec_version: service.spec_version,
        job_iteration,
        trace_context: trace,
        // Set by `number_restarts` once the slot's history is known.
        restart_count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;

    #[test]
    fn copies_the_service_into_a_pending_task() {
        let svc = replicated_service("svc1", "web", 3);
        let now = at(100);
        let trace = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: String::new(),
        };
        let t = new_task_at(&svc, 2, None, Some(trace.clone()), now);
        assert_eq!(t.service_id, "svc1");
        assert_eq!(t.slot, 2);
        assert_eq!(t.node_id, "");
        assert_eq!(t.desired_state, TaskState::Running as i32);
        let status = t.status.clone().unwrap_or_default();
        assert_eq!(status.state, TaskState::Pending as i32);
        assert_eq!(status.message, PENDING_MESSAGE);
        assert_eq!(status.timestamp, Some(prost_types::Timestamp::from(now)));
        assert_eq!(t.spec, svc.spec.as_ref().and_then(|s| s.task.clone()));
        assert_eq!(t.spec_version, svc.spec_version);
        assert_eq!(
            t.annotations.as_ref().map(|a| a.name.as_str()),
            Some("web.2")
        );
        assert_eq!(
            t.service_annotations.as_ref().map(|a| a.name.as_str()),
            Some("web")
        );
        assert_eq!(t.trace_context, Some(trace));
        assert_eq!(t.job_iteration, None);
        assert_eq!(t.meta.as_ref().map(|m| m.id.len()), Some(25));
    }

    #[test]
    fn global_tasks_are_named_after_their_node() {
        let svc = global_service("svc1", "agent");
        let t = new_task_at(&svc, 0, Some("node1"), None, at(1));
        assert_eq!(t.node_id, "node1");
        assert_eq!(
            t.annotations.as_ref().map(|a| a.name.as_str()),
            Some("agent.node1")
        );
    }

    #[test]
    fn every_task_gets_its_own_id() {
        let svc = replicated_service("svc1", "web", 1);
        let a = new_task_at(&svc, 1, None, None, at(1));
        let b = new_task_at(&svc, 1, None, None, at(1));
        assert_ne!(a.meta, b.meta);
    }
}
