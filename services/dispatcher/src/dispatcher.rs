//! Node lifecycle: who is READY, DISCONNECTED or DOWN, and who decides.
//!
//! # The rules
//! - **Register.** A worker opens a `Session` with its node certificate. The dispatcher
//!   writes the node's description, status READY (empty message), `status.addr` = the
//!   peer's IP, and a fresh `session_id` of the form `<dispatcher instance>.<random>`.
//! - **Heartbeat.** Each heartbeat must name the node's live session *on this
//!   dispatcher*; it moves the node's deadline to now + 3 × period (the period is the
//!   cluster's `spec.dispatcher.heartbeat_period`, default 5 s, followed live from the
//!   Cluster object). Missing the deadline → DOWN, "heartbeat failure"; the session
//!   stream is closed with NOT_FOUND so the worker opens a new one.
//! - **Disconnect.** The stream going away (the worker died, the connection broke) →
//!   DISCONNECTED at once, then DOWN ("heartbeat failure") unless the node opens a new
//!   session — here or on another replica — within 3 × period.
//! - **Failover grace.** A node the store says READY or DISCONNECTED through a
//!   dispatcher session (a non-empty `session_id`) whose session belongs to no live
//!   dispatcher (its owner's presence key is gone, see [`crate::presence`], or the
//!   session id names no owner) is an *orphan*. Every
//!   dispatcher adopts orphans when it starts and on a periodic sweep (every period,
//!   between 1 s and 5 s): each gets 2 × 3 × period from the moment it is noticed to
//!   register anywhere, then DOWN ("heartbeat failure for node in "unknown" state").
//!   So a restarted or failed-over control plane never marks a healthy fleet down: the
//!   workers reconnect well within the doubled grace. A node READY *without* a session
//!   id did not get there through a dispatcher (a manager marks its own node READY and
//!   proves it is up with its own presence key): dispatchers leave it alone.
//! - **Several replicas.** A dispatcher only ever writes a disconnect or a DOWN *for a
//!   session id*: the write is a compare-and-swap on the node's version, re-planned on
//!   conflict, and applies only while the node's `session_id` is still that id (see
//!   [`crate::writer`]). A node that registered anywhere since has another id and is
//!   left alone. A node whose session's owner is alive is never adopted: its owner
//!   expires it. Right before writing an orphan DOWN the owner's presence is read
//!   again. Two dispatchers can therefore only agree (both want the same orphan DOWN:
//!   one CAS wins, the other finds nothing left to do) — they never undo each other.
//! - **Self-healing.** A status write given up after retries (etcd unreachable for
//!   seconds) is not lost: a READY node whose session is this dispatcher's but that this
//!   dispatcher no longer tracks is an orphan to the next sweep.
//! - **Removal.** A node deleted from the store has its session closed
//!   (PERMISSION_DENIED) and can no longer open one.
//! - **Re-registration limit.** At most 3 sessions per node per 8 s on one dispatcher
//!   (Swarm's numbers); more → RESOURCE_EXHAUSTED "node <id> re-registered too often;
//!   try again in Ns".
//! - **Shutdown.** Streams end with UNAVAILABLE and nothing is written: the nodes stay
//!   READY, and whichever dispatcher they reconnect to, or adopts them, takes over.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shoal_grpc_host::{ClusterState, ShutdownToken};
use shoal_proto::v1::node_status::State as NodeState;
use shoal_proto::v1::{Cluster, Node};
use shoal_store::{Cache, CacheEvent, Object, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tonic::Status;

use crate::assignments::{self, Assignments};
use crate::expiry::{self, Deadlines};
use crate::presence::{self, Owners};
use crate::table::{Entry, RateLimiter, SessionCounts, State, Table};
use crate::task_status::{self, StatusWriter, StatusWriterTask, WriterStats};
use crate::writer::{Change, HEARTBEAT_FAILURE, ORPHAN_FAILURE, Writer, WriterTask};

/// The heartbeat period when the cluster does not set one (Swarm's default).
pub const DEFAULT_HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
/// Shorter configured periods are raised to this.
pub const MIN_HEARTBEAT_PERIOD: Duration = Duration::from_millis(100);
/// Periods without a heartbeat before a node is DOWN.
pub const MISSED_HEARTBEATS: u32 = 3;
/// How much longer than [`MISSED_HEARTBEATS`] periods an orphaned node gets.
pub const FAILOVER_GRACE_FACTOR: u32 = 2;
/// The cluster object's name.
pub const CLUSTER_NAME: &str = "default";

/// How a dispatcher behaves; the defaults are Swarm's.
#[derive(Debug, Clone)]
pub struct DispatcherOptions {
    /// The address workers reach this dispatcher at, sent to them as a manager to fail
    /// over to. Empty: none is sent.
    pub advertise_addr: String,
    /// How long status changes are collected before one batched write. Default 100 ms.
    pub batch_window: Duration,
    /// Changes that trigger a write before the window ends. Default 10,000.
    pub batch_max: usize,
    /// Sessions a node may open per `rate_limit_window`. Default 3.
    pub rate_limit_count: usize,
    /// Default 8 s.
    pub rate_limit_window: Duration,
    /// Lease TTL of this dispatcher's presence key: how long after a crash other
    /// dispatchers start the failover grace of its nodes. Default 10 s.
    pub presence_ttl: Duration,
    /// How long opening a session may wait for its registration to be written.
    /// Default 10 s.
    pub register_timeout: Duration,
    /// How long task changes are collected into one assignments message. Default 50 ms.
    pub assignment_window: Duration,
    /// Changed tasks one assignment stream may have pending before it is sent a fresh
    /// COMPLETE instead. Default 4096.
    pub assignment_backlog: usize,
    /// Opens the secrets put into assignments (made from the control plane's KEK).
    /// None: no secret is sent (tasks that need one fail on their worker).
    pub secret_sealer: Option<Arc<shoal_pki::SecretSealer>>,
}

impl Default for DispatcherOptions {
    fn default() -> Self {
        Self {
            advertise_addr: String::new(),
            batch_window: Duration::from_millis(100),
            batch_max: 10_000,
            rate_limit_count: 3,
            rate_limit_window: Duration::from_secs(8),
            presence_ttl: Duration::from_secs(10),
            register_timeout: Duration::from_secs(10),
            assignment_window: Duration::from_millis(50),
            assignment_backlog: assignments::BACKLOG,
            secret_sealer: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("shut down while starting")]
    Shutdown,
    #[error("cannot start the dispatcher: {0}")]
    Store(#[from] shoal_store::Error),
}

/// The heartbeat period `cluster` asks for.
pub fn heartbeat_period(cluster: Option<&Cluster>) -> Duration {
    cluster
        .and_then(|c| c.spec.as_ref()?.dispatcher.as_ref()?.heartbeat_period)
        .and_then(|d| Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .map(|d| d.max(MIN_HEARTBEAT_PERIOD))
        .unwrap_or(DEFAULT_HEARTBEAT_PERIOD)
}

/// A running dispatcher: its caches, session table and background tasks (writer,
/// expiry, sweeps, presence). Cheap to clone. Its tasks stop when the shutdown token
/// given to [`Dispatcher::start`] fires.
#[derive(Clone)]
pub struct Dispatcher {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub instance: String,
    pub options: DispatcherOptions,
    pub store: Store,
    pub nodes: Cache<Node>,
    pub clusters: Cache<Cluster>,
    pub table: Table,
    pub limiter: RateLimiter,
    pub deadlines: Deadlines,
    pub writer: Writer,
    pub assignments: Arc<Assignments>,
    pub statuses: StatusWriter,
    pub status_stats: Arc<std::sync::Mutex<WriterStats>>,
    pub shutdown: ShutdownToken,
}

async fn until<T>(
    shutdown: &ShutdownToken,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, StartError> {
    tokio::select! {
        _ = shutdown.cancelled() => Err(StartError::Shutdown),
        v = fut => Ok(v),
    }
}

impl Dispatcher {
    /// Starts a dispatcher on `state`: node and cluster caches, its presence key, the
    /// status writer, the expiry task, and the failover grace of every orphaned node.
    pub async fn start(
        state: ClusterState,
        options: DispatcherOptions,
        shutdown: ShutdownToken,
    ) -> Result<Dispatcher, StartError> {
        let ClusterState { store, bus } = state;
        let instance = shoal_store::new_id();
        let nodes = Cache::<Node>::start(&store);
        let clusters = Cache::<Cluster>::start(&store);
        let assignments = Assignments::start(
            &store,
            options.assignment_backlog,
            options.secret_sealer.clone(),
        );
        until(&shutdown, nodes.wait_until_synced()).await??;
        until(&shutdown, clusters.wait_until_synced()).await??;
        until(&shutdown, assignments.wait_until_synced()).await??;
        tokio::spawn(assignments.clone().fan_out(shutdown.clone()));
        let presence = until(
            &shutdown,
            presence::take(
                &store,
                &instance,
                &options.advertise_addr,
                options.presence_ttl,
            ),
        )
        .await??;
        tokio::spawn(presence::keep(
            store.clone(),
            instance.clone(),
            options.advertise_addr.clone(),
            options.presence_ttl,
            presence,
            shutdown.clone(),
        ));

        let (deadlines, deadline_rx) = Deadlines::channel();
        let (writer, writer_rx) = Writer::channel();
        let (statuses, statuses_rx) = StatusWriter::channel(task_status::QUEUE);
        let status_stats = Arc::new(std::sync::Mutex::new(WriterStats::default()));
        let status_task = StatusWriterTask::new(
            store.clone(),
            bus.clone(),
            assignments.tasks.reader(),
            options.batch_window,
            options.batch_max,
            status_stats.clone(),
        );
        tokio::spawn(status_task.run(statuses_rx, shutdown.clone()));
        let writer_task = WriterTask::new(
            store.clone(),
            bus,
            nodes.reader(),
            instance.clone(),
            options.batch_window,
            options.batch_max,
        );
        tokio::spawn(writer_task.run(writer_rx, shutdown.clone()));
        let shared = Arc::new(Shared {
            limiter: RateLimiter::new(options.rate_limit_count, options.rate_limit_window),
            instance,
            options,
            store,
            nodes,
            clusters,
            table: Table::default(),
            deadlines,
            writer,
            assignments,
            statuses,
            status_stats,
            shutdown: shutdown.clone(),
        });
        {
            let s = shared.clone();
            tokio::spawn(async move {
                expiry::run(
                    deadline_rx,
                    &s.table,
                    |node, entry| s.expired(node, entry),
                    s.shutdown.clone(),
                )
                .await
            });
        }
        let adopted = shared.sweep().await;
        tracing::info!(
            instance = %shared.instance,
            adopted,
            grace = ?shared.failover_grace(),
            "dispatcher started"
        );
        tokio::spawn(maintain(shared.clone()));
        Ok(Dispatcher { shared })
    }

    /// This dispatcher's instance id: the owner part of the session ids it hands out.
    pub fn instance_id(&self) -> &str {
        &self.shared.instance
    }

    /// The heartbeat period in force now.
    pub fn heartbeat_period(&self) -> Duration {
        self.shared.period()
    }

    /// How many nodes this dispatcher tracks, by state.
    pub fn session_counts(&self) -> SessionCounts {
        self.shared.table.counts()
    }

    /// Task status updates written so far, and in how many batches.
    pub fn task_status_stats(&self) -> WriterStats {
        *self
            .shared
            .status_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many assignment streams are open.
    pub fn assignment_streams(&self) -> usize {
        self.shared.assignments.streams()
    }

    /// Whether `session_id` is `node_id`'s live session on this dispatcher (for the
    /// assignment and task-status RPCs).
    pub fn is_session_live(&self, node_id: &str, session_id: &str) -> bool {
        self.shared.table.is_live(node_id, session_id)
    }
}

impl Shared {
    /// The swarm's cluster object (`default`; the only one in practice).
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        let mut clusters = self.clusters.list();
        if clusters.len() <= 1 {
            return clusters.pop();
        }
        let named = clusters.iter().position(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .is_some_and(|a| a.name == CLUSTER_NAME)
        });
        match named {
            Some(i) => Some(clusters.swap_remove(i)),
            None => clusters.into_iter().min_by(|a, b| a.id().cmp(b.id())),
        }
    }

    pub fn period(&self) -> Duration {
        heartbeat_period(self.cluster().as_deref())
    }

    /// How long a live or disconnected node may stay silent.
    pub fn grace(&self) -> Duration {
        self.period() * MISSED_HEARTBEATS
    }

    /// How long an orphaned node may take to register anywhere.
    pub fn failover_grace(&self) -> Duration {
        self.grace() * FAILOVER_GRACE_FACTOR
    }

    fn sweep_interval(&self) -> Duration {
        self.period()
            .clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// A tracked node's deadline passed.
    fn expired(&self, node_id: String, mut entry: Entry) {
        let (message, owner) = match &entry.state {
            State::Live { .. } => {
                tracing::info!(node = %node_id, session = %entry.session_id, "no heartbeat within the grace; node down");
                (HEARTBEAT_FAILURE, None)
            }
            State::Disconnected => {
                tracing::info!(node = %node_id, session = %entry.session_id, "disconnected node did not come back; node down");
                (HEARTBEAT_FAILURE, None)
            }
            State::Orphan { owner } => {
                tracing::info!(node = %node_id, session = %entry.session_id, "orphaned node did not register within the failover grace; node down");
                (ORPHAN_FAILURE, owner.clone())
            }
        };
        entry.end(Status::not_found(format!(
            "session {} expired: no heartbeat within {:?}; open a new session",
            entry.session_id,
            self.grace()
        )));
        self.writer.send(
            &node_id,
            Change::Down {
                session_id: std::mem::take(&mut entry.session_id),
                message,
                owner,
            },
        );
    }

    /// The node is gone from the store: close its session.
    fn node_removed(&self, node_id: &str) {
        self.limiter.forget(node_id);
        if let Some(mut entry) = self.table.remove(node_id) {
            if entry.is_live() {
                tracing::info!(
                    node = node_id,
                    "node removed from the swarm; closing its session"
                );
            }
            entry.end(Status::permission_denied(format!(
                "node {node_id} was removed from the swarm"
            )));
        }
    }

    /// Adopts orphaned nodes (see the module doc), drops orphans that found a session,
    /// closes sessions of removed nodes. Returns how many nodes it adopted.
    pub async fn sweep(&self) -> usize {
        let now = Instant::now();
        self.limiter.prune(now);
        let nodes = self.nodes.list();
        let mut present: HashSet<&str> = HashSet::with_capacity(nodes.len());
        // (node id, session id, owner) of READY/DISCONNECTED nodes nobody tracks here.
        let mut candidates: Vec<(String, String, Option<String>)> = Vec::new();
        self.table.with(|table| {
            for node in &nodes {
                let id = node.id();
                present.insert(id);
                let state = node.status.as_ref().map(|s| s.state());
                let active = matches!(state, Some(NodeState::Ready | NodeState::Disconnected));
                match table.get(id) {
                    // An orphan that registered somewhere, or is down already.
                    Some(e)
                        if matches!(e.state, State::Orphan { .. })
                            && (!active || e.session_id != node.session_id) =>
                    {
                        table.remove(id);
                    }
                    Some(_) => {}
                    None if active && !node.session_id.is_empty() => candidates.push((
                        id.to_string(),
                        node.session_id.clone(),
                        presence::session_owner(&node.session_id).map(str::to_string),
                    )),
                    None => {}
                }
            }
            table.retain(|id, e| {
                !matches!(e.state, State::Orphan { .. }) || present.contains(id.as_str())
            });
        });

        let mut owners = Owners::default();
        let mut orphans = Vec::new();
        for (id, session, owner) in candidates {
            let orphaned = match owner.as_deref() {
                None => true,
                // Ours, yet not tracked: a change given up earlier.
                Some(o) if o == self.instance => true,
                Some(o) => !owners.alive(&self.store, &self.instance, o).await,
            };
            if orphaned {
                orphans.push((id, session, owner));
            }
        }
        let deadline = Instant::now() + self.failover_grace();
        let mut adopted = 0;
        for (id, session, owner) in orphans {
            if self.table.orphan(&id, &session, owner, deadline) {
                self.deadlines.watch(&id, deadline);
                adopted += 1;
            }
        }
        if adopted > 0 {
            tracing::info!(adopted, grace = ?self.failover_grace(), "adopted nodes without a live session");
        }

        // Live sessions of nodes the cache no longer has: confirm with the store.
        for (node_id, _) in self.table.live_sessions() {
            if present.contains(node_id.as_str()) {
                continue;
            }
            match self.store.try_get::<Node>(&node_id).await {
                Ok(None) => self.node_removed(&node_id),
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(node = %node_id, error = %e, "cannot check the node"),
            }
        }
        adopted
    }
}

/// Periodic sweeps, and closing sessions of removed nodes as soon as the cache says so.
async fn maintain(shared: Arc<Shared>) {
    let mut events = shared.nodes.subscribe();
    let mut next_sweep = Instant::now() + shared.sweep_interval();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next_sweep) => {
                shared.sweep().await;
                next_sweep = Instant::now() + shared.sweep_interval();
            }
            ev = events.recv() => match ev {
                Ok(CacheEvent::Deleted(node)) => shared.node_removed(node.id()),
                Ok(CacheEvent::Upserted(_)) => {}
                Ok(CacheEvent::Restarted { .. }) | Err(RecvError::Lagged(_)) => {
                    shared.sweep().await;
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{ClusterSpec, DispatcherConfig as ClusterDispatcherConfig};

    fn cluster(period: Option<prost_types::Duration>) -> Cluster {
        Cluster {
            spec: Some(ClusterSpec {
                dispatcher: Some(ClusterDispatcherConfig {
                    heartbeat_period: period,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn period_defaults_and_bounds() {
        assert_eq!(heartbeat_period(None), DEFAULT_HEARTBEAT_PERIOD);
        assert_eq!(
            heartbeat_period(Some(&cluster(None))),
            DEFAULT_HEARTBEAT_PERIOD
        );
        let ms = |n: i32| prost_types::Duration {
            seconds: 0,
            nanos: n * 1_000_000,
        };
        assert_eq!(
            heartbeat_period(Some(&cluster(Some(ms(500))))),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat_period(Some(&cluster(Some(ms(1))))),
            MIN_HEARTBEAT_PERIOD
        );
        assert_eq!(
            heartbeat_period(Some(&cluster(Some(ms(0))))),
            DEFAULT_HEARTBEAT_PERIOD
        );
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(
            heartbeat_period(Some(&cluster(Some(negative)))),
            DEFAULT_HEARTBEAT_PERIOD
        );
    }
}
