//! One compose service → a `ServiceSpec` (docker/cli `convert/service.go` and
//! `volume.go`): labels, container options, mounts, secret/config references,
//! network attachments, mode, endpoint, update/rollback, restart and resources.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use shoal_proto::v1::{
    Annotations, ConfigReference, ContainerSpec, DnsConfig, Driver, EndpointSpec, GlobalJob,
    GlobalService, HealthConfig, LogDriver, Mount, NetworkAttachmentConfig, Placement,
    PlacementPreference, PortConfig, ReplicatedJob, ReplicatedService, ResourceRequirements,
    Resources as ProtoResources, RestartPolicy as ProtoRestartPolicy, SecretReference, ServiceSpec,
    TaskSpec, Ulimit, UpdateConfig as ProtoUpdateConfig, endpoint_spec, mount, port_config,
    restart_policy, service_spec, task_spec, update_config,
};

use super::{
    ConvertError, DEFAULT_NETWORK, IMAGE_LABEL, ServiceError, object_name, with_stack_label,
};
use crate::model::{
    DeployConfig, HealthCheckConfig, Project, ResourceLimit, ResourceReservation, ServiceConfig,
    ServiceFileRef, ServicePortConfig, ServiceVolumeConfig, UlimitsConfig, UpdateConfig,
};

/// The file mode of a secret or config file unless the reference sets one.
const DEFAULT_FILE_MODE: u32 = 0o444;

pub(super) fn convert_service(
    project: &Project,
    namespace: &str,
    key: &str,
    service: &ServiceConfig,
) -> Result<ServiceSpec, ConvertError> {
    let image = check_image(key, service.image.as_deref())?;
    let fail = |e: ServiceError| e.of(key);
    let deploy = service.deploy.clone().unwrap_or_default();

    let mut service_labels = with_stack_label(namespace, &deploy.labels);
    service_labels.insert(IMAGE_LABEL.to_string(), image.clone());

    let container = ContainerSpec {
        image,
        labels: with_stack_label(namespace, &service.labels),
        command: service.entrypoint.clone().unwrap_or_default(),
        args: service.command.clone().unwrap_or_default(),
        hostname: service.hostname.clone().unwrap_or_default(),
        env: environment(&service.environment),
        dir: service.working_dir.clone().unwrap_or_default(),
        user: service.user.clone().unwrap_or_default(),
        mounts: mounts(project, namespace, &service.volumes).map_err(fail)?,
        healthcheck: healthcheck(service.healthcheck.as_ref()).map_err(fail)?,
        stop_grace_period: service.stop_grace_period.map(duration),
        stop_signal: service.stop_signal.clone().unwrap_or_default(),
        tty: service.tty,
        secrets: secrets(project, namespace, key, &service.secrets).map_err(fail)?,
        configs: configs(project, namespace, key, &service.configs).map_err(fail)?,
        hosts: service.extra_hosts.iter().map(|h| host_entry(h)).collect(),
        dns_config: (!service.dns.is_empty() || !service.dns_search.is_empty()).then(|| {
            DnsConfig {
                nameservers: service.dns.clone(),
                search: service.dns_search.clone(),
                options: Vec::new(),
            }
        }),
        read_only: service.read_only,
        init: service.init,
        sysctls: service.sysctls.clone().into_iter().collect(),
        capability_add: service.cap_add.clone(),
        capability_drop: service.cap_drop.clone(),
        ulimits: ulimits(&service.ulimits),
        open_stdin: service.stdin_open,
        oom_score_adj: service.oom_score_adj.unwrap_or(0),
        groups: Vec::new(),
    };

    let restart = restart_policy(&deploy, service.restart.as_deref()).map_err(fail)?;
    let task = TaskSpec {
        runtime: Some(task_spec::Runtime::Container(container)),
        resources: resources(&deploy).map_err(fail)?,
        restart,
        placement: placement(&deploy),
        networks: attachments(project, namespace, key, service).map_err(fail)?,
        log_driver: service.logging.as_ref().map(|l| LogDriver {
            name: l.driver.clone().unwrap_or_default(),
            options: l.options.clone().into_iter().collect(),
        }),
        force_update: 0,
    };
    Ok(ServiceSpec {
        annotations: Some(Annotations {
            name: super::scope(namespace, key),
            labels: service_labels,
        }),
        task: Some(task),
        mode: Some(mode(&deploy).map_err(fail)?),
        update: deploy
            .update_config
            .as_ref()
            .map(update_config)
            .transpose()
            .map_err(fail)?,
        rollback: deploy
            .rollback_config
            .as_ref()
            .map(update_config)
            .transpose()
            .map_err(fail)?,
        networks: Vec::new(),
        endpoint: endpoint(&deploy, &service.ports).map_err(fail)?,
    })
}

