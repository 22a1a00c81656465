//! Services: create, update (and rollback), remove, with Swarm's rules.
//!
//! - A created service is stored as sent (Swarm stores no defaults; the orchestrator
//!   applies them, e.g. the 5 s restart delay), with `spec_version` 1, a `job_status`
//!   for jobs, and the caller's trace context so the orchestrator's work joins the
//!   request's trace.
//! - An empty name gets a generated `<adjective>_<noun>` one, as the Docker daemon does
//!   for `docker service create` without `--name`.
//! - `spec_version` identifies a spec's content: 1 at creation, and on each update the
//!   version (etcd revision) of the service object the update replaced — unique, and
//!   always higher than any earlier one. A rollback restores the previous spec together
//!   with its spec version (as swarmkit does), so tasks of that spec count as current.
//! - `service rm` deletes the object at once (the name is free at once); its tasks are
//!   the orchestrator's to remove.

use std::collections::HashSet;

use shoal_grpc_host::ClusterState;
use shoal_proto::v1::{
    Config, CreateServiceRequest, JobStatus, Secret, Service, ServiceSpec, UpdateServiceRequest,
    UpdateStatus, Version, port_config, service_spec, task_spec, update_service_request,
    update_status,
};
use shoal_store::Object;
use tonic::Status;

use super::{delete_or_not_found, store_status, validate};
use crate::announce::announce;

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}

fn spec_name(spec: Option<&ServiceSpec>) -> &str {
    spec.and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

pub async fn create(state: &ClusterState, req: CreateServiceRequest) -> Result<Service, Status> {
    let mut spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: a service spec is required"))?;
    let generate = spec_name(Some(&spec)).is_empty();
    if generate {
        spec.annotations.get_or_insert_with(Default::default).name =
            validate::generated_name(random_seed());
    }
    validate::service_spec(&spec)?;
    check_references(state, &mut spec, None).await?;

    let job_status = validate::is_job(&spec).then(|| JobStatus {
        job_iteration: Some(Version { index: 0 }),
        last_execution: Some(now()),
    });
    let mut service = Service {
        meta: None,
        spec: Some(spec),
        previous_spec: None,
        endpoint: None,
        update_status: None,
        spec_version: Some(Version { index: 1 }),
        previous_spec_version: None,
        pending_delete: false,
        job_status,
        trace_context: Some(shoal_telemetry::current_trace_context()),
        spec_revision: 0,
    };
    // A generated name may collide; a few fresh ones make that vanishingly unlikely.
    let mut attempts = if generate { 5 } else { 1 };
    let created = loop {
        attempts -= 1;
        match state.store.create(service.clone()).await {
            Ok(created) => break created,
            Err(shoal_store::Error::AlreadyExists { .. }) if attempts > 0 => {
                if let Some(a) = service.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
                    a.name = validate::generated_name(random_seed());
                }
            }
            Err(e) => return Err(store_status(e)),
        }
    };
    let name = spec_name(created.spec.as_ref()).to_string();
    tracing::info!(id = %created.id(), %name, "service created");
    announce(&state.bus, "create", &created, &name).await;
    Ok(created)
}

fn mode_kind(spec: &ServiceSpec) -> &'static str {
    match spec.mode {
        Some(service_spec::Mode::Replicated(_)) => "replicated",
        Some(service_spec::Mode::Global(_)) => "global",
        Some(service_spec::Mode::ReplicatedJob(_)) => "replicated-job",
        Some(service_spec::Mode::GlobalJob(_)) => "global-job",
        None => "none",
    }
}

