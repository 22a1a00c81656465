//! The one writer of node status.
//!
//! Every change a dispatcher makes to a node (registration, disconnection, down) is a
//! [`Change`] sent here. The writer collects changes for up to `window` (100 ms) or `max`
//! changes (10,000), whichever comes first — Swarm's batching — folds the changes of each
//! node onto one copy, and commits them with [`Store::update_many_from`]: packed
//! transactions, a compare-and-swap per node. Then it publishes one `node.update` hint per
//! written node.
//!
//! Changes are *conditional*, and the condition is evaluated against the node as stored
//! when the write is planned — again after every conflict:
//! - `Register` always applies (a session is being opened now, by this dispatcher);
//! - `Disconnected { session }` applies only to a READY node whose `session_id` is still
//!   `session`;
//! - `Down { session }` applies only to a READY or DISCONNECTED node whose `session_id`
//!   is still `session` (never empty: a node without a session is not a dispatcher's to
//!   mark) — a node that registered anywhere since, with any dispatcher
//!   replica, has another session id and is left alone. A `Down` for an orphan also
//!   re-checks, right before writing, that the session's owner is still gone.
//!
//! On a conflict the node is read again and the changes re-applied; whatever still
//! applies is written, whatever no longer applies is dropped. That is why two dispatcher
//! replicas never fight over a node: they can only agree to the same outcome, or one of
//! them finds its change obsolete.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use shoal_events::{Event, EventBus};
use shoal_grpc_host::ShutdownToken;
use shoal_proto::v1::node_status::State as NodeState;
use shoal_proto::v1::{Node, NodeDescription, NodeStatus};
use shoal_store::{CacheReader, Object, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::presence::Owners;

/// Swarm's status message for a node whose session stream went away.
pub const DISCONNECTED_MESSAGE: &str = "node is currently trying to find new manager";
/// Swarm's status message for a node that missed its heartbeats.
pub const HEARTBEAT_FAILURE: &str = "heartbeat failure";
/// Swarm's status message for a node marked down after a failover grace.
pub const ORPHAN_FAILURE: &str = "heartbeat failure for node in \"unknown\" state";

/// How often a batch is tried before its remaining changes are given up (each given-up
/// change is recovered later: see the module doc of [`crate::dispatcher`]).
const MAX_ATTEMPTS: usize = 6;

/// Why a registration was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegisterError {
    #[error("node {0} is not a member of this swarm")]
    Removed(String),
    #[error("cannot record the session in the cluster store: {0}")]
    Unavailable(String),
}

/// A status change of one node.
#[derive(Debug)]
pub(crate) enum Change {
    /// A session opened on this dispatcher: description, READY, address, session id.
    Register {
        session_id: String,
        description: Option<Box<NodeDescription>>,
        addr: Option<String>,
        done: oneshot::Sender<Result<Node, RegisterError>>,
    },
    /// The session stream went away.
    Disconnected { session_id: String },
    /// The node's deadline passed. `owner`: for an orphan, the dispatcher that held the
    /// session, re-checked before writing.
    Down {
        session_id: String,
        message: &'static str,
        owner: Option<String>,
    },
}

/// Sends changes to the writer task.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<(String, Change)>,
}

pub(crate) type WriterRx = mpsc::UnboundedReceiver<(String, Change)>;

impl Writer {
    pub fn channel() -> (Writer, WriterRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Writer { tx }, rx)
    }

    pub fn send(&self, node_id: &str, change: Change) {
        if self.tx.send((node_id.to_string(), change)).is_err() {
            tracing::debug!(node = node_id, "node status writer stopped; change dropped");
        }
    }

    /// Writes a registration and returns the node as written.
    pub async fn register(
        &self,
        node_id: &str,
        session_id: &str,
        description: Option<NodeDescription>,
        addr: Option<String>,
    ) -> Result<Node, RegisterError> {
        let (done, result) = oneshot::channel();
        self.send(
            node_id,
            Change::Register {
                session_id: session_id.to_string(),
                description: description.map(Box::new),
                addr,
                done,
            },
        );
        result.await.unwrap_or_else(|_| {
            Err(RegisterError::Unavailable(
                "the dispatcher is stopping".into(),
            ))
        })
    }
}

