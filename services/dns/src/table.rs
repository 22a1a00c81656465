//! The record table: what every name of the cluster answers, kept one service at a time.
//!
//! A [`ServiceRecord`] is built from one service and its tasks (a pure function of the
//! stored objects); [`Table::put_service`] swaps it in and keeps the table's indexes
//! (names, task names, address owners) current for that service only, so a change to a
//! task costs the size of its service, and a query a few hash lookups.
//!
//! What the stored objects say (the manager's allocator writes them): a service's VIPs in
//! `endpoint.virtual_ips` (CIDR, one per network), each task's addresses in
//! `networks[].addresses` (CIDR, one attachment per network). A task is in the answers
//! while it is RUNNING — which, for a task with a healthcheck, means healthy — and
//! meant to keep running.
//!
//! Visibility (Swarm's): a querier whose address belongs to a task sees the services
//! that share a network with that task; the ingress network is not one for discovery.
//! Any other querier (the host, an operator) sees every service.
//!
//! Network aliases (Swarm's): the aliases of a service's network attachment configs
//! (`spec.task.networks[]`, `spec.networks[]`; the spec is the source of truth, not the
//! copies on its tasks) are more names for the service on that network only: `<alias>`
//! answers as the service name does with that network's addresses (its VIP, or its
//! running tasks' addresses in dnsrr mode), `tasks.<alias>` the task addresses there. A
//! querier sees an alias only on the networks it shares with the service. A service
//! name wins over an alias: the alias answers only when no service of that name answers
//! the querier. Several services with one alias on networks the querier sees: all
//! their answers, shuffled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use shoal_proto::TaskStateExt;
use shoal_proto::v1::endpoint::VirtualIp;
use shoal_proto::v1::endpoint_spec::ResolutionMode;
use shoal_proto::v1::task_status::Health;
use shoal_proto::v1::{
    Network, PortConfig, ResolveResponse, ResolvedEndpoint, Service, ServiceEndpoints, Task,
    TaskState,
};

/// A network as names see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub ingress: bool,
}

impl NetworkRecord {
    pub fn from_network(n: &Network) -> Option<NetworkRecord> {
        let id = n
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .filter(|id| !id.is_empty())?;
        let spec = n.spec.as_ref();
        let name = spec
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let ingress = spec.is_some_and(|s| s.ingress);
        Some(NetworkRecord { id, name, ingress })
    }
}

/// An address on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub network_id: String,
    pub ip: IpAddr,
}

/// A task that holds addresses (it has not finished).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: String,
    pub node_id: String,
    /// `<service>.<slot>.<task id>`; global services: `<service>.<node id>.<task id>`.
    pub name: String,
    pub addrs: Vec<Address>,
    /// RUNNING (so healthy, when it has a healthcheck) and meant to run: in the answers.
    pub running: bool,
}

impl TaskRecord {
    /// The task's address on the first of `networks` it is attached to.
    fn addr_on(&self, networks: &[&str]) -> Option<IpAddr> {
        networks
            .iter()
            .find_map(|n| self.addrs.iter().find(|a| a.network_id == *n).map(|a| a.ip))
    }
}

/// A network alias: another name of the service on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// Lowercase, without a final dot.
    pub name: String,
    pub network_id: String,
}

/// One service's names and endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub id: String,
    pub name: String,
    pub mode: ResolutionMode,
    pub vips: Vec<Address>,
    /// Its network aliases, in spec order, without duplicates or its own name.
    pub aliases: Vec<Alias>,
    /// The networks the service is on: its spec's, then its VIPs', then its tasks'.
    pub networks: Vec<String>,
    /// Tasks holding addresses, sorted by name.
    pub tasks: Vec<TaskRecord>,
    /// What `WatchEndpoints` sends for this service.
    pub endpoints: Arc<ServiceEndpoints>,
}

/// Parses `a.b.c.d/len` (or a bare address).
pub fn parse_addr(cidr: &str) -> Option<IpAddr> {
    let ip = cidr.split_once('/').map_or(cidr, |(ip, _)| ip);
    ip.trim().parse().ok()
}

fn task_state(t: &Task) -> TaskState {
    t.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

/// In the answers: RUNNING, not unhealthy, and not on its way out.
pub fn task_is_serving(t: &Task) -> bool {
    let unhealthy = t
        .status
        .as_ref()
        .is_some_and(|s| s.health == Health::Unhealthy as i32);
    task_state(t) == TaskState::Running
        && !unhealthy
        && t.desired_state <= TaskState::Complete as i32
}

/// The service's container image (the workers' VIPs forward the ports it EXPOSEs);
/// empty for a process service.
fn container_image(service: &Service) -> String {
    let runtime = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.as_ref());
    match runtime {
        Some(shoal_proto::v1::task_spec::Runtime::Container(c)) => c.image.clone(),
        _ => String::new(),
    }
}

fn push_unique(list: &mut Vec<String>, id: &str) {
    if !id.is_empty() && !list.iter().any(|n| n == id) {
        list.push(id.to_string());
    }
}

impl ServiceRecord {
    /// The record of `service` with `tasks` (the service's tasks, in any order); `None`
    /// for a service being removed.
    pub fn build(service: &Service, tasks: &[Arc<Task>]) -> Option<ServiceRecord> {
        if service.pending_delete {
            return None;
        }
        let id = service.meta.as_ref().map(|m| m.id.clone())?;
        let spec = service.spec.as_ref();
        let name = spec
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let endpoint = service.endpoint.as_ref();
        let mode = endpoint
            .and_then(|e| e.spec.as_ref())
            .or_else(|| spec.and_then(|s| s.endpoint.as_ref()))
            .map(|e| e.mode())
            .unwrap_or(ResolutionMode::Vip);
        let ports: Vec<PortConfig> = endpoint.map(|e| e.ports.clone()).unwrap_or_default();
        let virtual_ips: Vec<VirtualIp> =
            endpoint.map(|e| e.virtual_ips.clone()).unwrap_or_default();
        let vips: Vec<Address> = virtual_ips
            .iter()
            .filter_map(|v| {
                Some(Address {
                    network_id: v.network_id.clone(),
                    ip: parse_addr(&v.addr)?,
                })
            })
            .collect();

        let mut networks = Vec::new();
        let mut aliases: Vec<Alias> = Vec::new();
        let own_name = name.to_lowercase();
        if let Some(spec) = spec {
            let task_nets = spec.task.as_ref().map(|t| t.networks.as_slice());
            for n in task_nets.unwrap_or_default().iter().chain(&spec.networks) {
                push_unique(&mut networks, &n.target);
                if n.target.is_empty() {
                    continue;
                }
                for a in &n.aliases {
                    let alias = a.trim().trim_end_matches('.').to_lowercase();
                    let fresh = !aliases
                        .iter()
                        .any(|x| x.name == alias && x.network_id == n.target);
                    if !alias.is_empty() && alias != own_name && fresh {
                        aliases.push(Alias {
                            name: alias,
                            network_id: n.target.clone(),
                        });
                    }
                }
            }
        }
        for v in &vips {
            push_unique(&mut networks, &v.network_id);
        }

        let mut records: Vec<TaskRecord> = Vec::new();
        for t in tasks {
            if !task_state(t).is_live() {
                continue;
            }
            let Some(task_id) = t.meta.as_ref().map(|m| m.id.clone()) else {
                continue;
            };
            let mut addrs = Vec::new();
            for att in &t.networks {
                let network_id = att
                    .network
                    .as_ref()
                    .and_then(|n| n.meta.as_ref())
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                if network_id.is_empty() {
                    continue;
                }
                push_unique(&mut networks, &network_id);
                for a in &att.addresses {
                    if let Some(ip) = parse_addr(a) {
                        addrs.push(Address {
                            network_id: network_id.clone(),
                            ip,
                        });
                    }
                }
            }
            let middle = if t.slot > 0 {
                t.slot.to_string()
            } else {
                t.node_id.clone()
            };
            records.push(TaskRecord {
                name: format!("{name}.{middle}.{task_id}"),
                id: task_id,
                node_id: t.node_id.clone(),
                addrs,
                running: task_is_serving(t),
            });
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));

