//! Shared set-up for shoal-dns's tests: real etcd and NATS, a swarm as `swarm init`
//! leaves it (cluster object with the sealed CA, the KEK file), shoal-dns's own `run`
//! in-process, the objects the manager's allocator would write (networks with their
//! loopback subnets, services with VIPs, tasks with addresses), a tiny upstream DNS
//! server on loopback, and DNS/gRPC clients.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shoal_dns::DnsConfig;
use shoal_grpc_host::{Host, RunError, ShutdownToken};
use shoal_pki::{DEFAULT_CA_VALIDITY, Kek, NodeCredentials, NodeKey, Role, RootCa};
use shoal_proto::v1::endpoint::VirtualIp;
use shoal_proto::v1::endpoint_spec::ResolutionMode;
use shoal_proto::v1::resolver_client::ResolverClient;
use shoal_proto::v1::{
    Annotations, Cluster, ClusterSpec, Driver, Endpoint, EndpointSpec, IpamConfig, IpamOptions,
    Meta, Network, NetworkAttachment, NetworkAttachmentConfig, NetworkSpec, PortConfig,
    ReplicatedService, RootCa as RootCaObject, Service, ServiceSpec, Task, TaskSpec, TaskState,
    TaskStatus, service_spec,
};
use shoal_store::Store;
use shoal_testkit::{Infra, free_port, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};

/// How long any awaited condition may take.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// A task leaving RUNNING must leave the answers within this.
pub const A_SECOND: Duration = Duration::from_secs(1);
pub const STORE_PREFIX: &str = "/shoal/dns-test";
pub const SERVER_NAME: &str = "swarm-manager";
pub const LOOPBACK_SUBNET_KEY: &str = "com.shoal.loopback.subnet";
/// The one name the test upstream knows, and its address.
pub const OUTSIDE_NAME: &str = "outside.test.";
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
/// A name whose answer (60 addresses) does not fit 512 bytes.
pub const BIG_NAME: &str = "big.test.";

/// A swarm's stored state, without any shoal process.
pub struct Swarm {
    pub infra: Infra,
    pub store: Store,
    pub ca: RootCa,
    pub cluster_id: String,
    pub kek_file: PathBuf,
}

