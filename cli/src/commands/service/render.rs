//! `service ls`, `service inspect` (JSON and `--pretty`) and `service logs` lines, as
//! docker prints them.

use std::collections::HashMap;

use std::time::SystemTime;

use shoal_proto::v1::{
    HealthConfig, Mount, NetworkAttachmentConfig, PortConfig, Service, ServiceSpec, ServiceStatus,
    UpdateConfig, UpdateStatus, mount, port_config, restart_policy, service_spec, task_spec,
    update_config, update_status,
};

use crate::output::{
    Table, enum_word, go_duration, human_duration, json_indented, natural_cmp, rfc3339,
    to_system_time, truncate_id,
};

pub fn id(s: &Service) -> &str {
    s.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub fn name(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// `replicated`, `global`, `replicated job`, `global job` (docker's MODE column).
pub fn mode_word(s: &Service) -> &'static str {
    match s.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(service_spec::Mode::Global(_)) => "global",
        Some(service_spec::Mode::ReplicatedJob(_)) => "replicated job",
        Some(service_spec::Mode::GlobalJob(_)) => "global job",
        _ => "replicated",
    }
}

/// The image as `service ls` shows it: a tagged reference loses its digest; a process
/// service shows its program.
pub fn image(s: &Service) -> String {
    match s
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.as_ref())
    {
        Some(task_spec::Runtime::Container(c)) => without_digest(&c.image),
        Some(task_spec::Runtime::Process(p)) => p.command.first().cloned().unwrap_or_default(),
        None => String::new(),
    }
}

fn without_digest(image: &str) -> String {
    let Some((name, _digest)) = image.split_once('@') else {
        return image.to_string();
    };
    let last = name.rsplit_once('/').map(|(_, l)| l).unwrap_or(name);
    if !last.contains(':') {
        return image.to_string();
    }
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_string()
}

/// docker's REPLICAS column: `2/3`, `1/1 (max 1 per node)`, `0/2 (3/5 completed)`.
pub fn replicas(s: &Service, status: Option<&ServiceStatus>) -> String {
    let Some(st) = status else {
        return String::new();
    };
    let mut out = format!("{}/{}", st.running_tasks, st.desired_tasks);
    let spec = s.spec.as_ref();
    if let Some(service_spec::Mode::Replicated(_)) = spec.and_then(|s| s.mode.as_ref()) {
        let max = spec
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.placement.as_ref())
            .map(|p| p.max_replicas)
            .unwrap_or(0);
        if max > 0 {
            out.push_str(&format!(" (max {max} per node)"));
        }
    }
    if let Some(service_spec::Mode::ReplicatedJob(j)) = spec.and_then(|s| s.mode.as_ref()) {
        out.push_str(&format!(
            " ({}/{} completed)",
            st.completed_tasks, j.total_completions
        ));
    }
    out
}

fn proto_word(p: i32) -> String {
    port_config::Protocol::try_from(p)
        .map(|p| enum_word(p.as_str_name(), "PROTOCOL_"))
        .unwrap_or_else(|_| "tcp".into())
}

fn ports_of(s: &Service) -> Vec<PortConfig> {
    let allocated = s
        .endpoint
        .as_ref()
        .map(|e| e.ports.clone())
        .unwrap_or_default();
    if !allocated.is_empty() {
        return allocated;
    }
    s.spec
        .as_ref()
        .and_then(|s| s.endpoint.as_ref())
        .map(|e| e.ports.clone())
        .unwrap_or_default()
}

/// docker's PORTS column: ingress ports as `*:8080->80/tcp`, consecutive ones folded
/// into ranges (`*:8080-8081->80-81/tcp`).
pub fn ports(s: &Service) -> String {
    let mut ports: Vec<PortConfig> = ports_of(s)
        .into_iter()
        .filter(|p| p.publish_mode == port_config::PublishMode::Ingress as i32)
        .collect();
    ports.sort_by_key(|p| (p.protocol, p.target_port, p.published_port));
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let start = &ports[i];
        let mut j = i;
        while j + 1 < ports.len()
            && ports[j + 1].protocol == start.protocol
            && ports[j + 1].target_port == ports[j].target_port + 1
            && start.published_port != 0
            && ports[j + 1].published_port == ports[j].published_port + 1
        {
            j += 1;
        }
        let end = &ports[j];
        let proto = proto_word(start.protocol);
        if i == j {
            out.push(format!(
                "*:{}->{}/{proto}",
                start.published_port, start.target_port
            ));
        } else {
            out.push(format!(
                "*:{}-{}->{}-{}/{proto}",
                start.published_port, end.published_port, start.target_port, end.target_port
            ));
        }
        i = j + 1;
    }
    out.join(", ")
}

