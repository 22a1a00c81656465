//! `service create` / `service update` flags and their conversion into a `ServiceSpec`,
//! with docker's parsers (Go durations, `units.RAMInBytes`, decimal CPUs, `--publish`,
//! `--mount`) and docker's wording for bad values: `invalid argument "-1" for
//! "--replicas" flag: …`.
//!
//! The flags both commands take live in [`ServiceFlags`], applied the same way to a
//! fresh spec (create) and to the spec read from the manager (update): a flag that was
//! not given changes nothing, and a block the spec lacks (restart policy, update
//! config, healthcheck…) starts from Swarm's defaults.

use std::collections::HashMap;
use std::time::Duration;

use shoal_proto::v1::{
    Annotations, ContainerSpec, EndpointSpec, GlobalJob, GlobalService, HealthConfig, Mount,
    NetworkAttachmentConfig, Placement, PlacementPreference, PortConfig, ProcessSpec,
    ReplicatedJob, ReplicatedService, Resources, RestartPolicy, ServiceSpec, TaskSpec,
    UpdateConfig, endpoint_spec, mount, port_config, restart_policy, service_spec, task_spec,
    update_config,
};

/// Flags `service create` and `service update` share, with the same names and meaning.
/// Values are taken as text and parsed here so a bad one is reported with docker's
/// wording and exit code 1; `None` means the flag was not given.
#[derive(Debug, Default, Clone, PartialEq, clap::Args)]
pub struct ServiceFlags {
    /// Number of tasks.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub replicas: Option<String>,
    /// Maximum number of tasks per node (default 0 = unlimited).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub replicas_max_per_node: Option<String>,
    /// Reserve CPUs.
    #[arg(long, value_name = "DECIMAL", allow_hyphen_values = true)]
    pub reserve_cpu: Option<String>,
    /// Reserve Memory.
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub reserve_memory: Option<String>,
    /// Limit CPUs.
    #[arg(long, value_name = "DECIMAL", allow_hyphen_values = true)]
    pub limit_cpu: Option<String>,
    /// Limit Memory.
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub limit_memory: Option<String>,
    /// Restart when condition is met ("none", "on-failure", "any") (default "any").
    #[arg(long, value_name = "CONDITION")]
    pub restart_condition: Option<String>,
    /// Delay between restart attempts (ns|us|ms|s|m|h) (default 5s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub restart_delay: Option<String>,
    /// Maximum number of restarts before giving up.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub restart_max_attempts: Option<String>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub restart_window: Option<String>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h) (default 10s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub stop_grace_period: Option<String>,
    /// Working directory inside the container.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Container hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Maximum number of tasks updated simultaneously (0 to update all at once).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub update_parallelism: Option<String>,
    /// Delay between updates (ns|us|ms|s|m|h) (default 0s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub update_delay: Option<String>,
    /// Action on update failure ("pause", "continue", "rollback") (default "pause").
    #[arg(long, value_name = "ACTION")]
    pub update_failure_action: Option<String>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h) (default 5s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub update_monitor: Option<String>,
    /// Failure rate to tolerate during an update (default 0).
    #[arg(long, value_name = "RATIO", allow_hyphen_values = true)]
    pub update_max_failure_ratio: Option<String>,
    /// Update order ("start-first", "stop-first") (default "stop-first").
    #[arg(long, value_name = "ORDER")]
    pub update_order: Option<String>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub rollback_parallelism: Option<String>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h) (default 0s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub rollback_delay: Option<String>,
    /// Action on rollback failure ("pause", "continue") (default "pause").
    #[arg(long, value_name = "ACTION")]
    pub rollback_failure_action: Option<String>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h) (default 5s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub rollback_monitor: Option<String>,
    /// Failure rate to tolerate during a rollback (default 0).
    #[arg(long, value_name = "RATIO", allow_hyphen_values = true)]
    pub rollback_max_failure_ratio: Option<String>,
    /// Rollback order ("start-first", "stop-first") (default "stop-first").
    #[arg(long, value_name = "ORDER")]
    pub rollback_order: Option<String>,
    /// Command to run to check health.
    #[arg(long, value_name = "STRING", allow_hyphen_values = true)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub health_retries: Option<String>,
    /// Start period for the container to initialize before counting retries towards
    /// unstable (ms|s|m|h) (default 0s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub health_start_period: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Process services: healthy when a TCP connect to HOST:PORT succeeds.
    #[arg(long, value_name = "HOST:PORT")]
    pub health_tcp: Option<String>,
    /// Process services: healthy when a GET of the http:// URL answers 2xx or 3xx.
    #[arg(long, value_name = "URL")]
    pub health_http: Option<String>,
}

/// How a command that changes a service follows it to convergence.
#[derive(Debug, Default, Clone, PartialEq, clap::Args)]
pub struct FollowFlags {
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// How long to follow the convergence before giving up (exit 1) (default 3m).
    #[arg(long, value_name = "DURATION", default_value = "3m")]
    pub timeout: String,
}

