//! shoal-worker: runs a node's tasks (Docker Engine or plain processes) and the
//! node-local data plane. It talks to the control plane only through dispatchers
//! (and a manager's CA for its certificate), never to etcd or NATS directly.
//!
//! Modules:
//! - [`join`]: `shoal swarm join`, fetching the root CA pinned by the token and the
//!   node certificate;
//! - [`session`]: the agent: the dispatcher session, heartbeats, failover, leave;
//! - [`renew`]: automatic certificate renewal;
//! - `shoal_node_description`: the node description sent when a session opens;
//! - [`identity`]: the node identity in the state dir and in use;
//! - [`tls`]: the worker's TLS, server and client side.
//!
//! The executors and data plane are added by the services and networking work on top
//! of this entry point.

pub mod backoff;
pub mod config;
pub mod identity;
pub mod join;
pub mod renew;
pub mod session;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

pub use config::WorkerConfig;
pub use join::{JoinError, JoinOutcome, join};
use shoal_grpc_host::tls::ServerCertResolver;
use shoal_grpc_host::{BoundHost, RunError};

use crate::identity::wait_for_identity;
use crate::session::{Agent, AgentConfig};
use crate::tls::ClientVerifier;

/// How long the agent may take to close its session after the shutdown signal.
const AGENT_STOP: Duration = Duration::from_secs(1);

/// Runs the worker until SIGTERM/SIGINT: waits for the node identity (`shoal swarm
/// join`), serves its listener over TLS with the node certificate, and keeps the node
/// attached to a dispatcher. Health is SERVING exactly while a session is up.
pub async fn run(cfg: WorkerConfig, host: BoundHost) -> Result<(), RunError> {
    prepare_state_dir(&cfg.state_dir)?;
    let shutdown = host.shutdown_token();
    let health = host.health();
    let Some(creds) = wait_for_identity(&cfg.state_dir, &shutdown).await else {
        return Ok(());
    };
    let resolver = Arc::new(ServerCertResolver::new(&creds)?);
    let verifier = Arc::new(ClientVerifier::new(&creds.ca_pem)?);
    let server_tls = shoal_grpc_host::tls::SwappableConfig::new(tls::server_config(
        resolver.clone(),
        verifier.clone(),
    )?);
    let mut server = tokio::spawn(host.serve_tls(tonic::service::Routes::default(), server_tls));

    let agent = Agent::new(
        AgentConfig::from_config(&cfg),
        resolver,
        verifier,
        health,
        shutdown.clone(),
    );
    let mut agent = tokio::spawn(agent.run(creds));
    tokio::select! {
        served = &mut server => {
            // The server only stops on shutdown (or on an error): the agent follows.
            shutdown.cancel();
            let _ = tokio::time::timeout(AGENT_STOP, &mut agent).await;
            served??;
        }
        attached = &mut agent => {
            // The agent only stops on shutdown, or on an error that ends the worker.
            shutdown.cancel();
            let served = server.await;
            attached??;
            served??;
        }
    }
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
