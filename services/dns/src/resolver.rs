//! The `shoal.v1.Resolver` API over the record table: `Resolve`, `Watch` (the full
//! answer, then again whenever it changes) and `WatchEndpoints` (a snapshot of every
//! service, then coalesced deltas) for the workers' proxies.
//!
//! Any certificate of this swarm may call it (worker, manager, admin): the peer's
//! certificate is checked per RPC (`shoal_pki::peer_info`), its cluster id against the
//! stored cluster. Streams are bounded: each has a small outgoing queue, and a watcher
//! too slow to keep up with the change broadcast gets a fresh snapshot instead of a
//! growing backlog.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shoal_grpc_host::ShutdownToken;
use shoal_proto::v1::resolve_request::Target;
use shoal_proto::v1::resolver_server::Resolver;
use shoal_proto::v1::{EndpointsUpdate, ResolveRequest, ResolveResponse, WatchEndpointsRequest};
use tokio::sync::{OnceCell, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::records::{Change, Records};
use crate::table::{ResolveError, Table};

/// Changes are gathered this long before a delta goes out.
pub const COALESCE: Duration = Duration::from_millis(20);
/// Messages queued per stream before the watcher waits for its client.
const STREAM_BUFFER: usize = 8;
/// Services a delta may name before a snapshot is cheaper.
const MAX_DELTA: usize = 4096;

/// The Resolver API. Answers UNAVAILABLE until the record table is built (the gRPC
/// server starts before cluster state is reachable).
#[derive(Debug, Clone)]
pub struct ResolverService {
    records: Arc<OnceCell<Arc<Records>>>,
    shutdown: ShutdownToken,
}

impl ResolverService {
    /// A service whose records are set into `cell` once they are built.
    pub fn starting(cell: Arc<OnceCell<Arc<Records>>>, shutdown: ShutdownToken) -> Self {
        Self {
            records: cell,
            shutdown,
        }
    }

    /// The records, if the caller holds a certificate of this swarm.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(Arc<Records>, String), Status> {
        let info = shoal_pki::peer_info(request).ok_or_else(|| {
            Status::unauthenticated(
                "a certificate of this swarm is required: connect over mTLS with a node, \
                 manager or admin certificate",
            )
        })?;
        let records = self.records.get().cloned().ok_or_else(|| {
            Status::unavailable("shoal-dns is starting: its record table is not built yet")
        })?;
        let cluster_id = records.cluster_id().ok_or_else(|| {
            Status::unavailable("the swarm's cluster object is not available yet; retry")
        })?;
        if info.cluster_id != cluster_id {
            return Err(Status::permission_denied(format!(
                "the certificate of {} belongs to swarm {}, not to this swarm ({cluster_id})",
                info.node_id, info.cluster_id
            )));
        }
        Ok((records, info.node_id))
    }
}

fn status(e: ResolveError) -> Status {
    match e {
        ResolveError::BadVip(_) => Status::invalid_argument(e.to_string()),
        _ => Status::not_found(e.to_string()),
    }
}

/// One `Resolve` against the table.
fn resolve(table: &Table, request: &ResolveRequest) -> Result<ResolveResponse, Status> {
    match &request.target {
        Some(Target::Name(name)) if !name.is_empty() => {
            table.resolve_name(name, &request.network).map_err(status)
        }
        Some(Target::Vip(vip)) if !vip.is_empty() => table.resolve_vip(vip).map_err(status),
        _ => Err(Status::invalid_argument(
            "a name (\"web\", \"tasks.web\", \"web.mynet\", a task name, a network alias) \
             or a VIP is required",
        )),
    }
}

