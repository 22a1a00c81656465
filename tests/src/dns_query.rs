//! DNS queries as a task's resolver sends them, for the scenarios that check shoal-dns.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// One A query from `from` (any port) to `server`: the response code and the addresses.
pub async fn dns_a(
    server: SocketAddr,
    from: IpAddr,
    name: &str,
) -> anyhow::Result<(ResponseCode, BTreeSet<Ipv4Addr>)> {
    let sock = tokio::net::UdpSocket::bind((from, 0)).await?;
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    sock.send_to(&msg.to_vec()?, server).await?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await??;
    let resp = Message::from_vec(&buf[..n])?;
    let addrs = resp
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    Ok((resp.metadata.response_code, addrs))
}
