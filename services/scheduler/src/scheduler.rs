//! The scheduler's loop: caches, work sources, passes and their writes.
//!
//! Work arrives from five sources, all folded into one [`Notify`] permit, so any
//! amount of work becomes at most one pending pass (bounded by construction):
//! - hints on [`SCHEDULE_WORK_SUBJECT`] through a NATS queue group (N replicas share
//!   them); a hint whose payload is an etcd revision waits (bounded) for the task
//!   cache to reach it first;
//! - the task cache: a task becoming schedulable (after `backup_grace`, so the replica
//!   that got the task's hint places it and the others do not race it), and — while
//!   some task is unplaceable — any task leaving a node or finishing (capacity freed);
//! - the node cache: any node change (ready, availability, labels, resources);
//! - NATS reconnects / slow-consumer signals and cache restarts or lag;
//! - a periodic scan (`scan_interval`), the safety net.
//!
//! A pass waits `coalesce` for more work to arrive, then takes every schedulable task
//! from the cache's `schedulable` index (at most `max_tasks_per_pass`, the rest goes to
//! the next pass at once), builds each node's [`NodeInfo`] from the task cache's
//! by-node index, and places the groups one after the other. Decisions are written
//! with [`Store::update_many_from`]: a compare-and-swap on each task's cached version,
//! many per transaction, so two replicas never assign a task twice — the loser's CAS
//! fails and the task just leaves its pass. Tasks written are kept *in flight* until
//! the cache shows a newer version: they are not placed again meanwhile, and the
//! placements among them still count on their nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use shoal_events::{BusSignal, Event, EventBus, SCHEDULE_WORK_SUBJECT};
use shoal_grpc_host::{ClusterState, ShutdownToken};
use shoal_proto::TaskStateExt;
use shoal_proto::v1::{Node, Task, TaskState};
use shoal_store::{Cache, CacheEvent, CacheReader, Object, Store};
use tokio::sync::{Notify, broadcast};
use tracing::Instrument;

use crate::pass::{self, Change, GroupOutcome, is_on_node, is_schedulable};
use crate::placement::{NodeInfo, SpreadOptions};

/// Index of the task cache: schedulable tasks under [`SCHEDULABLE`].
pub const SCHEDULABLE_INDEX: &str = "schedulable";
const SCHEDULABLE: &str = "pending";

/// The scheduler's behaviour.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// The periodic scan of the caches, whatever hints and events say.
    pub scan_interval: Duration,
    /// How long a pass waits for more work after the first trigger.
    pub coalesce: Duration,
    /// The most tasks one pass places; the rest go to the next pass right away.
    pub max_tasks_per_pass: usize,
    /// NATS queue group of the schedulers on [`SCHEDULE_WORK_SUBJECT`].
    pub queue_group: String,
    /// How long a hint carrying a revision waits for the task cache to reach it.
    pub hint_wait: Duration,
    /// How many slices of a pass's writes are committed at once.
    pub write_concurrency: usize,
    /// How long a new pending task seen only in the cache waits for the replica that
    /// got its hint: with several replicas, the hinted one places it and the others
    /// find nothing left to do instead of racing it; without a hint, this is the
    /// latency.
    pub backup_grace: Duration,
    pub spread: SpreadOptions,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            scan_interval: Duration::from_secs(5),
            coalesce: Duration::from_millis(5),
            max_tasks_per_pass: 20_000,
            queue_group: "shoal-scheduler".to_string(),
            hint_wait: Duration::from_secs(2),
            write_concurrency: 4,
            backup_grace: Duration::from_millis(250),
            spread: SpreadOptions::default(),
        }
    }
}