impl FollowFlags {
    /// The convergence deadline (`--timeout`).
    pub fn timeout(&self) -> anyhow::Result<Duration> {
        parse_go_duration(&self.timeout).map_err(|e| invalid(&self.timeout, "--timeout", e))
    }
}

/// Every flag of `service create`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct CreateArgs {
    /// Service name.
    #[arg(long)]
    pub name: Option<String>,
    /// Service mode ("replicated", "global", "replicated-job", "global-job").
    #[arg(long, default_value = "replicated")]
    pub mode: String,
    /// Number of job tasks to run concurrently (default equal to --replicas).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_concurrent: Option<String>,
    /// Placement constraints.
    #[arg(long, value_name = "CONSTRAINT")]
    pub constraint: Vec<String>,
    /// Add a placement preference (spread=<descriptor>).
    #[arg(long = "placement-pref", value_name = "PREF")]
    pub placement_pref: Vec<String>,
    /// Set environment variables.
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Service labels.
    #[arg(long, short = 'l', value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Container labels.
    #[arg(long = "container-label", value_name = "KEY=VALUE")]
    pub container_label: Vec<String>,
    /// Attach a filesystem mount to the service (type=bind|volume|tmpfs,source=…,target=…,readonly).
    #[arg(long, value_name = "MOUNT")]
    pub mount: Vec<String>,
    /// Publish a port as a node port (8080:80[/udp], or mode=host,published=…,target=…).
    #[arg(long, short = 'p', value_name = "PORT")]
    pub publish: Vec<String>,
    /// Network attachments (NETWORK, or name=NETWORK,alias=ALIAS…).
    #[arg(long, value_name = "NETWORK")]
    pub network: Vec<String>,
    /// Endpoint mode (vip or dnsrr).
    #[arg(long = "endpoint-mode", value_name = "MODE", default_value = "vip")]
    pub endpoint_mode: String,
    /// Specify secrets to expose to the service (NAME, or
    /// source=NAME,target=FILE,uid=…,gid=…,mode=0444).
    #[arg(long, value_name = "SECRET")]
    pub secret: Vec<String>,
    /// Specify configurations to expose to the service (NAME, or
    /// source=NAME,target=FILE,uid=…,gid=…,mode=0444).
    #[arg(long, value_name = "CONFIG")]
    pub config: Vec<String>,
    #[command(flatten)]
    pub service: ServiceFlags,
    #[command(flatten)]
    pub follow: FollowFlags,
    /// Run the tasks as plain processes (shoal's process executor): the arguments are the
    /// command and its arguments, run without a shell; there is no image.
    #[arg(long)]
    pub process: bool,
    /// IMAGE [COMMAND] [ARG...] (with --process: COMMAND [ARG...]).
    #[arg(value_name = "IMAGE", required = true, trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
    pub args: Vec<String>,
}

/// A `--secret` / `--config` value as docker's `SecretOpt` / `ConfigOpt` parse it:
/// the object's name, and the file a task sees it as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRefOpt {
    pub source: String,
    pub target: String,
    pub uid: String,
    pub gid: String,
    pub mode: u32,
}

/// Splits one CSV record as Go's `encoding/csv` reads a flag value: fields separated
/// by commas, a field in double quotes may hold commas, `""` inside quotes is a quote.
pub fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = value.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(x) => field.push(x),
                        None => return Err("extraneous or missing \" in quoted-field".into()),
                    }
                }
                at_start = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err("extraneous or missing \" in quoted-field".into());
                }
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            '"' => return Err("bare \" in non-quoted-field".into()),
            other => {
                field.push(other);
                at_start = false;
            }
        }
    }
    fields.push(field);
    Ok(fields)
}

/// Go's `strconv.ParseUint(s, 0, 32)`: `0400` and `0o400` octal, `0x…` hex, `0b…`
/// binary, else decimal.
fn parse_go_uint32(s: &str) -> Result<u32, String> {
    let bad = || format!("strconv.ParseUint: parsing {s:?}: invalid syntax");
    let (digits, radix) = if let Some(r) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        (r, 16)
    } else if let Some(r) = s.strip_prefix("0o").or(s.strip_prefix("0O")) {
        (r, 8)
    } else if let Some(r) = s.strip_prefix("0b").or(s.strip_prefix("0B")) {
        (r, 2)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() || digits.starts_with('+') || digits.starts_with('-') {
        return Err(bad());
    }
    u64::from_str_radix(&digits, radix)
        .map_err(|_| bad())
        .and_then(|v| {
            u32::try_from(v)
                .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
        })
}

