//! The network allocator's bookkeeping (issue 6, leader only): one VIP per service per
//! network it joins (endpoint mode vip), one address per task per network, published
//! ingress ports (explicit, or from the dynamic range 30000–32767).
//!
//! [`Allocator`] is rebuilt from the store's objects at every leadership term
//! ([`Allocator::rebuild`]): whatever the services' endpoints and the live tasks hold
//! is taken, so allocations survive a leader change and nothing is handed out twice.
//! It does no I/O; the controller that runs it writes the results (CAS on the service
//! or task) and releases on failure.

pub mod pool;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use shoal_proto::TaskStateExt;
use shoal_proto::v1::endpoint::VirtualIp;
use shoal_proto::v1::endpoint_spec::ResolutionMode;
use shoal_proto::v1::port_config::PublishMode;
use shoal_proto::v1::{Endpoint, Network, NetworkAttachment, PortConfig, Service, Task, TaskState};

pub use pool::{AddressPool, PortKey, PortPool, Subnet, address_of};

/// Why an allocation could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("network {0} has no free address left")]
    NetworkFull(String),
    #[error("port '{port}' is already in use by service '{owner}'")]
    PortInUse { port: u32, owner: String },
    #[error("no free port left in the dynamic range 30000-32767")]
    NoDynamicPort,
}

#[derive(Debug, Clone)]
struct NetworkPool {
    network: Network,
    pool: AddressPool,
}

/// The allocation state of the whole cluster.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    networks: HashMap<String, NetworkPool>,
    ingress: Option<String>,
    ports: PortPool,
}