/// docker's reference check, reduced to what a compose file gets wrong: missing,
/// blank or with characters no reference can hold.
fn check_image(service: &str, image: Option<&str>) -> Result<String, ConvertError> {
    let invalid = |reason: &str| ConvertError::InvalidImage {
        service: service.to_string(),
        reason: reason.to_string(),
    };
    let image = image.unwrap_or("");
    if image.is_empty() {
        return Err(invalid("no image specified"));
    }
    let bad = image.chars().any(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '+'))
    });
    let (name, _) = image.split_once('@').unwrap_or((image, ""));
    let repository = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    if bad || repository.is_empty() {
        return Err(invalid("invalid reference format"));
    }
    let path = repository.split_once('/').map(|(host, rest)| {
        if host.contains(['.', ':']) || host == "localhost" {
            rest
        } else {
            repository
        }
    });
    if path
        .unwrap_or(repository)
        .chars()
        .any(|c| c.is_ascii_uppercase())
    {
        return Err(invalid(
            "invalid reference format: repository name must be lowercase",
        ));
    }
    Ok(image.to_string())
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `K=V` sorted as strings (docker sorts the joined entries, not the keys); a key
/// without a value is passed bare (unset in the container).
fn environment(env: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut out: Vec<String> = env
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    out.sort();
    out
}

/// `host:ip` → `ip host` (the /etc/hosts order the container runtime wants).
fn host_entry(entry: &str) -> String {
    match entry.split_once([':', '=']) {
        Some((host, ip)) => format!("{ip} {host}"),
        None => entry.to_string(),
    }
}

fn ulimits(ulimits: &BTreeMap<String, UlimitsConfig>) -> Vec<Ulimit> {
    // BTreeMap order is docker's sort by name.
    ulimits
        .iter()
        .map(|(name, u)| {
            let (soft, hard) = match u {
                UlimitsConfig::Single(n) => (*n, *n),
                UlimitsConfig::SoftHard { soft, hard } => (*soft, *hard),
            };
            Ulimit {
                name: name.clone(),
                soft,
                hard,
            }
        })
        .collect()
}

