//! The UDP proxy of one listener: one flow per client address, each with its own
//! upstream socket connected to a backend picked round robin, ended after `idle`
//! without traffic either way. A flow whose backend left the pool (or refused the
//! datagrams) ends, and the client's next datagram starts a flow to another backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::pool::Pool;
use super::sock::any_of;

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

struct Flow {
    id: u64,
    backend: SocketAddr,
    upstream: Arc<UdpSocket>,
    last: Mutex<Instant>,
    stop: CancellationToken,
}

impl Flow {
    fn touch(&self) {
        match self.last.lock() {
            Ok(mut l) => *l = Instant::now(),
            Err(poisoned) => *poisoned.into_inner() = Instant::now(),
        }
    }

    fn last(&self) -> Instant {
        match self.last.lock() {
            Ok(l) => *l,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>;

fn lock(flows: &Flows) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Flow>>> {
    match flows.lock() {
        Ok(f) => f,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Serves `sock` until `stop` (which also ends every flow): at most `max_flows` flows
/// at once; datagrams beyond that, or while the pool is empty, are dropped.
pub async fn serve(
    sock: UdpSocket,
    pool: Arc<Pool>,
    label: Arc<str>,
    max_flows: usize,
    idle: Duration,
    stop: CancellationToken,
) {
    let sock = Arc::new(sock);
    let flows: Flows = Arc::default();
    let ids = AtomicU64::new(0);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let (n, peer) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors of earlier sends surface here on some kernels: not fatal.
                tracing::debug!(listener = %label, error = %e, "udp receive failed");
                continue;
            }
        };
        if !pool.admits(peer.ip()) {
            tracing::debug!(listener = %label, %peer, "client outside the network: datagram dropped");
            continue;
        }
        let existing = lock(&flows).get(&peer).cloned();
        let flow = match existing {
            Some(flow) if !flow.stop.is_cancelled() && pool.contains(&flow.backend) => flow,
            other => {
                if let Some(old) = other {
                    old.stop.cancel();
                    lock(&flows).remove(&peer);
                }
                if lock(&flows).len() >= max_flows {
                    tracing::debug!(listener = %label, %peer, max_flows, "too many udp flows: datagram dropped");
                    continue;
                }
                let Some(backend) = pool.pick() else {
                    tracing::debug!(listener = %label, %peer, "no endpoint: datagram dropped");
                    continue;
                };
                match open_flow(backend, ids.fetch_add(1, Ordering::Relaxed), &stop).await {
                    Ok(flow) => {
                        lock(&flows).insert(peer, flow.clone());
                        let span = tracing::debug_span!("proxy udp", listener = %label, client = %peer, %backend);
                        tokio::spawn(
                            relay_back(flow.clone(), sock.clone(), peer, flows.clone(), idle)
                                .instrument(span),
                        );
                        flow
                    }
                    Err(e) => {
                        tracing::debug!(listener = %label, %backend, error = %e, "cannot open an upstream socket");
                        continue;
                    }
                }
            }
        };
        flow.touch();
        if let Err(e) = flow.upstream.send(&buf[..n]).await {
            tracing::debug!(listener = %label, backend = %flow.backend, error = %e, "udp send failed: flow ended");
            flow.stop.cancel();
        }
    }
}

async fn open_flow(
    backend: SocketAddr,
    id: u64,
    stop: &CancellationToken,
) -> std::io::Result<Arc<Flow>> {
    let upstream = UdpSocket::bind(any_of(backend)).await?;
    upstream.connect(backend).await?;
    Ok(Arc::new(Flow {
        id,
        backend,
        upstream: Arc::new(upstream),
        last: Mutex::new(Instant::now()),
        stop: stop.child_token(),
    }))
}

/// Sends the backend's answers back to `peer` until the flow is idle, stopped or
/// refused; then forgets it.
async fn relay_back(
    flow: Arc<Flow>,
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    flows: Flows,
    idle: Duration,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = flow.last() + idle;
        tokio::select! {
            _ = flow.stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {
                if flow.last() + idle <= Instant::now() {
                    tracing::debug!("udp flow idle: ended");
                    break;
                }
            }
            r = flow.upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    flow.touch();
                    if let Err(e) = sock.send_to(&buf[..n], peer).await {
                        tracing::debug!(error = %e, "cannot answer the client");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "backend refused the flow: ended");
                    break;
                }
            },
        }
    }
    flow.stop.cancel();
    let mut flows = lock(&flows);
    if flows.get(&peer).is_some_and(|f| f.id == flow.id) {
        flows.remove(&peer);
    }
}
