//! Service spec validation: Swarm's rules (swarmkit's `controlapi/service.go`), in
//! Swarm's words where Swarm has some, and each message names the field it is about.
//! Pure functions: nothing here reads the store.

use std::collections::{HashMap, HashSet};

use shoal_proto::v1::{
    ConfigReference, ContainerSpec, EndpointSpec, HealthConfig, Mount, Placement, PortConfig,
    ProcessSpec, ResourceRequirements, Resources, RestartPolicy, SecretReference, ServiceSpec,
    TaskSpec, UpdateConfig, endpoint_spec, mount, port_config, restart_policy, service_spec,
    task_spec, update_config,
};
use tonic::Status;

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// The whole spec, as `CreateService` and `UpdateService` accept it. The name must be
/// set already (see [`generated_name`] for an empty one).
pub fn service_spec(spec: &ServiceSpec) -> Result<(), Status> {
    name(
        spec.annotations
            .as_ref()
            .map(|a| a.name.as_str())
            .unwrap_or(""),
    )?;
    let task = spec
        .task
        .as_ref()
        .ok_or_else(|| invalid("TaskSpec: missing runtime (task: a task spec is required)"))?;
    task_spec(task)?;
    mode(spec)?;
    if is_job(spec) {
        if spec.update.is_some() {
            return Err(invalid("update: Jobs may not have an update config"));
        }
    } else {
        update_config("update", spec.update.as_ref())?;
    }
    update_config("rollback", spec.rollback.as_ref())?;
    if matches!(spec.mode, Some(service_spec::Mode::Global(_)))
        && task.placement.as_ref().is_some_and(|p| p.max_replicas > 0)
    {
        return Err(invalid(
            "placement: max replicas per node can only be used with replicated mode",
        ));
    }
    for n in spec.networks.iter().chain(&task.networks) {
        if n.target.is_empty() {
            return Err(invalid(
                "networks: a network attachment needs a target network",
            ));
        }
    }
    endpoint(spec.endpoint.as_ref())
}

pub fn is_job(spec: &ServiceSpec) -> bool {
    matches!(
        spec.mode,
        Some(service_spec::Mode::ReplicatedJob(_)) | Some(service_spec::Mode::GlobalJob(_))
    )
}

/// Swarm's service name rule: a DNS label, `^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`, at
/// most 63 characters.
pub fn name(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(invalid("meta: name must be provided"));
    }
    let b = name.as_bytes();
    let valid = b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
    if !valid {
        return Err(invalid(format!(
            "name: invalid name {name:?}: name must be valid as a DNS name component"
        )));
    }
    if name.len() > 63 {
        return Err(invalid(format!(
            "name: invalid name {name:?}: name must be 63 characters or fewer"
        )));
    }
    Ok(())
}

/// A name for a service created without one, as Docker does: `<adjective>_<noun>`.
pub fn generated_name(seed: u64) -> String {
    const ADJECTIVES: &[&str] = &[
        "agile", "bold", "brave", "calm", "clever", "eager", "gentle", "happy", "keen", "lucid",
        "merry", "nimble", "quiet", "quick", "sharp", "steady", "swift", "tidy", "vivid", "wise",
    ];
    const NOUNS: &[&str] = &[
        "anchovy",
        "barracuda",
        "carp",
        "dory",
        "eel",
        "flounder",
        "grouper",
        "haddock",
        "herring",
        "koi",
        "mackerel",
        "marlin",
        "minnow",
        "perch",
        "pike",
        "salmon",
        "sardine",
        "snapper",
        "trout",
        "tuna",
    ];
    let a = ADJECTIVES[(seed % ADJECTIVES.len() as u64) as usize];
    let n = NOUNS[((seed / ADJECTIVES.len() as u64) % NOUNS.len() as u64) as usize];
    format!("{a}_{n}")
}

