//! The worker's data plane with real sockets: proxies driven in-process through
//! `DataPlane::apply` (the routing mesh, host-mode ports, VIPs, UDP flows, endpoint
//! changes), the containers' DNS relay against an in-test DNS server, and a whole
//! worker (`shoal_worker::run`) following an in-test `Resolver.WatchEndpoints` over
//! mutual TLS.
//!
//! Backends are small servers of these tests on 127.128.x.y addresses (where the
//! process tasks' addresses live); node addresses are 127.0.x.y. Each test uses its
//! own x so the tests can run side by side. The resolver double is a test peer
//! speaking the real protocol: it proves the worker's side (TLS with the node
//! certificate, failover, snapshot then deltas), nothing about shoal-dns.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shoal_grpc_host::ShutdownToken;
use shoal_grpc_host::tls::{ServerCertResolver, incoming, server_config};
use shoal_pki::{NodeCredentials, peer_info};
use shoal_proto::v1::endpoint::VirtualIp;
use shoal_proto::v1::port_config::{Protocol, PublishMode};
use shoal_proto::v1::resolver_server::{Resolver, ResolverServer};
use shoal_proto::v1::{
    EndpointsUpdate, PortConfig, ResolvedEndpoint, ServiceEndpoints, WatchEndpointsRequest,
};
use shoal_testkit::wait_for;
use shoal_worker::net::{DataPlane, ListenKey, NetConfig, Proto, dns};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const DEADLINE: Duration = Duration::from_secs(5);
const INGRESS: &str = "ingress-net-id";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ------------------------------------------------------------------ backends

