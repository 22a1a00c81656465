//! How networks read: `network ls` (table, `--format`, docker's filters) and `network
//! inspect` (docker's JSON shape for a swarm-scoped network).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use shoal_proto::v1::{IpamOptions, Network};

use crate::output::{
    annotations_name, formatted, go_time, meta_id, natural_cmp, rfc3339, truncate_id,
};

/// Every shoal network is swarm-scoped.
pub const SCOPE: &str = "swarm";

pub fn id(n: &Network) -> &str {
    meta_id(n.meta.as_ref())
}

pub fn name(n: &Network) -> &str {
    annotations_name(n.spec.as_ref().and_then(|s| s.annotations.as_ref()))
}

fn labels(n: &Network) -> HashMap<String, String> {
    n.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.labels.clone())
        .unwrap_or_default()
}

/// The driver after allocation, else the one asked for; overlay when none was.
pub fn driver(n: &Network) -> &str {
    n.driver_state
        .as_ref()
        .map(|d| d.name.as_str())
        .filter(|d| !d.is_empty())
        .or_else(|| {
            n.spec
                .as_ref()
                .and_then(|s| s.driver_config.as_ref())
                .map(|d| d.name.as_str())
                .filter(|d| !d.is_empty())
        })
        .unwrap_or("overlay")
}

fn driver_options(n: &Network) -> HashMap<String, String> {
    match &n.driver_state {
        Some(state) if !state.name.is_empty() || !state.options.is_empty() => state.options.clone(),
        _ => n
            .spec
            .as_ref()
            .and_then(|s| s.driver_config.as_ref())
            .map(|d| d.options.clone())
            .unwrap_or_default(),
    }
}

/// The allocated IPAM, else what the spec asked for.
fn ipam(n: &Network) -> IpamOptions {
    n.ipam
        .clone()
        .filter(|i| !i.configs.is_empty() || i.driver.is_some())
        .or_else(|| n.spec.as_ref().and_then(|s| s.ipam.clone()))
        .unwrap_or_default()
}

fn sorted_map(map: &HashMap<String, String>) -> Value {
    let mut entries: Vec<(&String, &String)> = map.iter().collect();
    entries.sort();
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn ipam_json(ipam: &IpamOptions) -> Value {
    let driver = ipam.driver.clone().unwrap_or_default();
    let configs: Vec<Value> = ipam
        .configs
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("Subnet".into(), json!(c.subnet));
            if !c.range.is_empty() {
                m.insert("IPRange".into(), json!(c.range));
            }
            if !c.gateway.is_empty() {
                m.insert("Gateway".into(), json!(c.gateway));
            }
            if !c.reserved.is_empty() {
                m.insert("AuxiliaryAddresses".into(), sorted_map(&c.reserved));
            }
            Value::Object(m)
        })
        .collect();
    json!({
        "Driver": if driver.name.is_empty() { "default".to_string() } else { driver.name },
        "Options": if driver.options.is_empty() { Value::Null } else { sorted_map(&driver.options) },
        "Config": configs,
    })
}

/// `network inspect`: docker's `network.Inspect` as the daemon returns it for a
/// swarm network (no local containers or peers: the manager has none to show).
pub fn inspect_json(n: &Network) -> Value {
    let spec = n.spec.clone().unwrap_or_default();
    json!({
        "Name": name(n),
        "Id": id(n),
        "Created": rfc3339(n.meta.as_ref().and_then(|m| m.created_at.as_ref())),
        "Scope": SCOPE,
        "Driver": driver(n),
        "EnableIPv4": true,
        "EnableIPv6": spec.ipv6_enabled,
        "IPAM": ipam_json(&ipam(n)),
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Options": sorted_map(&driver_options(n)),
        "Labels": sorted_map(&labels(n)),
        "Containers": Value::Null,
    })
}

