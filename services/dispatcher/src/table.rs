//! The sessions one dispatcher tracks, in memory, and the re-registration limiter.
//!
//! One entry per node this dispatcher is responsible for right now, with the instant at
//! which the node goes DOWN unless something extends it:
//! - `Live`: a session stream is open here; each heartbeat moves the deadline to
//!   now + 3 × period;
//! - `Disconnected`: the stream went away; the node has 3 × period to come back;
//! - `Orphan`: the store says READY/DISCONNECTED but no live dispatcher holds the
//!   session (a failover); the node has 2 × 3 × period to register anywhere.
//!
//! Heartbeats only touch this map (one lock, one hash lookup); the expiry task
//! ([`crate::expiry`]) is told about an entry once and re-reads its deadline when it
//! fires.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// What a tracked node is waiting for.
#[derive(Debug)]
pub(crate) enum State {
    /// A session stream is open on this dispatcher; `end` closes it with a status.
    /// `ended` is cancelled when the session stops being live here (replaced, closed,
    /// expired, node removed): the session's assignment streams end with it.
    Live {
        end: Option<oneshot::Sender<Status>>,
        ended: CancellationToken,
    },
    /// The stream of `session_id` went away; waiting for the node to come back.
    Disconnected,
    /// Nobody holds the node's session (its owner is gone); `owner` as read then.
    Orphan { owner: Option<String> },
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub session_id: String,
    pub deadline: Instant,
    pub state: State,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let State::Live { ended, .. } = &self.state {
            ended.cancel();
        }
    }
}

impl Entry {
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Live { .. })
    }

    /// Ends the session stream, if there is one, with `status`.
    pub fn end(&mut self, status: Status) {
        if let State::Live { end, .. } = &mut self.state
            && let Some(end) = end.take()
        {
            let _ = end.send(status);
        }
    }
}

/// What the expiry task learns about a node whose check came due.
#[derive(Debug)]
pub(crate) enum Due {
    /// No longer tracked.
    Gone,
    /// Extended meanwhile: check again at this instant.
    Later(Instant),
    /// Expired and removed from the table.
    Expired(Entry),
}

/// Counts of tracked nodes by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    pub live: usize,
    pub disconnected: usize,
    pub orphaned: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    nodes: Mutex<HashMap<String, Entry>>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned lock only means a holder panicked between two consistent states.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the whole table under its lock (keep it short: no I/O).
    pub fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        f(&mut self.lock())
    }

    /// Makes `session_id` the node's live session; returns what it replaces.
    pub fn open(
        &self,
        node_id: &str,
        session_id: &str,
        deadline: Instant,
        end: oneshot::Sender<Status>,
    ) -> Option<Entry> {
        self.lock().insert(
            node_id.to_string(),
            Entry {
                session_id: session_id.to_string(),
                deadline,
                state: State::Live {
                    end: Some(end),
                    ended: CancellationToken::new(),
                },
            },
        )
    }

    /// A heartbeat: extends the deadline if `session_id` is the node's live session here.
    pub fn heartbeat(&self, node_id: &str, session_id: &str, deadline: Instant) -> bool {
        match self.lock().get_mut(node_id) {
            Some(e) if e.is_live() && e.session_id == session_id && !session_id.is_empty() => {
                e.deadline = e.deadline.max(deadline);
                true
            }
            _ => false,
        }
    }

    /// Whether `session_id` is the node's live session here.
    pub fn is_live(&self, node_id: &str, session_id: &str) -> bool {
        self.lock()
            .get(node_id)
            .is_some_and(|e| e.is_live() && e.session_id == session_id)
    }

    /// A token cancelled when `session_id` stops being the node's live session here;
    /// `None` if it is not that now.
    pub fn session_ended(&self, node_id: &str, session_id: &str) -> Option<CancellationToken> {
        match self.lock().get(node_id) {
            Some(Entry {
                session_id: live,
                state: State::Live { ended, .. },
                ..
            }) if live == session_id && !session_id.is_empty() => Some(ended.clone()),
            _ => None,
        }
    }

    /// The stream of `session_id` went away: the node is now disconnected with a grace
    /// until `deadline`. False if that session is not the node's live one (superseded,
    /// expired, removed), in which case nothing changes.
    pub fn stream_closed(&self, node_id: &str, session_id: &str, deadline: Instant) -> bool {
        match self.lock().get_mut(node_id) {
            Some(e) if e.is_live() && e.session_id == session_id => {
                if let State::Live { ended, .. } = &e.state {
                    ended.cancel();
                }
                e.state = State::Disconnected;
                e.deadline = deadline;
                true
            }
            _ => false,
        }
    }

    /// Forgets the node if its entry is still `session_id`'s.
    pub fn remove_session(&self, node_id: &str, session_id: &str) -> Option<Entry> {
        let mut nodes = self.lock();
        if nodes.get(node_id)?.session_id == session_id {
            nodes.remove(node_id)
        } else {
            None
        }
    }

    /// Forgets the node, whatever its state.
    pub fn remove(&self, node_id: &str) -> Option<Entry> {
        self.lock().remove(node_id)
    }

    /// Tracks an orphaned node unless something tracks it already.
    pub fn orphan(
        &self,
        node_id: &str,
        session_id: &str,
        owner: Option<String>,
        deadline: Instant,
    ) -> bool {
        let mut nodes = self.lock();
        if nodes.contains_key(node_id) {
            return false;
        }
        nodes.insert(
            node_id.to_string(),
            Entry {
                session_id: session_id.to_string(),
                deadline,
                state: State::Orphan { owner },
            },
        );
        true
    }

    /// The node's check is due at `now`.
    pub fn due(&self, node_id: &str, now: Instant) -> Due {
        let mut nodes = self.lock();
        match nodes.get(node_id) {
            None => Due::Gone,
            Some(e) if e.deadline > now => Due::Later(e.deadline),
            Some(_) => nodes.remove(node_id).map_or(Due::Gone, Due::Expired),
        }
    }

    /// The live sessions: (node id, session id).
    pub fn live_sessions(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.is_live())
            .map(|(n, e)| (n.clone(), e.session_id.clone()))
            .collect()
    }

    pub fn counts(&self) -> SessionCounts {
        let mut c = SessionCounts::default();
        for e in self.lock().values() {
            match e.state {
                State::Live { .. } => c.live += 1,
                State::Disconnected => c.disconnected += 1,
                State::Orphan { .. } => c.orphaned += 1,
            }
        }
        c
    }
}

