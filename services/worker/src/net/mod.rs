//! The worker's data plane: kube-proxy's userspace mode (this kernel has no IPVS),
//! fed by shoal-dns's endpoint table.
//!
//! - [`resolver`]: follows `Resolver.WatchEndpoints` over mutual TLS with the node
//!   certificate, failing over between replicas, and feeds [`DataPlane::apply`];
//! - [`table`]: the endpoint table and the listeners it asks for: routing-mesh ports on
//!   the node address (to every RUNNING task, on any node), host-mode ports (only while
//!   this node runs a task of the service; to this node's tasks), and each VIP's
//!   target ports (to the tasks' addresses on the VIP's network);
//! - [`tcp`], [`udp`]: the proxies of one listener (round robin, the next backend when
//!   one does not answer; UDP per client flow with idle expiry), reading their backends
//!   from a [`pool::Pool`] replaced in place, so a task leaving RUNNING gets no new
//!   connection from the moment the table says so;
//! - [`docker`]: shoal networks present as Docker networks on this host: container VIPs
//!   go on their bridge (`ip addr add <vip>/32`) before they are bound;
//! - [`dns`]: the DNS relay for containers on each such network's gateway, adding the
//!   querier's address as an EDNS Client Subnet option.

pub mod dns;
pub mod docker;
pub mod pool;
pub mod resolver;
pub mod sock;
pub mod table;
pub mod tcp;
pub mod udp;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_proto::v1::EndpointsUpdate;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use resolver::CredsSource;
pub use table::{Kind, ListenKey, Proto, Table, Want};

use crate::config::WorkerConfig;
use pool::Pool;

/// Proxied connections (TCP) or flows (UDP) one listener carries at once; more are
/// dropped.
pub const MAX_CONNS_PER_LISTENER: usize = 10_000;
/// A UDP flow without a datagram either way for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(30);
/// How often the Docker networks are looked at (bridges for VIPs, DNS relays) and
/// listeners that could not be bound are tried again.
const MAINTAIN_PERIOD: Duration = Duration::from_secs(1);
/// How often a missing Docker Engine is looked for again.
const DOCKER_RETRY: Duration = Duration::from_secs(10);

/// What the data plane needs to know about its node.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// This node's id: host-mode ports follow its tasks.
    pub node_id: String,
    /// The node address: routing-mesh and host-mode ports listen there.
    pub node_ip: IpAddr,
    /// shoal-dns's DNS address: the containers' relay sends queries there. None: no
    /// relay.
    pub dns_addr: Option<SocketAddr>,
    pub max_conns: usize,
    pub udp_idle: Duration,
}

impl NetConfig {
    pub fn new(node_id: &str, node_ip: IpAddr) -> Self {
        Self {
            node_id: node_id.to_string(),
            node_ip,
            dns_addr: None,
            max_conns: MAX_CONNS_PER_LISTENER,
            udp_idle: UDP_IDLE,
        }
    }

    /// The node address is the advertise address (the listen IP unless configured).
    pub fn from_worker(cfg: &WorkerConfig, node_id: &str) -> Self {
        let node_ip = cfg
            .effective_advertise_addr()
            .parse()
            .unwrap_or_else(|_| cfg.listen.ip());
        Self {
            dns_addr: cfg.dns_addr.parse().ok(),
            ..Self::new(node_id, node_ip)
        }
    }
}

/// Starts the data plane of a worker: the resolver client (with `resolver_addrs`), the
/// proxies it drives, and the Docker upkeep (container VIPs, the DNS relay with
/// `dns_addr`). None when neither is configured. Runs until `stop`.
pub fn start(cfg: &WorkerConfig, node_id: &str, stop: CancellationToken) -> Option<DataPlane> {
    if cfg.resolver_addrs.is_empty() && cfg.dns_addr.is_empty() {
        return None;
    }
    let state_dir = cfg.state_dir.clone();
    let creds: CredsSource = Arc::new(move || shoal_pki::NodeCredentials::load(&state_dir).ok());
    Some(start_with(
        NetConfig::from_worker(cfg, node_id),
        cfg.resolver_addrs.clone(),
        creds,
        stop,
    ))
}