/// Waits for the next change and gathers what follows within [`COALESCE`]. `None`: the
/// broadcast closed. `Some(None)`: anything may have changed (resync).
async fn next_changes(rx: &mut broadcast::Receiver<Change>) -> Option<Option<HashSet<String>>> {
    let mut ids = HashSet::new();
    let mut all = false;
    let mut note = |r: Result<Change, broadcast::error::RecvError>| -> bool {
        match r {
            Ok(Change::Services(changed)) => ids.extend(changed.iter().cloned()),
            Ok(Change::All) | Err(broadcast::error::RecvError::Lagged(_)) => all = true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
        true
    };
    if !note(rx.recv().await) {
        return None;
    }
    let deadline = tokio::time::Instant::now() + COALESCE;
    loop {
        tokio::select! {
            r = rx.recv() => if !note(r) { return None },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    if all || ids.len() > MAX_DELTA {
        Some(None)
    } else {
        Some(Some(ids))
    }
}

fn snapshot(table: &Table) -> EndpointsUpdate {
    EndpointsUpdate {
        snapshot: true,
        upserts: table.snapshot(),
        removed_service_ids: Vec::new(),
        ingress_network_id: table.ingress_network_id().to_string(),
    }
}

fn delta(table: &Table, ids: HashSet<String>) -> EndpointsUpdate {
    let mut update = EndpointsUpdate {
        snapshot: false,
        ingress_network_id: table.ingress_network_id().to_string(),
        ..Default::default()
    };
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort();
    for id in ids {
        match table.service(&id) {
            Some(s) => update.upserts.push((*s.endpoints).clone()),
            None => update.removed_service_ids.push(id),
        }
    }
    update
}

async fn endpoints_stream(
    records: Arc<Records>,
    tx: mpsc::Sender<Result<EndpointsUpdate, Status>>,
    shutdown: ShutdownToken,
) {
    // Subscribed before the snapshot, so nothing falls between the two.
    let mut changes = records.subscribe();
    let first = snapshot(&records.read());
    tracing::info!(services = first.upserts.len(), "endpoints watch started");
    if tx.send(Ok(first)).await.is_err() {
        return;
    }
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tx.closed() => break,
            next = next_changes(&mut changes) => next,
        };
        let update = match next {
            None => break,
            Some(None) => snapshot(&records.read()),
            Some(Some(ids)) => delta(&records.read(), ids),
        };
        if !update.snapshot && update.upserts.is_empty() && update.removed_service_ids.is_empty() {
            continue;
        }
        // A client slower than the changes blocks here; the broadcast then lags and the
        // next message is a snapshot rather than an ever-growing queue.
        if tx.send(Ok(update)).await.is_err() {
            break;
        }
    }
    tracing::info!("endpoints watch ended");
}

async fn resolve_stream(
    records: Arc<Records>,
    request: ResolveRequest,
    first: ResolveResponse,
    tx: mpsc::Sender<Result<ResolveResponse, Status>>,
    shutdown: ShutdownToken,
) {
    let mut changes = records.subscribe();
    // The table may have moved between the first answer and the subscription.
    let mut last = resolve(&records.read(), &request).unwrap_or_default();
    let first_differs = last != first;
    if tx.send(Ok(first)).await.is_err() {
        return;
    }
    if first_differs && tx.send(Ok(last.clone())).await.is_err() {
        return;
    }
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tx.closed() => break,
            next = next_changes(&mut changes) => next,
        };
        if next.is_none() {
            break;
        }
        // Gone (or never resolvable again): an empty answer, and the watch goes on in
        // case the name comes back.
        let now = resolve(&records.read(), &request).unwrap_or_default();
        if now == last {
            continue;
        }
        last = now.clone();
        if tx.send(Ok(now)).await.is_err() {
            break;
        }
    }
    tracing::info!("watch ended");
}

#[tonic::async_trait]
impl Resolver for ResolverService {
    async fn resolve(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ResolveResponse>, Status> {
        let (records, _) = self.authorize(&request)?;
        let answer = resolve(&records.read(), request.get_ref())?;
        Ok(Response::new(answer))
    }

    async fn watch(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<BoxStream<ResolveResponse>>, Status> {
        let (records, peer) = self.authorize(&request)?;
        let request = request.into_inner();
        let first = resolve(&records.read(), &request)?;
        let span = tracing::info_span!("watch", %peer, target = ?request.target, network = %request.network);
        span.in_scope(|| tracing::info!("watch started"));
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(
            resolve_stream(records, request, first, tx, self.shutdown.clone()).instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn watch_endpoints(
        &self,
        request: Request<WatchEndpointsRequest>,
    ) -> Result<Response<BoxStream<EndpointsUpdate>>, Status> {
        let (records, peer) = self.authorize(&request)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = tracing::info_span!("watch endpoints", %peer);
        tokio::spawn(endpoints_stream(records, tx, self.shutdown.clone()).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
