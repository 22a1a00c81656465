//! The DNS relay for containers: on a Docker network's gateway (port 53, UDP and TCP,
//! SO_REUSEPORT so every worker on the host can bind it) each query is relayed to
//! shoal-dns with an EDNS Client Subnet option carrying the querier's address (/32),
//! which is how shoal-dns knows which task asks. An ECS option the querier sent is
//! replaced: a container cannot pose as another task. When the query had no EDNS at
//! all, the relay adds it (advertising 512 bytes, what the querier accepts) and takes
//! the OPT record out of the answer again.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::sock;

/// Where containers send their queries (the gateway's port).
pub const DNS_PORT: u16 = 53;
/// How long shoal-dns may take to answer one query.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The UDP payload size the relay advertises for a querier that sent no EDNS.
const PLAIN_UDP_PAYLOAD: u16 = 512;
const MAX_MESSAGE: usize = 65_535;

/// Relays DNS on `listen` (UDP and TCP) to `upstream` until `stop`; at most
/// `max_inflight` queries (UDP) and connections (TCP) at once.
pub fn spawn_relay(
    listen: SocketAddr,
    upstream: SocketAddr,
    max_inflight: usize,
    stop: CancellationToken,
) -> io::Result<()> {
    let udp = sock::udp_socket(listen, true)?;
    let tcp = sock::tcp_listener(listen, true)?;
    let limit = Arc::new(Semaphore::new(max_inflight));
    tokio::spawn(serve_udp(udp, upstream, limit.clone(), stop.clone()));
    tokio::spawn(serve_tcp(tcp, upstream, limit, stop));
    Ok(())
}

/// `query` with an ECS option for `client` (replacing any), and whether EDNS was
/// added. None when it is not a DNS query.
pub fn with_client_subnet(query: &[u8], client: IpAddr) -> Option<(Vec<u8>, bool)> {
    let mut msg = Message::from_vec(query).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let added = msg.edns.is_none();
    let edns = msg.edns.get_or_insert_with(|| {
        let mut e = Edns::new();
        e.set_max_payload(PLAIN_UDP_PAYLOAD);
        e
    });
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
        v4 => v4,
    };
    let prefix = if client.is_ipv4() { 32 } else { 128 };
    edns.options_mut().remove(EdnsCode::Subnet);
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(client, prefix, 0)));
    Some((msg.to_vec().ok()?, added))
}

/// `answer` without its OPT record (for a querier that sent none); unchanged when it
/// does not parse.
pub fn without_edns(answer: &[u8]) -> Vec<u8> {
    match Message::from_vec(answer) {
        Ok(mut msg) => {
            msg.edns = None;
            msg.to_vec().unwrap_or_else(|_| answer.to_vec())
        }
        Err(_) => answer.to_vec(),
    }
}

fn query_id(msg: &[u8]) -> Option<[u8; 2]> {
    Some([*msg.first()?, *msg.get(1)?])
}

async fn serve_udp(
    sock: UdpSocket,
    upstream: SocketAddr,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let Ok((n, peer)) = received else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "dns relay busy: query dropped");
            continue;
        };
        let query = buf[..n].to_vec();
        let sock = sock.clone();
        let span = tracing::debug_span!("dns relay", querier = %peer, transport = "udp");
        tokio::spawn(
            async move {
                if let Err(e) = relay_udp(&sock, &query, peer, upstream).await {
                    tracing::debug!(error = %e, "query not answered");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn relay_udp(
    sock: &UdpSocket,
    query: &[u8],
    peer: SocketAddr,
    upstream: SocketAddr,
) -> io::Result<()> {
    let Some((query, added)) = with_client_subnet(query, peer.ip()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a DNS query",
        ));
    };
    let id = query_id(&query);
    let up = UdpSocket::bind(sock::any_of(upstream)).await?;
    up.connect(upstream).await?;
    up.send(&query).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        loop {
            let n = up.recv(&mut buf).await?;
            if n >= 12 && query_id(&buf[..n]) == id {
                return Ok::<_, io::Error>(buf[..n].to_vec());
            }
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "shoal-dns did not answer"))??;
    let answer = if added { without_edns(&answer) } else { answer };
    sock.send_to(&answer, peer).await?;
    Ok(())
}

async fn serve_tcp(
    listener: TcpListener,
    upstream: SocketAddr,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let span = tracing::debug_span!("dns relay", querier = %peer, transport = "tcp");
        let stop = stop.clone();
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    r = relay_tcp(client, peer, upstream) => if let Err(e) = r {
                        tracing::debug!(error = %e, "dns connection ended");
                    }
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn read_message(stream: &mut TcpStream, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match tokio::time::timeout(timeout, stream.read_exact(&mut len)).await {
        Err(_) => return Ok(None),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(r) => r?,
    };
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tokio::time::timeout(ANSWER_TIMEOUT, stream.read_exact(&mut msg))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "message cut short"))??;
    Ok(Some(msg))
}

async fn write_message(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

async fn relay_tcp(
    mut client: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
) -> io::Result<()> {
    let mut up: Option<TcpStream> = None;
    while let Some(query) = read_message(&mut client, TCP_IDLE).await? {
        let Some((query, added)) = with_client_subnet(&query, peer.ip()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a DNS query",
            ));
        };
        let stream = match up.as_mut() {
            Some(s) => s,
            None => {
                let s = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(upstream))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "shoal-dns unreachable")
                    })??;
                up.insert(s)
            }
        };
        write_message(stream, &query).await?;
        let Some(answer) = read_message(stream, ANSWER_TIMEOUT).await? else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "shoal-dns did not answer",
            ));
        };
        let answer = if added { without_edns(&answer) } else { answer };
        write_message(&mut client, &answer).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};

    fn query(edns: Option<Edns>) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("web.").unwrap(),
            RecordType::A,
        ));
        m.edns = edns;
        m.to_vec().unwrap()
    }

    fn ecs(msg: &[u8]) -> Option<ClientSubnet> {
        let m = Message::from_vec(msg).unwrap();
        match m.edns?.option(EdnsCode::Subnet)? {
            EdnsOption::Subnet(s) => Some(*s),
            _ => None,
        }
    }

    #[test]
    fn adds_the_querier_as_client_subnet() {
        let ip: IpAddr = "10.0.1.7".parse().unwrap();
        let (q, added) = with_client_subnet(&query(None), ip).unwrap();
        assert!(added);
        let s = ecs(&q).unwrap();
        assert_eq!((s.addr(), s.source_prefix()), (ip, 32));
    }

    #[test]
    fn replaces_a_spoofed_client_subnet() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            "10.9.9.9".parse().unwrap(),
            32,
            0,
        )));
        let ip: IpAddr = "10.0.1.7".parse().unwrap();
        let (q, added) = with_client_subnet(&query(Some(e)), ip).unwrap();
        assert!(!added);
        let m = Message::from_vec(&q).unwrap();
        let edns = m.edns.unwrap();
        assert_eq!(edns.max_payload(), 1232);
        assert_eq!(edns.options().get_all(EdnsCode::Subnet).len(), 1);
        assert_eq!(ecs(&q).unwrap().addr(), ip);
    }

    #[test]
    fn garbage_is_not_relayed() {
        assert!(with_client_subnet(b"\x01\x02", "10.0.0.1".parse().unwrap()).is_none());
        assert_eq!(without_edns(b"xy"), b"xy".to_vec());
    }
}