/// `--secret` / `--config` (and their `-add` forms): `NAME`, or docker's CSV
/// `source=NAME,target=FILE,uid=0,gid=0,mode=0444`; target defaults to the source
/// name, uid and gid to "0", mode to 0444. `kind` is "secret" or "config".
pub fn parse_file_ref(value: &str, kind: &str, flag: &str) -> anyhow::Result<FileRefOpt> {
    let fields = csv_fields(value).map_err(|e| invalid(value, flag, e))?;
    let mut r = FileRefOpt {
        source: String::new(),
        target: String::new(),
        uid: "0".into(),
        gid: "0".into(),
        mode: 0o444,
    };
    if let [only] = fields.as_slice()
        && !only.contains('=')
    {
        r.source = only.clone();
        r.target = only.clone();
        return Ok(r);
    }
    for field in &fields {
        let Some((key, val)) = field.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(invalid(
                value,
                flag,
                format!("invalid field '{field}' must be a key=value pair"),
            ));
        };
        match key.to_ascii_lowercase().as_str() {
            "source" | "src" => r.source = val.to_string(),
            "target" => r.target = val.to_string(),
            "uid" => r.uid = val.to_string(),
            "gid" => r.gid = val.to_string(),
            "mode" => {
                r.mode = parse_go_uint32(val)
                    .map_err(|e| invalid(value, flag, format!("invalid mode specified: {e}")))?
            }
            _ => {
                return Err(invalid(
                    value,
                    flag,
                    format!("invalid field in {kind} request: {key}"),
                ));
            }
        }
    }
    if r.source.is_empty() {
        return Err(invalid(value, flag, "source is required"));
    }
    if r.target.is_empty() {
        r.target = r.source.clone();
    }
    Ok(r)
}

/// docker's wording for a value a flag cannot take.
pub fn invalid(value: &str, flag: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("invalid argument \"{value}\" for \"{flag}\" flag: {why}")
}

pub(super) fn uint(value: &str, flag: &str) -> anyhow::Result<u64> {
    value.trim().parse::<u64>().map_err(|_| {
        let why = if value.trim().parse::<i64>().is_ok() {
            "value must not be negative"
        } else {
            "invalid syntax"
        };
        invalid(value, flag, why)
    })
}

pub(super) fn opt_uint(value: &Option<String>, flag: &str) -> anyhow::Result<Option<u64>> {
    value.as_deref().map(|v| uint(v, flag)).transpose()
}

pub(super) fn opt_duration(
    value: &Option<String>,
    flag: &str,
) -> anyhow::Result<Option<prost_types::Duration>> {
    value
        .as_deref()
        .map(|v| {
            let d = parse_go_duration(v).map_err(|e| invalid(v, flag, e))?;
            Ok(proto_duration(d))
        })
        .transpose()
}

pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Go's `time.ParseDuration` for non-negative durations: "300ms", "1m30s", "1.5h", "0".
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(format!("time: invalid duration \"{orig}\""));
    }
    if s.starts_with('-') {
        return Err(format!("time: negative duration \"{orig}\""));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("time: invalid duration \"{orig}\""));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("time: invalid duration \"{orig}\""))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration \"{orig}\"")),
            other => {
                return Err(format!(
                    "time: unknown unit \"{other}\" in duration \"{orig}\""
                ));
            }
        };
        total += number * nanos_per;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(format!("time: invalid duration \"{orig}\""));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// docker's `units.RAMInBytes`: "64M", "1.5g", "512kb", "1024" (binary multiples).
pub fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let bad = || format!("invalid size: '{s}'");
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024f64.powi(2),
        "g" | "gb" | "gib" => 1024f64.powi(3),
        "t" | "tb" | "tib" => 1024f64.powi(4),
        "p" | "pb" | "pib" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// docker's `NanoCPUs.Set`: a decimal number of CPUs ("0.5") in units of 1e-9 CPUs.
pub fn parse_nano_cpus(s: &str) -> Result<i64, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("failed to parse {s} as a rational number"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("failed to parse {s} as a rational number"));
    }
    let nanos = value * 1e9;
    if nanos.fract() != 0.0 && (nanos.fract() > 1e-6 && nanos.fract() < 1.0 - 1e-6) {
        return Err("value is too precise".into());
    }
    Ok(nanos.round() as i64)
}

/// `KEY=VALUE` or `KEY` (empty value) into a map, as docker's label options.
pub(super) fn labels(items: &[String]) -> HashMap<String, String> {
    items
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// docker's `ValidateEnv`: `KEY=VALUE` as is; a bare `KEY` takes this shell's value
/// when it has one.
pub(super) fn env(items: &[String], flag: &str) -> anyhow::Result<Vec<String>> {
    items
        .iter()
        .map(|e| {
            if e.is_empty() || e.starts_with('=') {
                return Err(invalid(
                    e,
                    flag,
                    format!("invalid environment variable: {e}"),
                ));
            }
            if e.contains('=') {
                return Ok(e.clone());
            }
            Ok(match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => e.clone(),
            })
        })
        .collect()
}

