//! Secrets: named, immutable payloads services read as files. Swarm's rules
//! (swarmkit's `controlapi/secret.go`): a valid name, data of 1 byte to 500 KiB − 1,
//! only labels change after creation, identical data is accepted on update, no
//! removal while a service uses the secret.
//!
//! At rest the payload is sealed (`shoal_pki::SecretSealer`, a key derived from the
//! control plane's KEK, the secret's name as associated data): the stored
//! `spec.data` is always empty and `sealed` holds the ciphertext. Nothing here logs,
//! announces or returns the payload; the Control API strips `sealed` as well
//! (`without_data` in the module root).

use std::path::Path;

use shoal_grpc_host::ClusterState;
use shoal_pki::SecretSealer;
use shoal_proto::v1::{CreateSecretRequest, Secret, SecretSpec, Service, UpdateSecretRequest};
use shoal_store::Object;
use subtle::ConstantTimeEq;
use tonic::Status;

use super::configs::{file_refs, refuse_if_used, store_labels, validate_name, validate_templating};
use super::{delete_or_not_found, store_status};
use crate::announce::announce;

/// swarmkit's `MaxSecretSize`: the data must be shorter than this.
pub const MAX_SECRET_SIZE: usize = 500 * 1024;

/// The sealer of this control plane, from the KEK file every manager holds.
pub fn sealer(kek_file: &Path) -> Result<SecretSealer, Status> {
    let kek = shoal_grpc_host::identity::read_kek(kek_file)
        .map_err(|e| Status::failed_precondition(format!("secrets need the swarm's KEK: {e}")))?;
    SecretSealer::new(&kek).map_err(|e| Status::internal(format!("secret sealing: {e}")))
}

pub async fn create(
    state: &ClusterState,
    kek_file: &Path,
    req: CreateSecretRequest,
) -> Result<Secret, Status> {
    let mut spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: a secret spec is required"))?;
    validate_spec(&spec)?;
    let name = spec_name(&spec).to_string();
    // The plaintext leaves the spec here and lives only until it is sealed.
    let data = std::mem::take(&mut spec.data);
    let sealed = sealer(kek_file)?
        .seal(&name, &data)
        .map_err(|e| Status::internal(format!("secret sealing: {e}")))?;
    drop(data);
    let secret = Secret {
        meta: None,
        spec: Some(spec),
        internal: false,
        sealed,
    };
    let created = state.store.create(secret).await.map_err(store_status)?;
    tracing::info!(id = %created.id(), %name, "secret created");
    announce(&state.bus, "create", &created, &name).await;
    Ok(created)
}

/// Only the labels change. A request carrying data must carry the stored data (read
/// back from its sealed form and compared in constant time); no data means "labels
/// only", as in swarmkit.
pub async fn update(
    state: &ClusterState,
    kek_file: &Path,
    current: Secret,
    req: UpdateSecretRequest,
) -> Result<Secret, Status> {
    let version = req
        .secret_version
        .ok_or_else(|| Status::invalid_argument("invalid argument: secret_version is required"))?
        .index;
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: a secret spec is required"))?;
    let old = current.spec.clone().unwrap_or_default();
    let name = spec_name(&old).to_string();
    let labels_only = || Status::invalid_argument("only updates to Labels are allowed");
    if spec_name(&spec) != name {
        return Err(labels_only());
    }
    if !spec.data.is_empty() {
        if current.sealed.is_empty() {
            return Err(labels_only());
        }
        let stored = sealer(kek_file)?
            .open(&name, &current.sealed)
            .map_err(|e| {
                Status::internal(format!(
                    "secret {name}: the stored payload does not open with this KEK: {e}"
                ))
            })?;
        if !bool::from(stored.as_slice().ct_eq(spec.data.as_slice())) {
            return Err(labels_only());
        }
    }
    let labels = spec.annotations.map(|a| a.labels).unwrap_or_default();
    let stored = store_labels(state, current, version, labels, |c: &mut Secret| {
        c.spec
            .get_or_insert_with(Default::default)
            .annotations
            .as_mut()
    })
    .await?;
    tracing::info!(id = %stored.id(), %name, "secret updated");
    announce(&state.bus, "update", &stored, &name).await;
    Ok(stored)
}

