//! Compose → Swarm objects: what `docker stack deploy` makes of a loaded [`Project`]
//! (docker/cli `cli/compose/convert`; reference stacks-secrets.md §4).
//!
//! The result is a [`StackPlan`]: the networks some service uses, every non-external
//! top-level secret and config (their payloads read from disk), and one service spec
//! per compose service. Nothing here talks to a manager: references to networks,
//! secrets and configs carry the objects' real *names*, and the deploy command resolves
//! them to ids (`secret_id`/`config_id` stay empty, attachment targets are names).
//! Errors are checked before anything is created, so a bad file changes nothing.

mod service;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use shoal_proto::v1::{
    Annotations, ConfigSpec, Driver, IpamConfig as ProtoIpamConfig, IpamOptions, NetworkSpec,
    SecretSpec, ServiceSpec,
};

use crate::model::{FileObjectConfig, NetworkConfig, Project};

/// The label every object of a stack carries; stacks exist only through it.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The service label holding the image as written (for `--resolve-image`).
pub const IMAGE_LABEL: &str = "com.docker.stack.image";
/// The network a service without `networks:` joins.
pub const DEFAULT_NETWORK: &str = "default";

/// Everything a deploy creates or updates, in creation order.
#[derive(Clone, Debug, PartialEq)]
pub struct StackPlan {
    pub namespace: String,
    pub networks: Vec<NetworkPlan>,
    pub secrets: Vec<FilePlan<SecretSpec>>,
    pub configs: Vec<FilePlan<ConfigSpec>>,
    pub services: Vec<ServicePlan>,
}

/// A network some service of the stack uses.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPlan {
    /// The compose key.
    pub key: String,
    /// The real name: `<ns>_<key>`, or `name:`; for an external one its name.
    pub name: String,
    /// Must exist already (checked, never created).
    pub external: bool,
    /// What to create when it does not exist (unused for external ones).
    pub spec: NetworkSpec,
}

/// A top-level secret or config.
#[derive(Clone, Debug, PartialEq)]
pub struct FilePlan<S> {
    /// The compose key.
    pub key: String,
    /// The real name: `<ns>_<key>`, or `name:`.
    pub name: String,
    /// External ones are not in a plan's lists (they are only looked up); kept for
    /// callers building plans of their own.
    pub external: bool,
    pub spec: S,
}

/// One compose service as a Swarm service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePlan {
    /// The compose key.
    pub key: String,
    /// `<ns>_<key>`.
    pub name: String,
    pub spec: ServiceSpec,
}

/// Why a project cannot be deployed. `Display` is docker's wording.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("invalid stack name: {0:?}")]
    InvalidStackName(String),
    #[error("invalid image reference for service {service}: {reason}")]
    InvalidImage { service: String, reason: String },
    /// A secret or config payload file that cannot be read, in Go's `os.Open` words.
    #[error("open {path}: {reason}")]
    ReadFile { path: String, reason: String },
    /// A secret or config declared without `file`, `external` or a driver.
    #[error("{kind} {key}: a file is required")]
    NoFile { kind: &'static str, key: String },
    #[error("service {service}: {error}")]
    Service {
        service: String,
        #[source]
        error: ServiceError,
    },
}