/// Why the scheduler did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("shut down while starting")]
    Shutdown,
    #[error("cannot start the scheduler: {0}")]
    Store(#[from] shoal_store::Error),
    #[error("cannot subscribe to scheduling hints: {0}")]
    Bus(#[from] shoal_events::Error),
}

/// Counters of what this scheduler did (for logs, tests and the benchmark).
#[derive(Debug, Default)]
pub struct Stats {
    pub passes: AtomicU64,
    /// Tasks this scheduler assigned (committed).
    pub placed: AtomicU64,
    /// Tasks whose CAS this scheduler lost (another writer got there first).
    pub conflicts: AtomicU64,
    /// Tasks left pending with an explanation in the last pass.
    pub unplaceable: AtomicUsize,
}

/// A running scheduler. Dropping it stops it.
pub struct Scheduler {
    stats: Arc<Stats>,
    tasks: CacheReader<Task>,
    stop: ShutdownToken,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn until<T>(shutdown: &ShutdownToken, fut: impl Future<Output = T>) -> Result<T, StartError> {
    tokio::select! {
        _ = shutdown.cancelled() => Err(StartError::Shutdown),
        v = fut => Ok(v),
    }
}

/// A task cache with the by-service and by-node indexes and the schedulable tasks.
pub fn task_cache(store: &Store) -> Cache<Task> {
    Cache::builder(store)
        .index(
            shoal_store::cache::TASKS_BY_SERVICE,
            shoal_store::cache::task_service,
        )
        .index(
            shoal_store::cache::TASKS_BY_NODE,
            shoal_store::cache::task_node,
        )
        .index(SCHEDULABLE_INDEX, |t: &Task| {
            if is_schedulable(t) {
                vec![SCHEDULABLE.to_string()]
            } else {
                Vec::new()
            }
        })
        .events_capacity(1 << 16)
        .start()
}

impl Scheduler {
    /// Starts a scheduler on `state`: its caches (synced before this returns), the
    /// hint subscription and the pass loop. It runs until `shutdown` or until dropped.
    pub async fn start(
        state: ClusterState,
        options: SchedulerOptions,
        shutdown: ShutdownToken,
    ) -> Result<Scheduler, StartError> {
        let ClusterState { store, bus } = state;
        let stop = shutdown.child_token();
        let nodes = Cache::<Node>::start(&store);
        let tasks = task_cache(&store);
        until(&stop, nodes.wait_until_synced()).await??;
        until(&stop, tasks.wait_until_synced()).await??;
        let hints = until(
            &stop,
            bus.queue_subscribe_raw(SCHEDULE_WORK_SUBJECT, &options.queue_group),
        )
        .await??;

        let work = Arc::new(Notify::new());
        let backup = Arc::new(Notify::new());
        let stats = Arc::new(Stats::default());
        let tasks_reader = tasks.reader();

        // Subscribe before the first pass so nothing between them is missed.
        let task_events = tasks.subscribe();
        let node_events = nodes.subscribe();
        let signals = bus.signals();
        spawn_until(
            &stop,
            watch_tasks(task_events, work.clone(), backup.clone(), stats.clone()),
        );
        spawn_until(
            &stop,
            delay_backup(backup, work.clone(), options.backup_grace),
        );
        spawn_until(&stop, watch_nodes(node_events, work.clone()));
        spawn_until(&stop, watch_bus(signals, work.clone()));
        spawn_until(
            &stop,
            watch_hints(hints, tasks.reader(), options.hint_wait, work.clone()),
        );

        let looper = Loop {
            store,
            bus,
            nodes,
            tasks,
            options,
            in_flight: HashMap::new(),
            stats: stats.clone(),
            work,
        };
        tokio::spawn(looper.run(stop.clone()));
        tracing::info!("scheduler started");
        Ok(Scheduler {
            stats,
            tasks: tasks_reader,
            stop,
        })
    }

    /// What this scheduler has done so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The scheduler's task cache.
    pub fn tasks(&self) -> &CacheReader<Task> {
        &self.tasks
    }

    /// Stops the scheduler (as dropping it does).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn spawn_until(stop: &ShutdownToken, fut: impl Future<Output = ()> + Send + 'static) {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = fut => {}
        }
    });
}

/// Does this change of a task free capacity or counts on a node?
fn frees_node(task: &Task) -> bool {
    !task.node_id.is_empty()
        && (task
            .status
            .as_ref()
            .is_some_and(|s| s.state().is_terminal())
            || task.desired_state > TaskState::Running as i32)
}

/// Turns backup triggers into work after `grace`, coalescing those that arrive
/// meanwhile.
async fn delay_backup(backup: Arc<Notify>, work: Arc<Notify>, grace: Duration) {
    loop {
        backup.notified().await;
        tokio::time::sleep(grace).await;
        work.notify_one();
    }
}

