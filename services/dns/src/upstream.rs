//! Names outside the cluster go to the upstream resolvers: the configured ones, or the
//! host's (`/etc/resolv.conf`). Each query is asked afresh (new id, the querier's EDNS
//! Client Subnet left out), over UDP first and over TCP when the answer is truncated;
//! the upstreams are tried in order until one answers with something other than
//! SERVFAIL/REFUSED.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// How long one upstream gets (UDP, and TCP after a truncated answer).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The EDNS payload size asked for upstream (the DNS flag day's value).
const EDNS_PAYLOAD: u16 = 1232;
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Forwarded queries in flight at once; beyond it a query gets SERVFAIL at once rather
/// than another task waiting on a slow upstream.
const MAX_IN_FLIGHT: usize = 1024;

/// The upstream resolvers.
#[derive(Debug, Clone)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

/// Parses `IP` or `IP:PORT` (port 53 when absent).
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    // An IPv6 nameserver line may carry a zone ("fe80::1%eth0"): not usable here.
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// The `nameserver` lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(parse_server)
        })
        .collect()
}

impl Upstream {
    /// The configured upstreams, or the host's; never `own` (this server), which would
    /// loop.
    pub fn new(configured: &[String], own: SocketAddr) -> Upstream {
        let mut servers: Vec<SocketAddr> = if configured.is_empty() {
            match std::fs::read_to_string(RESOLV_CONF) {
                Ok(text) => parse_resolv_conf(&text),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read {RESOLV_CONF}: no upstream resolvers");
                    Vec::new()
                }
            }
        } else {
            configured.iter().filter_map(|s| parse_server(s)).collect()
        };
        servers.retain(|s| *s != own);
        if servers.is_empty() {
            tracing::warn!("no upstream resolvers: names outside the cluster get SERVFAIL");
        }
        Upstream {
            servers,
            timeout: UPSTREAM_TIMEOUT,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Asks the upstreams for `query`; `None` when none answered.
    pub async fn forward(
        &self,
        query: &Query,
        recursion_desired: bool,
        dnssec_ok: bool,
    ) -> Option<Message> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            tracing::warn!("too many queries waiting on the upstreams: SERVFAIL");
            return None;
        };
        let mut fallback = None;
        for server in &self.servers {
            let mut request = Message::query();
            request.metadata.recursion_desired = recursion_desired;
            request.add_query(query.clone());
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns.set_dnssec_ok(dnssec_ok);
            request.set_edns(edns);
            match tokio::time::timeout(self.timeout, ask(*server, &request)).await {
                Ok(Ok(answer)) => {
                    let code = answer.metadata.response_code;
                    if code == ResponseCode::ServFail || code == ResponseCode::Refused {
                        fallback = Some(answer);
                        continue;
                    }
                    return Some(answer);
                }
                Ok(Err(e)) => tracing::debug!(%server, error = %e, "upstream failed"),
                Err(_) => tracing::debug!(%server, "upstream timed out"),
            }
        }
        fallback
    }
}

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("encode: {0}")]
    Encode(#[from] hickory_proto::ProtoError),
    #[error("the answer is too large")]
    TooLarge,
}

async fn ask(server: SocketAddr, request: &Message) -> Result<Message, AskError> {
    let bytes = request.to_vec()?;
    let answer = ask_udp(server, request, &bytes).await?;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    ask_tcp(server, request, &bytes).await
}

fn matches(request: &Message, answer: &Message) -> bool {
    answer.metadata.id == request.metadata.id && answer.queries == request.queries
}

async fn ask_udp(server: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message, AskError> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that is not the answer to this very query (a late answer, a spoof)
        // is dropped, and the wait goes on until the timeout.
        if let Ok(answer) = Message::from_vec(&buf[..n])
            && matches(request, &answer)
        {
            return Ok(answer);
        }
    }
}

async fn ask_tcp(server: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message, AskError> {
    let len = u16::try_from(bytes.len()).map_err(|_| AskError::TooLarge)?;
    let mut stream = TcpStream::connect(server).await?;
    let _ = stream.set_nodelay(true);
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        if let Ok(answer) = Message::from_vec(&buf)
            && matches(request, &answer)
        {
            return Ok(answer);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.53\n\
                    nameserver  ::1\nnameserver fe80::1%eth0\noptions ndots:2\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_server("127.0.0.1:5300"),
            Some("127.0.0.1:5300".parse().unwrap())
        );
    }
}