/// `service ls`, sorted by name.
pub fn render_ls(services: &[Service], statuses: &HashMap<String, ServiceStatus>) -> String {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| natural_cmp(name(a), name(b)));
    let mut table = Table::new(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    for s in sorted {
        table.row(vec![
            truncate_id(id(s)),
            name(s).to_string(),
            mode_word(s).to_string(),
            replicas(s, statuses.get(id(s))),
            image(s),
            ports(s),
        ]);
    }
    table.render()
}

pub fn render_ls_quiet(services: &[Service]) -> String {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| natural_cmp(name(a), name(b)));
    sorted
        .into_iter()
        .map(|s| format!("{}\n", truncate_id(id(s))))
        .collect()
}

fn duration_ns(d: Option<&prost_types::Duration>) -> i64 {
    d.map(|d| {
        d.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(d.nanos))
    })
    .unwrap_or(0)
}

fn std_duration(d: Option<&prost_types::Duration>) -> Option<std::time::Duration> {
    d.and_then(|d| std::time::Duration::try_from(*d).ok())
}

fn mount_type(m: &Mount) -> String {
    mount::Type::try_from(m.r#type)
        .map(|t| enum_word(t.as_str_name(), "TYPE_"))
        .unwrap_or_else(|_| "volume".into())
}

fn failure_word(u: &UpdateConfig) -> String {
    update_config::FailureAction::try_from(u.failure_action)
        .map(|f| enum_word(f.as_str_name(), "FAILURE_ACTION_"))
        .unwrap_or_else(|_| "pause".into())
}

fn order_word(u: &UpdateConfig) -> String {
    update_config::UpdateOrder::try_from(u.order)
        .map(|o| enum_word(o.as_str_name(), "UPDATE_ORDER_").replace('_', "-"))
        .unwrap_or_else(|_| "stop-first".into())
}

fn condition_word(c: i32) -> String {
    restart_policy::Condition::try_from(c)
        .map(|c| enum_word(c.as_str_name(), "CONDITION_").replace('_', "-"))
        .unwrap_or_else(|_| "any".into())
}

fn update_json(u: &UpdateConfig) -> serde_json::Value {
    serde_json::json!({
        "Parallelism": u.parallelism,
        "Delay": duration_ns(u.delay.as_ref()),
        "FailureAction": failure_word(u),
        "Monitor": duration_ns(u.monitor.as_ref()),
        "MaxFailureRatio": u.max_failure_ratio,
        "Order": order_word(u),
    })
}

fn port_json(p: &PortConfig) -> serde_json::Value {
    serde_json::json!({
        "Protocol": proto_word(p.protocol),
        "TargetPort": p.target_port,
        "PublishedPort": p.published_port,
        "PublishMode": port_config::PublishMode::try_from(p.publish_mode)
            .map(|m| enum_word(m.as_str_name(), "PUBLISH_MODE_"))
            .unwrap_or_else(|_| "ingress".into()),
    })
}

fn health_json(h: &HealthConfig) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut m = Map::new();
    if !h.test.is_empty() {
        m.insert("Test".into(), json!(h.test));
    }
    for (key, d) in [
        ("Interval", &h.interval),
        ("Timeout", &h.timeout),
        ("StartPeriod", &h.start_period),
    ] {
        if d.is_some() {
            m.insert(key.into(), json!(duration_ns(d.as_ref())));
        }
    }
    if h.retries != 0 {
        m.insert("Retries".into(), json!(h.retries));
    }
    Value::Object(m)
}

/// docker's word for an update state: `updating`, `rollback_completed`, …
pub fn update_state_word(state: i32) -> String {
    update_status::UpdateState::try_from(state)
        .map(|s| enum_word(s.as_str_name(), "UPDATE_STATE_"))
        .unwrap_or_else(|_| "unknown".into())
}

fn update_status_json(u: &UpdateStatus) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut m = Map::new();
    m.insert("State".into(), json!(update_state_word(u.state)));
    if u.started_at.is_some() {
        m.insert("StartedAt".into(), json!(rfc3339(u.started_at.as_ref())));
    }
    if u.completed_at.is_some() {
        m.insert(
            "CompletedAt".into(),
            json!(rfc3339(u.completed_at.as_ref())),
        );
    }
    m.insert("Message".into(), json!(u.message));
    Value::Object(m)
}

