//! The one task that expires nodes.
//!
//! It keeps a timer wheel ([`DelayQueue`]) with at most one check per tracked node, at or
//! before the node's deadline in the [`Table`]. Heartbeats never reach this task: they
//! move the deadline in the table, and when a check fires that finds the deadline moved,
//! the check is re-armed at the new deadline. A node that heartbeats every period costs
//! one re-arm per ~2 periods; 20,000 nodes at a 5 s period are a few thousand cheap
//! wheel operations per second on one task, with no timer per node.

use std::collections::HashMap;

use futures::StreamExt;
use shoal_grpc_host::ShutdownToken;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use crate::table::{Due, Entry, Table};

/// Arms checks on the expiry task.
#[derive(Debug, Clone)]
pub(crate) struct Deadlines {
    tx: mpsc::UnboundedSender<(String, Instant)>,
}

pub(crate) type DeadlineRx = mpsc::UnboundedReceiver<(String, Instant)>;

impl Deadlines {
    pub fn channel() -> (Deadlines, DeadlineRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Deadlines { tx }, rx)
    }

    /// Makes sure the node is checked at `at` or earlier. Call it whenever a node's
    /// deadline is set to a value that may be earlier than before.
    pub fn watch(&self, node_id: &str, at: Instant) {
        let _ = self.tx.send((node_id.to_string(), at));
    }
}

struct Wheel {
    queue: DelayQueue<String>,
    keys: HashMap<String, Key>,
}

impl Wheel {
    fn arm(&mut self, node_id: String, at: Instant) {
        match self.keys.get(&node_id) {
            Some(key) => {
                if self.queue.deadline(key) > at {
                    self.queue.reset_at(key, at);
                }
            }
            None => {
                let key = self.queue.insert_at(node_id.clone(), at);
                self.keys.insert(node_id, key);
            }
        }
    }
}

/// Runs until shutdown: arms the checks it is sent, and calls `on_expired` with every
/// node whose deadline passed (already removed from the table).
pub(crate) async fn run(
    mut rx: DeadlineRx,
    table: &Table,
    mut on_expired: impl FnMut(String, Entry),
    shutdown: ShutdownToken,
) {
    let mut wheel = Wheel {
        queue: DelayQueue::new(),
        keys: HashMap::new(),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            cmd = rx.recv() => match cmd {
                Some((node_id, at)) => wheel.arm(node_id, at),
                None => return,
            },
            Some(fired) = wheel.queue.next() => {
                let node_id = fired.into_inner();
                wheel.keys.remove(&node_id);
                match table.due(&node_id, Instant::now()) {
                    Due::Gone => {}
                    Due::Later(at) => wheel.arm(node_id, at),
                    Due::Expired(entry) => on_expired(node_id, entry),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_only_nodes_whose_deadline_passed() {
        let table = Arc::new(Table::default());
        let (deadlines, rx) = Deadlines::channel();
        let expired = Arc::new(Mutex::new(Vec::new()));
        let token = ShutdownToken::new();
        let task = {
            let table = table.clone();
            let expired = expired.clone();
            let token = token.clone();
            tokio::spawn(async move {
                run(
                    rx,
                    &table,
                    |node, entry| {
                        expired
                            .lock()
                            .unwrap()
                            .push((node, entry.session_id.clone()))
                    },
                    token,
                )
                .await
            })
        };
        let start = Instant::now();
        let s = Duration::from_secs(1);
        for node in ["a", "b"] {
            let (tx, _rx) = oneshot::channel();
            std::mem::forget(_rx);
            table.open(node, "s", start + 3 * s, tx);
            deadlines.watch(node, start + 3 * s);
        }
        // "a" keeps heartbeating, "b" does not.
        for i in 1..=10u32 {
            tokio::time::sleep_until(start + i * s).await;
            assert!(table.heartbeat("a", "s", Instant::now() + 3 * s));
        }
        assert_eq!(
            *expired.lock().unwrap(),
            vec![("b".to_string(), "s".to_string())]
        );
        // An orphan with a shorter deadline than an armed check still fires on time.
        table.orphan("c", "x", None, Instant::now() + 2 * s);
        deadlines.watch("c", Instant::now() + 2 * s);
        tokio::time::sleep(2 * s + Duration::from_millis(10)).await;
        assert_eq!(expired.lock().unwrap().len(), 2);
        token.cancel();
        task.await.unwrap();
    }
}
