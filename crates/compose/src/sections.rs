//! loadSections: turns one validated, interpolated document into the typed model,
//! with docker's transforms (short syntaxes, list-or-mapping forms, shell-split
//! commands, env_file and shell lookups, absolute paths, `external.name`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::duration::parse_go_duration;
use crate::error::LoadError;
use crate::model::*;
use crate::tree::Node;

/// What a section loader needs besides the document.
pub(crate) struct Context<'a> {
    pub(crate) working_dir: &'a Path,
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) version: &'a str,
    pub(crate) warnings: &'a mut Vec<String>,
}

type Map = BTreeMap<String, Node>;
/// A service environment: a None value is a bare `KEY`.
type Environment = BTreeMap<String, Option<String>>;

fn empty() -> Map {
    Map::new()
}

fn get<'m>(m: &'m Map, k: &str) -> Option<&'m Node> {
    m.get(k).filter(|n| !matches!(n, Node::Null))
}

fn opt_str(m: &Map, k: &str) -> Option<String> {
    get(m, k).map(Node::go_sprint)
}

fn bool_of(m: &Map, k: &str) -> bool {
    matches!(get(m, k), Some(Node::Bool(true)))
}

fn int_of(n: &Node) -> Option<i64> {
    match n {
        Node::Int(i) => Some(*i),
        Node::Float(f) if f.fract() == 0.0 => Some(*f as i64),
        Node::Str(s) => s.parse().ok(),
        _ => None,
    }
}

fn opt_u64(m: &Map, k: &str) -> Option<u64> {
    get(m, k)
        .and_then(int_of)
        .and_then(|i| u64::try_from(i).ok())
}

fn opt_i64(m: &Map, k: &str) -> Option<i64> {
    get(m, k).and_then(int_of)
}

fn sub_map<'m>(m: &'m Map, k: &str) -> Option<&'m Map> {
    get(m, k).and_then(Node::as_map)
}

