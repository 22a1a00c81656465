//! The TCP proxy of one listener: accept, pick the next backend round robin, connect
//! (the following backend when that fails), copy both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::pool::Pool;

/// How long one connection attempt to a backend may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many backends are tried for one connection.
const MAX_ATTEMPTS: usize = 8;
/// Pause after a failing accept (out of file descriptors…), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `listener` until `stop`: at most `max_conns` proxied connections at once;
/// beyond that, and while the pool is empty, accepted connections are closed at once.
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    label: Arc<str>,
    max_conns: usize,
    stop: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(max_conns));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(listener = %label, error = %e, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        if !pool.admits(peer.ip()) {
            tracing::debug!(listener = %label, %peer, "client outside the network: connection closed");
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(listener = %label, %peer, max_conns, "too many connections: dropped");
            continue;
        };
        if pool.is_empty() {
            tracing::debug!(listener = %label, %peer, "no endpoint: connection closed");
            continue;
        }
        let span = tracing::debug_span!("proxy tcp", listener = %label, client = %peer, backend = tracing::field::Empty);
        let pool = pool.clone();
        tokio::spawn(
            async move {
                proxy(client, &pool).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn proxy(mut client: TcpStream, pool: &Pool) {
    let _ = client.set_nodelay(true);
    let attempts = pool.len().clamp(1, MAX_ATTEMPTS);
    for _ in 0..attempts {
        let Some(backend) = pool.pick() else {
            break;
        };
        match connect(backend).await {
            Ok(mut upstream) => {
                tracing::Span::current().record("backend", tracing::field::display(backend));
                let _ = upstream.set_nodelay(true);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => tracing::debug!(up, down, "connection done"),
                    Err(e) => tracing::debug!(error = %e, "connection ended"),
                }
                return;
            }
            Err(e) => {
                tracing::debug!(%backend, error = %e, "cannot reach backend; trying the next")
            }
        }
    }
    tracing::debug!("no backend answered: connection closed");
}

async fn connect(backend: SocketAddr) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {CONNECT_TIMEOUT:?}"),
        )),
    }
}
