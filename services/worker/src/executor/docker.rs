//! The Docker executor: a `ContainerSpec` task as a container of the local engine.
//!
//! The image must already be on the node (it is inspected, never pulled: a missing
//! image fails the task with Docker's `No such image: <ref>`). The container is named
//! `<service>.<slot>.<task id>` (global: `<service>.<node id>.<task id>`) and carries
//! labels linking it to its task. Exits are seen on ONE engine events stream (die
//! events of containers labelled `shoal.task.id`), not by polling; after the stream
//! reconnects, every container still awaited is inspected once, so a missed event
//! costs nothing.
//!
//! A task's `HealthConfig` becomes the container's `Healthcheck` (durations in ns;
//! `["NONE"]` disables the image's, an empty test inherits it): the engine runs the
//! checks, and their results come on the same events stream (`health_status: …`),
//! after one inspect when someone starts following a container's health.
//!
//! Networks ([`networks`]): before the container is created, the Docker network of
//! each of the task's networks is made sure of ([`networks::ensure`]: created if
//! missing, shared with the other workers of the host, never removed by a worker —
//! another one may use it at any time). The container is created on the first with
//! its allocated IPv4 address and connected to the others with theirs before it
//! starts; when the worker has `dns_addr`, its DNS server is that first network's
//! gateway, where the worker relays queries to shoal-dns (the engine's embedded
//! resolver forwards every name it does not know there). A network added to a running
//! task ([`Executor::attach`]) is connected live. Network aliases are not given to the
//! engine: names are shoal-dns's to answer (a service name is its VIP, not the local
//! containers the engine would list).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, Mount, MountBindOptions, MountTmpfsOptions, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, NetworkConnectRequest, NetworkingConfig, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{Task, mount};
use tokio::sync::{mpsc, watch};

use super::networks::{self, Join};
use super::{
    Executor, Exit, Handle, Kind, Liveness, LogLine, TaskError, service_name, split_lines,
    task_grace, task_id,
};
use crate::health::Health;

/// Labels linking a container to its task.
pub const LABEL_TASK_ID: &str = "shoal.task.id";
pub const LABEL_TASK_NAME: &str = "shoal.task.name";
pub const LABEL_TASK_SLOT: &str = "shoal.task.slot";
pub const LABEL_SERVICE_ID: &str = "shoal.service.id";
pub const LABEL_SERVICE_NAME: &str = "shoal.service.name";
pub const LABEL_NODE_ID: &str = "shoal.node.id";

/// How long the engine may take to answer when the executor starts.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pause before reopening a broken events stream.
const EVENTS_RETRY: Duration = Duration::from_millis(500);

type Waiters = Arc<Mutex<HashMap<String, watch::Sender<Option<i32>>>>>;
/// Containers whose health someone follows.
type HealthWatchers = Arc<Mutex<HashMap<String, watch::Sender<Health>>>>;

/// Runs container tasks on the local Docker Engine.
pub struct DockerExecutor {
    docker: Docker,
    node_id: String,
    /// Whether the worker relays DNS to shoal-dns (its `dns_addr` is set): containers
    /// then resolve through their first network's gateway.
    dns: bool,
    /// Containers whose exit someone awaits: the events stream resolves them.
    waiters: Waiters,
    /// Containers whose health someone follows: the events stream updates them.
    health: HealthWatchers,
    events: tokio::task::JoinHandle<()>,
}

impl Drop for DockerExecutor {
    fn drop(&mut self) {
        self.events.abort();
    }
}