/// A transform error as docker's mapstructure decoding reports it; `field` is the Go
/// field path docker names (its mapstructure tag or Go field name).
fn decode_err(field: &str, reason: impl Into<String>) -> LoadError {
    LoadError::Decode {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn duration_of(m: &Map, k: &str, field: &str) -> Result<Option<std::time::Duration>, LoadError> {
    match get(m, k) {
        None => Ok(None),
        Some(n) => {
            let s = n.go_sprint();
            parse_go_duration(&s).map(Some).ok_or_else(|| {
                decode_err(
                    field,
                    format!("time: invalid duration {}", crate::tree::go_quote(&s)),
                )
            })
        }
    }
}

/// StringList: a string is a one-item list.
fn string_list(m: &Map, k: &str) -> Vec<String> {
    match get(m, k) {
        Some(Node::Seq(items)) => items.iter().map(Node::go_sprint).collect(),
        Some(n) => vec![n.go_sprint()],
        None => Vec::new(),
    }
}

/// A list of strings (numbers printed as Go does).
fn list(m: &Map, k: &str) -> Vec<String> {
    match get(m, k) {
        Some(Node::Seq(items)) => items.iter().map(Node::go_sprint).collect(),
        _ => Vec::new(),
    }
}

/// Mapping-or-list (`k=v` items): docker's Mapping/Labels (`allow_nil` false: a bare
/// key or null value is "") and MappingWithEquals (`allow_nil` true: None).
fn mapping_or_list(m: &Map, k: &str, allow_nil: bool) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    match get(m, k) {
        Some(Node::Map(mm)) => {
            for (key, v) in mm {
                let value = match v {
                    Node::Null if allow_nil => None,
                    Node::Null => Some(String::new()),
                    v => Some(v.go_sprint()),
                };
                out.insert(key.clone(), value);
            }
        }
        Some(Node::Seq(items)) => {
            for item in items {
                let s = item.go_sprint();
                match s.split_once('=') {
                    Some((key, v)) => out.insert(key.to_string(), Some(v.to_string())),
                    None if allow_nil => out.insert(s, None),
                    None => out.insert(s, Some(String::new())),
                };
            }
        }
        _ => {}
    }
    out
}

fn labels(m: &Map, k: &str) -> BTreeMap<String, String> {
    mapping_or_list(m, k, false)
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect()
}

fn string_map(m: &Map, k: &str) -> BTreeMap<String, String> {
    match get(m, k) {
        Some(Node::Map(mm)) => mm
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if matches!(v, Node::Null) {
                        String::new()
                    } else {
                        v.go_sprint()
                    },
                )
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// HostsList: `host:ip` items from `host=ip`/`host:ip` lists or a mapping (sorted);
/// brackets around an IPv6 address removed.
fn hosts_list(m: &Map, k: &str) -> Vec<String> {
    let raw: Vec<String> = match get(m, k) {
        Some(Node::Map(mm)) => {
            let mut v: Vec<String> = mm
                .iter()
                .filter(|(_, v)| !matches!(v, Node::Null))
                .map(|(k, v)| format!("{k}:{}", v.go_sprint()))
                .collect();
            v.sort();
            v
        }
        Some(Node::Seq(items)) => items
            .iter()
            .filter_map(|i| {
                let s = i.go_sprint();
                s.split_once('=')
                    .or_else(|| s.split_once(':'))
                    .map(|(h, ip)| format!("{h}:{ip}"))
            })
            .collect(),
        _ => Vec::new(),
    };
    raw.into_iter()
        .map(|hip| {
            let (host, ip) = hip.split_once(':').unwrap_or((&hip, ""));
            let ip = if ip.len() > 2 && ip.starts_with('[') && ip.ends_with(']') {
                &ip[1..ip.len() - 1]
            } else {
                ip
            };
            format!("{host}:{ip}")
        })
        .collect()
}

fn shell_command(m: &Map, k: &str, field: &str) -> Result<Option<Vec<String>>, LoadError> {
    match get(m, k) {
        None => Ok(None),
        Some(Node::Seq(items)) => Ok(Some(items.iter().map(Node::go_sprint).collect())),
        Some(n) => {
            let s = n.go_sprint();
            shlex::split(&s)
                .map(Some)
                .ok_or_else(|| decode_err(field, "EOF found when expecting closing quote"))
        }
    }
}

fn extras(m: &Map) -> BTreeMap<String, Value> {
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| (k.clone(), to_value(v)))
        .collect()
}

/// A tree node as a yaml_serde value (for `x-` extensions).
pub(crate) fn to_value(n: &Node) -> Value {
    match n {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(i) => Value::Number((*i).into()),
        Node::Float(f) => Value::Number((*f).into()),
        Node::Str(s) => Value::String(s.clone()),
        Node::Seq(items) => Value::Sequence(items.iter().map(to_value).collect()),
        Node::Map(m) => {
            let mut out = yaml_serde::Mapping::new();
            for (k, v) in m {
                out.insert(Value::String(k.clone()), to_value(v));
            }
            Value::Mapping(out)
        }
    }
}

/// `filepath.Join(working_dir, p)` unless `p` is absolute.
pub(crate) fn abs_path(working_dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        return clean(path);
    }
    clean(&working_dir.join(path))
}

/// Go's filepath.Clean for the paths docker joins (`.`/`..` and duplicate slashes).
fn clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

pub(crate) fn load_services(
    services: &Map,
    cx: &mut Context<'_>,
) -> Result<BTreeMap<String, ServiceConfig>, LoadError> {
    let mut out = BTreeMap::new();
    for (name, def) in services {
        let m = def.as_map().cloned().unwrap_or_default();
        out.insert(name.clone(), load_service(name, &m, cx)?);
    }
    Ok(out)
}

fn file_refs(m: &Map, k: &str) -> Vec<ServiceFileRef> {
    let Some(Node::Seq(items)) = get(m, k) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| match item {
            Node::Map(r) => ServiceFileRef {
                source: opt_str(r, "source").unwrap_or_default(),
                target: opt_str(r, "target"),
                uid: opt_str(r, "uid"),
                gid: opt_str(r, "gid"),
                mode: get(r, "mode")
                    .and_then(int_of)
                    .and_then(|i| u32::try_from(i).ok()),
            },
            other => ServiceFileRef {
                source: other.go_sprint(),
                ..ServiceFileRef::default()
            },
        })
        .collect()
}