/// At most `max` registrations per node within any `window` (Swarm: 3 per 8 s). Only
/// registrations that pass count, so a client that keeps retrying too early does not
/// lock itself out for longer.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    max: usize,
    window: Duration,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a registration of `node_id` at `now`, or says how long to wait.
    pub fn check(&self, node_id: &str, now: Instant) -> Result<(), Duration> {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        let seen = hits.entry(node_id.to_string()).or_default();
        while seen
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            seen.pop_front();
        }
        if seen.len() >= self.max {
            let oldest = seen.front().copied().unwrap_or(now);
            return Err((oldest + self.window).saturating_duration_since(now));
        }
        seen.push_back(now);
        Ok(())
    }

    /// Drops nodes whose registrations have all left the window.
    pub fn prune(&self, now: Instant) {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        hits.retain(|_, seen| {
            seen.back()
                .is_some_and(|&t| now.saturating_duration_since(t) < self.window)
        });
    }

    pub fn forget(&self, node_id: &str) {
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_max_per_window() {
        let rl = RateLimiter::new(3, Duration::from_secs(8));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(rl.check("n", t0 + Duration::from_secs(i)).is_ok());
        }
        let wait = rl.check("n", t0 + Duration::from_secs(3)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(5));
        // Another node is unaffected.
        assert!(rl.check("m", t0).is_ok());
        // Once the first one leaves the window there is room for one more.
        assert!(rl.check("n", t0 + Duration::from_secs(8)).is_ok());
        assert!(rl.check("n", t0 + Duration::from_secs(8)).is_err());
        rl.prune(t0 + Duration::from_secs(100));
        assert!(rl.hits.lock().unwrap().is_empty());
    }

    #[test]
    fn table_lifecycle() {
        let t = Table::default();
        let now = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        assert!(
            t.open("n", "s1", now + Duration::from_secs(3), tx)
                .is_none()
        );
        let s1_ended = t.session_ended("n", "s1").unwrap();
        assert!(t.session_ended("n", "other").is_none());
        assert!(t.heartbeat("n", "s1", now + Duration::from_secs(4)));
        assert!(!t.heartbeat("n", "other", now + Duration::from_secs(4)));
        assert!(!t.heartbeat("m", "s1", now + Duration::from_secs(4)));
        assert!(
            matches!(t.due("n", now + Duration::from_secs(1)), Due::Later(d) if d == now + Duration::from_secs(4))
        );

        // A second session supersedes the first.
        let (tx2, _rx2) = oneshot::channel();
        let mut old = t
            .open("n", "s2", now + Duration::from_secs(3), tx2)
            .unwrap();
        old.end(Status::aborted("superseded"));
        assert_eq!(rx.try_recv().unwrap().code(), tonic::Code::Aborted);
        drop(old);
        assert!(s1_ended.is_cancelled(), "a replaced session has ended");
        let s2_ended = t.session_ended("n", "s2").unwrap();
        assert!(!s2_ended.is_cancelled());
        assert!(!t.stream_closed("n", "s1", now));
        assert!(t.stream_closed("n", "s2", now + Duration::from_secs(3)));
        assert!(s2_ended.is_cancelled(), "a closed session has ended");
        assert!(t.session_ended("n", "s2").is_none());
        assert!(!t.heartbeat("n", "s2", now + Duration::from_secs(9)));
        assert_eq!(t.counts().disconnected, 1);
        assert!(!t.orphan("n", "s2", None, now));
        assert!(
            matches!(t.due("n", now + Duration::from_secs(3)), Due::Expired(e) if e.session_id == "s2")
        );
        assert!(matches!(t.due("n", now), Due::Gone));
        assert!(t.orphan("n", "s2", Some("x".into()), now));
        assert_eq!(t.counts().orphaned, 1);
    }
}
