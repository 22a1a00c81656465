//! shoal-worker: runs a node's tasks (Docker Engine or plain processes) and the
//! node-local data plane. It talks to the control plane only through a dispatcher,
//! never to etcd or NATS directly.
//!
//! Today the worker prepares its state directory and serves health; the dispatcher
//! session, executors and data plane are added by the membership, services and
//! networking work on top of this entry point.

pub mod config;

use std::error::Error;

pub use config::WorkerConfig;
use shoal_grpc_host::{BoundHost, Host};

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &[];

/// Runs the worker until SIGTERM/SIGINT.
pub async fn run(cfg: WorkerConfig, host: BoundHost) -> Result<(), Box<dyn Error + Send + Sync>> {
    prepare_state_dir(&cfg.state_dir)?;
    let health = host.health();
    let server = tokio::spawn(host.serve(tonic::service::Routes::default()));
    tracing::info!(
        hostname = %cfg.effective_hostname(),
        advertise = %cfg.effective_advertise_addr(),
        dispatchers = ?cfg.dispatcher_addrs,
        "worker started"
    );
    Host::set_ready(&health, SERVICES, true).await;
    server.await??;
    Ok(())
}

/// The state dir holds the node's private key: only its owner may read it.
fn prepare_state_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("state_dir {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