/// `service inspect`: one service in docker's JSON shape (durations in nanoseconds,
/// enums as docker's words).
pub fn inspect_json(s: &Service) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let spec = s.spec.clone().unwrap_or_default();
    let current = spec_json(&spec);
    let mut endpoint = Map::new();
    endpoint.insert("Spec".into(), current["EndpointSpec"].clone());
    let allocated = s
        .endpoint
        .as_ref()
        .map(|e| e.ports.clone())
        .unwrap_or_default();
    if !allocated.is_empty() {
        endpoint.insert(
            "Ports".into(),
            json!(allocated.iter().map(port_json).collect::<Vec<_>>()),
        );
    }
    let vips: Vec<Value> = s
        .endpoint
        .as_ref()
        .map(|e| {
            e.virtual_ips
                .iter()
                .map(|v| json!({"NetworkID": v.network_id, "Addr": v.addr}))
                .collect()
        })
        .unwrap_or_default();
    if !vips.is_empty() {
        endpoint.insert("VirtualIPs".into(), json!(vips));
    }
    let meta = s.meta.clone().unwrap_or_default();
    let mut out = Map::new();
    out.insert("ID".into(), json!(meta.id));
    out.insert(
        "Version".into(),
        json!({"Index": meta.version.map(|v| v.index).unwrap_or(0)}),
    );
    out.insert("CreatedAt".into(), json!(rfc3339(meta.created_at.as_ref())));
    out.insert("UpdatedAt".into(), json!(rfc3339(meta.updated_at.as_ref())));
    out.insert("Spec".into(), current);
    if let Some(previous) = &s.previous_spec {
        out.insert("PreviousSpec".into(), spec_json(previous));
    }
    out.insert("Endpoint".into(), Value::Object(endpoint));
    if let Some(u) = s
        .update_status
        .as_ref()
        .filter(|u| u.state != update_status::UpdateState::Unknown as i32)
    {
        out.insert("UpdateStatus".into(), update_status_json(u));
    }
    if let Some(js) = &s.job_status {
        out.insert(
            "JobStatus".into(),
            json!({
                "JobIteration": {"Index": js.job_iteration.as_ref().map(|v| v.index).unwrap_or(0)},
                "LastExecution": rfc3339(js.last_execution.as_ref()),
            }),
        );
    }
    Value::Object(out)
}

/// docker's `SecretReference` / `ConfigReference` JSON: the file target with its
/// owner and mode (a number, as Go's `os.FileMode` marshals), then id and name.
fn file_target_json(target: &str, uid: &str, gid: &str, mode: Option<u32>) -> serde_json::Value {
    serde_json::json!({
        "Name": target,
        "UID": if uid.is_empty() { "0" } else { uid },
        "GID": if gid.is_empty() { "0" } else { gid },
        "Mode": mode.unwrap_or(0o444),
    })
}

/// `Secrets` and `Configs` of a container (or process) spec, when there are any.
fn insert_file_refs(
    spec: &mut serde_json::Map<String, serde_json::Value>,
    secrets: &[shoal_proto::v1::SecretReference],
    configs: &[shoal_proto::v1::ConfigReference],
) {
    use serde_json::{Value, json};
    if !secrets.is_empty() {
        let refs: Vec<Value> = secrets
            .iter()
            .map(|r| {
                json!({
                    "File": file_target_json(&r.target, &r.uid, &r.gid, r.mode),
                    "SecretID": r.secret_id,
                    "SecretName": r.secret_name,
                })
            })
            .collect();
        spec.insert("Secrets".into(), json!(refs));
    }
    if !configs.is_empty() {
        let refs: Vec<Value> = configs
            .iter()
            .map(|r| {
                json!({
                    "File": file_target_json(&r.target, &r.uid, &r.gid, r.mode),
                    "ConfigID": r.config_id,
                    "ConfigName": r.config_name,
                })
            })
            .collect();
        spec.insert("Configs".into(), json!(refs));
    }
}