fn healthcheck(h: Option<&HealthCheckConfig>) -> Result<Option<HealthConfig>, ServiceError> {
    let Some(h) = h else { return Ok(None) };
    if h.disable {
        if !h.test.is_empty() {
            return Err(ServiceError::HealthcheckConflict);
        }
        return Ok(Some(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    Ok(Some(HealthConfig {
        test: h.test.clone(),
        interval: h.interval.map(duration),
        timeout: h.timeout.map(duration),
        retries: h
            .retries
            .map(|r| i32::try_from(r).unwrap_or(i32::MAX))
            .unwrap_or(0),
        start_period: h.start_period.map(duration),
    }))
}

fn mounts(
    project: &Project,
    namespace: &str,
    volumes: &[ServiceVolumeConfig],
) -> Result<Vec<Mount>, ServiceError> {
    volumes
        .iter()
        .map(|v| volume_mount(project, namespace, v))
        .collect()
}

fn volume_mount(
    project: &Project,
    namespace: &str,
    v: &ServiceVolumeConfig,
) -> Result<Mount, ServiceError> {
    let source = v.source.clone().filter(|s| !s.is_empty());
    let mut m = Mount {
        target: v.target.clone(),
        read_only: v.read_only,
        ..Default::default()
    };
    match v.r#type.as_str() {
        "volume" | "" => {
            m.r#type = mount::Type::Volume as i32;
            let nocopy = v.volume.as_ref().is_some_and(|o| o.nocopy);
            let mut options = v.volume.as_ref().map(|_| mount::VolumeOptions {
                no_copy: nocopy,
                ..Default::default()
            });
            let Some(key) = source else {
                // A bare name in the short syntax: an anonymous volume at that target.
                m.volume_options = options;
                return Ok(m);
            };
            let config = project
                .volumes
                .get(&key)
                .ok_or_else(|| ServiceError::UndefinedVolume(key.clone()))?;
            if config.external {
                m.source = config.name.clone().filter(|n| !n.is_empty()).unwrap_or(key);
                m.volume_options = options;
                return Ok(m);
            }
            m.source = object_name(namespace, &key, config.name.as_ref());
            let opts = options.get_or_insert_with(Default::default);
            opts.labels = with_stack_label(namespace, &config.labels);
            if config.driver.is_some() || !config.driver_opts.is_empty() {
                opts.driver_config = Some(Driver {
                    name: config.driver.clone().unwrap_or_default(),
                    options: config.driver_opts.clone().into_iter().collect(),
                });
            }
            m.volume_options = options;
        }
        "bind" => {
            m.r#type = mount::Type::Bind as i32;
            m.source = source.ok_or(ServiceError::BindWithoutSource)?;
            m.bind_options = v
                .bind
                .as_ref()
                .and_then(|b| b.propagation.clone())
                .map(|propagation| mount::BindOptions { propagation });
        }
        "tmpfs" => {
            if source.is_some() {
                return Err(ServiceError::TmpfsWithSource);
            }
            m.r#type = mount::Type::Tmpfs as i32;
            m.tmpfs_options = v.tmpfs.as_ref().map(|t| mount::TmpfsOptions {
                size_bytes: t.size.unwrap_or(0),
                mode: 0,
            });
        }
        other => return Err(ServiceError::MountType(other.to_string())),
    }
    Ok(m)
}

/// The parts of a secret/config reference both kinds share.
struct FileRef {
    name: String,
    target: String,
    uid: String,
    gid: String,
    mode: u32,
}

fn file_refs(
    refs: &[ServiceFileRef],
    defined: &BTreeMap<String, crate::model::FileObjectConfig>,
    namespace: &str,
    service: &str,
    kind: &'static str,
    undefined: fn(String) -> ServiceError,
) -> Result<Vec<FileRef>, ServiceError> {
    let mut out = Vec::new();
    let mut targets = HashSet::new();
    for r in refs {
        let obj = defined
            .get(&r.source)
            .ok_or_else(|| undefined(r.source.clone()))?;
        let name = if obj.external {
            obj.name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| r.source.clone())
        } else {
            object_name(namespace, &r.source, obj.name.as_ref())
        };
        let target = r
            .target
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| r.source.clone());
        if !targets.insert(target.clone()) {
            return Err(ServiceError::DuplicateTarget {
                kind,
                service: service.to_string(),
            });
        }
        out.push(FileRef {
            name,
            target,
            uid: r.uid.clone().unwrap_or_else(|| "0".into()),
            gid: r.gid.clone().unwrap_or_else(|| "0".into()),
            mode: r.mode.unwrap_or(DEFAULT_FILE_MODE),
        });
    }
    // Sorted by name, so a redeploy sends the same spec.
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.target.cmp(&b.target)));
    Ok(out)
}

fn secrets(
    project: &Project,
    namespace: &str,
    service: &str,
    refs: &[ServiceFileRef],
) -> Result<Vec<SecretReference>, ServiceError> {
    Ok(file_refs(
        refs,
        &project.secrets,
        namespace,
        service,
        "secret",
        ServiceError::UndefinedSecret,
    )?
    .into_iter()
    .map(|r| SecretReference {
        secret_id: String::new(),
        secret_name: r.name,
        target: r.target,
        uid: r.uid,
        gid: r.gid,
        mode: Some(r.mode),
    })
    .collect())
}

fn configs(
    project: &Project,
    namespace: &str,
    service: &str,
    refs: &[ServiceFileRef],
) -> Result<Vec<ConfigReference>, ServiceError> {
    Ok(file_refs(
        refs,
        &project.configs,
        namespace,
        service,
        "config",
        ServiceError::UndefinedConfig,
    )?
    .into_iter()
    .map(|r| ConfigReference {
        config_id: String::new(),
        config_name: r.name,
        target: r.target,
        uid: r.uid,
        gid: r.gid,
        mode: Some(r.mode),
    })
    .collect())
}

/// Whether docker counts a network as user-defined (its attachments get the service
/// key as an alias).
fn user_defined(name: &str) -> bool {
    !super::is_builtin_network(name)
}

