//! The network allocator's bookkeeping (issue 6, leader only): one VIP per service per
//! network it joins (endpoint mode vip), one address per task per network, published
//! ingress ports (explicit, or from the dynamic range 30000–32767).
//!
//! Every network has two address pools: its overlay subnet (`ipam.configs[0]`), where
//! container tasks and the VIPs of container services live, and its loopback subnet
//! (`driver_state.options["com.shoal.loopback.subnet"]`, inside 127.128.0.0/9), where
//! process tasks and the VIPs of process services live — so every stored address is
//! usable on the host that runs the task.
//!
//! [`Allocator`] is rebuilt from the store's objects at every leadership term
//! ([`Allocator::rebuild`]): whatever the services' endpoints and the live tasks hold
//! is taken, so allocations survive a leader change and nothing is handed out twice.
//! It does no I/O. Every address is held by one *owner* (a service's VIPs, a task's
//! attachments) and only that owner's release frees it, so a late or repeated release
//! never frees an address someone else got since. The controller that runs it works in
//! two steps per write: `allocate_*` takes what the new object needs *in addition* to
//! what its owner holds; once the write is known to have landed (or known to have
//! failed) `retain_*` keeps exactly what the stored object holds and frees the rest.

pub mod pool;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use shoal_proto::TaskStateExt;
use shoal_proto::v1::endpoint::VirtualIp;
use shoal_proto::v1::endpoint_spec::ResolutionMode;
use shoal_proto::v1::port_config::PublishMode;
use shoal_proto::v1::{
    Endpoint, Network, NetworkAttachment, PortConfig, Service, Task, TaskSpec, TaskState, task_spec,
};

pub use pool::{AddressPool, PortKey, PortPool, Subnet, address_of};

/// The key of a network's loopback subnet in `Network.driver_state.options`.
pub const LOOPBACK_SUBNET_OPTION: &str = "com.shoal.loopback.subnet";
/// Where loopback subnets come from: 127.128.0.0/9 (127.0.0.0/9 stays the host's:
/// 127.0.0.1, the workers' own 127.0.x.y addresses).
pub const LOOPBACK_POOL: &str = "127.128.0.0/9";
/// The widest loopback subnet a network gets.
pub const LOOPBACK_WIDEST: u8 = 16;

/// Why an allocation could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("network {0} has no free address left")]
    NetworkFull(String),
    #[error("network {0} has no loopback subnet for process tasks")]
    NoLoopbackSubnet(String),
    #[error("port '{port}' is already in use by service '{owner}'")]
    PortInUse { port: u32, owner: String },
    #[error("no free port left in the dynamic range 30000-32767")]
    NoDynamicPort,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    /// A service's VIPs.
    Service(String),
    /// A task's attachments.
    Task(String),
}

/// (network id, address)
type Held = BTreeSet<(String, Ipv4Addr)>;

#[derive(Debug, Clone)]
struct NetworkPools {
    network: Network,
    overlay: AddressPool,
    loopback: Option<AddressPool>,
}

impl NetworkPools {
    fn pool(&mut self, process: bool) -> Option<&mut AddressPool> {
        if process {
            self.loopback.as_mut()
        } else {
            Some(&mut self.overlay)
        }
    }

    fn subnet(&self, process: bool) -> Option<Subnet> {
        if process {
            self.loopback.as_ref().map(AddressPool::subnet)
        } else {
            Some(self.overlay.subnet())
        }
    }

    fn pool_containing(&mut self, ip: Ipv4Addr) -> Option<&mut AddressPool> {
        if self.overlay.subnet().contains(ip) {
            return Some(&mut self.overlay);
        }
        self.loopback.as_mut().filter(|p| p.subnet().contains(ip))
    }

    fn in_use(&self) -> usize {
        self.overlay.in_use() + self.loopback.as_ref().map_or(0, AddressPool::in_use)
    }
}

/// The allocation state of the whole cluster.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    networks: HashMap<String, NetworkPools>,
    ingress: Option<String>,
    ports: PortPool,
    held: HashMap<Owner, Held>,
}