fn update_config(m: &Map, k: &str) -> Result<Option<UpdateConfig>, LoadError> {
    let Some(u) = sub_map(m, k) else {
        return Ok(None);
    };
    Ok(Some(UpdateConfig {
        parallelism: opt_u64(u, "parallelism"),
        delay: duration_of(u, "delay", &format!("Deploy.{k}.Delay"))?,
        failure_action: opt_str(u, "failure_action"),
        monitor: duration_of(u, "monitor", &format!("Deploy.{k}.Monitor"))?,
        max_failure_ratio: get(u, "max_failure_ratio").and_then(|n| match n {
            Node::Int(i) => Some(*i as f32),
            Node::Float(f) => Some(*f as f32),
            _ => None,
        }),
        order: opt_str(u, "order"),
    }))
}

fn memory(m: &Map, field: &str) -> Result<Option<i64>, LoadError> {
    match get(m, "memory") {
        None => Ok(None),
        Some(Node::Int(i)) => Ok(Some(*i)),
        Some(n) => crate::units::ram_in_bytes(&n.go_sprint())
            .map(Some)
            .map_err(|e| decode_err(field, e)),
    }
}

fn deploy(m: &Map) -> Result<Option<DeployConfig>, LoadError> {
    if !m.contains_key("deploy") {
        return Ok(None);
    }
    let d = sub_map(m, "deploy").cloned().unwrap_or_else(empty);
    let res = sub_map(&d, "resources").cloned().unwrap_or_else(empty);
    let limits = match sub_map(&res, "limits") {
        Some(l) => Some(ResourceLimit {
            cpus: opt_str(l, "cpus"),
            memory: memory(l, "Deploy.Resources.Limits.memory")?,
            pids: opt_i64(l, "pids"),
        }),
        None => None,
    };
    let reservations = match sub_map(&res, "reservations") {
        Some(r) => Some(ResourceReservation {
            cpus: opt_str(r, "cpus"),
            memory: memory(r, "Deploy.Resources.Reservations.memory")?,
            generic_resources: match get(r, "generic_resources") {
                Some(Node::Seq(items)) => items
                    .iter()
                    .filter_map(Node::as_map)
                    .map(|g| GenericResource {
                        discrete_resource_spec: sub_map(g, "discrete_resource_spec").map(|s| {
                            DiscreteGenericResource {
                                kind: opt_str(s, "kind").unwrap_or_default(),
                                value: opt_i64(s, "value").unwrap_or_default(),
                            }
                        }),
                    })
                    .collect(),
                _ => Vec::new(),
            },
        }),
        None => None,
    };
    let restart_policy = match sub_map(&d, "restart_policy") {
        Some(r) => Some(RestartPolicy {
            condition: opt_str(r, "condition"),
            delay: duration_of(r, "delay", "Deploy.restart_policy.Delay")?,
            max_attempts: opt_u64(r, "max_attempts"),
            window: duration_of(r, "window", "Deploy.restart_policy.Window")?,
        }),
        None => None,
    };
    let p = sub_map(&d, "placement").cloned().unwrap_or_else(empty);
    let placement = Placement {
        constraints: list(&p, "constraints"),
        preferences: match get(&p, "preferences") {
            Some(Node::Seq(items)) => items
                .iter()
                .filter_map(Node::as_map)
                .map(|pp| PlacementPreference {
                    spread: opt_str(pp, "spread").unwrap_or_default(),
                })
                .collect(),
            _ => Vec::new(),
        },
        max_replicas_per_node: opt_u64(&p, "max_replicas_per_node").filter(|n| *n != 0),
    };
    Ok(Some(DeployConfig {
        mode: opt_str(&d, "mode"),
        replicas: opt_u64(&d, "replicas"),
        labels: labels(&d, "labels"),
        update_config: update_config(&d, "update_config")?,
        rollback_config: update_config(&d, "rollback_config")?,
        resources: Resources {
            limits,
            reservations,
        },
        restart_policy,
        placement,
        endpoint_mode: opt_str(&d, "endpoint_mode"),
    }))
}

