//! shoal-scheduler: places pending tasks on nodes.
//!
//! Replicas form a NATS queue group on the scheduling work subject, so each hint is
//! offered to one scheduler; placements are compare-and-swap writes, so two replicas
//! can never assign one task twice. Between hints, each replica reconciles from its own
//! list+watch caches of nodes and tasks.
//!
//! Module map:
//! - [`placement`]: the decisions as a pure library (constraints, filters with Swarm's
//!   explanations, the spread);
//! - [`pass`]: one pass's decisions over a set of pending tasks, grouped by service and
//!   spec version;
//! - [`scheduler`]: the process — caches, work sources, the pass loop and its batched
//!   CAS writes — start reading here.

pub mod config;
pub mod pass;
pub mod placement;
pub mod scheduler;

pub use config::SchedulerConfig;
pub use scheduler::{Scheduler, SchedulerOptions, StartError, Stats};
use shoal_grpc_host::{BoundHost, RunError};
use tokio::sync::OnceCell;

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &[];

/// The scheduler's behaviour for a process configured with `cfg`.
pub fn options(cfg: &SchedulerConfig) -> SchedulerOptions {
    SchedulerOptions {
        scan_interval: cfg.scan_interval,
        ..SchedulerOptions::default()
    }
}

/// Runs the scheduler until SIGTERM/SIGINT.
pub async fn run(cfg: SchedulerConfig, host: BoundHost) -> Result<(), RunError> {
    let routes = tonic::service::Routes::default();
    let shutdown = host.shutdown_token();
    let options = options(&cfg);
    // Placement needs no certificate: it starts as soon as etcd and NATS answer, and
    // lives as long as the process serves.
    let running: std::sync::Arc<OnceCell<Scheduler>> = Default::default();
    let cell = running.clone();
    shoal_grpc_host::serve_with_cluster_state(&cfg, host, routes, SERVICES, |state| async move {
        match Scheduler::start(state, options, shutdown).await {
            Ok(scheduler) => {
                let _ = cell.set(scheduler);
                Ok(())
            }
            Err(StartError::Shutdown) => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    drop(running);
    Ok(())
}
