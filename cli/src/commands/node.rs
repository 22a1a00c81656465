//! `shoal node ls|inspect|ps|update|promote|demote|rm`, as `docker node`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::SystemTime;

use shoal_proto::v1::{
    GetNodeRequest, ListFilters, ListNodesRequest, ListServicesRequest, ListTasksRequest, Node,
    NodeRole, NodeSpec, RemoveNodeRequest, TaskState, UpdateNodeRequest, manager_status, node_spec,
    node_status,
};

use super::task;
use crate::config::CliConfig;
use crate::connect::Control;
use crate::output::{
    Table, base64, bytes_size, enum_word, go_time, json_indented, natural_cmp, pretty, rfc3339,
};

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Demote one or more nodes from manager in the swarm.
    Demote {
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Display detailed information on one or more nodes.
    Inspect {
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
        /// self|NODE ...
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// List nodes in the swarm.
    #[command(alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(long, short)]
        quiet: bool,
        /// Filter output based on conditions provided: id=, name=, label=, node.label=,
        /// role=manager|worker, membership=accepted|pending
        #[arg(long, short, value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// Promote one or more nodes to manager in the swarm.
    Promote {
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// List tasks running on one or more nodes, defaults to current node.
    Ps {
        /// Only display task IDs.
        #[arg(long, short)]
        quiet: bool,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// Do not map IDs to Names.
        #[arg(long)]
        no_resolve: bool,
        /// Filter output based on conditions provided: id=, name=, desired-state=
        #[arg(long, short, value_name = "FILTER")]
        filter: Vec<String>,
        #[arg(value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Remove one or more nodes from the swarm.
    #[command(alias = "remove")]
    Rm {
        /// Force remove a node from the swarm.
        #[arg(long, short)]
        force: bool,
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Update a node.
    Update(UpdateArgs),
}

#[derive(Debug, Default, Clone, clap::Args)]
pub struct UpdateArgs {
    /// Availability of the node ("active", "pause", "drain").
    #[arg(long, value_name = "AVAILABILITY")]
    pub availability: Option<String>,
    /// Add or update a node label ("key=value").
    #[arg(long = "label-add", value_name = "LABEL")]
    pub label_add: Vec<String>,
    /// Remove a node label if exists.
    #[arg(long = "label-rm", value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Role of the node ("worker", "manager").
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    #[arg(value_name = "NODE")]
    pub node: String,
}

pub async fn run(cfg: &CliConfig, cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    let self_id = crate::local::this_node(cfg).map(|n| n.node_id);
    match cmd {
        NodeCommand::Ls { quiet, filter } => {
            let (filters, membership) = parse_ls_filters(&filter)?;
            let mut control = crate::connect::control(cfg).await?;
            let nodes = control
                .list_nodes(ListNodesRequest {
                    filters: Some(filters),
                })
                .await
                .map_err(super::rpc_error)?
                .into_inner()
                .nodes;
            let nodes: Vec<Node> = nodes
                .into_iter()
                .filter(|n| membership.is_empty() || membership.contains(&membership_of(n)))
                .collect();
            if quiet {
                print!("{}", render_ls_quiet(&nodes));
            } else {
                print!("{}", render_ls(&nodes, self_id.as_deref()));
            }
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Inspect { pretty, nodes } => {
            let mut control = crate::connect::control(cfg).await?;
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for reference in &nodes {
                match get_node(&mut control, reference, self_id.as_deref()).await {
                    Ok(node) => found.push(node),
                    Err(e) => errors.push(e),
                }
            }
            if pretty {
                for node in &found {
                    print!("{}", render_pretty(node));
                }
            } else {
                print!("{}", render_inspect(&found));
            }
            Ok(report(errors))
        }
        NodeCommand::Ps {
            quiet,
            no_trunc,
            no_resolve,
            filter,
            nodes,
        } => {
            let nodes = if nodes.is_empty() {
                vec!["self".to_string()]
            } else {
                nodes
            };
            let base = parse_ps_filters(&filter)?;
            let mut control = crate::connect::control(cfg).await?;
            let mut errors = Vec::new();
            let mut tasks = Vec::new();
            let mut names = task::Names::default();
            for reference in &nodes {
                let node = match get_node(&mut control, reference, self_id.as_deref()).await {
                    Ok(node) => node,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                if !no_resolve {
                    names
                        .nodes
                        .insert(node_id(&node).to_string(), node_name(&node).to_string());
                }
                let mut filters = base.clone();
                filters.node_ids = vec![node_id(&node).to_string()];
                match control
                    .list_tasks(ListTasksRequest {
                        filters: Some(filters),
                    })
                    .await
                {
                    Ok(resp) => tasks.extend(resp.into_inner().tasks),
                    Err(status) => errors.push(super::status_message(&status)),
                }
            }
            if !no_resolve && !tasks.is_empty() {
                names.services = service_names(&mut control).await.unwrap_or_default();
            } else if no_resolve {
                for t in &tasks {
                    names
                        .services
                        .insert(t.service_id.clone(), t.service_id.clone());
                }
            }
            if errors.is_empty() || !tasks.is_empty() {
                if quiet {
                    print!("{}", task::render_quiet(&tasks, &names, !no_trunc));
                } else {
                    print!(
                        "{}",
                        task::render(&tasks, &names, SystemTime::now(), !no_trunc)
                    );
                }
            }
            Ok(report(errors))
        }
        NodeCommand::Update(args) => {
            let change = NodeChange::from_args(&args)?;
            let mut control = crate::connect::control(cfg).await?;
            let reference = args.node.clone();
            update_node(&mut control, &reference, self_id.as_deref(), |spec| {
                change.apply(spec)?;
                Ok(true)
            })
            .await?;
            println!("{reference}");
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Promote { nodes } => {
            change_role(cfg, &nodes, self_id.as_deref(), NodeRole::Manager).await
        }
        NodeCommand::Demote { nodes } => {
            change_role(cfg, &nodes, self_id.as_deref(), NodeRole::Worker).await
        }
        NodeCommand::Rm { force, nodes } => {
            let mut control = crate::connect::control(cfg).await?;
            let mut errors = Vec::new();
            for reference in &nodes {
                let node_id = resolve_self(reference, self_id.as_deref())?;
                match control
                    .remove_node(RemoveNodeRequest { node_id, force })
                    .await
                {
                    Ok(_) => println!("{reference}"),
                    Err(status) => errors.push(super::status_message(&status)),
                }
            }
            Ok(report(errors))
        }
    }
}

/// Prints collected errors the way the CLI prints one; exit 1 if there were any.
fn report(errors: Vec<String>) -> ExitCode {
    if errors.is_empty() {
        return ExitCode::SUCCESS;
    }
    for e in errors {
        eprintln!("Error: {e}");
    }
    ExitCode::FAILURE
}

/// `self` as docker means it: the node this CLI runs on.
fn resolve_self(reference: &str, self_id: Option<&str>) -> anyhow::Result<String> {
    if reference != "self" {
        return Ok(reference.to_string());
    }
    self_id.map(str::to_string).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot tell which node this is: no node identity found (set --state-dir or \
             SHOAL_STATE_DIR to this node's state directory, or --socket to the local \
             manager's control socket)"
        )
    })
}

async fn get_node(
    control: &mut Control,
    reference: &str,
    self_id: Option<&str>,
) -> Result<Node, String> {
    let node_id = resolve_self(reference, self_id).map_err(|e| e.to_string())?;
    match control.get_node(GetNodeRequest { node_id }).await {
        Ok(resp) => resp
            .into_inner()
            .node
            .ok_or_else(|| format!("No such node: {reference}")),
        Err(status) if status.code() == tonic::Code::NotFound => {
            Err(format!("No such node: {reference}"))
        }
        Err(status) => Err(super::status_message(&status)),
    }
}

async fn service_names(control: &mut Control) -> anyhow::Result<HashMap<String, String>> {
    let services = control
        .list_services(ListServicesRequest { filters: None })
        .await
        .map_err(super::rpc_error)?
        .into_inner()
        .services;
    Ok(services
        .into_iter()
        .filter_map(|s| {
            let id = s.meta.as_ref()?.id.clone();
            let name = s.spec.as_ref()?.annotations.as_ref()?.name.clone();
            Some((id, name))
        })
        .collect())
}

enum Changed {
    Yes,
    /// Nothing to change: the node's id.
    No(String),
}

/// Reads the node, lets `merge` change its spec (false: nothing to do), and writes it
/// back against the version read.
async fn update_node(
    control: &mut Control,
    reference: &str,
    self_id: Option<&str>,
    merge: impl FnOnce(&mut NodeSpec) -> anyhow::Result<bool>,
) -> anyhow::Result<Changed> {
    let node = get_node(control, reference, self_id)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut spec = node.spec.clone().unwrap_or_default();
    if !merge(&mut spec)? {
        return Ok(Changed::No(node_id(&node).to_string()));
    }
    control
        .update_node(UpdateNodeRequest {
            node_id: node_id(&node).to_string(),
            node_version: node.meta.as_ref().and_then(|m| m.version),
            spec: Some(spec),
        })
        .await
        .map_err(super::rpc_error)?;
    Ok(Changed::Yes)
}

/// `node promote` / `node demote`: each node's desired role, with docker's messages.
async fn change_role(
    cfg: &CliConfig,
    nodes: &[String],
    self_id: Option<&str>,
    role: NodeRole,
) -> anyhow::Result<ExitCode> {
    let mut control = crate::connect::control(cfg).await?;
    for reference in nodes {
        let changed = update_node(&mut control, reference, self_id, |spec| {
            Ok(set_role(spec, role))
        })
        .await?;
        match (changed, role) {
            (Changed::Yes, NodeRole::Manager) => println!("{}", promoted_message(reference)),
            (Changed::Yes, _) => println!("{}", demoted_message(reference)),
            (Changed::No(id), NodeRole::Manager) => println!("Node {id} is already a manager."),
            (Changed::No(id), _) => println!("Node {id} is already a worker."),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets the desired role; false when it already is that role.
pub fn set_role(spec: &mut NodeSpec, role: NodeRole) -> bool {
    if spec.desired_role == role as i32 {
        return false;
    }
    spec.desired_role = role as i32;
    true
}

pub fn promoted_message(reference: &str) -> String {
    format!("Node {reference} promoted to a manager in the swarm.")
}

pub fn demoted_message(reference: &str) -> String {
    format!("Manager {reference} demoted in the swarm.")
}

/// What `node update` changes, parsed and checked before anything is read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeChange {
    pub availability: Option<node_spec::Availability>,
    pub role: Option<NodeRole>,
    pub label_add: Vec<(String, String)>,
    pub label_rm: Vec<String>,
}

impl NodeChange {
    pub fn from_args(args: &UpdateArgs) -> anyhow::Result<NodeChange> {
        let availability = args
            .availability
            .as_deref()
            .map(parse_availability)
            .transpose()?;
        let role = args.role.as_deref().map(parse_role).transpose()?;
        let label_add = args
            .label_add
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                None if !l.is_empty() => Ok((l.clone(), String::new())),
                _ => anyhow::bail!("invalid label '{l}': expected key=value"),
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(NodeChange {
            availability,
            role,
            label_add,
            label_rm: args.label_rm.clone(),
        })
    }

    /// docker's merge: role, availability, added labels, then removed ones (a key
    /// that is not there is an error).
    pub fn apply(&self, spec: &mut NodeSpec) -> anyhow::Result<()> {
        if let Some(role) = self.role {
            spec.desired_role = role as i32;
        }
        if let Some(a) = self.availability {
            spec.availability = a as i32;
        }
        let annotations = spec.annotations.get_or_insert_with(Default::default);
        for (k, v) in &self.label_add {
            annotations.labels.insert(k.clone(), v.clone());
        }
        for k in &self.label_rm {
            if annotations.labels.remove(k).is_none() {
                anyhow::bail!("key {k} doesn't exist in node's labels");
            }
        }
        Ok(())
    }
}

pub fn parse_availability(s: &str) -> anyhow::Result<node_spec::Availability> {
    match s.to_ascii_lowercase().as_str() {
        "active" => Ok(node_spec::Availability::Active),
        "pause" => Ok(node_spec::Availability::Pause),
        "drain" => Ok(node_spec::Availability::Drain),
        _ => anyhow::bail!(
            "invalid availability \"{s}\", only active, pause and drain are supported"
        ),
    }
}

pub fn parse_role(s: &str) -> anyhow::Result<NodeRole> {
    match s.to_ascii_lowercase().as_str() {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        _ => anyhow::bail!("invalid role \"{s}\", only worker and manager are supported"),
    }
}

/// `node ls --filter`s: id, name, label / node.label, role; membership is returned
/// apart (it is filtered here).
pub fn parse_ls_filters(
    flags: &[String],
) -> anyhow::Result<(ListFilters, Vec<node_spec::Membership>)> {
    let mut f = ListFilters::default();
    let mut membership = Vec::new();
    for flag in flags {
        let Some((key, value)) = flag.split_once('=') else {
            anyhow::bail!("bad format of filter (expected name=value)");
        };
        match key {
            "id" => f.id_prefixes.push(value.to_string()),
            "name" => f.name_prefixes.push(value.to_string()),
            "label" | "node.label" => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                f.labels.insert(k.to_string(), v.to_string());
            }
            "role" => f.roles.push(match value.to_ascii_lowercase().as_str() {
                "manager" => NodeRole::Manager as i32,
                "worker" => NodeRole::Worker as i32,
                _ => anyhow::bail!("Invalid role filter value: '{value}'"),
            }),
            "membership" => membership.push(match value.to_ascii_lowercase().as_str() {
                "accepted" => node_spec::Membership::Accepted,
                "pending" => node_spec::Membership::Pending,
                _ => anyhow::bail!("Invalid membership filter value: '{value}'"),
            }),
            other => anyhow::bail!("invalid filter '{other}'"),
        }
    }
    Ok((f, membership))
}

/// `node ps --filter`s: id, name, desired-state.
pub fn parse_ps_filters(flags: &[String]) -> anyhow::Result<ListFilters> {
    let mut f = ListFilters::default();
    for flag in flags {
        let Some((key, value)) = flag.split_once('=') else {
            anyhow::bail!("bad format of filter (expected name=value)");
        };
        match key {
            "id" => f.id_prefixes.push(value.to_string()),
            "name" => f.name_prefixes.push(value.to_string()),
            "desired-state" => f.desired_states.push(match value {
                "running" => TaskState::Running as i32,
                "shutdown" => TaskState::Shutdown as i32,
                "accepted" => TaskState::Accepted as i32,
                _ => anyhow::bail!(
                    "Invalid desired-state filter value: '{value}' (running, shutdown or accepted)"
                ),
            }),
            other => anyhow::bail!("invalid filter '{other}'"),
        }
    }
    Ok(f)
}

fn membership_of(node: &Node) -> node_spec::Membership {
    node.spec
        .as_ref()
        .and_then(|s| node_spec::Membership::try_from(s.membership).ok())
        .unwrap_or(node_spec::Membership::Pending)
}

pub fn node_id(node: &Node) -> &str {
    node.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn hostname(node: &Node) -> &str {
    node.description
        .as_ref()
        .map(|d| d.hostname.as_str())
        .unwrap_or("")
}

/// The name docker's resolver shows for a node: its spec name, else its hostname,
/// else its id.
pub fn node_name(node: &Node) -> &str {
    let name = node
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("");
    if !name.is_empty() {
        name
    } else if !hostname(node).is_empty() {
        hostname(node)
    } else {
        node_id(node)
    }
}

/// `ready`, `down`, `unknown`, `disconnected`.
pub fn state_word(node: &Node) -> String {
    let state = node.status.as_ref().map(|s| s.state).unwrap_or_default();
    node_status::State::try_from(state)
        .map(|s| enum_word(s.as_str_name(), "STATE_"))
        .unwrap_or_else(|_| "unknown".into())
}

/// `active`, `pause`, `drain`.
pub fn availability_word(node: &Node) -> String {
    let a = node
        .spec
        .as_ref()
        .map(|s| s.availability)
        .unwrap_or_default();
    node_spec::Availability::try_from(a)
        .map(|a| enum_word(a.as_str_name(), "AVAILABILITY_"))
        .unwrap_or_else(|_| "unknown".into())
}

/// `worker`, `manager`.
pub fn role_word(role: i32) -> String {
    NodeRole::try_from(role)
        .map(|r| enum_word(r.as_str_name(), "NODE_ROLE_"))
        .unwrap_or_else(|_| "unknown".into())
}

fn reachability_word(status: &shoal_proto::v1::ManagerStatus) -> String {
    manager_status::Reachability::try_from(status.reachability)
        .map(|r| enum_word(r.as_str_name(), "REACHABILITY_"))
        .unwrap_or_else(|_| "unknown".into())
}

/// MANAGER STATUS: `Leader`, `Reachable`, `Unreachable`, or empty for a worker.
pub fn manager_status_word(node: &Node) -> String {
    match node.manager_status.as_ref() {
        None => String::new(),
        Some(ms) if ms.leader => "Leader".into(),
        Some(ms) => pretty(&reachability_word(ms)),
    }
}

fn engine_version(node: &Node) -> &str {
    node.description
        .as_ref()
        .and_then(|d| d.engine.as_ref())
        .map(|e| e.engine_version.as_str())
        .unwrap_or("")
}

/// Nodes in docker's `node ls` order: hostname (natural order), then id.
pub fn sort_nodes(nodes: &[Node]) -> Vec<&Node> {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| {
        natural_cmp(hostname(a), hostname(b)).then_with(|| node_id(a).cmp(node_id(b)))
    });
    sorted
}

/// `node ls`: `ID HOSTNAME STATUS AVAILABILITY MANAGER STATUS ENGINE VERSION`, the node
/// this CLI runs on marked ` *`.
pub fn render_ls(nodes: &[Node], self_id: Option<&str>) -> String {
    let mut table = Table::new(&[
        "ID",
        "HOSTNAME",
        "STATUS",
        "AVAILABILITY",
        "MANAGER STATUS",
        "ENGINE VERSION",
    ]);
    for node in sort_nodes(nodes) {
        let id = node_id(node);
        let mark = if self_id == Some(id) { '*' } else { ' ' };
        table.row(vec![
            format!("{id} {mark}"),
            hostname(node).to_string(),
            pretty(&state_word(node)),
            pretty(&availability_word(node)),
            manager_status_word(node),
            engine_version(node).to_string(),
        ]);
    }
    table.render()
}

/// `node ls -q`: the ids, in `ls` order.
pub fn render_ls_quiet(nodes: &[Node]) -> String {
    sort_nodes(nodes)
        .into_iter()
        .map(|n| format!("{}\n", node_id(n)))
        .collect()
}

/// One node as docker's inspect JSON shows it (field names and omissions as the Engine
/// API's `swarm.Node`).
pub fn inspect_json(node: &Node) -> serde_json::Value {
    use serde_json::{Map, Value, json};

    let meta = node.meta.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let desc = node.description.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();

    let mut spec_json = Map::new();
    if !annotations.name.is_empty() {
        spec_json.insert("Name".into(), json!(annotations.name));
    }
    let labels: std::collections::BTreeMap<_, _> = annotations.labels.into_iter().collect();
    spec_json.insert("Labels".into(), json!(labels));
    spec_json.insert("Role".into(), json!(role_word(spec.desired_role)));
    spec_json.insert("Availability".into(), json!(availability_word(node)));

    let mut description = Map::new();
    if !desc.hostname.is_empty() {
        description.insert("Hostname".into(), json!(desc.hostname));
    }
    let platform = desc.platform.clone().unwrap_or_default();
    let mut platform_json = Map::new();
    if !platform.architecture.is_empty() {
        platform_json.insert("Architecture".into(), json!(platform.architecture));
    }
    if !platform.os.is_empty() {
        platform_json.insert("OS".into(), json!(platform.os));
    }
    description.insert("Platform".into(), Value::Object(platform_json));
    let resources = desc.resources.unwrap_or_default();
    let mut resources_json = Map::new();
    if resources.nano_cpus != 0 {
        resources_json.insert("NanoCPUs".into(), json!(resources.nano_cpus));
    }
    if resources.memory_bytes != 0 {
        resources_json.insert("MemoryBytes".into(), json!(resources.memory_bytes));
    }
    description.insert("Resources".into(), Value::Object(resources_json));
    let engine = desc.engine.clone().unwrap_or_default();
    let mut engine_json = Map::new();
    if !engine.engine_version.is_empty() {
        engine_json.insert("EngineVersion".into(), json!(engine.engine_version));
    }
    if !engine.labels.is_empty() {
        let labels: std::collections::BTreeMap<_, _> = engine.labels.into_iter().collect();
        engine_json.insert("Labels".into(), json!(labels));
    }
    if !engine.plugins.is_empty() {
        let plugins: Vec<Value> = engine
            .plugins
            .iter()
            .map(|p| json!({ "Type": p.r#type, "Name": p.name }))
            .collect();
        engine_json.insert("Plugins".into(), Value::Array(plugins));
    }
    description.insert("Engine".into(), Value::Object(engine_json));
    let tls = desc.tls_info.unwrap_or_default();
    let mut tls_json = Map::new();
    if !tls.trust_root.is_empty() {
        tls_json.insert(
            "TrustRoot".into(),
            json!(String::from_utf8_lossy(&tls.trust_root)),
        );
    }
    if !tls.cert_issuer_subject.is_empty() {
        tls_json.insert(
            "CertIssuerSubject".into(),
            json!(base64(&tls.cert_issuer_subject)),
        );
    }
    if !tls.cert_issuer_public_key.is_empty() {
        tls_json.insert(
            "CertIssuerPublicKey".into(),
            json!(base64(&tls.cert_issuer_public_key)),
        );
    }
    description.insert("TLSInfo".into(), Value::Object(tls_json));

    let mut status_json = Map::new();
    status_json.insert("State".into(), json!(state_word(node)));
    if !status.message.is_empty() {
        status_json.insert("Message".into(), json!(status.message));
    }
    if !status.addr.is_empty() {
        status_json.insert("Addr".into(), json!(status.addr));
    }

    let mut out = Map::new();
    out.insert("ID".into(), json!(meta.id));
    out.insert(
        "Version".into(),
        json!({ "Index": meta.version.map(|v| v.index).unwrap_or(0) }),
    );
    out.insert("CreatedAt".into(), json!(rfc3339(meta.created_at.as_ref())));
    out.insert("UpdatedAt".into(), json!(rfc3339(meta.updated_at.as_ref())));
    out.insert("Spec".into(), Value::Object(spec_json));
    out.insert("Description".into(), Value::Object(description));
    out.insert("Status".into(), Value::Object(status_json));
    if let Some(ms) = node.manager_status.as_ref() {
        let mut ms_json = Map::new();
        if ms.leader {
            ms_json.insert("Leader".into(), json!(true));
        }
        ms_json.insert("Reachability".into(), json!(reachability_word(ms)));
        if !ms.addr.is_empty() {
            ms_json.insert("Addr".into(), json!(ms.addr));
        }
        out.insert("ManagerStatus".into(), Value::Object(ms_json));
    }
    Value::Object(out)
}

/// `node inspect`: a JSON array indented like docker's, and a newline.
pub fn render_inspect(nodes: &[Node]) -> String {
    let array = serde_json::Value::Array(nodes.iter().map(inspect_json).collect());
    format!("{}\n", json_indented(&array))
}

/// `node inspect --pretty`, docker's template line for line (tabs included).
pub fn render_pretty(node: &Node) -> String {
    let spec = node.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let desc = node.description.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("ID:\t\t\t{}", node_id(node)));
    if !annotations.name.is_empty() {
        line(format!("Name:\t\t\t{}", annotations.name));
    }
    if !annotations.labels.is_empty() {
        line("Labels:".into());
        let mut labels: Vec<_> = annotations.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            line(label_line(k, v));
        }
    }
    line(format!("Hostname:              \t{}", desc.hostname));
    line(format!(
        "Joined at:             \t{}",
        go_time(node.meta.as_ref().and_then(|m| m.created_at.as_ref()))
    ));
    line("Status:".into());
    line(format!(" State:\t\t\t{}", pretty(&state_word(node))));
    if !status.message.is_empty() {
        line(format!(
            " Message:              \t{}",
            pretty(&status.message)
        ));
    }
    line(format!(
        " Availability:         \t{}",
        pretty(&availability_word(node))
    ));
    if !status.addr.is_empty() {
        line(format!(" Address:\t\t{}", status.addr));
    }
    if let Some(ms) = node.manager_status.as_ref() {
        line("Manager Status:".into());
        line(format!(" Address:\t\t{}", ms.addr));
        line(format!(
            " Raft Status:\t\t{}",
            pretty(&reachability_word(ms))
        ));
        line(format!(
            " Leader:\t\t{}",
            if ms.leader { "Yes" } else { "No" }
        ));
    }
    let platform = desc.platform.clone().unwrap_or_default();
    line("Platform:".into());
    line(format!(" Operating System:\t{}", platform.os));
    line(format!(" Architecture:\t\t{}", platform.architecture));
    let resources = desc.resources.unwrap_or_default();
    line("Resources:".into());
    line(format!(
        " CPUs:\t\t\t{}",
        resources.nano_cpus / 1_000_000_000
    ));
    line(format!(
        " Memory:\t\t{}",
        if resources.memory_bytes == 0 {
            String::new()
        } else {
            bytes_size(resources.memory_bytes)
        }
    ));
    let engine = desc.engine.clone().unwrap_or_default();
    if !engine.plugins.is_empty() {
        let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for p in &engine.plugins {
            by_type.entry(&p.r#type).or_default().push(&p.name);
        }
        line("Plugins:".into());
        for (kind, names) in by_type {
            line(format!(" {kind}:\t\t{}", names.join(", ")));
        }
    }
    line(format!("Engine Version:\t\t{}", engine.engine_version));
    if !engine.labels.is_empty() {
        line("Engine Labels:".into());
        let mut labels: Vec<_> = engine.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            line(label_line(k, v));
        }
    }
    let tls = desc.tls_info.unwrap_or_default();
    if !(tls.trust_root.is_empty()
        && tls.cert_issuer_subject.is_empty()
        && tls.cert_issuer_public_key.is_empty())
    {
        line("TLS Info:".into());
        line(" TrustRoot:".into());
        line(String::from_utf8_lossy(&tls.trust_root).into_owned());
        line(format!(
            " Issuer Subject:\t{}",
            base64(&tls.cert_issuer_subject)
        ));
        line(format!(
            " Issuer Public Key:\t{}",
            base64(&tls.cert_issuer_public_key)
        ));
    }
    out
}

fn label_line(k: &str, v: &str) -> String {
    if v.is_empty() {
        format!(" - {k}")
    } else {
        format!(" - {k}={v}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;
    use shoal_proto::v1::{
        Annotations, EngineDescription, ManagerStatus, Meta, NodeDescription, NodeStatus, Platform,
        PluginDescription, Resources, Version,
    };

    use super::*;

    fn node(
        id: &str,
        host: &str,
        state: node_status::State,
        manager: Option<(bool, bool)>,
    ) -> Node {
        Node {
            meta: Some(Meta {
                id: id.into(),
                version: Some(Version { index: 9 }),
                created_at: Some(prost_types::Timestamp {
                    seconds: 1592632637,
                    nanos: 576842930,
                }),
                updated_at: Some(prost_types::Timestamp {
                    seconds: 1592632638,
                    nanos: 185756480,
                }),
            }),
            spec: Some(NodeSpec {
                annotations: Some(Annotations::default()),
                desired_role: if manager.is_some() {
                    NodeRole::Manager as i32
                } else {
                    NodeRole::Worker as i32
                },
                membership: node_spec::Membership::Accepted as i32,
                availability: node_spec::Availability::Active as i32,
            }),
            description: Some(NodeDescription {
                hostname: host.into(),
                platform: Some(Platform {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                }),
                resources: Some(Resources {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 3958075392,
                    ..Default::default()
                }),
                engine: Some(EngineDescription {
                    engine_version: "19.03.11".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: state as i32,
                addr: "192.168.0.41".into(),
                ..Default::default()
            }),
            manager_status: manager.map(|(leader, reachable)| ManagerStatus {
                leader,
                reachability: if reachable {
                    manager_status::Reachability::Reachable as i32
                } else {
                    manager_status::Reachability::Unreachable as i32
                },
                addr: "192.168.0.41:2377".into(),
                ..Default::default()
            }),
            role: if manager.is_some() {
                NodeRole::Manager as i32
            } else {
                NodeRole::Worker as i32
            },
            ..Default::default()
        }
    }

    fn seed_nodes() -> Vec<Node> {
        vec![
            node(
                "aeo8j7zit9qkoeeft3j0q1h0z",
                "docker-node03",
                node_status::State::Ready,
                Some((false, true)),
            ),
            node(
                "tzkm0ymzjdmc1r8d54snievf1",
                "docker-node02",
                node_status::State::Ready,
                None,
            ),
            node(
                "ynz304mbltxx10v3i15ldkmj1",
                "docker-node01",
                node_status::State::Ready,
                Some((true, true)),
            ),
        ]
    }

    #[test]
    fn ls_matches_docker() {
        let out = render_ls(&seed_nodes(), Some("ynz304mbltxx10v3i15ldkmj1"));
        assert_eq!(
            out,
            "ID                            HOSTNAME        STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n\
             ynz304mbltxx10v3i15ldkmj1 *   docker-node01   Ready     Active         Leader           19.03.11\n\
             tzkm0ymzjdmc1r8d54snievf1     docker-node02   Ready     Active                          19.03.11\n\
             aeo8j7zit9qkoeeft3j0q1h0z     docker-node03   Ready     Active         Reachable        19.03.11\n"
        );
        assert_eq!(
            render_ls_quiet(&seed_nodes()),
            "ynz304mbltxx10v3i15ldkmj1\ntzkm0ymzjdmc1r8d54snievf1\naeo8j7zit9qkoeeft3j0q1h0z\n"
        );
    }

    #[test]
    fn ls_of_a_single_manager_like_seed_001() {
        let mut n = node(
            "vjtstrkxntsacyjtvl18hcbe4",
            "docker-desktop",
            node_status::State::Ready,
            Some((true, true)),
        );
        if let Some(e) = n.description.as_mut().and_then(|d| d.engine.as_mut()) {
            e.engine_version = "20.10.7".into();
        }
        assert_eq!(
            render_ls(&[n], Some("vjtstrkxntsacyjtvl18hcbe4")),
            "ID                            HOSTNAME         STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n\
             vjtstrkxntsacyjtvl18hcbe4 *   docker-desktop   Ready     Active         Leader           20.10.7\n"
        );
    }

    #[test]
    fn ls_states_and_sort() {
        let mut nodes = vec![
            node("b", "node10", node_status::State::Down, None),
            node(
                "c",
                "node2",
                node_status::State::Disconnected,
                Some((false, false)),
            ),
            node("a", "node2", node_status::State::Unknown, None),
        ];
        if let Some(s) = nodes[0].spec.as_mut() {
            s.availability = node_spec::Availability::Drain as i32;
        }
        let out = render_ls(&nodes, None);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with(&format!("{:<10}node2 ", "a")), "{out}");
        assert!(lines[1].contains("Unknown"), "{out}");
        assert!(lines[2].starts_with(&format!("{:<10}node2 ", "c")), "{out}");
        assert!(
            lines[2].contains("Disconnected   Active         Unreachable"),
            "{out}"
        );
        assert!(lines[3].starts_with(&format!("{:<10}node10", "b")), "{out}");
        assert!(lines[3].contains("Down           Drain"), "{out}");
        assert!(!out.contains('*'));
    }

    #[test]
    fn inspect_json_field_names_like_docker() {
        let nodes = seed_nodes();
        let v = inspect_json(&nodes[2]);
        assert_eq!(v["ID"], "ynz304mbltxx10v3i15ldkmj1");
        assert_eq!(v["Version"]["Index"], 9);
        assert_eq!(v["CreatedAt"], "2020-06-20T05:57:17.57684293Z");
        assert_eq!(v["UpdatedAt"], "2020-06-20T05:57:18.18575648Z");
        assert_eq!(v["Spec"]["Labels"], serde_json::json!({}));
        assert_eq!(v["Spec"]["Role"], "manager");
        assert_eq!(v["Spec"]["Availability"], "active");
        assert_eq!(v["Description"]["Hostname"], "docker-node01");
        assert_eq!(v["Description"]["Platform"]["Architecture"], "x86_64");
        assert_eq!(v["Description"]["Platform"]["OS"], "linux");
        assert_eq!(v["Description"]["Resources"]["NanoCPUs"], 4_000_000_000i64);
        assert_eq!(v["Description"]["Resources"]["MemoryBytes"], 3958075392i64);
        assert_eq!(v["Description"]["Engine"]["EngineVersion"], "19.03.11");
        assert_eq!(v["Status"]["State"], "ready");
        assert_eq!(v["Status"]["Addr"], "192.168.0.41");
        assert_eq!(v["ManagerStatus"]["Leader"], true);
        assert_eq!(v["ManagerStatus"]["Reachability"], "reachable");
        assert_eq!(v["ManagerStatus"]["Addr"], "192.168.0.41:2377");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "ID",
                "Version",
                "CreatedAt",
                "UpdatedAt",
                "Spec",
                "Description",
                "Status",
                "ManagerStatus"
            ]
        );
        // A reachable follower has no Leader field; a worker no ManagerStatus.
        let follower = inspect_json(&nodes[0]);
        assert!(follower["ManagerStatus"].get("Leader").is_none());
        assert!(inspect_json(&nodes[1]).get("ManagerStatus").is_none());
        assert_eq!(inspect_json(&nodes[1])["Spec"]["Role"], "worker");

        let text = render_inspect(&nodes[2..]);
        assert!(text.starts_with("[\n    {\n        \"ID\": \"ynz304mbltxx10v3i15ldkmj1\",\n        \"Version\": {\n            \"Index\": 9\n        },"), "{text}");
        assert!(text.ends_with("}\n]\n"));
        assert_eq!(render_inspect(&[]), "[]\n");
    }

    #[test]
    fn pretty_matches_docker_template() {
        let mut n = seed_nodes().remove(2);
        if let Some(e) = n.description.as_mut().and_then(|d| d.engine.as_mut()) {
            e.plugins = vec![
                PluginDescription {
                    r#type: "Volume".into(),
                    name: "local".into(),
                },
                PluginDescription {
                    r#type: "Network".into(),
                    name: "bridge".into(),
                },
                PluginDescription {
                    r#type: "Network".into(),
                    name: "overlay".into(),
                },
            ];
            e.labels.insert("provider".into(), "generic".into());
        }
        if let Some(a) = n.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
            a.labels.insert("zone".into(), "east".into());
        }
        assert_eq!(
            render_pretty(&n),
            "ID:\t\t\tynz304mbltxx10v3i15ldkmj1\n\
             Labels:\n \
             - zone=east\n\
             Hostname:              \tdocker-node01\n\
             Joined at:             \t2020-06-20 05:57:17.57684293 +0000 utc\n\
             Status:\n \
             State:\t\t\tReady\n \
             Availability:         \tActive\n \
             Address:\t\t192.168.0.41\n\
             Manager Status:\n \
             Address:\t\t192.168.0.41:2377\n \
             Raft Status:\t\tReachable\n \
             Leader:\t\tYes\n\
             Platform:\n \
             Operating System:\tlinux\n \
             Architecture:\t\tx86_64\n\
             Resources:\n \
             CPUs:\t\t\t4\n \
             Memory:\t\t3.686GiB\n\
             Plugins:\n \
             Network:\t\tbridge, overlay\n \
             Volume:\t\tlocal\n\
             Engine Version:\t\t19.03.11\n\
             Engine Labels:\n \
             - provider=generic\n"
        );
    }

    #[test]
    fn update_merges_like_docker() {
        let args = UpdateArgs {
            availability: Some("DRAIN".into()),
            label_add: vec!["zone=east".into(), "ssd".into()],
            label_rm: vec![],
            role: None,
            node: "n".into(),
        };
        let change = NodeChange::from_args(&args).unwrap();
        let mut spec = NodeSpec::default();
        change.apply(&mut spec).unwrap();
        assert_eq!(spec.availability, node_spec::Availability::Drain as i32);
        let labels = &spec.annotations.as_ref().unwrap().labels;
        assert_eq!(labels.get("zone").map(String::as_str), Some("east"));
        assert_eq!(labels.get("ssd").map(String::as_str), Some(""));

        let rm = NodeChange {
            label_rm: vec!["zone".into()],
            ..Default::default()
        };
        rm.apply(&mut spec).unwrap();
        let err = rm.apply(&mut spec).unwrap_err().to_string();
        assert_eq!(err, "key zone doesn't exist in node's labels");

        let bad = UpdateArgs {
            availability: Some("sleep".into()),
            ..Default::default()
        };
        assert_eq!(
            NodeChange::from_args(&bad).unwrap_err().to_string(),
            "invalid availability \"sleep\", only active, pause and drain are supported"
        );
        let bad_label = UpdateArgs {
            label_add: vec!["=x".into()],
            ..Default::default()
        };
        assert!(NodeChange::from_args(&bad_label).is_err());
    }

    #[test]
    fn promote_and_demote_texts() {
        let mut spec = NodeSpec::default();
        assert!(set_role(&mut spec, NodeRole::Manager));
        assert!(!set_role(&mut spec, NodeRole::Manager));
        assert_eq!(
            promoted_message("docker-node02"),
            "Node docker-node02 promoted to a manager in the swarm."
        );
        assert_eq!(
            demoted_message("docker-node02"),
            "Manager docker-node02 demoted in the swarm."
        );
    }

    #[test]
    fn ls_filters_parse() {
        let (f, m) = parse_ls_filters(&[
            "role=manager".into(),
            "name=docker".into(),
            "node.label=zone=east".into(),
            "membership=accepted".into(),
        ])
        .unwrap();
        assert_eq!(f.roles, vec![NodeRole::Manager as i32]);
        assert_eq!(f.name_prefixes, vec!["docker".to_string()]);
        assert_eq!(f.labels.get("zone").map(String::as_str), Some("east"));
        assert_eq!(m, vec![node_spec::Membership::Accepted]);
        assert!(parse_ls_filters(&["role=boss".into()]).is_err());
        assert!(parse_ls_filters(&["color=red".into()]).is_err());
        assert!(parse_ls_filters(&["role".into()]).is_err());
        let f = parse_ps_filters(&["desired-state=running".into()]).unwrap();
        assert_eq!(f.desired_states, vec![TaskState::Running as i32]);
        assert!(parse_ps_filters(&["desired-state=nope".into()]).is_err());
    }

    #[test]
    fn self_needs_an_identity() {
        assert_eq!(resolve_self("abc", None).unwrap(), "abc");
        assert_eq!(resolve_self("self", Some("me")).unwrap(), "me");
        assert!(resolve_self("self", None).is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct Wrap {
        #[command(subcommand)]
        cmd: NodeCommand,
    }

    #[test]
    fn arguments_parse() {
        let w = Wrap::try_parse_from([
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "a=b",
            "--label-add",
            "c=d",
            "--label-rm",
            "e",
            "docker-node01",
        ])
        .unwrap();
        match w.cmd {
            NodeCommand::Update(a) => {
                assert_eq!(a.availability.as_deref(), Some("drain"));
                assert_eq!(a.label_add, vec!["a=b".to_string(), "c=d".to_string()]);
                assert_eq!(a.label_rm, vec!["e".to_string()]);
                assert_eq!(a.node, "docker-node01");
            }
            other => panic!("{other:?}"),
        }
        assert!(Wrap::try_parse_from(["node", "rm"]).is_err());
        assert!(Wrap::try_parse_from(["node", "promote"]).is_err());
        assert!(Wrap::try_parse_from(["node", "inspect"]).is_err());
        assert!(Wrap::try_parse_from(["node", "update"]).is_err());
        let w = Wrap::try_parse_from(["node", "rm", "-f", "a", "b"]).unwrap();
        assert!(matches!(w.cmd, NodeCommand::Rm { force: true, ref nodes } if nodes.len() == 2));
        let w = Wrap::try_parse_from(["node", "ps"]).unwrap();
        assert!(matches!(w.cmd, NodeCommand::Ps { ref nodes, .. } if nodes.is_empty()));
        let w = Wrap::try_parse_from(["node", "list", "-q"]).unwrap();
        assert!(matches!(w.cmd, NodeCommand::Ls { quiet: true, .. }));
        let w = Wrap::try_parse_from(["node", "inspect", "--pretty", "self"]).unwrap();
        assert!(matches!(w.cmd, NodeCommand::Inspect { pretty: true, .. }));
    }
}