        let endpoints = records
            .iter()
            .filter(|t| t.running)
            .flat_map(|t| {
                t.addrs.iter().map(|a| ResolvedEndpoint {
                    task_id: t.id.clone(),
                    node_id: t.node_id.clone(),
                    addr: a.ip.to_string(),
                    healthy: true,
                    network_id: a.network_id.clone(),
                })
            })
            .collect();
        let endpoints = Arc::new(ServiceEndpoints {
            image: container_image(service),
            service_id: id.clone(),
            service_name: name.clone(),
            mode: mode as i32,
            ports,
            virtual_ips,
            endpoints,
        });
        Some(ServiceRecord {
            id,
            name,
            mode,
            vips,
            aliases,
            networks,
            tasks: records,
            endpoints,
        })
    }

    fn running(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.iter().filter(|t| t.running)
    }

    fn vip_on(&self, network_id: &str) -> Option<IpAddr> {
        self.vips
            .iter()
            .find(|v| v.network_id == network_id)
            .map(|v| v.ip)
    }
}

/// A service holding an alias on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AliasOwner {
    service_id: String,
    network_id: String,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Vip {
        service_id: String,
        network_id: String,
    },
    Task {
        service_id: String,
        task_id: String,
        network_id: String,
    },
}

impl Owner {
    fn service_id(&self) -> &str {
        match self {
            Owner::Vip { service_id, .. } | Owner::Task { service_id, .. } => service_id,
        }
    }
}

/// Who is asking, as far as visibility goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Querier {
    /// Not a task: sees every service.
    Host,
    /// A task: sees the services on its networks (ingress excluded); `via` is the
    /// network of the address it asked from.
    Task {
        task_id: String,
        networks: Vec<String>,
        via: String,
    },
}

impl Querier {
    fn sees(&self, network_id: &str) -> bool {
        match self {
            Querier::Host => true,
            Querier::Task { networks, .. } => networks.iter().any(|n| n == network_id),
        }
    }
}

/// The answer to a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A cluster name: these addresses (maybe none). `shuffle`: a set of task addresses
    /// (tasks.<service>, or a dnsrr service) that the answer should shuffle.
    Found { addrs: Vec<IpAddr>, shuffle: bool },
    /// A cluster name that names nothing (the querier may see).
    NxDomain,
    /// Not a cluster name: for the upstream resolvers.
    NotOurs,
}

/// What a name points at.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Service(&'a ServiceRecord),
    Tasks(&'a ServiceRecord),
    Task(&'a ServiceRecord, &'a TaskRecord),
}

impl<'a> Target<'a> {
    fn service(&self) -> &'a ServiceRecord {
        match self {
            Target::Service(s) | Target::Tasks(s) | Target::Task(s, _) => s,
        }
    }
}

/// Why the Resolver API cannot resolve a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no service, tasks or task is named \"{0}\"")]
    UnknownName(String),
    #[error("no network is named or has the id \"{0}\"")]
    UnknownNetwork(String),
    #[error("service {service} is not on network {network}")]
    NotOnNetwork { service: String, network: String },
    #[error("{0} is not the VIP of any service")]
    UnknownVip(String),
    #[error("\"{0}\" is not an IP address")]
    BadVip(String),
}

/// Every name of the cluster.
#[derive(Debug, Default)]
pub struct Table {
    services: HashMap<String, Arc<ServiceRecord>>,
    /// Lowercase service name → service id.
    by_name: HashMap<String, String>,
    /// Lowercase task name → (service id, task id); running tasks only.
    task_names: HashMap<String, (String, String)>,
    /// Lowercase alias → its holders, by service id (stable: a service's networks keep
    /// their spec order).
    aliases: HashMap<String, Vec<AliasOwner>>,
    /// VIPs and the addresses of tasks that have not finished.
    owners: HashMap<IpAddr, Vec<Owner>>,
    networks: HashMap<String, NetworkRecord>,
    /// Lowercase network name → network id.
    network_by_name: HashMap<String, String>,
    ingress_network_id: String,
}

impl Table {
    pub fn service(&self, id: &str) -> Option<&Arc<ServiceRecord>> {
        self.services.get(id)
    }

    pub fn service_ids(&self) -> impl Iterator<Item = &String> {
        self.services.keys()
    }

    pub fn ingress_network_id(&self) -> &str {
        &self.ingress_network_id
    }

    /// Puts (or, with `None`, removes) service `id`'s record. Returns whether anything
    /// changed.
    pub fn put_service(&mut self, id: &str, record: Option<ServiceRecord>) -> bool {
        let old = self.services.get(id).cloned();
        if old.as_deref() == record.as_ref() {
            return false;
        }
        if let Some(old) = old {
            self.unindex(&old);
            self.services.remove(id);
        }
        if let Some(record) = record {
            self.index(&record);
            self.services.insert(id.to_string(), Arc::new(record));
        }
        true
    }

