//! What the stack scenarios read back from the manager: a stack's services, networks
//! and their specs, and the fixture files (`../shared/fixtures/stacks`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{
    ListFilters, ListNetworksRequest, ListServicesRequest, Network, Service, service_spec,
    task_spec,
};
use tonic::transport::Channel;

/// The label docker puts on every object of a stack.
pub const NAMESPACE: &str = "com.docker.stack.namespace";

/// The shared compose fixtures (`../shared/fixtures/stacks`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/stacks")
}

/// The path of one fixture file.
pub fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// A service's name.
pub fn name_of(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// A network's name.
pub fn net_name(n: &Network) -> &str {
    n.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// An object's id.
pub fn id_of(meta: Option<&shoal_proto::v1::Meta>) -> String {
    meta.map(|m| m.id.clone()).unwrap_or_default()
}

/// The list filter of a stack's objects (its namespace label).
pub fn by_label(ns: &str) -> ListFilters {
    ListFilters {
        labels: [(NAMESPACE.to_string(), ns.to_string())].into(),
        ..Default::default()
    }
}

/// The services of stack `ns`.
pub async fn services(c: &mut ControlClient<Channel>, ns: &str) -> anyhow::Result<Vec<Service>> {
    Ok(c.list_services(ListServicesRequest {
        filters: Some(by_label(ns)),
    })
    .await?
    .into_inner()
    .services)
}

/// The service called `name` among `all` (panics when there is none).
pub fn service<'a>(all: &'a [Service], name: &str) -> &'a Service {
    all.iter()
        .find(|s| name_of(s) == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// A replicated service's replica count.
pub fn replicas(s: &Service) -> Option<u64> {
    match s.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(service_spec::Mode::Replicated(r)) => Some(r.replicas),
        _ => None,
    }
}

/// A service's task spec.
pub fn task_spec_of(s: &Service) -> shoal_proto::v1::TaskSpec {
    s.spec
        .as_ref()
        .and_then(|s| s.task.clone())
        .expect("a service with a task spec")
}

/// A service's container spec (panics for other runtimes).
pub fn container(s: &Service) -> shoal_proto::v1::ContainerSpec {
    match task_spec_of(s).runtime {
        Some(task_spec::Runtime::Container(c)) => c,
        other => panic!("not a container service: {other:?}"),
    }
}

/// A service's network attachments as (network name, aliases), sorted.
pub fn attachments(s: &Service, nets: &HashMap<String, String>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = task_spec_of(s)
        .networks
        .into_iter()
        .map(|a| (nets.get(&a.target).cloned().unwrap_or(a.target), a.aliases))
        .collect();
    out.sort();
    out
}

/// Every network's id → name.
pub async fn network_names(
    c: &mut ControlClient<Channel>,
) -> anyhow::Result<HashMap<String, String>> {
    Ok(c.list_networks(ListNetworksRequest { filters: None })
        .await?
        .into_inner()
        .networks
        .iter()
        .map(|n| {
            (
                id_of(n.meta.as_ref()),
                n.spec
                    .as_ref()
                    .and_then(|s| s.annotations.as_ref())
                    .map(|a| a.name.clone())
                    .unwrap_or_default(),
            )
        })
        .collect())
}

/// The lines of a command's output, as a set (docker prints each group in map order).
pub fn lines(out: &str) -> BTreeSet<String> {
    out.lines().map(str::to_string).collect()
}

/// The expected lines, as a set.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}