/// Applies `change` to `node` (stamped `now`); whether it changed anything.
fn apply(node: &mut Node, change: &Change, now: prost_types::Timestamp) -> bool {
    let state = node
        .status
        .as_ref()
        .map(|s| s.state())
        .unwrap_or(NodeState::Unknown);
    match change {
        Change::Register {
            session_id,
            description,
            addr,
            done,
        } => {
            if done.is_closed() {
                // The session gave up waiting and is gone; writing it would only
                // leave a READY node nobody holds.
                return false;
            }
            if let Some(d) = description {
                node.description = Some(NodeDescription::clone(d));
            }
            node.session_id = session_id.clone();
            let status = node.status.get_or_insert_with(NodeStatus::default);
            status.set_state(NodeState::Ready);
            status.message.clear();
            if let Some(addr) = addr {
                status.addr = addr.clone();
            }
            status.timestamp = Some(now);
            true
        }
        Change::Disconnected { session_id } => {
            if session_id.is_empty() || node.session_id != *session_id || state != NodeState::Ready
            {
                return false;
            }
            let status = node.status.get_or_insert_with(NodeStatus::default);
            status.set_state(NodeState::Disconnected);
            status.message = DISCONNECTED_MESSAGE.to_string();
            status.timestamp = Some(now);
            true
        }
        Change::Down {
            session_id,
            message,
            ..
        } => {
            if session_id.is_empty()
                || node.session_id != *session_id
                || !matches!(state, NodeState::Ready | NodeState::Disconnected)
            {
                return false;
            }
            let status = node.status.get_or_insert_with(NodeStatus::default);
            status.set_state(NodeState::Down);
            status.message = message.to_string();
            status.timestamp = Some(now);
            true
        }
    }
}

fn state_name(node: &Node) -> &'static str {
    match node.status.as_ref().map(|s| s.state()) {
        Some(NodeState::Ready) => "ready",
        Some(NodeState::Down) => "down",
        Some(NodeState::Disconnected) => "disconnected",
        _ => "unknown",
    }
}

fn update_event(node: &Node) -> Event {
    let mut attributes = HashMap::new();
    attributes.insert("state".to_string(), state_name(node).to_string());
    if let Some(d) = &node.description
        && !d.hostname.is_empty()
    {
        attributes.insert("name".to_string(), d.hostname.clone());
    }
    Event {
        kind: shoal_store::Kind::Node.as_str().to_string(),
        action: "update".to_string(),
        id: node.id().to_string(),
        version: node.version(),
        time: Some(prost_types::Timestamp::from(SystemTime::now())),
        attributes,
    }
}

/// The changes of one node in a batch, in arrival order.
struct Group {
    node_id: String,
    changes: Vec<Change>,
    /// A fresh copy read after a conflict, used instead of the cache's.
    base: Option<Node>,
    settled: bool,
}

impl Group {
    fn resolve(&mut self, result: Result<Node, RegisterError>) {
        for change in self.changes.drain(..) {
            if let Change::Register { done, .. } = change {
                let _ = done.send(result.clone());
            }
        }
        self.settled = true;
    }
}

/// The writer task's state.
pub(crate) struct WriterTask {
    pub store: Store,
    pub bus: EventBus,
    pub nodes: CacheReader<Node>,
    pub instance: String,
    pub window: Duration,
    pub max: usize,
    /// Nodes as this writer last wrote them, until the cache has caught up: planning from
    /// them avoids a certain conflict on a node changed twice in quick succession.
    recent: HashMap<String, Node>,
}

impl WriterTask {
    pub fn new(
        store: Store,
        bus: EventBus,
        nodes: CacheReader<Node>,
        instance: String,
        window: Duration,
        max: usize,
    ) -> Self {
        Self {
            store,
            bus,
            nodes,
            instance,
            window,
            max: max.max(1),
            recent: HashMap::new(),
        }
    }