/// A TCP backend: sends `<id>\n` on every connection, then echoes what it reads.
async fn tcp_backend(addr: SocketAddr, id: &str) -> CancellationToken {
    let listener = TcpListener::bind(addr).await.unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                _ = token.cancelled() => return,
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            let id = id.clone();
            tokio::spawn(async move {
                if stream
                    .write_all(format!("{id}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    stop
}

/// A UDP backend: answers each datagram with `<id>:<datagram>`.
async fn udp_backend(addr: SocketAddr, id: &str) -> CancellationToken {
    let sock = UdpSocket::bind(addr).await.unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, peer) = tokio::select! {
                _ = token.cancelled() => return,
                r = sock.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
            };
            let mut reply = format!("{id}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&reply, peer).await;
        }
    });
    stop
}

/// Connects to `addr` and returns the id line the backend sends; None when the
/// connection is refused or closed without one.
async fn ask(addr: SocketAddr) -> Option<String> {
    let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    let n = tokio::time::timeout(DEADLINE, reader.read_line(&mut line))
        .await
        .ok()?
        .ok()?;
    (n > 0).then(|| line.trim().to_string())
}

/// `n` requests to `addr`: how many each backend answered.
async fn spread(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let id = ask(addr).await.expect("an answer through the proxy");
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// Sends `msg` from `sock` to `to` and returns the answer.
async fn udp_ask(sock: &UdpSocket, to: SocketAddr, msg: &str) -> Option<String> {
    sock.send_to(msg.as_bytes(), to).await.ok()?;
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

// --------------------------------------------------------------------- table

fn endpoint(task: &str, node: &str, addr: &str, network: &str) -> ResolvedEndpoint {
    ResolvedEndpoint {
        task_id: task.into(),
        node_id: node.into(),
        addr: addr.into(),
        healthy: true,
        network_id: network.into(),
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

fn service(
    id: &str,
    ports: Vec<PortConfig>,
    vips: Vec<(&str, &str)>,
    endpoints: Vec<ResolvedEndpoint>,
) -> ServiceEndpoints {
    ServiceEndpoints {
        service_id: id.into(),
        service_name: format!("svc-{id}"),
        mode: 0,
        ports,
        virtual_ips: vips
            .into_iter()
            .map(|(network, addr)| VirtualIp {
                network_id: network.into(),
                addr: addr.into(),
            })
            .collect(),
        endpoints,
        image: String::new(),
    }
}

fn snapshot(services: Vec<ServiceEndpoints>) -> EndpointsUpdate {
    EndpointsUpdate {
        snapshot: true,
        upserts: services,
        removed_service_ids: vec![],
        ingress_network_id: INGRESS.into(),
    }
}

fn upsert(s: ServiceEndpoints) -> EndpointsUpdate {
    EndpointsUpdate {
        snapshot: false,
        upserts: vec![s],
        removed_service_ids: vec![],
        ingress_network_id: INGRESS.into(),
    }
}

fn plane(node: &str, node_ip: &str) -> DataPlane {
    DataPlane::new(NetConfig::new(node, ip(node_ip)))
}

fn tcp_key(addr: &str) -> ListenKey {
    ListenKey {
        addr: sa(addr),
        proto: Proto::Tcp,
    }
}

/// Waits until `addr` refuses connections.
async fn wait_refused(addr: SocketAddr) {
    wait_for(
        &format!("{addr} to refuse connections"),
        DEADLINE,
        || async { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await
    .unwrap();
}

// --------------------------------------------------------------------- tests

/// Seed 001's mesh: two tasks on two nodes, three nodes answering on the published
/// port (including the one without a task), round robin over both tasks; a task that
/// leaves RUNNING gets no new connection at once, a connection in flight to it carries
/// on, and with no task left new connections are closed at once.
#[tokio::test]
async fn routing_mesh_round_robin_and_endpoint_removal() {
    let _t1 = tcp_backend(sa("127.128.201.1:8080"), "t1").await;
    let _t2 = tcp_backend(sa("127.128.201.2:8080"), "t2").await;
    let web = |eps| {
        service(
            "web",
            vec![port(8080, 30080, PublishMode::Ingress, Protocol::Tcp)],
            vec![],
            eps,
        )
    };
    let both = vec![
        endpoint("t1", "n1", "127.128.201.1", INGRESS),
        endpoint("t1", "n1", "127.128.202.1", "other-net"),
        endpoint("t2", "n2", "127.128.201.2", INGRESS),
    ];
    let planes = [
        plane("n1", "127.0.201.1"),
        plane("n2", "127.0.201.2"),
        plane("n3", "127.0.201.3"),
    ];
    for p in &planes {
        p.apply(snapshot(vec![web(both.clone())]));
    }
    for node in ["127.0.201.1", "127.0.201.2", "127.0.201.3"] {
        let addr = SocketAddr::new(ip(node), 30080);
        assert!(ask(addr).await.is_some(), "node {node} answers");
    }
    // Node 3 runs no task: 20 requests reach both tasks, round robin.
    let mesh = sa("127.0.201.3:30080");
    let seen = spread(mesh, 20).await;
    assert_eq!(
        seen,
        BTreeMap::from([("t1".to_string(), 10), ("t2".to_string(), 10)])
    );
    assert_eq!(
        planes[2].backends(&tcp_key("127.0.201.3:30080")).unwrap(),
        vec![sa("127.128.201.1:8080"), sa("127.128.201.2:8080")]
    );

    // A connection to t2 is in flight when t2 leaves RUNNING.
    let mut in_flight = None;
    for _ in 0..2 {
        let mut reader = BufReader::new(TcpStream::connect(mesh).await.unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line.trim() == "t2" {
            in_flight = Some(reader);
            break;
        }
    }
    let mut in_flight = in_flight.expect("one of two connections reaches t2");
    planes[2].apply(upsert(web(vec![endpoint(
        "t1",
        "n1",
        "127.128.201.1",
        INGRESS,
    )])));
    // At once: every new connection goes to t1.
    let seen = spread(mesh, 10).await;
    assert_eq!(seen, BTreeMap::from([("t1".to_string(), 10)]));
    // The one in flight still talks to t2.
    in_flight.get_mut().write_all(b"ping\n").await.unwrap();
    let mut echo = String::new();
    in_flight.read_line(&mut echo).await.unwrap();
    assert_eq!(echo, "ping\n");

    // No endpoint left: the port stays open but closes new connections at once.
    planes[2].apply(upsert(web(vec![])));
    let started = std::time::Instant::now();
    let stream = TcpStream::connect(mesh).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, BufReader::new(stream).read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// `service update --publish-add` opens the port; removing it (or the service)
/// closes it.
#[tokio::test]
async fn publish_add_opens_the_port_and_removal_closes_it() {
    let _t1 = tcp_backend(sa("127.128.203.1:80"), "t1").await;
    let eps = vec![endpoint("t1", "n9", "127.128.203.1", INGRESS)];
    let p = plane("n1", "127.0.203.1");
    p.apply(snapshot(vec![service("web", vec![], vec![], eps.clone())]));
    assert!(p.listeners().is_empty());
    let published = sa("127.0.203.1:30081");
    assert!(TcpStream::connect(published).await.is_err());

    p.apply(upsert(service(
        "web",
        vec![port(80, 30081, PublishMode::Ingress, Protocol::Tcp)],
        vec![],
        eps.clone(),
    )));
    assert_eq!(ask(published).await.as_deref(), Some("t1"));

    p.apply(upsert(service("web", vec![], vec![], eps.clone())));
    wait_refused(published).await;

    p.apply(upsert(service(
        "web",
        vec![port(80, 30081, PublishMode::Ingress, Protocol::Tcp)],
        vec![],
        eps,
    )));
    assert_eq!(ask(published).await.as_deref(), Some("t1"));
    p.apply(EndpointsUpdate {
        snapshot: false,
        upserts: vec![],
        removed_service_ids: vec!["web".into()],
        ingress_network_id: INGRESS.into(),
    });
    wait_refused(published).await;
    assert!(p.listeners().is_empty());
}

/// `--publish mode=host`: only the node running a task listens, and forwards to its
/// own task; when the task moves, so does the port.
#[tokio::test]
async fn host_mode_port_binds_only_with_a_local_task() {
    let _a = tcp_backend(sa("127.128.204.1:80"), "on-n1").await;
    let _b = tcp_backend(sa("127.128.204.2:80"), "on-n2").await;
    let host_port = |eps| {
        service(
            "web",
            vec![port(80, 30082, PublishMode::Host, Protocol::Tcp)],
            vec![],
            eps,
        )
    };
    let n1 = plane("n1", "127.0.204.1");
    let n2 = plane("n2", "127.0.204.2");
    let on_n1 = vec![endpoint("ta", "n1", "127.128.204.1", "net")];
    for p in [&n1, &n2] {
        p.apply(snapshot(vec![host_port(on_n1.clone())]));
    }
    assert_eq!(ask(sa("127.0.204.1:30082")).await.as_deref(), Some("on-n1"));
    assert!(TcpStream::connect(sa("127.0.204.2:30082")).await.is_err());
    assert!(n2.listeners().is_empty());

    // Both nodes run one: each forwards to its own.
    let everywhere = vec![
        endpoint("ta", "n1", "127.128.204.1", "net"),
        endpoint("tb", "n2", "127.128.204.2", "net"),
    ];
    for p in [&n1, &n2] {
        p.apply(upsert(host_port(everywhere.clone())));
    }
    for _ in 0..4 {
        assert_eq!(ask(sa("127.0.204.1:30082")).await.as_deref(), Some("on-n1"));
        assert_eq!(ask(sa("127.0.204.2:30082")).await.as_deref(), Some("on-n2"));
    }

    // n1's task goes: n1 stops listening.
    let on_n2 = vec![endpoint("tb", "n2", "127.128.204.2", "net")];
    for p in [&n1, &n2] {
        p.apply(upsert(host_port(on_n2.clone())));
    }
    wait_refused(sa("127.0.204.1:30082")).await;
    assert_eq!(ask(sa("127.0.204.2:30082")).await.as_deref(), Some("on-n2"));
}

/// A loopback VIP: two workers of one host both bind it (SO_REUSEPORT), TCP and UDP
/// reach the tasks on the VIP's network, round robin.
#[tokio::test]
async fn vip_forwards_tcp_and_udp_to_the_network_endpoints() {
    let _t1 = tcp_backend(sa("127.128.205.1:9000"), "t1").await;
    let _t2 = tcp_backend(sa("127.128.205.2:9000"), "t2").await;
    let _u1 = udp_backend(sa("127.128.205.1:9000"), "t1").await;
    let _u2 = udp_backend(sa("127.128.205.2:9000"), "t2").await;
    let svc = service(
        "db",
        vec![port(9000, 0, PublishMode::Ingress, Protocol::Tcp)],
        vec![("backend-net", "127.128.205.100/16")],
        vec![
            endpoint("t1", "n1", "127.128.205.1", "backend-net"),
            endpoint("t2", "n2", "127.128.205.2", "backend-net"),
            endpoint("t2", "n2", "127.128.206.2", "other-net"),
        ],
    );
    let w1 = plane("n1", "127.0.205.1");
    let w2 = plane("n2", "127.0.205.2");
    w1.apply(snapshot(vec![svc.clone()]));
    w2.apply(snapshot(vec![svc]));
    let vip = sa("127.128.205.100:9000");
    for w in [&w1, &w2] {
        let mut keys = w.listeners();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                ListenKey {
                    addr: vip,
                    proto: Proto::Tcp
                },
                ListenKey {
                    addr: vip,
                    proto: Proto::Udp
                },
            ]
        );
    }
    let seen = spread(vip, 20).await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        vec!["t1", "t2"],
        "{seen:?}"
    );

    // UDP through the VIP: each client flow sticks to one task.
    let client = UdpSocket::bind("127.0.205.9:0").await.unwrap();
    let first = udp_ask(&client, vip, "hello").await.unwrap();
    assert!(first == "t1:hello" || first == "t2:hello", "{first}");
    let who = first.split(':').next().unwrap().to_string();
    for i in 0..5 {
        let answer = udp_ask(&client, vip, &format!("m{i}")).await.unwrap();
        assert_eq!(answer, format!("{who}:m{i}"));
    }
}

/// An ingress UDP port: flows round robin over the tasks, each flow sticks to its
/// task, and a flow whose task left moves to one still there.
#[tokio::test]
async fn udp_flows_through_the_mesh() {
    let _u1 = udp_backend(sa("127.128.207.1:5300"), "t1").await;
    let _u2 = udp_backend(sa("127.128.207.2:5300"), "t2").await;
    let svc = |eps| {
        service(
            "dns",
            vec![port(5300, 30053, PublishMode::Ingress, Protocol::Udp)],
            vec![],
            eps,
        )
    };
    let p = plane("n1", "127.0.207.1");
    p.apply(snapshot(vec![svc(vec![
        endpoint("t1", "n1", "127.128.207.1", INGRESS),
        endpoint("t2", "n2", "127.128.207.2", INGRESS),
    ])]));
    let published = sa("127.0.207.1:30053");
    let a = UdpSocket::bind("127.0.207.10:0").await.unwrap();
    let b = UdpSocket::bind("127.0.207.11:0").await.unwrap();
    let from_a = udp_ask(&a, published, "x").await.unwrap();
    let from_b = udp_ask(&b, published, "y").await.unwrap();
    let mut owners = vec![
        from_a.split(':').next().unwrap().to_string(),
        from_b.split(':').next().unwrap().to_string(),
    ];
    let a_owner = owners[0].clone();
    owners.sort();
    assert_eq!(owners, vec!["t1", "t2"], "two flows, two tasks");
    for i in 0..3 {
        assert_eq!(
            udp_ask(&a, published, &format!("{i}")).await.unwrap(),
            format!("{a_owner}:{i}")
        );
    }
    // a's task leaves: its next datagram goes to the other one.
    let (gone, stays) = if a_owner == "t1" {
        ("t1", endpoint("t2", "n2", "127.128.207.2", INGRESS))
    } else {
        ("t2", endpoint("t1", "n1", "127.128.207.1", INGRESS))
    };
    p.apply(upsert(svc(vec![stays.clone()])));
    let answer = udp_ask(&a, published, "again").await.unwrap();
    assert_eq!(answer, format!("{}:again", stays.task_id));
    assert_ne!(stays.task_id, gone);
}

// ------------------------------------------------------------- DNS relay

/// The EDNS Client Subnet of a query (address, source prefix), if any.
type Ecs = Option<(IpAddr, u8)>;
type Seen = Arc<Mutex<Vec<Ecs>>>;

/// A UDP + TCP DNS server that answers every A query with 10.9.9.9 and records the
/// EDNS Client Subnet of each query (address, source prefix) or None.
async fn dns_server(addr: SocketAddr) -> Seen {
    let seen: Seen = Arc::default();
    fn answer(query: &[u8], seen: &Mutex<Vec<Ecs>>) -> Option<Vec<u8>> {
        let q = Message::from_vec(query).ok()?;
        let ecs = q
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
            .and_then(|o| match o {
                EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix())),
                _ => None,
            });
        seen.lock().unwrap().push(ecs);
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.add_queries(q.queries.clone());
        let name = q.queries.first()?.name().clone();
        r.add_answer(Record::from_rdata(name, 0, RData::A(A::new(10, 9, 9, 9))));
        if q.edns.is_some() {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            r.edns = Some(e);
        }
        r.to_vec().ok()
    }
    let udp = UdpSocket::bind(addr).await.unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let s = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            if let Some(a) = answer(&buf[..n], &s) {
                let _ = udp.send_to(&a, peer).await;
            }
        }
    });
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 2];
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if stream.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let Some(a) = answer(&q, &s) else { return };
                    let mut out = (a.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&a);
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    seen
}

