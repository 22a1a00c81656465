//! shoal-dispatcher: the workers' door to the control plane. It keeps each worker's
//! session (registration, heartbeats, node up/down), streams the node's assignments
//! (a COMPLETE set, then INCREMENTAL changes chained by sequence numbers) and batches
//! the workers' task status reports into etcd.
//!
//! Identity is taken only from the client certificate; the session id of every other
//! call must be the node's live session on this dispatcher.
//!
//! Module map:
//! - [`service`]: the gRPC API (`DispatcherService`) and the certificate checks;
//! - [`dispatcher`]: the lifecycle rules (READY / DISCONNECTED / DOWN, failover grace,
//!   several replicas), the caches and the background tasks — start reading here;
//! - `table`: the sessions this dispatcher tracks and the re-registration limiter;
//! - `expiry`: the single task that expires nodes off a timer wheel;
//! - [`assignments`]: the task cache and the fan-out of its changes to each node's
//!   assignment stream;
//! - [`task_status`]: the batched, conditional task status writer;
//! - [`writer`]: the batched, conditional node status writer;
//! - [`presence`]: dispatcher instances' presence keys and session-id ownership.

pub mod assignments;
pub mod config;
pub mod dispatcher;
mod expiry;
pub mod presence;
pub mod service;
mod table;
pub mod task_status;
pub mod writer;

use std::sync::Arc;

pub use config::DispatcherConfig;
pub use dispatcher::{Dispatcher, DispatcherOptions, StartError};
pub use service::DispatcherService;
use shoal_grpc_host::{BoundHost, RunError};
use shoal_pki::SecretSealer;
use shoal_proto::v1::dispatcher_server::DispatcherServer;
pub use table::SessionCounts;
pub use task_status::WriterStats;
use tokio::sync::OnceCell;

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &["shoal.v1.Dispatcher"];

/// The dispatcher's behaviour for a process configured with `cfg`; `sealer` opens the
/// secrets it sends to workers.
pub fn options(cfg: &DispatcherConfig, sealer: Option<Arc<SecretSealer>>) -> DispatcherOptions {
    DispatcherOptions {
        advertise_addr: cfg.advertise(),
        secret_sealer: sealer,
        ..DispatcherOptions::default()
    }
}

/// The secrets' sealer from the KEK in `cfg.kek_file` (a control-plane process has it:
/// its own certificate is issued with it).
pub fn secret_sealer(cfg: &DispatcherConfig) -> std::io::Result<Arc<SecretSealer>> {
    let kek = shoal_grpc_host::identity::read_kek(&cfg.kek_file)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    SecretSealer::new(&kek)
        .map(Arc::new)
        .map_err(|e| std::io::Error::other(format!("kek_file: {e}")))
}

/// Runs the dispatcher until SIGTERM/SIGINT.
pub async fn run(cfg: DispatcherConfig, host: BoundHost) -> Result<(), RunError> {
    let cell: Arc<OnceCell<Dispatcher>> = Arc::new(OnceCell::new());
    let routes = tonic::service::Routes::new(DispatcherServer::new(DispatcherService::starting(
        cell.clone(),
    )));
    let shutdown = host.shutdown_token();
    let options = options(&cfg, Some(secret_sealer(&cfg)?));
    shoal_grpc_host::serve_with_cluster_state(&cfg, host, routes, SERVICES, |state| async move {
        match Dispatcher::start(state, options, shutdown).await {
            Ok(dispatcher) => {
                let _ = cell.set(dispatcher);
                Ok(())
            }
            Err(StartError::Shutdown) => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
    .await
}