    /// Runs until shutdown (or until every [`Writer`] is dropped).
    pub async fn run(mut self, mut rx: WriterRx, shutdown: ShutdownToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                op = rx.recv() => match op {
                    Some(op) => op,
                    None => return,
                },
            };
            let mut batch = vec![first];
            let until = Instant::now() + self.window;
            while batch.len() < self.max {
                tokio::select! {
                    biased;
                    op = rx.recv() => match op {
                        Some(op) => batch.push(op),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
            self.commit(batch, &shutdown).await;
        }
    }

    /// The freshest copy of a node this writer knows without reading etcd.
    fn latest(&self, node_id: &str) -> Option<Node> {
        let cached = self.nodes.get(node_id);
        match (cached, self.recent.get(node_id)) {
            (Some(c), Some(r)) if r.version() > c.version() => Some(r.clone()),
            (Some(c), _) => Some((*c).clone()),
            (None, Some(r)) => Some(r.clone()),
            (None, None) => None,
        }
    }

    async fn commit(&mut self, batch: Vec<(String, Change)>, shutdown: &ShutdownToken) {
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (node_id, change) in batch {
            let i = *index.entry(node_id.clone()).or_insert_with(|| {
                groups.push(Group {
                    node_id,
                    changes: Vec::new(),
                    base: None,
                    settled: false,
                });
                groups.len() - 1
            });
            groups[i].changes.push(change);
        }
        self.drop_downs_of_live_owners(&mut groups).await;

        let mut events = Vec::new();
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=MAX_ATTEMPTS {
            // Nodes the cache does not have (yet): read them.
            let missing: Vec<String> = groups
                .iter()
                .filter(|g| !g.settled && g.base.is_none() && self.latest(&g.node_id).is_none())
                .map(|g| g.node_id.clone())
                .collect();
            let mut transient = None;
            if !missing.is_empty() {
                match self.store.get_many::<Node>(&missing).await {
                    Ok(found) => {
                        let mut found: HashMap<String, Node> =
                            found.into_iter().map(|n| (n.id().to_string(), n)).collect();
                        for g in groups.iter_mut().filter(|g| !g.settled) {
                            if let Some(n) = found.remove(&g.node_id) {
                                g.base = Some(n);
                            } else if missing.contains(&g.node_id) {
                                g.resolve(Err(RegisterError::Removed(g.node_id.clone())));
                            }
                        }
                    }
                    Err(e) => transient = Some(e.to_string()),
                }
            }

            let now = prost_types::Timestamp::from(SystemTime::now());
            let mut planned: Vec<(usize, Node, Node)> = Vec::new();
            if transient.is_none() {
                for (i, g) in groups.iter_mut().enumerate().filter(|(_, g)| !g.settled) {
                    let Some(base) = g.base.take().or_else(|| self.latest(&g.node_id)) else {
                        continue;
                    };
                    let mut next = base.clone();
                    let mut changed = false;
                    for change in &g.changes {
                        changed |= apply(&mut next, change, now);
                    }
                    if changed {
                        planned.push((i, base, next));
                    } else {
                        // Nothing applies any more (or only abandoned registrations).
                        g.resolve(Ok(base));
                    }
                }
            }

            let results = if planned.is_empty() {
                Vec::new()
            } else {
                self.store
                    .update_many_from(planned.iter().map(|(_, prev, next)| (prev, next.clone())))
                    .await
            };
            let mut reread = Vec::new();
            for ((i, prev, _), result) in planned.into_iter().zip(results) {
                let g = &mut groups[i];
                match result {
                    Ok(node) => {
                        events.push(update_event(&node));
                        self.recent.insert(node.id().to_string(), node.clone());
                        g.resolve(Ok(node));
                    }
                    Err(e) if e.is_conflict() => reread.push(g.node_id.clone()),
                    Err(e) if e.is_not_found() => {
                        g.resolve(Err(RegisterError::Removed(g.node_id.clone())));
                    }
                    Err(e) => {
                        g.base = Some(prev);
                        transient = Some(e.to_string());
                    }
                }
            }
            if !reread.is_empty() {
                match self.store.get_many::<Node>(&reread).await {
                    Ok(fresh) => {
                        let mut fresh: HashMap<String, Node> =
                            fresh.into_iter().map(|n| (n.id().to_string(), n)).collect();
                        for g in groups.iter_mut().filter(|g| reread.contains(&g.node_id)) {
                            match fresh.remove(&g.node_id) {
                                Some(n) => g.base = Some(n),
                                None => g.resolve(Err(RegisterError::Removed(g.node_id.clone()))),
                            }
                        }
                    }
                    // The cache's copy is the fallback; it may be stale, then the next
                    // attempt conflicts again.
                    Err(e) => transient = Some(e.to_string()),
                }
            }

            if groups.iter().all(|g| g.settled) {
                break;
            }
            if attempt == MAX_ATTEMPTS {
                let reason = transient.unwrap_or_else(|| "the node kept changing".into());
                for g in groups.iter_mut().filter(|g| !g.settled) {
                    tracing::warn!(node = %g.node_id, %reason, "node status change given up");
                    g.resolve(Err(RegisterError::Unavailable(reason.clone())));
                }
                break;
            }
            if let Some(reason) = transient {
                tracing::warn!(%reason, retry_in = ?backoff, "node status write failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }

        // Forget copies the cache has caught up with.
        let cache_revision = self.nodes.revision();
        self.recent.retain(|_, n| n.version() > cache_revision);

        if !events.is_empty()
            && let Err(e) = self.bus.publish_all(&events).await
        {
            tracing::warn!(error = %e, events = events.len(), "node.update events not published");
        }
    }

    /// A `Down` of an orphan whose owner is alive again is dropped: the owner expires
    /// its own nodes.
    async fn drop_downs_of_live_owners(&self, groups: &mut [Group]) {
        let owners: HashSet<String> = groups
            .iter()
            .flat_map(|g| g.changes.iter())
            .filter_map(|c| match c {
                Change::Down {
                    owner: Some(owner), ..
                } if *owner != self.instance => Some(owner.clone()),
                _ => None,
            })
            .collect();
        if owners.is_empty() {
            return;
        }
        let mut check = Owners::default();
        let mut alive = HashSet::new();
        for owner in owners {
            if check.alive(&self.store, &self.instance, &owner).await {
                alive.insert(owner);
            }
        }
        for g in groups.iter_mut() {
            g.changes.retain(|c| match c {
                Change::Down {
                    owner: Some(owner),
                    ..
                } if alive.contains(owner) => {
                    tracing::info!(node = %g.node_id, %owner, "dispatcher holding the node is alive again; not marking it down");
                    false
                }
                _ => true,
            });
            if g.changes.is_empty() {
                g.settled = true;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ready(session: &str) -> Node {
        Node {
            session_id: session.into(),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                addr: "10.0.0.1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn changes_apply_only_to_their_session() {
        let now = prost_types::Timestamp::default();
        let mut n = ready("a.1");
        let down_other = Change::Down {
            session_id: "b.2".into(),
            message: HEARTBEAT_FAILURE,
            owner: None,
        };
        assert!(!apply(&mut n, &down_other, now));
        let mut sessionless = ready("");
        let down_none = Change::Down {
            session_id: String::new(),
            message: HEARTBEAT_FAILURE,
            owner: None,
        };
        assert!(!apply(&mut sessionless, &down_none, now));
        let disc = Change::Disconnected {
            session_id: "a.1".into(),
        };
        assert!(apply(&mut n, &disc, now));
        assert_eq!(n.status.as_ref().unwrap().state(), NodeState::Disconnected);
        assert!(!apply(&mut n, &disc, now), "only a READY node disconnects");
        let down = Change::Down {
            session_id: "a.1".into(),
            message: HEARTBEAT_FAILURE,
            owner: None,
        };
        assert!(apply(&mut n, &down, now));
        assert_eq!(n.status.as_ref().unwrap().state(), NodeState::Down);
        assert_eq!(n.status.as_ref().unwrap().message, HEARTBEAT_FAILURE);
        assert!(!apply(&mut n, &down, now), "DOWN stays DOWN");

        let (done, _rx) = oneshot::channel();
        let reg = Change::Register {
            session_id: "c.3".into(),
            description: Some(Box::new(NodeDescription {
                hostname: "h".into(),
                ..Default::default()
            })),
            addr: None,
            done,
        };
        assert!(apply(&mut n, &reg, now));
        let s = n.status.as_ref().unwrap();
        assert_eq!(s.state(), NodeState::Ready);
        assert_eq!(s.message, "");
        assert_eq!(
            s.addr, "10.0.0.1",
            "an unknown peer address keeps the old one"
        );
        assert_eq!(n.session_id, "c.3");
        assert_eq!(n.description.as_ref().unwrap().hostname, "h");

        let (done, rx) = oneshot::channel();
        drop(rx);
        let abandoned = Change::Register {
            session_id: "d.4".into(),
            description: None,
            addr: None,
            done,
        };
        assert!(!apply(&mut n, &abandoned, now));
    }
}