fn mode(spec: &ServiceSpec) -> Result<(), Status> {
    // uint64 on the wire; values past i64::MAX are blind casts of negative numbers.
    let negative = |v: u64| i64::try_from(v).is_err();
    match &spec.mode {
        Some(service_spec::Mode::Replicated(r)) if negative(r.replicas) => {
            Err(invalid("replicas: Number of replicas must be non-negative"))
        }
        Some(service_spec::Mode::ReplicatedJob(j)) if negative(j.max_concurrent) => Err(invalid(
            "max_concurrent: Maximum concurrent jobs must not be negative",
        )),
        Some(service_spec::Mode::ReplicatedJob(j)) if negative(j.total_completions) => Err(
            invalid("total_completions: Total completed jobs must not be negative"),
        ),
        Some(_) => Ok(()),
        None => Err(invalid(
            "mode: Unrecognized service mode (expected replicated, global, replicated-job or global-job)",
        )),
    }
}

fn task_spec(task: &TaskSpec) -> Result<(), Status> {
    resources(task.resources.as_ref())?;
    restart_policy(task.restart.as_ref())?;
    placement(task.placement.as_ref())?;
    match &task.runtime {
        Some(task_spec::Runtime::Container(c)) => container(c),
        Some(task_spec::Runtime::Process(p)) => process(p),
        None => Err(invalid(
            "TaskSpec: missing runtime (a container image or a process command is required)",
        )),
    }
}

fn container(c: &ContainerSpec) -> Result<(), Status> {
    image(&c.image)?;
    mounts(&c.mounts)?;
    health(c.healthcheck.as_ref(), false)?;
    non_negative_duration("stop_grace_period", c.stop_grace_period.as_ref())?;
    secret_refs(&c.secrets)?;
    config_refs(&c.configs)
}

fn process(p: &ProcessSpec) -> Result<(), Status> {
    if p.command.first().is_none_or(|c| c.is_empty()) {
        return Err(invalid("ProcessSpec: command must be provided"));
    }
    health(p.healthcheck.as_ref(), true)?;
    non_negative_duration("stop_grace_period", p.stop_grace_period.as_ref())?;
    secret_refs(&p.secrets)?;
    config_refs(&p.configs)
}

/// Swarm's `ContainerSpec: %q is not a valid repository/tag` around the reference
/// grammar's own error (`invalid reference format...`).
pub fn image(image: &str) -> Result<(), Status> {
    if image.is_empty() {
        return Err(invalid("ContainerSpec: image reference must be provided"));
    }
    reference::parse_normalized(image).map_err(|e| {
        invalid(format!(
            "ContainerSpec: {image:?} is not a valid repository/tag: {e}"
        ))
    })
}

