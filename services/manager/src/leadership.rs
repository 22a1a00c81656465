//! Elections a manager holds.
//!
//! - The manager leadership: one manager at a time runs the work that must happen once
//!   cluster-wide (orchestrators, allocator, reaper). Everything it writes as leader goes
//!   through a store fenced on that leadership, so a manager that lost it (paused,
//!   partitioned) cannot write stale decisions even before it notices.
//! - Presence: each manager holds its own `manager-presence/<node id>` key while it is
//!   up, so `node ls` can tell Reachable managers from Unreachable ones.
//!
//! Both are an etcd key on a lease; a manager that stops cleanly resigns (the key goes
//! at once), one that dies loses it when the lease expires.

use std::time::Duration;

use shoal_grpc_host::ShutdownToken;
use shoal_store::{Election, Fence, Leadership, Store};
use tokio::sync::watch;

/// The election every manager runs in.
pub const ELECTION: &str = "manager";

/// Holds the election `name` as `candidate_id` until shutdown: campaigns, keeps the
/// lease alive, campaigns again when it is lost. `held` carries the fence of the term
/// held now (`None` while not holding): leader-only work subscribes to it, writes only
/// through `store.fenced(fence)` and stops as soon as the value changes.
pub async fn hold(
    store: Store,
    name: String,
    candidate_id: String,
    ttl: Duration,
    shutdown: ShutdownToken,
    held: watch::Sender<Option<Fence>>,
) {
    let election = Election::new(&store, &name, &candidate_id, ttl);
    loop {
        let leadership: Leadership = tokio::select! {
            _ = shutdown.cancelled() => return,
            won = election.campaign() => match won {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(election = %name, error = %e, "campaign failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let _ = held.send(Some(leadership.fence()));
        tracing::info!(election = %name, candidate = %candidate_id, fence = leadership.revision(), "holding");
        tokio::select! {
            _ = leadership.lost() => {
                let _ = held.send(None);
                tracing::warn!(election = %name, "lost; campaigning again");
            }
            _ = shutdown.cancelled() => {
                let _ = held.send(None);
                if let Err(e) = leadership.resign().await {
                    tracing::warn!(election = %name, error = %e, "could not resign; the key expires with its lease");
                }
                return;
            }
        }
    }
}