async fn watch_tasks(
    mut events: broadcast::Receiver<CacheEvent<Task>>,
    work: Arc<Notify>,
    backup: Arc<Notify>,
    stats: Arc<Stats>,
) {
    loop {
        let wake = match events.recv().await {
            Ok(CacheEvent::Upserted(t)) if is_schedulable(&t) => {
                // New work announced by a hint to some replica: back it up only.
                backup.notify_one();
                false
            }
            Ok(CacheEvent::Upserted(t)) => {
                stats.unplaceable.load(Ordering::Relaxed) > 0 && frees_node(&t)
            }
            Ok(CacheEvent::Deleted(_)) => stats.unplaceable.load(Ordering::Relaxed) > 0,
            Ok(CacheEvent::Restarted { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if wake {
            work.notify_one();
        }
    }
}

async fn watch_nodes(mut events: broadcast::Receiver<CacheEvent<Node>>, work: Arc<Notify>) {
    loop {
        match events.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => work.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn watch_bus(mut signals: broadcast::Receiver<BusSignal>, work: Arc<Notify>) {
    loop {
        match signals.recv().await {
            Ok(BusSignal::Disconnected) => {}
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => work.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A hint's payload may be the etcd revision of the write it announces (decimal);
/// anything else just asks for a pass.
fn hint_revision(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.trim().parse().ok()
}

async fn watch_hints(
    mut hints: shoal_events::RawStream,
    tasks: CacheReader<Task>,
    wait: Duration,
    work: Arc<Notify>,
) {
    while let Some(msg) = hints.next().await {
        if let Some(revision) = hint_revision(&msg.payload)
            && tasks.revision() < revision
        {
            let _ = tokio::time::timeout(wait, tasks.wait_for_revision(revision)).await;
        }
        work.notify_one();
    }
}

/// A task this scheduler wrote, until the cache shows a newer version of it.
struct InFlight {
    /// The version the write replaced.
    old_version: u64,
    /// The task as assigned (it holds its node meanwhile); `None` for other writes
    /// and lost CASes.
    assigned: Option<Task>,
}

struct Loop {
    store: Store,
    bus: EventBus,
    nodes: Cache<Node>,
    tasks: Cache<Task>,
    options: SchedulerOptions,
    in_flight: HashMap<String, InFlight>,
    stats: Arc<Stats>,
    work: Arc<Notify>,
}

/// What a pass did.
#[derive(Debug, Default)]
struct PassResult {
    placed: usize,
    unplaceable: usize,
    conflicts: usize,
    failed_writes: usize,
    deferred: usize,
}

impl Loop {
    async fn run(mut self, stop: ShutdownToken) {
        let mut scan = tokio::time::interval(self.options.scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.work.notified() => {}
                _ = scan.tick() => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.options.coalesce) => {}
            }
            let result = self.pass().await;
            self.stats.passes.fetch_add(1, Ordering::Relaxed);
            if result.failed_writes > 0 {
                tracing::warn!(
                    failed = result.failed_writes,
                    retry_in = ?backoff,
                    "placements not written; retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                self.work.notify_one();
            } else {
                backoff = Duration::from_millis(100);
                if result.deferred > 0 {
                    self.work.notify_one();
                }
            }
        }
    }

    /// Forgets in-flight tasks the cache has caught up with.
    fn settle_in_flight(&mut self) {
        let tasks = &self.tasks;
        self.in_flight
            .retain(|id, f| tasks.get(id).is_some_and(|t| t.version() == f.old_version));
    }

    /// Every node's info from the caches, plus this scheduler's placements the cache
    /// does not show yet.
    fn node_infos(&self) -> (Vec<NodeInfo>, HashMap<String, usize>) {
        let nodes = self.nodes.list();
        let mut infos = Vec::with_capacity(nodes.len());
        let mut by_id = HashMap::with_capacity(nodes.len());
        for node in nodes {
            let id = node.id().to_string();
            let on_node = self.tasks.by_index(shoal_store::cache::TASKS_BY_NODE, &id);
            let info = NodeInfo::new(
                Node::clone(&node),
                on_node.iter().map(|t| &**t).filter(|t| is_on_node(t)),
            );
            by_id.insert(id, infos.len());
            infos.push(info);
        }
        for f in self.in_flight.values() {
            if let Some(t) = &f.assigned
                && let Some(i) = by_id.get(&t.node_id)
            {
                infos[*i].assign(t);
            }
        }
        (infos, by_id)
    }

    async fn pass(&mut self) -> PassResult {
        self.settle_in_flight();
        let pending: Vec<Arc<Task>> = self
            .tasks
            .by_index(SCHEDULABLE_INDEX, SCHEDULABLE)
            .into_iter()
            .filter(|t| !self.in_flight.contains_key(t.id()))
            .collect();
        let mut result = PassResult::default();
        if pending.is_empty() {
            self.stats.unplaceable.store(0, Ordering::Relaxed);
            return result;
        }
        let (groups, deferred) = pass::group(pending, self.options.max_tasks_per_pass.max(1));
        result.deferred = deferred;
        let started = std::time::Instant::now();
        let (mut infos, by_id) = self.node_infos();
        let now = SystemTime::now();

        // Decide group by group, each under its own span.
        let mut decided: Vec<(tracing::Span, GroupOutcome)> = Vec::with_capacity(groups.len());
        for group in &groups {
            let span = tracing::info_span!(
                "schedule",
                otel.name = %format!("schedule {} ({} tasks)", group.service_name, group.tasks.len()),
                service.id = %group.service_id,
                service.name = %group.service_name,
                tasks = group.tasks.len(),
                placed = tracing::field::Empty,
                unplaced = tracing::field::Empty,
            );
            shoal_telemetry::set_parent(
                &span,
                shoal_telemetry::context_from_stored(&group.trace_context),
            );
            let outcome = span.in_scope(|| {
                let outcome = pass::place_group(
                    group,
                    &mut infos,
                    &by_id,
                    now,
                    &self.options.spread,
                );
                if let Some(explanation) = &outcome.explanation {
                    tracing::debug!(unplaced = outcome.unplaced, %explanation, "tasks left pending");
                }
                outcome
            });
            span.record("placed", outcome.placed);
            span.record("unplaced", outcome.unplaced);
            result.unplaceable += outcome.unplaced;
            decided.push((span, outcome));
        }
        self.stats
            .unplaceable
            .store(result.unplaceable, Ordering::Relaxed);

        // One batched write for the whole pass.
        let changes: Vec<&Change> = decided.iter().flat_map(|(_, o)| &o.changes).collect();
        if changes.is_empty() {
            return result;
        }
        let decided_at = std::time::Instant::now();
        let results = write_changes(&self.store, &changes, self.options.write_concurrency).await;
        let (planning, writing) = (decided_at - started, decided_at.elapsed());

        // Record the outcome and announce the commits, each group under its span.
        let mut results = results.into_iter();
        for (span, outcome) in decided {
            let mut events = Vec::new();
            for change in &outcome.changes {
                let Some(written) = results.next() else {
                    break;
                };
                match written {
                    Ok(task) => {
                        let assigned = change.is_assignment();
                        if assigned {
                            result.placed += 1;
                        }
                        events.push(task_event(&task));
                        self.in_flight.insert(
                            task.id().to_string(),
                            InFlight {
                                old_version: change.old.version(),
                                assigned: assigned.then_some(task),
                            },
                        );
                    }
                    Err(e) if e.is_conflict() || e.is_not_found() => {
                        result.conflicts += 1;
                        self.in_flight.insert(
                            change.old.id().to_string(),
                            InFlight {
                                old_version: change.old.version(),
                                assigned: None,
                            },
                        );
                    }
                    Err(e) => {
                        result.failed_writes += 1;
                        tracing::debug!(task = %change.old.id(), error = %e, "task not written");
                    }
                }
            }
            if !events.is_empty() {
                let bus = &self.bus;
                async {
                    for event in &events {
                        if let Err(e) = bus.publish(event).await {
                            tracing::warn!(task = %event.id, error = %e, "event not published");
                            break;
                        }
                    }
                }
                .instrument(span)
                .await;
            }
        }
        self.stats
            .placed
            .fetch_add(result.placed as u64, Ordering::Relaxed);
        self.stats
            .conflicts
            .fetch_add(result.conflicts as u64, Ordering::Relaxed);
        tracing::debug!(?result, ?planning, ?writing, "scheduling pass");
        result
    }
}

/// Writes `changes` as CAS updates, `concurrency` slices of [`WRITE_SLICE`] at once
/// (each slice packs its own transactions and keeps several in flight); results in input
/// order.
async fn write_changes(
    store: &Store,
    changes: &[&Change],
    concurrency: usize,
) -> Vec<shoal_store::Result<Task>> {
    let slices: Vec<_> = changes
        .chunks(WRITE_SLICE)
        .map(|slice| store.update_many_from(slice.iter().map(|c| (&*c.old, c.new.clone()))))
        .collect();
    futures::stream::iter(slices)
        .buffered(concurrency.max(1))
        .flat_map(futures::stream::iter)
        .collect()
        .await
}

/// Tasks per [`Store::update_many_from`] call of a pass's write.
const WRITE_SLICE: usize = 1024;

/// The event announcing a committed task change.
fn task_event(task: &Task) -> Event {
    let state = task
        .status
        .as_ref()
        .map_or(TaskState::New, |s| s.state())
        .display_name()
        .to_lowercase();
    let attributes = HashMap::from([
        ("service_id".to_string(), task.service_id.clone()),
        ("node_id".to_string(), task.node_id.clone()),
        ("state".to_string(), state),
    ]);
    Event {
        kind: shoal_store::Kind::Task.as_str().to_string(),
        action: "update".to_string(),
        id: task.id().to_string(),
        version: task.version(),
        time: Some(prost_types::Timestamp::from(SystemTime::now())),
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_payloads() {
        assert_eq!(hint_revision(b"1234"), Some(1234));
        assert_eq!(hint_revision(b" 42\n"), Some(42));
        assert_eq!(hint_revision(b"web"), None);
        assert_eq!(hint_revision(&[0xff, 0x00]), None);
        assert_eq!(hint_revision(b""), None);
    }
}
