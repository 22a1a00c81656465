//! `stack ls`, `stack services`, `stack ps` and `stack rm`: a stack's objects found by
//! their namespace label.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use shoal_proto::v1::{
    Config, ListNodesRequest, ListServiceStatusesRequest, ListTasksRequest, RemoveNetworkRequest,
    RemoveServiceRequest, Secret,
};

use super::super::secret::SwarmFile;
use super::super::service::render as service_render;
use super::super::{network, node, task};
use super::render;
use crate::config::CliConfig;
use crate::connect::Control;
use crate::output::natural_cmp;

/// How long `stack rm` retries a network that the stack's stopping tasks still use.
const NETWORK_RM_DEADLINE: Duration = Duration::from_secs(30);
const NETWORK_RM_RETRY: Duration = Duration::from_millis(250);

pub async fn ls(cfg: &CliConfig, format: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut control = crate::connect::control(cfg).await?;
    let mut filters = shoal_proto::v1::ListFilters::default();
    // An empty value matches any value of the key.
    filters.labels.insert(
        shoal_compose::convert::NAMESPACE_LABEL.into(),
        String::new(),
    );
    let services = super::stack_services(&mut control, filters).await?;
    print!("{}", render::render_ls(&render::stacks(&services), format)?);
    Ok(ExitCode::SUCCESS)
}

/// `stack services` filters: docker's service filters, within the stack.
fn services_filters(
    namespace: &str,
    flags: &[String],
) -> anyhow::Result<(shoal_proto::v1::ListFilters, Vec<String>)> {
    let (mut filters, modes) = super::super::service::ls_filters(flags)?;
    filters.labels.insert(
        shoal_compose::convert::NAMESPACE_LABEL.into(),
        namespace.to_string(),
    );
    Ok((filters, modes))
}

pub async fn services(
    cfg: &CliConfig,
    namespace: &str,
    filter: &[String],
    format: Option<&str>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    super::check_stack_name(namespace)?;
    let (filters, modes) = services_filters(namespace, filter)?;
    let mut control = crate::connect::control(cfg).await?;
    let services: Vec<_> = super::stack_services(&mut control, filters)
        .await?
        .into_iter()
        .filter(|s| modes.is_empty() || modes.iter().any(|m| m == service_render::mode_word(s)))
        .collect();
    if services.is_empty() {
        eprintln!("Nothing found in stack: {namespace}");
        return Ok(ExitCode::SUCCESS);
    }
    let statuses = if quiet {
        HashMap::new()
    } else {
        control
            .list_service_statuses(ListServiceStatusesRequest {
                service_ids: services
                    .iter()
                    .map(|s| service_render::id(s).to_string())
                    .collect(),
            })
            .await
            .map_err(super::super::rpc_error)?
            .into_inner()
            .statuses
            .into_iter()
            .map(|s| (s.service_id.clone(), s))
            .collect()
    };
    print!(
        "{}",
        render::render_services(&services, &statuses, format, quiet)?
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Default)]
pub struct PsOptions {
    pub filter: Vec<String>,
    pub format: Option<String>,
    pub no_resolve: bool,
    pub no_trunc: bool,
    pub quiet: bool,
}

/// `stack ps` filters: `node=` (id or name) is resolved here, the rest as `service
/// ps` takes them.
fn ps_filters(flags: &[String]) -> anyhow::Result<(shoal_proto::v1::ListFilters, Vec<String>)> {
    let mut plain = Vec::new();
    let mut nodes = Vec::new();
    for f in flags {
        match f.split_once('=') {
            Some(("node", n)) => nodes.push(n.to_string()),
            _ => plain.push(f.clone()),
        }
    }
    Ok((node::parse_ps_filters(&plain)?, nodes))
}

pub async fn ps(cfg: &CliConfig, namespace: &str, opts: &PsOptions) -> anyhow::Result<ExitCode> {
    super::check_stack_name(namespace)?;
    let (mut filters, node_refs) = ps_filters(&opts.filter)?;
    let mut control = crate::connect::control(cfg).await?;
    let services = super::stack_services(&mut control, super::stack_filter(namespace)).await?;
    if services.is_empty() {
        anyhow::bail!("nothing found in stack: {namespace}");
    }
    let mut names = task::Names::default();
    for s in &services {
        let id = service_render::id(s).to_string();
        let name = if opts.no_resolve {
            id.clone()
        } else {
            service_render::name(s).to_string()
        };
        names.services.insert(id.clone(), name);
        filters.service_ids.push(id);
    }
    let nodes = control
        .list_nodes(ListNodesRequest { filters: None })
        .await
        .map(|r| r.into_inner().nodes)
        .unwrap_or_default();
    for reference in &node_refs {
        let matched: Vec<String> = nodes
            .iter()
            .filter(|n| node::node_id(n) == reference || node::node_name(n) == reference)
            .map(|n| node::node_id(n).to_string())
            .collect();
        if matched.is_empty() {
            // No node by that name: nothing can match, as in docker's daemon.
            filters.node_ids.push(reference.clone());
        }
        filters.node_ids.extend(matched);
    }
    let tasks = control
        .list_tasks(ListTasksRequest {
            filters: Some(filters),
        })
        .await
        .map_err(super::super::rpc_error)?
        .into_inner()
        .tasks;
    if tasks.is_empty() {
        anyhow::bail!("nothing found in stack: {namespace}");
    }
    if !opts.no_resolve {
        names.nodes = nodes
            .iter()
            .map(|n| (node::node_id(n).to_string(), node::node_name(n).to_string()))
            .collect();
    }
    print!(
        "{}",
        render::render_ps(
            &tasks,
            &names,
            SystemTime::now(),
            !opts.no_trunc,
            opts.format.as_deref(),
            opts.quiet,
        )?
    );
    Ok(ExitCode::SUCCESS)
}

