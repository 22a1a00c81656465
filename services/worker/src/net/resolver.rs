//! The resolver client: follows `Resolver.WatchEndpoints` on one shoal-dns replica at
//! a time, over mutual TLS with the node certificate (exactly like the dispatcher
//! session), and feeds every message to the data plane. When the stream fails it
//! reconnects with a jittered backoff (100 ms to 5 s) to the next replica; the first
//! message of each stream is a snapshot, so nothing missed while away is lost. The
//! table is kept as it is while no replica answers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_pki::NodeCredentials;
use shoal_proto::v1::WatchEndpointsRequest;
use shoal_proto::v1::resolver_client::ResolverClient;
use shoal_telemetry::TraceInterceptor;
use tokio_util::sync::CancellationToken;

use super::DataPlane;
use crate::backoff::Backoff;
use crate::join::error_chain;
use crate::tls::connect_mtls;

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How long connecting and receiving the first message (the snapshot) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the node's current credentials come from (the state dir, so renewals are
/// picked up on the next connection); None while the node has none.
pub type CredsSource = Arc<dyn Fn() -> Option<NodeCredentials> + Send + Sync>;

/// Follows the endpoint table on `addrs` until `stop`.
pub async fn follow(
    plane: DataPlane,
    addrs: Vec<String>,
    creds: CredsSource,
    from: Option<IpAddr>,
    stop: CancellationToken,
) {
    if addrs.is_empty() {
        return;
    }
    let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    let mut index = 0usize;
    loop {
        let addr = addrs[index % addrs.len()].clone();
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            o = watch(&plane, &addr, &creds, from, &mut backoff) => o,
        };
        tracing::warn!(resolver = %addr, reason = %outcome, "endpoint watch lost; reconnecting");
        index = index.wrapping_add(1);
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One watch: returns why it ended.
async fn watch(
    plane: &DataPlane,
    addr: &str,
    creds: &CredsSource,
    from: Option<IpAddr>,
    backoff: &mut Backoff,
) -> String {
    let Some(creds) = creds() else {
        return "no node credentials".into();
    };
    if let Ok(info) = creds.info() {
        plane.set_node_id(&info.node_id);
    }
    let opening = async {
        let channel = connect_mtls(addr, &creds, from)
            .await
            .map_err(|e| error_chain(&e))?;
        let mut client = ResolverClient::with_interceptor(channel, TraceInterceptor);
        let mut stream = client
            .watch_endpoints(WatchEndpointsRequest {})
            .await
            .map_err(|s| status_text(&s))?
            .into_inner();
        let first = stream.message().await.map_err(|s| status_text(&s))?;
        Ok::<_, String>((stream, first))
    };
    let (mut stream, first) = match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Err(_) => return format!("no snapshot within {OPEN_TIMEOUT:?}"),
        Ok(Err(e)) => return e,
        Ok(Ok((_, None))) => return "the stream ended before its snapshot".into(),
        Ok(Ok((stream, Some(first)))) => (stream, first),
    };
    if !first.snapshot {
        return "the first message is not a snapshot".into();
    }
    tracing::info!(resolver = %addr, services = first.upserts.len(), "following the endpoint table");
    backoff.reset();
    plane.apply(first);
    loop {
        match stream.message().await {
            Ok(Some(update)) => plane.apply(update),
            Ok(None) => return "the resolver ended the stream".into(),
            Err(status) => return status_text(&status),
        }
    }
}

fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}