fn mounts(mounts: &[Mount]) -> Result<(), Status> {
    let mut targets = HashSet::new();
    for m in mounts {
        let kind = match mount::Type::try_from(m.r#type) {
            Ok(mount::Type::Bind) => "bind",
            Ok(mount::Type::Volume) => "volume",
            Ok(mount::Type::Tmpfs) => "tmpfs",
            Err(_) => return Err(invalid(format!("mounts: unknown mount type {}", m.r#type))),
        };
        let bad = |what: String| {
            invalid(format!(
                "mounts: invalid mount config for type {kind:?}: {what}"
            ))
        };
        if m.target.is_empty() {
            return Err(bad("field Target must not be empty".into()));
        }
        // A relative target or bind source is accepted, as swarmkit's control API does:
        // the node rejects the task (`invalid mount target, must be an absolute path`),
        // so a compose file with `volumes: [data]` deploys as it does on Swarm.
        match kind {
            "bind" if m.source.is_empty() => {
                return Err(bad("field Source must not be empty".into()));
            }
            "tmpfs" if !m.source.is_empty() => {
                return Err(bad("field Source must not be specified".into()));
            }
            _ => {}
        }
        if !targets.insert(m.target.as_str()) {
            return Err(invalid(format!(
                "mounts: ContainerSpec: duplicate mount point: {}",
                m.target
            )));
        }
    }
    Ok(())
}

fn duration_nanos(d: &prost_types::Duration) -> i128 {
    i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos)
}

fn non_negative_duration(field: &str, d: Option<&prost_types::Duration>) -> Result<(), Status> {
    if d.is_some_and(|d| duration_nanos(d) < 0) {
        return Err(invalid(format!("{field}: cannot be negative")));
    }
    Ok(())
}

fn health(hc: Option<&HealthConfig>, process: bool) -> Result<(), Status> {
    let Some(hc) = hc else { return Ok(()) };
    health_test(&hc.test, process)?;
    const MIN: i128 = 1_000_000; // 1ms
    for (what, d) in [
        ("Interval", hc.interval.as_ref()),
        ("Timeout", hc.timeout.as_ref()),
        ("StartPeriod", hc.start_period.as_ref()),
    ] {
        if let Some(d) = d {
            let n = duration_nanos(d);
            if n != 0 && n < MIN {
                return Err(invalid(format!(
                    "healthcheck: ContainerSpec: {what} in HealthConfig cannot be less than 1ms"
                )));
            }
        }
    }
    if hc.retries < 0 {
        return Err(invalid(
            "healthcheck: ContainerSpec: Retries in HealthConfig cannot be negative",
        ));
    }
    Ok(())
}

/// Docker's test forms (NONE, CMD, CMD-SHELL) and, for processes, shoal's TCP and HTTP.
fn health_test(test: &[String], process: bool) -> Result<(), Status> {
    let Some(kind) = test.first() else {
        return Ok(());
    };
    let arg = test.get(1).map(String::as_str).unwrap_or("");
    match kind.as_str() {
        "NONE" => Ok(()),
        "CMD" | "CMD-SHELL" if arg.trim().is_empty() => {
            Err(invalid(format!("healthcheck: {kind} needs a command")))
        }
        "CMD" | "CMD-SHELL" => Ok(()),
        "TCP" | "HTTP" if !process => Err(invalid(format!(
            "healthcheck: {kind} checks are for process tasks; a container takes CMD or CMD-SHELL"
        ))),
        "TCP" => match arg.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(())
            }
            _ => Err(invalid(format!(
                "healthcheck: TCP check address \"{arg}\" is not host:port"
            ))),
        },
        "HTTP" if arg.starts_with("http://") && arg.len() > "http://".len() => Ok(()),
        "HTTP" => Err(invalid(format!(
            "healthcheck: HTTP check URL \"{arg}\" must start with http://"
        ))),
        other => Err(invalid(format!(
            "healthcheck: unknown test \"{other}\" (NONE, CMD, CMD-SHELL, TCP or HTTP)"
        ))),
    }
}

fn secret_refs(refs: &[SecretReference]) -> Result<(), Status> {
    let refs = refs.iter().map(|r| FileRef {
        id: &r.secret_id,
        name: &r.secret_name,
        target: &r.target,
        uid: &r.uid,
        gid: &r.gid,
        mode: r.mode,
    });
    file_refs("secret", refs)
}

fn config_refs(refs: &[ConfigReference]) -> Result<(), Status> {
    let refs = refs.iter().map(|r| FileRef {
        id: &r.config_id,
        name: &r.config_name,
        target: &r.target,
        uid: &r.uid,
        gid: &r.gid,
        mode: r.mode,
    });
    file_refs("config", refs)
}

/// A secret or config reference: the object and the file a task sees it as.
struct FileRef<'a> {
    id: &'a str,
    name: &'a str,
    target: &'a str,
    uid: &'a str,
    gid: &'a str,
    mode: Option<u32>,
}

/// swarmkit's `validateSecretRefsSpec` / `validateConfigRefsSpec` (every target in
/// shoal is a file target), plus what the worker needs to write the file safely: a
/// target without `..` components or NUL bytes (process tasks get their files in a
/// per-task directory on the host), numeric uid/gid, and permission bits only.
fn file_refs<'a>(kind: &str, refs: impl Iterator<Item = FileRef<'a>>) -> Result<(), Status> {
    let field = format!("{kind}s");
    let mut targets: HashMap<&str, &str> = HashMap::new();
    for r in refs {
        if r.id.is_empty() || r.name.is_empty() {
            return Err(invalid(format!("{field}: malformed {kind} reference")));
        }
        let bad_target = r.target.is_empty()
            || r.target.contains('\0')
            || r.target.split('/').any(|c| c == "..")
            || r.target.trim_end_matches('/').is_empty();
        if bad_target {
            return Err(invalid(format!(
                "{field}: malformed file {kind} reference, invalid target file name provided: {:?}",
                r.target
            )));
        }
        for (what, value) in [("uid", r.uid), ("gid", r.gid)] {
            if !value.is_empty() && value.parse::<u32>().is_err() {
                return Err(invalid(format!(
                    "{field}: {kind} reference '{}': {what} {value:?} is not a number",
                    r.name
                )));
            }
        }
        if r.mode.is_some_and(|m| m > 0o7777) {
            return Err(invalid(format!(
                "{field}: {kind} reference '{}': invalid mode {:#o}",
                r.name,
                r.mode.unwrap_or_default()
            )));
        }
        if let Some(prev) = targets.insert(r.target, r.name) {
            return Err(invalid(format!(
                "{field}: {kind} references '{prev}' and '{}' have a conflicting target: '{}'",
                r.name, r.target
            )));
        }
    }
    Ok(())
}