fn healthcheck(m: &Map) -> Result<Option<HealthCheckConfig>, LoadError> {
    let Some(h) = sub_map(m, "healthcheck") else {
        return Ok(None);
    };
    let test = match get(h, "test") {
        Some(Node::Seq(items)) => items.iter().map(Node::go_sprint).collect(),
        Some(n) => vec!["CMD-SHELL".to_string(), n.go_sprint()],
        None => Vec::new(),
    };
    Ok(Some(HealthCheckConfig {
        test,
        timeout: duration_of(h, "timeout", "HealthCheck.Timeout")?,
        interval: duration_of(h, "interval", "HealthCheck.Interval")?,
        retries: get(h, "retries").and_then(|n| match n {
            Node::Float(f) => Some(*f as u64),
            n => int_of(n).and_then(|i| u64::try_from(i).ok()),
        }),
        start_period: duration_of(h, "start_period", "HealthCheck.start_period")?,
        start_interval: duration_of(h, "start_interval", "HealthCheck.start_interval")?,
        disable: bool_of(h, "disable"),
    }))
}

fn ports(m: &Map, warnings: &mut Vec<String>) -> Result<Vec<ServicePortConfig>, LoadError> {
    let Some(Node::Seq(items)) = get(m, "ports") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Node::Map(p) => out.push(ServicePortConfig {
                mode: opt_str(p, "mode").unwrap_or_default(),
                target: get(p, "target")
                    .and_then(int_of)
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(0),
                published: get(p, "published")
                    .and_then(int_of)
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(0),
                protocol: opt_str(p, "protocol").unwrap_or_default(),
            }),
            other => {
                let (ports, w) = crate::ports::expand_short_port(&other.go_sprint())
                    .map_err(|e| decode_err("Ports", e))?;
                out.extend(ports);
                warnings.extend(w);
            }
        }
    }
    Ok(out)
}

/// ParseVolume: the short volume syntax `[source:]target[:mode]`.
pub(crate) fn parse_volume(spec: &str) -> Result<ServiceVolumeConfig, LoadError> {
    let mut v = ServiceVolumeConfig::default();
    let chars: Vec<char> = spec.chars().collect();
    match chars.len() {
        0 => return Err(LoadError::Invalid("invalid empty volume spec".into())),
        1 | 2 => {
            v.target = spec.to_string();
            v.r#type = "volume".into();
            return Ok(v);
        }
        _ => {}
    }
    let mut source: Option<String> = None;
    let mut target: Option<String> = None;
    let mut buffer = String::new();
    let n = chars.len();
    for i in 0..=n {
        let c = chars.get(i).copied();
        let is_drive = c == Some(':')
            && buffer.chars().count() == 1
            && buffer.chars().all(char::is_alphabetic);
        if is_drive || !(c == Some(':') || c.is_none()) {
            if let Some(c) = c {
                buffer.push(c);
            }
            continue;
        }
        let end = c.is_none();
        let fail = |msg: &str| LoadError::Invalid(format!("invalid spec: {spec}: {msg}"));
        if buffer.is_empty() {
            return Err(fail("empty section between colons"));
        }
        if source.is_none() && end {
            target = Some(std::mem::take(&mut buffer));
        } else if source.is_none() {
            source = Some(std::mem::take(&mut buffer));
        } else if target.is_none() {
            target = Some(std::mem::take(&mut buffer));
        } else if !end {
            return Err(fail("too many colons"));
        } else {
            for option in buffer.split(',') {
                match option {
                    "ro" => v.read_only = true,
                    "rw" => v.read_only = false,
                    "nocopy" => {
                        v.volume = Some(ServiceVolumeVolume {
                            nocopy: true,
                            subpath: None,
                        })
                    }
                    "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave" => {
                        v.bind = Some(ServiceVolumeBind {
                            propagation: Some(option.to_string()),
                        })
                    }
                    _ => {}
                }
            }
            buffer.clear();
        }
    }
    v.target = target.unwrap_or_default();
    v.r#type = match &source {
        Some(s) if is_file_path(s) => "bind".into(),
        _ => "volume".into(),
    };
    v.source = source;
    Ok(v)
}

fn is_file_path(source: &str) -> bool {
    let mut chars = source.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if matches!(first, '.' | '/' | '~') {
        return true;
    }
    if source.chars().count() == 1 {
        return false;
    }
    if source.starts_with("\\\\") {
        return true;
    }
    first.is_alphabetic() && chars.next() == Some(':')
}