/// docker's pretty `Configs:` then `Secrets:` blocks (target, then source).
fn file_refs_pretty(
    out: &mut String,
    secrets: &[shoal_proto::v1::SecretReference],
    configs: &[shoal_proto::v1::ConfigReference],
) {
    if !configs.is_empty() {
        out.push_str("Configs:\n");
        for r in configs {
            out.push_str(&format!(
                " Target:\t{}\n  Source:\t{}\n",
                r.target, r.config_name
            ));
        }
    }
    if !secrets.is_empty() {
        out.push_str("Secrets:\n");
        for r in secrets {
            out.push_str(&format!(
                " Target:\t{}\n  Source:\t{}\n",
                r.target, r.secret_name
            ));
        }
    }
}

/// Network attachments as docker's `NetworkAttachmentConfig` (aliases only when set).
fn attachments_json(networks: &[NetworkAttachmentConfig]) -> serde_json::Value {
    networks
        .iter()
        .map(|n| {
            let mut m = serde_json::Map::new();
            m.insert("Target".into(), serde_json::json!(n.target));
            if !n.aliases.is_empty() {
                m.insert("Aliases".into(), serde_json::json!(n.aliases));
            }
            serde_json::Value::Object(m)
        })
        .collect()
}

/// A service spec in docker's JSON shape (`Spec`, `PreviousSpec`).
fn spec_json(spec: &ServiceSpec) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let spec = spec.clone();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let mut template = Map::new();
    match &task.runtime {
        Some(task_spec::Runtime::Container(c)) => {
            let mut cs = Map::new();
            cs.insert("Image".into(), json!(c.image));
            if !c.labels.is_empty() {
                cs.insert("Labels".into(), json!(c.labels));
            }
            if !c.command.is_empty() {
                cs.insert("Command".into(), json!(c.command));
            }
            if !c.args.is_empty() {
                cs.insert("Args".into(), json!(c.args));
            }
            if !c.hostname.is_empty() {
                cs.insert("Hostname".into(), json!(c.hostname));
            }
            if !c.env.is_empty() {
                cs.insert("Env".into(), json!(c.env));
            }
            if !c.dir.is_empty() {
                cs.insert("Dir".into(), json!(c.dir));
            }
            if !c.user.is_empty() {
                cs.insert("User".into(), json!(c.user));
            }
            if !c.mounts.is_empty() {
                let mounts: Vec<Value> = c
                    .mounts
                    .iter()
                    .map(|m| {
                        json!({"Type": mount_type(m), "Source": m.source, "Target": m.target, "ReadOnly": m.read_only})
                    })
                    .collect();
                cs.insert("Mounts".into(), json!(mounts));
            }
            if let Some(h) = &c.healthcheck {
                cs.insert("Healthcheck".into(), health_json(h));
            }
            insert_file_refs(&mut cs, &c.secrets, &c.configs);
            if c.stop_grace_period.is_some() {
                cs.insert(
                    "StopGracePeriod".into(),
                    json!(duration_ns(c.stop_grace_period.as_ref())),
                );
            }
            template.insert("ContainerSpec".into(), Value::Object(cs));
        }
        Some(task_spec::Runtime::Process(p)) => {
            let mut ps = Map::new();
            ps.insert("Command".into(), json!(p.command));
            if !p.args.is_empty() {
                ps.insert("Args".into(), json!(p.args));
            }
            if !p.env.is_empty() {
                ps.insert("Env".into(), json!(p.env));
            }
            if !p.dir.is_empty() {
                ps.insert("Dir".into(), json!(p.dir));
            }
            if let Some(h) = &p.healthcheck {
                ps.insert("Healthcheck".into(), health_json(h));
            }
            insert_file_refs(&mut ps, &p.secrets, &p.configs);
            if p.stop_grace_period.is_some() {
                ps.insert(
                    "StopGracePeriod".into(),
                    json!(duration_ns(p.stop_grace_period.as_ref())),
                );
            }
            template.insert("ProcessSpec".into(), Value::Object(ps));
        }
        None => {}
    }
    let res = |r: Option<&shoal_proto::v1::Resources>| {
        let r = r.cloned().unwrap_or_default();
        let mut m = Map::new();
        if r.nano_cpus != 0 {
            m.insert("NanoCPUs".into(), json!(r.nano_cpus));
        }
        if r.memory_bytes != 0 {
            m.insert("MemoryBytes".into(), json!(r.memory_bytes));
        }
        Value::Object(m)
    };
    let resources = task.resources.unwrap_or_default();
    template.insert(
        "Resources".into(),
        json!({"Limits": res(resources.limits.as_ref()), "Reservations": res(resources.reservations.as_ref())}),
    );
    if let Some(r) = &task.restart {
        template.insert(
            "RestartPolicy".into(),
            json!({
                "Condition": condition_word(r.condition),
                "Delay": duration_ns(r.delay.as_ref()),
                "MaxAttempts": r.max_attempts,
                "Window": duration_ns(r.window.as_ref()),
            }),
        );
    }
    let placement = task.placement.clone().unwrap_or_default();
    let mut pl = Map::new();
    if !placement.constraints.is_empty() {
        pl.insert("Constraints".into(), json!(placement.constraints));
    }
    if !placement.preferences.is_empty() {
        let prefs: Vec<Value> = placement
            .preferences
            .iter()
            .map(|p| json!({"Spread": {"SpreadDescriptor": p.spread_descriptor}}))
            .collect();
        pl.insert("Preferences".into(), json!(prefs));
    }
    if placement.max_replicas > 0 {
        pl.insert("MaxReplicas".into(), json!(placement.max_replicas));
    }
    template.insert("Placement".into(), Value::Object(pl));
    if !task.networks.is_empty() {
        template.insert("Networks".into(), attachments_json(&task.networks));
    }
    template.insert("ForceUpdate".into(), json!(task.force_update));
    template.insert(
        "Runtime".into(),
        json!(match task.runtime {
            Some(task_spec::Runtime::Process(_)) => "process",
            _ => "container",
        }),
    );
    let mode = match &spec.mode {
        Some(service_spec::Mode::Global(_)) => json!({"Global": {}}),
        Some(service_spec::Mode::ReplicatedJob(j)) => json!({"ReplicatedJob": {
            "MaxConcurrent": j.max_concurrent, "TotalCompletions": j.total_completions}}),
        Some(service_spec::Mode::GlobalJob(_)) => json!({"GlobalJob": {}}),
        Some(service_spec::Mode::Replicated(r)) => json!({"Replicated": {"Replicas": r.replicas}}),
        None => json!({}),
    };
    let mut spec_json = Map::new();
    spec_json.insert("Name".into(), json!(annotations.name));
    spec_json.insert("Labels".into(), json!(annotations.labels));
    spec_json.insert("TaskTemplate".into(), Value::Object(template));
    spec_json.insert("Mode".into(), mode);
    if let Some(u) = &spec.update {
        spec_json.insert("UpdateConfig".into(), update_json(u));
    }
    if let Some(u) = &spec.rollback {
        spec_json.insert("RollbackConfig".into(), update_json(u));
    }
    if !spec.networks.is_empty() {
        spec_json.insert("Networks".into(), attachments_json(&spec.networks));
    }
    let endpoint_mode = |m: i32| if m == 1 { "dnsrr" } else { "vip" };
    let espec = spec.endpoint.clone().unwrap_or_default();
    let mut espec_json = Map::new();
    espec_json.insert("Mode".into(), json!(endpoint_mode(espec.mode)));
    if !espec.ports.is_empty() {
        espec_json.insert(
            "Ports".into(),
            json!(espec.ports.iter().map(port_json).collect::<Vec<_>>()),
        );
    }
    spec_json.insert("EndpointSpec".into(), Value::Object(espec_json));
    Value::Object(spec_json)
}

