//! The task manager: runs the node's assigned tasks.
//!
//! It is fed the dispatcher's `Assignments` stream ([`assignments`]): a COMPLETE set
//! replaces what the worker has, INCREMENTAL changes apply on top of the message they
//! name (a gap is an error that makes the caller reopen the stream for a fresh
//! COMPLETE). Every task in the set has one runner: it prepares each task (reporting
//! ACCEPTED → PREPARING → READY with Docker's messages) and starts it once it is
//! desired RUNNING (or COMPLETE, a job's): a task desired READY, a stop-first update's
//! replacement, stays prepared and unstarted until the orchestrator moves it on.
//! Started, it is STARTING, then RUNNING; with a healthcheck it stays STARTING (health
//! STARTING) until the check passes, reports RUNNING (HEALTHY) then, and when the check
//! fails `retries` times in a row the runner stops it and reports FAILED "unhealthy
//! container" (health UNHEALTHY). The runner stops the task when it is desired
//! SHUTDOWN or REMOVE (reporting SHUTDOWN), reports COMPLETE / FAILED when it ends, and
//! removes its runtime (container, log file) once the task leaves the set. A task that
//! is no longer in a COMPLETE set is stopped and forgotten. A started task whose
//! network attachments grow (its service joined a network: the manager adds the
//! attachment in place) is handed to [`Executor::attach`] — a container is connected
//! to the new network live; a process keeps the addresses it started with.
//!
//! Runtimes are recorded in the state file ([`state`]); a worker that restarts adopts
//! what still runs, and prepares again (never starts) what was only prepared. Reports
//! go through the [`reporter`] in batches.

pub mod assignments;
pub mod files;
pub mod reporter;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shoal_events::logs::LogPublisher;
use shoal_proto::v1::assignment::Item;
use shoal_proto::v1::assignment_change::Action;
use shoal_proto::v1::assignments_message::Type;
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::task_status::RuntimeStatus;
use shoal_proto::v1::{
    AssignmentsMessage, LogHistoryRequest, LogHistoryResponse, Task, TaskState, TaskStatus,
};
use shoal_telemetry::TraceInterceptor;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::executor::networks::attachment_ids;
use crate::executor::{
    Executor, Executors, Exit, Handle, Liveness, TaskError, log_message, task_grace, task_id,
    task_name,
};
use crate::health::Health;
use reporter::Report;
use state::{Record, StateFile};

pub type Client = DispatcherClient<InterceptedService<Channel, TraceInterceptor>>;

/// The session the worker's tasks are talked about on.
#[derive(Clone)]
pub struct Link {
    pub client: Client,
    pub session_id: String,
}

/// An INCREMENTAL message that does not apply on top of the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub expected: Option<String>,
    pub applies_to: String,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "assignments message applies to {:?}, the last one was {:?}",
            self.applies_to, self.expected
        )
    }
}

const SHUTDOWN: i32 = TaskState::Shutdown as i32;
const ASSIGNED: i32 = TaskState::Assigned as i32;
const READY: i32 = TaskState::Ready as i32;
const STARTING: i32 = TaskState::Starting as i32;
const RUNNING: i32 = TaskState::Running as i32;
/// The error of a task stopped because its healthcheck failed (Docker's words).
pub const UNHEALTHY: &str = "unhealthy container";
/// Capacity of a task's queue of output lines on their way to NATS.
const FOLLOW_QUEUE: usize = 256;

/// Runs the tasks assigned to one node. Cheap to clone.
#[derive(Clone)]
pub struct TaskManager {
    inner: Arc<Inner>,
}

struct Inner {
    executors: Executors,
    /// The secrets and configs of the assignments, in memory only.
    deps: Mutex<files::Deps>,
    files: files::TaskFiles,
    node: files::NodeInfo,
    reports: mpsc::Sender<Report>,
    state: Mutex<StateFile>,
    set: Mutex<Set>,
    logs: Option<LogPublisher>,
}

#[derive(Default)]
struct Set {
    tasks: HashMap<String, Entry>,
    /// The last message's sequence number; None before the first COMPLETE.
    last_seq: Option<String>,
    /// Runtimes from the state file not matched with an assigned task yet.
    adoptable: HashMap<String, Record>,
    /// Whether a COMPLETE set came since the worker started.
    complete_seen: bool,
}

