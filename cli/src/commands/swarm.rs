//! `shoal swarm init|join|join-token|leave`, as `docker swarm`.

use std::process::ExitCode;
use std::time::Duration;

use shoal_pki::{NodeCredentials, NodeKey, Role};
use shoal_proto::v1::{
    CaConfig, Cluster, ClusterSpec, DispatcherConfig, GetNodeRequest, InitClusterRequest,
    IpamDefaults, ListClustersRequest, ListFilters, ListNodesRequest, NodeRole,
    OrchestrationConfig, UpdateClusterRequest, manager_status, update_cluster_request,
};

use crate::config::CliConfig;
use crate::connect::Control;
use crate::local::{self, Kept, LocalNode};

#[derive(Debug, clap::Subcommand)]
pub enum SwarmCommand {
    /// Initialize a swarm.
    Init(InitArgs),
    /// Join a swarm as a node and/or manager.
    Join(JoinArgs),
    /// Manage join tokens.
    #[command(name = "join-token")]
    JoinToken(JoinTokenArgs),
    /// Leave the swarm.
    Leave {
        /// Force this node to leave the swarm, ignoring warnings.
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Debug, Default, Clone, clap::Args)]
pub struct InitArgs {
    /// Advertised address (format: "<ip>[:port]").
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Validity period for node certificates (ns|us|ms|s|m|h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub cert_expiry: Option<Duration>,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub dispatcher_heartbeat: Option<Duration>,
    /// Task history retention limit.
    #[arg(long, value_name = "N")]
    pub task_history_limit: Option<i64>,
    /// Default address pool in CIDR format (repeatable; default 10.0.0.0/8).
    #[arg(long, value_name = "CIDR")]
    pub default_addr_pool: Vec<String>,
    /// Default address pool subnet mask length (default 24).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub default_addr_pool_mask_length: Option<String>,
}

/// Swarm's default address pool, when `--default-addr-pool` is not given.
pub const DEFAULT_ADDR_POOL: &str = "10.0.0.0/8";
/// Swarm's default subnet size (`--default-addr-pool-mask-length`).
pub const DEFAULT_SUBNET_SIZE: u32 = 24;
/// The smallest subnet Swarm hands out: a /29 still has room for the network's own
/// addresses and a few tasks.
const MAX_SUBNET_SIZE: u32 = 29;

/// `--default-addr-pool` / `--default-addr-pool-mask-length` as the cluster's IPAM
/// defaults, with docker's checks (the daemon's `validateDefaultAddrPool`); `None`
/// when neither was given, so the manager's defaults apply.
pub fn ipam_defaults(args: &InitArgs) -> anyhow::Result<Option<IpamDefaults>> {
    use super::network::ipam::{Cidr, parse_nets};
    let pools = parse_nets(&args.default_addr_pool, "--default-addr-pool")?;
    let size = match args.default_addr_pool_mask_length.as_deref() {
        None => None,
        Some(v) => Some(v.trim().parse::<u32>().map_err(|e| {
            let why = if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
                "value out of range"
            } else {
                "invalid syntax"
            };
            super::service::opts::invalid(
                v,
                "--default-addr-pool-mask-length",
                format!("strconv.ParseUint: parsing {v:?}: {why}"),
            )
        })?),
    };
    if pools.is_empty() && size.is_none() {
        return Ok(None);
    }
    let subnet_size = size.unwrap_or(DEFAULT_SUBNET_SIZE);
    if subnet_size > MAX_SUBNET_SIZE {
        anyhow::bail!("subnet size is out of range: {subnet_size}");
    }
    // Without pools the size applies to the default one, so it is checked against it.
    let checked = if pools.is_empty() {
        vec![Cidr::parse(DEFAULT_ADDR_POOL).map_err(anyhow::Error::msg)?]
    } else {
        pools.clone()
    };
    for pool in &checked {
        if subnet_size < u32::from(pool.bits) {
            anyhow::bail!(
                "invalid CIDR: {:?}. Subnet size is too small for pool: {subnet_size}",
                pool.to_string()
            );
        }
    }
    Ok(Some(IpamDefaults {
        default_address_pool: pools.iter().map(Cidr::to_string).collect(),
        subnet_size,
    }))
}