impl Swarm {
    pub async fn start() -> anyhow::Result<Swarm> {
        let infra = Infra::start().await?;
        let store = Store::connect(&[infra.etcd.endpoint()], STORE_PREFIX).await?;
        let kek = Kek::generate();
        let kek_file = infra.dir.path().join("swarm-ca.kek");
        kek.to_file(&kek_file)?;
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY)?;
        let cluster_id = shoal_store::new_id();
        store
            .create(Cluster {
                meta: Some(Meta {
                    id: cluster_id.clone(),
                    ..Default::default()
                }),
                spec: Some(ClusterSpec {
                    annotations: Some(Annotations {
                        name: "default".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                root_ca: Some(RootCaObject {
                    ca_cert: ca.cert_pem().as_bytes().to_vec(),
                    ca_key_encrypted: shoal_pki::seal(&kek, ca.key_pem().as_bytes())?,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        Ok(Swarm {
            infra,
            store,
            ca,
            cluster_id,
            kek_file,
        })
    }

    /// shoal-dns's configuration against this swarm: gRPC on `listen`, DNS on a free
    /// port of 127.0.0.1, forwarding to `upstream`.
    pub fn config(&self, upstream: &[String]) -> anyhow::Result<DnsConfig> {
        Ok(DnsConfig {
            etcd_endpoints: vec![self.infra.etcd.endpoint()],
            store_prefix: STORE_PREFIX.into(),
            nats_url: self.infra.nats.url(),
            kek_file: self.kek_file.clone(),
            dns_listen: SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                free_port(Ipv4Addr::LOCALHOST.into())?,
            ),
            upstream: upstream.to_vec(),
            ..DnsConfig::default()
        })
    }

    /// `shoal_dns::run` in-process, as the binary runs it; returns once DNS answers.
    pub async fn start_dns(&self, upstream: &[String]) -> anyhow::Result<RunningDns> {
        let cfg = self.config(upstream)?;
        let dns = cfg.dns_listen;
        let host = Host::new("shoal-dns", (Ipv4Addr::LOCALHOST, 0).into())
            .bind()
            .await?;
        let grpc = host.local_addr();
        let token = host.shutdown_token();
        let task = tokio::spawn(shoal_dns::run(cfg, host));
        let running = RunningDns {
            dns,
            grpc,
            token,
            task: Some(task),
        };
        wait_for("shoal-dns to answer DNS", DEADLINE, || async {
            query(dns, "readiness-probe", RecordType::A, Ask::default())
                .await
                .ok()
        })
        .await?;
        Ok(running)
    }

    /// A certificate of this swarm's CA.
    pub fn credentials(&self, role: Role, cluster_id: &str) -> anyhow::Result<NodeCredentials> {
        let key = NodeKey::generate();
        let cert_pem = self.ca.issue(
            &key.csr_pem()?,
            &shoal_store::new_id(),
            role,
            cluster_id,
            Duration::from_secs(3600),
            &[],
        )?;
        Ok(NodeCredentials {
            cert_pem,
            key_pem: key.key_pem(),
            ca_pem: self.ca.cert_pem().to_string(),
        })
    }

    /// A network as `network create` + the allocator leave it: overlay subnet
    /// `10.0.<n>.0/24`, loopback subnet `127.128.<n>.0/24`.
    pub async fn network(&self, name: &str, n: u8, ingress: bool) -> anyhow::Result<Net> {
        let id = shoal_store::new_id();
        self.store
            .create(Network {
                meta: Some(Meta {
                    id: id.clone(),
                    ..Default::default()
                }),
                spec: Some(NetworkSpec {
                    annotations: Some(Annotations {
                        name: name.into(),
                        ..Default::default()
                    }),
                    driver_config: Some(Driver {
                        name: "overlay".into(),
                        options: HashMap::new(),
                    }),
                    ingress,
                    ..Default::default()
                }),
                driver_state: Some(Driver {
                    name: "overlay".into(),
                    options: HashMap::from([(
                        LOOPBACK_SUBNET_KEY.to_string(),
                        format!("127.128.{n}.0/24"),
                    )]),
                }),
                ipam: Some(IpamOptions {
                    driver: None,
                    configs: vec![IpamConfig {
                        subnet: format!("10.0.{n}.0/24"),
                        gateway: format!("10.0.{n}.1"),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            })
            .await?;
        let network = self.store.get::<Network>(&id).await?;
        Ok(Net {
            id,
            name: name.into(),
            n,
            network,
        })
    }

    /// A process service on `nets`, its VIP `127.128.<n>.<vip_host>` on each (vip mode).
    pub async fn service(
        &self,
        name: &str,
        mode: ResolutionMode,
        nets: &[&Net],
        vip_host: u8,
    ) -> anyhow::Result<Service> {
        let id = shoal_store::new_id();
        let endpoint_spec = EndpointSpec {
            mode: mode as i32,
            ports: vec![PortConfig {
                target_port: 80,
                ..Default::default()
            }],
        };
        let virtual_ips = if mode == ResolutionMode::Vip {
            nets.iter()
                .map(|n| VirtualIp {
                    network_id: n.id.clone(),
                    addr: format!("127.128.{}.{vip_host}/24", n.n),
                })
                .collect()
        } else {
            Vec::new()
        };
        let service = self
            .store
            .create(Service {
                meta: Some(Meta {
                    id: id.clone(),
                    ..Default::default()
                }),
                spec: Some(ServiceSpec {
                    annotations: Some(Annotations {
                        name: name.into(),
                        ..Default::default()
                    }),
                    task: Some(TaskSpec::default()),
                    mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                        replicas: 1,
                    })),
                    networks: nets
                        .iter()
                        .map(|n| NetworkAttachmentConfig {
                            target: n.id.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    endpoint: Some(endpoint_spec.clone()),
                    ..Default::default()
                }),
                endpoint: Some(Endpoint {
                    spec: Some(endpoint_spec.clone()),
                    ports: endpoint_spec.ports.clone(),
                    virtual_ips,
                }),
                ..Default::default()
            })
            .await?;
        Ok(service)
    }

    /// A task of `service` in `state` with address `127.128.<n>.<host>` on each network.
    pub async fn task(
        &self,
        service: &Service,
        slot: u64,
        state: TaskState,
        addrs: &[(&Net, u8)],
    ) -> anyhow::Result<Task> {
        let id = shoal_store::new_id();
        let service_id = service
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        let task = self
            .store
            .create(Task {
                meta: Some(Meta {
                    id,
                    ..Default::default()
                }),
                spec: service.spec.as_ref().and_then(|s| s.task.clone()),
                service_id,
                slot,
                node_id: "node-1".into(),
                service_annotations: service.spec.as_ref().and_then(|s| s.annotations.clone()),
                status: Some(TaskStatus {
                    state: state as i32,
                    ..Default::default()
                }),
                desired_state: TaskState::Running as i32,
                networks: addrs
                    .iter()
                    .map(|(net, host)| NetworkAttachment {
                        network: Some(net.network.clone()),
                        addresses: vec![format!("127.128.{}.{host}/24", net.n)],
                        aliases: Vec::new(),
                    })
                    .collect(),
                endpoint: service.endpoint.clone(),
                ..Default::default()
            })
            .await?;
        Ok(task)
    }

    /// Gives `service` these network aliases, as `service update --network-add
    /// name=..,alias=..` leaves its spec: one attachment config per network, with its
    /// aliases, in `spec.task.networks` (`spec.networks` emptied). Returns the update.
    pub async fn set_aliases(
        &self,
        service: &Service,
        aliases: &[(&Net, &[&str])],
    ) -> anyhow::Result<Service> {
        let mut next = service.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.networks.clear();
        spec.task.get_or_insert_with(Default::default).networks = aliases
            .iter()
            .map(|(net, names)| NetworkAttachmentConfig {
                target: net.id.clone(),
                aliases: names.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            })
            .collect();
        Ok(self.store.update(next).await?)
    }

    /// Moves `task` to `state` (as the dispatcher's status writes do).
    pub async fn set_state(&self, task: &Task, state: TaskState) -> anyhow::Result<Task> {
        let mut next = task.clone();
        next.status.get_or_insert_with(Default::default).state = state as i32;
        Ok(self.store.update(next).await?)
    }

    /// A Resolver client over mTLS with `creds`.
    pub async fn resolver(
        &self,
        addr: SocketAddr,
        creds: &NodeCredentials,
    ) -> anyhow::Result<ResolverClient<Channel>> {
        let channel = GrpcEndpoint::from_shared(format!("https://{addr}"))?
            .tls_config(creds.client_tls(SERVER_NAME))?
            .connect()
            .await?;
        Ok(ResolverClient::new(channel))
    }

    /// Waits until the Resolver API is served (the swarm exists, the table is built).
    pub async fn resolver_ready(
        &self,
        addr: SocketAddr,
        creds: &NodeCredentials,
    ) -> anyhow::Result<ResolverClient<Channel>> {
        wait_for("the Resolver API to serve", DEADLINE, || async {
            let mut client = self.resolver(addr, creds).await.ok()?;
            let probe = shoal_proto::v1::ResolveRequest {
                target: Some(shoal_proto::v1::resolve_request::Target::Name(
                    "readiness-probe".into(),
                )),
                network: String::new(),
            };
            match client.resolve(probe).await {
                Err(s) if s.code() == tonic::Code::Unavailable => None,
                Err(s) if s.code() == tonic::Code::Unknown => None,
                _ => Some(client),
            }
        })
        .await
    }
}

/// A network as the tests use it.
pub struct Net {
    pub id: String,
    pub name: String,
    pub n: u8,
    pub network: Network,
}

impl Net {
    /// `127.128.<n>.<host>`.
    pub fn addr(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 128, self.n, host))
    }
}

pub fn id_of(service: &Service) -> String {
    service
        .meta
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default()
}

pub fn task_id(task: &Task) -> String {
    task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

/// An in-process shoal-dns.
pub struct RunningDns {
    pub dns: SocketAddr,
    pub grpc: SocketAddr,
    token: ShutdownToken,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl RunningDns {
    /// Stops it as SIGTERM does and checks it exits cleanly.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .context("shoal-dns did not stop")??
                .map_err(|e| anyhow!("shoal-dns failed: {e}"))?;
        }
        Ok(())
    }
}

impl Drop for RunningDns {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// How to ask.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    /// The client's source address (any 127/8 address is local on Linux).
    pub from: Option<IpAddr>,
    /// An EDNS Client Subnet option naming this address (/32).
    pub ecs: Option<IpAddr>,
    pub tcp: bool,
    /// Send an OPT record (EDNS) even without `ecs`.
    pub edns: bool,
}

/// A parsed DNS answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: ResponseCode,
    pub truncated: bool,
    pub authoritative: bool,
    pub addrs: Vec<IpAddr>,
    pub names: Vec<String>,
    pub ttls: Vec<u32>,
    pub message: Message,
}

impl Answer {
    pub fn sorted_addrs(&self) -> Vec<IpAddr> {
        let mut a = self.addrs.clone();
        a.sort();
        a
    }
}

/// One DNS query to `server` over UDP or TCP, with a 3 s timeout.
pub async fn query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    ask: Ask,
) -> anyhow::Result<Answer> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name)?, qtype));
    if ask.edns || ask.ecs.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        if let Some(ip) = ask.ecs {
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(ip, 32, 0)));
        }
        msg.set_edns(edns);
    }
    let bytes = msg.to_vec()?;
    let from = ask.from.unwrap_or(Ipv4Addr::LOCALHOST.into());
    let exchange = async {
        if ask.tcp {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from, 0))?;
            let mut stream = socket.connect(server).await?;
            let len = u16::try_from(bytes.len())?;
            stream.write_all(&len.to_be_bytes()).await?;
            stream.write_all(&bytes).await?;
            let len = stream.read_u16().await?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await?;
            Ok::<_, anyhow::Error>(buf)
        } else {
            let socket = UdpSocket::bind(SocketAddr::new(from, 0)).await?;
            socket.connect(server).await?;
            socket.send(&bytes).await?;
            let mut buf = vec![0u8; 65535];
            let n = socket.recv(&mut buf).await?;
            buf.truncate(n);
            Ok(buf)
        }
    };
    let buf = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| anyhow!("no answer from {server} for {name} {qtype}"))??;
    let message = Message::from_vec(&buf)?;
    anyhow::ensure!(
        message.metadata.id == msg.metadata.id,
        "answer id {} for query id {}",
        message.metadata.id,
        msg.metadata.id
    );
    let mut addrs = Vec::new();
    let mut names = Vec::new();
    let mut ttls = Vec::new();
    for r in &message.answers {
        ttls.push(r.ttl);
        match &r.data {
            RData::A(a) => addrs.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => addrs.push(IpAddr::V6(a.0)),
            RData::PTR(p) => names.push(p.0.to_ascii()),
            _ => {}
        }
    }
    Ok(Answer {
        code: message.metadata.response_code,
        truncated: message.metadata.truncation,
        authoritative: message.metadata.authoritative,
        addrs,
        names,
        ttls,
        message,
    })
}

