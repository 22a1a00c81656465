//! Networks: overlay networks with Swarm's rules, and the references services make to
//! them.
//!
//! - A created network is stored with its spec as given (driver `overlay` when none is
//!   named) and its allocated IPAM (`crate::ipam`): the requested subnet, checked
//!   against every other network's, or the first free block of the cluster's pools.
//! - Subnets are allocated under a cluster-wide lock, an etcd election (`ipam`) whose
//!   fencing token guards the create: a manager reads the networks, picks a subnet and
//!   stores the network while nobody else can, so two managers never hand out the same
//!   (or an overlapping) subnet, and a manager that lost the lock mid-way cannot write.
//!   Removing a network only frees a subnet and needs no lock.
//! - Removal is refused while a service names the network, or a task meant to run is
//!   attached to it (a removed service's, until the orchestrator stops it); the ingress network while a service publishes ingress ports.
//! - Only labels change after creation; swarmkit has no network update at all.
//! - Services refer to networks by id, name or unique id prefix; the stored spec holds
//!   the id. The ingress network is never attached explicitly.
//! - Every network also gets a loopback subnet (`driver_state.options
//!   ["com.shoal.loopback.subnet"]`, in 127.128.0.0/9, the overlay's prefix length but
//!   never wider than /16), chosen under the same lock so no two networks share one:
//!   process tasks live there (`crate::ipam::loopback_subnet`).

use std::time::Duration;

use shoal_grpc_host::ClusterState;
use shoal_grpc_host::identity::CLUSTER_NAME;
use shoal_proto::v1::{
    Cluster, CreateNetworkRequest, Driver, Network, NetworkSpec, Service, ServiceSpec, Task,
    TaskState, UpdateNetworkRequest, port_config,
};
use shoal_store::{Election, Object, Store};
use tonic::Status;

use super::configs::validate_annotations;
use super::filters::{Lookup, lookup};
use super::store_status;
use crate::announce::announce;
use crate::ipam::{self, IpamError, Pools};

/// The routing-mesh network `swarm init` creates.
pub const INGRESS_NAME: &str = "ingress";
/// The only network driver shoal has.
pub const OVERLAY: &str = "overlay";

/// The election that serialises subnet allocation across managers.
const IPAM_LOCK: &str = "ipam";
/// How long a manager that died holding the lock keeps it.
const IPAM_LOCK_TTL: Duration = Duration::from_secs(5);
/// How long a create waits for the lock before giving up.
const IPAM_LOCK_WAIT: Duration = Duration::from_secs(15);