#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// Token for entry into the swarm.
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// Advertised address (format: "<ip>").
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// A manager of the swarm (HOST:PORT).
    #[arg(value_name = "HOST:PORT")]
    pub addr: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct JoinTokenArgs {
    /// Rotate join token.
    #[arg(long)]
    pub rotate: bool,
    /// Only display token.
    #[arg(long, short)]
    pub quiet: bool,
    /// worker|manager
    #[arg(value_name = "ROLE")]
    pub role: String,
}

/// Durations as Go writes them ("2160h", "5s", "1h30m", "2160h0m0s", "500ms").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration \"{s}\": {e}"))
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub async fn run(cfg: &CliConfig, cmd: SwarmCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SwarmCommand::Init(args) => init(cfg, args).await,
        SwarmCommand::Join(args) => join(cfg, args).await,
        SwarmCommand::JoinToken(args) => join_token(cfg, args).await,
        SwarmCommand::Leave { force } => leave(cfg, force).await,
    }
}

/// The spec `swarm init` asks for: only what was given; the manager fills in Swarm's
/// defaults for the rest.
pub fn init_spec(args: &InitArgs) -> anyhow::Result<ClusterSpec> {
    if let Some(n) = args.task_history_limit
        && n < 0
    {
        anyhow::bail!("invalid task history limit {n}: must not be negative");
    }
    Ok(ClusterSpec {
        orchestration: args.task_history_limit.map(|n| OrchestrationConfig {
            task_history_retention_limit: n,
        }),
        dispatcher: args.dispatcher_heartbeat.map(|d| DispatcherConfig {
            heartbeat_period: Some(proto_duration(d)),
        }),
        ca_config: args.cert_expiry.map(|d| CaConfig {
            node_cert_expiry: Some(proto_duration(d)),
        }),
        ipam: ipam_defaults(args)?,
        ..Default::default()
    })
}

async fn init(cfg: &CliConfig, args: InitArgs) -> anyhow::Result<ExitCode> {
    let spec = init_spec(&args)?;
    let key = NodeKey::generate();
    let csr = key
        .csr_pem()
        .map_err(|e| anyhow::anyhow!("cannot create the admin certificate request: {e}"))?;
    let mut control = crate::connect::init_control(cfg).await?;
    let resp = control
        .init_cluster(InitClusterRequest {
            spec: Some(spec),
            advertise_addr: args.advertise_addr.clone().unwrap_or_default(),
            admin_csr: csr.into_bytes(),
        })
        .await
        .map_err(super::rpc_error)?
        .into_inner();
    let cluster = resp.cluster.unwrap_or_default();
    let creds = NodeCredentials {
        cert_pem: String::from_utf8(resp.admin_certificate).map_err(|_| {
            anyhow::anyhow!("the manager sent an admin certificate that is not PEM")
        })?,
        key_pem: key.key_pem(),
        ca_pem: String::from_utf8(resp.ca_certificate)
            .map_err(|_| anyhow::anyhow!("the manager sent a CA certificate that is not PEM"))?,
    };
    let stored = creds
        .check()
        .and_then(|()| creds.store(&cfg.cert_dir))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            local::record_init_node(&cfg.cert_dir, &resp.node_id).map_err(|e| e.to_string())
        });
    print!(
        "{}",
        render_init(
            &resp.node_id,
            worker_token(&cluster),
            cluster
                .manager_addrs
                .first()
                .map(String::as_str)
                .unwrap_or(""),
        )
    );
    if let Err(e) = stored {
        anyhow::bail!(
            "the swarm is initialised, but its admin credentials could not be stored in {}: {e}",
            cfg.cert_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn worker_token(cluster: &Cluster) -> &str {
    cluster
        .root_ca
        .as_ref()
        .and_then(|r| r.join_tokens.as_ref())
        .map(|t| t.worker.as_str())
        .unwrap_or("")
}

fn manager_token(cluster: &Cluster) -> &str {
    cluster
        .root_ca
        .as_ref()
        .and_then(|r| r.join_tokens.as_ref())
        .map(|t| t.manager.as_str())
        .unwrap_or("")
}

/// What `swarm init` prints (docker's words, `shoal` for `docker`).
pub fn render_init(node_id: &str, worker_token: &str, addr: &str) -> String {
    format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n{}To add a manager to \
         this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n",
        render_join_command(Role::Worker, worker_token, addr)
    )
}

/// `To add a worker to this swarm, run the following command: …` and a blank line.
pub fn render_join_command(role: Role, token: &str, addr: &str) -> String {
    let who = if role == Role::Manager {
        "manager"
    } else {
        "worker"
    };
    format!(
        "To add a {who} to this swarm, run the following command:\n\n    shoal swarm join --token \
         {token} {addr}\n\n"
    )
}

/// What `swarm join-token` prints.
pub fn render_join_token(
    role: Role,
    rotated: bool,
    quiet: bool,
    token: &str,
    addr: &str,
) -> String {
    if quiet {
        return format!("{token}\n");
    }
    let mut out = String::new();
    if rotated {
        let who = if role == Role::Manager {
            "manager"
        } else {
            "worker"
        };
        out.push_str(&format!("Successfully rotated {who} join token.\n\n"));
    }
    out.push_str(&render_join_command(role, token, addr));
    out
}

pub fn parse_join_role(role: &str) -> anyhow::Result<Role> {
    match role {
        "worker" => Ok(Role::Worker),
        "manager" => Ok(Role::Manager),
        other => anyhow::bail!("unknown role {other}"),
    }
}

async fn the_cluster(control: &mut Control) -> anyhow::Result<Cluster> {
    control
        .list_clusters(ListClustersRequest { filters: None })
        .await
        .map_err(super::rpc_error)?
        .into_inner()
        .clusters
        .into_iter()
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "This node is not part of a swarm: the swarm has not been initialised (run \
                 `shoal swarm init`)"
            )
        })
}