fn bool_value(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "t" => Some(true),
        "0" | "false" | "f" => Some(false),
        _ => None,
    }
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…,readonly`.
pub fn parse_mount(value: &str) -> anyhow::Result<Mount> {
    parse_mount_flag(value, "--mount")
}

/// A mount given to `flag` (`--mount`, `--mount-add`).
pub fn parse_mount_flag(value: &str, flag: &str) -> anyhow::Result<Mount> {
    let mut m = Mount {
        r#type: mount::Type::Volume as i32,
        ..Default::default()
    };
    for field in value.split(',').filter(|f| !f.is_empty()) {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim()),
            None => (field.trim().to_ascii_lowercase(), ""),
        };
        match key.as_str() {
            "type" => {
                m.r#type = match val.to_ascii_lowercase().as_str() {
                    "bind" => mount::Type::Bind,
                    "volume" => mount::Type::Volume,
                    "tmpfs" => mount::Type::Tmpfs,
                    other => {
                        return Err(invalid(value, flag, format!("invalid mount type: {other}")));
                    }
                } as i32
            }
            "source" | "src" => m.source = val.to_string(),
            "target" | "dst" | "destination" => m.target = val.to_string(),
            "readonly" | "ro" => {
                m.read_only = bool_value(val).ok_or_else(|| {
                    invalid(value, flag, format!("invalid value for {key}: {val}"))
                })?
            }
            other => {
                return Err(invalid(
                    value,
                    flag,
                    format!("unexpected key '{other}' in '{field}'"),
                ));
            }
        }
    }
    if m.target.is_empty() {
        return Err(invalid(value, flag, "target is required"));
    }
    if m.r#type == mount::Type::Bind as i32 && m.source.is_empty() {
        return Err(invalid(
            value,
            flag,
            "source is required when specifying bind",
        ));
    }
    if m.r#type == mount::Type::Tmpfs as i32 && !m.source.is_empty() {
        return Err(invalid(
            value,
            flag,
            "source must not be specified for tmpfs",
        ));
    }
    Ok(m)
}

/// docker's long-syntax test for `--network` (`\w+=\w+` anywhere in the value).
fn network_long_syntax(value: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    value.char_indices().any(|(i, c)| {
        c == '=' && word(value[..i].chars().last()) && word(value[i + 1..].chars().next())
    })
}

/// `--network NETWORK`, or docker's long form `name=NETWORK,alias=ALIAS,…` (also
/// `NETWORK,alias=ALIAS`: a first field without `=` names the network). What docker
/// takes but a service cannot use (`ip`, `ip6`, `mac-address`, `link-local-ip`,
/// `driver-opt`, `gw-priority`) is checked and dropped, as docker does for services.
pub fn parse_network(value: &str, flag: &str) -> anyhow::Result<NetworkAttachmentConfig> {
    if !network_long_syntax(value) {
        return Ok(NetworkAttachmentConfig {
            target: value.to_string(),
            ..Default::default()
        });
    }
    let mut att = NetworkAttachmentConfig::default();
    for (i, field) in value.split(',').enumerate() {
        let Some((key, val)) = field.split_once('=') else {
            if i == 0 && !field.trim().is_empty() {
                att.target = field.trim().to_string();
                continue;
            }
            return Err(invalid(value, flag, format!("invalid field {field}")));
        };
        let key = key.trim().to_ascii_lowercase();
        let val = val.trim();
        if key.is_empty() {
            return Err(invalid(value, flag, format!("invalid field {field}")));
        }
        let ip = |v: &str| {
            v.parse::<std::net::IpAddr>()
                .map(|_| ())
                .map_err(|_| invalid(value, flag, format!("ParseAddr({v:?}): unable to parse IP")))
        };
        match key.as_str() {
            "name" => att.target = val.to_string(),
            "alias" => att.aliases.push(val.to_string()),
            "ip" | "ip6" | "link-local-ip" => ip(val)?,
            "mac-address" => {}
            "driver-opt" => {
                if !val.contains('=') || val.starts_with('=') {
                    return Err(invalid(
                        value,
                        flag,
                        "invalid key value pair format in driver options",
                    ));
                }
            }
            "gw-priority" => {
                val.parse::<i64>().map_err(|_| {
                    invalid(
                        value,
                        flag,
                        format!("invalid gw-priority ({val}): invalid syntax"),
                    )
                })?;
            }
            other => return Err(invalid(value, flag, format!("invalid field key {other}"))),
        }
    }
    if att.target.is_empty() {
        return Err(invalid(value, flag, "network name/id is not specified"));
    }
    Ok(att)
}

fn port_number(s: &str, what: &str, value: &str, flag: &str) -> anyhow::Result<u32> {
    match s.trim().parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(p),
        _ => Err(invalid(value, flag, format!("invalid {what}: {s}"))),
    }
}

fn protocol(s: &str, value: &str, flag: &str) -> anyhow::Result<i32> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "" | "tcp" => port_config::Protocol::Tcp,
        "udp" => port_config::Protocol::Udp,
        "sctp" => port_config::Protocol::Sctp,
        other => {
            return Err(invalid(
                value,
                flag,
                format!("invalid protocol value '{other}'"),
            ));
        }
    } as i32)
}

/// `--endpoint-mode vip|dnsrr` as the `EndpointSpec.ResolutionMode` number.
pub fn parse_endpoint_mode(value: &str) -> anyhow::Result<i32> {
    match value.to_ascii_lowercase().as_str() {
        "vip" | "" => Ok(endpoint_spec::ResolutionMode::Vip as i32),
        "dnsrr" => Ok(endpoint_spec::ResolutionMode::Dnsrr as i32),
        other => anyhow::bail!(
            "invalid argument \"{other}\" for \"--endpoint-mode\" flag: must be vip or dnsrr"
        ),
    }
}

/// `--publish 8080:80[/udp]`, `80` (a published port picked by the cluster), or the long
/// form `mode=host,published=8080,target=80,protocol=udp`. Ranges (`8080-8081:80-81`)
/// give one port each.
pub fn parse_publish(value: &str) -> anyhow::Result<Vec<PortConfig>> {
    parse_publish_flag(value, "-p, --publish")
}

/// Ports given to `flag` (`--publish`, `--publish-add`, `--publish-rm`).
pub fn parse_publish_flag(value: &str, flag: &str) -> anyhow::Result<Vec<PortConfig>> {
    if value.contains('=') {
        let mut p = PortConfig::default();
        for field in value.split(',').filter(|f| !f.is_empty()) {
            let Some((key, val)) = field.split_once('=') else {
                return Err(invalid(value, flag, format!("invalid field {field}")));
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "mode" => {
                    p.publish_mode = match val.to_ascii_lowercase().as_str() {
                        "ingress" => port_config::PublishMode::Ingress,
                        "host" => port_config::PublishMode::Host,
                        other => {
                            return Err(invalid(
                                value,
                                flag,
                                format!(
                                    "invalid publish mode value ({other}): must be either 'ingress' or 'host'"
                                ),
                            ));
                        }
                    } as i32
                }
                "target" => p.target_port = port_number(val, "target port", value, flag)?,
                "published" => p.published_port = port_number(val, "published port", value, flag)?,
                "protocol" => p.protocol = protocol(val, value, flag)?,
                other => return Err(invalid(value, flag, format!("invalid field key {other}"))),
            }
        }
        if p.target_port == 0 {
            return Err(invalid(value, flag, "missing mandatory field \"target\""));
        }
        return Ok(vec![p]);
    }
    let (ports, proto) = match value.rsplit_once('/') {
        Some((ports, proto)) => (ports, protocol(proto, value, flag)?),
        None => (value, port_config::Protocol::Tcp as i32),
    };
    let (published, target) = match ports.rsplit_once(':') {
        Some((published, target)) => {
            if published.contains(':') {
                return Err(invalid(value, flag, "hostip is not supported"));
            }
            (Some(published), target)
        }
        None => (None, ports),
    };
    let range = |s: &str, what: &str| -> anyhow::Result<(u32, u32)> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (a, b) = (
            port_number(a, what, value, flag)?,
            port_number(b, what, value, flag)?,
        );
        if b < a || (what == "containerPort" && a == 0) {
            return Err(invalid(value, flag, format!("invalid {what}: {s}")));
        }
        Ok((a, b))
    };
    if target.is_empty() {
        return Err(invalid(value, flag, "no port specified: <empty>"));
    }
    let (t0, t1) = range(target, "containerPort")?;
    let published = published.map(|p| range(p, "hostPort")).transpose()?;
    if let Some((p0, p1)) = published
        && p1 - p0 != t1 - t0
        && p0 != p1
    {
        return Err(invalid(
            value,
            flag,
            format!(
                "invalid ranges specified for container and host Ports: {target} and {}",
                ports.split(':').next().unwrap_or("")
            ),
        ));
    }
    Ok((t0..=t1)
        .enumerate()
        .map(|(i, t)| PortConfig {
            protocol: proto,
            target_port: t,
            published_port: match published {
                Some((p0, p1)) if p0 == p1 => p0,
                Some((p0, _)) => p0 + i as u32,
                None => 0,
            },
            publish_mode: port_config::PublishMode::Ingress as i32,
            ..Default::default()
        })
        .collect())
}

fn failure_action(v: &str, flag: &str, rollback_allowed: bool) -> anyhow::Result<i32> {
    Ok(match v {
        "pause" => update_config::FailureAction::Pause,
        "continue" => update_config::FailureAction::Continue,
        "rollback" if rollback_allowed => update_config::FailureAction::Rollback,
        other => {
            let allowed = if rollback_allowed {
                "\"pause\", \"continue\", or \"rollback\""
            } else {
                "\"pause\" or \"continue\""
            };
            return Err(invalid(other, flag, format!("must be one of {allowed}")));
        }
    } as i32)
}

fn order(v: &str, flag: &str) -> anyhow::Result<i32> {
    Ok(match v {
        "stop-first" => update_config::UpdateOrder::StopFirst,
        "start-first" => update_config::UpdateOrder::StartFirst,
        other => {
            return Err(invalid(
                other,
                flag,
                "must be one of \"start-first\" or \"stop-first\"",
            ));
        }
    } as i32)
}

fn ratio(v: &str, flag: &str) -> anyhow::Result<f32> {
    match v.trim().parse::<f32>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(invalid(v, flag, "value must be a ratio between 0 and 1")),
    }
}

fn restart_condition(v: &str) -> anyhow::Result<i32> {
    Ok(match v {
        "any" => restart_policy::Condition::Any,
        "on-failure" => restart_policy::Condition::OnFailure,
        "none" => restart_policy::Condition::None,
        other => {
            return Err(invalid(
                other,
                "--restart-condition",
                "must be one of \"none\", \"on-failure\", or \"any\"",
            ));
        }
    } as i32)
}

/// docker's `PositiveDurationOpt` (the `--health-*` durations).
fn positive_duration(v: &str, flag: &str) -> anyhow::Result<prost_types::Duration> {
    if let Some(abs) = v.trim().strip_prefix('-')
        && parse_go_duration(abs).is_ok()
    {
        return Err(invalid(v, flag, "duration cannot be negative"));
    }
    let d = parse_go_duration(v).map_err(|e| invalid(v, flag, e))?;
    Ok(proto_duration(d))
}

/// `spread=<descriptor>`, the only strategy Swarm has.
pub fn parse_placement_pref(pref: &str, flag: &str) -> anyhow::Result<PlacementPreference> {
    match pref.split_once('=') {
        Some(("spread", descriptor)) if !descriptor.is_empty() => Ok(PlacementPreference {
            spread_descriptor: descriptor.to_string(),
        }),
        Some((strategy, _)) if strategy != "spread" => Err(invalid(
            pref,
            flag,
            format!("unsupported placement preference {strategy} (only spread is supported)"),
        )),
        _ => Err(invalid(
            pref,
            flag,
            "placement preference must be of the format \"<strategy>=<arg>\"",
        )),
    }
}

/// The refusal of a container-only flag on a process service.
pub(super) fn container_only(flag: &str) -> anyhow::Error {
    anyhow::anyhow!("{flag} applies to containers and cannot be used with --process")
}

fn is_job(spec: &ServiceSpec) -> bool {
    matches!(
        spec.mode,
        Some(service_spec::Mode::ReplicatedJob(_) | service_spec::Mode::GlobalJob(_))
    )
}

/// The task's runtime; a spec without one is taken as a container.
pub(super) fn runtime(task: &mut TaskSpec) -> &mut task_spec::Runtime {
    task.runtime
        .get_or_insert_with(|| task_spec::Runtime::Container(ContainerSpec::default()))
}

/// The given `--update-*` (or `--rollback-*`) flags on `slot`; a spec without the block
/// starts from Swarm's defaults (parallelism 1, pause, stop-first).
fn apply_update_config(
    slot: &mut Option<UpdateConfig>,
    fields: [&Option<String>; 6],
    prefix: &str,
) -> anyhow::Result<()> {
    let [parallelism, delay, failure, monitor, max_ratio, ord] = fields;
    let cfg = slot.get_or_insert_with(|| UpdateConfig {
        parallelism: 1,
        ..Default::default()
    });
    let flag = |name: &str| format!("--{prefix}-{name}");
    if let Some(n) = opt_uint(parallelism, &flag("parallelism"))? {
        cfg.parallelism = n;
    }
    if let Some(d) = opt_duration(delay, &flag("delay"))? {
        cfg.delay = Some(d);
    }
    if let Some(f) = failure {
        cfg.failure_action = failure_action(f, &flag("failure-action"), prefix == "update")?;
    }
    if let Some(d) = opt_duration(monitor, &flag("monitor"))? {
        cfg.monitor = Some(d);
    }
    if let Some(r) = max_ratio {
        cfg.max_failure_ratio = ratio(r, &flag("max-failure-ratio"))?;
    }
    if let Some(o) = ord {
        cfg.order = order(o, &flag("order"))?;
    }
    Ok(())
}

fn apply_resources(
    task: &mut TaskSpec,
    cpu: &Option<String>,
    mem: &Option<String>,
    kind: &str,
) -> anyhow::Result<()> {
    if cpu.is_none() && mem.is_none() {
        return Ok(());
    }
    let nano_cpus = cpu
        .as_deref()
        .map(|c| parse_nano_cpus(c).map_err(|e| invalid(c, &format!("--{kind}-cpu"), e)))
        .transpose()?;
    let memory_bytes = mem
        .as_deref()
        .map(|m| ram_in_bytes(m).map_err(|e| invalid(m, &format!("--{kind}-memory"), e)))
        .transpose()?;
    let requirements = task.resources.get_or_insert_with(Default::default);
    let resources = if kind == "limit" {
        &mut requirements.limits
    } else {
        &mut requirements.reservations
    };
    let r = resources.get_or_insert_with(Resources::default);
    if let Some(n) = nano_cpus {
        r.nano_cpus = n;
    }
    if let Some(m) = memory_bytes {
        r.memory_bytes = m;
    }
    Ok(())
}

impl ServiceFlags {
    /// Whether any `--health-*` flag other than `--no-healthcheck` was given.
    fn health_settings(&self) -> bool {
        [
            &self.health_cmd,
            &self.health_interval,
            &self.health_timeout,
            &self.health_retries,
            &self.health_start_period,
            &self.health_tcp,
            &self.health_http,
        ]
        .iter()
        .any(|f| f.is_some())
    }

    /// The healthcheck these flags make of `slot` (docker's `updateHealthcheck`, which on
    /// an empty slot is also what `service create` builds).
    pub fn apply_health(&self, slot: &mut Option<HealthConfig>) -> anyhow::Result<()> {
        let settings = self.health_settings();
        if !settings && !self.no_healthcheck {
            return Ok(());
        }
        if self.no_healthcheck {
            if settings {
                anyhow::bail!("--no-healthcheck conflicts with --health-* options");
            }
            *slot = Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            });
            return Ok(());
        }
        let tests = [&self.health_cmd, &self.health_tcp, &self.health_http]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if tests > 1 {
            anyhow::bail!("--health-cmd, --health-tcp and --health-http conflict with each other");
        }
        let hc = slot.get_or_insert_with(HealthConfig::default);
        if hc.test.first().is_some_and(|t| t == "NONE") {
            hc.test.clear();
        }
        if let Some(v) = &self.health_interval {
            hc.interval = Some(positive_duration(v, "--health-interval")?);
        }
        if let Some(v) = &self.health_timeout {
            hc.timeout = Some(positive_duration(v, "--health-timeout")?);
        }
        if let Some(v) = &self.health_start_period {
            hc.start_period = Some(positive_duration(v, "--health-start-period")?);
        }
        if let Some(v) = &self.health_retries {
            hc.retries = i32::try_from(uint(v, "--health-retries")?)
                .map_err(|_| invalid(v, "--health-retries", "value out of range"))?;
        }
        if let Some(cmd) = &self.health_cmd {
            hc.test = if cmd.is_empty() {
                Vec::new()
            } else {
                vec!["CMD-SHELL".into(), cmd.clone()]
            };
        }
        if let Some(addr) = &self.health_tcp {
            let port = addr.rsplit_once(':').map(|(_, p)| p);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                return Err(invalid(
                    addr,
                    "--health-tcp",
                    format!("address {addr}: missing or bad port in address"),
                ));
            }
            hc.test = vec!["TCP".into(), addr.clone()];
        }
        if let Some(url) = &self.health_http {
            if !url.starts_with("http://") {
                return Err(invalid(url, "--health-http", "must be an http:// URL"));
            }
            hc.test = vec!["HTTP".into(), url.clone()];
        }
        Ok(())
    }

    /// Applies the given flags to `spec`, except `--replicas` and
    /// `--replicas-max-per-node`, whose meaning depends on the command.
    pub fn apply(&self, spec: &mut ServiceSpec) -> anyhow::Result<()> {
        let update_fields = [
            &self.update_parallelism,
            &self.update_delay,
            &self.update_failure_action,
            &self.update_monitor,
            &self.update_max_failure_ratio,
            &self.update_order,
        ];
        let rollback_fields = [
            &self.rollback_parallelism,
            &self.rollback_delay,
            &self.rollback_failure_action,
            &self.rollback_monitor,
            &self.rollback_max_failure_ratio,
            &self.rollback_order,
        ];
        let update_set = update_fields.iter().any(|f| f.is_some());
        let rollback_set = rollback_fields.iter().any(|f| f.is_some());
        if (update_set || rollback_set) && is_job(spec) {
            anyhow::bail!("update and rollback configuration is not supported for jobs");
        }
        if update_set {
            apply_update_config(&mut spec.update, update_fields, "update")?;
        }
        if rollback_set {
            apply_update_config(&mut spec.rollback, rollback_fields, "rollback")?;
        }

        let task = spec.task.get_or_insert_with(TaskSpec::default);
        apply_resources(task, &self.limit_cpu, &self.limit_memory, "limit")?;
        apply_resources(task, &self.reserve_cpu, &self.reserve_memory, "reserve")?;
        if self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
        {
            let condition = self
                .restart_condition
                .as_deref()
                .map(restart_condition)
                .transpose()?;
            let delay = opt_duration(&self.restart_delay, "--restart-delay")?;
            let max_attempts = opt_uint(&self.restart_max_attempts, "--restart-max-attempts")?;
            let window = opt_duration(&self.restart_window, "--restart-window")?;
            let rp = task.restart.get_or_insert_with(|| RestartPolicy {
                condition: restart_policy::Condition::Any as i32,
                ..Default::default()
            });
            if let Some(c) = condition {
                rp.condition = c;
            }
            if delay.is_some() {
                rp.delay = delay;
            }
            if let Some(n) = max_attempts {
                rp.max_attempts = n;
            }
            if window.is_some() {
                rp.window = window;
            }
        }

        let stop_grace_period = opt_duration(&self.stop_grace_period, "--stop-grace-period")?;
        let touches_runtime = stop_grace_period.is_some()
            || self.workdir.is_some()
            || self.user.is_some()
            || self.hostname.is_some()
            || self.no_healthcheck
            || self.health_settings();
        if !touches_runtime {
            return Ok(());
        }
        match runtime(task) {
            task_spec::Runtime::Container(c) => {
                for (set, flag) in [
                    (self.health_tcp.is_some(), "--health-tcp"),
                    (self.health_http.is_some(), "--health-http"),
                ] {
                    if set {
                        anyhow::bail!("{flag} applies to --process services");
                    }
                }
                if stop_grace_period.is_some() {
                    c.stop_grace_period = stop_grace_period;
                }
                if let Some(dir) = &self.workdir {
                    c.dir = dir.clone();
                }
                if let Some(user) = &self.user {
                    c.user = user.clone();
                }
                if let Some(hostname) = &self.hostname {
                    c.hostname = hostname.clone();
                }
                self.apply_health(&mut c.healthcheck)?;
            }
            task_spec::Runtime::Process(p) => {
                for (set, flag) in [
                    (self.user.is_some(), "--user"),
                    (self.hostname.is_some(), "--hostname"),
                ] {
                    if set {
                        return Err(container_only(flag));
                    }
                }
                if stop_grace_period.is_some() {
                    p.stop_grace_period = stop_grace_period;
                }
                if let Some(dir) = &self.workdir {
                    p.dir = dir.clone();
                }
                self.apply_health(&mut p.healthcheck)?;
            }
        }
        Ok(())
    }
}

impl CreateArgs {
    /// The `--secret` flags, parsed (their ids are the manager's to resolve).
    pub fn secret_refs(&self) -> anyhow::Result<Vec<FileRefOpt>> {
        self.secret
            .iter()
            .map(|v| parse_file_ref(v, "secret", "--secret"))
            .collect()
    }

    /// The `--config` flags, parsed.
    pub fn config_refs(&self) -> anyhow::Result<Vec<FileRefOpt>> {
        self.config
            .iter()
            .map(|v| parse_file_ref(v, "config", "--config"))
            .collect()
    }

    /// The service spec these flags describe.
    pub fn to_spec(&self) -> anyhow::Result<ServiceSpec> {
        let flags = &self.service;
        let replicas = opt_uint(&flags.replicas, "--replicas")?;
        let max_concurrent = opt_uint(&self.max_concurrent, "--max-concurrent")?;
        let mode = match self.mode.as_str() {
            "replicated" => service_spec::Mode::Replicated(ReplicatedService {
                replicas: replicas.unwrap_or(1),
            }),
            "global" => service_spec::Mode::Global(GlobalService {}),
            "replicated-job" => service_spec::Mode::ReplicatedJob(ReplicatedJob {
                total_completions: replicas.unwrap_or(1),
                max_concurrent: max_concurrent.or(replicas).unwrap_or(1),
            }),
            "global-job" => service_spec::Mode::GlobalJob(GlobalJob {}),
            other => {
                return Err(invalid(
                    other,
                    "--mode",
                    "must be one of \"replicated\", \"global\", \"replicated-job\", or \"global-job\"",
                ));
            }
        };
        if replicas.is_some() && matches!(self.mode.as_str(), "global" | "global-job") {
            anyhow::bail!("replicas can only be used with replicated or replicated-job mode");
        }
        if max_concurrent.is_some() && self.mode != "replicated-job" {
            anyhow::bail!("max-concurrent can only be used with replicated-job mode");
        }
        let max_replicas = opt_uint(&flags.replicas_max_per_node, "--replicas-max-per-node")?;
        if max_replicas.is_some_and(|m| m > 0)
            && matches!(self.mode.as_str(), "global" | "global-job")
        {
            anyhow::bail!(
                "replicas-max-per-node can only be used with replicated or replicated-job mode"
            );
        }

        let preferences = self
            .placement_pref
            .iter()
            .map(|p| parse_placement_pref(p, "--placement-pref"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let placement = Placement {
            constraints: self.constraint.clone(),
            preferences,
            platforms: Vec::new(),
            max_replicas: max_replicas.unwrap_or(0),
        };

        let mut ports = Vec::new();
        for p in &self.publish {
            ports.extend(parse_publish(p)?);
        }
        let networks = self
            .network
            .iter()
            .map(|n| parse_network(n, "--network"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut mounts = Vec::new();
        for m in &self.mount {
            mounts.push(parse_mount(m)?);
        }
        let env = env(&self.env, "-e, --env")?;

        let runtime = if self.process {
            for (set, flag) in [
                (!mounts.is_empty(), "--mount"),
                (!self.container_label.is_empty(), "--container-label"),
            ] {
                if set {
                    return Err(container_only(flag));
                }
            }
            let Some(program) = self.args.first() else {
                anyhow::bail!("\"service create\" requires a command with --process");
            };
            if program.is_empty() {
                anyhow::bail!("\"service create\" requires a command with --process");
            }
            task_spec::Runtime::Process(ProcessSpec {
                command: self.args.clone(),
                args: Vec::new(),
                env,
                ..Default::default()
            })
        } else {
            let Some(image) = self.args.first().filter(|i| !i.is_empty()) else {
                anyhow::bail!("\"service create\" requires at least 1 argument.");
            };
            task_spec::Runtime::Container(ContainerSpec {
                image: image.clone(),
                labels: labels(&self.container_label),
                command: Vec::new(),
                args: self.args[1..].to_vec(),
                env,
                mounts,
                ..Default::default()
            })
        };

        let mut spec = ServiceSpec {
            annotations: Some(Annotations {
                name: self.name.clone().unwrap_or_default(),
                labels: labels(&self.label),
            }),
            task: Some(TaskSpec {
                runtime: Some(runtime),
                placement: Some(placement),
                networks,
                ..Default::default()
            }),
            mode: Some(mode),
            update: None,
            rollback: None,
            networks: Vec::new(),
            endpoint: {
                let mode = parse_endpoint_mode(&self.endpoint_mode)?;
                (!ports.is_empty() || mode != 0).then_some(EndpointSpec { mode, ports })
            },
        };
        flags.apply(&mut spec)?;
        Ok(spec)
    }
}