fn spec_name(spec: Option<&NetworkSpec>) -> &str {
    spec.and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// Swarm's test: the spec says so (or a legacy network named `ingress` carries
/// Docker's internal label).
pub fn is_ingress(network: &Network) -> bool {
    let Some(spec) = network.spec.as_ref() else {
        return false;
    };
    spec.ingress
        || (spec_name(Some(spec)) == INGRESS_NAME
            && spec
                .annotations
                .as_ref()
                .is_some_and(|a| a.labels.contains_key("com.docker.swarm.internal")))
}

/// Whether a service needs the routing mesh: it publishes a port in ingress mode.
pub fn needs_ingress(spec: &ServiceSpec) -> bool {
    spec.endpoint.as_ref().is_some_and(|e| {
        e.ports
            .iter()
            .any(|p| p.publish_mode == port_config::PublishMode::Ingress as i32)
    })
}

fn ipam_status(e: IpamError) -> Status {
    match e {
        IpamError::Exhausted | IpamError::LoopbackExhausted(_) => {
            Status::resource_exhausted(e.to_string())
        }
        e => Status::invalid_argument(e.to_string()),
    }
}

/// The ingress network of a new swarm: the first subnet of its pools.
pub fn ingress_network(pools: &Pools) -> Result<Network, Status> {
    let spec = NetworkSpec {
        annotations: Some(shoal_proto::v1::Annotations {
            name: INGRESS_NAME.into(),
            labels: Default::default(),
        }),
        driver_config: Some(Driver {
            name: OVERLAY.into(),
            options: Default::default(),
        }),
        ingress: true,
        ..Default::default()
    };
    let ipam = ipam::allocate(None, pools, &[]).map_err(ipam_status)?;
    new_network(spec, ipam, &[])
}

/// A network to store: its spec, its IPAM, and in its driver state the loopback subnet
/// its process tasks get (`com.shoal.loopback.subnet`), one no other network has.
fn new_network(
    spec: NetworkSpec,
    ipam: shoal_proto::v1::IpamOptions,
    existing: &[Network],
) -> Result<Network, Status> {
    let overlay = ipam
        .configs
        .first()
        .and_then(|c| crate::allocator::Subnet::parse(&c.subnet).ok())
        .ok_or_else(|| Status::internal("the allocated IPAM has no subnet"))?;
    let loopback = ipam::loopback_subnet(overlay, existing).map_err(ipam_status)?;
    Ok(Network {
        meta: None,
        spec: Some(spec),
        driver_state: Some(Driver {
            name: OVERLAY.into(),
            options: [(
                crate::allocator::LOOPBACK_SUBNET_OPTION.to_string(),
                loopback.to_string(),
            )]
            .into(),
        }),
        ipam: Some(ipam),
        pending_delete: false,
    })
}

/// Checks a spec as swarmkit does and names the overlay driver when none is.
fn validate_spec(spec: &mut NetworkSpec) -> Result<(), Status> {
    if spec.attachable && spec.ingress {
        return Err(Status::invalid_argument(
            "ingress network cannot be attachable",
        ));
    }
    validate_annotations(spec.annotations.as_ref())?;
    let driver = spec.driver_config.get_or_insert_with(Driver::default);
    if driver.name.is_empty() {
        driver.name = OVERLAY.into();
    }
    if driver.name != OVERLAY {
        if spec.ingress {
            return Err(Status::unimplemented(
                "only overlay driver is currently supported for ingress network",
            ));
        }
        return Err(Status::invalid_argument(format!(
            "plugin {} not supported: shoal networks use the overlay driver",
            driver.name
        )));
    }
    if spec.ipv6_enabled {
        return Err(Status::invalid_argument(
            "ipv6 networks are not supported: shoal networks are IPv4",
        ));
    }
    Ok(())
}

/// The cluster's address pools, as stored at `swarm init`.
async fn pools(store: &Store) -> Result<Pools, Status> {
    let cluster = match store.get_by_name::<Cluster>(CLUSTER_NAME).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => {
            return Err(Status::failed_precondition(
                "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node to swarm and try again.",
            ));
        }
        Err(e) => return Err(store_status(e)),
    };
    Pools::from_defaults(cluster.spec.as_ref().and_then(|s| s.ipam.as_ref()))
        .map_err(|e| Status::failed_precondition(format!("the cluster's address pools: {e}")))
}

pub async fn create(state: &ClusterState, req: CreateNetworkRequest) -> Result<Network, Status> {
    let mut spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: a network spec is required"))?;
    validate_spec(&mut spec)?;
    let pools = pools(&state.store).await?;

    let election = Election::new(
        &state.store,
        IPAM_LOCK,
        &shoal_store::new_id(),
        IPAM_LOCK_TTL,
    );
    let lock = tokio::time::timeout(IPAM_LOCK_WAIT, election.campaign())
        .await
        .map_err(|_| {
            Status::unavailable(
                "another manager is allocating a subnet and does not finish; try again",
            )
        })?
        .map_err(store_status)?;
    let created = allocate_and_store(&state.store.fenced(&lock), spec, &pools).await;
    if let Err(e) = lock.resign().await {
        tracing::warn!(error = %e, "could not give the ipam lock back; it expires with its lease");
    }
    let created = created?;
    let name = spec_name(created.spec.as_ref()).to_string();
    tracing::info!(id = %created.id(), %name, subnet = ?ipam::subnet_of(&created).map(|s| s.to_string()), "network created");
    announce(&state.bus, "create", &created, &name).await;
    Ok(created)
}

/// Reads the networks, allocates, stores: only ever run under the ipam lock, through a
/// store fenced on it.
async fn allocate_and_store(
    store: &Store,
    spec: NetworkSpec,
    pools: &Pools,
) -> Result<Network, Status> {
    let existing = store.list::<Network>().await.map_err(store_status)?.objects;
    if spec.ingress
        && let Some(ingress) = existing.iter().find(|n| is_ingress(n))
    {
        return Err(Status::already_exists(format!(
            "ingress network ({}) is already present",
            ingress.id()
        )));
    }
    let name = spec_name(Some(&spec)).to_string();
    if existing.iter().any(|n| spec_name(n.spec.as_ref()) == name) {
        return Err(name_taken(&name));
    }
    let ipam = ipam::allocate(spec.ipam.as_ref(), pools, &existing).map_err(ipam_status)?;
    store
        .create(new_network(spec, ipam, &existing)?)
        .await
        .map_err(|e| match e {
            shoal_store::Error::AlreadyExists { .. } => name_taken(&name),
            e => store_status(e),
        })
}

