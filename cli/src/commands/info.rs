//! `shoal info`: the Swarm section of `docker info` (docker/cli's `printSwarmInfo`),
//! one indentation level up since it is all shoal prints.
//!
//! "This host" is the node whose identity the CLI finds locally (`local::this_node`:
//! the state dir, the socket's manager, what `swarm init` recorded). A CLI that is
//! only an admin client (no local identity) reports the manager it talks to: the one
//! whose address is the configured host, else the leader. No manager reachable and no
//! identity, or a manager without a swarm: `Swarm: inactive`, exit 0, as docker
//! prints on a host outside any swarm.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_pki::Role;
use shoal_proto::v1::{Cluster, ListClustersRequest, ListNodesRequest, Node, NodeRole};

use crate::config::CliConfig;
use crate::local::LocalNode;
use crate::output::{human_duration, rfc3339};
use crate::template::Template;

/// Swarm's default VXLAN port, what docker prints as `Data Path Port`.
pub const DATA_PATH_PORT: u32 = 4789;

#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {
    /// Format output using a custom template ('json', or a Go template over
    /// `{Swarm: …}`, e.g. '{{json .Swarm}}').
    #[arg(long, short)]
    pub format: Option<String>,
}

/// What `shoal info` knows about this host's swarm membership (docker's `swarm.Info`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SwarmInfo {
    /// `inactive`, `active` or `error`.
    pub state: String,
    pub node_id: String,
    pub error: String,
    pub is_manager: bool,
    /// Only when this host is a manager (docker's `ControlAvailable`).
    pub cluster: Option<ClusterInfo>,
    pub node_addr: String,
    pub manager_addrs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterInfo {
    pub id: String,
    pub managers: usize,
    pub nodes: usize,
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u32,
    pub task_history_retention_limit: i64,
    pub heartbeat_period: Duration,
    pub cert_expiry: Duration,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
}

pub async fn run(cfg: &CliConfig, args: InfoArgs) -> anyhow::Result<ExitCode> {
    let template = match args.format.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("json") => Some(Template::parse("{{json .}}")?),
        Some(f) => Some(Template::parse(
            &f.replace("\\t", "\t").replace("\\n", "\n"),
        )?),
    };
    let local = crate::local::this_node(cfg);
    let info = gather(cfg, local).await;
    match template {
        None => print!("{}", render(&info)),
        Some(t) => println!("{}", t.execute(&json!({ "Swarm": info_json(&info) }))?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the manager; every failure to reach one is a state, not an error.
async fn gather(cfg: &CliConfig, local: Option<LocalNode>) -> SwarmInfo {
    let unreachable = |why: String| match &local {
        None => inactive(),
        Some(node) => SwarmInfo {
            state: "active".into(),
            node_id: node.node_id.clone(),
            error: format!("cannot reach a manager: {why}"),
            is_manager: node.role == Role::Manager,
            cluster: None,
            node_addr: String::new(),
            manager_addrs: local_manager_addrs(node),
        },
    };
    let mut control = match crate::connect::control(cfg).await {
        Ok(c) => c,
        Err(e) => return unreachable(format!("{e:#}")),
    };
    let clusters = match control.list_clusters(ListClustersRequest::default()).await {
        Ok(r) => r.into_inner().clusters,
        Err(s) => return unreachable(super::status_message(&s)),
    };
    let Some(cluster) = clusters.into_iter().next() else {
        return inactive();
    };
    let nodes = match control.list_nodes(ListNodesRequest::default()).await {
        Ok(r) => r.into_inner().nodes,
        Err(s) => return unreachable(super::status_message(&s)),
    };
    describe(
        &cluster,
        &nodes,
        local.as_ref().map(|n| n.node_id.as_str()),
        &cfg.host,
    )
}

fn inactive() -> SwarmInfo {
    SwarmInfo {
        state: "inactive".into(),
        ..Default::default()
    }
}

/// The manager addresses a worker's state dir records (`swarm join` writes them).
fn local_manager_addrs(node: &LocalNode) -> Vec<String> {
    let mut addrs: Vec<String> = std::fs::read_to_string(node.dir.join("managers"))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    addrs
}

fn node_id(n: &Node) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn is_manager(n: &Node) -> bool {
    n.role == NodeRole::Manager as i32
}

/// The manager the CLI talks to, for an admin client without a local identity: the
/// manager node advertising the configured host, else the leader, else any manager.
fn manager_at<'a>(nodes: &'a [Node], host: &str) -> Option<&'a Node> {
    let host = host.trim_start_matches("https://").trim_end_matches('/');
    let managers = || nodes.iter().filter(|n| is_manager(n));
    managers()
        .find(|n| n.manager_status.as_ref().is_some_and(|m| m.addr == host))
        .or_else(|| managers().find(|n| n.manager_status.as_ref().is_some_and(|m| m.leader)))
        .or_else(|| managers().next())
}

fn proto_duration(d: Option<&prost_types::Duration>) -> Duration {
    d.and_then(|d| Duration::try_from(*d).ok())
        .unwrap_or_default()
}

