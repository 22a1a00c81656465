//! The typed compose model the loader produces: docker/cli's `cli/compose/types`
//! (the v3 format of `docker stack deploy`), after interpolation, schema validation,
//! section transforms and the merge of several files.
//!
//! Field names are the compose keys in snake_case. Conventions, so a reader of the
//! converter does not have to guess:
//! - an optional scalar is `Option<_>`; `None` means the key was absent (docker's zero
//!   value, which it treats the same as absent);
//! - lists and maps are empty when absent;
//! - booleans that docker keeps as plain `bool` (absent = false) stay `bool`; those
//!   docker keeps as `*bool` (only `init`) are `Option<bool>`;
//! - durations are `std::time::Duration`, parsed with Go's `time.ParseDuration`
//!   grammar and printed back in Go's `Duration.String()` form;
//! - memory sizes are bytes (`i64`), parsed with go-units `RAMInBytes` (binary: `128M`
//!   is 134217728);
//! - paths that docker makes absolute (bind sources, `env_file`, secret/config
//!   `file`) are absolute against `Project::working_dir`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// An untyped YAML value (top-level and per-object `x-` extensions).
pub type Value = yaml_serde::Value;

/// The whole stack: every `-c` file loaded and merged in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Project {
    /// The compose format version all files resolved to ("3.13" when absent or "3").
    pub version: String,
    /// The directory of the first file (the cwd for stdin); relative paths resolve here.
    pub working_dir: PathBuf,
    pub services: BTreeMap<String, ServiceConfig>,
    pub networks: BTreeMap<String, NetworkConfig>,
    pub volumes: BTreeMap<String, VolumeConfig>,
    pub secrets: BTreeMap<String, SecretConfig>,
    pub configs: BTreeMap<String, ConfigObjConfig>,
    /// Top-level `x-*` keys, from the first file only (docker's merge ignores the
    /// others' top-level extensions).
    pub extras: BTreeMap<String, Value>,
    /// Warnings the loader logs while loading (docker prints them through logrus at
    /// warning level): host-IP ports dropped, `external.name` deprecations. In load
    /// order. `Project::warnings()` adds the per-service unsupported/deprecated ones.
    #[serde(skip)]
    pub load_warnings: Vec<String>,
}

/// One service (`services.<name>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServiceConfig {
    /// The compose key of the service (not scoped by the stack name).
    pub name: String,

    /// Unsupported by stack deploy (warned); kept for the warning and `stack config`.
    pub build: Option<BuildConfig>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Unsupported (warned).
    pub cgroupns_mode: Option<String>,
    /// Unsupported (warned).
    pub cgroup_parent: Option<String>,
    /// Container args; a string in the file is shell-split (shlex) by the loader.
    pub command: Option<Vec<String>>,
    pub configs: Vec<ServiceFileRef>,
    /// Deprecated (warned), never used.
    pub container_name: Option<String>,
    pub credential_spec: Option<CredentialSpecConfig>,
    /// Ignored silently by stack deploy.
    pub depends_on: Vec<String>,
    pub deploy: Option<DeployConfig>,
    /// Unsupported (warned).
    pub devices: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// Unsupported (warned).
    pub domainname: Option<String>,
    /// The container command (image ENTRYPOINT override); strings are shlex-split.
    pub entrypoint: Option<Vec<String>>,
    /// The final environment: `env_file` files read first, `environment` on top, then
    /// each key that has no value or an empty one takes the shell (process env) value
    /// when set. `None` = a bare `KEY` whose shell variable is unset (docker passes the
    /// bare name, i.e. unset in the container).
    pub environment: BTreeMap<String, Option<String>>,
    /// The env files as written, relative to `working_dir` (already applied to
    /// `environment`; kept for `stack config`).
    pub env_file: Vec<String>,
    /// Deprecated (warned), never used.
    pub expose: Vec<String>,
    /// Unsupported (warned).
    pub external_links: Vec<String>,
    /// `host:ip` entries as written (list form) or `host:ip` built from the mapping form.
    pub extra_hosts: Vec<String>,
    pub hostname: Option<String>,
    pub healthcheck: Option<HealthCheckConfig>,
    pub image: Option<String>,
    pub init: Option<bool>,
    /// Unsupported (warned).
    pub ipc: Option<String>,
    pub isolation: Option<String>,
    /// Container labels (list `k=v` or mapping form).
    pub labels: BTreeMap<String, String>,
    /// Unsupported (warned).
    pub links: Vec<String>,
    pub logging: Option<LoggingConfig>,
    /// Unsupported (warned).
    pub mac_address: Option<String>,
    /// Unsupported (warned).
    pub network_mode: Option<String>,
    /// Networks by compose key; `None` for the list form or a `net: null` entry.
    pub networks: BTreeMap<String, Option<ServiceNetworkConfig>>,
    /// Unsupported (warned).
    pub pid: Option<String>,
    /// Ports, short syntax expanded (ranges become one entry per port).
    pub ports: Vec<ServicePortConfig>,
    /// Unsupported (warned).
    pub privileged: bool,
    pub read_only: bool,
    /// Unsupported (warned) but the converter still reads it as the restart-policy
    /// fallback. `restart: no` is the string "no".
    pub restart: Option<String>,
    pub secrets: Vec<ServiceFileRef>,
    /// Unsupported (warned).
    pub security_opt: Vec<String>,
    /// Unsupported (warned).
    pub shm_size: Option<String>,
    pub stdin_open: bool,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    /// Ignored silently by stack deploy (tmpfs mounts of the long volume syntax work).
    pub tmpfs: Vec<String>,
    pub tty: bool,
    pub ulimits: BTreeMap<String, UlimitsConfig>,
    pub user: Option<String>,
    pub oom_score_adj: Option<i64>,
    /// Unsupported (warned).
    pub userns_mode: Option<String>,
    pub volumes: Vec<ServiceVolumeConfig>,
    pub working_dir: Option<String>,

    /// The service's `x-*` keys (3.7+).
    pub extras: BTreeMap<String, Value>,
}