/// `network ls --filter`s, docker's: `name` and `id` match a part, `driver` and
/// `scope` the whole, `label` a key (and value), `type` custom/builtin; values of one
/// key are alternatives, keys must all match.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetworkFilters {
    names: Vec<String>,
    ids: Vec<String>,
    drivers: Vec<String>,
    scopes: Vec<String>,
    labels: Vec<(String, Option<String>)>,
    types: Vec<String>,
}

impl NetworkFilters {
    pub fn parse(flags: &[String]) -> anyhow::Result<Self> {
        let mut f = Self::default();
        for flag in flags {
            let Some((key, value)) = flag.split_once('=') else {
                anyhow::bail!("bad format of filter (expected name=value)");
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            match key.as_str() {
                "name" => f.names.push(value),
                "id" => f.ids.push(value),
                "driver" => f.drivers.push(value),
                "scope" => f.scopes.push(value),
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value, None),
                }),
                "type" => match value.as_str() {
                    "custom" | "builtin" => f.types.push(value),
                    _ => anyhow::bail!("invalid filter: 'type'='{value}'"),
                },
                other => anyhow::bail!("invalid filter '{other}'"),
            }
        }
        Ok(f)
    }

    pub fn matches(&self, n: &Network) -> bool {
        let any = |values: &[String], f: &dyn Fn(&str) -> bool| {
            values.is_empty() || values.iter().any(|v| f(v))
        };
        let labels = labels(n);
        any(&self.names, &|v| name(n).contains(v))
            && any(&self.ids, &|v| id(n).contains(v))
            && any(&self.drivers, &|v| driver(n) == v)
            && any(&self.scopes, &|v| v == SCOPE)
            // Swarm's predefined network is the ingress; every other is custom.
            && any(&self.types, &|v| {
                let ingress = n.spec.as_ref().is_some_and(|s| s.ingress);
                (v == "builtin") == ingress
            })
            && self.labels.iter().all(|(k, v)| match (labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
    }
}

/// Networks in the order `network ls` prints them: by name, naturally.
pub fn sort(networks: &mut [Network]) {
    networks.sort_by(|a, b| natural_cmp(name(a), name(b)));
}

/// One `network ls` row as its `--format` templates see it (docker's
/// `networkContext`).
pub fn ls_context(n: &Network, trunc: bool) -> Value {
    let full = id(n);
    let mut labels: Vec<String> = labels(n)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    let ipv6 = n.spec.as_ref().is_some_and(|s| s.ipv6_enabled);
    let internal = n.spec.as_ref().is_some_and(|s| s.internal);
    json!({
        "ID": if trunc { truncate_id(full) } else { full.to_string() },
        "Name": name(n),
        "Driver": driver(n),
        "Scope": SCOPE,
        "IPv4": "true",
        "IPv6": ipv6.to_string(),
        "Internal": internal.to_string(),
        "Labels": labels.join(","),
        "CreatedAt": go_time(n.meta.as_ref().and_then(|m| m.created_at.as_ref()))
            .replace(" +0000 utc", " +0000 UTC"),
    })
}

/// The column headers docker gives each `network ls` field.
fn headers() -> Value {
    json!({
        "ID": "NETWORK ID",
        "Name": "NAME",
        "Driver": "DRIVER",
        "Scope": "SCOPE",
        "IPv4": "IPV4",
        "IPv6": "IPV6",
        "Internal": "INTERNAL",
        "Labels": "LABELS",
        "CreatedAt": "CREATED AT",
    })
}

const DEFAULT_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";

/// `network ls` output for `--format` (docker's: `table` by default, `table TEMPLATE`,
/// `json`, or a bare template per row), `-q` and `--no-trunc`.
pub fn render_ls(
    networks: &[Network],
    format: Option<&str>,
    quiet: bool,
    trunc: bool,
) -> anyhow::Result<String> {
    // `-q` replaces only the default table; a template of one's own still applies.
    let format = match format.map(str::trim) {
        None | Some("") | Some("table") if quiet => Some("{{.ID}}"),
        other => other,
    };
    let contexts: Vec<Value> = networks.iter().map(|n| ls_context(n, trunc)).collect();
    formatted(&contexts, &headers(), format, DEFAULT_TABLE)
}