/// `stack rm`: services (by name) → secrets → configs → networks, docker's lines; a
/// failure is reported and the rest removed anyway.
pub async fn rm(cfg: &CliConfig, stacks: &[String], detach: bool) -> anyhow::Result<ExitCode> {
    for namespace in stacks {
        super::check_stack_name(namespace)?;
    }
    let mut control = crate::connect::control(cfg).await?;
    let mut failed = Vec::new();
    for namespace in stacks {
        if !remove_stack(&mut control, namespace, detach).await? {
            failed.push(namespace.clone());
        }
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for namespace in failed {
        eprintln!("failed to remove some resources from stack: {namespace}");
    }
    Ok(ExitCode::FAILURE)
}

/// Removes the stack's secrets or configs, in name order; `fail` reports each refusal.
async fn remove_files<T: SwarmFile>(
    control: &mut Control,
    mut files: Vec<T>,
    fail: &mut impl FnMut(&str, &str, &tonic::Status),
) {
    files.sort_by(|a, b| a.name().cmp(b.name()));
    let kind = T::KIND.noun();
    for f in &files {
        println!("Removing {kind} {}", f.name());
        if let Err(status) = T::remove(control, f.id().to_string()).await {
            fail(kind, f.id(), &status);
        }
    }
}

/// Removes one stack; false when something could not be removed.
async fn remove_stack(
    control: &mut Control,
    namespace: &str,
    detach: bool,
) -> anyhow::Result<bool> {
    let mut services = super::stack_services(control, super::stack_filter(namespace)).await?;
    let mut networks = super::stack_networks(control, namespace).await?;
    let secrets: Vec<Secret> = super::stack_files(control, namespace).await?;
    let configs: Vec<Config> = super::stack_files(control, namespace).await?;
    if services.is_empty() && networks.is_empty() && secrets.is_empty() && configs.is_empty() {
        eprintln!("Nothing found in stack: {namespace}");
        return Ok(true);
    }
    services.sort_by(|a, b| natural_cmp(service_render::name(a), service_render::name(b)));
    networks.sort_by(|a, b| network::render::name(a).cmp(network::render::name(b)));
    let mut ok = true;
    let mut fail = |kind: &str, id: &str, status: &tonic::Status| {
        eprintln!(
            "Failed to remove {kind} {id}: {}",
            super::super::status_message(status)
        );
        ok = false;
    };
    for s in &services {
        println!("Removing service {}", service_render::name(s));
        let id = service_render::id(s).to_string();
        if let Err(status) = control
            .remove_service(RemoveServiceRequest {
                service_id: id.clone(),
            })
            .await
        {
            fail("service", &id, &status);
        }
    }
    if !detach {
        let ids: Vec<String> = services
            .iter()
            .map(|s| service_render::id(s).to_string())
            .collect();
        wait_tasks_stopped(control, namespace, ids).await;
    }
    remove_files(control, secrets, &mut fail).await;
    remove_files(control, configs, &mut fail).await;
    for n in &networks {
        println!("Removing network {}", network::render::name(n));
        let id = network::render::id(n).to_string();
        if let Err(status) = remove_network(control, &id).await {
            fail("network", &id, &status);
        }
    }
    Ok(ok)
}

/// Removes a network, retrying while the stack's tasks, just told to stop, still use
/// it (swarmkit refuses with `network … is in use by task …` until they are gone).
async fn remove_network(control: &mut Control, id: &str) -> Result<(), tonic::Status> {
    let deadline = tokio::time::Instant::now() + NETWORK_RM_DEADLINE;
    loop {
        match control
            .remove_network(RemoveNetworkRequest {
                network_id: id.to_string(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(s)
                if s.message().contains("is in use by")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(NETWORK_RM_RETRY).await;
            }
            Err(s) => return Err(s),
        }
    }
}

/// How long `stack rm --detach=false` waits for the removed services' tasks.
const TASKS_STOP_DEADLINE: Duration = Duration::from_secs(120);

/// `--detach=false`: waits (bounded) until no task of the removed services still runs
/// or is about to, as docker waits on the stack's tasks.
async fn wait_tasks_stopped(control: &mut Control, namespace: &str, service_ids: Vec<String>) {
    if service_ids.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + TASKS_STOP_DEADLINE;
    loop {
        let live = control
            .list_tasks(ListTasksRequest {
                filters: Some(shoal_proto::v1::ListFilters {
                    service_ids: service_ids.clone(),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| {
                r.into_inner()
                    .tasks
                    .iter()
                    .filter(|t| {
                        t.status
                            .as_ref()
                            .is_some_and(|s| s.state <= shoal_proto::v1::TaskState::Running as i32)
                    })
                    .count()
            })
            .unwrap_or(0);
        if live == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("Error: timed out waiting for the tasks of stack {namespace} to stop");
            return;
        }
        tokio::time::sleep(NETWORK_RM_RETRY).await;
    }
}
