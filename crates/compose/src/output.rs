//! `docker stack config` output: the model printed in docker's struct field order,
//! with its encoder's habits (gopkg.in/yaml.v3, indent 2, sequences indented under
//! their key, zero values omitted, durations in Go form, memory as a quoted number).

use std::collections::BTreeMap;

use crate::duration::format_go_duration;
use crate::model::*;

/// An ordered YAML tree for printing.
enum Y {
    Null,
    Bool(bool),
    Int(i64),
    Float(String),
    Str(String),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

/// Builds a mapping, dropping the omitempty zero values.
#[derive(Default)]
struct M(Vec<(String, Y)>);

impl M {
    fn put(&mut self, k: &str, v: Y) -> &mut Self {
        let empty = match &v {
            Y::Seq(s) => s.is_empty(),
            Y::Map(m) => m.is_empty(),
            Y::Str(s) => s.is_empty(),
            Y::Bool(b) => !b,
            Y::Int(i) => *i == 0,
            _ => false,
        };
        if !empty {
            self.0.push((k.to_string(), v));
        }
        self
    }
    /// A key that is printed even when empty (`{}`).
    fn put_always(&mut self, k: &str, v: Y) -> &mut Self {
        self.0.push((k.to_string(), v));
        self
    }
    fn s(&mut self, k: &str, v: &Option<String>) -> &mut Self {
        if let Some(v) = v {
            self.put(k, Y::Str(v.clone()));
        }
        self
    }
    fn d(&mut self, k: &str, v: &Option<std::time::Duration>) -> &mut Self {
        if let Some(v) = v {
            // A zero Duration is omitted like any zero value.
            if !v.is_zero() {
                self.put(k, Y::Str(format_go_duration(*v)));
            }
        }
        self
    }
    fn u(&mut self, k: &str, v: Option<u64>) -> &mut Self {
        if let Some(v) = v {
            self.put_always(k, Y::Int(v as i64));
        }
        self
    }
    fn list(&mut self, k: &str, v: &[String]) -> &mut Self {
        self.put(k, strs(v))
    }
    fn smap(&mut self, k: &str, v: &BTreeMap<String, String>) -> &mut Self {
        self.put(
            k,
            Y::Map(
                v.iter()
                    .map(|(k, v)| (k.clone(), Y::Str(v.clone())))
                    .collect(),
            ),
        )
    }
    fn done(self) -> Y {
        Y::Map(self.0)
    }
}

fn strs(v: &[String]) -> Y {
    Y::Seq(v.iter().map(|s| Y::Str(s.clone())).collect())
}

fn value(v: &Value) -> Y {
    match v {
        Value::Null => Y::Null,
        Value::Bool(b) => Y::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Y::Int(i),
            None => Y::Float(crate::tree::go_float(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => Y::Str(s.clone()),
        Value::Sequence(items) => Y::Seq(items.iter().map(value).collect()),
        Value::Mapping(m) => {
            let mut entries: Vec<(String, Y)> = m
                .iter()
                .map(|(k, v)| (k.as_str().map(str::to_string).unwrap_or_default(), value(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Y::Map(entries)
        }
        Value::Tagged(t) => value(&t.value),
    }
}

fn extras(m: &mut M, extras: &BTreeMap<String, Value>) {
    for (k, v) in extras {
        m.put_always(k, value(v));
    }
}

fn update_config(u: &UpdateConfig) -> Y {
    let mut m = M::default();
    m.u("parallelism", u.parallelism)
        .d("delay", &u.delay)
        .s("failure_action", &u.failure_action)
        .d("monitor", &u.monitor);
    if let Some(r) = u.max_failure_ratio
        && r != 0.0
    {
        m.put("max_failure_ratio", Y::Float(format!("{r}")));
    }
    m.s("order", &u.order);
    m.done()
}

fn deploy(d: &DeployConfig) -> Y {
    let mut m = M::default();
    m.s("mode", &d.mode)
        .u("replicas", d.replicas)
        .smap("labels", &d.labels);
    if let Some(u) = &d.update_config {
        m.put_always("update_config", update_config(u));
    }
    if let Some(u) = &d.rollback_config {
        m.put_always("rollback_config", update_config(u));
    }
    let mut res = M::default();
    if let Some(l) = &d.resources.limits {
        let mut lm = M::default();
        lm.s("cpus", &l.cpus);
        if let Some(mem) = l.memory {
            lm.put("memory", Y::Str(mem.to_string()));
        }
        if let Some(p) = l.pids {
            lm.put("pids", Y::Int(p));
        }
        res.put_always("limits", lm.done());
    }
    if let Some(r) = &d.resources.reservations {
        let mut rm = M::default();
        rm.s("cpus", &r.cpus);
        if let Some(mem) = r.memory {
            rm.put("memory", Y::Str(mem.to_string()));
        }
        let generic: Vec<Y> = r
            .generic_resources
            .iter()
            .map(|g| {
                let mut gm = M::default();
                if let Some(s) = &g.discrete_resource_spec {
                    gm.put_always(
                        "discrete_resource_spec",
                        Y::Map(vec![
                            ("kind".into(), Y::Str(s.kind.clone())),
                            ("value".into(), Y::Int(s.value)),
                        ]),
                    );
                }
                gm.done()
            })
            .collect();
        rm.put("generic_resources", Y::Seq(generic));
        res.put_always("reservations", rm.done());
    }
    m.put("resources", res.done());
    if let Some(r) = &d.restart_policy {
        let mut rm = M::default();
        rm.s("condition", &r.condition)
            .d("delay", &r.delay)
            .u("max_attempts", r.max_attempts)
            .d("window", &r.window);
        m.put_always("restart_policy", rm.done());
    }
    let mut pm = M::default();
    pm.list("constraints", &d.placement.constraints).put(
        "preferences",
        Y::Seq(
            d.placement
                .preferences
                .iter()
                .map(|p| {
                    let mut x = M::default();
                    x.put("spread", Y::Str(p.spread.clone()));
                    x.done()
                })
                .collect(),
        ),
    );
    if let Some(n) = d.placement.max_replicas_per_node {
        pm.put("max_replicas_per_node", Y::Int(n as i64));
    }
    m.put("placement", pm.done());
    m.s("endpoint_mode", &d.endpoint_mode);
    m.done()
}

fn file_refs(refs: &[ServiceFileRef]) -> Y {
    Y::Seq(
        refs.iter()
            .map(|r| {
                let mut m = M::default();
                m.put("source", Y::Str(r.source.clone()))
                    .s("target", &r.target)
                    .s("uid", &r.uid)
                    .s("gid", &r.gid);
                if let Some(mode) = r.mode {
                    m.put_always("mode", Y::Int(mode.into()));
                }
                m.done()
            })
            .collect(),
    )
}

fn service(s: &ServiceConfig) -> Y {
    let mut m = M::default();
    if let Some(b) = &s.build {
        let mut bm = M::default();
        bm.s("context", &b.context)
            .s("dockerfile", &b.dockerfile)
            .put("args", env_map(&b.args))
            .smap("labels", &b.labels)
            .list("cache_from", &b.cache_from)
            .list("extra_hosts", &b.extra_hosts)
            .s("network", &b.network)
            .s("target", &b.target);
        m.put("build", bm.done());
    }
    m.list("cap_add", &s.cap_add)
        .list("cap_drop", &s.cap_drop)
        .s("cgroupns_mode", &s.cgroupns_mode)
        .s("cgroup_parent", &s.cgroup_parent);
    if let Some(c) = &s.command {
        m.list("command", c);
    }
    m.put("configs", file_refs(&s.configs))
        .s("container_name", &s.container_name);
    if let Some(c) = &s.credential_spec {
        let mut cm = M::default();
        cm.s("config", &c.config)
            .s("file", &c.file)
            .s("registry", &c.registry);
        m.put("credential_spec", cm.done());
    }
    m.list("depends_on", &s.depends_on);
    if let Some(d) = &s.deploy {
        m.put("deploy", deploy(d));
    }
    m.list("devices", &s.devices)
        .list("dns", &s.dns)
        .list("dns_search", &s.dns_search)
        .s("domainname", &s.domainname);
    if let Some(e) = &s.entrypoint {
        m.list("entrypoint", e);
    }
    m.put("environment", env_map(&s.environment))
        .list("env_file", &s.env_file)
        .list("expose", &s.expose)
        .list("external_links", &s.external_links)
        .list("extra_hosts", &s.extra_hosts)
        .s("hostname", &s.hostname);
    if let Some(h) = &s.healthcheck {
        let mut hm = M::default();
        hm.list("test", &h.test)
            .d("timeout", &h.timeout)
            .d("interval", &h.interval)
            .u("retries", h.retries)
            .d("start_period", &h.start_period);
        hm.d("start_interval", &h.start_interval)
            .put("disable", Y::Bool(h.disable));
        m.put_always("healthcheck", hm.done());
    }
    m.s("image", &s.image);
    if let Some(i) = s.init {
        m.put_always("init", Y::Bool(i));
    }
    m.s("ipc", &s.ipc)
        .s("isolation", &s.isolation)
        .smap("labels", &s.labels)
        .list("links", &s.links);
    if let Some(l) = &s.logging {
        let mut lm = M::default();
        lm.s("driver", &l.driver).smap("options", &l.options);
        m.put_always("logging", lm.done());
    }
    m.s("mac_address", &s.mac_address)
        .s("network_mode", &s.network_mode);
    let nets = s
        .networks
        .iter()
        .map(|(k, v)| {
            let y = match v {
                None => Y::Null,
                Some(n) => {
                    let mut nm = M::default();
                    nm.list("aliases", &n.aliases)
                        .smap("driver_opts", &n.driver_opts)
                        .s("ipv4_address", &n.ipv4_address)
                        .s("ipv6_address", &n.ipv6_address);
                    nm.done()
                }
            };
            (k.clone(), y)
        })
        .collect();
    m.put("networks", Y::Map(nets)).s("pid", &s.pid);
    let ports = s
        .ports
        .iter()
        .map(|p| {
            let mut pm = M::default();
            pm.put("mode", Y::Str(p.mode.clone()))
                .put("target", Y::Int(p.target.into()))
                .put("published", Y::Int(p.published.into()))
                .put("protocol", Y::Str(p.protocol.clone()));
            pm.done()
        })
        .collect();
    m.put("ports", Y::Seq(ports))
        .put("privileged", Y::Bool(s.privileged))
        .put("read_only", Y::Bool(s.read_only))
        .s("restart", &s.restart)
        .put("secrets", file_refs(&s.secrets))
        .list("security_opt", &s.security_opt)
        .s("shm_size", &s.shm_size)
        .put("stdin_open", Y::Bool(s.stdin_open))
        .d("stop_grace_period", &s.stop_grace_period)
        .s("stop_signal", &s.stop_signal)
        .smap("sysctls", &s.sysctls)
        .list("tmpfs", &s.tmpfs)
        .put("tty", Y::Bool(s.tty));
    let ulimits = s
        .ulimits
        .iter()
        .map(|(k, u)| {
            let y = match u {
                UlimitsConfig::Single(n) => Y::Int(*n),
                UlimitsConfig::SoftHard { soft, hard } => {
                    let mut um = M::default();
                    um.put("soft", Y::Int(*soft)).put("hard", Y::Int(*hard));
                    um.done()
                }
            };
            (k.clone(), y)
        })
        .collect();
    m.put("ulimits", Y::Map(ulimits)).s("user", &s.user);
    if let Some(o) = s.oom_score_adj {
        m.put("oom_score_adj", Y::Int(o));
    }
    m.s("userns_mode", &s.userns_mode);
    let vols = s
        .volumes
        .iter()
        .map(|v| {
            let mut vm = M::default();
            vm.put("type", Y::Str(v.r#type.clone()))
                .s("source", &v.source)
                .put("target", Y::Str(v.target.clone()))
                .put("read_only", Y::Bool(v.read_only))
                .s("consistency", &v.consistency);
            if let Some(b) = &v.bind {
                let mut bm = M::default();
                bm.s("propagation", &b.propagation);
                vm.put_always("bind", bm.done());
            }
            if let Some(o) = &v.volume {
                let mut om = M::default();
                om.put("nocopy", Y::Bool(o.nocopy)).s("subpath", &o.subpath);
                vm.put_always("volume", om.done());
            }
            if let Some(t) = &v.tmpfs {
                let mut tm = M::default();
                if let Some(size) = t.size {
                    tm.put("size", Y::Int(size));
                }
                vm.put_always("tmpfs", tm.done());
            }
            vm.done()
        })
        .collect();
    m.put("volumes", Y::Seq(vols))
        .s("working_dir", &s.working_dir);
    extras(&mut m, &s.extras);
    m.done()
}

fn env_map(env: &BTreeMap<String, Option<String>>) -> Y {
    Y::Map(
        env.iter()
            .map(|(k, v)| (k.clone(), v.as_ref().map_or(Y::Null, |v| Y::Str(v.clone()))))
            .collect(),
    )
}

fn network(n: &NetworkConfig) -> Y {
    let mut m = M::default();
    m.s("name", &n.name)
        .s("driver", &n.driver)
        .smap("driver_opts", &n.driver_opts);
    let mut im = M::default();
    im.s("driver", &n.ipam.driver).put(
        "config",
        Y::Seq(
            n.ipam
                .config
                .iter()
                .map(|p| {
                    let mut pm = M::default();
                    pm.s("subnet", &p.subnet);
                    pm.done()
                })
                .collect(),
        ),
    );
    m.put("ipam", im.done())
        .put("external", Y::Bool(n.external))
        .put("internal", Y::Bool(n.internal))
        .put("attachable", Y::Bool(n.attachable))
        .smap("labels", &n.labels);
    extras(&mut m, &n.extras);
    m.done()
}

fn volume(v: &VolumeConfig) -> Y {
    let mut m = M::default();
    m.s("name", &v.name)
        .s("driver", &v.driver)
        .smap("driver_opts", &v.driver_opts)
        .put("external", Y::Bool(v.external))
        .smap("labels", &v.labels);
    extras(&mut m, &v.extras);
    m.done()
}

fn file_object(o: &FileObjectConfig) -> Y {
    let mut m = M::default();
    m.s("name", &o.name);
    if let Some(f) = &o.file {
        m.put("file", Y::Str(f.display().to_string()));
    }
    m.put("external", Y::Bool(o.external))
        .smap("labels", &o.labels)
        .s("driver", &o.driver)
        .smap("driver_opts", &o.driver_opts)
        .s("template_driver", &o.template_driver);
    extras(&mut m, &o.extras);
    m.done()
}

pub(crate) fn to_yaml(p: &Project) -> String {
    let mut m = M::default();
    m.put_always("version", Y::Str(p.version.clone()));
    m.put_always(
        "services",
        Y::Map(
            p.services
                .iter()
                .map(|(k, s)| (k.clone(), service(s)))
                .collect(),
        ),
    );
    m.put(
        "networks",
        Y::Map(
            p.networks
                .iter()
                .map(|(k, n)| (k.clone(), network(n)))
                .collect(),
        ),
    );
    m.put(
        "volumes",
        Y::Map(
            p.volumes
                .iter()
                .map(|(k, v)| (k.clone(), volume(v)))
                .collect(),
        ),
    );
    m.put(
        "secrets",
        Y::Map(
            p.secrets
                .iter()
                .map(|(k, v)| (k.clone(), file_object(v)))
                .collect(),
        ),
    );
    m.put(
        "configs",
        Y::Map(
            p.configs
                .iter()
                .map(|(k, v)| (k.clone(), file_object(v)))
                .collect(),
        ),
    );
    extras(&mut m, &p.extras);
    let mut out = String::new();
    emit_map(&m.0, 0, &mut out);
    out
}

fn emit_map(entries: &[(String, Y)], indent: usize, out: &mut String) {
    for (k, v) in entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar_str(k));
        out.push(':');
        emit_value_after_key(v, indent, out);
    }
}

fn emit_value_after_key(v: &Y, indent: usize, out: &mut String) {
    match v {
        Y::Map(m) if m.is_empty() => out.push_str(" {}\n"),
        Y::Seq(s) if s.is_empty() => out.push_str(" []\n"),
        Y::Map(m) => {
            out.push('\n');
            emit_map(m, indent + 2, out);
        }
        Y::Seq(items) => {
            out.push('\n');
            emit_seq(items, indent + 2, out);
        }
        scalar => {
            out.push(' ');
            emit_scalar(scalar, indent, out);
        }
    }
}

fn emit_seq(items: &[Y], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Y::Map(m) if !m.is_empty() => {
                // The first key goes on the dash line, the rest line up under it.
                out.push(' ');
                let mut rest = String::new();
                emit_map(m, indent + 2, &mut rest);
                out.push_str(rest.trim_start_matches(' '));
            }
            Y::Seq(s) if !s.is_empty() => {
                out.push('\n');
                emit_seq(s, indent + 2, out);
            }
            Y::Map(_) => out.push_str(" {}\n"),
            Y::Seq(_) => out.push_str(" []\n"),
            scalar => {
                out.push(' ');
                emit_scalar(scalar, indent, out);
            }
        }
    }
}

fn emit_scalar(v: &Y, indent: usize, out: &mut String) {
    match v {
        Y::Null => out.push_str("null"),
        Y::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Y::Int(i) => out.push_str(&i.to_string()),
        Y::Float(f) => out.push_str(f),
        Y::Str(s) if s.contains('\n') && !s.contains(['\r', '\t']) && !s.starts_with(' ') => {
            out.push_str(if s.ends_with('\n') { "|" } else { "|-" });
            out.push('\n');
            let body = s.strip_suffix('\n').unwrap_or(s);
            for line in body.split('\n') {
                if !line.is_empty() {
                    out.push_str(&" ".repeat(indent + 2));
                    out.push_str(line);
                }
                out.push('\n');
            }
            return;
        }
        Y::Str(s) => out.push_str(&scalar_str(s)),
        Y::Map(_) | Y::Seq(_) => {}
    }
    out.push('\n');
}

/// Would a YAML 1.1/1.2 reader take this plain scalar for something other than a string?
fn resolves_to_non_string(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "" | "~"
            | "null"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | ".inf"
            | "-.inf"
            | "+.inf"
            | ".nan"
    ) {
        return true;
    }
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    if t.is_empty() {
        return false;
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return true;
    }
    if let Some(h) = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0o"))
        .or_else(|| t.strip_prefix("0b"))
    {
        return !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit());
    }
    if t.parse::<f64>().is_ok()
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
    {
        return true;
    }
    // yaml.v3's base-60 floats (`1:20`, `190:20:30.15`): each part after a colon has
    // at most two digits, the first below 6 when there are two.
    let (int_part, _) = t.split_once('.').unwrap_or((t, ""));
    let mut parts = int_part.split(':');
    let head_ok = parts
        .next()
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit() || b == b'_'));
    let rest: Vec<&str> = parts.collect();
    head_ok
        && !rest.is_empty()
        && rest.iter().all(|p| {
            let b = p.as_bytes();
            match b.len() {
                1 => b[0].is_ascii_digit(),
                2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
                _ => false,
            }
        })
}

fn plain_allowed(s: &str) -> bool {
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        let next = s.chars().nth(1);
        // `-x`, `:x` and `?x` are fine plain; only the indicator followed by a space is not.
        if !(matches!(first, '-' | '?' | ':') && next.is_some_and(|c| c != ' ')) {
            return false;
        }
    }
    if s.starts_with(' ') || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.chars().any(|c| c.is_control()) {
        return false;
    }
    true
}

fn scalar_str(s: &str) -> String {
    if s.chars().any(|c| c.is_control()) || resolves_to_non_string(s) {
        return double_quoted(s);
    }
    if plain_allowed(s) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
