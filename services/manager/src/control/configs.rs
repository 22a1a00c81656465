//! Configs: named, immutable blobs services mount as files. Swarm's rules: a valid
//! name, data of 1 byte to 1000 KiB, only labels change after creation, and no removal
//! while a service uses the config.

use std::collections::HashMap;

use shoal_grpc_host::ClusterState;
use shoal_proto::v1::{
    Annotations, Config, ConfigReference, ConfigSpec, CreateConfigRequest, SecretReference,
    Service, UpdateConfigRequest, task_spec,
};
use shoal_store::Object;
use tonic::Status;

use super::{delete_or_not_found, store_status};
use crate::announce::announce;

/// Swarm's limit on a config's data.
pub const MAX_CONFIG_SIZE: usize = 1000 * 1024;

pub async fn create(state: &ClusterState, req: CreateConfigRequest) -> Result<Config, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: a config spec is required"))?;
    validate_spec(&spec)?;
    let name = spec_name(&spec).to_string();
    let config = Config {
        meta: None,
        spec: Some(spec),
    };
    let created = state.store.create(config).await.map_err(store_status)?;
    tracing::info!(id = %created.id(), %name, "config created");
    announce(&state.bus, "create", &created, &name).await;
    Ok(created)
}

pub async fn update(
    state: &ClusterState,
    current: Config,
    req: UpdateConfigRequest,
) -> Result<Config, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: a config spec is required"))?;
    let version = req
        .config_version
        .ok_or_else(|| Status::invalid_argument("config_version: the version read is required"))?
        .index;
    let old = current.spec.clone().unwrap_or_default();
    // As swarmkit: nil data is a labels-only update; anything but the labels is kept.
    if spec_name(&spec) != spec_name(&old) || (!spec.data.is_empty() && spec.data != old.data) {
        return Err(Status::invalid_argument(
            "only updates to Labels are allowed",
        ));
    }
    let name = spec_name(&old).to_string();
    let labels = spec.annotations.map(|a| a.labels).unwrap_or_default();
    let stored = store_labels(state, current, version, labels, |c: &mut Config| {
        c.spec
            .get_or_insert_with(Default::default)
            .annotations
            .as_mut()
    })
    .await?;
    announce(&state.bus, "update", &stored, &name).await;
    Ok(stored)
}

pub async fn remove(state: &ClusterState, current: Config) -> Result<(), Status> {
    let name = current
        .spec
        .as_ref()
        .map(|s| spec_name(s).to_string())
        .unwrap_or_default();
    refuse_if_used(state, "config", &name, |s| uses_config(s, current.id())).await?;
    let removed: Config = delete_or_not_found(state, current.id(), Some(current.version()), || {
        format!("could not find config {}", current.id())
    })
    .await?;
    announce(&state.bus, "remove", &removed, &name).await;
    Ok(())
}

/// swarmkit's refusal to remove the secret or config (`kind`) `name` while services
/// use it (`uses`): the services by name (their id without one).
pub async fn refuse_if_used(
    state: &ClusterState,
    kind: &str,
    name: &str,
    uses: impl Fn(&Service) -> bool,
) -> Result<(), Status> {
    let services = state
        .store
        .list::<Service>()
        .await
        .map_err(store_status)?
        .objects;
    let users: Vec<String> = services
        .iter()
        .filter(|s| uses(s))
        .map(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.annotations.as_ref())
                .map(|a| a.name.clone())
                .unwrap_or_else(|| s.id().to_string())
        })
        .collect();
    if users.is_empty() {
        Ok(())
    } else {
        Err(in_use_error(kind, name, &users))
    }
}

/// The labels-only update of a secret or config: `current` at the `version` read,
/// with `labels` in the annotations `annotations` finds, stored.
pub async fn store_labels<T: Object>(
    state: &ClusterState,
    current: T,
    version: u64,
    labels: HashMap<String, String>,
    annotations: fn(&mut T) -> Option<&mut Annotations>,
) -> Result<T, Status> {
    let mut updated = current;
    updated.set_version(version);
    if let Some(a) = annotations(&mut updated) {
        a.labels = labels;
    }
    state.store.update(updated).await.map_err(store_status)
}