/// An address without its port (docker's `NodeAddr` is an IP).
fn ip_of(addr: &str) -> String {
    addr.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| addr.to_string())
}

/// The Swarm section from the cluster and its nodes; `self_id`: the local identity.
pub fn describe(cluster: &Cluster, nodes: &[Node], self_id: Option<&str>, host: &str) -> SwarmInfo {
    let me = match self_id {
        Some(id) => match nodes.iter().find(|n| node_id(n) == id) {
            Some(n) => n,
            None => {
                return SwarmInfo {
                    state: "error".into(),
                    node_id: id.to_string(),
                    error: format!(
                        "node {id} is not a member of this swarm (removed with `node rm`?)"
                    ),
                    ..Default::default()
                };
            }
        },
        None => match manager_at(nodes, host) {
            Some(n) => n,
            None => return inactive(),
        },
    };
    let mut manager_addrs: Vec<String> = nodes
        .iter()
        .filter(|n| is_manager(n))
        .filter_map(|n| n.manager_status.as_ref())
        .map(|m| m.addr.clone())
        .filter(|a| !a.is_empty())
        .collect();
    if manager_addrs.is_empty() {
        manager_addrs = cluster.manager_addrs.clone();
    }
    manager_addrs.sort();
    manager_addrs.dedup();
    let is_mgr = is_manager(me);
    let spec = cluster.spec.clone().unwrap_or_default();
    let meta = cluster.meta.clone().unwrap_or_default();
    let ipam = spec.ipam.unwrap_or_default();
    let cluster_info = is_mgr.then(|| ClusterInfo {
        id: meta.id.clone(),
        managers: nodes.iter().filter(|n| is_manager(n)).count(),
        nodes: nodes.len(),
        default_addr_pool: ipam.default_address_pool.clone(),
        subnet_size: ipam.subnet_size,
        task_history_retention_limit: spec
            .orchestration
            .map(|o| o.task_history_retention_limit)
            .unwrap_or(0),
        heartbeat_period: proto_duration(
            spec.dispatcher
                .as_ref()
                .and_then(|d| d.heartbeat_period.as_ref()),
        ),
        cert_expiry: proto_duration(
            spec.ca_config
                .as_ref()
                .and_then(|c| c.node_cert_expiry.as_ref()),
        ),
        created_at: rfc3339(meta.created_at.as_ref()),
        updated_at: rfc3339(meta.updated_at.as_ref()),
        version: meta.version.map(|v| v.index).unwrap_or(0),
    });
    SwarmInfo {
        state: "active".into(),
        node_id: node_id(me).to_string(),
        error: String::new(),
        is_manager: is_mgr,
        cluster: cluster_info,
        node_addr: me
            .status
            .as_ref()
            .map(|s| ip_of(&s.addr))
            .unwrap_or_default(),
        manager_addrs,
    }
}

/// docker's `printSwarmInfo` layout, one level less indented. shoal's store is etcd,
/// not Swarm's raft: the Raft block says so instead of printing raft settings shoal
/// does not have.
pub fn render(info: &SwarmInfo) -> String {
    let mut out = format!("Swarm: {}\n", info.state);
    if info.state == "inactive" {
        return out;
    }
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(" NodeID: {}", info.node_id));
    if !info.error.is_empty() {
        line(format!(" Error: {}", info.error));
    }
    line(format!(" Is Manager: {}", info.is_manager));
    if let Some(c) = &info.cluster {
        line(format!(" ClusterID: {}", c.id));
        line(format!(" Managers: {}", c.managers));
        line(format!(" Nodes: {}", c.nodes));
        let pools: String = c
            .default_addr_pool
            .iter()
            .map(|p| format!("{p}  "))
            .collect();
        line(format!(" Default Address Pool: {pools}"));
        line(format!(" SubnetSize: {}", c.subnet_size));
        line(format!(" Data Path Port: {DATA_PATH_PORT}"));
        line(" Orchestration:".into());
        line(format!(
            "  Task History Retention Limit: {}",
            c.task_history_retention_limit
        ));
        line(" Raft:".into());
        line("  Store: etcd (Snapshot Interval, Heartbeat and Election Tick are etcd's own settings)".into());
        line(" Dispatcher:".into());
        line(format!(
            "  Heartbeat Period: {}",
            human_duration(c.heartbeat_period)
        ));
        line(" CA Configuration:".into());
        line(format!(
            "  Expiry Duration: {}",
            human_duration(c.cert_expiry)
        ));
        line(" Autolock Managers: false".into());
        line(" Root Rotation In Progress: false".into());
    }
    line(format!(" Node Address: {}", info.node_addr));
    if !info.manager_addrs.is_empty() {
        line(" Manager Addresses:".into());
        for a in &info.manager_addrs {
            line(format!("  {a}"));
        }
    }
    out
}