/// Waits until `name` answers `want` (sorted) for `ask`.
pub async fn wait_answer(
    server: SocketAddr,
    name: &str,
    ask: Ask,
    want: &[IpAddr],
    deadline: Duration,
) -> anyhow::Result<Answer> {
    let mut want = want.to_vec();
    want.sort();
    let last = std::sync::Mutex::new(None);
    let result = wait_for(&format!("{name} to answer {want:?}"), deadline, || async {
        let answer = query(server, name, RecordType::A, ask).await.ok()?;
        let ok = answer.code == ResponseCode::NoError && answer.sorted_addrs() == want;
        if let Ok(mut last) = last.lock() {
            *last = Some((answer.code, answer.addrs.clone()));
        }
        ok.then_some(answer)
    })
    .await;
    result.map_err(|e| {
        anyhow!(
            "{e}; last answer: {:?}",
            last.lock().ok().and_then(|l| l.clone())
        )
    })
}

/// A tiny upstream DNS server on 127.0.0.1 (UDP and TCP, one port): `outside.test.`
/// has one address, `big.test.` sixty, anything else is NXDOMAIN.
pub struct Upstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    /// Whether a query ever arrived carrying an EDNS Client Subnet option.
    pub saw_client_subnet: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn upstream_answer(query: &Message) -> Message {
    let mut answer = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.add_queries(query.queries.clone());
    let Some(q) = query.queries.first() else {
        answer.metadata.response_code = ResponseCode::FormErr;
        return answer;
    };
    let name = q.name().to_ascii().to_lowercase();
    if name == OUTSIDE_NAME && q.query_type() == RecordType::A {
        answer.add_answer(Record::from_rdata(
            q.name().clone(),
            300,
            RData::A(A(OUTSIDE_ADDR)),
        ));
    } else if name == BIG_NAME && q.query_type() == RecordType::A {
        for i in 0..60u8 {
            answer.add_answer(Record::from_rdata(
                q.name().clone(),
                300,
                RData::A(A(Ipv4Addr::new(198, 51, 100, i))),
            ));
        }
    } else if name != OUTSIDE_NAME && name != BIG_NAME {
        answer.metadata.response_code = ResponseCode::NXDomain;
    }
    if let Some(edns) = &query.edns {
        let mut e = Edns::new();
        e.set_max_payload(edns.max_payload().max(512));
        answer.set_edns(e);
    }
    answer
}