/// Docker's words for a taken network name.
fn name_taken(name: &str) -> Status {
    Status::already_exists(format!("network with name {name} already exists"))
}

pub async fn update(
    state: &ClusterState,
    current: Network,
    req: UpdateNetworkRequest,
) -> Result<Network, Status> {
    let version = req
        .network_version
        .ok_or_else(|| Status::invalid_argument("network_version: the version read is required"))?
        .index;
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: a network spec is required"))?;
    let old = current.spec.clone().unwrap_or_default();
    let unlabelled = |s: &NetworkSpec| {
        let mut s = s.clone();
        if let Some(a) = s.annotations.as_mut() {
            a.labels.clear();
        }
        s
    };
    if unlabelled(&spec) != unlabelled(&old) {
        return Err(Status::unimplemented(
            "only a network's labels can be updated; remove the network and create it again to change anything else",
        ));
    }
    let mut next = current;
    next.set_version(version);
    next.spec = Some(spec);
    let stored = state.store.update(next).await.map_err(store_status)?;
    let name = spec_name(stored.spec.as_ref()).to_string();
    announce(&state.bus, "update", &stored, &name).await;
    Ok(stored)
}

pub async fn remove(state: &ClusterState, network: Network) -> Result<(), Status> {
    let id = network.id().to_string();
    let store = &state.store;
    let services = store.list::<Service>().await.map_err(store_status)?.objects;
    if is_ingress(&network) {
        if let Some(s) = services
            .iter()
            .find(|s| s.spec.as_ref().is_some_and(needs_ingress))
        {
            return Err(Status::failed_precondition(format!(
                "ingress network cannot be removed because service {} depends on it",
                s.id()
            )));
        }
    } else {
        if let Some(s) = services.iter().find(|s| references(s, &id)) {
            return Err(Status::failed_precondition(format!(
                "network {id} is in use by service {}",
                s.id()
            )));
        }
        // A removed service's tasks may still run on the network.
        let tasks = store.list::<Task>().await.map_err(store_status)?.objects;
        if let Some(t) = tasks.iter().find(|t| attached_and_live(t, &id)) {
            return Err(Status::failed_precondition(format!(
                "network {id} is in use by task {}",
                t.id()
            )));
        }
    }
    let removed = store
        .delete::<Network>(&id, Some(network.version()))
        .await
        .map_err(|e| match e {
            shoal_store::Error::NotFound { .. } => {
                Status::not_found(format!("network {id} not found"))
            }
            e => store_status(e),
        })?;
    let name = spec_name(removed.spec.as_ref()).to_string();
    tracing::info!(%id, %name, "network removed");
    announce(&state.bus, "remove", &removed, &name).await;
    Ok(())
}

fn references(service: &Service, network_id: &str) -> bool {
    let Some(spec) = service.spec.as_ref() else {
        return false;
    };
    spec.networks
        .iter()
        .chain(spec.task.iter().flat_map(|t| &t.networks))
        .any(|n| n.target == network_id)
}

/// swarmkit's rule: a task attached to the network uses it while it is meant to run and
/// has not ended.
fn attached_and_live(task: &Task, network_id: &str) -> bool {
    let running = TaskState::Running as i32;
    let state = task.status.as_ref().map(|s| s.state).unwrap_or_default();
    (task.desired_state <= running && state <= running)
        && task
            .networks
            .iter()
            .any(|a| a.network.as_ref().is_some_and(|n| n.id() == network_id))
}