fn resources(r: Option<&ResourceRequirements>) -> Result<(), Status> {
    let Some(r) = r else { return Ok(()) };
    let one = |what: &str, res: Option<&Resources>| -> Result<(), Status> {
        let Some(res) = res else { return Ok(()) };
        if res.nano_cpus < 0 {
            return Err(invalid(format!(
                "resources: {what} cpu value {} must not be negative",
                res.nano_cpus as f64 / 1e9
            )));
        }
        if res.memory_bytes < 0 {
            return Err(invalid(format!(
                "resources: {what} memory value {} must not be negative",
                res.memory_bytes
            )));
        }
        if res.nano_cpus != 0 && res.nano_cpus < 1_000_000 {
            return Err(invalid(format!(
                "resources: invalid cpu value {}: Must be at least 0.001",
                res.nano_cpus as f64 / 1e9
            )));
        }
        if res.memory_bytes != 0 && res.memory_bytes < 4 * 1024 * 1024 {
            return Err(invalid(format!(
                "resources: invalid memory value {}: Must be at least 4MiB",
                res.memory_bytes
            )));
        }
        Ok(())
    };
    one("limit", r.limits.as_ref())?;
    one("reservation", r.reservations.as_ref())?;
    if let (Some(l), Some(res)) = (r.limits.as_ref(), r.reservations.as_ref()) {
        if l.nano_cpus != 0 && res.nano_cpus > l.nano_cpus {
            return Err(invalid(format!(
                "resources: reserved cpus ({}) exceed the limit ({})",
                res.nano_cpus as f64 / 1e9,
                l.nano_cpus as f64 / 1e9
            )));
        }
        if l.memory_bytes != 0 && res.memory_bytes > l.memory_bytes {
            return Err(invalid(format!(
                "resources: reserved memory ({} bytes) exceeds the limit ({} bytes)",
                res.memory_bytes, l.memory_bytes
            )));
        }
    }
    Ok(())
}

fn restart_policy(rp: Option<&RestartPolicy>) -> Result<(), Status> {
    let Some(rp) = rp else { return Ok(()) };
    if restart_policy::Condition::try_from(rp.condition).is_err() {
        return Err(invalid(format!(
            "restart: unknown restart condition {}",
            rp.condition
        )));
    }
    if rp.delay.as_ref().is_some_and(|d| duration_nanos(d) < 0) {
        return Err(invalid(
            "restart: TaskSpec: restart-delay cannot be negative",
        ));
    }
    if rp.window.as_ref().is_some_and(|d| duration_nanos(d) < 0) {
        return Err(invalid(
            "restart: TaskSpec: restart-window cannot be negative",
        ));
    }
    Ok(())
}

fn placement(p: Option<&Placement>) -> Result<(), Status> {
    let Some(p) = p else { return Ok(()) };
    for c in &p.constraints {
        shoal_scheduler::placement::constraint::parse(c)
            .map_err(|e| invalid(format!("constraints: {e}")))?;
    }
    for pref in &p.preferences {
        spread_descriptor(&pref.spread_descriptor)?;
    }
    Ok(())
}

/// `node.labels.<name>` or `engine.labels.<name>` (optionally written `spread=...`).
fn spread_descriptor(d: &str) -> Result<(), Status> {
    let bare = d.trim();
    let bare = bare.strip_prefix("spread=").unwrap_or(bare);
    let lower = bare.to_ascii_lowercase();
    let label = lower
        .strip_prefix("node.labels.")
        .or_else(|| lower.strip_prefix("engine.labels."));
    match label {
        Some(name) if !name.is_empty() => Ok(()),
        _ => Err(invalid(format!(
            "placement preferences: invalid spread descriptor {d:?}: expected spread=node.labels.<name> or spread=engine.labels.<name>"
        ))),
    }
}