/// What is wrong with one service; shown after `service <name>: `.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("undefined network {0:?}")]
    UndefinedNetwork(String),
    #[error("undefined secret {0:?}")]
    UndefinedSecret(String),
    #[error("undefined config {0:?}")]
    UndefinedConfig(String),
    #[error("undefined volume {0:?}")]
    UndefinedVolume(String),
    #[error("replicas can only be used with replicated or replicated-job mode")]
    ReplicasNotAllowed,
    #[error("Unknown mode: {0}")]
    UnknownMode(String),
    #[error("test and disable can't be set at the same time")]
    HealthcheckConflict,
    #[error("EndpointSpec: port published with ingress mode can't be used with dnsrr mode")]
    DnsrrIngress,
    #[error("EndpointSpec: duplicate published ports provided")]
    DuplicatePorts,
    #[error("invalid endpoint mode: {0}")]
    EndpointMode(String),
    #[error("invalid RestartCondition: {0:?}")]
    RestartCondition(String),
    #[error("unknown restart policy: {0}")]
    RestartPolicy(String),
    #[error("invalid restart policy format: {0}")]
    RestartPolicyFormat(String),
    #[error("invalid failure action: {0}")]
    FailureAction(String),
    #[error("invalid update order: {0}")]
    UpdateOrder(String),
    #[error("invalid cpu value {0}: {1}")]
    Cpus(String, &'static str),
    #[error("invalid port protocol: {0}")]
    Protocol(String),
    #[error("invalid port mode: {0}")]
    PortMode(String),
    #[error("invalid mount type: {0}")]
    MountType(String),
    #[error("invalid mount config for type \"bind\": field Source must not be empty")]
    BindWithoutSource,
    #[error("invalid mount config for type \"tmpfs\": field Source must be empty")]
    TmpfsWithSource,
    #[error("duplicate {kind} target for {service} not allowed")]
    DuplicateTarget { kind: &'static str, service: String },
}

impl ServiceError {
    fn of(self, service: &str) -> ConvertError {
        ConvertError::Service {
            service: service.to_string(),
            error: self,
        }
    }
}

/// `<ns>_<name>`.
pub fn scope(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

/// `<name>` without the `<ns>_` prefix (for `--prune`).
pub fn descope<'a>(namespace: &str, name: &'a str) -> &'a str {
    name.strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('_'))
        .unwrap_or(name)
}

/// Networks the engine always has; an external reference to one is not checked.
pub fn is_builtin_network(name: &str) -> bool {
    matches!(name, "host" | "bridge" | "none" | "default") || name.starts_with("container:")
}

/// docker's check on the stack name: anything but blanks and quotes.
pub fn validate_stack_name(namespace: &str) -> Result<(), ConvertError> {
    let trimmed = namespace.trim_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'');
    if trimmed.is_empty() {
        return Err(ConvertError::InvalidStackName(namespace.to_string()));
    }
    Ok(())
}

/// `labels` plus the stack label (which wins over a label of the same key).
pub(crate) fn with_stack_label(
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = labels.clone().into_iter().collect();
    out.insert(NAMESPACE_LABEL.to_string(), namespace.to_string());
    out
}

/// The plan for deploying `project` as stack `namespace`.
pub fn convert(project: &Project, namespace: &str) -> Result<StackPlan, ConvertError> {
    validate_stack_name(namespace)?;
    let networks = networks(project, namespace)?;
    let secrets = file_objects(&project.secrets, namespace, "secret", |name, data, obj| {
        SecretSpec {
            annotations: Some(Annotations {
                name,
                labels: with_stack_label(namespace, &obj.labels),
            }),
            data: if obj.driver.is_some() {
                Vec::new()
            } else {
                data
            },
            driver: obj.driver.as_ref().map(|d| Driver {
                name: d.clone(),
                options: obj.driver_opts.clone().into_iter().collect(),
            }),
            templating: templating(obj),
        }
    })?;
    let configs = file_objects(&project.configs, namespace, "config", |name, data, obj| {
        ConfigSpec {
            annotations: Some(Annotations {
                name,
                labels: with_stack_label(namespace, &obj.labels),
            }),
            data,
            templating: templating(obj),
        }
    })?;
    let mut services = Vec::new();
    for (key, config) in &project.services {
        services.push(ServicePlan {
            key: key.clone(),
            name: scope(namespace, key),
            spec: service::convert_service(project, namespace, key, config)?,
        });
    }
    Ok(StackPlan {
        namespace: namespace.to_string(),
        networks,
        secrets,
        configs,
        services,
    })
}

fn templating(obj: &FileObjectConfig) -> Option<Driver> {
    obj.template_driver.as_ref().map(|name| Driver {
        name: name.clone(),
        options: HashMap::new(),
    })
}

