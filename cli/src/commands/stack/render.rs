//! What `stack ls`, `stack services` and `stack ps` print: docker's tables, or the
//! rows through a `--format` (`table`, `table TEMPLATE`, `json`, a Go template).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde_json::{Value, json};
use shoal_proto::v1::{Service, ServiceStatus, Task};

use super::super::service::render as service_render;
use super::super::task;
use crate::output::{formatted, natural_cmp, truncate_id};

/// One `stack ls` row: a stack and how many services carry its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRow {
    pub name: String,
    pub services: usize,
}

/// Stacks from their services' labels, in natural order; services without the label
/// belong to no stack.
pub fn stacks(services: &[Service]) -> Vec<StackRow> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in services {
        let ns = s
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| super::namespace_of(&a.labels))
            .unwrap_or("");
        if !ns.is_empty() {
            *counts.entry(ns.to_string()).or_default() += 1;
        }
    }
    let mut rows: Vec<StackRow> = counts
        .into_iter()
        .map(|(name, services)| StackRow { name, services })
        .collect();
    rows.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    rows
}

const LS_TABLE: &str = "table {{.Name}}\t{{.Services}}";

pub fn render_ls(rows: &[StackRow], format: Option<&str>) -> anyhow::Result<String> {
    let contexts: Vec<Value> = rows
        .iter()
        .map(|r| json!({"Name": r.name, "Services": r.services.to_string()}))
        .collect();
    formatted(
        &contexts,
        &json!({"Name": "NAME", "Services": "SERVICES"}),
        format,
        LS_TABLE,
    )
}

const SERVICES_TABLE: &str =
    "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}";

/// `stack services`: the `service ls` table (natural name order), or its `--format`.
pub fn render_services(
    services: &[Service],
    statuses: &HashMap<String, ServiceStatus>,
    format: Option<&str>,
    quiet: bool,
) -> anyhow::Result<String> {
    if quiet {
        return Ok(service_render::render_ls_quiet(services));
    }
    let Some(format) = format
        .map(str::trim)
        .filter(|f| !f.is_empty() && *f != "table")
    else {
        return Ok(service_render::render_ls(services, statuses));
    };
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| natural_cmp(service_render::name(a), service_render::name(b)));
    let contexts: Vec<Value> = sorted
        .iter()
        .map(|s| {
            json!({
                "ID": truncate_id(service_render::id(s)),
                "Name": service_render::name(s),
                "Mode": service_render::mode_word(s),
                "Replicas": service_render::replicas(s, statuses.get(service_render::id(s))),
                "Image": service_render::image(s),
                "Ports": service_render::ports(s),
            })
        })
        .collect();
    formatted(
        &contexts,
        &json!({"ID": "ID", "Name": "NAME", "Mode": "MODE", "Replicas": "REPLICAS",
                "Image": "IMAGE", "Ports": "PORTS"}),
        Some(format),
        SERVICES_TABLE,
    )
}

/// `stack ps`: the task table, or its `--format` over docker's task fields.
pub fn render_ps(
    tasks: &[Task],
    names: &task::Names,
    now: SystemTime,
    trunc: bool,
    format: Option<&str>,
    quiet: bool,
) -> anyhow::Result<String> {
    if quiet {
        return Ok(task::render_quiet(tasks, names, trunc));
    }
    let Some(format) = format
        .map(str::trim)
        .filter(|f| !f.is_empty() && *f != "table")
    else {
        return Ok(task::render(tasks, names, now, trunc));
    };
    let contexts: Vec<Value> = task::sorted(tasks, names)
        .into_iter()
        .map(|(name, t)| {
            let id = t.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
            let node = names
                .nodes
                .get(&t.node_id)
                .cloned()
                .unwrap_or_else(|| t.node_id.clone());
            json!({
                "ID": if trunc { truncate_id(id) } else { id.to_string() },
                "Name": name,
                "Image": task::image(t, trunc),
                "Node": node,
                "DesiredState": crate::output::pretty(&task::state_word(t.desired_state)),
                "CurrentState": task::current_state(t, now),
                "Error": t.status.as_ref().map(|s| s.err.clone()).unwrap_or_default(),
                "Ports": task::ports(t),
            })
        })
        .collect();
    formatted(
        &contexts,
        &json!({"ID": "ID", "Name": "NAME", "Image": "IMAGE", "Node": "NODE",
                "DesiredState": "DESIRED STATE", "CurrentState": "CURRENT STATE",
                "Error": "ERROR", "Ports": "PORTS"}),
        Some(format),
        "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}",
    )
}