pub fn render_inspect(services: &[Service]) -> String {
    let values: Vec<serde_json::Value> = services.iter().map(inspect_json).collect();
    format!("{}\n", json_indented(&serde_json::Value::Array(values)))
}

fn update_pretty(out: &mut String, title: &str, order_title: &str, u: &UpdateConfig) {
    out.push_str(&format!("{title}:\n Parallelism:\t{}\n", u.parallelism));
    if let Some(d) = std_duration(u.delay.as_ref()).filter(|d| !d.is_zero()) {
        out.push_str(&format!(" Delay:\t\t{}\n", go_duration(d)));
    }
    out.push_str(&format!(" On failure:\t{}\n", failure_word(u)));
    if let Some(d) = std_duration(u.monitor.as_ref()).filter(|d| !d.is_zero()) {
        out.push_str(&format!(" Monitoring Period: {}\n", go_duration(d)));
    }
    out.push_str(&format!(" Max failure ratio: {}\n", u.max_failure_ratio));
    out.push_str(&format!(" {order_title}{}\n", order_word(u)));
}

/// docker's `units.HumanDuration(time.Since(t)) + " ago"`.
fn since(ts: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    let elapsed = to_system_time(ts)
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default();
    format!("{} ago", human_duration(elapsed))
}

fn health_pretty(out: &mut String, h: &HealthConfig) {
    let d = |d: &Option<prost_types::Duration>| {
        go_duration(std_duration(d.as_ref()).unwrap_or_default())
    };
    out.push_str(&format!(
        " Healthcheck:\n  Interval = {}\n  Retries = {}\n  StartPeriod =\t{}\n  Timeout =\t{}\n",
        d(&h.interval),
        h.retries,
        d(&h.start_period),
        d(&h.timeout)
    ));
    if !h.test.is_empty() {
        out.push_str("  Tests:\n");
        for t in &h.test {
            out.push_str(&format!("\t Test = {t}\n"));
        }
    }
}

