//! Reconnect pacing for the long-lived loops (watches, lease keep-alive, campaigns), and a
//! guard that stops a spawned loop when its owner goes away.

use std::time::Duration;

use tokio::task::JoinHandle;

/// Exponential backoff with jitter: 50 ms doubling to 2 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

const FIRST: Duration = Duration::from_millis(50);
const MAX: Duration = Duration::from_secs(2);

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Backoff {
    /// Sleeps for the current delay (with up to 50 % jitter) and doubles it.
    pub async fn wait(&mut self) {
        let jitter = rand::random::<f64>() * 0.5 + 0.5;
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(MAX);
    }

    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// Aborts the task when dropped.
#[derive(Debug)]
pub(crate) struct TaskGuard(pub JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
