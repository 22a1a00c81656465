//! The swarm itself: `swarm init` (the Cluster object, its root CA, join tokens, the
//! first manager node and the `ingress` network), join-token rotation, and each manager process's own node —
//! its identity on disk, its presence (a lease-backed key, so `node ls` can tell
//! Reachable from Unreachable) and its part in the manager election.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost_types::Duration as ProtoDuration;
use shoal_grpc_host::ClusterState;
use shoal_grpc_host::identity::{CLUSTER_NAME, read_kek};
use shoal_pki::{JoinToken, Kek, RootCa};
use shoal_proto::v1::{
    Annotations, CaConfig, Cluster, ClusterSpec, DispatcherConfig, InitClusterRequest,
    InitClusterResponse, IpamDefaults, JoinTokens, ManagerStatus, Meta, Node, NodeDescription,
    NodeRole, NodeSpec, NodeStatus, OrchestrationConfig, RootCa as ProtoRootCa, node_spec,
    node_status,
};
use shoal_store::{Object, Store};
use tonic::Status;

use crate::ManagerConfig;
use crate::announce::announce;
use crate::control::store_status;

/// Swarm's words for a second `swarm init`.
pub const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.";

/// Swarm's defaults.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(2160 * 3600);
pub const DEFAULT_TASK_HISTORY: i64 = 5;
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// The file in the manager's state dir holding its node id.
const NODE_ID_FILE: &str = "node-id";

/// The election a manager holds while it is up: its presence.
pub fn presence_election(node_id: &str) -> String {
    format!("manager-presence/{node_id}")
}

/// The candidate id a manager uses in elections: `<node id>@<advertise addr>`.
pub fn candidate_id(node_id: &str, advertise: &str) -> String {
    format!("{node_id}@{advertise}")
}

/// The node id part of a candidate id.
pub fn candidate_node(candidate: &str) -> &str {
    candidate.split('@').next().unwrap_or(candidate)
}