pub async fn update(
    state: &ClusterState,
    current: Service,
    req: UpdateServiceRequest,
) -> Result<Service, Status> {
    let version = req
        .service_version
        .ok_or_else(|| Status::invalid_argument("service_version: the version read is required"))?
        .index;
    let rollback = req.rollback == update_service_request::Rollback::Previous as i32;
    let id = current.id().to_string();
    let old_spec = current.spec.clone().unwrap_or_default();

    let mut next = current.clone();
    next.spec_revision = current.version();
    if rollback {
        // The spec sent along is ignored, as in swarmkit.
        let previous = current.previous_spec.clone().ok_or_else(|| {
            Status::failed_precondition(format!("service {id} does not have a previous spec"))
        })?;
        next.spec = Some(previous);
        next.spec_version = current.previous_spec_version;
        next.previous_spec = Some(old_spec.clone());
        next.previous_spec_version = current.spec_version;
        next.update_status = Some(UpdateStatus {
            state: update_status::UpdateState::RollbackStarted as i32,
            started_at: Some(now()),
            completed_at: None,
            message: "manually requested rollback".into(),
        });
    } else {
        let mut spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: a service spec is required"))?;
        validate::service_spec(&spec)?;
        if spec_name(Some(&spec)) != spec_name(Some(&old_spec)) {
            // swarmkit answers Unimplemented; it is a refused input either way.
            return Err(Status::invalid_argument(
                "name: renaming services is not supported",
            ));
        }
        if mode_kind(&spec) != mode_kind(&old_spec) {
            return Err(Status::invalid_argument(format!(
                "mode: service mode change is not allowed ({} to {}); remove the service and create it again",
                mode_kind(&old_spec),
                mode_kind(&spec)
            )));
        }
        if spec.endpoint != old_spec.endpoint {
            check_references(state, &mut spec, Some(&id)).await?;
        } else {
            check_objects(state, &mut spec).await?;
        }
        next.previous_spec = Some(old_spec);
        next.previous_spec_version = current.spec_version;
        next.spec = Some(spec);
        next.spec_version = Some(Version {
            index: current.version(),
        });
        next.update_status = None;
    }
    if let Some(job) = next.job_status.as_mut() {
        let iteration = job.job_iteration.map(|v| v.index).unwrap_or(0) + 1;
        job.job_iteration = Some(Version { index: iteration });
        job.last_execution = Some(now());
    }
    next.trace_context = Some(shoal_telemetry::current_trace_context());

    // The caller's version must be the stored one, or one written after the current
    // spec (the leader writes endpoints and update statuses on its own; a caller who
    // read the current spec is not out of sequence for those). `update_from` then
    // compares against the stored object.
    if !seen_current_spec(&current, version) {
        return Err(Status::failed_precondition(format!(
            "update out of sequence: service {id} is at version {}, not {version}; read it again and retry",
            current.version()
        )));
    }
    let stored = state
        .store
        .update_from(&current, next)
        .await
        .map_err(store_status)?;
    let name = spec_name(stored.spec.as_ref()).to_string();
    tracing::info!(id = %stored.id(), %name, rollback, "service updated");
    announce(&state.bus, "update", &stored, &name).await;
    Ok(stored)
}

/// Whether a caller who read the service at `version` has seen its current spec: the
/// stored version itself, or one between the last spec write and now.
pub fn seen_current_spec(current: &Service, version: u64) -> bool {
    version == current.version() || (version > current.spec_revision && version < current.version())
}

pub async fn remove(state: &ClusterState, current: Service) -> Result<(), Status> {
    let name = spec_name(current.spec.as_ref()).to_string();
    let removed: Service = delete_or_not_found(state, current.id(), None, || {
        format!("service {} not found", current.id())
    })
    .await?;
    tracing::info!(id = %removed.id(), %name, "service removed");
    announce(&state.bus, "remove", &removed, &name).await;
    Ok(())
}

/// What needs other objects: referenced networks, configs and secrets exist, and no
/// other service publishes the same ports (`except`: the service being updated).
async fn check_references(
    state: &ClusterState,
    spec: &mut ServiceSpec,
    except: Option<&str>,
) -> Result<(), Status> {
    check_objects(state, spec).await?;
    check_port_conflicts(state, spec, except).await
}

/// Networks resolve to existing ones (their ids replace the names given); configs and
/// secrets exist under the names given.
async fn check_objects(state: &ClusterState, spec: &mut ServiceSpec) -> Result<(), Status> {
    super::networks::resolve_attachments(&state.store, spec).await?;
    let (configs, secrets) = match spec.task.as_ref().and_then(|t| t.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => (&c.configs, &c.secrets),
        Some(task_spec::Runtime::Process(p)) => (&p.configs, &p.secrets),
        None => return Ok(()),
    };
    check_named::<Config>(
        state,
        "config",
        configs
            .iter()
            .map(|r| (r.config_id.as_str(), r.config_name.as_str())),
        |c| {
            c.spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .map(|a| a.name.as_str())
        },
    )
    .await?;
    check_named::<Secret>(
        state,
        "secret",
        secrets
            .iter()
            .map(|r| (r.secret_id.as_str(), r.secret_name.as_str())),
        |s| {
            s.spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .map(|a| a.name.as_str())
        },
    )
    .await
}