/// The real name of a top-level object: `name:` (set by the loader for external
/// ones), else scoped.
pub(crate) fn object_name(namespace: &str, key: &str, name: Option<&String>) -> String {
    match name {
        Some(n) if !n.is_empty() => n.clone(),
        _ => scope(namespace, key),
    }
}

/// The networks the services use (`default` for a service without `networks:`),
/// defined or the implicit default. An undefined one is a service error.
fn networks(project: &Project, namespace: &str) -> Result<Vec<NetworkPlan>, ConvertError> {
    let mut used = BTreeSet::new();
    for (key, service) in &project.services {
        if service.networks.is_empty() {
            used.insert(DEFAULT_NETWORK.to_string());
        }
        for net in service.networks.keys() {
            if net != DEFAULT_NETWORK && !project.networks.contains_key(net) {
                return Err(ServiceError::UndefinedNetwork(net.clone()).of(key));
            }
            used.insert(net.clone());
        }
    }
    let implicit = NetworkConfig::default();
    let mut out = Vec::new();
    for key in used {
        let config = project.networks.get(&key).unwrap_or(&implicit);
        out.push(network_plan(namespace, &key, config));
    }
    Ok(out)
}

fn network_plan(namespace: &str, key: &str, config: &NetworkConfig) -> NetworkPlan {
    if config.external {
        let name = object_name("", key, config.name.as_ref());
        // An external network without a name is called by its key.
        let name = if config.name.as_deref().is_none_or(str::is_empty) {
            key.to_string()
        } else {
            name
        };
        return NetworkPlan {
            key: key.to_string(),
            name,
            external: true,
            spec: NetworkSpec::default(),
        };
    }
    let name = object_name(namespace, key, config.name.as_ref());
    let ipam =
        (config.ipam.driver.is_some() || !config.ipam.config.is_empty()).then(|| IpamOptions {
            driver: config.ipam.driver.as_ref().map(|d| Driver {
                name: d.clone(),
                options: HashMap::new(),
            }),
            configs: config
                .ipam
                .config
                .iter()
                .map(|pool| ProtoIpamConfig {
                    subnet: pool.subnet.clone().unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
        });
    NetworkPlan {
        key: key.to_string(),
        name: name.clone(),
        external: false,
        spec: NetworkSpec {
            annotations: Some(Annotations {
                name,
                labels: with_stack_label(namespace, &config.labels),
            }),
            driver_config: Some(Driver {
                name: config
                    .driver
                    .clone()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "overlay".to_string()),
                options: config.driver_opts.clone().into_iter().collect(),
            }),
            ipv6_enabled: false,
            internal: config.internal,
            ipam,
            attachable: config.attachable,
            ingress: false,
        },
    }
}

/// Every non-external top-level secret or config, its payload read from its file
/// (a secret with a driver has none).
fn file_objects<S>(
    objects: &BTreeMap<String, FileObjectConfig>,
    namespace: &str,
    kind: &'static str,
    spec: impl Fn(String, Vec<u8>, &FileObjectConfig) -> S,
) -> Result<Vec<FilePlan<S>>, ConvertError> {
    let mut out = Vec::new();
    for (key, obj) in objects {
        if obj.external {
            continue;
        }
        let name = object_name(namespace, key, obj.name.as_ref());
        let data = match (&obj.file, &obj.driver) {
            (_, Some(_)) if kind == "secret" => Vec::new(),
            (Some(path), _) => read_payload(path)?,
            (None, _) => {
                return Err(ConvertError::NoFile {
                    kind,
                    key: key.clone(),
                });
            }
        };
        out.push(FilePlan {
            key: key.clone(),
            name: name.clone(),
            external: false,
            spec: spec(name, data, obj),
        });
    }
    Ok(out)
}

/// The file's bytes; a failure in Go's words (`open /x: no such file or directory`).
fn read_payload(path: &Path) -> Result<Vec<u8>, ConvertError> {
    std::fs::read(path).map_err(|e| ConvertError::ReadFile {
        path: path.display().to_string(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            std::io::ErrorKind::IsADirectory => "is a directory".to_string(),
            _ => e.to_string(),
        },
    })
}