/// The engine's own message for an API error, else the error.
pub(crate) fn docker_err(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The HTTP status of an engine API error.
pub(crate) fn status_code(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// `busybox` → `busybox:latest`, as Docker names an image reference without a tag.
pub fn normalize_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The container name: `<service>.<slot>.<task id>` or `<service>.<node id>.<task id>`.
pub fn container_name(task: &Task) -> String {
    format!("{}.{}", super::task_name(task), task_id(task))
}

impl DockerExecutor {
    /// Connects to the local engine; None when none answers soon.
    pub async fn connect(node_id: &str) -> Option<Arc<Self>> {
        Self::connect_with_dns(node_id, "").await
    }

    /// Like [`DockerExecutor::connect`]; with `dns_addr` (shoal-dns's IP:PORT, empty:
    /// none) containers on shoal networks get their first network's gateway as their
    /// DNS server.
    pub async fn connect_with_dns(node_id: &str, dns_addr: &str) -> Option<Arc<Self>> {
        let docker = Docker::connect_with_local_defaults().ok()?;
        let docker = match tokio::time::timeout(PROBE_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "no Docker Engine: container tasks will be rejected");
                return None;
            }
            Err(_) => {
                tracing::info!(
                    "the Docker Engine did not answer: container tasks will be rejected"
                );
                return None;
            }
        };
        match tokio::time::timeout(PROBE_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => {}
            _ => return None,
        }
        let waiters: Waiters = Arc::default();
        let health: HealthWatchers = Arc::default();
        let events = tokio::spawn(watch_events(
            docker.clone(),
            waiters.clone(),
            health.clone(),
        ));
        Some(Arc::new(Self {
            docker,
            node_id: node_id.to_string(),
            dns: !dns_addr.is_empty(),
            waiters,
            health,
            events,
        }))
    }

    /// The engine client (tests use it to look at containers).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Containers of this node's tasks: (task id, container id), running or not.
    pub async fn managed(&self) -> Vec<(String, String)> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!("{LABEL_NODE_ID}={}", self.node_id)],
        );
        let opts = bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        match self.docker.list_containers(Some(opts)).await {
            Ok(list) => list
                .into_iter()
                .filter_map(|c| {
                    let task = c.labels.as_ref()?.get(LABEL_TASK_ID)?.clone();
                    Some((task, c.id?))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list this node's containers");
                Vec::new()
            }
        }
    }

    /// Exit code of a container that is not running; None while it runs.
    async fn exited(&self, id: &str) -> Result<Option<i32>, bollard::errors::Error> {
        let info = self.docker.inspect_container(id, None).await?;
        let state = info.state.unwrap_or_default();
        if state.running.unwrap_or(false) || state.restarting.unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(
            state
                .exit_code
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(-1),
        ))
    }

    /// Connects a container to each of `joins` it is not on yet, with its address.
    async fn connect_missing(&self, id: &str, joins: &[Join]) -> Result<(), TaskError> {
        if joins.is_empty() {
            return Ok(());
        }
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| TaskError::failed(docker_err(&e)))?;
        let on: Vec<String> = info
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        for join in joins.iter().filter(|j| !on.contains(&j.docker_name)) {
            let request = NetworkConnectRequest {
                container: id.to_string(),
                endpoint_config: Some(endpoint(join)),
            };
            match self
                .docker
                .connect_network(&join.docker_name, request)
                .await
            {
                Ok(()) => {
                    tracing::debug!(container = %id, network = %join.docker_name, address = %join.address, "connected");
                }
                // Someone (an earlier attempt) connected it meanwhile.
                Err(e) if docker_err(&e).contains("already exists") => {}
                Err(e) => {
                    return Err(TaskError::failed(format!(
                        "connecting to network {} with address {}: {}",
                        join.docker_name,
                        join.address,
                        docker_err(&e)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes sure the Docker networks of the task's networks exist.
    async fn ensure_networks(&self, task: &Task) -> Result<(), TaskError> {
        for attachment in &task.networks {
            if let Some(network) = &attachment.network {
                networks::ensure(&self.docker, network).await?;
            }
        }
        Ok(())
    }

    fn create_body(&self, task: &Task, joins: &[Join]) -> Result<ContainerCreateBody, TaskError> {
        let Some(Runtime::Container(spec)) = task.spec.as_ref().and_then(|s| s.runtime.as_ref())
        else {
            return Err(TaskError::rejected("not a container task"));
        };
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_TASK_ID.into(), task_id(task).to_string());
        labels.insert(LABEL_TASK_NAME.into(), super::task_name(task));
        labels.insert(LABEL_TASK_SLOT.into(), task.slot.to_string());
        labels.insert(LABEL_SERVICE_ID.into(), task.service_id.clone());
        labels.insert(LABEL_SERVICE_NAME.into(), service_name(task));
        labels.insert(LABEL_NODE_ID.into(), self.node_id.clone());
        let mut mounts = Vec::with_capacity(spec.mounts.len());
        for m in &spec.mounts {
            // Swarm's node-side checks (the control API lets these through).
            if !m.target.starts_with('/') {
                return Err(TaskError::rejected(format!(
                    "invalid mount target, must be an absolute path: {}",
                    m.target
                )));
            }
            if m.r#type == mount::Type::Bind as i32 && !m.source.starts_with('/') {
                return Err(TaskError::rejected(format!(
                    "invalid bind mount source, must be an absolute path: {}",
                    m.source
                )));
            }
            let typ = match mount::Type::try_from(m.r#type) {
                Ok(mount::Type::Bind) => MountType::BIND,
                Ok(mount::Type::Volume) => MountType::VOLUME,
                Ok(mount::Type::Tmpfs) => MountType::TMPFS,
                Err(_) => {
                    return Err(TaskError::failed(format!(
                        "mount {}: unknown type {}",
                        m.target, m.r#type
                    )));
                }
            };
            mounts.push(Mount {
                target: Some(m.target.clone()),
                source: (!m.source.is_empty()).then(|| m.source.clone()),
                typ: Some(typ),
                read_only: Some(m.read_only),
                tmpfs_options: m.tmpfs_options.as_ref().map(|t| MountTmpfsOptions {
                    size_bytes: (t.size_bytes > 0).then_some(t.size_bytes),
                    mode: (t.mode > 0).then_some(i64::from(t.mode)),
                    options: None,
                }),
                volume_options: m.volume_options.as_ref().map(|v| MountVolumeOptions {
                    no_copy: Some(v.no_copy),
                    labels: (!v.labels.is_empty()).then(|| v.labels.clone()),
                    driver_config: v.driver_config.as_ref().map(|d| {
                        MountVolumeOptionsDriverConfig {
                            name: (!d.name.is_empty()).then(|| d.name.clone()),
                            options: (!d.options.is_empty()).then(|| d.options.clone()),
                        }
                    }),
                    subpath: None,
                }),
                bind_options: match m.bind_options.as_ref() {
                    Some(b) if !b.propagation.is_empty() => Some(MountBindOptions {
                        propagation: Some(b.propagation.parse().map_err(|_| {
                            TaskError::failed(format!(
                                "mount {}: invalid propagation {:?}: want rprivate, private, \
                                 rshared, shared, rslave or slave",
                                m.target, b.propagation
                            ))
                        })?),
                        ..Default::default()
                    }),
                    _ => None,
                },
                ..Default::default()
            });
        }
        let limits = task
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.limits.as_ref());
        let grace = task_grace(task);
        let healthcheck = docker_healthcheck(spec.healthcheck.as_ref())?;
        let dns_config = spec.dns_config.clone().unwrap_or_default();
        let log_config = task
            .spec
            .as_ref()
            .and_then(|s| s.log_driver.as_ref())
            .filter(|l| !l.name.is_empty())
            .map(|l| HostConfigLogConfig {
                typ: Some(l.name.clone()),
                config: (!l.options.is_empty()).then(|| l.options.clone()),
            });
        let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        // Created on its first network; the others are connected before it starts.
        let first = joins.first();
        let networking_config = first.map(|j| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(j.docker_name.clone(), endpoint(j))])),
        });
        Ok(ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
            cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            working_dir: (!spec.dir.is_empty()).then(|| spec.dir.clone()),
            user: (!spec.user.is_empty()).then(|| spec.user.clone()),
            hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
            labels: Some(labels),
            tty: Some(spec.tty),
            stop_signal: (!spec.stop_signal.is_empty()).then(|| spec.stop_signal.clone()),
            stop_timeout: Some(i64::try_from(grace.as_secs().max(1)).unwrap_or(i64::MAX)),
            healthcheck,
            open_stdin: spec.open_stdin.then_some(true),
            host_config: Some(HostConfig {
                mounts: (!mounts.is_empty()).then_some(mounts),
                memory: limits.map(|l| l.memory_bytes).filter(|m| *m > 0),
                nano_cpus: limits.map(|l| l.nano_cpus).filter(|c| *c > 0),
                pids_limit: limits.map(|l| l.pids).filter(|p| *p > 0),
                network_mode: first.map(|j| j.docker_name.clone()),
                // The task's own nameservers win over the worker's relay.
                dns: some_vec(&dns_config.nameservers).or_else(|| {
                    first
                        .filter(|j| self.dns && !j.gateway.is_empty())
                        .map(|j| vec![j.gateway.clone()])
                }),
                dns_search: some_vec(&dns_config.search),
                dns_options: some_vec(&dns_config.options),
                extra_hosts: some_vec(&extra_hosts(&spec.hosts)),
                readonly_rootfs: spec.read_only.then_some(true),
                init: spec.init,
                sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone()),
                cap_add: some_vec(&spec.capability_add),
                cap_drop: some_vec(&spec.capability_drop),
                ulimits: (!spec.ulimits.is_empty()).then(|| {
                    spec.ulimits
                        .iter()
                        .map(|u| ResourcesUlimits {
                            name: Some(u.name.clone()),
                            soft: Some(u.soft),
                            hard: Some(u.hard),
                        })
                        .collect()
                }),
                oom_score_adj: (spec.oom_score_adj != 0).then_some(spec.oom_score_adj),
                group_add: some_vec(&spec.groups),
                log_config,
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        })
    }
}