fn update_config(field: &str, uc: Option<&UpdateConfig>) -> Result<(), Status> {
    let Some(uc) = uc else { return Ok(()) };
    if uc.delay.as_ref().is_some_and(|d| duration_nanos(d) < 0) {
        return Err(invalid(format!(
            "{field}: TaskSpec: {field}-delay cannot be negative"
        )));
    }
    if uc.monitor.as_ref().is_some_and(|d| duration_nanos(d) < 0) {
        return Err(invalid(format!(
            "{field}: TaskSpec: {field}-monitor cannot be negative"
        )));
    }
    if !(0.0..=1.0).contains(&uc.max_failure_ratio) {
        return Err(invalid(format!(
            "{field}: TaskSpec: {field}-maxfailureratio cannot be less than 0 or bigger than 1"
        )));
    }
    if update_config::FailureAction::try_from(uc.failure_action).is_err() {
        return Err(invalid(format!(
            "{field}: unknown failure action {}",
            uc.failure_action
        )));
    }
    if update_config::UpdateOrder::try_from(uc.order).is_err() {
        return Err(invalid(format!(
            "{field}: unknown update order {}",
            uc.order
        )));
    }
    Ok(())
}

fn endpoint(ep: Option<&EndpointSpec>) -> Result<(), Status> {
    let Some(ep) = ep else { return Ok(()) };
    let dnsrr = endpoint_spec::ResolutionMode::try_from(ep.mode)
        .map_err(|_| invalid(format!("endpoint: unknown resolution mode {}", ep.mode)))?
        == endpoint_spec::ResolutionMode::Dnsrr;
    let mut published = HashSet::new();
    for p in &ep.ports {
        port(p)?;
        let ingress = p.publish_mode == port_config::PublishMode::Ingress as i32;
        if dnsrr && ingress {
            return Err(invalid(
                "ports: EndpointSpec: port published with ingress mode can't be used with dnsrr mode",
            ));
        }
        if p.published_port != 0 && !published.insert((p.published_port, p.protocol)) {
            return Err(invalid(format!(
                "ports: EndpointSpec: duplicate published ports provided ({}/{})",
                p.published_port,
                protocol_name(p.protocol)
            )));
        }
    }
    Ok(())
}

pub fn protocol_name(p: i32) -> &'static str {
    match port_config::Protocol::try_from(p) {
        Ok(port_config::Protocol::Udp) => "udp",
        Ok(port_config::Protocol::Sctp) => "sctp",
        _ => "tcp",
    }
}

fn port(p: &PortConfig) -> Result<(), Status> {
    if p.target_port == 0 || p.target_port > 65535 {
        return Err(invalid(format!(
            "ports: invalid target port {}: must be between 1 and 65535",
            p.target_port
        )));
    }
    if p.published_port > 65535 {
        return Err(invalid(format!(
            "ports: invalid published port {}: must be between 0 and 65535",
            p.published_port
        )));
    }
    if port_config::Protocol::try_from(p.protocol).is_err() {
        return Err(invalid(format!("ports: unknown protocol {}", p.protocol)));
    }
    if port_config::PublishMode::try_from(p.publish_mode).is_err() {
        return Err(invalid(format!(
            "ports: unknown publish mode {}",
            p.publish_mode
        )));
    }
    Ok(())
}

/// Docker's image reference grammar (github.com/distribution/reference), as
/// `ParseNormalizedNamed` applies it.
pub mod reference {
    /// Checks `s` the way `reference.ParseNormalizedNamed` does; the error is the
    /// library's message.
    pub fn parse_normalized(s: &str) -> Result<(), String> {
        const FORMAT: &str = "invalid reference format";
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(format!(
                "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest
            && !valid_digest(d)
        {
            return Err(FORMAT.into());
        }
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(FORMAT.into());
        }
        if name.is_empty() {
            return Err(format!(
                "{FORMAT}: repository name must have at least one component"
            ));
        }
        let (domain, remainder) = split_domain(name);
        if let Some(d) = domain
            && !valid_domain(d)
        {
            return Err(FORMAT.into());
        }
        if remainder.to_ascii_lowercase() != remainder {
            let shown = if domain.is_none() && !remainder.contains('/') {
                format!("library/{remainder}")
            } else {
                remainder.to_string()
            };
            return Err(format!(
                "{FORMAT}: repository name ({shown}) must be lowercase"
            ));
        }
        if !remainder.split('/').all(valid_path_component) {
            return Err(FORMAT.into());
        }
        if name.len() > 255 {
            return Err("repository name must not be more than 255 characters".into());
        }
        Ok(())
    }

    /// Docker's rule: the first component is a registry when there is more than one
    /// and it has a `.` or `:`, is `localhost`, or has an uppercase letter.
    fn split_domain(name: &str) -> (Option<&str>, &str) {
        match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.to_ascii_lowercase() != first =>
            {
                (Some(first), rest)
            }
            _ => (None, name),
        }
    }