impl Upstream {
    pub async fn start() -> anyhow::Result<Upstream> {
        let mut tries = 0;
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if tries < 10 => {
                    tries += 1;
                    let _ = e;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let addr = udp.local_addr()?;
        let queries = Arc::new(AtomicUsize::new(0));
        let saw_client_subnet = Arc::new(AtomicBool::new(false));
        let note = {
            let queries = queries.clone();
            let saw = saw_client_subnet.clone();
            move |q: &Message| {
                queries.fetch_add(1, Ordering::SeqCst);
                if q.edns
                    .as_ref()
                    .is_some_and(|e| e.option(EdnsCode::Subnet).is_some())
                {
                    saw.store(true, Ordering::SeqCst);
                }
            }
        };
        let udp_note = note.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                udp_note(&q);
                let mut answer = upstream_answer(&q);
                if q.edns.is_none() && answer.answers.len() > 20 {
                    answer = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                    answer.add_queries(q.queries.clone());
                    answer.metadata.truncation = true;
                }
                if let Ok(bytes) = answer.to_vec() {
                    let _ = udp.send_to(&bytes, from).await;
                }
            }
        });
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let note = note.clone();
                tokio::spawn(async move {
                    while let Ok(len) = stream.read_u16().await {
                        let mut buf = vec![0u8; usize::from(len)];
                        if stream.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let Ok(q) = Message::from_vec(&buf) else {
                            return;
                        };
                        note(&q);
                        let Ok(bytes) = upstream_answer(&q).to_vec() else {
                            return;
                        };
                        let Ok(len) = u16::try_from(bytes.len()) else {
                            return;
                        };
                        if stream.write_all(&len.to_be_bytes()).await.is_err()
                            || stream.write_all(&bytes).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Upstream {
            addr,
            queries,
            saw_client_subnet,
            tasks: vec![udp_task, tcp_task],
        })
    }
}