/// `build:` (a string is the context).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BuildConfig {
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    pub args: BTreeMap<String, Option<String>>,
    pub labels: BTreeMap<String, String>,
    pub cache_from: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub network: Option<String>,
    pub target: Option<String>,
}

/// `credential_spec:` (Windows only).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CredentialSpecConfig {
    pub config: Option<String>,
    pub file: Option<String>,
    pub registry: Option<String>,
}

/// `logging:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoggingConfig {
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

/// `deploy:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeployConfig {
    /// replicated | global | replicated-job | global-job, as written (None = replicated).
    pub mode: Option<String>,
    pub replicas: Option<u64>,
    /// Service labels (list or mapping form).
    pub labels: BTreeMap<String, String>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub resources: Resources,
    pub restart_policy: Option<RestartPolicy>,
    pub placement: Placement,
    /// vip | dnsrr as written (None = vip).
    pub endpoint_mode: Option<String>,
}

/// `deploy.update_config` / `deploy.rollback_config`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UpdateConfig {
    /// None = the converter's default of 1; Some(0) = all at once.
    pub parallelism: Option<u64>,
    pub delay: Option<Duration>,
    /// continue | rollback | pause, as written.
    pub failure_action: Option<String>,
    pub monitor: Option<Duration>,
    /// A fraction, 0.0–1.0.
    pub max_failure_ratio: Option<f32>,
    /// stop-first | start-first, as written.
    pub order: Option<String>,
}

/// `deploy.resources`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Resources {
    pub limits: Option<ResourceLimit>,
    pub reservations: Option<ResourceReservation>,
}

/// `deploy.resources.limits`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResourceLimit {
    /// Decimal CPUs as written (`"0.50"`); the converter turns it into NanoCPUs.
    pub cpus: Option<String>,
    /// Bytes (go-units RAMInBytes, binary units).
    pub memory: Option<i64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

/// `deploy.resources.reservations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResourceReservation {
    /// Decimal CPUs as written.
    pub cpus: Option<String>,
    /// Bytes (go-units RAMInBytes, binary units).
    pub memory: Option<i64>,
    pub generic_resources: Vec<GenericResource>,
}

/// One `generic_resources` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GenericResource {
    pub discrete_resource_spec: Option<DiscreteGenericResource>,
}

/// `discrete_resource_spec: {kind, value}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DiscreteGenericResource {
    pub kind: String,
    pub value: i64,
}

/// `deploy.restart_policy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RestartPolicy {
    /// none | on-failure | any, as written (not validated by the loader).
    pub condition: Option<String>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