/// The address joining nodes are told: this host's manager when it is one, else the
/// first address the managers advertise.
async fn join_addr(cfg: &CliConfig, control: &mut Control, cluster: &Cluster) -> String {
    if let Some(me) = local::this_node(cfg).filter(|n| n.role == Role::Manager)
        && let Ok(resp) = control
            .get_node(GetNodeRequest {
                node_id: me.node_id,
            })
            .await
        && let Some(addr) = resp
            .into_inner()
            .node
            .and_then(|n| n.manager_status)
            .map(|ms| ms.addr)
            .filter(|a| !a.is_empty())
    {
        return addr;
    }
    cluster.manager_addrs.first().cloned().unwrap_or_default()
}

async fn join_token(cfg: &CliConfig, args: JoinTokenArgs) -> anyhow::Result<ExitCode> {
    let role = parse_join_role(&args.role)?;
    let mut control = crate::connect::control(cfg).await?;
    if args.rotate {
        let cluster = the_cluster(&mut control).await?;
        let meta = cluster.meta.clone().unwrap_or_default();
        control
            .update_cluster(UpdateClusterRequest {
                cluster_id: meta.id,
                cluster_version: meta.version,
                spec: None,
                rotation: Some(update_cluster_request::Rotation {
                    worker_join_token: role == Role::Worker,
                    manager_join_token: role == Role::Manager,
                }),
            })
            .await
            .map_err(super::rpc_error)?;
    }
    // Read again: a rotation changed the tokens.
    let cluster = the_cluster(&mut control).await?;
    let token = if role == Role::Manager {
        manager_token(&cluster)
    } else {
        worker_token(&cluster)
    };
    let addr = if args.quiet {
        String::new()
    } else {
        join_addr(cfg, &mut control, &cluster).await
    };
    print!(
        "{}",
        render_join_token(role, args.rotate, args.quiet, token, &addr)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn joined_message(role: Role) -> &'static str {
    if role == Role::Manager {
        "This node joined a swarm as a manager."
    } else {
        "This node joined a swarm as a worker."
    }
}

async fn join(cfg: &CliConfig, args: JoinArgs) -> anyhow::Result<ExitCode> {
    let state_dir = local::join_state_dir(cfg);
    let outcome = shoal_worker::join::join(
        &args.addr,
        &args.token,
        &state_dir,
        args.advertise_addr.as_deref(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", joined_message(outcome.role));
    Ok(ExitCode::SUCCESS)
}

/// The managers as `swarm leave` weighs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerStats {
    /// This node is a reachable manager.
    pub active: bool,
    pub reachable: usize,
    pub unreachable: usize,
}

/// Swarm's refusal to let a manager leave without `--force`. `None`: the managers'
/// state could not be read.
pub fn leave_refusal(stats: Option<ManagerStats>) -> String {
    let mut msg = String::from(
        "You are attempting to leave the swarm on a node that is participating as a manager. ",
    );
    match stats {
        Some(s) => {
            let loses_quorum = s.reachable.saturating_sub(2) <= s.unreachable;
            if s.active && loses_quorum {
                if s.reachable == 1 && s.unreachable == 0 {
                    msg.push_str(
                        "Removing the last manager erases all current state of the swarm. Use \
                         `--force` to ignore this message. ",
                    );
                    return msg;
                }
                msg.push_str(&format!(
                    "Removing this node leaves {} managers out of {}. Without a Raft quorum your \
                     swarm will be inaccessible. ",
                    s.reachable.saturating_sub(1),
                    s.reachable + s.unreachable
                ));
            }
        }
        None => msg.push_str("Doing so may lose the consensus of your cluster. "),
    }
    msg.push_str(
        "The only way to restore a swarm that has lost consensus is to reinitialize it with \
         `--force-new-cluster`. Use `--force` to suppress this message.",
    );
    msg
}

async fn manager_stats(cfg: &CliConfig, node: &LocalNode) -> anyhow::Result<ManagerStats> {
    let mut control = crate::connect::control(cfg).await?;
    let managers = control
        .list_nodes(ListNodesRequest {
            filters: Some(ListFilters {
                roles: vec![NodeRole::Manager as i32],
                ..Default::default()
            }),
        })
        .await
        .map_err(super::rpc_error)?
        .into_inner()
        .nodes;
    let mut stats = ManagerStats {
        active: false,
        reachable: 0,
        unreachable: 0,
    };
    for m in &managers {
        let reachable = m
            .manager_status
            .as_ref()
            .is_some_and(|ms| ms.reachability == manager_status::Reachability::Reachable as i32);
        if reachable {
            stats.reachable += 1;
        } else {
            stats.unreachable += 1;
        }
        if m.meta.as_ref().is_some_and(|meta| meta.id == node.node_id) {
            stats.active = reachable;
        }
    }
    Ok(stats)
}

async fn leave(cfg: &CliConfig, force: bool) -> anyhow::Result<ExitCode> {
    let Some(node) = local::leaving_node(cfg) else {
        anyhow::bail!("This node is not part of a swarm");
    };
    if node.role == Role::Manager && !force {
        let stats = manager_stats(cfg, &node).await.ok();
        anyhow::bail!(leave_refusal(stats));
    }
    if node.role == Role::Manager {
        // The manager itself leaves, through its local socket: the last manager dissolves
        // the swarm (its admin credentials go with it).
        let socket = if !cfg.socket.as_os_str().is_empty() {
            cfg.socket.clone()
        } else if node.kind == Kept::ManagerNodeId {
            node.dir.join("control.sock")
        } else {
            std::path::PathBuf::from(".shoal-manager/control.sock")
        };
        let channel = crate::connect::unix_channel(&socket).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach this host's manager on {}: {e:#}",
                socket.display()
            )
        })?;
        shoal_proto::v1::control_client::ControlClient::new(channel)
            .leave_swarm(shoal_proto::v1::LeaveSwarmRequest { force })
            .await
            .map_err(super::rpc_error)?;
        local::forget(&node, &cfg.cert_dir)?;
        let certs = shoal_pki::certs_dir(&cfg.cert_dir);
        for file in [
            shoal_pki::NODE_CERT_FILE,
            shoal_pki::NODE_KEY_FILE,
            shoal_pki::ROOT_CA_FILE,
        ] {
            let _ = std::fs::remove_file(certs.join(file));
        }
        println!("Node left the swarm.");
        return Ok(ExitCode::SUCCESS);
    }
    local::forget(&node, &cfg.cert_dir)?;
    if node.kind == Kept::Certificate {
        let _ = std::fs::remove_file(node.dir.join(shoal_worker::identity::MANAGERS_FILE));
    }
    println!("Node left the swarm.");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    const TOKEN: &str =
        "SWMTKN-1-33ci17l1n34fh6v4r1qq8qmocjo347saeuer2xrxflrn25jgjx-7vphgu8a0gsa4anof6ffrgwqb";

    #[test]
    fn init_text_is_swarms() {
        assert_eq!(
            render_init("vjtstrkxntsacyjtvl18hcbe4", TOKEN, "192.168.65.3:2377"),
            "Swarm initialized: current node (vjtstrkxntsacyjtvl18hcbe4) is now a manager.\n\
             \n\
             To add a worker to this swarm, run the following command:\n\
             \n    shoal swarm join --token SWMTKN-1-33ci17l1n34fh6v4r1qq8qmocjo347saeuer2xrxflrn25jgjx-7vphgu8a0gsa4anof6ffrgwqb 192.168.65.3:2377\n\
             \n\
             To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\
             \n"
        );
    }

    #[test]
    fn join_token_texts() {
        assert_eq!(
            render_join_token(Role::Manager, false, false, "tok", "192.168.0.41:2377"),
            "To add a manager to this swarm, run the following command:\n\n    shoal swarm join --token tok 192.168.0.41:2377\n\n"
        );
        assert_eq!(
            render_join_token(Role::Worker, true, false, "tok", "127.0.0.1:2377"),
            "Successfully rotated worker join token.\n\nTo add a worker to this swarm, run the following command:\n\n    shoal swarm join --token tok 127.0.0.1:2377\n\n"
        );
        assert_eq!(
            render_join_token(Role::Worker, true, true, "tok", "x"),
            "tok\n"
        );
        assert!(parse_join_role("boss").unwrap_err().to_string() == "unknown role boss");
        assert_eq!(parse_join_role("manager").unwrap(), Role::Manager);
    }

    #[test]
    fn joined_texts() {
        assert_eq!(
            joined_message(Role::Worker),
            "This node joined a swarm as a worker."
        );
        assert_eq!(
            joined_message(Role::Manager),
            "This node joined a swarm as a manager."
        );
    }

    #[test]
    fn leave_refusals_are_swarms() {
        let last = leave_refusal(Some(ManagerStats {
            active: true,
            reachable: 1,
            unreachable: 0,
        }));
        assert_eq!(
            last,
            "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. "
        );
        let two = leave_refusal(Some(ManagerStats {
            active: true,
            reachable: 2,
            unreachable: 0,
        }));
        assert_eq!(
            two,
            "You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves 1 managers out of 2. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message."
        );
        let safe = leave_refusal(Some(ManagerStats {
            active: true,
            reachable: 5,
            unreachable: 0,
        }));
        assert_eq!(
            safe,
            "You are attempting to leave the swarm on a node that is participating as a manager. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message."
        );
        let unknown = leave_refusal(None);
        assert!(unknown.contains("Doing so may lose the consensus of your cluster."));
    }

    #[test]
    fn init_flags_become_the_spec() {
        let spec = init_spec(&InitArgs {
            cert_expiry: Some(parse_duration("2160h").unwrap()),
            dispatcher_heartbeat: Some(parse_duration("5s").unwrap()),
            task_history_limit: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            spec.ca_config.unwrap().node_cert_expiry.unwrap().seconds,
            2160 * 3600
        );
        assert_eq!(
            spec.dispatcher.unwrap().heartbeat_period.unwrap().seconds,
            5
        );
        assert_eq!(spec.orchestration.unwrap().task_history_retention_limit, 5);
        let empty = init_spec(&InitArgs::default()).unwrap();
        assert!(empty.ca_config.is_none() && empty.dispatcher.is_none());
        assert!(
            init_spec(&InitArgs {
                task_history_limit: Some(-1),
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(
            parse_duration("2160h0m0s").unwrap(),
            Duration::from_secs(2160 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
    }

    fn init_args(args: &[&str]) -> InitArgs {
        let mut argv = vec!["swarm", "init"];
        argv.extend_from_slice(args);
        match Wrap::try_parse_from(argv).unwrap().cmd {
            SwarmCommand::Init(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn pool_err(args: &[&str]) -> String {
        init_spec(&init_args(args)).unwrap_err().to_string()
    }

    #[test]
    fn address_pool_flags_become_the_clusters_ipam() {
        let spec = init_spec(&init_args(&[
            "--default-addr-pool",
            "10.20.0.0/16",
            "--default-addr-pool",
            "10.30.0.5/16,192.168.0.0/20",
            "--default-addr-pool-mask-length",
            "26",
        ]))
        .unwrap();
        let ipam = spec.ipam.unwrap();
        // pflag's IPNetSlice keeps the network of each CIDR.
        assert_eq!(
            ipam.default_address_pool,
            vec!["10.20.0.0/16", "10.30.0.0/16", "192.168.0.0/20"]
        );
        assert_eq!(ipam.subnet_size, 26);

        let pool_only = init_spec(&init_args(&["--default-addr-pool", "172.16.0.0/12"])).unwrap();
        let ipam = pool_only.ipam.unwrap();
        assert_eq!(ipam.default_address_pool, vec!["172.16.0.0/12"]);
        assert_eq!(ipam.subnet_size, DEFAULT_SUBNET_SIZE);

        let mask_only = init_spec(&init_args(&["--default-addr-pool-mask-length", "20"])).unwrap();
        let ipam = mask_only.ipam.unwrap();
        assert!(ipam.default_address_pool.is_empty());
        assert_eq!(ipam.subnet_size, 20);

        assert!(init_spec(&InitArgs::default()).unwrap().ipam.is_none());
    }

    #[test]
    fn address_pool_flags_are_checked_as_docker() {
        assert_eq!(
            pool_err(&["--default-addr-pool", "10.0.0.0"]),
            "invalid argument \"10.0.0.0\" for \"--default-addr-pool\" flag: invalid CIDR address: 10.0.0.0"
        );
        assert_eq!(
            pool_err(&["--default-addr-pool-mask-length", "x"]),
            "invalid argument \"x\" for \"--default-addr-pool-mask-length\" flag: strconv.ParseUint: parsing \"x\": invalid syntax"
        );
        assert!(pool_err(&["--default-addr-pool-mask-length", "-1"]).contains("invalid syntax"));
        assert!(
            pool_err(&["--default-addr-pool-mask-length", "4294967296"])
                .contains("value out of range")
        );
        assert_eq!(
            pool_err(&[
                "--default-addr-pool",
                "10.0.0.0/8",
                "--default-addr-pool-mask-length",
                "30"
            ]),
            "subnet size is out of range: 30"
        );
        assert_eq!(
            pool_err(&[
                "--default-addr-pool",
                "10.20.0.0/16",
                "--default-addr-pool-mask-length",
                "12"
            ]),
            "invalid CIDR: \"10.20.0.0/16\". Subnet size is too small for pool: 12"
        );
        assert_eq!(
            pool_err(&["--default-addr-pool-mask-length", "4"]),
            "invalid CIDR: \"10.0.0.0/8\". Subnet size is too small for pool: 4"
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Wrap {
        #[command(subcommand)]
        cmd: SwarmCommand,
    }

    #[test]
    fn arguments_parse() {
        let w = Wrap::try_parse_from([
            "swarm",
            "init",
            "--advertise-addr",
            "192.168.205.10",
            "--cert-expiry",
            "2160h",
            "--dispatcher-heartbeat",
            "5s",
            "--task-history-limit",
            "5",
        ])
        .unwrap();
        match w.cmd {
            SwarmCommand::Init(a) => {
                assert_eq!(a.advertise_addr.as_deref(), Some("192.168.205.10"));
                assert_eq!(a.dispatcher_heartbeat, Some(Duration::from_secs(5)));
            }
            other => panic!("{other:?}"),
        }
        assert!(Wrap::try_parse_from(["swarm", "init", "extra"]).is_err());
        assert!(Wrap::try_parse_from(["swarm", "init", "--cert-expiry", "x"]).is_err());
        let w = Wrap::try_parse_from(["swarm", "join", "--token", TOKEN, "192.168.99.100:2377"])
            .unwrap();
        assert!(matches!(w.cmd, SwarmCommand::Join(ref a) if a.addr == "192.168.99.100:2377"));
        assert!(Wrap::try_parse_from(["swarm", "join", "192.168.99.100:2377"]).is_err());
        assert!(Wrap::try_parse_from(["swarm", "join", "--token", TOKEN]).is_err());
        let w = Wrap::try_parse_from(["swarm", "join-token", "-q", "--rotate", "worker"]).unwrap();
        assert!(matches!(
            w.cmd,
            SwarmCommand::JoinToken(JoinTokenArgs { rotate: true, quiet: true, ref role }) if role == "worker"
        ));
        assert!(Wrap::try_parse_from(["swarm", "join-token"]).is_err());
        let w = Wrap::try_parse_from(["swarm", "leave", "-f"]).unwrap();
        assert!(matches!(w.cmd, SwarmCommand::Leave { force: true }));
    }
}
