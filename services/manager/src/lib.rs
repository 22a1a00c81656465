//! shoal-manager: the Control API every client talks to, and (on the elected leader)
//! the orchestrators and the allocator.
//!
//! Every replica serves the Control API: reads come from etcd through the store, writes
//! are compare-and-swap transactions followed by a hint event on NATS. Work that must
//! happen exactly once cluster-wide runs only under the `manager` leadership, whose
//! writes are fenced on it.

mod announce;
pub mod config;
mod control;
pub mod leadership;

use std::sync::Arc;

pub use config::ManagerConfig;
use shoal_grpc_host::{BoundHost, ClusterState, RunError};
use shoal_proto::v1::control_server::ControlServer;
use tokio::sync::OnceCell;

pub use control::ControlService;

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &["shoal.v1.Control"];

/// Runs the manager until SIGTERM/SIGINT.
pub async fn run(cfg: ManagerConfig, host: BoundHost) -> Result<(), RunError> {
    let state: Arc<OnceCell<ClusterState>> = Arc::new(OnceCell::new());
    let control = ControlService::new(state.clone(), host.shutdown_token());
    let routes = tonic::service::Routes::new(ControlServer::new(control));
    let shutdown = host.shutdown_token();
    let candidate_id = format!("{}/{}", cfg.listen, shoal_store::new_id());
    let ttl = cfg.leader_lease_ttl;
    let (is_leader, _leader_signal) = tokio::sync::watch::channel(false);
    shoal_grpc_host::serve_with_cluster_state(
        &cfg,
        host,
        routes,
        SERVICES,
        |connected| async move {
            tokio::spawn(leadership::lead(
                connected.clone(),
                candidate_id,
                ttl,
                shutdown,
                is_leader,
            ));
            let _ = state.set(connected);
            Ok(())
        },
    )
    .await
}
