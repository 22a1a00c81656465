//! The one writer of task status reports.
//!
//! `UpdateTaskStatus` checks each update against the task cache (the task is on the
//! caller's node, its state does not move backwards) and hands the valid ones to this
//! writer as one [`Report`]; the RPC answers once the batch holding them is committed.
//! The writer works like the node status writer ([`crate::writer`]):
//! - reports are queued on a bounded channel (a full queue slows the callers down);
//! - it collects reports for up to `window` (100 ms) or `max` updates (10,000), folds
//!   the updates of each task in arrival order onto one copy, and commits with
//!   [`Store::update_many_from`] — packed transactions, a compare-and-swap per task;
//! - the rules are checked again against the copy being written, and again after every
//!   conflict (the task is re-read): an update for a task that is gone, that is on
//!   another node, or whose state would move backwards is rejected with a reason, never
//!   written over a newer state;
//! - after the commit it answers each report, then publishes one `task.update` event per
//!   written task (attributes `service_id`, `node_id`, `state`).
//!
//! Only the status is taken from a report: everything else (desired state, spec) stays
//! as the orchestrator last wrote it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_events::{Event, EventBus};
use shoal_grpc_host::ShutdownToken;
use shoal_proto::TaskStateExt;
use shoal_proto::v1::update_task_status_response::Rejected;
use shoal_proto::v1::{Task, TaskState, TaskStatus};
use shoal_store::{CacheReader, Object, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How many reports may wait for the writer before callers wait for room.
pub(crate) const QUEUE: usize = 4096;
/// How often a batch is tried before its remaining updates fail.
const MAX_ATTEMPTS: usize = 6;

/// The updates of one `UpdateTaskStatus` call that passed the first checks.
pub(crate) struct Report {
    pub node_id: String,
    pub updates: Vec<(String, TaskStatus)>,
    /// The updates refused on the way (by the writer), or why nothing could be written.
    pub done: oneshot::Sender<Result<Vec<Rejected>, String>>,
}

/// Sends reports to the writer task.
#[derive(Clone)]
pub(crate) struct StatusWriter {
    tx: mpsc::Sender<Report>,
}

pub(crate) type StatusRx = mpsc::Receiver<Report>;

impl StatusWriter {
    pub fn channel(capacity: usize) -> (StatusWriter, StatusRx) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (StatusWriter { tx }, rx)
    }

    /// Writes `updates` of `node_id`'s tasks; returns the ones refused.
    pub async fn write(
        &self,
        node_id: &str,
        updates: Vec<(String, TaskStatus)>,
    ) -> Result<Vec<Rejected>, String> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Report {
                node_id: node_id.to_string(),
                updates,
                done,
            })
            .await
            .map_err(|_| "the dispatcher is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the dispatcher is shutting down".to_string())?
    }
}

pub(crate) fn rejected(task_id: &str, reason: String) -> Rejected {
    Rejected {
        task_id: task_id.to_string(),
        reason,
    }
}

pub(crate) fn not_on_node(task_id: &str) -> Rejected {
    rejected(
        task_id,
        format!("task {task_id} is not assigned to this node"),
    )
}

pub(crate) fn not_found(task_id: &str) -> Rejected {
    rejected(task_id, format!("task {task_id} not found"))
}

pub(crate) fn backwards(task_id: &str, from: TaskState, to: TaskState) -> Rejected {
    rejected(
        task_id,
        format!(
            "task {task_id}: state cannot move backwards from {} to {}",
            state_name(from),
            state_name(to)
        ),
    )
}

/// A task state as the CLI shows it, lowercase: "running".
pub fn state_name(state: TaskState) -> String {
    state.display_name().to_ascii_lowercase()
}

fn state_of(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .map(|s| s.state())
        .unwrap_or(TaskState::New)
}

/// Applies one update to `task` if the rules allow it.
pub(crate) fn apply(
    task: &mut Task,
    node_id: &str,
    task_id: &str,
    status: &TaskStatus,
) -> Result<bool, Rejected> {
    if task.node_id != node_id {
        return Err(not_on_node(task_id));
    }
    let from = state_of(task);
    let to = status.state();
    if !from.can_move_to(to) {
        return Err(backwards(task_id, from, to));
    }
    // When the task first ran: kept from the stored status, else taken from the
    // report that says RUNNING (the worker's clock, as the timestamp itself).
    let started_at = task.status.as_ref().and_then(|s| s.started_at).or_else(|| {
        (to == TaskState::Running).then(|| {
            status
                .timestamp
                .unwrap_or_else(|| prost_types::Timestamp::from(std::time::SystemTime::now()))
        })
    });
    let unchanged = task.status.as_ref().is_some_and(|s| {
        let mut s = s.clone();
        s.timestamp = status.timestamp;
        s.started_at = status.started_at;
        s == *status
    });
    if unchanged {
        return Ok(false);
    }
    let mut next = status.clone();
    next.started_at = started_at;
    task.status = Some(next);
    Ok(true)
}