fn a_query(name: &str) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.metadata.recursion_desired = true;
    m
}

#[tokio::test]
async fn dns_relay_adds_the_querier_as_client_subnet() {
    let upstream = sa("127.0.208.53:5353");
    let seen = dns_server(upstream).await;
    let relay = sa("127.0.208.1:5354");
    let stop = CancellationToken::new();
    dns::spawn_relay(relay, upstream, 100, stop.clone()).unwrap();
    // Another worker on the same host binds the same relay address (SO_REUSEPORT).
    let other = CancellationToken::new();
    dns::spawn_relay(relay, upstream, 100, other.clone()).unwrap();
    other.cancel();

    // UDP, a plain query (no EDNS): ECS 127.0.208.9/32 upstream, no OPT back.
    let client = UdpSocket::bind("127.0.208.9:0").await.unwrap();
    let q = a_query("web.");
    client.send_to(&q.to_vec().unwrap(), relay).await.unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(DEADLINE, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.metadata.id, q.metadata.id);
    assert_eq!(answer.answers.len(), 1);
    assert!(answer.edns.is_none());
    assert_eq!(
        seen.lock().unwrap().last().cloned().flatten(),
        Some((ip("127.0.208.9"), 32))
    );

    // A spoofed ECS is replaced by the querier's address.
    let mut q = a_query("db.");
    let mut e = Edns::new();
    e.options_mut()
        .insert(EdnsOption::Subnet("10.1.2.3/32".parse().unwrap()));
    q.edns = Some(e);
    client.send_to(&q.to_vec().unwrap(), relay).await.unwrap();
    let (n, _) = tokio::time::timeout(DEADLINE, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert!(answer.edns.is_some());
    assert_eq!(
        seen.lock().unwrap().last().cloned().flatten(),
        Some((ip("127.0.208.9"), 32))
    );

    // TCP: two queries on one connection.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(sa("127.0.208.10:0")).unwrap();
    let mut stream = socket.connect(relay).await.unwrap();
    for name in ["a.", "b."] {
        let q = a_query(name).to_vec().unwrap();
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        stream.write_all(&out).await.unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut a).await.unwrap();
        let answer = Message::from_vec(&a).unwrap();
        assert_eq!(answer.answers.len(), 1);
        assert_eq!(
            seen.lock().unwrap().last().cloned().flatten(),
            Some((ip("127.0.208.10"), 32))
        );
    }
    stop.cancel();
}

