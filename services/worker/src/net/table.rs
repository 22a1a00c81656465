//! The endpoint table the proxies follow (`Resolver.WatchEndpoints`), and what it asks
//! this node to listen on. Pure: no sockets here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use shoal_proto::v1::port_config::{Protocol, PublishMode};
use shoal_proto::v1::{EndpointsUpdate, ServiceEndpoints};

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// Where a listener listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenKey {
    pub addr: SocketAddr,
    pub proto: Proto,
}

impl std::fmt::Display for ListenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.proto)
    }
}

/// Why a listener exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Routing mesh: a published ingress port on the node address.
    Ingress,
    /// A host-mode published port (only while this node runs a task of the service).
    Host,
    /// A service VIP and one of its target ports.
    Vip,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Ingress => "ingress",
            Kind::Host => "host",
            Kind::Vip => "vip",
        })
    }
}

/// A listener the table asks for, and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub service_id: String,
    pub service_name: String,
    pub kind: Kind,
    /// The backends, round robin, in task id order.
    pub backends: Vec<SocketAddr>,
    /// Clients inside these subnets are turned away: the other shoal networks'
    /// containers on this host, which can route to a container network's VIP on its
    /// bridge but must not use it. Empty: anyone.
    pub deny: Vec<Subnet>,
}

/// An address and prefix length.
pub type Subnet = (IpAddr, u8);

impl Want {
    /// Whether a client at `ip` may use this listener.
    pub fn admits(&self, ip: IpAddr) -> bool {
        admits(&self.deny, ip)
    }
}

/// Whether `ip` is outside every subnet of `deny`.
pub fn admits(deny: &[Subnet], ip: IpAddr) -> bool {
    !deny.iter().any(|(net, len)| in_subnet(ip, *net, *len))
}