/// The engine's `ExtraHosts` (`host:ip`) from Swarm's `hosts` lines (`IP HOSTNAME
/// [ALIAS...]`, as `/etc/hosts`); a line already in `host:ip` form is kept.
fn extra_hosts(hosts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in hosts {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.clone().next()) {
            (Some(ip), Some(_)) => out.extend(fields.map(|name| format!("{name}:{ip}"))),
            (Some(single), None) => out.push(single.to_string()),
            _ => {}
        }
    }
    out
}

/// A container's endpoint on one of its networks: its allocated address.
fn endpoint(join: &Join) -> EndpointSettings {
    EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(join.address.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The engine's healthcheck for a task's `HealthConfig`: durations in nanoseconds, zero
/// (unset: the image's, or Docker's defaults) left out; None without a config (the
/// image's healthcheck, if any, applies). Docker runs CMD and CMD-SHELL only.
fn docker_healthcheck(
    cfg: Option<&shoal_proto::v1::HealthConfig>,
) -> Result<Option<bollard::models::HealthConfig>, TaskError> {
    let Some(cfg) = cfg else { return Ok(None) };
    if let Some(kind) = cfg.test.first()
        && !matches!(kind.as_str(), "NONE" | "CMD" | "CMD-SHELL")
    {
        return Err(TaskError::failed(format!(
            "healthcheck {kind:?}: a container's test is NONE, CMD or CMD-SHELL"
        )));
    }
    let ns = |d: Option<&prost_types::Duration>| {
        d.and_then(|d| Duration::try_from(*d).ok())
            .filter(|d| !d.is_zero())
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    };
    Ok(Some(bollard::models::HealthConfig {
        test: (!cfg.test.is_empty()).then(|| cfg.test.clone()),
        interval: ns(cfg.interval.as_ref()),
        timeout: ns(cfg.timeout.as_ref()),
        retries: (cfg.retries > 0).then_some(i64::from(cfg.retries)),
        start_period: ns(cfg.start_period.as_ref()),
        start_interval: None,
    }))
}

/// A container's health as the engine says it; None: it has no healthcheck.
fn engine_health(status: Option<HealthStatusEnum>) -> Option<Health> {
    match status? {
        HealthStatusEnum::STARTING => Some(Health::Starting),
        HealthStatusEnum::HEALTHY => Some(Health::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    }
}

/// Follows the engine's events of task containers (die, health_status) and resolves
/// their waiters and health watchers.
async fn watch_events(docker: Docker, waiters: Waiters, health: HealthWatchers) {
    let mut filters = HashMap::new();
    filters.insert("type".to_string(), vec!["container".to_string()]);
    filters.insert(
        "event".to_string(),
        vec!["die".to_string(), "health_status".to_string()],
    );
    filters.insert("label".to_string(), vec![LABEL_TASK_ID.to_string()]);
    let mut first = true;
    loop {
        let opts = EventsOptionsBuilder::new().filters(&filters).build();
        let mut events = docker.events(Some(opts));
        if !first {
            // Exits while the stream was down: look at every awaited container once.
            let ids: Vec<String> = waiters
                .lock()
                .map(|w| w.keys().cloned().collect())
                .unwrap_or_default();
            for id in ids {
                if let Ok(info) = docker.inspect_container(&id, None).await {
                    let state = info.state.unwrap_or_default();
                    if !state.running.unwrap_or(false) {
                        let code = state
                            .exit_code
                            .and_then(|c| i32::try_from(c).ok())
                            .unwrap_or(-1);
                        resolve(&waiters, &id, code);
                    }
                }
            }
            // And health changes.
            let ids: Vec<String> = health
                .lock()
                .map(|w| w.keys().cloned().collect())
                .unwrap_or_default();
            for id in ids {
                if let Ok(info) = docker.inspect_container(&id, None).await
                    && let Some(h) =
                        engine_health(info.state.and_then(|s| s.health).and_then(|h| h.status))
                {
                    set_health(&health, &id, h);
                }
            }
        }
        first = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(msg) => {
                    let Some(actor) = msg.actor else { continue };
                    let Some(id) = actor.id else { continue };
                    let action = msg.action.unwrap_or_default();
                    if let Some(status) = action.strip_prefix("health_status:") {
                        if let Some(h) = engine_health(status.trim().parse().ok()) {
                            set_health(&health, &id, h);
                        }
                        continue;
                    }
                    let code = actor
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get("exitCode"))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(-1);
                    resolve(&waiters, &id, code);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "docker events stream broke; reopening");
                    break;
                }
            }
        }
        tokio::time::sleep(EVENTS_RETRY).await;
    }
}