// ------------------------------------------------- through a whole worker

type EndpointStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<EndpointsUpdate, Status>> + Send>>;

/// The resolver double: every stream starts with the current table as a snapshot,
/// then gets the deltas pushed; node certificates only.
#[derive(Default)]
struct ResolverState {
    table: Mutex<BTreeMap<String, ServiceEndpoints>>,
    streams: Mutex<Vec<tokio::sync::mpsc::Sender<Result<EndpointsUpdate, Status>>>>,
    callers: Mutex<Vec<String>>,
}

impl ResolverState {
    fn upsert(&self, s: ServiceEndpoints) {
        self.table
            .lock()
            .unwrap()
            .insert(s.service_id.clone(), s.clone());
        let update = upsert(s);
        for tx in self.streams.lock().unwrap().iter() {
            let _ = tx.try_send(Ok(update.clone()));
        }
    }

    /// Ends every open stream (as a restarting replica would).
    fn drop_streams(&self) {
        self.streams.lock().unwrap().clear();
    }

    fn open_streams(&self) -> usize {
        self.streams
            .lock()
            .unwrap()
            .iter()
            .filter(|t| !t.is_closed())
            .count()
    }
}

struct ResolverDouble(Arc<ResolverState>);

#[tonic::async_trait]
impl Resolver for ResolverDouble {
    async fn watch_endpoints(
        &self,
        request: Request<WatchEndpointsRequest>,
    ) -> Result<Response<EndpointStream>, Status> {
        let peer = peer_info(&request)
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        self.0.callers.lock().unwrap().push(peer.node_id);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let table: Vec<_> = self.0.table.lock().unwrap().values().cloned().collect();
        tx.try_send(Ok(snapshot(table)))
            .map_err(|_| Status::internal("stream full"))?;
        self.0.streams.lock().unwrap().push(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve_resolver(
    server: &NodeCredentials,
    state: Arc<ResolverState>,
) -> (SocketAddr, ShutdownToken) {
    let resolver = Arc::new(ServerCertResolver::new(server).unwrap());
    let tls = shoal_grpc_host::tls::SwappableConfig::new(
        server_config(resolver, &server.ca_pem).unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = ShutdownToken::new();
    let token = stop.clone();
    let routes = tonic::service::Routes::new(ResolverServer::new(ResolverDouble(state)));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener, tls), token.cancelled_owned())
            .await;
    });
    (addr, stop)
}