/// Whether `ip` is inside `net`/`len`.
pub fn in_subnet(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The services' endpoints as the resolver last told them.
#[derive(Debug, Default, Clone)]
pub struct Table {
    services: BTreeMap<String, ServiceEndpoints>,
    ingress_network_id: String,
    /// The ports each container image EXPOSEs, as this host's engine says.
    exposed: HashMap<String, BTreeSet<(u16, Proto)>>,
}

impl Table {
    /// A snapshot replaces the table; a delta upserts and removes services.
    pub fn apply(&mut self, update: EndpointsUpdate) {
        if update.snapshot {
            self.services.clear();
        }
        if !update.ingress_network_id.is_empty() || update.snapshot {
            self.ingress_network_id = update.ingress_network_id;
        }
        for id in update.removed_service_ids {
            self.services.remove(&id);
        }
        for service in update.upserts {
            if service.service_id.is_empty() {
                continue;
            }
            self.services.insert(service.service_id.clone(), service);
        }
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The container images of the services with a VIP whose exposed ports are not
    /// known yet.
    pub fn unknown_images(&self) -> BTreeSet<String> {
        self.services
            .values()
            .filter(|s| !s.image.is_empty() && !s.virtual_ips.is_empty())
            .filter(|s| !self.exposed.contains_key(&s.image))
            .map(|s| s.image.clone())
            .collect()
    }

    /// Records the ports `image` EXPOSEs; whether that changed anything.
    pub fn set_exposed(&mut self, image: &str, ports: BTreeSet<(u16, Proto)>) -> bool {
        self.exposed.insert(image.to_string(), ports.clone()) != Some(ports)
    }

    /// Every VIP of every service: (network id, address).
    pub fn vips(&self) -> BTreeSet<(String, IpAddr)> {
        self.services
            .values()
            .flat_map(|s| s.virtual_ips.iter())
            .filter_map(|v| Some((v.network_id.clone(), parse_ip(&v.addr)?)))
            .collect()
    }

    /// The listeners this node should have: ingress ports on `node_ip`, host-mode
    /// ports of services with a task on `node_id`, and each VIP's target ports (a
    /// loopback VIP always; another one only once it is in `ready_vips`, i.e. on its
    /// Docker bridge, and closed to the other networks of `host_subnets`, the shoal
    /// networks present on this host by id). When two services claim one address the
    /// first (by id) keeps it.
    pub fn desired(
        &self,
        node_id: &str,
        node_ip: IpAddr,
        ready_vips: &HashSet<IpAddr>,
        host_subnets: &BTreeMap<String, Subnet>,
    ) -> BTreeMap<ListenKey, Want> {
        let mut out = BTreeMap::new();
        for service in self.services.values() {
            let mut want =
                |key: ListenKey, kind: Kind, backends: Vec<SocketAddr>, deny: Vec<Subnet>| {
                    out.entry(key).or_insert_with(|| Want {
                        service_id: service.service_id.clone(),
                        service_name: service.service_name.clone(),
                        kind,
                        backends,
                        deny,
                    });
                };
            let mut targets = BTreeSet::new();
            for port in &service.ports {
                let Some(target) = port_number(port.target_port) else {
                    continue;
                };
                targets.insert(target);
                let Some(proto) = proto_of(port.protocol) else {
                    continue;
                };
                let Some(published) = port_number(port.published_port) else {
                    continue;
                };
                let addr = SocketAddr::new(node_ip, published);
                match PublishMode::try_from(port.publish_mode) {
                    Ok(PublishMode::Ingress) => {
                        let backends = self.mesh_backends(service, target, None);
                        want(ListenKey { addr, proto }, Kind::Ingress, backends, vec![]);
                    }
                    Ok(PublishMode::Host) => {
                        let backends = self.mesh_backends(service, target, Some(node_id));
                        if !backends.is_empty() {
                            want(ListenKey { addr, proto }, Kind::Host, backends, vec![]);
                        }
                    }
                    Err(_) => {}
                }
            }
            for vip in &service.virtual_ips {
                let Some(ip) = parse_ip(&vip.addr) else {
                    continue;
                };
                if !ip.is_loopback() && !ready_vips.contains(&ip) {
                    continue;
                }
                // A container network's VIP is not for the other networks' containers.
                let deny: Vec<Subnet> = if ip.is_loopback() {
                    vec![]
                } else {
                    host_subnets
                        .iter()
                        .filter(|(id, _)| **id != vip.network_id)
                        .map(|(_, s)| *s)
                        .collect()
                };
                // The declared ports both ways, and what the image EXPOSEs.
                let ports = targets
                    .iter()
                    .flat_map(|&t| [(t, Proto::Tcp), (t, Proto::Udp)])
                    .chain(
                        self.exposed
                            .get(&service.image)
                            .into_iter()
                            .flatten()
                            .copied(),
                    )
                    .collect::<BTreeSet<_>>();
                for (target, proto) in ports {
                    let backends = network_backends(service, &vip.network_id, target);
                    let addr = SocketAddr::new(ip, target);
                    want(ListenKey { addr, proto }, Kind::Vip, backends, deny.clone());
                }
            }
        }
        out
    }

    /// One address per RUNNING task of `service` (on `node`, when given): its primary
    /// address, the first of its attachments (shoal-dns lists a task's addresses in
    /// its attachments' order). That is the address a process task is told to listen
    /// on (`SHOAL_TASK_ADDR`); a container answers on all of its addresses, and the
    /// host reaches every one of them through the Docker bridges.
    fn mesh_backends(
        &self,
        service: &ServiceEndpoints,
        target: u16,
        node: Option<&str>,
    ) -> Vec<SocketAddr> {
        let mut by_task: BTreeMap<&str, IpAddr> = BTreeMap::new();
        for e in &service.endpoints {
            if node.is_some_and(|n| n != e.node_id) {
                continue;
            }
            let Some(ip) = parse_ip(&e.addr) else {
                continue;
            };
            by_task.entry(e.task_id.as_str()).or_insert(ip);
        }
        by_task
            .into_values()
            .map(|ip| SocketAddr::new(ip, target))
            .collect()
    }
}

/// The service's tasks' addresses on `network_id`, port `target`, in task id order.
fn network_backends(service: &ServiceEndpoints, network_id: &str, target: u16) -> Vec<SocketAddr> {
    let mut by_task: BTreeMap<&str, IpAddr> = BTreeMap::new();
    for e in &service.endpoints {
        if e.network_id != network_id {
            continue;
        }
        if let Some(ip) = parse_ip(&e.addr) {
            by_task.entry(e.task_id.as_str()).or_insert(ip);
        }
    }
    by_task
        .into_values()
        .map(|ip| SocketAddr::new(ip, target))
        .collect()
}

/// An address with or without a prefix length ("10.0.0.2/24" or "10.0.0.2").
pub fn parse_ip(addr: &str) -> Option<IpAddr> {
    let ip = addr.split('/').next().unwrap_or(addr).trim();
    ip.parse().ok()
}

/// "10.0.0.0/24" as a [`Subnet`].
pub fn parse_subnet(cidr: &str) -> Option<Subnet> {
    let (ip, len) = cidr.split_once('/')?;
    Some((ip.trim().parse().ok()?, len.trim().parse().ok()?))
}

fn port_number(port: u32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

fn proto_of(protocol: i32) -> Option<Proto> {
    match Protocol::try_from(protocol) {
        Ok(Protocol::Tcp) => Some(Proto::Tcp),
        Ok(Protocol::Udp) => Some(Proto::Udp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use shoal_proto::v1::endpoint::VirtualIp;
    use shoal_proto::v1::{PortConfig, ResolvedEndpoint};

    fn ep(task: &str, node: &str, addr: &str, net: &str) -> ResolvedEndpoint {
        ResolvedEndpoint {
            task_id: task.into(),
            node_id: node.into(),
            addr: addr.into(),
            healthy: true,
            network_id: net.into(),
        }
    }

    fn port(target: u32, published: u32, mode: PublishMode, proto: Protocol) -> PortConfig {
        PortConfig {
            name: String::new(),
            protocol: proto as i32,
            target_port: target,
            published_port: published,
            publish_mode: mode as i32,
        }
    }

    fn web() -> ServiceEndpoints {
        ServiceEndpoints {
            service_id: "svc1".into(),
            service_name: "web".into(),
            mode: 0,
            ports: vec![
                port(80, 8080, PublishMode::Ingress, Protocol::Tcp),
                port(53, 5353, PublishMode::Host, Protocol::Udp),
            ],
            virtual_ips: vec![
                VirtualIp {
                    network_id: "ingress".into(),
                    addr: "127.128.0.2/16".into(),
                },
                VirtualIp {
                    network_id: "mynet".into(),
                    addr: "10.0.1.2/24".into(),
                },
            ],
            endpoints: vec![
                ep("t2", "n2", "127.128.1.4", "mynet"),
                ep("t2", "n2", "127.128.0.4", "ingress"),
                ep("t1", "n1", "127.128.1.3", "mynet"),
                ep("t1", "n1", "127.128.0.3", "ingress"),
            ],
            image: String::new(),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn desired_listeners_follow_the_table() {
        let mut t = Table::default();
        t.apply(EndpointsUpdate {
            snapshot: true,
            upserts: vec![web()],
            removed_service_ids: vec![],
            ingress_network_id: "ingress".into(),
        });
        let node_ip: IpAddr = "127.0.0.5".parse().unwrap();
        let d = t.desired("n1", node_ip, &HashSet::new(), &BTreeMap::new());
        let mesh = &d[&ListenKey {
            addr: sa("127.0.0.5:8080"),
            proto: Proto::Tcp,
        }];
        assert_eq!(mesh.kind, Kind::Ingress);
        // Each task's primary address: its first attachment (mynet), the one a
        // process task listens on.
        assert_eq!(
            mesh.backends,
            vec![sa("127.128.1.3:80"), sa("127.128.1.4:80")]
        );
        let host = &d[&ListenKey {
            addr: sa("127.0.0.5:5353"),
            proto: Proto::Udp,
        }];
        assert_eq!(host.backends, vec![sa("127.128.1.3:53")]);
        // The loopback VIP on both target ports, TCP and UDP; the container VIP not yet.
        for target in [80, 53] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let w = &d[&ListenKey {
                    addr: SocketAddr::new("127.128.0.2".parse().unwrap(), target),
                    proto,
                }];
                assert_eq!(w.kind, Kind::Vip);
                assert_eq!(w.backends.len(), 2);
            }
        }
        assert_eq!(d.len(), 6);
        // No local task: no host-mode listener.
        let d = t.desired("n3", node_ip, &HashSet::new(), &BTreeMap::new());
        assert_eq!(d.len(), 5);
        // The container VIP once it sits on its bridge: the mynet addresses.
        let ready = HashSet::from(["10.0.1.2".parse().unwrap()]);
        let subnets = BTreeMap::from([
            ("mynet".to_string(), parse_subnet("10.0.1.0/24").unwrap()),
            ("other".to_string(), parse_subnet("10.0.2.0/24").unwrap()),
        ]);
        let d = t.desired("n3", node_ip, &ready, &subnets);
        let w = &d[&ListenKey {
            addr: sa("10.0.1.2:80"),
            proto: Proto::Tcp,
        }];
        assert_eq!(w.backends, vec![sa("127.128.1.3:80"), sa("127.128.1.4:80")]);
        // Served to its own network only.
        assert!(w.admits("10.0.1.7".parse().unwrap()));
        assert!(!w.admits("10.0.2.7".parse().unwrap()));
        assert!(w.admits("192.0.2.2".parse().unwrap()));
        assert!(mesh.admits("10.0.2.7".parse().unwrap()));

        // A delta removes the service: nothing left.
        t.apply(EndpointsUpdate {
            snapshot: false,
            upserts: vec![],
            removed_service_ids: vec!["svc1".into()],
            ingress_network_id: "ingress".into(),
        });
        assert!(t.desired("n1", node_ip, &ready, &subnets).is_empty());
    }

    #[test]
    fn a_task_without_an_ingress_address_is_reached_on_another() {
        let mut s = web();
        s.endpoints = vec![ep("t9", "n1", "10.0.1.9/24", "mynet")];
        let mut t = Table::default();
        t.apply(EndpointsUpdate {
            snapshot: true,
            upserts: vec![s],
            removed_service_ids: vec![],
            ingress_network_id: "ingress".into(),
        });
        let d = t.desired(
            "n1",
            "127.0.0.5".parse().unwrap(),
            &HashSet::new(),
            &BTreeMap::new(),
        );
        let mesh = &d[&ListenKey {
            addr: sa("127.0.0.5:8080"),
            proto: Proto::Tcp,
        }];
        assert_eq!(mesh.backends, vec![sa("10.0.1.9:80")]);
    }

    #[test]
    fn subnets() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_subnet(ip("10.0.1.200"), ip("10.0.1.2"), 24));
        assert!(!in_subnet(ip("10.0.2.1"), ip("10.0.1.2"), 24));
        assert!(in_subnet(ip("1.2.3.4"), ip("9.9.9.9"), 0));
        assert!(in_subnet(ip("10.0.1.2"), ip("10.0.1.2"), 32));
        assert!(!in_subnet(ip("10.0.1.3"), ip("10.0.1.2"), 32));
        assert!(!in_subnet(ip("::1"), ip("10.0.1.2"), 8));
    }

    #[test]
    fn a_snapshot_replaces_everything() {
        let mut t = Table::default();
        let mut other = web();
        other.service_id = "svc2".into();
        t.apply(EndpointsUpdate {
            snapshot: true,
            upserts: vec![web(), other],
            removed_service_ids: vec![],
            ingress_network_id: "ingress".into(),
        });
        assert_eq!(t.len(), 2);
        t.apply(EndpointsUpdate {
            snapshot: true,
            upserts: vec![web()],
            removed_service_ids: vec![],
            ingress_network_id: "ingress".into(),
        });
        assert_eq!(t.len(), 1);
        assert_eq!(t.vips().len(), 2);
    }

    #[test]
    fn a_vip_forwards_the_ports_its_image_exposes() {
        let db = ServiceEndpoints {
            service_id: "db".into(),
            service_name: "db".into(),
            mode: 0,
            ports: vec![],
            virtual_ips: vec![VirtualIp {
                network_id: "back".into(),
                addr: "127.128.3.2/24".into(),
            }],
            endpoints: vec![ep("t1", "n1", "127.128.3.3", "back")],
            image: "mysql:8".into(),
        };
        let mut t = Table::default();
        t.apply(EndpointsUpdate {
            snapshot: true,
            upserts: vec![db],
            removed_service_ids: vec![],
            ingress_network_id: String::new(),
        });
        let node_ip: IpAddr = "127.0.0.5".parse().unwrap();
        let listeners = |t: &Table| t.desired("n1", node_ip, &HashSet::new(), &BTreeMap::new());
        assert!(listeners(&t).is_empty(), "no port known yet");
        assert_eq!(t.unknown_images(), BTreeSet::from(["mysql:8".to_string()]));

        assert!(t.set_exposed("mysql:8", BTreeSet::from([(3306, Proto::Tcp)])));
        assert!(t.unknown_images().is_empty());
        let d = listeners(&t);
        let keys: Vec<ListenKey> = d.keys().copied().collect();
        assert_eq!(
            keys,
            vec![ListenKey {
                addr: sa("127.128.3.2:3306"),
                proto: Proto::Tcp
            }],
            "the exposed port, TCP only"
        );
        assert_eq!(d[&keys[0]].backends, vec![sa("127.128.3.3:3306")]);
        assert!(!t.set_exposed("mysql:8", BTreeSet::from([(3306, Proto::Tcp)])));
    }
}
