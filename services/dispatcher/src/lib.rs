//! shoal-dispatcher: the workers' door to the control plane. It keeps each worker's
//! session (registration, heartbeats, node up/down), streams the node's assignments
//! (a COMPLETE set, then INCREMENTAL changes chained by sequence numbers) and batches
//! the workers' task status reports into etcd.
//!
//! Today the process connects to cluster state and serves the `Dispatcher` API, whose
//! RPCs answer UNIMPLEMENTED until the membership work fills them in.

pub mod config;

pub use config::DispatcherConfig;
use shoal_grpc_host::{BoundHost, RunError};
use shoal_proto::v1::dispatcher_server::{Dispatcher, DispatcherServer};

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &["shoal.v1.Dispatcher"];

/// The Dispatcher API. Every RPC keeps its UNIMPLEMENTED default for now.
#[derive(Debug, Default)]
pub struct DispatcherService;

impl Dispatcher for DispatcherService {}

/// Runs the dispatcher until SIGTERM/SIGINT.
pub async fn run(cfg: DispatcherConfig, host: BoundHost) -> Result<(), RunError> {
    let routes = tonic::service::Routes::new(DispatcherServer::new(DispatcherService));
    shoal_grpc_host::serve_with_cluster_state(&cfg, host, routes, SERVICES, |_state| async {
        Ok(())
    })
    .await
}
