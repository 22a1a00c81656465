//! Follows the dispatcher's `Assignments` stream on the current session and feeds it
//! to the task manager; reopens it (for a fresh COMPLETE set) after a gap, an error,
//! or a new session.

use std::time::Duration;

use shoal_proto::v1::AssignmentsRequest;
use tokio::sync::watch;

use super::{Link, TaskManager};
use crate::backoff::Backoff;

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs until `link`'s sender is dropped or `stop` fires.
pub async fn follow(
    manager: TaskManager,
    mut link: watch::Receiver<Option<Link>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        let current = link.borrow_and_update().clone();
        let Some(current) = current else {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = link.changed() => if changed.is_err() { return } else { continue },
            }
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new session (or none): reopen on it.
                continue;
            }
            result = stream(&manager, &current) => result,
        };
        match result {
            Ok(()) => backoff.reset(),
            Err(e) => {
                tracing::warn!(session = %current.session_id, error = %e, "assignments stream ended; reopening")
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = link.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One Assignments stream, until it ends or breaks.
async fn stream(manager: &TaskManager, link: &Link) -> Result<(), String> {
    let mut client = link.client.clone();
    let mut stream = client
        .assignments(AssignmentsRequest {
            session_id: link.session_id.clone(),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let mut received = 0u64;
    loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                received += 1;
                if let Err(gap) = manager.apply(msg) {
                    return Err(format!("{gap}: resyncing"));
                }
            }
            Ok(None) => {
                return if received > 0 {
                    Ok(())
                } else {
                    Err("closed before its first message".into())
                };
            }
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}