/// `deploy.placement`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Placement {
    pub constraints: Vec<String>,
    pub preferences: Vec<PlacementPreference>,
    pub max_replicas_per_node: Option<u64>,
}

/// One `placement.preferences` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PlacementPreference {
    /// The label to spread over, e.g. `node.labels.zone`.
    pub spread: String,
}

/// `healthcheck:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HealthCheckConfig {
    /// As written: a string test becomes `["CMD-SHELL", s]` here already (docker's
    /// HealthCheckTest decoding); a list is kept (`["CMD", …]`, `["NONE"]`, …).
    pub test: Vec<String>,
    pub timeout: Option<Duration>,
    pub interval: Option<Duration>,
    pub retries: Option<u64>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub disable: bool,
}

/// One `ulimits` entry: `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UlimitsConfig {
    Single(i64),
    SoftHard { soft: i64, hard: i64 },
}

/// A service's attachment options on one network.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServiceNetworkConfig {
    pub aliases: Vec<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

/// One published port (short syntax expanded; long syntax as given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServicePortConfig {
    /// ingress | host (short syntax gives ingress; long syntax as written, "" if absent).
    pub mode: String,
    /// The container port.
    pub target: u32,
    /// The published port; 0 = none given (swarm picks one from 30000–32767).
    pub published: u32,
    /// tcp | udp | sctp (short syntax defaults to tcp; long syntax as written, "" if absent).
    pub protocol: String,
}

/// One service mount (`volumes:` short or long syntax).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServiceVolumeConfig {
    /// volume | bind | tmpfs | npipe | cluster.
    pub r#type: String,
    /// Named volume key, or an absolute host path for binds (relative ones and `~`
    /// resolved); None for an anonymous volume or tmpfs.
    pub source: Option<String>,
    /// The path in the container.
    pub target: String,
    pub read_only: bool,
    pub consistency: Option<String>,
    pub bind: Option<ServiceVolumeBind>,
    pub volume: Option<ServiceVolumeVolume>,
    pub tmpfs: Option<ServiceVolumeTmpfs>,
}

/// `bind:` options of a mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceVolumeBind {
    /// rprivate | private | rshared | shared | rslave | slave.
    pub propagation: Option<String>,
}

/// `volume:` options of a mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceVolumeVolume {
    pub nocopy: bool,
    pub subpath: Option<String>,
}

/// `tmpfs:` options of a mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceVolumeTmpfs {
    /// Bytes.
    pub size: Option<i64>,
}

/// A service's reference to a secret or config (`- foo` = `{source: foo}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceFileRef {
    /// The compose key of the top-level secret/config.
    pub source: String,
    /// None = the converter defaults it to `source`.
    pub target: Option<String>,
    /// None = "0".
    pub uid: Option<String>,
    /// None = "0".
    pub gid: Option<String>,
    /// File mode bits (`0440` in YAML is octal: 288); None = 0o444.
    pub mode: Option<u32>,
}

/// A top-level network.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NetworkConfig {
    /// The real network name; None = `<stack>_<key>`. For external networks the loader
    /// sets it (to `external.name` or the key).
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub ipam: IpamConfig,
    pub external: bool,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub extras: BTreeMap<String, Value>,
}

/// `networks.<n>.ipam`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IpamConfig {
    pub driver: Option<String>,
    pub config: Vec<IpamPool>,
}

/// One `ipam.config` entry (the v3 schema only has `subnet`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IpamPool {
    pub subnet: Option<String>,
}

/// A top-level volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VolumeConfig {
    /// The real volume name; None = `<stack>_<key>`. Set for external volumes.
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
    pub extras: BTreeMap<String, Value>,
}

/// A top-level secret or config (docker's FileObjectConfig).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FileObjectConfig {
    /// The real object name; None = `<stack>_<key>`. Set for external ones.
    pub name: Option<String>,
    /// The payload file, absolute.
    pub file: Option<PathBuf>,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    /// `golang` enables payload templating.
    pub template_driver: Option<String>,
    pub extras: BTreeMap<String, Value>,
}

/// A top-level secret.
pub type SecretConfig = FileObjectConfig;
/// A top-level config.
pub type ConfigObjConfig = FileObjectConfig;