/// Attachments sorted by target, each target the network's real name.
fn attachments(
    project: &Project,
    namespace: &str,
    key: &str,
    service: &ServiceConfig,
) -> Result<Vec<NetworkAttachmentConfig>, ServiceError> {
    let mut wanted = service.networks.clone();
    if wanted.is_empty() {
        wanted.insert(DEFAULT_NETWORK.to_string(), None);
    }
    let mut out = Vec::new();
    for (net, options) in &wanted {
        let target = match project.networks.get(net) {
            Some(config) if config.external => config
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| net.clone()),
            Some(config) => object_name(namespace, net, config.name.as_ref()),
            None if net == DEFAULT_NETWORK => super::scope(namespace, net),
            None => return Err(ServiceError::UndefinedNetwork(net.clone())),
        };
        let mut aliases = options
            .as_ref()
            .map(|o| o.aliases.clone())
            .unwrap_or_default();
        if user_defined(&target) {
            aliases.push(key.to_string());
        }
        out.push(NetworkAttachmentConfig {
            target,
            aliases,
            addresses: Vec::new(),
        });
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}

fn mode(deploy: &DeployConfig) -> Result<service_spec::Mode, ServiceError> {
    let replicas = deploy.replicas;
    match deploy.mode.as_deref().unwrap_or("") {
        "global" | "global-job" if replicas.is_some() => Err(ServiceError::ReplicasNotAllowed),
        "global" => Ok(service_spec::Mode::Global(GlobalService {})),
        "global-job" => Ok(service_spec::Mode::GlobalJob(GlobalJob {})),
        "replicated-job" => {
            let n = replicas.unwrap_or(1);
            Ok(service_spec::Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent: n,
                total_completions: n,
            }))
        }
        "replicated" | "" => Ok(service_spec::Mode::Replicated(ReplicatedService {
            replicas: replicas.unwrap_or(1),
        })),
        other => Err(ServiceError::UnknownMode(other.to_string())),
    }
}

fn endpoint(
    deploy: &DeployConfig,
    ports: &[ServicePortConfig],
) -> Result<Option<EndpointSpec>, ServiceError> {
    let mode = match deploy
        .endpoint_mode
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "vip" => endpoint_spec::ResolutionMode::Vip,
        "dnsrr" => endpoint_spec::ResolutionMode::Dnsrr,
        other => return Err(ServiceError::EndpointMode(other.to_string())),
    };
    let mut out = Vec::new();
    for p in ports {
        let protocol = match p.protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => port_config::Protocol::Tcp,
            "udp" => port_config::Protocol::Udp,
            "sctp" => port_config::Protocol::Sctp,
            other => return Err(ServiceError::Protocol(other.to_string())),
        };
        let publish_mode = match p.mode.as_str() {
            "" | "ingress" => port_config::PublishMode::Ingress,
            "host" => port_config::PublishMode::Host,
            other => return Err(ServiceError::PortMode(other.to_string())),
        };
        if mode == endpoint_spec::ResolutionMode::Dnsrr
            && publish_mode == port_config::PublishMode::Ingress
        {
            return Err(ServiceError::DnsrrIngress);
        }
        out.push(PortConfig {
            name: String::new(),
            protocol: protocol as i32,
            target_port: p.target,
            published_port: p.published,
            publish_mode: publish_mode as i32,
        });
    }
    let mut seen = HashSet::new();
    for p in out.iter().filter(|p| p.published_port != 0) {
        if !seen.insert((p.published_port, p.protocol)) {
            return Err(ServiceError::DuplicatePorts);
        }
    }
    // Stable, so ports with the same published port keep the file's order.
    out.sort_by_key(|p| p.published_port);
    Ok(Some(EndpointSpec {
        mode: mode as i32,
        ports: out,
    }))
}

fn update_config(u: &UpdateConfig) -> Result<ProtoUpdateConfig, ServiceError> {
    let failure_action = match u.failure_action.as_deref().unwrap_or("") {
        "" | "pause" => update_config::FailureAction::Pause,
        "continue" => update_config::FailureAction::Continue,
        "rollback" => update_config::FailureAction::Rollback,
        other => return Err(ServiceError::FailureAction(other.to_string())),
    };
    let order = match u.order.as_deref().unwrap_or("") {
        "" | "stop-first" => update_config::UpdateOrder::StopFirst,
        "start-first" => update_config::UpdateOrder::StartFirst,
        other => return Err(ServiceError::UpdateOrder(other.to_string())),
    };
    Ok(ProtoUpdateConfig {
        parallelism: u.parallelism.unwrap_or(1),
        delay: u.delay.map(duration),
        failure_action: failure_action as i32,
        monitor: u.monitor.map(duration),
        max_failure_ratio: u.max_failure_ratio.unwrap_or(0.0),
        order: order as i32,
    })
}