fn resolve(waiters: &Waiters, id: &str, code: i32) {
    if let Ok(w) = waiters.lock()
        && let Some(tx) = w.get(id)
    {
        let _ = tx.send(Some(code));
    }
}

/// Passes a container's health on to whoever follows it (forgetting it once nobody
/// does).
fn set_health(watchers: &HealthWatchers, id: &str, health: Health) {
    if let Ok(mut w) = watchers.lock()
        && let Some(tx) = w.get(id)
    {
        if tx.is_closed() {
            w.remove(id);
        } else {
            tx.send_if_modified(|h| std::mem::replace(h, health) != health);
        }
    }
}

#[async_trait::async_trait]
impl Executor for DockerExecutor {
    fn kind(&self) -> Kind {
        Kind::Docker
    }

    async fn prepare(&self, task: &Task) -> Result<Handle, TaskError> {
        let joins = networks::joins(task)?;
        let body = self.create_body(task, &joins)?;
        let image = body.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err(TaskError::rejected("container task has no image"));
        }
        if let Err(e) = self.docker.inspect_image(&image).await {
            return Err(TaskError::failed(if status_code(&e) == Some(404) {
                format!("No such image: {}", normalize_image(&image))
            } else {
                format!("inspecting image {image}: {}", docker_err(&e))
            }));
        }
        self.ensure_networks(task).await?;
        let name = container_name(task);
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let id = match self.docker.create_container(Some(opts), body).await {
            Ok(created) => created.id,
            Err(e) if status_code(&e) == Some(409) => {
                // Created by an earlier attempt of this same task (the name holds its id).
                let info = self
                    .docker
                    .inspect_container(&name, None)
                    .await
                    .map_err(|e| TaskError::failed(docker_err(&e)))?;
                let id = info.id.unwrap_or_default();
                if id.is_empty() {
                    return Err(TaskError::failed(docker_err(&e)));
                }
                id
            }
            Err(e) => return Err(TaskError::failed(docker_err(&e))),
        };
        let handle = Handle::Container { id: id.clone() };
        if let Err(e) = self.connect_missing(&id, &joins).await {
            // Nothing records a handle that failed: leave nothing behind.
            let _ = self.remove(&handle).await;
            return Err(e);
        }
        Ok(handle)
    }

    async fn attach(&self, task: &Task, handle: &Handle) -> Result<(), TaskError> {
        let Handle::Container { id } = handle else {
            return Err(TaskError::failed("not a container handle"));
        };
        let joins = networks::joins(task)?;
        self.ensure_networks(task).await?;
        self.connect_missing(id, &joins).await
    }

    async fn start(&self, _task: &Task, handle: &mut Handle) -> Result<(), TaskError> {
        let Handle::Container { id } = handle else {
            return Err(TaskError::failed("not a container handle"));
        };
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| TaskError::failed(docker_err(&e)))
    }

    async fn wait(&self, handle: &Handle) -> Exit {
        let Handle::Container { id } = handle else {
            return Exit::Unknown("not a container handle".into());
        };
        let mut rx = {
            let Ok(mut w) = self.waiters.lock() else {
                return Exit::Unknown("waiters lock poisoned".into());
            };
            w.entry(id.clone())
                .or_insert_with(|| watch::channel(None).0)
                .subscribe()
        };
        // It may have ended before we listened.
        let code = match self.exited(id).await {
            Ok(Some(code)) => Some(code),
            Ok(None) => match rx.wait_for(Option::is_some).await {
                Ok(code) => Some(code.unwrap_or(-1)),
                Err(_) => None,
            },
            Err(e) if status_code(&e) == Some(404) => None,
            Err(_) => match rx.wait_for(Option::is_some).await {
                Ok(code) => Some(code.unwrap_or(-1)),
                Err(_) => None,
            },
        };
        if let Ok(mut w) = self.waiters.lock()
            && w.get(id).is_some_and(|tx| tx.receiver_count() <= 1)
        {
            w.remove(id);
        }
        match code {
            Some(code) => Exit::Code(code),
            None => Exit::Unknown(format!("container {id} is gone")),
        }
    }

    async fn health(
        &self,
        _task: &Task,
        handle: &Handle,
        _healthy: bool,
    ) -> Option<watch::Receiver<Health>> {
        let Handle::Container { id } = handle else {
            return None;
        };
        let (tx, rx) = watch::channel(Health::Starting);
        // Listen before looking, so that no change is missed.
        if let Ok(mut w) = self.health.lock() {
            w.retain(|_, tx| !tx.is_closed());
            w.insert(id.clone(), tx.clone());
        }
        let now = match self.docker.inspect_container(id, None).await {
            Ok(info) => engine_health(info.state.and_then(|s| s.health).and_then(|h| h.status)),
            Err(e) => {
                tracing::warn!(container = %id, error = %docker_err(&e), "cannot inspect the container's health");
                None
            }
        };
        let Some(now) = now else {
            // No healthcheck (from the task or the image).
            if let Ok(mut w) = self.health.lock() {
                w.remove(id);
            }
            return None;
        };
        // An event may have come first: it is newer than what inspect saw.
        tx.send_if_modified(|h| {
            let take = *h == Health::Starting && now != Health::Starting;
            if take {
                *h = now;
            }
            take
        });
        Some(rx)
    }

    async fn inspect(&self, handle: &Handle) -> Liveness {
        let Handle::Container { id } = handle else {
            return Liveness::Gone;
        };
        match self.docker.inspect_container(id, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                if state.running.unwrap_or(false) || state.restarting.unwrap_or(false) {
                    Liveness::Running
                } else if state
                    .started_at
                    .as_deref()
                    .is_none_or(|s| s.starts_with("0001-"))
                {
                    // Created, never started.
                    Liveness::Gone
                } else {
                    Liveness::Exited(Exit::Code(
                        state
                            .exit_code
                            .and_then(|c| i32::try_from(c).ok())
                            .unwrap_or(-1),
                    ))
                }
            }
            Err(_) => Liveness::Gone,
        }
    }

    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), TaskError> {
        let Handle::Container { id } = handle else {
            return Err(TaskError::failed("not a container handle"));
        };
        let secs = i32::try_from(grace.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::new().t(secs).build();
        match self.docker.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_code(&e), Some(304) | Some(404)) => Ok(()),
            Err(e) => Err(TaskError::failed(docker_err(&e))),
        }
    }

    async fn remove(&self, handle: &Handle) -> Result<(), TaskError> {
        let Handle::Container { id } = handle else {
            return Err(TaskError::failed("not a container handle"));
        };
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            // Already being removed.
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(TaskError::failed(docker_err(&e))),
        }
    }

    async fn logs(&self, handle: &Handle, tail: i64) -> Result<Vec<LogLine>, TaskError> {
        let Handle::Container { id } = handle else {
            return Err(TaskError::failed("not a container handle"));
        };
        let tail = if tail < 0 {
            "all".to_string()
        } else {
            tail.to_string()
        };
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail)
            .build();
        let mut stream = self.docker.logs(id, Some(opts));
        let mut out = Vec::new();
        let (mut po, mut pe) = (Vec::new(), Vec::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| TaskError::failed(docker_err(&e)))?;
            push_output(&mut out, &mut po, &mut pe, chunk, true);
        }
        flush_pending(&mut out, &mut po, false, true);
        flush_pending(&mut out, &mut pe, true, true);
        Ok(out)
    }

    async fn follow(&self, handle: &Handle, from_start: bool, lines: mpsc::Sender<LogLine>) {
        let Handle::Container { id } = handle else {
            return;
        };
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .timestamps(true)
            .tail(if from_start { "all" } else { "0" })
            .build();
        let mut stream = self.docker.logs(id, Some(opts));
        let (mut po, mut pe) = (Vec::new(), Vec::new());
        while let Some(Ok(chunk)) = stream.next().await {
            let mut out = Vec::new();
            push_output(&mut out, &mut po, &mut pe, chunk, true);
            for line in out {
                if lines.send(line).await.is_err() {
                    return;
                }
            }
        }
        let mut out = Vec::new();
        flush_pending(&mut out, &mut po, false, true);
        flush_pending(&mut out, &mut pe, true, true);
        for line in out {
            if lines.send(line).await.is_err() {
                return;
            }
        }
    }
}