/// A whole worker (`run`, as the binary runs it) with `resolver_addrs`: it follows the
/// table over mutual TLS as its node (past a dead replica first), opens the mesh port
/// on its node address, follows deltas, and after the stream is lost reconnects and
/// takes the new snapshot.
#[tokio::test]
async fn worker_follows_the_resolver_over_tls() {
    let _t1 = tcp_backend(sa("127.128.209.1:8080"), "t1").await;
    let _t2 = tcp_backend(sa("127.128.209.2:8080"), "t2").await;
    let ca = common::TestCa::start(Duration::from_secs(3600)).await;
    let dispatcher = common::TestDispatcher::start(&ca.pki, Duration::from_millis(500)).await;
    let state = Arc::new(ResolverState::default());
    let web = |eps, published| {
        service(
            "web",
            vec![port(8080, published, PublishMode::Ingress, Protocol::Tcp)],
            vec![],
            eps,
        )
    };
    state.upsert(web(
        vec![endpoint("t1", "nx", "127.128.209.1", INGRESS)],
        30090,
    ));
    let (resolver_addr, _resolver_stop) = serve_resolver(&ca.pki.server, state.clone()).await;
    let dead = shoal_testkit::free_port(ip("127.0.0.1")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("worker");
    shoal_worker::join(&ca.addr(), &ca.worker_token.to_string(), &state_dir, None)
        .await
        .unwrap();
    let node_ip = "127.0.209.1";
    let cfg = shoal_worker::WorkerConfig {
        listen: SocketAddr::new(ip(node_ip), 0),
        dispatcher_addrs: vec![dispatcher.addr.to_string()],
        resolver_addrs: vec![format!("127.0.0.1:{dead}"), resolver_addr.to_string()],
        state_dir: state_dir.clone(),
        hostname: "net-worker".into(),
        ..shoal_worker::WorkerConfig::default()
    };
    let host = shoal_grpc_host::Host::new("shoal-worker", cfg.listen)
        .bind()
        .await
        .unwrap();
    let shutdown = host.shutdown_token();
    let worker = tokio::spawn(shoal_worker::run(cfg, host));

    let mesh = SocketAddr::new(ip(node_ip), 30090);
    let first = wait_for(
        "the mesh port on the node address",
        Duration::from_secs(15),
        || async { ask(mesh).await },
    )
    .await
    .unwrap();
    assert_eq!(first, "t1");
    let node_id = NodeCredentials::load(&state_dir)
        .unwrap()
        .info()
        .unwrap()
        .node_id;
    assert_eq!(state.callers.lock().unwrap().clone(), vec![node_id]);

    // A delta: a second task joins the rotation.
    state.upsert(web(
        vec![
            endpoint("t1", "nx", "127.128.209.1", INGRESS),
            endpoint("t2", "ny", "127.128.209.2", INGRESS),
        ],
        30090,
    ));
    wait_for("both tasks through the mesh", DEADLINE, || async {
        let seen: HashMap<String, usize> = spread(mesh, 4).await.into_iter().collect();
        (seen.len() == 2).then_some(())
    })
    .await
    .unwrap();

    // The stream is lost; meanwhile the port moved. The worker reconnects and the new
    // snapshot replaces its table.
    state.drop_streams();
    state.table.lock().unwrap().insert(
        "web".into(),
        web(vec![endpoint("t2", "ny", "127.128.209.2", INGRESS)], 30091),
    );
    let moved = SocketAddr::new(ip(node_ip), 30091);
    let answer = wait_for(
        "the moved port after reconnecting",
        Duration::from_secs(15),
        || async { ask(moved).await },
    )
    .await
    .unwrap();
    assert_eq!(answer, "t2");
    wait_refused(mesh).await;
    assert!(state.open_streams() >= 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    wait_refused(moved).await;
}

// ------------------------------------------------- a real Docker network

/// A Docker network standing for a shoal network (as the executor creates them),
/// removed on drop with the containers of this test.
struct DockerNet {
    name: String,
}

impl Drop for DockerNet {
    fn drop(&mut self) {
        shoal_testkit::docker::remove_containers_labelled("shoal.test.net=1");
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

async fn docker(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A container network: the worker puts the VIP on the network's bridge and proxies
/// it, relays the containers' DNS on the gateway with their address as client
/// subnet, and takes the VIP off the bridge when the service goes.
#[tokio::test]
async fn container_network_vip_and_dns_relay() {
    if !shoal_testkit::docker::docker_available() {
        eprintln!("skipped: no Docker Engine");
        return;
    }
    let image = shoal_testkit::docker::busybox_image().unwrap();
    let network_id = "nettest210aaaaaaaaaaaaaaa";
    let net = DockerNet {
        name: "shoal-nettest210".into(),
    };
    let _ = docker(&["network", "rm", &net.name]).await;
    let (ok, out) = docker(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        "10.213.0.0/24",
        "--gateway",
        "10.213.0.1",
        "--label",
        &format!("com.shoal.network.id={network_id}"),
        &net.name,
    ])
    .await;
    assert!(ok, "{out}");
    let bridge = format!("br-{}", &out.trim()[..12]);
    let other = DockerNet {
        name: "shoal-nettest211".into(),
    };
    let _ = docker(&["network", "rm", &other.name]).await;
    let (ok, out) = docker(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        "10.213.1.0/24",
        "--label",
        "com.shoal.network.id=nettest211aaaaaaaaaaaaaaa",
        &other.name,
    ])
    .await;
    assert!(ok, "{out}");

    let upstream = sa("127.0.210.53:5353");
    let seen = dns_server(upstream).await;
    let _t1 = tcp_backend(sa("127.128.210.1:9000"), "t1").await;
    let stop = CancellationToken::new();
    let cfg = NetConfig {
        dns_addr: Some(upstream),
        ..NetConfig::new("n1", ip("127.0.210.1"))
    };
    let plane = shoal_worker::net::start_with(cfg, vec![], Arc::new(|| None), stop.clone());
    let db = service(
        "db",
        vec![port(9000, 0, PublishMode::Ingress, Protocol::Tcp)],
        vec![(network_id, "10.213.0.100/24")],
        vec![endpoint("t1", "n1", "127.128.210.1", network_id)],
    );
    plane.apply(snapshot(vec![db]));

    // From the host: the VIP on the bridge answers.
    let vip = sa("10.213.0.100:9000");
    let answer = wait_for("the container VIP", DEADLINE, || async { ask(vip).await })
        .await
        .unwrap();
    assert_eq!(answer, "t1");
    let ip_show = || async {
        let out = tokio::process::Command::new("ip")
            .args(["-4", "addr", "show", "dev", &bridge])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(ip_show().await.contains("10.213.0.100/32"));

    // From a container: DNS through the relay on the gateway, the VIP through the
    // proxy.
    wait_for("the DNS relay on the gateway", DEADLINE, || async {
        let client = UdpSocket::bind("10.213.0.1:0").await.ok()?;
        client
            .send_to(&a_query("web.").to_vec().ok()?, sa("10.213.0.1:53"))
            .await
            .ok()?;
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf))
            .await
            .ok()?
            .ok()
    })
    .await
    .unwrap();
    let run = |network: &str, ip: &'static str, cmd: &'static str| {
        let image = image.clone();
        let network = network.to_string();
        async move {
            docker(&[
                "run",
                "--rm",
                "--label",
                "shoal.test.net=1",
                "--network",
                &network,
                "--ip",
                ip,
                "--entrypoint",
                "/bin/busybox",
                &image,
                "sh",
                "-c",
                cmd,
            ])
            .await
        }
    };
    let (ok, out) = run(
        &net.name,
        "10.213.0.5",
        "/bin/busybox nslookup web.shoal 10.213.0.1",
    )
    .await;
    assert!(ok && out.contains("10.9.9.9"), "{out}");
    assert!(
        seen.lock().unwrap().contains(&Some((ip("10.213.0.5"), 32))),
        "{:?}",
        seen.lock().unwrap()
    );
    let (ok, out) = run(
        &net.name,
        "10.213.0.5",
        "echo hi | /bin/busybox nc -w 2 10.213.0.100 9000",
    )
    .await;
    assert!(ok && out.starts_with("t1"), "{out}");
    // A container of another shoal network can route to the bridge, but the VIP is
    // not for it.
    wait_for("the other network's subnet known", DEADLINE, || async {
        plane
            .backends(&tcp_key("10.213.0.100:9000"))
            .filter(|_| !plane.admits(&tcp_key("10.213.0.100:9000"), ip("10.213.1.5")))
    })
    .await
    .unwrap();
    let (_, out) = run(
        &other.name,
        "10.213.1.5",
        "echo hi | /bin/busybox nc -w 2 10.213.0.100 9000",
    )
    .await;
    assert!(!out.contains("t1"), "{out}");

    // The service goes: the VIP leaves the proxy and the bridge.
    plane.apply(EndpointsUpdate {
        snapshot: false,
        upserts: vec![],
        removed_service_ids: vec!["db".into()],
        ingress_network_id: INGRESS.into(),
    });
    wait_refused(vip).await;
    wait_for("the VIP off the bridge", DEADLINE, || async {
        (!ip_show().await.contains("10.213.0.100")).then_some(())
    })
    .await
    .unwrap();
    stop.cancel();
}