fn go_duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// docker's `swarm.Info` JSON, for `--format '{{json .Swarm}}'`.
pub fn info_json(info: &SwarmInfo) -> Value {
    let mut out = json!({
        "NodeID": info.node_id,
        "NodeAddr": info.node_addr,
        "LocalNodeState": info.state,
        "ControlAvailable": info.is_manager,
        "Error": info.error,
        "RemoteManagers": info.manager_addrs.iter().map(|a| json!({ "Addr": a })).collect::<Vec<_>>(),
    });
    if let Some(c) = &info.cluster {
        out["Nodes"] = json!(c.nodes);
        out["Managers"] = json!(c.managers);
        out["Cluster"] = json!({
            "ID": c.id,
            "Version": { "Index": c.version },
            "CreatedAt": c.created_at,
            "UpdatedAt": c.updated_at,
            "Spec": {
                "Orchestration": { "TaskHistoryRetentionLimit": c.task_history_retention_limit },
                "Dispatcher": { "HeartbeatPeriod": go_duration_ns(c.heartbeat_period) },
                "CAConfig": { "NodeCertExpiry": go_duration_ns(c.cert_expiry) },
                "EncryptionConfig": { "AutoLockManagers": false },
            },
            "RootRotationInProgress": false,
            "DefaultAddrPool": c.default_addr_pool,
            "SubnetSize": c.subnet_size,
            "DataPathPort": DATA_PATH_PORT,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        CaConfig, ClusterSpec, DispatcherConfig, IpamDefaults, ManagerStatus, Meta, NodeStatus,
        OrchestrationConfig,
    };

    fn node(id: &str, manager: bool, addr: &str, leader: bool) -> Node {
        Node {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            role: if manager {
                NodeRole::Manager as i32
            } else {
                NodeRole::Worker as i32
            },
            status: Some(NodeStatus {
                addr: addr.into(),
                ..Default::default()
            }),
            manager_status: manager.then(|| ManagerStatus {
                addr: format!("{addr}:2377"),
                leader,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            meta: Some(Meta {
                id: "clu5ter".into(),
                ..Default::default()
            }),
            spec: Some(ClusterSpec {
                orchestration: Some(OrchestrationConfig {
                    task_history_retention_limit: 5,
                }),
                dispatcher: Some(DispatcherConfig {
                    heartbeat_period: Some(prost_types::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                }),
                ca_config: Some(CaConfig {
                    node_cert_expiry: Some(prost_types::Duration {
                        seconds: 2160 * 3600,
                        nanos: 0,
                    }),
                }),
                ipam: Some(IpamDefaults {
                    default_address_pool: vec!["10.0.0.0/8".into()],
                    subnet_size: 24,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nodes() -> Vec<Node> {
        vec![
            node("m1", true, "192.168.0.41", true),
            node("m2", true, "192.168.0.42", false),
            node("w1", false, "192.168.0.51", false),
        ]
    }

    #[test]
    fn a_manager_prints_dockers_swarm_section() {
        let info = describe(&cluster(), &nodes(), Some("m2"), "127.0.0.1:2377");
        assert_eq!(
            render(&info),
            "Swarm: active\n NodeID: m2\n Is Manager: true\n ClusterID: clu5ter\n Managers: 2\n \
             Nodes: 3\n Default Address Pool: 10.0.0.0/8  \n SubnetSize: 24\n Data Path Port: 4789\n \
             Orchestration:\n  Task History Retention Limit: 5\n Raft:\n  Store: etcd (Snapshot \
             Interval, Heartbeat and Election Tick are etcd's own settings)\n Dispatcher:\n  \
             Heartbeat Period: 5 seconds\n CA Configuration:\n  Expiry Duration: 3 months\n \
             Autolock Managers: false\n Root Rotation In Progress: false\n Node Address: \
             192.168.0.42\n Manager Addresses:\n  192.168.0.41:2377\n  192.168.0.42:2377\n"
        );
        let json = info_json(&info);
        assert_eq!(json["LocalNodeState"], "active");
        assert_eq!(json["Cluster"]["ID"], "clu5ter");
        assert_eq!(
            json["Cluster"]["Spec"]["Dispatcher"]["HeartbeatPeriod"],
            5_000_000_000u64
        );
    }

    #[test]
    fn a_worker_has_no_cluster_block_and_admins_see_their_manager() {
        let info = describe(&cluster(), &nodes(), Some("w1"), "x");
        let out = render(&info);
        assert!(
            out.starts_with(
                "Swarm: active\n NodeID: w1\n Is Manager: false\n Node Address: 192.168.0.51\n"
            ),
            "{out}"
        );
        assert!(!out.contains("ClusterID"), "{out}");
        // No local identity: the manager at the configured host, else the leader.
        assert_eq!(
            describe(&cluster(), &nodes(), None, "192.168.0.42:2377").node_id,
            "m2"
        );
        assert_eq!(
            describe(&cluster(), &nodes(), None, "10.9.9.9:2377").node_id,
            "m1"
        );
        let gone = describe(&cluster(), &nodes(), Some("zz"), "x");
        assert_eq!(gone.state, "error");
        assert!(render(&gone).contains(" Error: node zz is not a member"));
    }

    #[test]
    fn outside_a_swarm() {
        assert_eq!(render(&inactive()), "Swarm: inactive\n");
        assert_eq!(info_json(&inactive())["LocalNodeState"], "inactive");
    }
}