/// The updates of one task in a batch, in arrival order.
struct Group {
    task_id: String,
    /// (report index, status)
    updates: Vec<(usize, TaskStatus)>,
    base: Option<Arc<Task>>,
    settled: bool,
}

struct Pending {
    node_id: String,
    rejected: Vec<Rejected>,
    done: oneshot::Sender<Result<Vec<Rejected>, String>>,
    failed: Option<String>,
}

/// Counters for the bench and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    /// Task statuses written.
    pub written: u64,
    /// Batches committed.
    pub batches: u64,
    /// Time spent committing batches (not waiting for them to fill).
    pub busy: Duration,
}

/// The writer task's state.
pub(crate) struct StatusWriterTask {
    store: Store,
    bus: EventBus,
    tasks: CacheReader<Task>,
    window: Duration,
    max: usize,
    /// Tasks as this writer last wrote them, until the cache has caught up (a task
    /// reported twice in quick succession is then planned from the newer copy).
    recent: HashMap<String, Arc<Task>>,
    stats: Arc<std::sync::Mutex<WriterStats>>,
}

impl StatusWriterTask {
    pub fn new(
        store: Store,
        bus: EventBus,
        tasks: CacheReader<Task>,
        window: Duration,
        max: usize,
        stats: Arc<std::sync::Mutex<WriterStats>>,
    ) -> Self {
        Self {
            store,
            bus,
            tasks,
            window,
            max: max.max(1),
            recent: HashMap::new(),
            stats,
        }
    }

