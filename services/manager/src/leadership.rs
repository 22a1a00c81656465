//! The manager leadership: one manager at a time runs the work that must happen once
//! cluster-wide (orchestrators, allocator, reaper). It holds an etcd election on a
//! lease; everything it writes as leader goes through a store fenced on that
//! leadership, so a manager that lost it (paused, partitioned) cannot write stale
//! decisions even before it notices.

use std::time::Duration;

use shoal_grpc_host::{ClusterState, ShutdownToken};
use shoal_store::{Election, Leadership};
use tokio::sync::watch;

/// The election every manager runs in.
pub const ELECTION: &str = "manager";

/// Whether this manager leads now; the Control API and node status read it.
pub type LeaderSignal = watch::Receiver<bool>;

/// Campaigns until shutdown; while leading, runs the leader-only work and watches for
/// the leadership's loss, then campaigns again. Resigns on shutdown so another manager
/// takes over at once instead of waiting for the lease to expire.
pub async fn lead(
    state: ClusterState,
    candidate_id: String,
    ttl: Duration,
    shutdown: ShutdownToken,
    is_leader: watch::Sender<bool>,
) {
    let election = Election::new(&state.store, ELECTION, &candidate_id, ttl);
    loop {
        let leadership: Leadership = tokio::select! {
            _ = shutdown.cancelled() => return,
            won = election.campaign() => match won {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let _ = is_leader.send(true);
        tracing::info!(candidate = %candidate_id, fence = leadership.revision(), "leading the managers");
        // Leader-only work receives `state.store.fenced(&leadership)`; the orchestrators
        // and the allocator start here.
        tokio::select! {
            _ = leadership.lost() => {
                let _ = is_leader.send(false);
                tracing::warn!(candidate = %candidate_id, "manager leadership lost; campaigning again");
            }
            _ = shutdown.cancelled() => {
                let _ = is_leader.send(false);
                if let Err(e) = leadership.resign().await {
                    tracing::warn!(error = %e, "could not resign the leadership; it expires with its lease");
                }
                return;
            }
        }
    }
}