/// [`start`] with its parts given.
pub fn start_with(
    cfg: NetConfig,
    resolver_addrs: Vec<String>,
    creds: CredsSource,
    stop: CancellationToken,
) -> DataPlane {
    let from = Some(cfg.node_ip).filter(|ip| !ip.is_unspecified());
    let plane = DataPlane::new(cfg);
    tokio::spawn(resolver::follow(
        plane.clone(),
        resolver_addrs,
        creds,
        from,
        stop.clone(),
    ));
    tokio::spawn(plane.clone().maintain(stop));
    plane
}

/// The proxies of one node, driven by the endpoint table. Cheap to clone; the
/// listeners close when the last clone is dropped (or on [`DataPlane::shutdown`]).
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NetConfig,
    state: Mutex<State>,
    /// The table's VIPs changed: the upkeep looks at them at once.
    changed: Notify,
    root: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

struct State {
    node_id: String,
    table: Table,
    /// Non-loopback VIPs that sit on their Docker bridge (bindable).
    ready_vips: HashSet<IpAddr>,
    /// The subnets of the shoal networks present on this host as Docker networks.
    host_subnets: BTreeMap<String, table::Subnet>,
    listeners: BTreeMap<ListenKey, Listener>,
    /// Listeners that could not be bound, and why (logged once per reason).
    failures: BTreeMap<ListenKey, String>,
}

struct Listener {
    pool: Arc<Pool>,
    stop: CancellationToken,
    label: Arc<str>,
}