/// This manager's node id: the one `swarm init` or an enrollment wrote, else the one in
/// a manager certificate `shoal swarm join --token <manager token>` put in the state dir.
pub fn load_node_id(state_dir: &Path) -> Option<String> {
    let written = std::fs::read_to_string(state_dir.join(NODE_ID_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    written.or_else(|| {
        shoal_pki::NodeCredentials::load(state_dir)
            .and_then(|c| c.info())
            .ok()
            .filter(|info| info.role == shoal_pki::Role::Manager)
            .map(|info| info.node_id)
    })
}

fn save_node_id(state_dir: &Path, node_id: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let path = state_dir.join(NODE_ID_FILE);
    let tmp = state_dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{node_id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The KEK of this swarm: the configured file, created (0600) if this is the first
/// manager of a new swarm.
fn kek_for_init(path: &Path) -> Result<Kek, Status> {
    if path.exists() {
        return read_kek(path).map_err(|e| Status::failed_precondition(e.to_string()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    let kek = Kek::generate();
    kek.to_file(path)
        .map_err(|e| Status::internal(format!("cannot write {}: {e}", path.display())))?;
    Ok(kek)
}

fn proto_duration(d: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn std_duration(d: Option<&ProtoDuration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(*d).ok())
}

/// The spec `swarm init` stores: the request's values where given, Swarm's defaults
/// elsewhere, checked.
pub fn complete_spec(
    spec: Option<ClusterSpec>,
    min_cert_expiry: Duration,
) -> Result<ClusterSpec, Status> {
    let mut spec = spec.unwrap_or_default();
    spec.annotations = Some(Annotations {
        name: CLUSTER_NAME.into(),
        labels: spec.annotations.map(|a| a.labels).unwrap_or_default(),
    });
    let heartbeat = std_duration(
        spec.dispatcher
            .as_ref()
            .and_then(|d| d.heartbeat_period.as_ref()),
    )
    .unwrap_or(DEFAULT_HEARTBEAT);
    if heartbeat.is_zero() {
        return Err(Status::invalid_argument(
            "dispatcher.heartbeat_period: must be greater than 0",
        ));
    }
    spec.dispatcher = Some(DispatcherConfig {
        heartbeat_period: Some(proto_duration(heartbeat)),
    });
    let expiry = std_duration(
        spec.ca_config
            .as_ref()
            .and_then(|c| c.node_cert_expiry.as_ref()),
    )
    .unwrap_or(DEFAULT_CERT_EXPIRY);
    if expiry < min_cert_expiry {
        return Err(Status::invalid_argument(format!(
            "ca_config.node_cert_expiry: invalid certificate expiry: must be at least {}",
            humantime::format_duration(min_cert_expiry)
        )));
    }
    spec.ca_config = Some(CaConfig {
        node_cert_expiry: Some(proto_duration(expiry)),
    });
    let history = spec
        .orchestration
        .as_ref()
        .map(|o| o.task_history_retention_limit)
        .unwrap_or(DEFAULT_TASK_HISTORY);
    if history < 0 {
        return Err(Status::invalid_argument(
            "orchestration.task_history_retention_limit: must not be negative",
        ));
    }
    spec.orchestration = Some(OrchestrationConfig {
        task_history_retention_limit: history,
    });
    let ipam = spec.ipam.get_or_insert_with(IpamDefaults::default);
    if ipam.default_address_pool.is_empty() {
        ipam.default_address_pool = vec![crate::ipam::DEFAULT_POOL.into()];
    }
    if ipam.subnet_size == 0 {
        ipam.subnet_size = crate::ipam::DEFAULT_SUBNET_SIZE;
    }
    crate::ipam::Pools::from_defaults(Some(ipam))
        .map_err(|e| Status::invalid_argument(format!("ipam: {e}")))?;
    Ok(spec)
}

/// The manager node a manager process registers as.
fn manager_node(node_id: &str, hostname: &str, advertise: &str) -> Node {
    let ip = advertise
        .rsplit_once(':')
        .map(|(ip, _)| ip)
        .unwrap_or(advertise)
        .to_string();
    Node {
        meta: Some(Meta {
            id: node_id.to_string(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations::default()),
            desired_role: NodeRole::Manager as i32,
            membership: node_spec::Membership::Accepted as i32,
            availability: node_spec::Availability::Active as i32,
        }),
        description: Some(NodeDescription {
            hostname: hostname.to_string(),
            platform: Some(shoal_node_description::platform()),
            resources: Some(shoal_node_description::resources()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: node_status::State::Ready as i32,
            message: String::new(),
            addr: ip,
            timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        }),
        manager_status: Some(ManagerStatus {
            raft_id: 0,
            addr: advertise.to_string(),
            leader: false,
            reachability: shoal_proto::v1::manager_status::Reachability::Reachable as i32,
        }),
        role: NodeRole::Manager as i32,
        ..Default::default()
    }
}

/// The Docker Engine of the manager's host, if one answers (`node ls` shows it).
async fn with_engine(mut node: Node) -> Node {
    if let (Some(version), Some(d)) = (
        shoal_node_description::docker_version().await,
        node.description.as_mut(),
    ) {
        d.engine = Some(shoal_proto::v1::EngineDescription {
            engine_version: version,
            ..Default::default()
        });
    }
    node
}

/// Strips what never leaves the managers: the sealed CA key.
pub fn public_cluster(mut cluster: Cluster) -> Cluster {
    if let Some(ca) = cluster.root_ca.as_mut() {
        ca.ca_key_encrypted.clear();
    }
    cluster
}

/// `swarm init`.
pub async fn init(
    state: &ClusterState,
    cfg: &ManagerConfig,
    req: InitClusterRequest,
) -> Result<InitClusterResponse, Status> {
    let store = &state.store;
    if store.get_by_name::<Cluster>(CLUSTER_NAME).await.is_ok() {
        return Err(Status::failed_precondition(ALREADY_IN_SWARM));
    }
    let spec = complete_spec(req.spec, cfg.min_cert_expiry)?;
    let advertise = if req.advertise_addr.is_empty() {
        cfg.advertise_endpoint()
    } else {
        req.advertise_addr
            .parse::<std::net::SocketAddr>()
            .ok()
            .or_else(|| {
                req.advertise_addr
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| std::net::SocketAddr::new(ip, cfg.listen.port()))
            })
    }
    .ok_or_else(|| {
        Status::invalid_argument(format!(
            "advertise_addr: \"{}\" is not IP or IP:PORT",
            req.advertise_addr
        ))
    })?
    .to_string();

    let kek = kek_for_init(&cfg.kek_file)?;
    let ca = RootCa::generate(ROOT_CA_VALIDITY)
        .map_err(|e| Status::internal(format!("cannot create the root CA: {e}")))?;
    let sealed = shoal_pki::seal(&kek, ca.key_pem().as_bytes())
        .map_err(|e| Status::internal(format!("cannot seal the CA key: {e}")))?;
    let digest = ca.digest();
    let cluster_id = shoal_store::new_id();
    let cluster = Cluster {
        meta: Some(Meta {
            id: cluster_id.clone(),
            ..Default::default()
        }),
        spec: Some(spec.clone()),
        root_ca: Some(ProtoRootCa {
            ca_key_encrypted: sealed,
            ca_cert: ca.cert_pem().as_bytes().to_vec(),
            ca_cert_digest: digest.clone(),
            join_tokens: Some(JoinTokens {
                worker: JoinToken::generate(digest.clone()).to_string(),
                manager: JoinToken::generate(digest).to_string(),
            }),
        }),
        manager_addrs: vec![advertise.clone()],
    };

    let admin_certificate = if req.admin_csr.is_empty() {
        Vec::new()
    } else {
        let csr = String::from_utf8_lossy(&req.admin_csr);
        let subject = format!("admin-{}", &shoal_store::new_id()[..10]);
        let expiry = std_duration(
            spec.ca_config
                .as_ref()
                .and_then(|c| c.node_cert_expiry.as_ref()),
        )
        .unwrap_or(DEFAULT_CERT_EXPIRY);
        ca.issue(
            &csr,
            &subject,
            shoal_pki::Role::Admin,
            &cluster_id,
            expiry,
            &[],
        )
        .map_err(|e| Status::invalid_argument(format!("admin_csr: {e}")))?
        .into_bytes()
    };

    let had_node_id = load_node_id(&cfg.state_dir);
    let node_id = had_node_id.clone().unwrap_or_else(shoal_store::new_id);
    let node = with_engine(manager_node(
        &node_id,
        &cfg.effective_hostname(),
        &advertise,
    ))
    .await;
    // The id goes to disk first: once the cluster exists, this process must know it is
    // this node, or it would enroll a second one.
    save_node_id(&cfg.state_dir, &node_id).map_err(|e| {
        Status::internal(format!(
            "cannot write the node id into {}: {e}",
            cfg.state_dir.display()
        ))
    })?;
    // The routing mesh's network comes with the swarm, from its first pool.
    let pools = crate::ipam::Pools::from_defaults(spec.ipam.as_ref())
        .map_err(|e| Status::invalid_argument(format!("ipam: {e}")))?;
    let mut ingress = crate::control::networks::ingress_network(&pools)?;
    ingress.meta = Some(Meta {
        id: shoal_store::new_id(),
        ..Default::default()
    });
    let mut batch = store.batch();
    batch
        .create(cluster)
        .create(node.clone())
        .create(ingress.clone());
    let committed = match batch.commit().await {
        Ok(c) => c,
        Err(e) => {
            if had_node_id.is_none() {
                let _ = std::fs::remove_file(cfg.state_dir.join(NODE_ID_FILE));
            }
            return Err(match e {
                shoal_store::Error::AlreadyExists { .. } | shoal_store::Error::IdExists { .. } => {
                    Status::failed_precondition(ALREADY_IN_SWARM)
                }
                other => store_status(other),
            });
        }
    };
    let cluster = store
        .get::<Cluster>(&cluster_id)
        .await
        .map_err(store_status)?;
    let mut node = node;
    node.set_version(committed.revision);
    announce(&state.bus, "create", &cluster, CLUSTER_NAME).await;
    announce(&state.bus, "create", &node, &cfg.effective_hostname()).await;
    ingress.set_version(committed.revision);
    announce(
        &state.bus,
        "create",
        &ingress,
        crate::control::networks::INGRESS_NAME,
    )
    .await;
    tracing::info!(cluster = %cluster_id, node = %node_id, %advertise, "swarm initialised");
    let ca_certificate = ca.cert_pem().as_bytes().to_vec();
    Ok(InitClusterResponse {
        cluster: Some(public_cluster(cluster)),
        node_id,
        admin_certificate,
        ca_certificate,
    })
}

/// Applies an UpdateCluster: a new spec (checked like init's) and/or rotated tokens.
pub fn apply_cluster_update(
    current: &Cluster,
    spec: Option<ClusterSpec>,
    rotate_worker: bool,
    rotate_manager: bool,
    min_cert_expiry: Duration,
) -> Result<Cluster, Status> {
    let mut next = current.clone();
    if let Some(spec) = spec {
        next.spec = Some(complete_spec(Some(spec), min_cert_expiry)?);
    }
    if rotate_worker || rotate_manager {
        let root = next
            .root_ca
            .as_mut()
            .ok_or_else(|| Status::failed_precondition("the swarm has no root CA"))?;
        let digest = root.ca_cert_digest.clone();
        let tokens = root.join_tokens.get_or_insert_with(JoinTokens::default);
        if rotate_worker {
            tokens.worker = JoinToken::generate(digest.clone()).to_string();
        }
        if rotate_manager {
            tokens.manager = JoinToken::generate(digest).to_string();
        }
    }
    Ok(next)
}

/// This manager's node: the id on disk, or a new manager node when the swarm exists
/// but this manager has never been part of it (a second manager process sharing the
/// store and the KEK enrolls itself).
pub async fn ensure_manager_node(
    store: &Store,
    cfg: &ManagerConfig,
    bus: &shoal_events::EventBus,
) -> Result<String, Status> {
    let advertise = cfg
        .advertise_endpoint()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if let Some(id) = load_node_id(&cfg.state_dir) {
        if let Some(mut node) = store.try_get::<Node>(&id).await.map_err(store_status)? {
            // Back after a restart: Ready again at the address it has now.
            let fresh = with_engine(manager_node(&id, &cfg.effective_hostname(), &advertise)).await;
            node.status = fresh.status;
            node.manager_status = fresh.manager_status;
            // The executors are what a worker running as this node reported; the
            // manager itself runs none.
            let executors = node
                .description
                .as_ref()
                .map(|d| d.executors.clone())
                .unwrap_or_default();
            node.description = fresh.description.map(|mut d| {
                d.executors = executors;
                d
            });
            match store.update(node).await {
                Ok(node) => announce(bus, "update", &node, &cfg.effective_hostname()).await,
                Err(e) => tracing::warn!(error = %e, "could not mark the manager node ready"),
            }
            ensure_node_credentials(store, cfg, &id).await;
            return Ok(id);
        }
        tracing::warn!(node = %id, "this manager's node was removed from the swarm; enrolling again");
    }
    let id = shoal_store::new_id();
    save_node_id(&cfg.state_dir, &id)
        .map_err(|e| Status::internal(format!("cannot write the node id: {e}")))?;
    let node = store
        .create(with_engine(manager_node(&id, &cfg.effective_hostname(), &advertise)).await)
        .await
        .map_err(store_status)?;
    announce(bus, "create", &node, &cfg.effective_hostname()).await;
    tracing::info!(node = %id, "enrolled as a manager node");
    ensure_node_credentials(store, cfg, &id).await;
    Ok(id)
}

/// Writes this manager node's own node certificate (role manager, CN = its node id) into
/// the state dir, unless one of the current CA for that id is already there. A
/// `shoal-worker` started with the same state dir uses it to run this node's tasks —
/// every manager can also be a worker, as in Swarm. Best effort: a manager without the
/// file still manages.
async fn ensure_node_credentials(store: &Store, cfg: &ManagerConfig, node_id: &str) {
    let cluster = match store.list::<Cluster>().await {
        Ok(listed) => listed.objects.into_iter().next(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster for this node's certificate");
            return;
        }
    };
    let Some(cluster) = cluster else { return };
    let ca_pem = cluster
        .root_ca
        .as_ref()
        .map(|r| String::from_utf8_lossy(&r.ca_cert).trim().to_string())
        .unwrap_or_default();
    let current = shoal_pki::NodeCredentials::load(&cfg.state_dir)
        .ok()
        .filter(|c| c.ca_pem.trim() == ca_pem)
        .and_then(|c| c.info().ok())
        .is_some_and(|info| info.node_id == node_id);
    if current {
        return;
    }
    let issued = read_kek(&cfg.kek_file).and_then(|kek| {
        shoal_grpc_host::identity::issue_process_credentials(&cluster, &kek, node_id, &[])
    });
    match issued {
        Ok(creds) => match creds.store(&cfg.state_dir) {
            Ok(()) => tracing::info!(node = %node_id, "wrote this manager node's certificate"),
            Err(e) => tracing::warn!(error = %e, "cannot store this node's certificate"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot issue this node's certificate"),
    }
}

/// `swarm leave --force` on the last manager: erases every object of the swarm (the
/// cluster last, so watchers see the swarm end after its contents), and this manager's
/// node id. Managers still present elsewhere make it refuse: they hold the swarm.
pub async fn dissolve(state: &ClusterState, cfg: &ManagerConfig) -> Result<(), Status> {
    use shoal_proto::v1::{Config, Network, Secret, Service, Task};
    let store = &state.store;
    let own = load_node_id(&cfg.state_dir);
    let nodes = store.list::<Node>().await.map_err(store_status)?.objects;
    for node in nodes
        .iter()
        .filter(|n| n.role == NodeRole::Manager as i32 && Some(n.id()) != own.as_deref())
    {
        if store
            .leader(&presence_election(node.id()))
            .await
            .map_err(store_status)?
            .is_some()
        {
            return Err(Status::failed_precondition(format!(
                "manager {} is still part of the swarm: demote and remove this node from another manager instead of leaving",
                node.id()
            )));
        }
    }
    async fn erase<T: Object>(store: &Store) -> Result<(), Status> {
        let objects = store.list::<T>().await.map_err(store_status)?.objects;
        for result in store.delete_many(objects).await {
            match result {
                Ok(_) | Err(shoal_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_status(e)),
            }
        }
        Ok(())
    }
    erase::<Task>(store).await?;
    erase::<Service>(store).await?;
    erase::<Network>(store).await?;
    erase::<Secret>(store).await?;
    erase::<Config>(store).await?;
    erase::<Node>(store).await?;
    erase::<Cluster>(store).await?;
    let _ = std::fs::remove_file(cfg.state_dir.join(NODE_ID_FILE));
    tracing::warn!("this was the last manager: the swarm is dissolved");
    Ok(())
}