/// swarmkit's refusal to remove a secret or config services use (InvalidArgument).
pub fn in_use_error(kind: &str, name: &str, users: &[String]) -> Status {
    let services = if users.len() == 1 {
        "service"
    } else {
        "services"
    };
    Status::invalid_argument(format!(
        "{kind} '{name}' is in use by the following {services}: {}",
        users.join(", ")
    ))
}

/// The config and secret references of `service`'s spec (none without a runtime).
pub fn file_refs(service: &Service) -> (&[ConfigReference], &[SecretReference]) {
    let runtime = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.as_ref());
    match runtime {
        Some(task_spec::Runtime::Container(c)) => (&c.configs, &c.secrets),
        Some(task_spec::Runtime::Process(p)) => (&p.configs, &p.secrets),
        None => (&[], &[]),
    }
}

fn uses_config(service: &Service, config_id: &str) -> bool {
    file_refs(service)
        .0
        .iter()
        .any(|r| r.config_id == config_id)
}

fn spec_name(spec: &ConfigSpec) -> &str {
    spec.annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn validate_spec(spec: &ConfigSpec) -> Result<(), Status> {
    validate_name(spec.annotations.as_ref())?;
    validate_templating(spec.templating.as_ref())?;
    if spec.data.is_empty() || spec.data.len() >= MAX_CONFIG_SIZE {
        return Err(Status::invalid_argument(format!(
            "data: config data must be larger than 0 and less than {} bytes",
            MAX_CONFIG_SIZE
        )));
    }
    Ok(())
}

/// The name rule of secrets and configs (swarmkit's
/// `validateConfigOrSecretAnnotations`), in its words.
pub fn validate_name(annotations: Option<&Annotations>) -> Result<(), Status> {
    let name = annotations.map(|a| a.name.as_str()).unwrap_or("");
    if name.is_empty() {
        return Err(Status::invalid_argument("name: name must be provided"));
    }
    validate_annotations(annotations).map_err(|_| {
        Status::invalid_argument(format!(
            "name: invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9] (got \"{name}\")"
        ))
    })
}

/// The one payload template language shoal's workers expand: Swarm's "golang"
/// (swarmkit's agent fails any other with "unrecognized template type"; shoal refuses
/// it up front instead of storing an object no task could use).
pub fn validate_templating(templating: Option<&shoal_proto::v1::Driver>) -> Result<(), Status> {
    match templating {
        Some(t) if t.name != "golang" => Err(Status::invalid_argument(format!(
            "templating: unrecognized template type \"{}\" (the template driver shoal supports is \"golang\")",
            t.name
        ))),
        _ => Ok(()),
    }
}

/// Swarm's object-name rule: 1-64 of `[a-zA-Z0-9-_.]`, starting and ending alphanumeric.
pub fn validate_annotations(annotations: Option<&Annotations>) -> Result<(), Status> {
    let name = annotations.map(|a| a.name.as_str()).unwrap_or("");
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "name: meta: name must be provided",
        ));
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > 64 || !valid_chars || !ends_ok {
        return Err(Status::invalid_argument(format!(
            "name: invalid name \"{name}\", only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Option<Annotations> {
        Some(Annotations {
            name: name.into(),
            labels: Default::default(),
        })
    }

    #[test]
    fn names_follow_swarms_rule() {
        for ok in ["a", "web-conf", "v1.2_x", &"x".repeat(64)] {
            assert!(validate_annotations(named(ok).as_ref()).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "é", &"x".repeat(65)] {
            let err = validate_annotations(named(bad).as_ref()).expect_err(bad);
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn data_must_be_present_and_bounded() {
        let spec = |len: usize| ConfigSpec {
            annotations: named("c"),
            data: vec![b'x'; len],
            ..Default::default()
        };
        assert!(validate_spec(&spec(1)).is_ok());
        assert!(validate_spec(&spec(0)).is_err());
        assert!(validate_spec(&spec(MAX_CONFIG_SIZE - 1)).is_ok());
        assert!(validate_spec(&spec(MAX_CONFIG_SIZE)).is_err());
    }
}
