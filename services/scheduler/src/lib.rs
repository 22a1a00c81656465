//! shoal-scheduler: places pending tasks on nodes.
//!
//! Replicas form a NATS queue group on the scheduling work subject, so each pending
//! task is offered to one scheduler; placements are compare-and-swap writes, so two
//! replicas can never assign one task twice. Between hints, each replica reconciles
//! from its own list+watch caches of nodes and tasks.
//!
//! Today the process connects to cluster state and serves health; placement itself
//! is built on this entry point by the services work.

pub mod config;
pub mod placement;

pub use config::SchedulerConfig;
use shoal_grpc_host::{BoundHost, RunError};

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &[];

/// Runs the scheduler until SIGTERM/SIGINT.
pub async fn run(cfg: SchedulerConfig, host: BoundHost) -> Result<(), RunError> {
    let routes = tonic::service::Routes::default();
    shoal_grpc_host::serve_with_cluster_state(&cfg, host, routes, SERVICES, |_state| async {
        Ok(())
    })
    .await
}