    /// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
    fn valid_path_component(c: &str) -> bool {
        let b = c.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            let ch = b[i];
            if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
                i += 1;
                continue;
            }
            // A separator: '.', '_', '__' or a run of '-'.
            let start = i;
            match ch {
                b'.' => i += 1,
                b'_' => {
                    i += 1;
                    if b.get(i) == Some(&b'_') {
                        i += 1;
                    }
                }
                b'-' => {
                    while b.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => return false,
            }
            if i == start
                || !b
                    .get(i)
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return false;
            }
        }
        true
    }

    /// `host(:port)?`, host a domain name or a bracketed IPv6 address.
    fn valid_domain(d: &str) -> bool {
        let (host, port) = if let Some(rest) = d.strip_prefix('[') {
            let Some((v6, after)) = rest.split_once(']') else {
                return false;
            };
            if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                return false;
            }
            match after {
                "" => return true,
                p => match p.strip_prefix(':') {
                    Some(port) => ("x", Some(port)),
                    None => return false,
                },
            }
        } else {
            match d.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (d, None),
            }
        };
        if let Some(p) = port
            && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return false;
        }
        host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
    }

    /// `[\w][\w.-]{0,127}`
    fn valid_tag(t: &str) -> bool {
        let b = t.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    }

    /// `algorithm:hex` with at least 32 hex digits.
    fn valid_digest(d: &str) -> bool {
        let Some((alg, hex)) = d.split_once(':') else {
            return false;
        };
        let alg_ok = alg.split(['+', '.', '_', '-']).all(|c| {
            c.starts_with(|ch: char| ch.is_ascii_alphabetic())
                && c.chars().all(|ch| ch.is_ascii_alphanumeric())
        });
        alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        Annotations, GlobalService, PlacementPreference, ReplicatedJob, ReplicatedService,
    };

    fn base() -> ServiceSpec {
        ServiceSpec {
            annotations: Some(Annotations {
                name: "web".into(),
                labels: Default::default(),
            }),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: "nginx:alpine".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 2,
            })),
            ..Default::default()
        }
    }

    fn task_mut(spec: &mut ServiceSpec) -> &mut TaskSpec {
        spec.task.get_or_insert_with(TaskSpec::default)
    }

    fn container_mut(spec: &mut ServiceSpec) -> &mut ContainerSpec {
        match spec.task.as_mut().and_then(|t| t.runtime.as_mut()) {
            Some(task_spec::Runtime::Container(c)) => c,
            _ => panic!("container spec"),
        }
    }

    fn refused(spec: &ServiceSpec, field: &str) {
        let err = service_spec(spec).expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains(field),
            "{field:?} not in {:?}",
            err.message()
        );
    }

    #[test]
    fn a_plain_spec_is_accepted() {
        assert!(service_spec(&base()).is_ok());
    }

    #[test]
    fn healthcheck_tests_take_docker_forms_and_tcp_http_for_processes() {
        let test = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(health_test(&test(&["CMD-SHELL", "curl -f localhost"]), false).is_ok());
        assert!(health_test(&test(&["NONE"]), false).is_ok());
        assert!(health_test(&[], false).is_ok());
        assert!(health_test(&test(&["TCP", "127.0.0.1:80"]), true).is_ok());
        assert!(health_test(&test(&["HTTP", "http://127.0.0.1:80/health"]), true).is_ok());
        for (bad, process, why) in [
            (test(&["CMD"]), false, "needs a command"),
            (test(&["TCP", "127.0.0.1:80"]), false, "for process tasks"),
            (test(&["TCP", "nope"]), true, "not host:port"),
            (test(&["HTTP", "ftp://x"]), true, "must start with http://"),
            (test(&["PING"]), true, "unknown test"),
        ] {
            let err = health_test(&bad, process).expect_err(why);
            assert!(err.message().contains(why), "{:?}", err.message());
        }
        let mut spec = base();
        container_mut(&mut spec).healthcheck = Some(HealthConfig {
            test: test(&["TCP", "127.0.0.1:80"]),
            ..Default::default()
        });
        refused(&spec, "healthcheck");
    }

    #[test]
    fn image_references_follow_dockers_grammar() {
        for ok in [
            "nginx",
            "nginx:1.25-alpine",
            "library/nginx",
            "docker.io/library/nginx:latest",
            "localhost:5000/app",
            "Registry.Example.com/team/app:v1",
            "[::1]:5000/app",
            "a_b__c/d-e--f.g",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(reference::parse_normalized(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Nginx",
            "nginx:",
            ":tag",
            "nginx::1",
            "-nginx",
            "nginx-",
            "a//b",
            "a/b/",
            "nginx:tag with space",
            "busybox@sha256:short",
            "nginx:.tag",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "host:port/app",
        ] {
            assert!(reference::parse_normalized(bad).is_err(), "{bad}");
        }
        let err = reference::parse_normalized("Nginx").expect_err("uppercase");
        assert_eq!(
            err,
            "invalid reference format: repository name (library/Nginx) must be lowercase"
        );
        let mut spec = base();
        container_mut(&mut spec).image = "bad image".into();
        let err = service_spec(&spec).expect_err("bad image");
        assert!(err.message().contains("invalid reference format"));
        assert!(err.message().contains("is not a valid repository/tag"));
    }

    #[test]
    fn names_are_dns_labels() {
        for ok in ["web", "w", "my_web-1", &"x".repeat(63)] {
            assert!(name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", "web-", "we.b", "we b", &"x".repeat(64)] {
            assert!(name(bad).is_err(), "{bad}");
        }
        for seed in [0, 7, 123, 399, u64::MAX] {
            assert!(name(&generated_name(seed)).is_ok());
        }
    }

    #[test]
    fn each_field_is_checked() {
        let mut s = base();
        s.annotations = None;
        refused(&s, "name");

        let mut s = base();
        task_mut(&mut s).runtime = None;
        refused(&s, "runtime");

        let mut s = base();
        task_mut(&mut s).runtime = Some(task_spec::Runtime::Process(ProcessSpec::default()));
        refused(&s, "command");

        let mut s = base();
        container_mut(&mut s).image.clear();
        refused(&s, "image");

        let mut s = base();
        s.mode = None;
        refused(&s, "mode");

        let mut s = base();
        s.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: u64::MAX,
        }));
        refused(&s, "replicas");

        let mut s = base();
        s.mode = Some(service_spec::Mode::ReplicatedJob(ReplicatedJob {
            max_concurrent: 1,
            total_completions: u64::MAX,
        }));
        refused(&s, "total_completions");

        let mut s = base();
        s.mode = Some(service_spec::Mode::ReplicatedJob(ReplicatedJob::default()));
        s.update = Some(UpdateConfig::default());
        refused(&s, "update");

        let mut s = base();
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(Placement {
                constraints: vec!["node.role=manager".into()],
                ..Default::default()
            });
        }
        refused(&s, "constraints");

        let mut s = base();
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(Placement {
                preferences: vec![PlacementPreference {
                    spread_descriptor: "node.zone".into(),
                }],
                ..Default::default()
            });
        }
        refused(&s, "spread");

        let mut s = base();
        s.mode = Some(service_spec::Mode::Global(GlobalService {}));
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(Placement {
                max_replicas: 2,
                ..Default::default()
            });
        }
        refused(&s, "placement");

        let port = |target, published| PortConfig {
            target_port: target,
            published_port: published,
            ..Default::default()
        };
        for ports in [
            vec![port(0, 80)],
            vec![port(70000, 80)],
            vec![port(80, 70000)],
            vec![port(80, 8080), port(81, 8080)],
        ] {
            let mut s = base();
            s.endpoint = Some(EndpointSpec { mode: 0, ports });
            refused(&s, "ports");
        }
        // Two unpublished ports and the same number over two protocols are fine.
        let mut s = base();
        s.endpoint = Some(EndpointSpec {
            mode: 0,
            ports: vec![
                port(80, 0),
                port(81, 0),
                port(53, 53),
                PortConfig {
                    protocol: port_config::Protocol::Udp as i32,
                    ..port(53, 53)
                },
            ],
        });
        assert!(service_spec(&s).is_ok());

        for m in [
            Mount {
                target: "".into(),
                r#type: mount::Type::Volume as i32,
                ..Default::default()
            },
            Mount {
                source: "".into(),
                target: "/data".into(),
                ..Default::default()
            },
        ] {
            let mut s = base();
            container_mut(&mut s).mounts = vec![m];
            refused(&s, "mount");
        }
        let mut s = base();
        let vol = Mount {
            target: "/data".into(),
            r#type: mount::Type::Volume as i32,
            ..Default::default()
        };
        container_mut(&mut s).mounts = vec![vol.clone(), vol];
        refused(&s, "duplicate mount point");

        let res = |cpu, mem| {
            Some(Resources {
                nano_cpus: cpu,
                memory_bytes: mem,
                ..Default::default()
            })
        };
        for r in [
            ResourceRequirements {
                limits: res(-1, 0),
                reservations: None,
            },
            ResourceRequirements {
                limits: res(1000, 0),
                reservations: None,
            },
            ResourceRequirements {
                limits: res(0, 1024),
                reservations: None,
            },
            ResourceRequirements {
                limits: res(1_000_000_000, 0),
                reservations: res(2_000_000_000, 0),
            },
            ResourceRequirements {
                limits: res(0, 64 << 20),
                reservations: res(0, 128 << 20),
            },
        ] {
            let mut s = base();
            task_mut(&mut s).resources = Some(r);
            refused(&s, "resources");
        }

        let neg = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        let mut s = base();
        if let Some(t) = s.task.as_mut() {
            t.restart = Some(RestartPolicy {
                delay: neg,
                ..Default::default()
            });
        }
        refused(&s, "restart");

        let mut s = base();
        s.update = Some(UpdateConfig {
            monitor: neg,
            ..Default::default()
        });
        refused(&s, "update");

        let mut s = base();
        s.rollback = Some(UpdateConfig {
            max_failure_ratio: 1.5,
            ..Default::default()
        });
        refused(&s, "rollback");
    }

    #[test]
    fn secret_and_config_references_follow_swarmkit() {
        let secret = |name: &str, target: &str| SecretReference {
            secret_id: format!("id-{name}"),
            secret_name: name.into(),
            target: target.into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: Some(0o444),
        };
        let with = |refs: Vec<SecretReference>| {
            let mut s = base();
            container_mut(&mut s).secrets = refs;
            s
        };
        assert!(service_spec(&with(vec![secret("a", "a"), secret("b", "/etc/b")])).is_ok());
        let mut nameless = secret("a", "a");
        nameless.secret_name.clear();
        refused(&with(vec![nameless]), "malformed secret reference");
        for target in ["", "../x", "a/../../b", "/", "a\0b"] {
            refused(
                &with(vec![secret("a", target)]),
                "malformed file secret reference, invalid target file name provided",
            );
        }
        refused(
            &with(vec![secret("a", "x"), secret("b", "x")]),
            "secret references 'a' and 'b' have a conflicting target: 'x'",
        );
        let mut uid = secret("a", "a");
        uid.uid = "root".into();
        refused(&with(vec![uid]), "uid \"root\" is not a number");
        let mut mode = secret("a", "a");
        mode.mode = Some(0o10000);
        refused(&with(vec![mode]), "invalid mode");

        let mut s = base();
        container_mut(&mut s).configs = vec![
            ConfigReference {
                config_id: "c1".into(),
                config_name: "one".into(),
                target: "/etc/app.conf".into(),
                ..Default::default()
            },
            ConfigReference {
                config_id: "c2".into(),
                config_name: "two".into(),
                target: "/etc/app.conf".into(),
                ..Default::default()
            },
        ];
        refused(
            &s,
            "config references 'one' and 'two' have a conflicting target: '/etc/app.conf'",
        );
    }
}