fn network_id(n: &Network) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn service_id(s: &Service) -> &str {
    s.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn task_id(t: &Task) -> &str {
    t.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// The network's allocated subnet and gateway (`ipam.configs[0]`).
fn subnet_of(n: &Network) -> Option<(Subnet, Option<Ipv4Addr>)> {
    let config = n.ipam.as_ref()?.configs.first()?;
    let subnet = Subnet::parse(&config.subnet).ok()?;
    let gateway = config.gateway.parse().ok();
    Some((subnet, gateway))
}

/// The network's loopback subnet (`driver_state.options["com.shoal.loopback.subnet"]`).
pub fn loopback_subnet_of(n: &Network) -> Option<Subnet> {
    n.driver_state
        .as_ref()?
        .options
        .get(LOOPBACK_SUBNET_OPTION)
        .and_then(|s| Subnet::parse(s).ok())
}

/// Whether tasks of this spec run as host processes (their addresses are loopback
/// ones).
pub fn is_process(spec: Option<&TaskSpec>) -> bool {
    matches!(
        spec.and_then(|t| t.runtime.as_ref()),
        Some(task_spec::Runtime::Process(_))
    )
}

/// Whether a task still holds its addresses: until it is known to have stopped.
pub fn holds_addresses(t: &Task) -> bool {
    t.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .is_none_or(|s| s.is_live())
}

/// The ingress-published ports of a service spec.
fn ingress_ports(service: &Service) -> Vec<PortConfig> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.endpoint.as_ref())
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| p.publish_mode == PublishMode::Ingress as i32)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn port_key(p: &PortConfig) -> PortKey {
    PortKey {
        protocol: p.protocol,
        port: p.published_port,
    }
}

/// The ingress ports an endpoint holds.
fn held_ports(endpoint: Option<&Endpoint>) -> Vec<PortKey> {
    endpoint
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| p.publish_mode == PublishMode::Ingress as i32 && p.published_port != 0)
                .map(port_key)
                .collect()
        })
        .unwrap_or_default()
}

fn vips_of(endpoint: Option<&Endpoint>) -> Held {
    endpoint
        .map(|e| {
            e.virtual_ips
                .iter()
                .filter_map(|v| address_of(&v.addr).map(|ip| (v.network_id.clone(), ip)))
                .collect()
        })
        .unwrap_or_default()
}

impl Allocator {
    /// The state the stored objects describe: every network's pools, the VIPs in the
    /// services' endpoints, the addresses of tasks that have not stopped, and the
    /// published ports.
    pub fn rebuild(networks: &[Network], services: &[Service], tasks: &[Task]) -> Self {
        let mut a = Allocator::default();
        for n in networks {
            a.add_network(n.clone());
        }
        for s in services {
            let id = service_id(s).to_string();
            for (net, ip) in vips_of(s.endpoint.as_ref()) {
                if !a.hold(&Owner::Service(id.clone()), &net, ip) {
                    tracing::warn!(service.id = %id, network.id = %net, %ip, "stored VIP not reserved: outside its network or held twice");
                }
            }
            for key in held_ports(s.endpoint.as_ref()) {
                if let Err(owner) = a.ports.claim(key, &id) {
                    tracing::warn!(service.id = %id, port = key.port, %owner, "stored published port held by two services");
                }
            }
        }
        for t in tasks {
            a.observe_task(t);
        }
        a
    }

    /// Takes a network (created, or seen for the first time); a known one only has its
    /// stored copy refreshed.
    pub fn add_network(&mut self, n: Network) {
        let id = network_id(&n).to_string();
        if id.is_empty() {
            return;
        }
        if let Some(np) = self.networks.get_mut(&id) {
            np.network = n;
            return;
        }
        let Some((subnet, gateway)) = subnet_of(&n) else {
            return;
        };
        if n.spec.as_ref().is_some_and(|s| s.ingress) {
            self.ingress = Some(id.clone());
        }
        let loopback = loopback_subnet_of(&n).map(|s| AddressPool::new(s, None));
        self.networks.insert(
            id,
            NetworkPools {
                overlay: AddressPool::new(subnet, gateway),
                loopback,
                network: n,
            },
        );
    }

    /// Forgets a removed network.
    pub fn remove_network(&mut self, id: &str) {
        self.networks.remove(id);
        if self.ingress.as_deref() == Some(id) {
            self.ingress = None;
        }
    }