/// `deploy.restart_policy`, else the `restart:` key as a fallback (docker's
/// convertRestartPolicy): `no` or empty leaves Swarm's default (any).
fn restart_policy(
    deploy: &DeployConfig,
    restart: Option<&str>,
) -> Result<Option<ProtoRestartPolicy>, ServiceError> {
    use restart_policy::Condition;
    if let Some(p) = &deploy.restart_policy {
        let condition = match p.condition.as_deref().unwrap_or("") {
            "" | "any" => Condition::Any,
            "on-failure" => Condition::OnFailure,
            "none" => Condition::None,
            other => return Err(ServiceError::RestartCondition(other.to_string())),
        };
        return Ok(Some(ProtoRestartPolicy {
            condition: condition as i32,
            delay: p.delay.map(duration),
            max_attempts: p.max_attempts.unwrap_or(0),
            window: p.window.map(duration),
        }));
    }
    let restart = restart.unwrap_or("");
    let (name, count) = match restart.split_once(':') {
        Some((name, count)) => (name, Some(count)),
        None => (restart, None),
    };
    let any = || ProtoRestartPolicy {
        condition: Condition::Any as i32,
        ..Default::default()
    };
    match (name, count) {
        ("" | "no", None) => Ok(None),
        ("always" | "unless-stopped", None) => Ok(Some(any())),
        ("on-failure", count) => {
            let attempts = match count {
                None => 0,
                Some(c) => c.parse::<u64>().map_err(|_| {
                    ServiceError::RestartPolicyFormat(
                        "maximum retry count must be an integer".into(),
                    )
                })?,
            };
            Ok(Some(ProtoRestartPolicy {
                condition: Condition::OnFailure as i32,
                max_attempts: attempts,
                ..Default::default()
            }))
        }
        (_, Some(_)) if count.is_some_and(|c| c.contains(':')) => {
            Err(ServiceError::RestartPolicyFormat(restart.to_string()))
        }
        _ => Err(ServiceError::RestartPolicy(restart.to_string())),
    }
}

/// A decimal CPU count (`"0.50"`) as nano CPUs, exactly (docker parses a big.Rat).
pub(crate) fn nano_cpus(value: &str) -> Result<i64, ServiceError> {
    let bad = |why| ServiceError::Cpus(value.to_string(), why);
    let v = value.trim();
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad("failed to parse"));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 9 {
        return Err(bad("value is too precise"));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad("failed to parse"))?
    };
    let frac_nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .map_err(|_| bad("failed to parse"))?
    };
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(|| bad("value is too large"))
}

fn resources(deploy: &DeployConfig) -> Result<Option<ResourceRequirements>, ServiceError> {
    let limits = deploy
        .resources
        .limits
        .as_ref()
        .map(
            |l: &ResourceLimit| -> Result<ProtoResources, ServiceError> {
                Ok(ProtoResources {
                    nano_cpus: l.cpus.as_deref().map(nano_cpus).transpose()?.unwrap_or(0),
                    memory_bytes: l.memory.unwrap_or(0),
                    pids: l.pids.unwrap_or(0),
                })
            },
        )
        .transpose()?;
    let reservations = deploy
        .resources
        .reservations
        .as_ref()
        .map(
            |r: &ResourceReservation| -> Result<ProtoResources, ServiceError> {
                Ok(ProtoResources {
                    nano_cpus: r.cpus.as_deref().map(nano_cpus).transpose()?.unwrap_or(0),
                    memory_bytes: r.memory.unwrap_or(0),
                    pids: 0,
                })
            },
        )
        .transpose()?;
    if limits.is_none() && reservations.is_none() {
        return Ok(None);
    }
    Ok(Some(ResourceRequirements {
        limits,
        reservations,
    }))
}

fn placement(deploy: &DeployConfig) -> Option<Placement> {
    let p = &deploy.placement;
    if p.constraints.is_empty() && p.preferences.is_empty() && p.max_replicas_per_node.is_none() {
        return None;
    }
    Some(Placement {
        constraints: p.constraints.clone(),
        preferences: p
            .preferences
            .iter()
            .map(|pref| PlacementPreference {
                spread_descriptor: pref.spread.clone(),
            })
            .collect(),
        platforms: Vec::new(),
        max_replicas: p.max_replicas_per_node.unwrap_or(0),
    })
}