impl DataPlane {
    /// A data plane with an empty table. Must be called inside the tokio runtime.
    pub fn new(cfg: NetConfig) -> Self {
        let state = State {
            node_id: cfg.node_id.clone(),
            table: Table::default(),
            ready_vips: HashSet::new(),
            host_subnets: BTreeMap::new(),
            listeners: BTreeMap::new(),
            failures: BTreeMap::new(),
        };
        Self {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(state),
                changed: Notify::new(),
                root: CancellationToken::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        match self.inner.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Applies one message of the endpoint table (a snapshot replaces the table, a
    /// delta upserts and removes services): backends change at once, listeners open
    /// and close accordingly.
    pub fn apply(&self, update: EndpointsUpdate) {
        let vips_changed = {
            let mut st = self.state();
            let before = st.table.vips();
            st.table.apply(update);
            self.reconcile(&mut st);
            st.table.vips() != before
        };
        if vips_changed {
            // Container VIPs go onto their bridge without waiting for the next tick.
            self.inner.changed.notify_one();
        }
    }

    /// This node's id (host-mode ports), e.g. after a new join.
    pub fn set_node_id(&self, node_id: &str) {
        let mut st = self.state();
        if st.node_id != node_id {
            st.node_id = node_id.to_string();
            self.reconcile(&mut st);
        }
    }

    /// The listeners open now.
    pub fn listeners(&self) -> Vec<ListenKey> {
        self.state().listeners.keys().copied().collect()
    }

    /// The backends of the listener on `key`, if it is open.
    pub fn backends(&self, key: &ListenKey) -> Option<Vec<SocketAddr>> {
        self.state()
            .listeners
            .get(key)
            .map(|l| l.pool.get().as_ref().clone())
    }

    /// Whether the listener on `key` serves a client at `ip` (false when not open).
    pub fn admits(&self, key: &ListenKey, ip: IpAddr) -> bool {
        self.state()
            .listeners
            .get(key)
            .is_some_and(|l| l.pool.admits(ip))
    }

    /// Closes every listener (connections in flight carry on); the table stays.
    pub fn shutdown(&self) {
        self.inner.root.cancel();
        self.state().listeners.clear();
    }

    fn set_host(&self, ready: HashSet<IpAddr>, subnets: BTreeMap<String, table::Subnet>) {
        let mut st = self.state();
        if st.ready_vips != ready || st.host_subnets != subnets {
            st.ready_vips = ready;
            st.host_subnets = subnets;
            self.reconcile(&mut st);
        } else if !st.failures.is_empty() {
            self.reconcile(&mut st);
        }
    }

    /// Tries the listeners that could not be bound again.
    fn retry_failed(&self) {
        let mut st = self.state();
        if !st.failures.is_empty() {
            self.reconcile(&mut st);
        }
    }

    fn vips(&self) -> BTreeSet<(String, IpAddr)> {
        self.state().table.vips()
    }

    /// Records the ports a container image EXPOSEs: its services' VIPs forward them.
    pub fn set_exposed(&self, image: &str, ports: BTreeSet<(u16, Proto)>) {
        let mut st = self.state();
        if st.table.set_exposed(image, ports) {
            self.reconcile(&mut st);
        }
    }

    fn unknown_images(&self) -> BTreeSet<String> {
        self.state().table.unknown_images()
    }

    /// Makes the open listeners what the table asks for.
    fn reconcile(&self, st: &mut State) {
        if self.inner.root.is_cancelled() {
            return;
        }
        let desired = st.table.desired(
            &st.node_id,
            self.inner.cfg.node_ip,
            &st.ready_vips,
            &st.host_subnets,
        );
        let mut closed = Vec::new();
        st.listeners.retain(|key, l| {
            if desired.contains_key(key) {
                return true;
            }
            l.stop.cancel();
            closed.push(l.label.clone());
            false
        });
        st.failures.retain(|key, _| desired.contains_key(key));
        let mut opened = Vec::new();
        let mut failed = Vec::new();
        for (key, want) in &desired {
            if let Some(l) = st.listeners.get(key) {
                l.pool.set(want.backends.clone());
                l.pool.set_deny(want.deny.clone());
                continue;
            }
            match self.open(*key, want) {
                Ok(l) => {
                    st.failures.remove(key);
                    opened.push(l.label.clone());
                    st.listeners.insert(*key, l);
                }
                Err(e) => {
                    let reason = e.to_string();
                    if st.failures.get(key) != Some(&reason) {
                        failed.push(format!(
                            "{} {} {key}: {reason}",
                            want.kind, want.service_name
                        ));
                        st.failures.insert(*key, reason);
                    }
                }
            }
        }
        if opened.is_empty() && closed.is_empty() && failed.is_empty() {
            return;
        }
        let span = tracing::info_span!(
            "data plane listeners",
            opened = opened.len(),
            closed = closed.len(),
            failed = failed.len(),
            listening = st.listeners.len(),
            services = st.table.len(),
        );
        let _entered = span.enter();
        for l in &opened {
            tracing::info!(listener = %l, "listening");
        }
        for l in &closed {
            tracing::info!(listener = %l, "closed");
        }
        for f in &failed {
            tracing::warn!(listener = %f, "cannot listen; will retry");
        }
    }

    fn open(&self, key: ListenKey, want: &Want) -> std::io::Result<Listener> {
        let cfg = &self.inner.cfg;
        // Several workers on one host share the VIPs; node addresses are each their own.
        let reuse_port = want.kind == Kind::Vip;
        let pool = Arc::new(Pool::new(want.backends.clone()));
        pool.set_deny(want.deny.clone());
        let stop = self.inner.root.child_token();
        let label: Arc<str> = format!("{} {} {key}", want.kind, want.service_name).into();
        match key.proto {
            Proto::Tcp => {
                let listener = sock::tcp_listener(key.addr, reuse_port)?;
                tokio::spawn(tcp::serve(
                    listener,
                    pool.clone(),
                    label.clone(),
                    cfg.max_conns,
                    stop.clone(),
                ));
            }
            Proto::Udp => {
                let socket = sock::udp_socket(key.addr, reuse_port)?;
                tokio::spawn(udp::serve(
                    socket,
                    pool.clone(),
                    label.clone(),
                    cfg.max_conns,
                    cfg.udp_idle,
                    stop.clone(),
                ));
            }
        }
        Ok(Listener { pool, stop, label })
    }

    /// The Docker upkeep until `stop`: container VIPs onto (and off) their bridges, a
    /// DNS relay on each shoal network's gateway, listeners that failed tried again.
    pub async fn maintain(self, stop: CancellationToken) {
        let mut engine: Option<docker::Engine> = None;
        let mut engine_tried: Option<tokio::time::Instant> = None;
        // VIPs this worker put on a bridge, and which.
        let mut on_bridge: HashMap<IpAddr, String> = HashMap::new();
        let mut relays: HashMap<IpAddr, CancellationToken> = HashMap::new();
        let mut relay_failures: HashMap<IpAddr, String> = HashMap::new();
        let mut tick = tokio::time::interval(MAINTAIN_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.inner.root.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.inner.changed.notified() => {}
            }
            if engine.is_none() && engine_tried.is_none_or(|t| t.elapsed() >= DOCKER_RETRY) {
                engine_tried = Some(tokio::time::Instant::now());
                engine = docker::Engine::connect().await;
                if engine.is_some() {
                    tracing::debug!("data plane: Docker Engine found");
                }
            }
            let networks = match &engine {
                Some(e) => match e.networks().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot list Docker networks");
                        // Keep what we know until Docker answers again.
                        self.retry_failed();
                        continue;
                    }
                },
                None => HashMap::new(),
            };

            // The ports the services' images EXPOSE, from this host's engine (an image
            // it does not have yet is asked for again on the next tick).
            if let Some(e) = &engine {
                for image in self.unknown_images() {
                    if let Some(ports) = e.exposed_ports(&image).await {
                        tracing::debug!(%image, ports = ports.len(), "image's exposed ports");
                        self.set_exposed(&image, ports);
                    }
                }
            }

            // Container VIPs: on their bridge before they are bound.
            let wanted: BTreeSet<(String, IpAddr)> = self
                .vips()
                .into_iter()
                .filter(|(_, ip)| !ip.is_loopback())
                .collect();
            let mut ready = HashSet::new();
            for (network_id, ip) in &wanted {
                let Some(net) = networks.get(network_id) else {
                    continue;
                };
                if on_bridge.get(ip) == Some(&net.bridge) {
                    ready.insert(*ip);
                    continue;
                }
                match docker::add_address(*ip, &net.bridge).await {
                    Ok(()) => {
                        tracing::info!(vip = %ip, bridge = %net.bridge, network = %network_id, "VIP added to its bridge");
                        on_bridge.insert(*ip, net.bridge.clone());
                        ready.insert(*ip);
                    }
                    Err(e) => {
                        tracing::warn!(vip = %ip, error = %e, "cannot add the VIP to its bridge")
                    }
                }
            }
            let wanted_ips: HashSet<IpAddr> = wanted.iter().map(|(_, ip)| *ip).collect();
            let bridges: HashSet<&str> = networks.values().map(|n| n.bridge.as_str()).collect();
            let mut gone = Vec::new();
            for (ip, bridge) in &on_bridge {
                if !bridges.contains(bridge.as_str()) {
                    // The Docker network went away, and the address with it.
                    gone.push(*ip);
                } else if !wanted_ips.contains(ip) {
                    if let Err(e) = docker::del_address(*ip, bridge).await {
                        tracing::warn!(vip = %ip, error = %e, "cannot remove the VIP from its bridge");
                    }
                    gone.push(*ip);
                }
            }
            for ip in gone {
                on_bridge.remove(&ip);
            }
            let subnets = networks
                .values()
                .filter_map(|n| Some((n.network_id.clone(), n.subnet?)))
                .collect();
            self.set_host(ready, subnets);

            // The DNS relay on each shoal network's gateway.
            if let Some(dns_addr) = self.inner.cfg.dns_addr {
                let gateways: HashSet<IpAddr> =
                    networks.values().filter_map(|n| n.gateway).collect();
                relays.retain(|gw, token| {
                    let keep = gateways.contains(gw);
                    if !keep {
                        token.cancel();
                        tracing::info!(gateway = %gw, "DNS relay closed");
                    }
                    keep
                });
                relay_failures.retain(|gw, _| gateways.contains(gw));
                for gw in gateways {
                    if relays.contains_key(&gw) {
                        continue;
                    }
                    let listen = SocketAddr::new(gw, dns::DNS_PORT);
                    let token = self.inner.root.child_token();
                    match dns::spawn_relay(
                        listen,
                        dns_addr,
                        self.inner.cfg.max_conns,
                        token.clone(),
                    ) {
                        Ok(()) => {
                            tracing::info!(%listen, upstream = %dns_addr, "DNS relay listening");
                            relay_failures.remove(&gw);
                            relays.insert(gw, token);
                        }
                        Err(e) => {
                            let reason = e.to_string();
                            if relay_failures.get(&gw) != Some(&reason) {
                                tracing::warn!(%listen, error = %reason, "cannot listen for DNS; will retry");
                                relay_failures.insert(gw, reason);
                            }
                        }
                    }
                }
            }
        }
        for token in relays.values() {
            token.cancel();
        }
        // The worker stops: so do its listeners (connections in flight carry on).
        self.shutdown();
    }
}