/// Fails with `<kind>s: <kind>(s) not found: <names>` unless every reference, an
/// `(id, name)` pair, is to a stored `T` by that id that `name_of` still calls by
/// that name.
async fn check_named<'r, T: Object>(
    state: &ClusterState,
    kind: &str,
    refs: impl Iterator<Item = (&'r str, &'r str)>,
    name_of: impl Fn(&T) -> Option<&str>,
) -> Result<(), Status> {
    let mut missing = Vec::new();
    for (id, name) in refs {
        let found = state.store.try_get::<T>(id).await.map_err(store_status)?;
        if found.as_ref().and_then(&name_of) != Some(name) {
            missing.push(name.to_string());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let what = if missing.len() == 1 {
        kind.to_string()
    } else {
        format!("{kind}s")
    };
    Err(Status::invalid_argument(format!(
        "{kind}s: {what} not found: {}",
        missing.join(", ")
    )))
}

/// Swarm's best-effort check: an ingress port is the whole cluster's, so no other
/// service may publish it (in either mode); host-mode ports may repeat across services
/// (the scheduler keeps them apart) but not clash with another's ingress port.
async fn check_port_conflicts(
    state: &ClusterState,
    spec: &ServiceSpec,
    except: Option<&str>,
) -> Result<(), Status> {
    let ingress_mode = port_config::PublishMode::Ingress as i32;
    let mut ingress = HashSet::new();
    let mut host = HashSet::new();
    for p in spec.endpoint.iter().flat_map(|e| &e.ports) {
        if p.published_port == 0 {
            continue;
        }
        if p.publish_mode == ingress_mode {
            ingress.insert((p.published_port, p.protocol));
        } else {
            host.insert((p.published_port, p.protocol));
        }
    }
    if ingress.is_empty() && host.is_empty() {
        return Ok(());
    }
    let services = state
        .store
        .list::<Service>()
        .await
        .map_err(store_status)?
        .objects;
    for other in services.iter().filter(|s| Some(s.id()) != except) {
        let ports = other
            .spec
            .as_ref()
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| e.ports.as_slice())
            .unwrap_or_default()
            .iter()
            .chain(other.endpoint.iter().flat_map(|e| &e.ports));
        for p in ports {
            if p.published_port == 0 {
                continue;
            }
            let key = (p.published_port, p.protocol);
            let name = spec_name(other.spec.as_ref());
            if p.publish_mode == ingress_mode {
                if ingress.contains(&key) || host.contains(&key) {
                    return Err(Status::invalid_argument(format!(
                        "port '{}' is already in use by service '{name}' ({}) as an ingress port",
                        p.published_port,
                        other.id()
                    )));
                }
            } else if ingress.contains(&key) {
                return Err(Status::invalid_argument(format!(
                    "port '{}' is already in use by service '{name}' ({}) as a host-published port",
                    p.published_port,
                    other.id()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::Meta;

    fn at(version: u64, spec_revision: u64) -> Service {
        Service {
            meta: Some(Meta {
                id: "s".into(),
                version: Some(Version { index: version }),
                ..Default::default()
            }),
            spec_revision,
            ..Default::default()
        }
    }

    #[test]
    fn a_caller_who_saw_the_current_spec_is_in_sequence() {
        // Spec written on top of version 10 (so at 11 or later); the leader wrote the
        // endpoint since: the service is at 14.
        let s = at(14, 10);
        assert!(seen_current_spec(&s, 14), "the stored version");
        assert!(seen_current_spec(&s, 11), "read right after the spec write");
        assert!(!seen_current_spec(&s, 10), "read before the spec write");
        assert!(!seen_current_spec(&s, 3), "long before");
        assert!(!seen_current_spec(&s, 15), "a version from the future");
        // Since creation (no spec write yet): any version up to the stored one.
        assert!(seen_current_spec(&at(7, 0), 5));
    }
}
