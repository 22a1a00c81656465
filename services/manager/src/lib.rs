//! shoal-manager: the Control API every client talks to, the CA nodes join through,
//! and (on the elected leader) the orchestrators and the allocator.
//!
//! Listeners:
//! - `listen` (TCP, TLS only): the Control API for clients with an admin or manager
//!   certificate, and the CA API (open: joining nodes have no certificate yet).
//! - `<state_dir>/control.sock` (Unix socket, mode 0600): the same APIs for clients on
//!   this host, without certificates — how `shoal swarm init` reaches a manager before
//!   the swarm (and its CA) exists, like docker.sock.
//!
//! Every replica serves both. Reads come from etcd through the store; writes are
//! compare-and-swap transactions followed by a hint event on NATS. Work that must
//! happen exactly once cluster-wide runs only under the `manager` leadership.

pub mod allocator;
mod announce;
mod ca;
pub mod config;
mod control;
pub mod ipam;
pub mod leadership;
pub mod orchestrator;
pub mod swarm;

use std::sync::Arc;
use std::time::Duration;

pub use ca::CaService;
pub use config::ManagerConfig;
pub use control::ControlService;
use shoal_grpc_host::{BoundHost, ClusterState, RunError, ShutdownToken};
use shoal_pki::Role;
use shoal_proto::v1::ca_server::CaServer;
use shoal_proto::v1::control_server::ControlServer;
use shoal_proto::v1::{Node, node_status};
use tokio::sync::OnceCell;
use tonic::service::Routes;
use tonic::{Request, Status};

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &["shoal.v1.Control", "shoal.v1.CA"];

/// Runs the manager until SIGTERM/SIGINT.
pub async fn run(cfg: ManagerConfig, host: BoundHost) -> Result<(), RunError> {
    let cfg = Arc::new(cfg);
    let shutdown = host.shutdown_token();
    let health = host.health();
    let state: Arc<OnceCell<ClusterState>> = Arc::new(OnceCell::new());
    let control = Arc::new(ControlService::new(
        state.clone(),
        shutdown.clone(),
        cfg.clone(),
    ));
    let ca = Arc::new(CaService::new(state.clone(), cfg.kek_file.clone()));

    // Over TCP the Control API wants an admin (or manager) certificate; the CA is open
    // and checks each call itself.
    let tcp_routes = Routes::new(tonic::service::interceptor::InterceptedService::new(
        ControlServer::from_arc(control.clone()),
        require_admin,
    ))
    .add_service(CaServer::from_arc(ca.clone()));
    let socket_routes = host.with_standard_services(
        Routes::new(ControlServer::from_arc(control)).add_service(CaServer::from_arc(ca)),
    )?;

    let socket = cfg.control_socket();
    let lifecycle_cfg = cfg.clone();
    shoal_grpc_host::serve_with_cluster_state(
        &*cfg,
        host,
        tcp_routes,
        SERVICES,
        |connected| async move {
            let _ = state.set(connected.clone());
            // The local socket answers as soon as etcd and NATS do: `swarm init` needs it.
            health
                .set_service_status("shoal.v1.Control", tonic_health::ServingStatus::Serving)
                .await;
            let token = shutdown.clone();
            let socket_health = health.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    shoal_grpc_host::serve_unix(&socket, socket_routes, token, socket_health).await
                {
                    tracing::error!(error = %e, "local control socket failed");
                }
            });
            tokio::spawn(manager_lifecycle(connected, lifecycle_cfg, shutdown));
            Ok(())
        },
    )
    .await
}

/// The Control API over TCP: admin and manager certificates only.
fn require_admin(req: Request<()>) -> Result<Request<()>, Status> {
    match shoal_pki::peer_info(&req) {
        Some(peer) if matches!(peer.role, Role::Admin | Role::Manager) => Ok(req),
        Some(peer) => Err(Status::permission_denied(format!(
            "the Control API needs an admin certificate; this one is a {} certificate",
            peer.role
        ))),
        None => Err(Status::unauthenticated(
            "the Control API needs a client certificate (the admin credentials `shoal swarm init` writes)",
        )),
    }
}

/// Once the swarm exists: this manager's node, its presence, and its candidacy — until
/// shutdown, or until the swarm is dissolved, after which it waits for a new one.
async fn manager_lifecycle(state: ClusterState, cfg: Arc<ManagerConfig>, shutdown: ShutdownToken) {
    loop {
        if shoal_grpc_host::identity::wait_for_cluster(&state.store, &shutdown)
            .await
            .is_none()
        {
            return;
        }
        let Some(node_id) = manager_node(&state, &cfg, &shutdown).await else {
            return;
        };
        // This round ends with the process or with the swarm.
        let round = shutdown.child_token();
        let dissolved = tokio::spawn(cancel_when_dissolved(state.store.clone(), round.clone()));
        let advertise = cfg
            .advertise_endpoint()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let candidate = swarm::candidate_id(&node_id, &advertise);
        let (present, _) = tokio::sync::watch::channel(None);
        let presence = tokio::spawn(leadership::hold(
            state.store.clone(),
            swarm::presence_election(&node_id),
            candidate.clone(),
            cfg.leader_lease_ttl,
            round.clone(),
            present,
        ));
        // Leader-only work: the orchestrators run while this manager leads.
        let (leading, leader) = tokio::sync::watch::channel(None);
        let orchestrator = tokio::spawn(orchestrator::run_while_leading(
            state.store.clone(),
            state.bus.clone(),
            leader,
            round.clone(),
            orchestrator::ControllerOptions::default(),
        ));
        leadership::hold(
            state.store.clone(),
            leadership::ELECTION.to_string(),
            candidate,
            cfg.leader_lease_ttl,
            round.clone(),
            leading,
        )
        .await;
        let _ = presence.await;
        let _ = orchestrator.await;
        dissolved.abort();
        if shutdown.is_cancelled() {
            mark_stopped(&state, &node_id).await;
            return;
        }
        tracing::info!("the swarm was dissolved; waiting for `shoal swarm init`");
    }
}

/// This manager's node, retried until registered or shutdown.
async fn manager_node(
    state: &ClusterState,
    cfg: &ManagerConfig,
    shutdown: &ShutdownToken,
) -> Option<String> {
    loop {
        match swarm::ensure_manager_node(&state.store, cfg, &state.bus).await {
            Ok(id) => return Some(id),
            Err(e) => {
                tracing::warn!(error = %e.message(), "cannot register this manager's node; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Cancels `round` once the Cluster object is gone.
async fn cancel_when_dissolved(store: shoal_store::Store, round: ShutdownToken) {
    use futures::StreamExt;
    let mut clusters = store.watch_kind::<shoal_proto::v1::Cluster>(None);
    while let Some(event) = clusters.next().await {
        let gone = match event {
            shoal_store::WatchEvent::Deleted(_) => true,
            shoal_store::WatchEvent::Restarted { objects, .. } => objects.is_empty(),
            _ => false,
        };
        if gone {
            round.cancel();
            return;
        }
    }
}

/// A manager stopping cleanly says so on its node (best effort, briefly).
async fn mark_stopped(state: &ClusterState, node_id: &str) {
    let attempt = async {
        let mut node = state.store.get::<Node>(node_id).await?;
        if let Some(status) = node.status.as_mut() {
            status.state = node_status::State::Down as i32;
            status.message = "manager stopped".into();
        }
        state.store.update(node).await
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(Ok(node)) => announce::announce(&state.bus, "update", &node, "").await,
        Ok(Err(e)) => tracing::debug!(error = %e, "could not mark the manager node down"),
        Err(_) => tracing::debug!("marking the manager node down timed out"),
    }
}