fn push_output(
    out: &mut Vec<LogLine>,
    pending_out: &mut Vec<u8>,
    pending_err: &mut Vec<u8>,
    chunk: bollard::container::LogOutput,
    timestamps: bool,
) {
    use bollard::container::LogOutput;
    let (stderr, message, pending) = match chunk {
        LogOutput::StdErr { message } => (true, message, pending_err),
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (false, message, pending_out)
        }
        LogOutput::StdIn { .. } => return,
    };
    for data in split_lines(pending, &message) {
        out.push(parse_line(data, stderr, timestamps));
    }
}

fn flush_pending(out: &mut Vec<LogLine>, pending: &mut Vec<u8>, stderr: bool, timestamps: bool) {
    if !pending.is_empty() {
        out.push(parse_line(std::mem::take(pending), stderr, timestamps));
    }
}

/// A line as the engine sends it with `timestamps`: `<RFC 3339 nanos> <data>`.
fn parse_line(data: Vec<u8>, stderr: bool, timestamps: bool) -> LogLine {
    if timestamps && let Some(space) = data.iter().position(|b| *b == b' ') {
        let ts = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok());
        if ts.is_some() {
            return LogLine {
                stderr,
                timestamp: ts,
                data: data[space + 1..].to_vec(),
            };
        }
    }
    LogLine {
        stderr,
        timestamp: None,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_get_docker_s_default_tag() {
        assert_eq!(normalize_image("foo"), "foo:latest");
        assert_eq!(normalize_image("foo:1"), "foo:1");
        assert_eq!(normalize_image("reg:5000/foo"), "reg:5000/foo:latest");
        assert_eq!(normalize_image("foo@sha256:abc"), "foo@sha256:abc");
    }

    #[test]
    fn hosts_lines_become_extra_hosts() {
        let hosts = vec![
            "10.0.0.1 db db.local".to_string(),
            "cache:10.0.0.2".to_string(),
        ];
        assert_eq!(
            extra_hosts(&hosts),
            vec!["db:10.0.0.1", "db.local:10.0.0.1", "cache:10.0.0.2"]
        );
    }

    #[test]
    fn timestamped_lines_are_split() {
        let l = parse_line(
            b"2024-01-02T03:04:05.123456789Z hello".to_vec(),
            false,
            true,
        );
        assert_eq!(l.data, b"hello");
        assert!(l.timestamp.is_some());
        let l = parse_line(b"no-time here".to_vec(), true, true);
        assert_eq!(l.data, b"no-time here");
        assert!(l.stderr);
    }
}