    /// Whether the network is known.
    pub fn has_network(&self, id: &str) -> bool {
        self.networks.contains_key(id)
    }

    /// Marks `ip` on `net` as `owner`'s. False when it is outside the network's pools
    /// or someone else holds it.
    fn hold(&mut self, owner: &Owner, net: &str, ip: Ipv4Addr) -> bool {
        let key = (net.to_string(), ip);
        if self.held.get(owner).is_some_and(|h| h.contains(&key)) {
            return true;
        }
        let Some(pool) = self
            .networks
            .get_mut(net)
            .and_then(|n| n.pool_containing(ip))
        else {
            return false;
        };
        if !pool.reserve(ip) {
            return false;
        }
        self.held.entry(owner.clone()).or_default().insert(key);
        true
    }

    /// Hands `owner` a fresh address on `net` (its loopback pool for a process).
    fn take(&mut self, owner: &Owner, net: &str, process: bool) -> Result<String, AllocError> {
        let np = self
            .networks
            .get_mut(net)
            .ok_or_else(|| AllocError::NoSuchNetwork(net.to_string()))?;
        let pool = np
            .pool(process)
            .ok_or_else(|| AllocError::NoLoopbackSubnet(net.to_string()))?;
        let ip = pool
            .allocate()
            .ok_or_else(|| AllocError::NetworkFull(net.to_string()))?;
        let cidr = pool.subnet().with_prefix(ip);
        self.held
            .entry(owner.clone())
            .or_default()
            .insert((net.to_string(), ip));
        Ok(cidr)
    }

    /// Frees what `owner` holds outside `keep`.
    /// Gives back what a failed allocation took for `owner` (`fresh`), keeping what
    /// it held before.
    fn undo_fresh(&mut self, owner: &Owner, fresh: &Held) {
        let keep: Held = self
            .held
            .get(owner)
            .map(|h| h.difference(fresh).cloned().collect())
            .unwrap_or_default();
        self.retain(owner, &keep);
    }

    fn retain(&mut self, owner: &Owner, keep: &Held) {
        let Some(held) = self.held.get_mut(owner) else {
            return;
        };
        let gone: Vec<(String, Ipv4Addr)> = held.difference(keep).cloned().collect();
        for g in &gone {
            held.remove(g);
        }
        if held.is_empty() {
            self.held.remove(owner);
        }
        for (net, ip) in gone {
            if let Some(pool) = self
                .networks
                .get_mut(&net)
                .and_then(|n| n.pool_containing(ip))
            {
                pool.release(ip);
            }
        }
    }

    /// The networks (ids) a service's tasks join: its task spec's networks, then the
    /// ingress network when it publishes ingress ports.
    pub fn networks_of(&self, service: &Service) -> Vec<String> {
        let spec = service.spec.as_ref();
        let mut ids: Vec<String> = Vec::new();
        let targets = spec
            .and_then(|s| s.task.as_ref())
            .map(|t| t.networks.as_slice())
            .unwrap_or_default()
            .iter()
            .chain(spec.map(|s| s.networks.as_slice()).unwrap_or_default());
        for n in targets {
            if !ids.contains(&n.target) {
                ids.push(n.target.clone());
            }
        }
        if !ingress_ports(service).is_empty()
            && let Some(ingress) = &self.ingress
            && !ids.contains(ingress)
        {
            ids.push(ingress.clone());
        }
        ids
    }