fn volumes(m: &Map, cx: &Context<'_>) -> Result<Vec<ServiceVolumeConfig>, LoadError> {
    let Some(Node::Seq(items)) = get(m, "volumes") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut v = match item {
            Node::Map(l) => ServiceVolumeConfig {
                r#type: opt_str(l, "type").unwrap_or_default(),
                source: opt_str(l, "source"),
                target: opt_str(l, "target").unwrap_or_default(),
                read_only: bool_of(l, "read_only"),
                consistency: opt_str(l, "consistency"),
                bind: sub_map(l, "bind").map(|b| ServiceVolumeBind {
                    propagation: opt_str(b, "propagation"),
                }),
                volume: sub_map(l, "volume").map(|b| ServiceVolumeVolume {
                    nocopy: bool_of(b, "nocopy"),
                    subpath: opt_str(b, "subpath"),
                }),
                tmpfs: sub_map(l, "tmpfs").map(|t| ServiceVolumeTmpfs {
                    size: opt_i64(t, "size"),
                }),
            },
            other => parse_volume(&other.go_sprint()).map_err(|e| match e {
                LoadError::Invalid(reason) => decode_err(&format!("Volumes[{i}]"), reason),
                e => e,
            })?,
        };
        if v.r#type == "bind" {
            let Some(src) = v.source.clone().filter(|s| !s.is_empty()) else {
                return Err(LoadError::Invalid(
                    "invalid mount config for type \"bind\": field Source must not be empty".into(),
                ));
            };
            let mut path = src.clone();
            if src.starts_with('~') {
                // Without HOME docker warns "cannot expand '~'" and keeps the path.
                if let Some(home) = cx.env.get("HOME") {
                    path = src.replacen('~', home, 1);
                }
            }
            if !Path::new(&path).is_absolute() && !is_windows_abs(&path) {
                path = abs_path(cx.working_dir, &path)
                    .to_string_lossy()
                    .into_owned();
            }
            v.source = Some(path);
        }
        out.push(v);
    }
    Ok(out)
}

fn is_windows_abs(p: &str) -> bool {
    let b = p.as_bytes();
    (b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/'))
        || p.starts_with("\\\\")
}

fn resolve_environment(m: &Map, cx: &Context<'_>) -> Result<(Environment, Vec<String>), LoadError> {
    let mut env: BTreeMap<String, Option<String>> = BTreeMap::new();
    let files = string_list(m, "env_file");
    let update = |env: &mut BTreeMap<String, Option<String>>,
                  vars: BTreeMap<String, Option<String>>| {
        for (k, v) in vars {
            let shell = cx.env.get(&k);
            match (&v, shell) {
                (None, Some(s)) => env.insert(k, Some(s.clone())),
                (Some(e), Some(s)) if e.is_empty() => env.insert(k, Some(s.clone())),
                _ => env.insert(k, v),
            };
        }
    };
    if !files.is_empty() {
        let mut vars = BTreeMap::new();
        for f in &files {
            let path = abs_path(cx.working_dir, f);
            for line in parse_env_file(&path, cx.env)? {
                match line.split_once('=') {
                    Some((k, v)) => vars.insert(k.to_string(), Some(v.to_string())),
                    None => vars.insert(line, None),
                };
            }
        }
        update(&mut env, vars);
    }
    update(&mut env, mapping_or_list(m, "environment", true));
    Ok((env, files))
}

/// docker's kvfile.Parse for env files.
fn parse_env_file(path: &Path, env: &BTreeMap<String, String>) -> Result<Vec<String>, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::io("open", path, &e))?;
    let invalid =
        |msg: String| LoadError::Invalid(format!("invalid env file ({}): {msg}", path.display()));
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = if i == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(invalid(format!(
                "invalid utf8 bytes at line {}: {:?}",
                i + 1,
                raw
            )));
        };
        let line = text.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, has_value) = match line.split_once('=') {
            Some((k, _)) => (k, true),
            None => (line, false),
        };
        if key.is_empty() {
            return Err(invalid(format!("no variable name on line '{line}'")));
        }
        if key.contains([' ', '\t']) {
            return Err(invalid(format!("variable '{key}' contains whitespaces")));
        }
        if has_value {
            out.push(line.to_string());
        } else if let Some(v) = env.get(line) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