struct Entry {
    /// The task as last assigned; dropping the sender tells the runner the task left
    /// the set.
    task: watch::Sender<Task>,
    runner: AbortHandle,
}

/// Where a manager writes its tasks' files and what its templates know of the node.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    /// The tmpfs root of the tasks' files; None: `/dev/shm/shoal-<hash of state_dir>`.
    pub files_root: Option<std::path::PathBuf>,
    pub node: files::NodeInfo,
}

/// A stable short tag of a path (FNV-1a), so that the same state dir always gets the
/// same default files root.
fn path_tag(path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in abs.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl TaskManager {
    /// A manager using the records in `state_dir` (adopted when their tasks are
    /// assigned again, stopped after the first COMPLETE set if not), reporting task
    /// status on `reports` and publishing output on `logs`.
    pub fn new(
        state_dir: &Path,
        executors: Executors,
        reports: mpsc::Sender<Report>,
        logs: Option<LogPublisher>,
    ) -> Self {
        Self::with_options(state_dir, executors, reports, logs, TaskOptions::default())
    }

    /// [`TaskManager::new`] with where the tasks' files go and the node's description.
    /// The files of tasks the state file does not know are removed.
    pub fn with_options(
        state_dir: &Path,
        executors: Executors,
        reports: mpsc::Sender<Report>,
        logs: Option<LogPublisher>,
        options: TaskOptions,
    ) -> Self {
        let state = StateFile::load(state_dir);
        let adoptable: HashMap<String, Record> = state.records().clone().into_iter().collect();
        let root = options
            .files_root
            .unwrap_or_else(|| files::TaskFiles::default_root(&path_tag(state_dir)));
        let task_files = files::TaskFiles::new(root);
        task_files.clean_stale(&adoptable.keys().cloned().collect());
        Self {
            inner: Arc::new(Inner {
                executors,
                deps: Mutex::new(files::Deps::default()),
                files: task_files,
                node: options.node,
                reports,
                state: Mutex::new(state),
                set: Mutex::new(Set {
                    adoptable,
                    ..Default::default()
                }),
                logs,
            }),
        }
    }

    /// Adds containers of this node that the state file does not know (a worker that
    /// died between creating a container and recording it) to what may be adopted.
    pub fn add_adoptable(&self, found: Vec<(String, Handle)>) {
        let Ok(mut set) = self.inner.set.lock() else {
            return;
        };
        if set.complete_seen {
            return;
        }
        for (task, handle) in found {
            // A record of a process prepared but not started yet (no pid) gives way
            // to the process found: the worker died between starting it and saying so.
            let unstarted = matches!(
                set.adoptable.get(&task).map(|r| &r.handle),
                Some(Handle::Process { pid: 0, .. })
            );
            if let Some(record) = set.adoptable.get_mut(&task)
                && unstarted
            {
                record.handle = handle;
                continue;
            }
            if set.adoptable.contains_key(&task) {
                continue;
            }
            set.adoptable.insert(
                task.clone(),
                Record {
                    name: task,
                    handle,
                    grace_ms: crate::executor::DEFAULT_STOP_GRACE.as_millis() as u64,
                },
            );
        }
    }

    /// The last sequence number applied (the reopened stream starts from COMPLETE).
    pub fn last_seq(&self) -> Option<String> {
        self.inner.set.lock().ok().and_then(|s| s.last_seq.clone())
    }

    /// Ids of the tasks in the current set.
    pub fn task_ids(&self) -> Vec<String> {
        self.inner
            .set
            .lock()
            .map(|s| s.tasks.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The runtime recorded for a task.
    pub fn handle(&self, task_id: &str) -> Option<Handle> {
        self.inner
            .state
            .lock()
            .ok()
            .and_then(|s| s.get(task_id).map(|r| r.handle.clone()))
    }

    /// The root of the tasks' file directories.
    pub fn files_root(&self) -> &Path {
        self.inner.files.root()
    }

    /// Ids of the secrets and configs held now.
    pub fn dependency_ids(&self) -> (Vec<String>, Vec<String>) {
        self.inner
            .deps
            .lock()
            .map(|d| {
                (
                    d.secrets.keys().cloned().collect(),
                    d.configs.keys().cloned().collect(),
                )
            })
            .unwrap_or_default()
    }

    /// Keeps (or drops) a secret or config of the assignments; false for a task.
    fn apply_dep(&self, item: &mut Option<Item>, remove: bool) -> bool {
        let Ok(mut deps) = self.inner.deps.lock() else {
            return false;
        };
        match item.take() {
            Some(Item::Secret(s)) => {
                let id = s.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
                if remove {
                    deps.secrets.remove(&id);
                } else if !id.is_empty() {
                    deps.secrets.insert(id, Arc::new(files::HeldSecret(s)));
                }
                true
            }
            Some(Item::Config(c)) => {
                let id = c.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
                if remove {
                    deps.configs.remove(&id);
                } else if !id.is_empty() {
                    deps.configs.insert(id, Arc::new(c));
                }
                true
            }
            other => {
                *item = other;
                false
            }
        }
    }

    /// Applies one message of the Assignments stream. Its changes apply in order: the
    /// dispatcher puts a task's secrets and configs before the task.
    pub fn apply(&self, msg: AssignmentsMessage) -> Result<(), Gap> {
        let Ok(mut set) = self.inner.set.lock() else {
            return Ok(());
        };
        let typ = Type::try_from(msg.r#type).unwrap_or(Type::Complete);
        match typ {
            Type::Complete => {
                let mut keep = HashSet::with_capacity(msg.changes.len());
                let mut keep_deps = HashSet::new();
                for change in msg.changes {
                    if Action::try_from(change.action) != Ok(Action::Update) {
                        continue;
                    }
                    let mut item = change.assignment.and_then(|a| a.item);
                    match &item {
                        Some(Item::Secret(s)) => {
                            keep_deps
                                .insert(s.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default());
                        }
                        Some(Item::Config(c)) => {
                            keep_deps
                                .insert(c.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default());
                        }
                        _ => {}
                    }
                    if self.apply_dep(&mut item, false) {
                        continue;
                    }
                    if let Some(Item::Task(task)) = item {
                        keep.insert(task_id(&task).to_string());
                        self.upsert(&mut set, task);
                    }
                }
                set.tasks.retain(|id, _| keep.contains(id));
                if let Ok(mut deps) = self.inner.deps.lock() {
                    deps.secrets.retain(|id, _| keep_deps.contains(id));
                    deps.configs.retain(|id, _| keep_deps.contains(id));
                }
                if !set.complete_seen {
                    set.complete_seen = true;
                    for (id, record) in set.adoptable.drain() {
                        tracing::info!(task = %id, name = %record.name, "task no longer assigned to this node: stopping what is left of it");
                        tokio::spawn(self.inner.clone().discard(id, record));
                    }
                }
            }
            Type::Incremental => {
                if set.last_seq.as_deref() != Some(msg.applies_to.as_str()) {
                    return Err(Gap {
                        expected: set.last_seq.clone(),
                        applies_to: msg.applies_to,
                    });
                }
                for change in msg.changes {
                    let remove = Action::try_from(change.action) == Ok(Action::Remove);
                    let mut item = change.assignment.and_then(|a| a.item);
                    if self.apply_dep(&mut item, remove) {
                        continue;
                    }
                    let Some(Item::Task(task)) = item else {
                        continue;
                    };
                    match Action::try_from(change.action) {
                        Ok(Action::Remove) => {
                            set.tasks.remove(task_id(&task));
                        }
                        _ => self.upsert(&mut set, task),
                    }
                }
            }
        }
        set.last_seq = Some(msg.results_in);
        Ok(())
    }

    fn upsert(&self, set: &mut Set, task: Task) {
        let id = task_id(&task).to_string();
        if id.is_empty() {
            return;
        }
        if let Some(entry) = set.tasks.get(&id) {
            entry.task.send_replace(task);
            return;
        }
        let adopted = set.adoptable.remove(&id).or_else(|| {
            self.inner
                .state
                .lock()
                .ok()
                .and_then(|s| s.get(&id).cloned())
        });
        let (tx, rx) = watch::channel(task);
        let runner = tokio::spawn(self.inner.clone().run_task(rx, adopted)).abort_handle();
        set.tasks.insert(id, Entry { task: tx, runner });
    }

    /// Stops the runners without touching the tasks' runtimes (they keep running and
    /// are adopted by the next worker process).
    pub fn detach(&self) {
        if let Ok(mut set) = self.inner.set.lock() {
            for (_, entry) in set.tasks.drain() {
                entry.runner.abort();
            }
        }
    }

    /// Answers a log history request from the runtimes of the tasks it names.
    pub async fn history(&self, request: &LogHistoryRequest) -> LogHistoryResponse {
        let mut messages = Vec::new();
        for id in &request.task_ids {
            let task = self
                .inner
                .set
                .lock()
                .ok()
                .and_then(|s| s.tasks.get(id).map(|e| e.task.borrow().clone()));
            let Some(task) = task else { continue };
            let Some(handle) = self.handle(id) else {
                continue;
            };
            let Some(executor) = self.inner.executors.for_handle(&handle) else {
                continue;
            };
            match executor.logs(&handle, request.tail).await {
                Ok(lines) => messages.extend(lines.iter().map(|l| log_message(&task, l))),
                Err(e) => tracing::debug!(task = %id, error = %e, "no log history"),
            }
        }
        LogHistoryResponse { messages }
    }
}

/// A task's status now.
fn status(
    state: TaskState,
    message: &str,
    err: &str,
    runtime: Option<RuntimeStatus>,
) -> TaskStatus {
    TaskStatus {
        timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
        state: state as i32,
        message: message.to_string(),
        err: err.to_string(),
        runtime_status: runtime,
        ..Default::default()
    }
}

/// A status with the task's health.
fn with_health(mut status: TaskStatus, health: Health) -> TaskStatus {
    status.health = health as i32;
    status
}

/// The next change of a task's health; None once nobody reports it any more (pending
/// forever without a healthcheck).
async fn next_health(rx: &mut Option<watch::Receiver<Health>>) -> Option<Health> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// How a runner's work on a task ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Done (or never run); the runner waits for the task to leave the set.
    Ended,
    /// The task left the set while it ran.
    Removed,
}

impl Inner {
    async fn report(&self, id: &str, status: TaskStatus) {
        // A task past RUNNING never runs again (a restart is a new task): its secret and
        // config files go now, as the engine unmounts a stopped container's secrets,
        // not when the task leaves the node's history.
        if status.state >= TaskState::Complete as i32 {
            self.files.remove(id);
        }
        let _ = self
            .reports
            .send(Report::Status(id.to_string(), status))
            .await;
    }

    fn record(&self, id: &str, task: &Task, handle: &Handle) {
        if let Ok(mut s) = self.state.lock() {
            s.put(
                id,
                Record {
                    name: task_name(task),
                    handle: handle.clone(),
                    grace_ms: task_grace(task).as_millis() as u64,
                },
            );
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.forget(id);
        }
    }

    /// One task, from its assignment until it leaves the set.
    async fn run_task(self: Arc<Self>, mut rx: watch::Receiver<Task>, adopted: Option<Record>) {
        let task = rx.borrow().clone();
        let id = task_id(&task).to_string();
        let name = task_name(&task);
        let mut handle = adopted.map(|r| r.handle);
        let mut follower: Option<AbortHandle> = None;
        let outcome = self
            .drive(&mut rx, &task, &id, &name, &mut handle, &mut follower)
            .await;
        if outcome == Outcome::Ended {
            // Keep what is left (a stopped container keeps its logs) until removal.
            while rx.changed().await.is_ok() {}
        }
        if let Some(f) = follower {
            f.abort();
        }
        if let Some(h) = handle
            && let Some(executor) = self.executors.for_handle(&h)
        {
            if executor.inspect(&h).await == Liveness::Running {
                let _ = executor.stop(&h, task_grace(&task)).await;
            }
            if let Err(e) = executor.remove(&h).await {
                tracing::warn!(task = %name, error = %e, "cannot remove the task's runtime");
            }
        }
        self.files.remove(&id);
        self.forget(&id);
        let _ = self.reports.send(Report::Forget(id.clone())).await;
        tracing::debug!(task = %name, "task removed from the node");
    }

    /// Prepares (or adopts) the task, starts it once it is desired past READY, and
    /// follows it (and its health) until it ends or leaves the set.
    async fn drive(
        &self,
        rx: &mut watch::Receiver<Task>,
        task: &Task,
        id: &str,
        name: &str,
        handle: &mut Option<Handle>,
        follower: &mut Option<AbortHandle>,
    ) -> Outcome {
        let observed = task.status.as_ref().map(|s| s.state).unwrap_or(0);
        let live = observed <= RUNNING;
        // The task as it runs here: templates expanded, its files mounted.
        let task = match files::expand(task, &self.node, &self.files) {
            Ok(t) => t,
            Err(e) => {
                if observed <= ASSIGNED {
                    self.report(id, status(TaskState::Failed, "preparing", &e, None))
                        .await;
                }
                return Outcome::Ended;
            }
        };
        let task = &task;
        let executor = match handle.as_ref() {
            Some(h) => self
                .executors
                .for_handle(h)
                .ok_or_else(|| TaskError::rejected(crate::executor::NO_DOCKER)),
            None => self.executors.for_task(task),
        };
        let executor = match executor {
            Ok(e) => e,
            Err(e) => {
                if observed <= ASSIGNED {
                    let state = if e.reject {
                        TaskState::Rejected
                    } else {
                        TaskState::Failed
                    };
                    self.report(id, status(state, "preparing", &e.message, None))
                        .await;
                }
                return Outcome::Ended;
            }
        };

        let running = match handle.clone() {
            Some(h) => match executor.inspect(&h).await {
                Liveness::Running => {
                    tracing::info!(task = %name, ?h, "adopted a running task");
                    // It may have been found on the node rather than in the state file.
                    self.record(id, task, &h);
                    Some(h)
                }
                Liveness::Exited(exit) => {
                    if live {
                        self.report_exit(id, &h, exit).await;
                    }
                    return Outcome::Ended;
                }
                Liveness::Gone if observed < STARTING => {
                    // Prepared at most (a created container, a process without a
                    // pid): nothing ran, so it is prepared again.
                    let _ = executor.remove(&h).await;
                    *handle = None;
                    self.forget(id);
                    None
                }
                Liveness::Gone => {
                    if live {
                        self.report(
                            id,
                            status(
                                TaskState::Failed,
                                "started",
                                "task: its runtime is gone",
                                None,
                            ),
                        )
                        .await;
                    }
                    return Outcome::Ended;
                }
            },
            None => None,
        };
        let adopted = running.is_some();
        let h = match running {
            Some(h) => h,
            None => {
                if !live {
                    return Outcome::Ended;
                }
                if observed >= STARTING {
                    self.report(
                        id,
                        status(
                            TaskState::Failed,
                            "started",
                            "task: the worker restarted without a record of it",
                            None,
                        ),
                    )
                    .await;
                    return Outcome::Ended;
                }
                let Some(mut h) = self
                    .prepare(rx, task, id, executor.as_ref(), handle, observed)
                    .await
                else {
                    return Outcome::Ended;
                };
                // Desired READY (a stop-first update's replacement): prepared, it waits
                // for RUNNING until the task it replaces has stopped.
                let wanted = rx
                    .wait_for(|t| t.desired_state > READY)
                    .await
                    .map(|t| t.desired_state);
                match wanted {
                    Err(_) => return Outcome::Removed,
                    Ok(d) if d >= SHUTDOWN => {
                        self.report(
                            id,
                            status(
                                TaskState::Shutdown,
                                "shutdown",
                                "",
                                Some(h.runtime_status(0)),
                            ),
                        )
                        .await;
                        return Outcome::Ended;
                    }
                    Ok(_) => {}
                }
                if !self
                    .start(task, id, name, executor.as_ref(), handle, &mut h)
                    .await
                {
                    return Outcome::Ended;
                }
                h
            }
        };
        if let Some(logs) = &self.logs {
            let (tx, mut lines) = mpsc::channel(FOLLOW_QUEUE);
            let exec = executor.clone();
            let h2 = h.clone();
            let logs = logs.clone();
            let task2 = task.clone();
            let follow = tokio::spawn(async move {
                let publish = async {
                    while let Some(line) = lines.recv().await {
                        logs.publish(log_message(&task2, &line));
                    }
                };
                tokio::join!(exec.follow(&h2, !adopted, tx), publish);
            });
            *follower = Some(follow.abort_handle());
        }

        // With a healthcheck, the task stays STARTING until the check passes.
        let was_running = adopted && observed >= RUNNING;
        let mut health = executor.health(task, &h, was_running).await;
        let mut reported_running = was_running;
        match &health {
            None if !was_running => {
                reported_running = true;
                self.report(
                    id,
                    status(TaskState::Running, "started", "", Some(h.runtime_status(0))),
                )
                .await;
            }
            Some(_) if !(adopted && observed >= STARTING) => {
                let s = status(
                    TaskState::Starting,
                    "starting",
                    "",
                    Some(h.runtime_status(0)),
                );
                self.report(id, with_health(s, Health::Starting)).await;
            }
            _ => {}
        }

        let exited = executor.wait(&h);
        tokio::pin!(exited);
        // The networks the runtime was made with (or last joined); a running task's
        // attachments may grow when its service joins a network. An adopted runtime
        // is checked against all of them once (they may have grown while no worker
        // watched).
        let mut attached = if adopted {
            Vec::new()
        } else {
            attachment_ids(task)
        };
        loop {
            let current = rx.borrow_and_update().clone();
            if current.desired_state >= SHUTDOWN {
                let code = self.stop(executor.as_ref(), task, name, &h).await;
                self.report(
                    id,
                    status(
                        TaskState::Shutdown,
                        "shutdown",
                        "",
                        Some(h.runtime_status(code)),
                    ),
                )
                .await;
                return Outcome::Ended;
            }
            let wanted = attachment_ids(&current);
            if wanted.iter().any(|n| !attached.contains(n)) {
                match executor.attach(&current, &h).await {
                    Ok(()) => {
                        tracing::info!(task = %name, networks = ?wanted, "the task's networks grew: attached");
                        attached = wanted;
                    }
                    // Tried again on the task's next change.
                    Err(e) => {
                        tracing::warn!(task = %name, error = %e, "cannot join the task's new networks")
                    }
                }
            }
            tokio::select! {
                exit = &mut exited => {
                    self.report_exit(id, &h, exit).await;
                    return Outcome::Ended;
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Outcome::Removed;
                    }
                }
                changed = next_health(&mut health) => match changed {
                    Some(Health::Healthy) if !reported_running => {
                        reported_running = true;
                        tracing::info!(task = %name, "healthy");
                        let s = status(TaskState::Running, "started", "", Some(h.runtime_status(0)));
                        self.report(id, with_health(s, Health::Healthy)).await;
                    }
                    Some(Health::Unhealthy) => {
                        tracing::info!(task = %name, "unhealthy: stopping it");
                        let code = self.stop(executor.as_ref(), task, name, &h).await;
                        let s = status(TaskState::Failed, "unhealthy", UNHEALTHY, Some(h.runtime_status(code)));
                        self.report(id, with_health(s, Health::Unhealthy)).await;
                        return Outcome::Ended;
                    }
                    Some(_) => {}
                    None => health = None,
                }
            }
        }
    }

    /// Stops a started task with its grace period; its exit code (0 if unknown).
    async fn stop(&self, executor: &dyn Executor, task: &Task, name: &str, h: &Handle) -> i32 {
        if let Err(e) = executor.stop(h, task_grace(task)).await {
            tracing::warn!(task = %name, error = %e, "cannot stop the task");
        }
        match executor.inspect(h).await {
            Liveness::Exited(Exit::Code(c)) => c,
            _ => 0,
        }
    }

    /// Accepts and prepares a fresh task (ACCEPTED → PREPARING → READY; what the store
    /// already has, `floor` and below, is not reported again); None when it did not get
    /// to READY.
    async fn prepare(
        &self,
        rx: &watch::Receiver<Task>,
        task: &Task,
        id: &str,
        executor: &dyn Executor,
        handle: &mut Option<Handle>,
        floor: i32,
    ) -> Option<Handle> {
        let stopping = |rx: &watch::Receiver<Task>| rx.borrow().desired_state >= SHUTDOWN;
        if stopping(rx) {
            self.report(id, status(TaskState::Shutdown, "shutdown", "", None))
                .await;
            return None;
        }
        for (state, message) in [
            (TaskState::Accepted, "accepted"),
            (TaskState::Preparing, "preparing"),
        ] {
            if state as i32 > floor {
                self.report(id, status(state, message, "", None)).await;
            }
        }
        if let Err(e) = self.write_files(task) {
            self.report(
                id,
                status(TaskState::Failed, "preparing", &e.to_string(), None),
            )
            .await;
            return None;
        }
        let h = match executor.prepare(task).await {
            Ok(h) => h,
            Err(e) => {
                let state = if e.reject {
                    TaskState::Rejected
                } else {
                    TaskState::Failed
                };
                self.report(id, status(state, "preparing", &e.message, None))
                    .await;
                return None;
            }
        };
        *handle = Some(h.clone());
        self.record(id, task, &h);
        if stopping(rx) {
            self.report(id, status(TaskState::Shutdown, "shutdown", "", None))
                .await;
            return None;
        }
        if READY > floor {
            self.report(id, status(TaskState::Ready, "prepared", "", None))
                .await;
        }
        Some(h)
    }

    /// Writes the task's secret and config files from what the assignments brought.
    fn write_files(&self, task: &Task) -> Result<(), files::FilesError> {
        // A snapshot: the lock is not held while writing.
        let deps = {
            let held = self.deps.lock().map_err(|_| files::FilesError::Io {
                path: String::new(),
                source: std::io::Error::other("the dependency map is poisoned"),
            })?;
            let refs = files::file_refs(task)?;
            if refs.is_empty() {
                return Ok(());
            }
            let mut deps = files::Deps::default();
            for r in refs {
                if let Some(s) = held.secrets.get(&r.id).filter(|_| r.kind == "secret") {
                    deps.secrets.insert(r.id.clone(), s.clone());
                }
                if let Some(c) = held.configs.get(&r.id).filter(|_| r.kind == "config") {
                    deps.configs.insert(r.id.clone(), c.clone());
                }
            }
            deps
        };
        self.files.write(task, &deps, &self.node)
    }

    /// Starts a prepared task (STARTING); false when it failed to.
    async fn start(
        &self,
        task: &Task,
        id: &str,
        name: &str,
        executor: &dyn Executor,
        handle: &mut Option<Handle>,
        h: &mut Handle,
    ) -> bool {
        self.report(id, status(TaskState::Starting, "starting", "", None))
            .await;
        let span = tracing::info_span!("start", otel.name = %format!("start {name}"), task = %name, task_id = %id);
        if let Some(tc) = &task.trace_context {
            shoal_telemetry::set_parent(&span, shoal_telemetry::context_from_stored(tc));
        }
        let started = executor.start(task, h).instrument(span).await;
        *handle = Some(h.clone());
        self.record(id, task, h);
        if let Err(e) = started {
            self.report(
                id,
                status(
                    TaskState::Failed,
                    "starting",
                    &e.message,
                    Some(h.runtime_status(0)),
                ),
            )
            .await;
            return false;
        }
        tracing::info!(task = %name, ?h, "task started");
        true
    }

    async fn report_exit(&self, id: &str, h: &Handle, exit: Exit) {
        let s = match exit {
            Exit::Code(0) => status(
                TaskState::Complete,
                "finished",
                "",
                Some(h.runtime_status(0)),
            ),
            Exit::Code(code) => status(
                TaskState::Failed,
                "started",
                &format!("task: non-zero exit ({code})"),
                Some(h.runtime_status(code)),
            ),
            Exit::Unknown(why) => status(
                TaskState::Failed,
                "started",
                &format!("task: {why}"),
                Some(h.runtime_status(-1)),
            ),
        };
        self.report(id, s).await;
    }

    /// Stops and removes the runtime of a task that is not assigned here any more.
    async fn discard(self: Arc<Self>, id: String, record: Record) {
        if let Some(executor) = self.executors.for_handle(&record.handle) {
            if executor.inspect(&record.handle).await == Liveness::Running {
                let grace = Duration::from_millis(record.grace_ms);
                if let Err(e) = executor.stop(&record.handle, grace).await {
                    tracing::warn!(task = %record.name, error = %e, "cannot stop a task no longer assigned");
                }
            }
            if let Err(e) = executor.remove(&record.handle).await {
                tracing::warn!(task = %record.name, error = %e, "cannot remove a task no longer assigned");
            }
        }
        self.files.remove(&id);
        self.forget(&id);
    }
}

#[cfg(test)]
mod tests;