    pub async fn run(mut self, mut rx: StatusRx, shutdown: ShutdownToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
            };
            let mut count = first.updates.len();
            let mut batch = vec![first];
            let until = Instant::now() + self.window;
            while count < self.max {
                tokio::select! {
                    biased;
                    r = rx.recv() => match r {
                        Some(r) => {
                            count += r.updates.len();
                            batch.push(r);
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
            self.commit(batch, &shutdown).await;
        }
    }

    fn latest(&self, id: &str) -> Option<Arc<Task>> {
        let cached = self.tasks.get(id);
        match (cached, self.recent.get(id)) {
            (Some(c), Some(r)) if r.version() > c.version() => Some(r.clone()),
            (Some(c), _) => Some(c),
            (None, Some(r)) => Some(r.clone()),
            (None, None) => None,
        }
    }

    async fn commit(&mut self, batch: Vec<Report>, shutdown: &ShutdownToken) {
        let mut reports = Vec::with_capacity(batch.len());
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (r, report) in batch.into_iter().enumerate() {
            for (task_id, status) in report.updates {
                let i = *index.entry(task_id.clone()).or_insert_with(|| {
                    groups.push(Group {
                        task_id,
                        updates: Vec::new(),
                        base: None,
                        settled: false,
                    });
                    groups.len() - 1
                });
                groups[i].updates.push((r, status));
            }
            reports.push(Pending {
                node_id: report.node_id,
                rejected: Vec::new(),
                done: report.done,
                failed: None,
            });
        }
        let started = Instant::now();
        let span = tracing::debug_span!(
            "write task status",
            reports = reports.len(),
            tasks = groups.len()
        );
        let _entered = span.enter();

        let mut events = Vec::new();
        let mut written = 0u64;
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=MAX_ATTEMPTS {
            let mut transient = None;
            // Tasks the cache does not have (yet): read them.
            let missing: Vec<String> = groups
                .iter()
                .filter(|g| !g.settled && g.base.is_none() && self.latest(&g.task_id).is_none())
                .map(|g| g.task_id.clone())
                .collect();
            if !missing.is_empty() {
                match self.store.get_many::<Task>(&missing).await {
                    Ok(found) => {
                        let mut found: HashMap<String, Task> =
                            found.into_iter().map(|t| (t.id().to_string(), t)).collect();
                        for g in groups.iter_mut().filter(|g| !g.settled) {
                            if let Some(t) = found.remove(&g.task_id) {
                                g.base = Some(Arc::new(t));
                            } else if missing.contains(&g.task_id) {
                                reject_all(g, &mut reports, not_found);
                            }
                        }
                    }
                    Err(e) => transient = Some(e.to_string()),
                }
            }

            let mut planned: Vec<(usize, Arc<Task>, Task)> = Vec::new();
            if transient.is_none() {
                for (i, g) in groups.iter_mut().enumerate().filter(|(_, g)| !g.settled) {
                    let Some(base) = g.base.take().or_else(|| self.latest(&g.task_id)) else {
                        continue;
                    };
                    let mut next = (*base).clone();
                    let mut changed = false;
                    let task_id = g.task_id.clone();
                    g.updates.retain(|(r, status)| {
                        let report = &mut reports[*r];
                        match apply(&mut next, &report.node_id, &task_id, status) {
                            Ok(c) => {
                                changed |= c;
                                true
                            }
                            Err(rej) => {
                                report.rejected.push(rej);
                                false
                            }
                        }
                    });
                    if changed {
                        planned.push((i, base, next));
                    } else {
                        g.settled = true;
                    }
                }
            }

            let results = if planned.is_empty() {
                Vec::new()
            } else {
                self.store
                    .update_many_from(
                        planned
                            .iter()
                            .map(|(_, prev, next)| (&**prev, next.clone())),
                    )
                    .await
            };
            let mut reread = Vec::new();
            for ((i, prev, _), result) in planned.into_iter().zip(results) {
                let g = &mut groups[i];
                match result {
                    Ok(task) => {
                        events.push(update_event(&task));
                        written += 1;
                        self.recent.insert(task.id().to_string(), Arc::new(task));
                        g.settled = true;
                    }
                    Err(e) if e.is_conflict() => reread.push(g.task_id.clone()),
                    Err(e) if e.is_not_found() => reject_all(g, &mut reports, not_found),
                    Err(e) => {
                        g.base = Some(prev);
                        transient = Some(e.to_string());
                    }
                }
            }
            if !reread.is_empty() {
                match self.store.get_many::<Task>(&reread).await {
                    Ok(fresh) => {
                        let mut fresh: HashMap<String, Task> =
                            fresh.into_iter().map(|t| (t.id().to_string(), t)).collect();
                        for g in groups.iter_mut().filter(|g| reread.contains(&g.task_id)) {
                            match fresh.remove(&g.task_id) {
                                Some(t) => g.base = Some(Arc::new(t)),
                                None => reject_all(g, &mut reports, not_found),
                            }
                        }
                    }
                    Err(e) => transient = Some(e.to_string()),
                }
            }

            if groups.iter().all(|g| g.settled) {
                break;
            }
            if attempt == MAX_ATTEMPTS {
                let reason = transient.unwrap_or_else(|| "the task kept changing".into());
                for g in groups.iter_mut().filter(|g| !g.settled) {
                    tracing::warn!(task = %g.task_id, %reason, "task status update given up");
                    for (r, _) in g.updates.drain(..) {
                        reports[r].failed = Some(reason.clone());
                    }
                    g.settled = true;
                }
                break;
            }
            if let Some(reason) = transient {
                tracing::warn!(%reason, retry_in = ?backoff, "task status write failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }

        let cache_revision = self.tasks.revision();
        self.recent.retain(|_, t| t.version() > cache_revision);
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.written += written;
            stats.batches += 1;
            stats.busy += started.elapsed();
        }

        for p in reports {
            let answer = match p.failed {
                Some(reason) => Err(format!(
                    "cannot record task status in the cluster store: {reason}"
                )),
                None => Ok(p.rejected),
            };
            let _ = p.done.send(answer);
        }
        if !events.is_empty()
            && let Err(e) = self.bus.publish_all(&events).await
        {
            tracing::warn!(error = %e, events = events.len(), "task.update events not published");
        }
    }
}

fn reject_all(g: &mut Group, reports: &mut [Pending], why: fn(&str) -> Rejected) {
    for (r, _) in g.updates.drain(..) {
        reports[r].rejected.push(why(&g.task_id));
    }
    g.settled = true;
}

fn update_event(task: &Task) -> Event {
    let mut attributes = HashMap::new();
    attributes.insert("service_id".to_string(), task.service_id.clone());
    attributes.insert("node_id".to_string(), task.node_id.clone());
    attributes.insert("state".to_string(), state_name(state_of(task)));
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn task(state: TaskState) -> Task {
        Task {
            node_id: "n1".into(),
            status: Some(TaskStatus {
                state: state as i32,
                message: "started".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(state: TaskState, message: &str) -> TaskStatus {
        TaskStatus {
            state: state as i32,
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn updates_only_move_forward_on_their_node() {
        let mut t = task(TaskState::Running);
        let back = apply(&mut t, "n1", "t1", &status(TaskState::Starting, "starting"));
        let rej = back.unwrap_err();
        assert_eq!(
            rej.reason,
            "task t1: state cannot move backwards from running to starting"
        );
        let other = apply(&mut t, "n2", "t1", &status(TaskState::Complete, "finished"));
        assert_eq!(
            other.unwrap_err().reason,
            "task t1 is not assigned to this node"
        );
        assert!(
            !apply(&mut t, "n1", "t1", &status(TaskState::Running, "started")).unwrap(),
            "the same status again is no change"
        );
        assert!(apply(&mut t, "n1", "t1", &status(TaskState::Running, "healthy")).unwrap());
        let running_since = t.status.as_ref().and_then(|s| s.started_at);
        assert!(
            running_since.is_some(),
            "RUNNING records when the task started"
        );
        assert!(apply(&mut t, "n1", "t1", &status(TaskState::Complete, "finished")).unwrap());
        let done = t.status.unwrap();
        assert_eq!(done.state(), TaskState::Complete);
        assert_eq!(done.started_at, running_since, "later states keep it");
    }
}