/// `service inspect --pretty`, docker's template; `now` for the update status's ages.
pub fn render_pretty(s: &Service, now: SystemTime) -> String {
    render_pretty_with_networks(s, now, &HashMap::new())
}

/// `service inspect --pretty` with the names of the service's networks (by id; a
/// network without a name shows its id, as docker does).
pub fn render_pretty_with_networks(
    s: &Service,
    now: SystemTime,
    network_names: &HashMap<String, String>,
) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let mut out = String::from("\n");
    out.push_str(&format!("ID:\t\t{}\n", id(s)));
    out.push_str(&format!("Name:\t\t{}\n", annotations.name));
    if !annotations.labels.is_empty() {
        out.push_str("Labels:\n");
        let mut labels: Vec<_> = annotations.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            if v.is_empty() {
                out.push_str(&format!(" {k}\n"));
            } else {
                out.push_str(&format!(" {k}={v}\n"));
            }
        }
    }
    out.push_str("Service Mode:");
    match &spec.mode {
        Some(service_spec::Mode::Global(_)) => out.push_str("\tGlobal\n"),
        Some(service_spec::Mode::Replicated(r)) => {
            out.push_str(&format!("\tReplicated\n Replicas:\t{}\n", r.replicas))
        }
        Some(service_spec::Mode::ReplicatedJob(j)) => out.push_str(&format!(
            "\tReplicated Job\n Max Concurrent:\t{}\n Total Completions:\t{}\n",
            j.max_concurrent, j.total_completions
        )),
        Some(service_spec::Mode::GlobalJob(_)) => out.push_str("\tGlobal Job\n"),
        None => out.push('\n'),
    }
    if let Some(u) = s
        .update_status
        .as_ref()
        .filter(|u| u.state != update_status::UpdateState::Unknown as i32)
    {
        out.push_str(&format!(
            "UpdateStatus:\n State:\t\t{}\n",
            update_state_word(u.state)
        ));
        if u.started_at.is_some() {
            out.push_str(&format!(
                " Started:\t{}\n",
                since(u.started_at.as_ref(), now)
            ));
        }
        if u.state == update_status::UpdateState::Completed as i32 && u.completed_at.is_some() {
            out.push_str(&format!(
                " Completed:\t{}\n",
                since(u.completed_at.as_ref(), now)
            ));
        }
        out.push_str(&format!(" Message:\t{}\n", u.message));
    }
    let placement = task.placement.clone().unwrap_or_default();
    out.push_str("Placement:\n");
    if !placement.constraints.is_empty() {
        out.push_str(&format!(
            " Constraints:\t[{}]\n",
            placement.constraints.join(" ")
        ));
    }
    if !placement.preferences.is_empty() {
        let prefs: Vec<String> = placement
            .preferences
            .iter()
            .map(|p| format!("spread={}", p.spread_descriptor))
            .collect();
        out.push_str(&format!(" Preferences:   [{}]\n", prefs.join(" ")));
    }
    if placement.max_replicas > 0 {
        out.push_str(&format!(
            " Max Replicas Per Node:   {}\n",
            placement.max_replicas
        ));
    }
    if let Some(u) = &spec.update {
        update_pretty(&mut out, "UpdateConfig", "Update order:      ", u);
    }
    if let Some(u) = &spec.rollback {
        update_pretty(&mut out, "RollbackConfig", "Rollback order:    ", u);
    }
    if let Some(r) = &task.restart {
        out.push_str(&format!(
            "RestartPolicy:\n Condition:\t{}\n",
            condition_word(r.condition)
        ));
        if let Some(d) = std_duration(r.delay.as_ref()) {
            out.push_str(&format!(" Delay:\t\t{}\n", go_duration(d)));
        }
        out.push_str(&format!(" Max Attempts:\t{}\n", r.max_attempts));
        if let Some(d) = std_duration(r.window.as_ref()).filter(|d| !d.is_zero()) {
            out.push_str(&format!(" Window:\t{}\n", go_duration(d)));
        }
    }
    match &task.runtime {
        Some(task_spec::Runtime::Container(c)) => {
            out.push_str(&format!("ContainerSpec:\n Image:\t\t{}\n", c.image));
            if !c.args.is_empty() {
                out.push_str(&format!(" Args:\t\t{} \n", c.args.join(" ")));
            }
            if !c.env.is_empty() {
                out.push_str(&format!(" Env:\t\t{} \n", c.env.join(" ")));
            }
            if !c.dir.is_empty() {
                out.push_str(&format!(" Dir:\t\t{}\n", c.dir));
            }
            if !c.user.is_empty() {
                out.push_str(&format!(" User: {}\n", c.user));
            }
            if !c.mounts.is_empty() {
                out.push_str("Mounts:\n");
                for m in &c.mounts {
                    out.push_str(&format!(
                        " Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}\n",
                        m.target,
                        m.source,
                        m.read_only,
                        mount_type(m)
                    ));
                }
            }
            file_refs_pretty(&mut out, &c.secrets, &c.configs);
        }
        Some(task_spec::Runtime::Process(p)) => {
            out.push_str(&format!(
                "ProcessSpec:\n Command:\t{} \n",
                p.command.join(" ")
            ));
            if !p.env.is_empty() {
                out.push_str(&format!(" Env:\t\t{} \n", p.env.join(" ")));
            }
            if !p.dir.is_empty() {
                out.push_str(&format!(" Dir:\t\t{}\n", p.dir));
            }
            file_refs_pretty(&mut out, &p.secrets, &p.configs);
        }
        None => {}
    }
    if let Some(r) = &task.resources {
        let cpus = |n: i64| n as f64 / 1e9;
        out.push_str("Resources:\n");
        if let Some(res) = r
            .reservations
            .as_ref()
            .filter(|x| x.nano_cpus != 0 || x.memory_bytes != 0)
        {
            out.push_str(" Reservations:\n");
            if res.nano_cpus > 0 {
                out.push_str(&format!("  CPU:\t\t{}\n", cpus(res.nano_cpus)));
            }
            if res.memory_bytes > 0 {
                out.push_str(&format!(
                    "  Memory:\t{}\n",
                    crate::output::bytes_size(res.memory_bytes)
                ));
            }
        }
        if let Some(res) = r
            .limits
            .as_ref()
            .filter(|x| x.nano_cpus != 0 || x.memory_bytes != 0)
        {
            out.push_str(" Limits:\n");
            if res.nano_cpus > 0 {
                out.push_str(&format!("  CPU:\t\t{}\n", cpus(res.nano_cpus)));
            }
            if res.memory_bytes > 0 {
                out.push_str(&format!(
                    "  Memory:\t{}\n",
                    crate::output::bytes_size(res.memory_bytes)
                ));
            }
        }
    }
    if !task.networks.is_empty() {
        out.push_str("Networks:");
        for n in &task.networks {
            let name = network_names.get(&n.target).unwrap_or(&n.target);
            out.push_str(&format!(" {name}"));
        }
        out.push_str(" \n");
    }
    let espec = spec.endpoint.clone().unwrap_or_default();
    out.push_str(&format!(
        "Endpoint Mode:\t{}\n",
        if espec.mode == 1 { "dnsrr" } else { "vip" }
    ));
    let ports = ports_of(s);
    if !ports.is_empty() {
        out.push_str("Ports:\n");
        for p in &ports {
            out.push_str(&format!(
                " PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}\n",
                p.published_port,
                proto_word(p.protocol),
                p.target_port,
                port_config::PublishMode::try_from(p.publish_mode)
                    .map(|m| enum_word(m.as_str_name(), "PUBLISH_MODE_"))
                    .unwrap_or_else(|_| "ingress".into())
            ));
        }
    }
    let health = match &task.runtime {
        Some(task_spec::Runtime::Container(c)) => c.healthcheck.as_ref(),
        Some(task_spec::Runtime::Process(p)) => p.healthcheck.as_ref(),
        None => None,
    };
    if let Some(h) = health {
        health_pretty(&mut out, h);
    }
    out.push('\n');
    out
}