fn network_id(n: &Network) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn service_id(s: &Service) -> &str {
    s.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// The network's allocated subnet and gateway (`ipam.configs[0]`).
fn subnet_of(n: &Network) -> Option<(Subnet, Option<Ipv4Addr>)> {
    let config = n.ipam.as_ref()?.configs.first()?;
    let subnet = Subnet::parse(&config.subnet).ok()?;
    let gateway = config.gateway.parse().ok();
    Some((subnet, gateway))
}

/// Whether a task still holds its addresses: until it is known to have stopped.
fn holds_addresses(t: &Task) -> bool {
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

impl Allocator {
    /// The state the stored objects describe: every network's pool, the VIPs in the
    /// services' endpoints, the addresses of tasks that have not stopped, and the
    /// published ports.
    pub fn rebuild(networks: &[Network], services: &[Service], tasks: &[Task]) -> Self {
        let mut a = Allocator::default();
        for n in networks {
            a.add_network(n.clone());
        }
        for s in services {
            let id = service_id(s).to_string();
            if let Some(endpoint) = &s.endpoint {
                for vip in &endpoint.virtual_ips {
                    if let (Some(np), Some(ip)) =
                        (a.networks.get_mut(&vip.network_id), address_of(&vip.addr))
                    {
                        np.pool.reserve(ip);
                    }
                }
                for p in &endpoint.ports {
                    if p.publish_mode == PublishMode::Ingress as i32 && p.published_port != 0 {
                        let _ = a.ports.claim(
                            PortKey {
                                protocol: p.protocol,
                                port: p.published_port,
                            },
                            &id,
                        );
                    }
                }
            }
        }
        for t in tasks.iter().filter(|t| holds_addresses(t)) {
            for att in &t.networks {
                let Some(net) = att.network.as_ref() else {
                    continue;
                };
                if let Some(np) = a.networks.get_mut(network_id(net)) {
                    for addr in att.addresses.iter().filter_map(|a| address_of(a)) {
                        np.pool.reserve(addr);
                    }
                }
            }
        }
        a
    }

    /// Takes a network (created, or seen for the first time).
    pub fn add_network(&mut self, n: Network) {
        let id = network_id(&n).to_string();
        if id.is_empty() || self.networks.contains_key(&id) {
            return;
        }
        let Some((subnet, gateway)) = subnet_of(&n) else {
            return;
        };
        if n.spec.as_ref().is_some_and(|s| s.ingress) {
            self.ingress = Some(id.clone());
        }
        self.networks.insert(
            id,
            NetworkPool {
                pool: AddressPool::new(subnet, gateway),
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
    /// mode; kept when already allocated), its published ports with numbers. Ports
    /// and VIPs it no longer needs are released. On error nothing is changed.
    pub fn allocate_service(&mut self, service: &Service) -> Result<Endpoint, AllocError> {
        let id = service_id(service).to_string();
        let spec_endpoint = service.spec.as_ref().and_then(|s| s.endpoint.clone());
        let vip_mode = spec_endpoint
            .as_ref()
            .is_none_or(|e| e.mode == ResolutionMode::Vip as i32);
        let current = service.endpoint.clone().unwrap_or_default();
        let wanted_networks = self.networks_of(service);
        for n in &wanted_networks {
            if !self.networks.contains_key(n) {
                return Err(AllocError::NoSuchNetwork(n.clone()));
            }
        }

        // Ports: explicit ones claimed, dynamic ones kept from before or taken anew.
        let mut trial = self.ports.clone();
        trial.release_service(&id);
        let mut ports: Vec<PortConfig> = Vec::new();
        for p in spec_endpoint
            .as_ref()
            .map(|e| e.ports.as_slice())
            .unwrap_or_default()
        {
            let mut p = p.clone();
            if p.publish_mode == PublishMode::Ingress as i32 {
                if p.published_port == 0 {
                    let before = current.ports.iter().find(|q| {
                        q.target_port == p.target_port
                            && q.protocol == p.protocol
                            && q.publish_mode == p.publish_mode
                            && q.published_port != 0
                            && trial
                                .owner(PortKey {
                                    protocol: q.protocol,
                                    port: q.published_port,
                                })
                                .is_none()
                    });
                    p.published_port = match before {
                        Some(q) => {
                            let _ = trial.claim(
                                PortKey {
                                    protocol: q.protocol,
                                    port: q.published_port,
                                },
                                &id,
                            );
                            q.published_port
                        }
                        None => trial
                            .claim_dynamic(p.protocol, &id)
                            .ok_or(AllocError::NoDynamicPort)?,
                    };
                } else {
                    trial
                        .claim(
                            PortKey {
                                protocol: p.protocol,
                                port: p.published_port,
                            },
                            &id,
                        )
                        .map_err(|owner| AllocError::PortInUse {
                            port: p.published_port,
                            owner,
                        })?;
                }
            }
            ports.push(p);
        }

        // VIPs: kept where they are, new ones allocated, stale ones released.
        let mut vips: Vec<VirtualIp> = Vec::new();
        let mut fresh: Vec<(String, Ipv4Addr)> = Vec::new();
        if vip_mode {
            for n in &wanted_networks {
                if let Some(v) = current.virtual_ips.iter().find(|v| &v.network_id == n) {
                    vips.push(v.clone());
                    continue;
                }
                let Some(np) = self.networks.get_mut(n) else {
                    continue;
                };
                match np.pool.allocate() {
                    Some(ip) => {
                        fresh.push((n.clone(), ip));
                        vips.push(VirtualIp {
                            network_id: n.clone(),
                            addr: np.pool.subnet().with_prefix(ip),
                        });
                    }
                    None => {
                        for (net, ip) in fresh {
                            if let Some(np) = self.networks.get_mut(&net) {
                                np.pool.release(ip);
                            }
                        }
                        return Err(AllocError::NetworkFull(n.clone()));
                    }
                }
            }
        }
        for old in &current.virtual_ips {
            if !vips
                .iter()
                .any(|v| v.network_id == old.network_id && v.addr == old.addr)
                && let (Some(np), Some(ip)) = (
                    self.networks.get_mut(&old.network_id),
                    address_of(&old.addr),
                )
            {
                np.pool.release(ip);
            }
        }
        self.ports = trial;
        Ok(Endpoint {
            spec: spec_endpoint,
            ports,
            virtual_ips: vips,
        })
    }

    /// Frees a removed service's VIPs and ports.
    pub fn release_service(&mut self, service: &Service) {
        self.ports.release_service(service_id(service));
        if let Some(endpoint) = &service.endpoint {
            for v in &endpoint.virtual_ips {
                if let (Some(np), Some(ip)) =
                    (self.networks.get_mut(&v.network_id), address_of(&v.addr))
                {
                    np.pool.release(ip);
                }
            }
        }
    }

    /// The task's network attachments: one address on each of its service's networks
    /// (kept when the task already has one there). On error nothing is changed.
    pub fn allocate_task(
        &mut self,
        task: &Task,
        service: &Service,
    ) -> Result<Vec<NetworkAttachment>, AllocError> {
        let aliases_of = |net: &str| -> Vec<String> {
            service
                .spec
                .as_ref()
                .and_then(|s| s.task.as_ref())
                .and_then(|t| t.networks.iter().find(|n| n.target == net))
                .map(|n| n.aliases.clone())
                .unwrap_or_default()
        };
        let mut out: Vec<NetworkAttachment> = Vec::new();
        let mut fresh: Vec<(String, Ipv4Addr)> = Vec::new();
        for n in self.networks_of(service) {
            if let Some(have) = task.networks.iter().find(|a| {
                a.network.as_ref().map(network_id) == Some(n.as_str()) && !a.addresses.is_empty()
            }) {
                out.push(have.clone());
                continue;
            }
            let Some(np) = self.networks.get_mut(&n) else {
                self.undo(&fresh);
                return Err(AllocError::NoSuchNetwork(n));
            };
            let Some(ip) = np.pool.allocate() else {
                self.undo(&fresh);
                return Err(AllocError::NetworkFull(n));
            };
            fresh.push((n.clone(), ip));
            out.push(NetworkAttachment {
                network: Some(np.network.clone()),
                addresses: vec![np.pool.subnet().with_prefix(ip)],
                aliases: aliases_of(&n),
            });
        }
        Ok(out)
    }

    fn undo(&mut self, fresh: &[(String, Ipv4Addr)]) {
        for (net, ip) in fresh {
            if let Some(np) = self.networks.get_mut(net) {
                np.pool.release(*ip);
            }
        }
    }

    /// Frees a task's addresses (it stopped, or was deleted).
    pub fn release_task(&mut self, task: &Task) {
        for att in &task.networks {
            let Some(net) = att.network.as_ref() else {
                continue;
            };
            if let Some(np) = self.networks.get_mut(network_id(net)) {
                for ip in att.addresses.iter().filter_map(|a| address_of(a)) {
                    np.pool.release(ip);
                }
            }
        }
    }

    /// Every address currently held on network `id` (for checks and tests).
    pub fn in_use(&self, id: &str) -> usize {
        self.networks.get(id).map_or(0, |np| np.pool.in_use())
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
        a.release_service(&web);
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
                a.release_task(&gone);
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