    fn index(&mut self, s: &ServiceRecord) {
        self.by_name.insert(s.name.to_lowercase(), s.id.clone());
        for a in &s.aliases {
            let owners = self.aliases.entry(a.name.clone()).or_default();
            owners.push(AliasOwner {
                service_id: s.id.clone(),
                network_id: a.network_id.clone(),
            });
            owners.sort_by(|x, y| x.service_id.cmp(&y.service_id));
        }
        for v in &s.vips {
            self.owners.entry(v.ip).or_default().push(Owner::Vip {
                service_id: s.id.clone(),
                network_id: v.network_id.clone(),
            });
        }
        for t in &s.tasks {
            if t.running {
                self.task_names
                    .insert(t.name.to_lowercase(), (s.id.clone(), t.id.clone()));
            }
            for a in &t.addrs {
                self.owners.entry(a.ip).or_default().push(Owner::Task {
                    service_id: s.id.clone(),
                    task_id: t.id.clone(),
                    network_id: a.network_id.clone(),
                });
            }
        }
    }

    fn unindex(&mut self, s: &ServiceRecord) {
        let name = s.name.to_lowercase();
        if self.by_name.get(&name) == Some(&s.id) {
            self.by_name.remove(&name);
        }
        for a in &s.aliases {
            if let Some(owners) = self.aliases.get_mut(&a.name) {
                owners.retain(|o| o.service_id != s.id);
                if owners.is_empty() {
                    self.aliases.remove(&a.name);
                }
            }
        }
        for t in &s.tasks {
            let name = t.name.to_lowercase();
            if self
                .task_names
                .get(&name)
                .is_some_and(|(sid, _)| *sid == s.id)
            {
                self.task_names.remove(&name);
            }
        }
        let ips = s
            .vips
            .iter()
            .map(|v| v.ip)
            .chain(s.tasks.iter().flat_map(|t| t.addrs.iter().map(|a| a.ip)));
        for ip in ips {
            if let Some(owners) = self.owners.get_mut(&ip) {
                owners.retain(|o| o.service_id() != s.id);
                if owners.is_empty() {
                    self.owners.remove(&ip);
                }
            }
        }
    }

    /// Replaces the networks. Returns whether anything changed.
    pub fn set_networks(&mut self, networks: Vec<NetworkRecord>) -> bool {
        let fresh: HashMap<String, NetworkRecord> =
            networks.into_iter().map(|n| (n.id.clone(), n)).collect();
        if fresh == self.networks {
            return false;
        }
        self.network_by_name = fresh
            .values()
            .filter(|n| !n.name.is_empty())
            .map(|n| (n.name.to_lowercase(), n.id.clone()))
            .collect();
        self.ingress_network_id = fresh
            .values()
            .filter(|n| n.ingress)
            .map(|n| n.id.clone())
            .min()
            .unwrap_or_default();
        self.networks = fresh;
        true
    }

    fn is_ingress(&self, network_id: &str) -> bool {
        network_id == self.ingress_network_id
            || self.networks.get(network_id).is_some_and(|n| n.ingress)
    }

    fn service_named(&self, name: &str) -> Option<&ServiceRecord> {
        self.by_name
            .get(name)
            .and_then(|id| self.services.get(id))
            .map(|s| s.as_ref())
    }

    /// Who asks from `ip`: the task that holds it, or the host.
    pub fn querier(&self, ip: IpAddr) -> Querier {
        let owner = self.owners.get(&ip).and_then(|owners| {
            owners.iter().find_map(|o| match o {
                Owner::Task {
                    service_id,
                    task_id,
                    network_id,
                } => Some((service_id, task_id, network_id)),
                Owner::Vip { .. } => None,
            })
        });
        let Some((service_id, task_id, via)) = owner else {
            return Querier::Host;
        };
        let task = self
            .services
            .get(service_id)
            .and_then(|s| s.tasks.iter().find(|t| t.id == *task_id));
        let mut networks = Vec::new();
        for a in task.map(|t| t.addrs.as_slice()).unwrap_or_default() {
            if !self.is_ingress(&a.network_id) {
                push_unique(&mut networks, &a.network_id);
            }
        }
        Querier::Task {
            task_id: task_id.clone(),
            networks,
            via: via.clone(),
        }
    }