    /// The service's endpoint as it should be: a VIP on each of its networks (vip
    /// mode; kept when already allocated in the right pool), its published ports with
    /// numbers (explicit ones claimed, dynamic ones kept from before or taken from
    /// 30000–32767). What it takes is held in addition to what the service held; call
    /// [`Allocator::retain_service`] once the store holds the result (or is known not
    /// to). On error nothing is changed.
    pub fn allocate_service(&mut self, service: &Service) -> Result<Endpoint, AllocError> {
        let id = service_id(service).to_string();
        let owner = Owner::Service(id.clone());
        let spec_endpoint = service.spec.as_ref().and_then(|s| s.endpoint.clone());
        let vip_mode = spec_endpoint
            .as_ref()
            .is_none_or(|e| e.mode == ResolutionMode::Vip as i32);
        let process = is_process(service.spec.as_ref().and_then(|s| s.task.as_ref()));
        let current = service.endpoint.clone().unwrap_or_default();
        let wanted_networks = self.networks_of(service);
        for n in &wanted_networks {
            let np = self
                .networks
                .get(n)
                .ok_or_else(|| AllocError::NoSuchNetwork(n.clone()))?;
            if np.subnet(process).is_none() {
                return Err(AllocError::NoLoopbackSubnet(n.clone()));
            }
        }

        let mut claimed: Vec<PortKey> = Vec::new();
        let ports = match self.allocate_ports(&id, spec_endpoint.as_ref(), &current, &mut claimed) {
            Ok(p) => p,
            Err(e) => {
                for k in claimed {
                    self.ports.release(k, &id);
                }
                return Err(e);
            }
        };

        // VIPs: kept where they are, new ones allocated.
        let mut vips: Vec<VirtualIp> = Vec::new();
        let mut fresh: Held = BTreeSet::new();
        if vip_mode {
            for n in &wanted_networks {
                let subnet = self.networks.get(n).and_then(|np| np.subnet(process));
                let kept = current.virtual_ips.iter().find(|v| {
                    &v.network_id == n
                        && address_of(&v.addr)
                            .is_some_and(|ip| subnet.is_some_and(|s| s.contains(ip)))
                });
                if let Some(v) = kept
                    && let Some(ip) = address_of(&v.addr)
                    && self.hold(&owner, n, ip)
                {
                    vips.push(v.clone());
                    continue;
                }
                match self.take(&owner, n, process) {
                    Ok(addr) => {
                        if let Some(ip) = address_of(&addr) {
                            fresh.insert((n.clone(), ip));
                        }
                        vips.push(VirtualIp {
                            network_id: n.clone(),
                            addr,
                        });
                    }
                    Err(e) => {
                        self.undo_fresh(&owner, &fresh);
                        for k in claimed {
                            self.ports.release(k, &id);
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(Endpoint {
            spec: spec_endpoint,
            ports,
            virtual_ips: vips,
        })
    }

    /// The spec's ports with published numbers. Explicit ingress ones are claimed
    /// first (a dynamic one never takes a number the spec names), then each ingress
    /// port given without a number keeps the dynamic port it had (same target and
    /// protocol) or gets a free one of 30000–32767. Ports newly claimed are added to
    /// `claimed`.
    fn allocate_ports(
        &mut self,
        id: &str,
        spec: Option<&shoal_proto::v1::EndpointSpec>,
        current: &Endpoint,
        claimed: &mut Vec<PortKey>,
    ) -> Result<Vec<PortConfig>, AllocError> {
        let ingress = PublishMode::Ingress as i32;
        let spec_ports: Vec<PortConfig> = spec.map(|e| e.ports.clone()).unwrap_or_default();
        let named: Vec<PortKey> = spec_ports
            .iter()
            .filter(|p| p.publish_mode == ingress && p.published_port != 0)
            .map(port_key)
            .collect();
        for key in &named {
            let fresh = self.ports.owner(*key).is_none();
            self.ports
                .claim(*key, id)
                .map_err(|owner| AllocError::PortInUse {
                    port: key.port,
                    owner,
                })?;
            if fresh {
                claimed.push(*key);
            }
        }
        let mut chosen: Vec<PortKey> = Vec::new();
        let mut ports = spec_ports;
        for p in ports
            .iter_mut()
            .filter(|p| p.publish_mode == ingress && p.published_port == 0)
        {
            let before = current
                .ports
                .iter()
                .filter(|q| {
                    q.publish_mode == ingress
                        && q.target_port == p.target_port
                        && q.protocol == p.protocol
                        && pool::DYNAMIC_PORTS.contains(&q.published_port)
                })
                .map(port_key)
                .find(|k| {
                    !chosen.contains(k)
                        && !named.contains(k)
                        && self.ports.owner(*k).is_none_or(|o| o == id)
                });
            let key = match before {
                Some(k) => {
                    if self.ports.owner(k).is_none() {
                        claimed.push(k);
                    }
                    let _ = self.ports.claim(k, id);
                    k
                }
                None => {
                    let port = self
                        .ports
                        .claim_dynamic(p.protocol, id)
                        .ok_or(AllocError::NoDynamicPort)?;
                    let k = PortKey {
                        protocol: p.protocol,
                        port,
                    };
                    claimed.push(k);
                    k
                }
            };
            p.published_port = key.port;
            chosen.push(key);
        }
        Ok(ports)
    }

    /// The service's endpoint as stored is `endpoint`: it keeps exactly those VIPs and
    /// ports, the rest it held is freed.
    pub fn retain_service(&mut self, service_id: &str, endpoint: Option<&Endpoint>) {
        self.retain(&Owner::Service(service_id.to_string()), &vips_of(endpoint));
        self.ports.retain_service(service_id, &held_ports(endpoint));
    }

    /// Frees a removed service's VIPs and ports.
    pub fn release_service(&mut self, service_id: &str) {
        self.retain_service(service_id, None);
    }

    /// The task's network attachments: one address on each of its service's networks
    /// (kept when the task already has one there, in the right pool), from the loopback
    /// pool when the task runs as a process. What it takes is held in addition to what
    /// the task held; see [`Allocator::retain_task`]. On error nothing is changed.
    pub fn allocate_task(
        &mut self,
        task: &Task,
        service: &Service,
    ) -> Result<Vec<NetworkAttachment>, AllocError> {
        let owner = Owner::Task(task_id(task).to_string());
        let spec = task
            .spec
            .as_ref()
            .or_else(|| service.spec.as_ref().and_then(|s| s.task.as_ref()));
        let process = is_process(spec);
        let aliases_of = |net: &str| -> Vec<String> {
            let spec = service.spec.as_ref();
            spec.and_then(|s| s.task.as_ref())
                .map(|t| t.networks.as_slice())
                .unwrap_or_default()
                .iter()
                .chain(spec.map(|s| s.networks.as_slice()).unwrap_or_default())
                .find(|n| n.target == net)
                .map(|n| n.aliases.clone())
                .unwrap_or_default()
        };
        let mut out: Vec<NetworkAttachment> = Vec::new();
        let mut fresh: Held = BTreeSet::new();
        for n in self.networks_of(service) {
            let subnet = self.networks.get(&n).and_then(|np| np.subnet(process));
            let have = task.networks.iter().find(|a| {
                a.network.as_ref().map(network_id) == Some(n.as_str())
                    && !a.addresses.is_empty()
                    && a.addresses.iter().all(|s| {
                        address_of(s).is_some_and(|ip| subnet.is_some_and(|sub| sub.contains(ip)))
                    })
            });
            if let Some(have) = have
                && have
                    .addresses
                    .iter()
                    .filter_map(|s| address_of(s))
                    .all(|ip| self.hold(&owner, &n, ip))
            {
                out.push(have.clone());
                continue;
            }
            match self.take(&owner, &n, process) {
                Ok(addr) => {
                    if let Some(ip) = address_of(&addr) {
                        fresh.insert((n.clone(), ip));
                    }
                    let network = self.networks.get(&n).map(|np| np.network.clone());
                    out.push(NetworkAttachment {
                        network,
                        addresses: vec![addr],
                        aliases: aliases_of(&n),
                    });
                }
                Err(e) => {
                    self.undo_fresh(&owner, &fresh);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// The task as stored has `attachments`: it keeps exactly those addresses.
    pub fn retain_task(&mut self, task_id: &str, attachments: &[NetworkAttachment]) {
        self.retain(&Owner::Task(task_id.to_string()), &addresses(attachments));
    }

    /// Frees a task's addresses (it stopped, or was deleted).
    pub fn release_task(&mut self, task_id: &str) {
        self.retain(&Owner::Task(task_id.to_string()), &BTreeSet::new());
    }

    /// A task as the store shows it: one that stopped frees its addresses; a live one
    /// holds the addresses it carries (a no-op for those it holds already).
    pub fn observe_task(&mut self, task: &Task) {
        let id = task_id(task);
        if !holds_addresses(task) {
            self.release_task(id);
            return;
        }
        let owner = Owner::Task(id.to_string());
        for (net, ip) in addresses(&task.networks) {
            if !self.hold(&owner, &net, ip) && self.networks.contains_key(&net) {
                tracing::warn!(task.id = %id, network.id = %net, %ip, "a task's stored address is not reserved: outside its network or held twice");
            }
        }
    }

    /// How many addresses are held on network `id` (for checks and tests).
    pub fn in_use(&self, id: &str) -> usize {
        self.networks.get(id).map_or(0, NetworkPools::in_use)
    }

    /// Who holds published port `key` (a service id).
    pub fn port_owner(&self, key: PortKey) -> Option<&str> {
        self.ports.owner(key)
    }
}

/// The addresses (without prefix) a list of attachments holds, by network id.
pub fn addresses(attachments: &[NetworkAttachment]) -> BTreeSet<(String, Ipv4Addr)> {
    attachments
        .iter()
        .flat_map(|a| {
            let net = a
                .network
                .as_ref()
                .map(|n| network_id(n).to_string())
                .unwrap_or_default();
            a.addresses
                .iter()
                .filter_map(move |s| address_of(s).map(|ip| (net.clone(), ip)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        EndpointSpec, IpamConfig, IpamOptions, Meta, NetworkAttachmentConfig, NetworkSpec,
        ServiceSpec, TaskSpec, TaskStatus, port_config::Protocol,
    };

    fn network(id: &str, subnet: &str, ingress: bool) -> Network {
        Network {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                ingress,
                ..Default::default()
            }),
            ipam: Some(IpamOptions {
                driver: None,
                configs: vec![IpamConfig {
                    subnet: subnet.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    fn service(id: &str, networks: &[&str], ports: Vec<PortConfig>) -> Service {
        Service {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                task: Some(TaskSpec {
                    networks: networks
                        .iter()
                        .map(|n| NetworkAttachmentConfig {
                            target: n.to_string(),
                            aliases: vec![format!("{id}-alias")],
                            addresses: vec![],
                        })
                        .collect(),
                    ..Default::default()
                }),
                endpoint: Some(EndpointSpec {
                    mode: ResolutionMode::Vip as i32,
                    ports,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(target: u32, published: u32) -> PortConfig {
        PortConfig {
            protocol: Protocol::Tcp as i32,
            target_port: target,
            published_port: published,
            publish_mode: PublishMode::Ingress as i32,
            ..Default::default()
        }
    }

    fn cluster() -> Allocator {
        Allocator::rebuild(
            &[
                network("ing", "10.0.0.0/24", true),
                network("mynet", "10.0.1.0/24", false),
            ],
            &[],
            &[],
        )
    }

    #[test]
    fn a_service_gets_a_vip_per_network_and_its_ports() {
        let mut a = cluster();
        let web = service("web", &["mynet"], vec![port(80, 8080), port(443, 0)]);
        let ep = a.allocate_service(&web).expect("allocated");
        let vips: Vec<(&str, &str)> = ep
            .virtual_ips
            .iter()
            .map(|v| (v.network_id.as_str(), v.addr.as_str()))
            .collect();
        assert_eq!(vips, vec![("mynet", "10.0.1.2/24"), ("ing", "10.0.0.2/24")]);
        let published: Vec<u32> = ep.ports.iter().map(|p| p.published_port).collect();
        assert_eq!(published, vec![8080, 30000]);
        // Allocating again with the endpoint stored keeps everything.
        let mut stored = web.clone();
        stored.endpoint = Some(ep.clone());
        assert_eq!(a.allocate_service(&stored).expect("again"), ep);
        assert_eq!(a.in_use("mynet"), 1);
    }

    #[test]
    fn a_taken_published_port_names_its_owner_and_changes_nothing() {
        let mut a = cluster();
        let web = service("web", &[], vec![port(80, 8080)]);
        a.allocate_service(&web).expect("web");
        let api = service("api", &["mynet"], vec![port(80, 8080)]);
        let err = a.allocate_service(&api).expect_err("conflict");
        assert_eq!(
            err.to_string(),
            "port '8080' is already in use by service 'web'"
        );
        assert_eq!(a.in_use("mynet"), 0, "no VIP kept for the refused service");
        a.release_service("web");
        assert!(a.allocate_service(&api).is_ok(), "free once web is gone");
    }

    #[test]
    fn tasks_get_one_address_per_network_and_rebuild_sees_them() {
        let mut a = cluster();
        let web = service("web", &["mynet"], vec![port(80, 8080)]);
        let mut stored = web.clone();
        stored.endpoint = Some(a.allocate_service(&web).expect("web"));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let mut t = Task {
                meta: Some(Meta {
                    id: format!("t{i}"),
                    ..Default::default()
                }),
                service_id: "web".into(),
                status: Some(TaskStatus {
                    state: TaskState::Running as i32,
                    ..Default::default()
                }),
                ..Default::default()
            };
            t.networks = a.allocate_task(&t, &stored).expect("addresses");
            assert_eq!(t.networks.len(), 2);
            assert_eq!(t.networks[0].aliases, vec!["web-alias".to_string()]);
            tasks.push(t);
        }
        let held: BTreeSet<(String, Ipv4Addr)> =
            tasks.iter().flat_map(|t| addresses(&t.networks)).collect();
        assert_eq!(held.len(), 6, "all distinct");
        // A new leader rebuilds the same picture: nothing handed out twice.
        let mut b = Allocator::rebuild(
            &[
                network("ing", "10.0.0.0/24", true),
                network("mynet", "10.0.1.0/24", false),
            ],
            std::slice::from_ref(&stored),
            &tasks,
        );
        assert_eq!(b.in_use("mynet"), 4, "1 VIP + 3 tasks");
        let next = Task::default();
        let fresh = b.allocate_task(&next, &stored).expect("more");
        for pair in addresses(&fresh) {
            assert!(!held.contains(&pair), "{pair:?} handed out twice");
        }
        // A stopped task's addresses are free again at the next rebuild.
        if let Some(s) = tasks[0].status.as_mut() {
            s.state = TaskState::Shutdown as i32;
        }
        let c = Allocator::rebuild(
            &[
                network("ing", "10.0.0.0/24", true),
                network("mynet", "10.0.1.0/24", false),
            ],
            std::slice::from_ref(&stored),
            &tasks,
        );
        assert_eq!(c.in_use("mynet"), 3);
    }

    fn task(id: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_late_release_never_frees_an_address_someone_else_got_since() {
        let mut a = Allocator::rebuild(&[network("n", "10.0.5.0/29", false)], &[], &[]);
        let svc = service("s", &["n"], vec![]);
        // /29: .2 ..= .6 (.1 is the gateway).
        let first = a.allocate_task(&task("t1"), &svc).expect("room");
        a.release_task("t1");
        let mut others = Vec::new();
        for i in 0..5 {
            let id = format!("o{i}");
            others.push(a.allocate_task(&task(&id), &svc).expect("room"));
        }
        assert!(
            others.iter().any(|o| addresses(o) == addresses(&first)),
            "t1's address went round to someone else"
        );
        a.release_task("t1");
        a.retain_task("t1", &[]);
        assert_eq!(a.in_use("n"), 5, "t1's late releases freed nothing");
        assert!(a.allocate_task(&task("t9"), &svc).is_err(), "still full");
    }

    #[test]
    fn a_failed_endpoint_write_frees_only_what_the_attempt_took() {
        let mut a = cluster();
        let web = service("web", &["mynet"], vec![]);
        let mut stored = web.clone();
        stored.endpoint = Some(a.allocate_service(&web).expect("web"));
        a.retain_service("web", stored.endpoint.as_ref());
        assert_eq!((a.in_use("mynet"), a.in_use("ing")), (1, 0));
        // --publish-add 8080:80, the write fails: back to what the store holds.
        let mut published = stored.clone();
        if let Some(e) = published.spec.as_mut().and_then(|s| s.endpoint.as_mut()) {
            e.ports = vec![port(80, 8080)];
        }
        let ep = a.allocate_service(&published).expect("allocated");
        assert_eq!(ep.virtual_ips.len(), 2);
        assert_eq!(
            ep.virtual_ips[0],
            stored.endpoint.clone().unwrap_or_default().virtual_ips[0]
        );
        assert_eq!(a.in_use("ing"), 1);
        a.retain_service("web", stored.endpoint.as_ref());
        assert_eq!((a.in_use("mynet"), a.in_use("ing")), (1, 0));
        assert_eq!(
            a.port_owner(PortKey {
                protocol: Protocol::Tcp as i32,
                port: 8080
            }),
            None
        );
        // Dynamic ports are kept across updates of the service.
        if let Some(e) = published.spec.as_mut().and_then(|s| s.endpoint.as_mut()) {
            e.ports = vec![port(80, 0), port(81, 0)];
        }
        let first = a.allocate_service(&published).expect("dynamic");
        a.retain_service("web", Some(&first));
        published.endpoint = Some(first.clone());
        if let Some(e) = published.spec.as_mut().and_then(|s| s.endpoint.as_mut()) {
            e.ports.remove(0);
        }
        let second = a.allocate_service(&published).expect("again");
        assert_eq!(
            second.ports[0].published_port,
            first.ports[1].published_port
        );
        a.retain_service("web", Some(&second));
        assert_eq!(
            a.port_owner(PortKey {
                protocol: Protocol::Tcp as i32,
                port: first.ports[0].published_port
            }),
            None,
            "the port no longer published is free"
        );
    }

    #[test]
    fn process_tasks_and_vips_come_from_the_loopback_subnet() {
        let mut lo = network("lo", "10.0.7.0/24", false);
        lo.driver_state = Some(shoal_proto::v1::Driver {
            name: "overlay".into(),
            options: [(LOOPBACK_SUBNET_OPTION.to_string(), "127.128.3.0/24".into())].into(),
        });
        let legacy = network("legacy", "10.0.8.0/24", false);
        let mut a = Allocator::rebuild(&[lo, legacy], &[], &[]);
        let mut svc = service("p", &["lo"], vec![]);
        if let Some(t) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
            t.runtime = Some(task_spec::Runtime::Process(Default::default()));
        }
        let ep = a.allocate_service(&svc).expect("vip");
        assert_eq!(ep.virtual_ips[0].addr, "127.128.3.2/24");
        let mut t = task("t1");
        t.spec = svc.spec.as_ref().and_then(|s| s.task.clone());
        let att = a.allocate_task(&t, &svc).expect("address");
        assert_eq!(att[0].addresses, vec!["127.128.3.3/24".to_string()]);
        // A container task of the same network takes the overlay subnet.
        let container = service("c", &["lo"], vec![]);
        let att = a.allocate_task(&task("t2"), &container).expect("address");
        assert_eq!(att[0].addresses, vec!["10.0.7.2/24".to_string()]);
        // A network without a loopback subnet cannot take process tasks.
        let mut old = service("q", &["legacy"], vec![]);
        old.spec = svc.spec.clone();
        if let Some(t) = old.spec.as_mut().and_then(|s| s.task.as_mut()) {
            t.networks[0].target = "legacy".into();
        }
        assert_eq!(
            a.allocate_service(&old),
            Err(AllocError::NoLoopbackSubnet("legacy".into()))
        );
        // The rebuild reserves loopback addresses too.
        let mut stored = svc.clone();
        stored.endpoint = Some(ep);
        t.networks = a.allocate_task(&t, &svc).expect("kept");
        let b = Allocator::rebuild(
            &[a.networks["lo"].network.clone()],
            std::slice::from_ref(&stored),
            std::slice::from_ref(&t),
        );
        assert_eq!(b.in_use("lo"), 2);
    }

    #[test]
    fn churn_never_hands_out_an_address_twice() {
        let mut a = Allocator::rebuild(&[network("n", "10.0.5.0/28", false)], &[], &[]);
        let svc = service("s", &["n"], vec![]);
        let mut live: Vec<Task> = Vec::new();
        let mut step = 0u64;
        for round in 0..200 {
            // Scale between 1 and 12 tasks, freeing the oldest first.
            let target = 1 + (round * 7) % 12;
            while live.len() > target {
                let gone = live.remove(0);
                a.release_task(task_id(&gone));
            }
            while live.len() < target {
                step += 1;
                let mut t = Task {
                    meta: Some(Meta {
                        id: format!("t{step}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                t.networks = a.allocate_task(&t, &svc).expect("room");
                live.push(t);
            }
            let held: Vec<(String, Ipv4Addr)> =
                live.iter().flat_map(|t| addresses(&t.networks)).collect();
            let distinct: BTreeSet<&(String, Ipv4Addr)> = held.iter().collect();
            assert_eq!(distinct.len(), held.len(), "round {round}: {held:?}");
        }
    }
}