fn load_service(name: &str, m: &Map, cx: &mut Context<'_>) -> Result<ServiceConfig, LoadError> {
    let (environment, env_file) = resolve_environment(m, cx)?;
    let mut port_warnings = Vec::new();
    let ports = ports(m, &mut port_warnings)?;
    cx.warnings.extend(port_warnings);
    let build = match get(m, "build") {
        None => None,
        Some(Node::Map(b)) => Some(BuildConfig {
            context: opt_str(b, "context"),
            dockerfile: opt_str(b, "dockerfile"),
            args: mapping_or_list(b, "args", true),
            labels: labels(b, "labels"),
            cache_from: string_list(b, "cache_from"),
            extra_hosts: hosts_list(b, "extra_hosts"),
            network: opt_str(b, "network"),
            target: opt_str(b, "target"),
        }),
        Some(other) => Some(BuildConfig {
            context: Some(other.go_sprint()),
            ..BuildConfig::default()
        }),
    };
    let networks = match get(m, "networks") {
        Some(Node::Seq(items)) => items.iter().map(|n| (n.go_sprint(), None)).collect(),
        Some(Node::Map(nm)) => nm
            .iter()
            .map(|(k, v)| {
                let cfg = v.as_map().map(|c| ServiceNetworkConfig {
                    aliases: list(c, "aliases"),
                    driver_opts: string_map(c, "driver_opts"),
                    ipv4_address: opt_str(c, "ipv4_address"),
                    ipv6_address: opt_str(c, "ipv6_address"),
                });
                (k.clone(), cfg)
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    let ulimits = match sub_map(m, "ulimits") {
        Some(u) => u
            .iter()
            .filter_map(|(k, v)| {
                let limit = match v {
                    Node::Map(sh) => UlimitsConfig::SoftHard {
                        soft: opt_i64(sh, "soft").unwrap_or_default(),
                        hard: opt_i64(sh, "hard").unwrap_or_default(),
                    },
                    n => UlimitsConfig::Single(int_of(n)?),
                };
                Some((k.clone(), limit))
            })
            .collect(),
        None => BTreeMap::new(),
    };
    let credential_spec = sub_map(m, "credential_spec").map(|c| CredentialSpecConfig {
        config: opt_str(c, "config"),
        file: opt_str(c, "file"),
        registry: opt_str(c, "registry"),
    });
    let logging = sub_map(m, "logging").map(|l| LoggingConfig {
        driver: opt_str(l, "driver"),
        options: string_map(l, "options"),
    });
    Ok(ServiceConfig {
        name: name.to_string(),
        build,
        cap_add: list(m, "cap_add"),
        cap_drop: list(m, "cap_drop"),
        cgroupns_mode: opt_str(m, "cgroupns_mode"),
        cgroup_parent: opt_str(m, "cgroup_parent"),
        command: shell_command(m, "command", "Command")?,
        configs: file_refs(m, "configs"),
        container_name: opt_str(m, "container_name"),
        credential_spec,
        depends_on: list(m, "depends_on"),
        deploy: deploy(m)?,
        devices: list(m, "devices"),
        dns: string_list(m, "dns"),
        dns_search: string_list(m, "dns_search"),
        domainname: opt_str(m, "domainname"),
        entrypoint: shell_command(m, "entrypoint", "Entrypoint")?,
        environment,
        env_file,
        expose: list(m, "expose"),
        external_links: list(m, "external_links"),
        extra_hosts: hosts_list(m, "extra_hosts"),
        hostname: opt_str(m, "hostname"),
        healthcheck: healthcheck(m)?,
        image: opt_str(m, "image"),
        init: match get(m, "init") {
            Some(Node::Bool(b)) => Some(*b),
            _ => None,
        },
        ipc: opt_str(m, "ipc"),
        isolation: opt_str(m, "isolation"),
        labels: labels(m, "labels"),
        links: list(m, "links"),
        logging,
        mac_address: opt_str(m, "mac_address"),
        network_mode: opt_str(m, "network_mode"),
        networks,
        pid: opt_str(m, "pid"),
        ports,
        privileged: bool_of(m, "privileged"),
        read_only: bool_of(m, "read_only"),
        restart: opt_str(m, "restart"),
        secrets: file_refs(m, "secrets"),
        security_opt: list(m, "security_opt"),
        shm_size: opt_str(m, "shm_size"),
        stdin_open: bool_of(m, "stdin_open"),
        stop_grace_period: duration_of(m, "stop_grace_period", "stop_grace_period")?,
        stop_signal: opt_str(m, "stop_signal"),
        sysctls: labels(m, "sysctls"),
        tmpfs: string_list(m, "tmpfs"),
        tty: bool_of(m, "tty"),
        ulimits,
        user: opt_str(m, "user"),
        oom_score_adj: opt_i64(m, "oom_score_adj").filter(|n| *n != 0),
        userns_mode: opt_str(m, "userns_mode"),
        volumes: volumes(m, cx)?,
        working_dir: opt_str(m, "working_dir"),
        extras: extras(m),
    })
}

/// `external: true` or the old `external: {name: x}`: (external, old name).
fn external_of(m: &Map) -> (bool, Option<String>) {
    match get(m, "external") {
        Some(Node::Bool(b)) => (*b, None),
        Some(Node::Map(e)) => (true, opt_str(e, "name").filter(|n| !n.is_empty())),
        _ => (false, None),
    }
}

/// Go's versions.GreaterThanOrEqualTo on dotted numbers.
pub(crate) fn version_at_least(v: &str, other: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (a, b) = (parse(v), parse(other));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    true
}

pub(crate) fn load_networks(
    section: &Map,
    cx: &mut Context<'_>,
) -> Result<BTreeMap<String, NetworkConfig>, LoadError> {
    let mut out = BTreeMap::new();
    for (key, def) in section {
        let m = def.as_map().cloned().unwrap_or_default();
        let (external, ext_name) = external_of(&m);
        let ipam = sub_map(&m, "ipam").cloned().unwrap_or_default();
        let mut n = NetworkConfig {
            name: opt_str(&m, "name"),
            driver: opt_str(&m, "driver"),
            driver_opts: string_map(&m, "driver_opts"),
            ipam: IpamConfig {
                driver: opt_str(&ipam, "driver"),
                config: match get(&ipam, "config") {
                    Some(Node::Seq(items)) => items
                        .iter()
                        .map(|p| IpamPool {
                            subnet: p.as_map().and_then(|p| opt_str(p, "subnet")),
                        })
                        .collect(),
                    _ => Vec::new(),
                },
            },
            external,
            internal: bool_of(&m, "internal"),
            attachable: bool_of(&m, "attachable"),
            labels: labels(&m, "labels"),
            extras: BTreeMap::new(),
        };
        if external {
            if let Some(ext) = ext_name {
                if n.name.is_some() {
                    return Err(LoadError::Invalid(format!(
                        "network {key}: network.external.name and network.name conflict; only use network.name"
                    )));
                }
                if version_at_least(cx.version, "3.5") {
                    cx.warnings.push(format!("network {key}: network.external.name is deprecated in favor of network.name"));
                }
                n.name = Some(ext);
            } else if n.name.is_none() {
                n.name = Some(key.clone());
            }
            // docker only keeps the x- keys of external networks (a quirk of its loader).
            n.extras = extras(&m);
        }
        out.insert(key.clone(), n);
    }
    Ok(out)
}

pub(crate) fn load_volumes(
    section: &Map,
    cx: &mut Context<'_>,
) -> Result<BTreeMap<String, VolumeConfig>, LoadError> {
    let mut out = BTreeMap::new();
    for (key, def) in section {
        let m = def.as_map().cloned().unwrap_or_default();
        let (external, ext_name) = external_of(&m);
        let mut v = VolumeConfig {
            name: opt_str(&m, "name"),
            driver: opt_str(&m, "driver"),
            driver_opts: string_map(&m, "driver_opts"),
            external,
            labels: labels(&m, "labels"),
            extras: BTreeMap::new(),
        };
        if external {
            let conflict = |what: &str| {
                LoadError::Invalid(format!(
                    "conflicting parameters \"external\" and \"{what}\" specified for volume \"{key}\""
                ))
            };
            if v.driver.is_some() {
                return Err(conflict("driver"));
            }
            if !v.driver_opts.is_empty() {
                return Err(conflict("driver_opts"));
            }
            if !v.labels.is_empty() {
                return Err(conflict("labels"));
            }
            if let Some(ext) = ext_name {
                if v.name.is_some() {
                    return Err(LoadError::Invalid(format!(
                        "volume {key}: volume.external.name and volume.name conflict; only use volume.name"
                    )));
                }
                if version_at_least(cx.version, "3.4") {
                    cx.warnings.push(format!(
                        "volume {key}: volume.external.name is deprecated in favor of volume.name"
                    ));
                }
                v.name = Some(ext);
            } else if v.name.is_none() {
                v.name = Some(key.clone());
            }
            v.extras = extras(&m);
        }
        out.insert(key.clone(), v);
    }
    Ok(out)
}

pub(crate) fn load_file_objects(
    section: &Map,
    kind: &str,
    cx: &mut Context<'_>,
) -> Result<BTreeMap<String, FileObjectConfig>, LoadError> {
    let mut out = BTreeMap::new();
    for (key, def) in section {
        let m = def.as_map().cloned().unwrap_or_default();
        let (external, ext_name) = external_of(&m);
        let mut o = FileObjectConfig {
            name: opt_str(&m, "name"),
            file: None,
            external,
            labels: labels(&m, "labels"),
            driver: opt_str(&m, "driver"),
            driver_opts: string_map(&m, "driver_opts"),
            template_driver: opt_str(&m, "template_driver"),
            extras: extras(&m),
        };
        let file = opt_str(&m, "file");
        if external {
            if let Some(ext) = ext_name {
                if o.name.is_some() {
                    return Err(LoadError::Invalid(format!(
                        "{kind} {key}: {kind}.external.name and {kind}.name conflict; only use {kind}.name"
                    )));
                }
                if version_at_least(cx.version, "3.5") {
                    cx.warnings.push(format!(
                        "{kind} {key}: {kind}.external.name is deprecated in favor of {kind}.name"
                    ));
                }
                o.name = Some(ext);
            } else if o.name.is_none() {
                o.name = Some(key.clone());
            }
            o.file = file.map(PathBuf::from);
        } else if o.driver.is_some() {
            if file.is_some() {
                return Err(LoadError::Invalid(format!(
                    "{kind} {key}: {kind}.driver and {kind}.file conflict; only use {kind}.driver"
                )));
            }
        } else {
            // docker joins even an absent file onto the working dir.
            o.file = Some(abs_path(cx.working_dir, file.as_deref().unwrap_or("")));
        }
        out.insert(key.clone(), o);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_volume_syntax() {
        let v = parse_volume("db-data:/var/lib/postgresql/data").expect("ok");
        assert_eq!(
            (v.r#type.as_str(), v.source.as_deref(), v.target.as_str()),
            ("volume", Some("db-data"), "/var/lib/postgresql/data")
        );
        let v = parse_volume("./data:/data:ro").expect("ok");
        assert_eq!((v.r#type.as_str(), v.read_only), ("bind", true));
        let v = parse_volume("volume1").expect("ok");
        assert_eq!(
            (v.r#type.as_str(), v.source, v.target.as_str()),
            ("volume", None, "volume1")
        );
        let v = parse_volume("/a:/b:rshared,nocopy").expect("ok");
        assert_eq!(
            v.bind,
            Some(ServiceVolumeBind {
                propagation: Some("rshared".into())
            })
        );
        assert_eq!(
            v.volume,
            Some(ServiceVolumeVolume {
                nocopy: true,
                subpath: None
            })
        );
        assert_eq!(
            parse_volume("/a::b").expect_err("bad").to_string(),
            "invalid spec: /a::b: empty section between colons"
        );
    }

    #[test]
    fn version_compare() {
        assert!(version_at_least("3.13", "3.5"));
        assert!(version_at_least("3.5", "3.5"));
        assert!(!version_at_least("3.4", "3.5"));
    }

    #[test]
    fn clean_paths() {
        assert_eq!(abs_path(Path::new("/w"), "./x/../y"), PathBuf::from("/w/y"));
        assert_eq!(abs_path(Path::new("/w"), ""), PathBuf::from("/w"));
        assert_eq!(
            abs_path(Path::new("/w"), "/abs//p"),
            PathBuf::from("/abs/p")
        );
    }
}
