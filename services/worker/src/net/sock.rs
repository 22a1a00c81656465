//! Listening sockets: SO_REUSEADDR always (a restarted worker rebinds at once), and
//! SO_REUSEPORT where several workers on one host bind the same address (VIPs, the
//! DNS relay on a Docker network's gateway).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

const BACKLOG: i32 = 1024;

fn socket(addr: SocketAddr, ty: Type, proto: Protocol, reuse_port: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// A TCP listener on `addr`. Must be called inside the tokio runtime.
pub fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP, reuse_port)?;
    s.listen(BACKLOG)?;
    TcpListener::from_std(s.into())
}

/// A UDP socket bound to `addr`. Must be called inside the tokio runtime.
pub fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP, reuse_port)?;
    UdpSocket::from_std(s.into())
}

/// The unspecified address of `addr`'s family, port 0: where upstream sockets bind.
pub fn any_of(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}