    /// The networks on which `s` answers `q`, best first; empty: `q` may not see `s`.
    fn candidates<'s>(
        &self,
        s: &'s ServiceRecord,
        q: &Querier,
        scope: Option<&str>,
    ) -> Vec<&'s str> {
        if let Some(scope) = scope {
            return s
                .networks
                .iter()
                .filter(|n| *n == scope && q.sees(n))
                .map(String::as_str)
                .collect();
        }
        match q {
            Querier::Host => {
                let (mut nets, ingress): (Vec<&str>, Vec<&str>) = s
                    .networks
                    .iter()
                    .map(String::as_str)
                    .partition(|n| !self.is_ingress(n));
                nets.extend(ingress);
                nets
            }
            Querier::Task { networks, via, .. } => {
                let mut nets: Vec<&str> = Vec::new();
                if let Some(v) = s.networks.iter().find(|n| *n == via)
                    && networks.contains(v)
                {
                    nets.push(v);
                }
                for n in &s.networks {
                    if n != via && networks.contains(n) {
                        nets.push(n);
                    }
                }
                nets
            }
        }
    }

    /// What `name` (lowercase, without the final dot) names, without a network scope.
    fn target(&self, name: &str) -> Option<Target<'_>> {
        match name.matches('.').count() {
            0 => self.service_named(name).map(Target::Service),
            1 => name
                .strip_prefix("tasks.")
                .and_then(|s| self.service_named(s))
                .map(Target::Tasks),
            2 => {
                let (sid, tid) = self.task_names.get(name)?;
                let s = self.services.get(sid)?;
                let t = s.tasks.iter().find(|t| t.id == *tid)?;
                Some(Target::Task(s, t))
            }
            _ => None,
        }
    }

    /// The addresses `target` answers `q` with, scoped to a network or not; `None` when
    /// `q` may not see it.
    fn addresses(
        &self,
        target: Target<'_>,
        q: &Querier,
        scope: Option<&str>,
    ) -> Option<(Vec<IpAddr>, bool)> {
        let s = target.service();
        let nets = self.candidates(s, q, scope);
        if nets.is_empty() && !(*q == Querier::Host && scope.is_none()) {
            return None;
        }
        Some(Self::answer(target, &nets))
    }

    /// What `target` answers on the first of `nets` that has an address for it.
    fn answer(target: Target<'_>, nets: &[&str]) -> (Vec<IpAddr>, bool) {
        let s = target.service();
        let tasks = |only: Option<&TaskRecord>| -> Vec<IpAddr> {
            match only {
                Some(t) => t.addr_on(nets).into_iter().collect(),
                None => s.running().filter_map(|t| t.addr_on(nets)).collect(),
            }
        };
        match target {
            Target::Service(s) if s.mode == ResolutionMode::Vip => {
                match nets.iter().find_map(|n| s.vip_on(n)) {
                    Some(vip) => (vec![vip], false),
                    // No VIP allocated (yet) where the querier looks: the tasks.
                    None => (tasks(None), true),
                }
            }
            Target::Service(_) | Target::Tasks(_) => (tasks(None), true),
            Target::Task(_, t) => (tasks(Some(t)), false),
        }
    }

    /// The holders of alias `name` (lowercase): `<alias>` itself, else `tasks.<alias>`
    /// (then `true`).
    fn alias_owners(&self, name: &str) -> Option<(&[AliasOwner], bool)> {
        if let Some(owners) = self.aliases.get(name) {
            return Some((owners, false));
        }
        name.strip_prefix("tasks.")
            .and_then(|rest| self.aliases.get(rest))
            .map(|owners| (owners.as_slice(), true))
    }

    /// Each service holding an alias (`owners`, grouped by service) with the network its
    /// alias answers `q` on (best first, as for its name; `scope`: only that one);
    /// services `q` may not see there are left out.
    fn alias_targets<'s>(
        &'s self,
        owners: &'s [AliasOwner],
        q: &Querier,
        scope: Option<&str>,
    ) -> Vec<(&'s ServiceRecord, &'s str)> {
        let mut out: Vec<(&ServiceRecord, &str)> = Vec::new();
        for group in owners.chunk_by(|a, b| a.service_id == b.service_id) {
            let Some(s) = group.first().and_then(|o| self.services.get(&o.service_id)) else {
                continue;
            };
            let net = self
                .candidates(s, q, scope)
                .into_iter()
                .find(|n| group.iter().any(|o| o.network_id == *n));
            if let Some(net) = net {
                out.push((s, net));
            }
        }
        out
    }

    /// What alias `name` (or `tasks.<alias>`) answers `q`, scoped to a network or not;
    /// `None` when `q` sees no such alias.
    fn alias_addresses(
        &self,
        name: &str,
        q: &Querier,
        scope: Option<&str>,
    ) -> Option<(Vec<IpAddr>, bool)> {
        let (owners, tasks) = self.alias_owners(name)?;
        let targets = self.alias_targets(owners, q, scope);
        if targets.is_empty() {
            return None;
        }
        let mut addrs: Vec<IpAddr> = Vec::new();
        let mut shuffle = targets.len() > 1;
        for (s, net) in &targets {
            let target = if tasks {
                Target::Tasks(s)
            } else {
                Target::Service(s)
            };
            let (found, shuffled) = Self::answer(target, &[net]);
            shuffle |= shuffled;
            for ip in found {
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
        Some((addrs, shuffle))
    }

    /// Whether `name` is in the cluster's namespace even though it names nothing: a
    /// single label, `tasks.*`, or `<known service>.x.y` (a task name).
    fn is_cluster_name(&self, name: &str) -> bool {
        let dots = name.matches('.').count();
        dots == 0
            || name.starts_with("tasks.")
            || (dots == 2
                && name
                    .split('.')
                    .next()
                    .is_some_and(|first| self.by_name.contains_key(first)))
    }

    /// Answers `name` (any case, with or without the final dot) for `q`.
    pub fn lookup(&self, name: &str, q: &Querier) -> Lookup {
        let name = name.trim_end_matches('.').to_lowercase();
        if name.is_empty() {
            return Lookup::NotOurs;
        }
        if let Some(target) = self.target(&name)
            && let Some((addrs, shuffle)) = self.addresses(target, q, None)
        {
            return Lookup::Found { addrs, shuffle };
        }
        if let Some((addrs, shuffle)) = self.alias_addresses(&name, q, None) {
            return Lookup::Found { addrs, shuffle };
        }
        if let Some((rest, last)) = name.rsplit_once('.')
            && let Some(net) = self.network_by_name.get(last)
        {
            if let Some(target) = self.target(rest)
                && let Some((addrs, shuffle)) = self.addresses(target, q, Some(net))
            {
                return Lookup::Found { addrs, shuffle };
            }
            if let Some((addrs, shuffle)) = self.alias_addresses(rest, q, Some(net)) {
                return Lookup::Found { addrs, shuffle };
            }
            return Lookup::NxDomain;
        }
        if self.is_cluster_name(&name) || self.alias_owners(&name).is_some() {
            Lookup::NxDomain
        } else {
            Lookup::NotOurs
        }
    }

    /// The name of `ip` for PTR: `<service>.<network>` for a VIP, `<task
    /// name>.<network>` for a task's address.
    pub fn ptr(&self, ip: IpAddr) -> Option<String> {
        let owners = self.owners.get(&ip)?;
        let pick = owners
            .iter()
            .find(|o| matches!(o, Owner::Vip { .. }))
            .or_else(|| owners.first())?;
        let (name, network_id) = match pick {
            Owner::Vip {
                service_id,
                network_id,
            } => (self.services.get(service_id)?.name.clone(), network_id),
            Owner::Task {
                service_id,
                task_id,
                network_id,
            } => {
                let s = self.services.get(service_id)?;
                let t = s.tasks.iter().find(|t| t.id == *task_id)?;
                (t.name.clone(), network_id)
            }
        };
        Some(match self.networks.get(network_id) {
            Some(n) if !n.name.is_empty() => format!("{name}.{}", n.name),
            _ => name,
        })
    }

    fn network_id(&self, id_or_name: &str) -> Result<String, ResolveError> {
        if self.networks.contains_key(id_or_name) {
            return Ok(id_or_name.to_string());
        }
        self.network_by_name
            .get(&id_or_name.to_lowercase())
            .cloned()
            .ok_or_else(|| ResolveError::UnknownNetwork(id_or_name.to_string()))
    }

    fn response(&self, target: Target<'_>, network: Option<&str>) -> ResolveResponse {
        let s = target.service();
        let network_id = match network {
            Some(n) => n.to_string(),
            None => self
                .candidates(s, &Querier::Host, None)
                .first()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        };
        let on_network = |a: &&Address| network_id.is_empty() || a.network_id == network_id;
        let endpoint = |t: &TaskRecord, a: &Address| ResolvedEndpoint {
            task_id: t.id.clone(),
            node_id: t.node_id.clone(),
            addr: a.ip.to_string(),
            healthy: true,
            network_id: a.network_id.clone(),
        };
        let endpoints = match target {
            Target::Task(_, t) => t
                .addrs
                .iter()
                .filter(on_network)
                .map(|a| endpoint(t, a))
                .collect(),
            Target::Service(_) | Target::Tasks(_) => s
                .running()
                .flat_map(|t| t.addrs.iter().filter(on_network).map(|a| endpoint(t, a)))
                .collect(),
        };
        let vip = match target {
            Target::Service(s) if s.mode == ResolutionMode::Vip => s
                .vip_on(&network_id)
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        ResolveResponse {
            service_id: s.id.clone(),
            service_name: s.name.clone(),
            network_id,
            vip,
            mode: s.mode as i32,
            ports: s.endpoints.ports.clone(),
            endpoints,
        }
    }

    /// The Resolver API's answer for a name (a service, `tasks.<service>`, a task name or
    /// a network alias, maybe followed by `.<network>`), on `network` (id or name;
    /// empty: the network the name is scoped to, else the service's first). No
    /// visibility rules: the API's callers are the cluster. A service or task name wins
    /// over an alias; of several services with one alias, the first by id.
    pub fn resolve_name(&self, name: &str, network: &str) -> Result<ResolveResponse, ResolveError> {
        let lower = name.trim_end_matches('.').to_lowercase();
        let unknown = || ResolveError::UnknownName(name.to_string());
        let explicit = || -> Result<Option<String>, ResolveError> {
            if network.is_empty() {
                Ok(None)
            } else {
                self.network_id(network).map(Some)
            }
        };
        if let Some(target) = self.target(&lower) {
            return self.resolve_target(target, explicit()?);
        }
        if let Some((owners, tasks)) = self.alias_owners(&lower) {
            return self.resolve_alias(name, owners, tasks, explicit()?);
        }
        let (rest, last) = lower.rsplit_once('.').ok_or_else(unknown)?;
        let scope = self.network_by_name.get(last).ok_or_else(unknown)?;
        if let Some(target) = self.target(rest) {
            let network = explicit()?.unwrap_or_else(|| scope.clone());
            return self.resolve_target(target, Some(network));
        }
        if let Some((owners, tasks)) = self.alias_owners(rest) {
            let network = explicit()?.unwrap_or_else(|| scope.clone());
            return self.resolve_alias(name, owners, tasks, Some(network));
        }
        Err(unknown())
    }

    fn not_on_network(&self, service: &str, network_id: &str) -> ResolveError {
        ResolveError::NotOnNetwork {
            service: service.to_string(),
            network: self
                .networks
                .get(network_id)
                .map(|r| r.name.clone())
                .unwrap_or_else(|| network_id.to_string()),
        }
    }

    /// `target` on `network` (`None`: its first).
    fn resolve_target(
        &self,
        target: Target<'_>,
        network: Option<String>,
    ) -> Result<ResolveResponse, ResolveError> {
        if let Some(n) = &network {
            let s = target.service();
            if !s.networks.iter().any(|x| x == n) {
                return Err(self.not_on_network(&s.name, n));
            }
        }
        Ok(self.response(target, network.as_deref()))
    }

    /// The alias held by `owners` (`tasks`: `tasks.<alias>`) on `network` (`None`: the
    /// first service's best alias network).
    fn resolve_alias(
        &self,
        name: &str,
        owners: &[AliasOwner],
        tasks: bool,
        network: Option<String>,
    ) -> Result<ResolveResponse, ResolveError> {
        let scope = network.as_deref();
        let (s, net) = self
            .alias_targets(owners, &Querier::Host, scope)
            .into_iter()
            .next()
            .ok_or_else(|| match scope {
                Some(n) => self.not_on_network(name, n),
                None => ResolveError::UnknownName(name.to_string()),
            })?;
        let target = if tasks {
            Target::Tasks(s)
        } else {
            Target::Service(s)
        };
        Ok(self.response(target, Some(net)))
    }

    /// The Resolver API's answer for a VIP: its service on the VIP's network.
    pub fn resolve_vip(&self, vip: &str) -> Result<ResolveResponse, ResolveError> {
        let ip = parse_addr(vip).ok_or_else(|| ResolveError::BadVip(vip.to_string()))?;
        let (service_id, network_id) = self
            .owners
            .get(&ip)
            .and_then(|owners| {
                owners.iter().find_map(|o| match o {
                    Owner::Vip {
                        service_id,
                        network_id,
                    } => Some((service_id, network_id)),
                    Owner::Task { .. } => None,
                })
            })
            .ok_or_else(|| ResolveError::UnknownVip(vip.to_string()))?;
        let s = self
            .services
            .get(service_id)
            .ok_or_else(|| ResolveError::UnknownVip(vip.to_string()))?;
        Ok(self.response(Target::Service(s), Some(network_id)))
    }

    /// Every service's endpoints.
    pub fn snapshot(&self) -> Vec<ServiceEndpoints> {
        let mut all: Vec<ServiceEndpoints> = self
            .services
            .values()
            .map(|s| (*s.endpoints).clone())
            .collect();
        all.sort_by(|a, b| a.service_name.cmp(&b.service_name));
        all
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use shoal_proto::v1::{
        Annotations, Endpoint, EndpointSpec, Meta, NetworkAttachment, NetworkAttachmentConfig,
        NetworkSpec, ServiceSpec, TaskStatus,
    };

    use super::*;

    fn net(id: &str, name: &str, ingress: bool) -> Network {
        Network {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                ingress,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn svc(id: &str, name: &str, mode: ResolutionMode, vips: &[(&str, &str)]) -> Service {
        let networks = vips
            .iter()
            .map(|(n, _)| NetworkAttachmentConfig {
                target: n.to_string(),
                ..Default::default()
            })
            .collect();
        Service {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                networks,
                ..Default::default()
            }),
            endpoint: Some(Endpoint {
                spec: Some(EndpointSpec {
                    mode: mode as i32,
                    ports: Vec::new(),
                }),
                ports: Vec::new(),
                virtual_ips: if mode == ResolutionMode::Vip {
                    vips.iter()
                        .map(|(n, a)| VirtualIp {
                            network_id: n.to_string(),
                            addr: a.to_string(),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            }),
            ..Default::default()
        }
    }

    fn task(
        id: &str,
        service: &str,
        slot: u64,
        state: TaskState,
        addrs: &[(&str, &str)],
    ) -> Arc<Task> {
        Arc::new(Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: service.into(),
            slot,
            node_id: "node1".into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            networks: addrs
                .iter()
                .map(|(n, a)| NetworkAttachment {
                    network: Some(net(n, "", false)),
                    addresses: vec![a.to_string()],
                    aliases: Vec::new(),
                })
                .collect(),
            ..Default::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// web (vip) on front; db (dnsrr) on back; api on front+back; a task of web
    /// queries from 10.0.1.10, a task of db from 10.0.2.10.
    fn table() -> Table {
        let mut t = Table::default();
        t.set_networks(vec![
            NetworkRecord::from_network(&net("nf", "front", false)).unwrap(),
            NetworkRecord::from_network(&net("nb", "back", false)).unwrap(),
            NetworkRecord::from_network(&net("ni", "ingress", true)).unwrap(),
        ]);
        let web = svc(
            "sw",
            "web",
            ResolutionMode::Vip,
            &[("nf", "10.0.1.2/24"), ("ni", "10.0.0.2/24")],
        );
        let web_tasks = vec![
            task(
                "tw1",
                "sw",
                1,
                TaskState::Running,
                &[("nf", "10.0.1.10/24"), ("ni", "10.0.0.10/24")],
            ),
            task(
                "tw2",
                "sw",
                2,
                TaskState::Running,
                &[("nf", "10.0.1.11/24"), ("ni", "10.0.0.11/24")],
            ),
            task(
                "tw3",
                "sw",
                3,
                TaskState::Starting,
                &[("nf", "10.0.1.12/24")],
            ),
            task("tw4", "sw", 4, TaskState::Failed, &[("nf", "10.0.1.13/24")]),
        ];
        let db = svc("sd", "db", ResolutionMode::Dnsrr, &[("nb", "")]);
        let db_tasks = vec![
            task(
                "td1",
                "sd",
                1,
                TaskState::Running,
                &[("nb", "10.0.2.10/24")],
            ),
            task(
                "td2",
                "sd",
                2,
                TaskState::Running,
                &[("nb", "10.0.2.11/24")],
            ),
        ];
        let api = svc(
            "sa",
            "api",
            ResolutionMode::Vip,
            &[("nf", "10.0.1.3/24"), ("nb", "10.0.2.3/24")],
        );
        for (s, tasks) in [(web, web_tasks), (db, db_tasks), (api, Vec::new())] {
            let id = s.meta.as_ref().unwrap().id.clone();
            assert!(t.put_service(&id, ServiceRecord::build(&s, &tasks)));
        }
        t
    }

    fn found(l: Lookup) -> Vec<IpAddr> {
        match l {
            Lookup::Found { mut addrs, .. } => {
                addrs.sort();
                addrs
            }
            other => panic!("expected addresses, got {other:?}"),
        }
    }

    #[test]
    fn the_host_sees_everything_and_gets_vips_or_tasks() {
        let t = table();
        let host = Querier::Host;
        assert_eq!(found(t.lookup("web", &host)), vec![ip("10.0.1.2")]);
        assert_eq!(found(t.lookup("WEB.", &host)), vec![ip("10.0.1.2")]);
        assert_eq!(
            found(t.lookup("tasks.web", &host)),
            vec![ip("10.0.1.10"), ip("10.0.1.11")]
        );
        assert_eq!(
            found(t.lookup("db", &host)),
            vec![ip("10.0.2.10"), ip("10.0.2.11")]
        );
        assert_eq!(found(t.lookup("web.ingress", &host)), vec![ip("10.0.0.2")]);
        assert_eq!(found(t.lookup("api.back", &host)), vec![ip("10.0.2.3")]);
        assert_eq!(found(t.lookup("web.1.tw1", &host)), vec![ip("10.0.1.10")]);
        assert_eq!(
            found(t.lookup("web.1.tw1.front", &host)),
            vec![ip("10.0.1.10")]
        );
        // api has no tasks: its VIP still answers, tasks.api is empty.
        assert_eq!(found(t.lookup("tasks.api", &host)), Vec::<IpAddr>::new());
    }

    #[test]
    fn unknown_cluster_names_are_nxdomain_and_the_rest_is_not_ours() {
        let t = table();
        let host = Querier::Host;
        assert_eq!(t.lookup("nope", &host), Lookup::NxDomain);
        assert_eq!(t.lookup("tasks.nope", &host), Lookup::NxDomain);
        assert_eq!(t.lookup("nope.front", &host), Lookup::NxDomain);
        assert_eq!(t.lookup("web.back", &host), Lookup::NxDomain);
        // Not RUNNING: no task name.
        assert_eq!(t.lookup("web.3.tw3", &host), Lookup::NxDomain);
        assert_eq!(t.lookup("example.com", &host), Lookup::NotOurs);
        assert_eq!(t.lookup("www.example.com.", &host), Lookup::NotOurs);
    }

    #[test]
    fn a_task_sees_only_services_on_its_networks() {
        let t = table();
        let web_task = t.querier(ip("10.0.1.10"));
        assert!(matches!(&web_task, Querier::Task { task_id, networks, .. }
            if task_id == "tw1" && networks == &vec!["nf".to_string()]));
        assert_eq!(found(t.lookup("web", &web_task)), vec![ip("10.0.1.2")]);
        assert_eq!(found(t.lookup("api", &web_task)), vec![ip("10.0.1.3")]);
        assert_eq!(t.lookup("db", &web_task), Lookup::NxDomain);
        assert_eq!(t.lookup("tasks.db", &web_task), Lookup::NxDomain);
        assert_eq!(t.lookup("web.ingress", &web_task), Lookup::NxDomain);

        let db_task = t.querier(ip("10.0.2.10"));
        assert_eq!(found(t.lookup("api", &db_task)), vec![ip("10.0.2.3")]);
        assert_eq!(t.lookup("web", &db_task), Lookup::NxDomain);
        // A task not yet RUNNING still asks as itself.
        assert!(matches!(t.querier(ip("10.0.1.12")), Querier::Task { .. }));
        // A finished task's address is nobody's.
        assert_eq!(t.querier(ip("10.0.1.13")), Querier::Host);
        assert_eq!(t.querier(ip("127.0.0.1")), Querier::Host);
    }

    #[test]
    fn ptr_names_vips_and_tasks() {
        let t = table();
        assert_eq!(t.ptr(ip("10.0.1.2")).as_deref(), Some("web.front"));
        assert_eq!(t.ptr(ip("10.0.1.10")).as_deref(), Some("web.1.tw1.front"));
        assert_eq!(t.ptr(ip("10.9.9.9")), None);
    }

    #[test]
    fn a_task_leaving_running_leaves_the_answers() {
        let mut t = table();
        let web = svc(
            "sw",
            "web",
            ResolutionMode::Vip,
            &[("nf", "10.0.1.2/24"), ("ni", "10.0.0.2/24")],
        );
        let tasks = vec![
            task(
                "tw1",
                "sw",
                1,
                TaskState::Running,
                &[("nf", "10.0.1.10/24")],
            ),
            task("tw2", "sw", 2, TaskState::Failed, &[("nf", "10.0.1.11/24")]),
        ];
        assert!(t.put_service("sw", ServiceRecord::build(&web, &tasks)));
        assert!(!t.put_service("sw", ServiceRecord::build(&web, &tasks)));
        assert_eq!(
            found(t.lookup("tasks.web", &Querier::Host)),
            vec![ip("10.0.1.10")]
        );
        assert_eq!(t.lookup("web.2.tw2", &Querier::Host), Lookup::NxDomain);
        assert_eq!(t.ptr(ip("10.0.1.11")), None);
        // Removed: every index forgets it.
        assert!(t.put_service("sw", None));
        assert_eq!(t.lookup("web", &Querier::Host), Lookup::NxDomain);
        assert_eq!(t.ptr(ip("10.0.1.2")), None);
        assert_eq!(t.querier(ip("10.0.1.10")), Querier::Host);
    }

    #[test]
    fn the_resolver_api_resolves_names_and_vips() {
        let t = table();
        let r = t.resolve_name("web", "").unwrap();
        assert_eq!(r.vip, "10.0.1.2");
        assert_eq!(r.network_id, "nf");
        assert_eq!(r.endpoints.len(), 2);
        let r = t.resolve_name("web", "ingress").unwrap();
        assert_eq!(r.vip, "10.0.0.2");
        assert_eq!(r.endpoints.len(), 2);
        let r = t.resolve_vip("10.0.2.3").unwrap();
        assert_eq!(
            (r.service_name.as_str(), r.network_id.as_str()),
            ("api", "nb")
        );
        assert!(matches!(
            t.resolve_name("web", "back"),
            Err(ResolveError::NotOnNetwork { .. })
        ));
        assert!(matches!(
            t.resolve_name("zzz", ""),
            Err(ResolveError::UnknownName(_))
        ));
        assert!(matches!(
            t.resolve_vip("10.0.1.10"),
            Err(ResolveError::UnknownVip(_))
        ));
        let r = t.resolve_name("web.2.tw2", "").unwrap();
        assert_eq!(r.endpoints.len(), 1);
        assert_eq!(r.endpoints[0].addr, "10.0.1.11");
    }

    /// `service` with `aliases` on its networks: in `spec.task.networks` (`in_task`) or
    /// in `spec.networks`.
    fn with_aliases(mut service: Service, aliases: &[(&str, &[&str])], in_task: bool) -> Service {
        let spec = service.spec.get_or_insert_with(Default::default);
        let configs: Vec<NetworkAttachmentConfig> = aliases
            .iter()
            .map(|(n, a)| NetworkAttachmentConfig {
                target: n.to_string(),
                aliases: a.iter().map(|x| x.to_string()).collect(),
                ..Default::default()
            })
            .collect();
        if in_task {
            spec.task.get_or_insert_with(Default::default).networks = configs;
        } else {
            spec.networks = configs;
        }
        service
    }

    /// cache (vip) on front (alias `redis`, twice, and `Cache` itself) and back (alias
    /// `KV.`), aliases in its task spec; one task running on both, one starting.
    fn cache_service(aliases: &[(&str, &[&str])]) -> (Service, Vec<Arc<Task>>) {
        let s = svc(
            "sc",
            "cache",
            ResolutionMode::Vip,
            &[("nf", "10.0.1.4/24"), ("nb", "10.0.2.4/24")],
        );
        let s = with_aliases(s, aliases, true);
        let tasks = vec![
            task(
                "tc1",
                "sc",
                1,
                TaskState::Running,
                &[("nf", "10.0.1.20/24"), ("nb", "10.0.2.20/24")],
            ),
            task(
                "tc2",
                "sc",
                2,
                TaskState::Starting,
                &[("nf", "10.0.1.21/24"), ("nb", "10.0.2.21/24")],
            ),
        ];
        (s, tasks)
    }

    const NONE: &[&str] = &[];

    const CACHE_ALIASES: &[(&str, &[&str])] =
        &[("nf", &["redis", "Redis", "cache"]), ("nb", &["KV."])];

    fn put(t: &mut Table, service: &Service, tasks: &[Arc<Task>]) -> bool {
        let id = service.meta.as_ref().unwrap().id.clone();
        t.put_service(&id, ServiceRecord::build(service, tasks))
    }

    #[test]
    fn an_alias_answers_like_the_service_name_on_its_network_only() {
        let mut t = table();
        let (cache, tasks) = cache_service(CACHE_ALIASES);
        assert!(put(&mut t, &cache, &tasks));
        let record = t.service("sc").unwrap();
        let names: Vec<(&str, &str)> = record
            .aliases
            .iter()
            .map(|a| (a.name.as_str(), a.network_id.as_str()))
            .collect();
        assert_eq!(names, vec![("redis", "nf"), ("kv", "nb")]);

        // The host: each alias answers the VIP (tasks) on the alias's network.
        let host = Querier::Host;
        assert_eq!(found(t.lookup("redis", &host)), vec![ip("10.0.1.4")]);
        assert_eq!(found(t.lookup("REDIS.", &host)), vec![ip("10.0.1.4")]);
        assert_eq!(found(t.lookup("kv", &host)), vec![ip("10.0.2.4")]);
        assert_eq!(
            t.lookup("tasks.redis", &host),
            Lookup::Found {
                addrs: vec![ip("10.0.1.20")],
                shuffle: true
            }
        );
        assert_eq!(found(t.lookup("tasks.kv", &host)), vec![ip("10.0.2.20")]);
        assert_eq!(found(t.lookup("redis.front", &host)), vec![ip("10.0.1.4")]);
        assert_eq!(t.lookup("redis.back", &host), Lookup::NxDomain);
        assert_eq!(t.lookup("kv.front", &host), Lookup::NxDomain);

        // web's task (front): redis, not kv. db's task (back): kv, not redis.
        let web_task = t.querier(ip("10.0.1.10"));
        assert_eq!(found(t.lookup("redis", &web_task)), vec![ip("10.0.1.4")]);
        assert_eq!(
            found(t.lookup("tasks.redis", &web_task)),
            vec![ip("10.0.1.20")]
        );
        assert_eq!(t.lookup("kv", &web_task), Lookup::NxDomain);
        assert_eq!(t.lookup("tasks.kv", &web_task), Lookup::NxDomain);
        let db_task = t.querier(ip("10.0.2.10"));
        assert_eq!(found(t.lookup("kv", &db_task)), vec![ip("10.0.2.4")]);
        assert_eq!(t.lookup("redis", &db_task), Lookup::NxDomain);
        // The service's own name is on both.
        assert_eq!(found(t.lookup("cache", &db_task)), vec![ip("10.0.2.4")]);
    }

    #[test]
    fn a_dnsrr_alias_answers_the_running_tasks_shuffled() {
        let mut t = table();
        let db = with_aliases(
            svc("sd", "db", ResolutionMode::Dnsrr, &[("nb", "")]),
            &[("nb", &["postgres"])],
            false,
        );
        let tasks = vec![
            task(
                "td1",
                "sd",
                1,
                TaskState::Running,
                &[("nb", "10.0.2.10/24")],
            ),
            task(
                "td2",
                "sd",
                2,
                TaskState::Running,
                &[("nb", "10.0.2.11/24")],
            ),
            task(
                "td3",
                "sd",
                3,
                TaskState::Starting,
                &[("nb", "10.0.2.12/24")],
            ),
        ];
        assert!(put(&mut t, &db, &tasks));
        let db_task = t.querier(ip("10.0.2.11"));
        match t.lookup("postgres", &db_task) {
            Lookup::Found { mut addrs, shuffle } => {
                addrs.sort();
                assert_eq!(addrs, vec![ip("10.0.2.10"), ip("10.0.2.11")]);
                assert!(shuffle);
            }
            other => panic!("postgres: {other:?}"),
        }
        assert_eq!(
            found(t.lookup("tasks.postgres", &db_task)),
            vec![ip("10.0.2.10"), ip("10.0.2.11")]
        );
        assert_eq!(
            t.lookup("postgres", &t.querier(ip("10.0.1.10"))),
            Lookup::NxDomain
        );
    }

    #[test]
    fn a_service_name_wins_over_an_alias() {
        let mut t = table();
        // cache calls itself `web` on back (web is on front) and `db` on front.
        let (cache, tasks) = cache_service(&[("nb", &["web", "api"]), ("nf", &["db"])]);
        assert!(put(&mut t, &cache, &tasks));
        let host = Querier::Host;
        assert_eq!(found(t.lookup("web", &host)), vec![ip("10.0.1.2")]);
        assert_eq!(
            found(t.lookup("tasks.web", &host)),
            vec![ip("10.0.1.10"), ip("10.0.1.11")]
        );
        assert_eq!(found(t.lookup("db", &host)).len(), 2);
        // api is on back too: api wins there.
        let db_task = t.querier(ip("10.0.2.10"));
        assert_eq!(found(t.lookup("api", &db_task)), vec![ip("10.0.2.3")]);
        // db's task cannot see web: on back, `web` is cache's alias.
        assert_eq!(found(t.lookup("web", &db_task)), vec![ip("10.0.2.4")]);
        assert_eq!(
            found(t.lookup("tasks.web", &db_task)),
            vec![ip("10.0.2.20")]
        );
        // web's task sees the service db nowhere: `db` is cache's alias on front.
        let web_task = t.querier(ip("10.0.1.10"));
        assert_eq!(found(t.lookup("db", &web_task)), vec![ip("10.0.1.4")]);
        // The Resolver API has no visibility: the service.
        assert_eq!(t.resolve_name("web", "").unwrap().service_id, "sw");
        // The named service goes: the alias takes the name everywhere.
        assert!(t.put_service("sw", None));
        assert_eq!(found(t.lookup("web", &host)), vec![ip("10.0.2.4")]);
        assert_eq!(t.resolve_name("web", "").unwrap().service_id, "sc");
    }

    #[test]
    fn alias_indexes_follow_each_service() {
        let mut t = table();
        let (cache, tasks) = cache_service(CACHE_ALIASES);
        assert!(put(&mut t, &cache, &tasks));
        // Another service takes `redis` on front too: both answer, shuffled.
        let queue = with_aliases(
            svc("sq", "queue", ResolutionMode::Vip, &[("nf", "10.0.1.5/24")]),
            &[("nf", &["redis"])],
            false,
        );
        assert!(put(&mut t, &queue, &[]));
        let host = Querier::Host;
        assert_eq!(
            found(t.lookup("redis", &host)),
            vec![ip("10.0.1.4"), ip("10.0.1.5")]
        );
        assert!(matches!(
            t.lookup("redis", &host),
            Lookup::Found { shuffle: true, .. }
        ));
        // The same spec again changes nothing.
        assert!(!put(&mut t, &queue, &[]));
        // cache drops `redis` (and keeps `kv`): queue alone.
        let (cache2, tasks) = cache_service(&[("nf", NONE), ("nb", &["kv"])]);
        assert!(put(&mut t, &cache2, &tasks));
        assert_eq!(found(t.lookup("redis", &host)), vec![ip("10.0.1.5")]);
        assert_eq!(found(t.lookup("kv", &host)), vec![ip("10.0.2.4")]);
        // Both go: every alias is forgotten.
        assert!(t.put_service("sq", None));
        assert!(t.put_service("sc", None));
        assert_eq!(t.lookup("redis", &host), Lookup::NxDomain);
        assert_eq!(t.lookup("tasks.kv", &host), Lookup::NxDomain);
        assert!(t.aliases.is_empty());
    }

    #[test]
    fn the_spec_is_the_source_of_aliases_not_the_tasks() {
        let mut t = table();
        let (cache, tasks) = cache_service(&[("nf", NONE), ("nb", NONE)]);
        let tasks: Vec<Arc<Task>> = tasks
            .into_iter()
            .map(|task| {
                let mut task = (*task).clone();
                for att in &mut task.networks {
                    att.aliases = vec!["ghost".into()];
                }
                Arc::new(task)
            })
            .collect();
        assert!(put(&mut t, &cache, &tasks));
        assert_eq!(t.lookup("ghost", &Querier::Host), Lookup::NxDomain);
        // A dotted alias is a cluster name too: never forwarded.
        let (cache, tasks) = cache_service(&[("nb", &["cache.internal"])]);
        assert!(put(&mut t, &cache, &tasks));
        assert_eq!(
            found(t.lookup("cache.internal", &Querier::Host)),
            vec![ip("10.0.2.4")]
        );
        assert_eq!(
            t.lookup("cache.internal", &t.querier(ip("10.0.1.10"))),
            Lookup::NxDomain
        );
    }

    #[test]
    fn the_resolver_api_resolves_aliases() {
        let mut t = table();
        let (cache, tasks) = cache_service(CACHE_ALIASES);
        assert!(put(&mut t, &cache, &tasks));
        let r = t.resolve_name("redis", "").unwrap();
        assert_eq!(
            (r.service_id.as_str(), r.network_id.as_str(), r.vip.as_str()),
            ("sc", "nf", "10.0.1.4")
        );
        assert_eq!(r.service_name, "cache");
        assert_eq!(r.endpoints.len(), 1);
        assert_eq!(r.endpoints[0].addr, "10.0.1.20");
        let r = t.resolve_name("KV", "").unwrap();
        assert_eq!((r.network_id.as_str(), r.vip.as_str()), ("nb", "10.0.2.4"));
        let r = t.resolve_name("kv", "back").unwrap();
        assert_eq!(r.vip, "10.0.2.4");
        let r = t.resolve_name("tasks.redis", "nf").unwrap();
        assert_eq!((r.vip.as_str(), r.endpoints.len()), ("", 1));
        let r = t.resolve_name("redis.front", "").unwrap();
        assert_eq!(r.vip, "10.0.1.4");
        assert!(matches!(
            t.resolve_name("redis", "back"),
            Err(ResolveError::NotOnNetwork { .. })
        ));
        assert!(matches!(
            t.resolve_name("redis.back", ""),
            Err(ResolveError::NotOnNetwork { .. })
        ));
        assert!(matches!(
            t.resolve_name("redis", "nowhere"),
            Err(ResolveError::UnknownNetwork(_))
        ));
    }
}
