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
//! - [`tls`]: the worker's TLS, server and client side;
//! - [`executor`]: the Docker and process executors;
//! - [`health`]: healthchecks (Docker's rules; the probe loop of process tasks, their
//!   TCP and HTTP probes);
//! - [`tasks`]: the task manager fed by the dispatcher's assignments, its state file
//!   and its batched status reports;
//! - [`logs`]: task output over NATS (live lines and history requests);
//! - [`net`]: the data plane: routing mesh, VIP proxies and the containers' DNS relay,
//!   following shoal-dns's endpoint table.

pub mod backoff;
pub mod config;
pub mod executor;
pub mod health;
pub mod identity;
pub mod join;
pub mod logs;
pub mod net;
pub mod renew;
pub mod session;
pub mod tasks;
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

    let node_id = creds
        .info()
        .map(|i| i.node_id)
        .map_err(|e| std::io::Error::other(format!("node certificate: {e}")))?;
    let (link_tx, link_rx) = tokio::sync::watch::channel(None);
    let tasks = start_tasks(&cfg, &node_id, link_rx, &shutdown).await;
    // The proxies stop with the worker (connections in flight end with the process).
    let _data_plane = net::start(&cfg, &node_id, shutdown.child_token());

    let agent = Agent::new(
        AgentConfig::from_config(&cfg),
        resolver,
        verifier,
        health,
        shutdown.clone(),
    )
    .with_link(link_tx);
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
    // The tasks keep running: the next worker process adopts them.
    tasks.detach();
    Ok(())
}

/// The executors, the task manager, its status reporter and assignments follower,
/// and (with `nats_url`) the log shipping.
async fn start_tasks(
    cfg: &WorkerConfig,
    node_id: &str,
    link: tokio::sync::watch::Receiver<Option<tasks::Link>>,
    shutdown: &shoal_grpc_host::ShutdownToken,
) -> tasks::TaskManager {
    let advertise = cfg.effective_advertise_addr();
    let docker = executor::docker::DockerExecutor::connect_with_dns(node_id, &cfg.dns_addr).await;
    let process = executor::process::ProcessExecutor::with_dns(
        &cfg.state_dir,
        node_id,
        &advertise,
        &cfg.dns_addr,
    );
    // Runtimes of this node's tasks the state file may not know (a worker that died
    // between starting one and recording it).
    let mut found: Vec<(String, executor::Handle)> = process.managed();
    if let Some(d) = &docker {
        found.extend(
            d.managed()
                .await
                .into_iter()
                .map(|(task, id)| (task, executor::Handle::Container { id })),
        );
    }
    let executors = executor::Executors {
        docker: docker.map(|d| d as Arc<dyn executor::Executor>),
        process,
    };
    let bus = logs::connect(&cfg.nats_url).await;
    let (reports_tx, reports_rx) = tokio::sync::mpsc::channel(tasks::reporter::QUEUE);
    let files_root = if cfg.secrets_dir.as_os_str().is_empty() {
        tasks::files::TaskFiles::default_root(node_id)
    } else {
        cfg.secrets_dir.clone()
    };
    let manager = tasks::TaskManager::with_options(
        &cfg.state_dir,
        executors,
        reports_tx,
        bus.as_ref().map(|b| b.log_publisher(logs::PUBLISH_QUEUE)),
        tasks::TaskOptions {
            files_root: Some(files_root),
            node: tasks::files::NodeInfo::local(node_id, &cfg.effective_hostname()),
        },
    );
    manager.add_adoptable(found);
    tokio::spawn(tasks::reporter::run(reports_rx, link.clone()));
    let stop = shutdown.child_token();
    tokio::spawn(tasks::assignments::follow(
        manager.clone(),
        link,
        stop.clone(),
    ));
    if let Some(bus) = bus {
        tokio::spawn(logs::serve_history(
            bus,
            node_id.to_string(),
            manager.clone(),
            stop,
        ));
    }
    manager
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