pub async fn remove(state: &ClusterState, current: Secret) -> Result<(), Status> {
    let name = current
        .spec
        .as_ref()
        .map(|s| spec_name(s).to_string())
        .unwrap_or_default();
    refuse_if_used(state, "secret", &name, |s| uses_secret(s, current.id())).await?;
    let removed: Secret = delete_or_not_found(state, current.id(), Some(current.version()), || {
        format!("could not find secret {}", current.id())
    })
    .await?;
    tracing::info!(id = %removed.id(), %name, "secret removed");
    announce(&state.bus, "remove", &removed, &name).await;
    Ok(())
}

/// Whether `service`'s spec references the secret `secret_id`.
pub fn uses_secret(service: &Service, secret_id: &str) -> bool {
    file_refs(service)
        .1
        .iter()
        .any(|r| r.secret_id == secret_id)
}

fn spec_name(spec: &SecretSpec) -> &str {
    spec.annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// swarmkit's `validateSecretSpec`, plus the templating driver shoal's workers expand
/// and a refusal of payload drivers (shoal has no secret driver plugins, so a secret
/// that names one could never be delivered).
pub fn validate_spec(spec: &SecretSpec) -> Result<(), Status> {
    validate_name(spec.annotations.as_ref())?;
    validate_templating(spec.templating.as_ref())?;
    if let Some(driver) = &spec.driver {
        if driver.name.is_empty() {
            return Err(Status::invalid_argument("secret driver must have a name"));
        }
        return Err(Status::invalid_argument(format!(
            "secret driver \"{}\": plugin not found (shoal has no secret driver plugins)",
            driver.name
        )));
    }
    if spec.data.is_empty() || spec.data.len() >= MAX_SECRET_SIZE {
        return Err(Status::invalid_argument(format!(
            "secret data must be larger than 0 and less than {MAX_SECRET_SIZE} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        Annotations, ContainerSpec, Driver, Meta, SecretReference, ServiceSpec, TaskSpec, task_spec,
    };

    fn spec(name: &str, len: usize) -> SecretSpec {
        SecretSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: Default::default(),
            }),
            data: vec![b'x'; len],
            ..Default::default()
        }
    }

    fn refused(s: &SecretSpec, words: &str) {
        let err = validate_spec(s).expect_err(words);
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains(words),
            "{words:?} in {:?}",
            err.message()
        );
    }

    #[test]
    fn sizes_are_swarms() {
        assert!(validate_spec(&spec("s", 1)).is_ok());
        assert!(validate_spec(&spec("s", 511_999)).is_ok());
        let words = "secret data must be larger than 0 and less than 512000 bytes";
        refused(&spec("s", 0), words);
        refused(&spec("s", 512_000), words);
    }

    #[test]
    fn names_drivers_and_templating() {
        refused(&spec("", 1), "name must be provided");
        refused(
            &spec("-x", 1),
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
        );
        let mut s = spec("s", 0);
        s.driver = Some(Driver::default());
        refused(&s, "secret driver must have a name");
        s.driver = Some(Driver {
            name: "vault".into(),
            options: Default::default(),
        });
        refused(&s, "plugin not found");
        let mut s = spec("s", 3);
        s.templating = Some(Driver {
            name: "golang".into(),
            options: Default::default(),
        });
        assert!(validate_spec(&s).is_ok());
        s.templating = Some(Driver {
            name: "jinja".into(),
            options: Default::default(),
        });
        refused(&s, "unrecognized template type");
    }

    #[test]
    fn users_are_found_in_either_runtime() {
        let service = Service {
            meta: Some(Meta {
                id: "svc".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                task: Some(TaskSpec {
                    runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                        secrets: vec![SecretReference {
                            secret_id: "s1".into(),
                            secret_name: "db".into(),
                            target: "db".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(uses_secret(&service, "s1"));
        assert!(!uses_secret(&service, "s2"));
    }
}