/// Resolves every network a service spec attaches to (id, name or unique id prefix) and
/// stores the id in its place; refuses unknown networks and the ingress network, and a
/// service publishing ingress ports when there is no ingress network.
pub async fn resolve_attachments(store: &Store, spec: &mut ServiceSpec) -> Result<(), Status> {
    let ingress_needed = needs_ingress(spec);
    let task_networks = spec.task.iter_mut().flat_map(|t| t.networks.iter_mut());
    let mut attachments: Vec<_> = spec.networks.iter_mut().chain(task_networks).collect();
    if attachments.is_empty() && !ingress_needed {
        return Ok(());
    }
    let networks = store.list::<Network>().await.map_err(store_status)?.objects;
    for attachment in attachments.iter_mut() {
        match lookup(&networks, &attachment.target) {
            Lookup::Found(n) if is_ingress(n) => {
                return Err(Status::invalid_argument(format!(
                    "Service cannot be explicitly attached to the ingress network \"{}\"",
                    spec_name(n.spec.as_ref())
                )));
            }
            Lookup::Found(n) => attachment.target = n.id().to_string(),
            Lookup::NotFound => {
                return Err(Status::invalid_argument(format!(
                    "network {} not found",
                    attachment.target
                )));
            }
            Lookup::Ambiguous(count) => {
                return Err(Status::invalid_argument(format!(
                    "network {} is ambiguous ({count} matches found)",
                    attachment.target
                )));
            }
        }
    }
    if ingress_needed && !networks.iter().any(is_ingress) {
        return Err(Status::failed_precondition(
            "service needs ingress network, but no ingress network is present",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        Annotations, EndpointSpec, Meta, NetworkAttachment, PortConfig, TaskStatus,
    };

    fn spec(name: &str) -> NetworkSpec {
        NetworkSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn specs_get_the_overlay_driver_and_swarms_checks() {
        let mut s = spec("mynet");
        validate_spec(&mut s).expect("valid");
        assert_eq!(s.driver_config.map(|d| d.name).as_deref(), Some("overlay"));

        let mut bridge = spec("b");
        bridge.driver_config = Some(Driver {
            name: "bridge".into(),
            ..Default::default()
        });
        let err = validate_spec(&mut bridge).expect_err("bridge");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("bridge"), "{}", err.message());

        let mut both = spec("i");
        both.ingress = true;
        both.attachable = true;
        let err = validate_spec(&mut both).expect_err("attachable ingress");
        assert_eq!(err.message(), "ingress network cannot be attachable");

        let err = validate_spec(&mut spec("-bad")).expect_err("name");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = validate_spec(&mut spec("")).expect_err("no name");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn the_ingress_network_takes_the_pools_first_subnet() {
        let pools = Pools::from_defaults(Some(&shoal_proto::v1::IpamDefaults {
            default_address_pool: vec!["10.20.0.0/16".into()],
            subnet_size: 26,
        }))
        .expect("valid");
        let n = ingress_network(&pools).expect("ingress");
        assert!(is_ingress(&n));
        assert_eq!(spec_name(n.spec.as_ref()), "ingress");
        let config = &n.ipam.as_ref().expect("ipam").configs[0];
        assert_eq!(
            (config.subnet.as_str(), config.gateway.as_str()),
            ("10.20.0.0/26", "10.20.0.1")
        );
    }

    #[test]
    fn live_tasks_and_ingress_ports_hold_networks() {
        let net = Network {
            meta: Some(Meta {
                id: "n1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let task = |desired: TaskState, state: TaskState| Task {
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            networks: vec![NetworkAttachment {
                network: Some(net.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(attached_and_live(
            &task(TaskState::Running, TaskState::Running),
            "n1"
        ));
        assert!(!attached_and_live(
            &task(TaskState::Shutdown, TaskState::Running),
            "n1"
        ));
        assert!(attached_and_live(
            &task(TaskState::Running, TaskState::Pending),
            "n1"
        ));
        assert!(!attached_and_live(
            &task(TaskState::Shutdown, TaskState::Shutdown),
            "n1"
        ));
        assert!(!attached_and_live(
            &task(TaskState::Running, TaskState::Running),
            "n2"
        ));

        let mut s = ServiceSpec::default();
        assert!(!needs_ingress(&s));
        s.endpoint = Some(EndpointSpec {
            ports: vec![PortConfig {
                target_port: 80,
                publish_mode: port_config::PublishMode::Host as i32,
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(!needs_ingress(&s));
        if let Some(e) = s.endpoint.as_mut() {
            e.ports[0].publish_mode = port_config::PublishMode::Ingress as i32;
        }
        assert!(needs_ingress(&s));
    }
}
