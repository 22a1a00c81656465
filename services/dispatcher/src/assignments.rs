//! What each worker runs: the `Assignments` stream of a node's session.
//!
//! # How it works
//! - **One cache.** The dispatcher keeps one list+watch [`Cache<Task>`] indexed by node
//!   ([`TASKS_BY_NODE`]); no session opens a watch of its own.
//! - **Fan-out.** One task follows the cache's change notifications and marks the
//!   changed task id *dirty* for every assignment stream of the task's node (a map node
//!   id → subscribers). A subscriber's backlog is a bounded set of task ids (changes to
//!   the same task collapse into one); when it overflows, or the cache was rebuilt, or the
//!   fan-out itself fell behind the cache, the subscriber is marked for a fresh COMPLETE
//!   instead: nothing is ever lost, at worst re-sent whole.
//! - **Each stream** first sends `TYPE_COMPLETE` with every task of the node whose
//!   observed state is ASSIGNED or later (`applies_to` "", `results_in` its sequence
//!   number). Then, after a change is marked, it waits a short window (50 ms by default,
//!   Swarm batches the same way) so that a burst becomes one message, and sends
//!   `TYPE_INCREMENTAL` with `applies_to` = the previous `results_in`: `ACTION_UPDATE` with
//!   the whole task for new tasks and changed ones, `ACTION_REMOVE` with only the id for
//!   tasks deleted from the store. What the worker has is tracked per stream, so the
//!   message is the difference between that and the cache, whatever the notifications
//!   were.
//! - **Only what the worker cares about.** As Swarm's `TasksEqualStable`: a task already
//!   sent is sent again only if something besides its meta (version) and its status
//!   changed — the desired state, the spec, … — so the worker's own status reports are
//!   not echoed back to it.
//! - **Secrets and configs** (Swarm's `dispatcher/assignments.go`). A node gets a secret
//!   or config only while a task in its stream's set refers to it: each stream counts the
//!   tasks using each dependency. A message carries `ACTION_UPDATE` for every dependency
//!   newly needed *before* the tasks that need it (the worker applies changes in order,
//!   so a task never starts ahead of its files), and `ACTION_REMOVE` (the id only) after
//!   the last task using one left or ended (past RUNNING, as Swarm). Two more caches (secrets, configs) follow the store;
//!   a changed object (its labels: the payload is immutable) is sent again to the
//!   streams that use it. A secret goes out opened: `spec.data` holds the plaintext
//!   (opened here with the KEK, [`shoal_pki::SecretSealer`]) and `sealed` is cleared;
//!   it travels over the session's mTLS only and is never logged. A dependency missing
//!   from the cache (or that cannot be opened) is left out and logged by id: the task
//!   is sent anyway and the worker fails it with a clear error.
//! - **Tracing.** The first time a task still ASSIGNED is sent to its node, a span
//!   "assign <task name>" is recorded as a child of the task's stored trace context.
//! - **The stream ends** when its session does (replaced, closed, expired, node
//!   removed: ABORTED) or the dispatcher shuts down (UNAVAILABLE).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_grpc_host::ShutdownToken;
use shoal_pki::SecretSealer;
use shoal_proto::v1::assignment::Item;
use shoal_proto::v1::assignment_change::Action;
use shoal_proto::v1::assignments_message::Type as MessageType;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{
    Assignment, AssignmentChange, AssignmentsMessage, Config, Meta, Secret, Task, TaskState,
};
use shoal_store::cache::{TASKS_BY_NODE, task_node};
use shoal_store::{Cache, CacheEvent, CacheReader, Object, Store};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// How many task-change notifications the fan-out may fall behind the cache.
const CACHE_EVENTS: usize = 1 << 16;
/// Dirty task ids one subscriber may hold before it gets a fresh COMPLETE instead.
pub(crate) const BACKLOG: usize = 4096;

/// How long the first COMPLETE of a stream waits for the cache to catch up with the
/// store.
const FIRST_SET_WAIT: Duration = Duration::from_secs(2);

/// The task cache and the subscribers of each node.
pub(crate) struct Assignments {
    pub tasks: Cache<Task>,
    pub secrets: Cache<Secret>,
    pub configs: Cache<Config>,
    /// Opens secrets' payloads; None: no KEK, so no secret is sent.
    sealer: Option<Arc<SecretSealer>>,
    store: Store,
    subscribers: Mutex<HashMap<String, HashMap<u64, Arc<Pending>>>>,
    next_id: AtomicU64,
    backlog: usize,
}

/// The changes one stream has not looked at yet.
#[derive(Default)]
struct Pending {
    inner: Mutex<Dirty>,
    notify: Notify,
}

#[derive(Default)]
struct Dirty {
    ids: HashSet<String>,
    /// Secrets and configs that changed in the store.
    deps: HashSet<Dep>,
    complete: bool,
}

/// A task's dependency: a secret or a config, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Dep {
    Secret(String),
    Config(String),
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Dirty> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, id: &str, backlog: usize) {
        {
            let mut d = self.lock();
            if d.complete || d.ids.contains(id) {
                return;
            }
            if d.ids.len() >= backlog {
                d.ids.clear();
                d.complete = true;
            } else {
                d.ids.insert(id.to_string());
            }
        }
        self.notify.notify_one();
    }

    fn mark_dep(&self, dep: &Dep, backlog: usize) {
        {
            let mut d = self.lock();
            if d.complete || d.deps.contains(dep) {
                return;
            }
            if d.ids.len() + d.deps.len() >= backlog {
                d.ids.clear();
                d.deps.clear();
                d.complete = true;
            } else {
                d.deps.insert(dep.clone());
            }
        }
        self.notify.notify_one();
    }

    fn mark_complete(&self) {
        {
            let mut d = self.lock();
            d.ids.clear();
            d.deps.clear();
            d.complete = true;
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Dirty {
        std::mem::take(&mut *self.lock())
    }
}

/// A stream's registration; dropping it unsubscribes.
struct Subscription {
    assignments: Arc<Assignments>,
    node_id: String,
    id: u64,
    pending: Arc<Pending>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.assignments.lock();
        if let Some(node) = subs.get_mut(&self.node_id) {
            node.remove(&self.id);
            if node.is_empty() {
                subs.remove(&self.node_id);
            }
        }
    }
}

impl Assignments {
    /// Starts the task, secret and config caches (not yet synced: see
    /// [`Assignments::wait_until_synced`]).
    pub fn start(
        store: &Store,
        backlog: usize,
        sealer: Option<Arc<SecretSealer>>,
    ) -> Arc<Assignments> {
        let tasks = Cache::<Task>::builder(store)
            .index(TASKS_BY_NODE, task_node)
            .events_capacity(CACHE_EVENTS)
            .start();
        Arc::new(Assignments {
            tasks,
            secrets: Cache::<Secret>::start(store),
            configs: Cache::<Config>::start(store),
            sealer,
            store: store.clone(),
            subscribers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            backlog: backlog.max(1),
        })
    }

    /// Until the three caches have their first snapshot.
    pub async fn wait_until_synced(&self) -> shoal_store::Result<()> {
        self.tasks.wait_until_synced().await?;
        self.secrets.wait_until_synced().await?;
        self.configs.wait_until_synced().await
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<u64, Arc<Pending>>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribe(self: &Arc<Self>, node_id: &str) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pending = Arc::new(Pending::default());
        self.lock()
            .entry(node_id.to_string())
            .or_default()
            .insert(id, pending.clone());
        Subscription {
            assignments: self.clone(),
            node_id: node_id.to_string(),
            id,
            pending,
        }
    }

    /// How many assignment streams are open.
    pub fn streams(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// Marks `task` for the streams of its node and, when it moved (or was deleted),
    /// of the node it was on: `placed` is the fan-out's record of each task's node.
    fn changed(&self, task: &Task, deleted: bool, placed: &mut HashMap<String, String>) {
        let before = if deleted || task.node_id.is_empty() {
            placed.remove(task.id())
        } else {
            placed.insert(task.id().to_string(), task.node_id.clone())
        };
        let subs = self.lock();
        let mark = |node_id: &str| {
            if let Some(node) = subs.get(node_id) {
                for pending in node.values() {
                    pending.mark(task.id(), self.backlog);
                }
            }
        };
        if !task.node_id.is_empty() {
            mark(&task.node_id);
        }
        if let Some(before) = before.filter(|b| *b != task.node_id) {
            mark(&before);
        }
    }

    /// A secret or config changed: every stream looks whether it uses it (rare: they
    /// change only by their labels, or when created or removed).
    fn dep_changed(&self, dep: Dep) {
        for node in self.lock().values() {
            for pending in node.values() {
                pending.mark_dep(&dep, self.backlog);
            }
        }
    }

    fn resync_all(&self) {
        for node in self.lock().values() {
            for pending in node.values() {
                pending.mark_complete();
            }
        }
    }

    /// A secret's or config's cache event (`dep` names the object by id): the streams
    /// that use it look again; a restart or a lag resends complete sets. False once the
    /// cache is gone.
    fn dep_event<T: Object>(
        &self,
        ev: Result<CacheEvent<T>, RecvError>,
        dep: fn(String) -> Dep,
    ) -> bool {
        match ev {
            Ok(CacheEvent::Upserted(o)) | Ok(CacheEvent::Deleted(o)) => {
                self.dep_changed(dep(o.id().to_string()))
            }
            Ok(CacheEvent::Restarted { .. }) | Err(RecvError::Lagged(_)) => self.resync_all(),
            Err(RecvError::Closed) => return false,
        }
        true
    }

    /// Each placed task's node, by task id.
    fn placements(&self) -> HashMap<String, String> {
        self.tasks
            .list()
            .iter()
            .filter(|t| !t.node_id.is_empty())
            .map(|t| (t.id().to_string(), t.node_id.clone()))
            .collect()
    }

    /// Follows the cache's changes until shutdown.
    pub async fn fan_out(self: Arc<Self>, shutdown: ShutdownToken) {
        let mut events = self.tasks.subscribe();
        // Where each task is, to tell the node a task left (subscribed first: a change
        // in between is applied twice, which is harmless).
        let mut placed = self.placements();
        let mut secrets = self.secrets.subscribe();
        let mut configs = self.configs.subscribe();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => ev,
                ev = secrets.recv() => {
                    if !self.dep_event(ev, Dep::Secret) {
                        return;
                    }
                    continue;
                }
                ev = configs.recv() => {
                    if !self.dep_event(ev, Dep::Config) {
                        return;
                    }
                    continue;
                }
            };
            match ev {
                Ok(CacheEvent::Upserted(task)) => self.changed(&task, false, &mut placed),
                Ok(CacheEvent::Deleted(task)) => self.changed(&task, true, &mut placed),
                Ok(CacheEvent::Restarted { .. }) => {
                    placed = self.placements();
                    self.resync_all()
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "assignment fan-out fell behind the task cache; resending complete sets"
                    );
                    self.resync_all();
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// The assignment stream of `node_id`'s session: ends when `session_ended` or
    /// `shutdown` fires.
    pub fn stream(
        self: &Arc<Self>,
        node_id: &str,
        session_id: &str,
        window: Duration,
        session_ended: CancellationToken,
        shutdown: ShutdownToken,
    ) -> impl futures::Stream<Item = Result<AssignmentsMessage, Status>> + Send + 'static {
        // Subscribe before the first snapshot: a change between the two is then looked
        // at twice, never missed.
        let sub = self.subscribe(node_id);
        let state = StreamState {
            tasks: self.tasks.reader(),
            secrets: self.secrets.reader(),
            configs: self.configs.reader(),
            sealer: self.sealer.clone(),
            users: HashMap::new(),
            deps_sent: HashMap::new(),
            store: self.store.clone(),
            node_id: node_id.to_string(),
            session_id: session_id.to_string(),
            sub,
            sent: HashMap::new(),
            seq: 0,
            last: String::new(),
            window,
            session_ended,
            shutdown,
            started: false,
            done: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            if !st.started {
                st.started = true;
                st.catch_up().await;
                let msg = st.complete();
                return Some((Ok(msg), st));
            }
            match st.next_change().await {
                Ok(msg) => Some((Ok(msg), st)),
                Err(status) => {
                    st.done = true;
                    Some((Err(status), st))
                }
            }
        })
    }
}

struct StreamState {
    tasks: CacheReader<Task>,
    secrets: CacheReader<Secret>,
    configs: CacheReader<Config>,
    sealer: Option<Arc<SecretSealer>>,
    /// The tasks in `sent` using each dependency.
    users: HashMap<Dep, HashSet<String>>,
    /// The dependencies the worker has, by the version sent.
    deps_sent: HashMap<Dep, u64>,
    store: Store,
    node_id: String,
    session_id: String,
    sub: Subscription,
    /// The tasks the worker has, as last sent.
    sent: HashMap<String, Arc<Task>>,
    seq: u64,
    /// The previous message's `results_in`.
    last: String,
    window: Duration,
    session_ended: CancellationToken,
    shutdown: ShutdownToken,
    started: bool,
    done: bool,
}

impl StreamState {
    fn next_seq(&mut self) -> (String, String) {
        self.seq += 1;
        let results_in = self.seq.to_string();
        let applies_to = std::mem::replace(&mut self.last, results_in.clone());
        (applies_to, results_in)
    }

    /// Lets the cache reach the store's current revision before the first COMPLETE,
    /// so a session opened right after its tasks were written gets them in its first
    /// set (a consistent read, as a watch cache serves one). Bounded: a store that does
    /// not answer in time leaves the set to what the cache has, and the changes follow
    /// as INCREMENTAL messages.
    async fn catch_up(&self) {
        let wait = async {
            let revision = self.store.revision().await?;
            self.tasks.wait_for_revision(revision).await
        };
        match tokio::time::timeout(FIRST_SET_WAIT, wait).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "first assignment set from the cache as it is")
            }
            Err(_) => tracing::debug!("first assignment set from the cache as it is (timeout)"),
        }
    }

    /// The node's whole set, as a COMPLETE message.
    fn complete(&mut self) -> AssignmentsMessage {
        let current: Vec<Arc<Task>> = self
            .tasks
            .by_index(TASKS_BY_NODE, &self.node_id)
            .into_iter()
            .filter(|t| assigned(t))
            .collect();
        let mut sent = HashMap::with_capacity(current.len());
        let mut changes = Vec::with_capacity(current.len());
        let mut users: HashMap<Dep, HashSet<String>> = HashMap::new();
        for task in &current {
            for dep in deps_of(task) {
                users.entry(dep).or_default().insert(task.id().to_string());
            }
        }
        let mut deps_sent = HashMap::with_capacity(users.len());
        // Dependencies first: the worker has them when it gets the tasks.
        for dep in users.keys() {
            if let Some((version, change)) = self.dep_update(dep) {
                changes.push(change);
                deps_sent.insert(dep.clone(), version);
            }
        }
        self.users = users;
        self.deps_sent = deps_sent;
        for task in current {
            if !self.sent.contains_key(task.id()) {
                record_assign(&task);
            }
            changes.push(update(&task));
            sent.insert(task.id().to_string(), task);
        }
        self.sent = sent;
        let (_, results_in) = self.next_seq();
        AssignmentsMessage {
            r#type: MessageType::Complete as i32,
            applies_to: String::new(),
            results_in,
            changes,
        }
    }

    /// Waits for the next message worth sending.
    async fn next_change(&mut self) -> Result<AssignmentsMessage, Status> {
        loop {
            let pending = self.sub.pending.clone();
            self.until_ended(pending.notify.notified()).await?;
            // Let a burst of changes gather into one message.
            self.until_ended(tokio::time::sleep(self.window)).await?;
            let dirty = pending.take();
            if dirty.complete {
                return Ok(self.complete());
            }
            let mut changes = Vec::new();
            let mut touched = dirty.deps;
            for id in dirty.ids {
                let current = self
                    .tasks
                    .get(&id)
                    .filter(|t| t.node_id == self.node_id && assigned(t));
                match (current, self.sent.get(&id)) {
                    (Some(task), Some(old)) => {
                        if !stable_eq(old, &task) {
                            changes.push(update(&task));
                        }
                        let old = old.clone();
                        self.retarget(&id, Some(&old), Some(&task), &mut touched);
                        // Keep the newest copy either way: the comparison is with it.
                        self.sent.insert(id, task);
                    }
                    (Some(task), None) => {
                        self.retarget(&id, None, Some(&task), &mut touched);
                        record_assign(&task);
                        changes.push(update(&task));
                        self.sent.insert(id, task);
                    }
                    (None, Some(old)) => {
                        let old = old.clone();
                        self.retarget(&id, Some(&old), None, &mut touched);
                        self.sent.remove(&id);
                        changes.push(remove(&id));
                    }
                    (None, None) => {}
                }
            }
            let (before, after) = self.dep_changes(touched);
            if changes.is_empty() && before.is_empty() && after.is_empty() {
                continue;
            }
            let changes = before.into_iter().chain(changes).chain(after).collect();
            let (applies_to, results_in) = self.next_seq();
            return Ok(AssignmentsMessage {
                r#type: MessageType::Incremental as i32,
                applies_to,
                results_in,
                changes,
            });
        }
    }

    /// Moves task `id` from the dependencies of `old` to those of `new`, noting which
    /// ones it touched.
    fn retarget(
        &mut self,
        id: &str,
        old: Option<&Task>,
        new: Option<&Task>,
        touched: &mut HashSet<Dep>,
    ) {
        let old = old.map(deps_of).unwrap_or_default();
        let new = new.map(deps_of).unwrap_or_default();
        for dep in old.difference(&new) {
            if let Some(users) = self.users.get_mut(dep) {
                users.remove(id);
                if users.is_empty() {
                    self.users.remove(dep);
                }
            }
            touched.insert(dep.clone());
        }
        for dep in new.difference(&old) {
            self.users
                .entry(dep.clone())
                .or_default()
                .insert(id.to_string());
            touched.insert(dep.clone());
        }
    }

    /// What the worker must be told about the `touched` dependencies: updates (sent
    /// before the tasks) and removals (after them).
    fn dep_changes(
        &mut self,
        touched: HashSet<Dep>,
    ) -> (Vec<AssignmentChange>, Vec<AssignmentChange>) {
        let mut before = Vec::new();
        let mut after = Vec::new();
        for dep in touched {
            let used = self.users.get(&dep).is_some_and(|u| !u.is_empty());
            if used {
                let sent = self.deps_sent.get(&dep).copied();
                let current = self.dep_version(&dep);
                if current.is_some() && current == sent {
                    continue;
                }
                match self.dep_update(&dep) {
                    Some((version, change)) => {
                        before.push(change);
                        self.deps_sent.insert(dep, version);
                    }
                    None => {
                        if self.deps_sent.remove(&dep).is_some() {
                            after.push(remove_dep(&dep));
                        }
                    }
                }
            } else if self.deps_sent.remove(&dep).is_some() {
                after.push(remove_dep(&dep));
            }
        }
        (before, after)
    }

    /// The version of the dependency in the cache.
    fn dep_version(&self, dep: &Dep) -> Option<u64> {
        match dep {
            Dep::Secret(id) => self.secrets.get(id).map(|s| s.version()),
            Dep::Config(id) => self.configs.get(id).map(|c| c.version()),
        }
    }

    /// The dependency as the worker gets it (a secret opened), with its version; None
    /// (logged by id) when the cache does not have it or it cannot be opened.
    fn dep_update(&self, dep: &Dep) -> Option<(u64, AssignmentChange)> {
        let item = match dep {
            Dep::Config(id) => {
                let Some(config) = self.configs.get(id) else {
                    tracing::warn!(node.id = %self.node_id, config.id = %id, "a task refers to a config this dispatcher does not have; sending the task without it");
                    return None;
                };
                (config.version(), Item::Config((*config).clone()))
            }
            Dep::Secret(id) => {
                let Some(secret) = self.secrets.get(id) else {
                    tracing::warn!(node.id = %self.node_id, secret.id = %id, "a task refers to a secret this dispatcher does not have; sending the task without it");
                    return None;
                };
                let Some(sealer) = &self.sealer else {
                    tracing::warn!(node.id = %self.node_id, secret.id = %id, "no KEK: this dispatcher cannot open secrets; sending the task without it");
                    return None;
                };
                let name = secret.name().unwrap_or("");
                let data = match sealer.open(name, &secret.sealed) {
                    Ok(data) => data,
                    Err(e) => {
                        // The error names what failed, never the payload.
                        tracing::warn!(node.id = %self.node_id, secret.id = %id, error = %e, "cannot open a secret; sending the task without it");
                        return None;
                    }
                };
                let mut opened = (*secret).clone();
                opened.sealed = Vec::new();
                opened.spec.get_or_insert_with(Default::default).data = data;
                (secret.version(), Item::Secret(opened))
            }
        };
        Some((
            item.0,
            AssignmentChange {
                assignment: Some(Assignment { item: Some(item.1) }),
                action: Action::Update as i32,
            },
        ))
    }

    async fn until_ended<T>(&self, fut: impl std::future::Future<Output = T>) -> Result<T, Status> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Status::unavailable(
                "the dispatcher is shutting down; open a session with another manager",
            )),
            _ = self.session_ended.cancelled() => Err(Status::aborted(format!(
                "session {} of node {} ended; open a new session",
                self.session_id, self.node_id
            ))),
            v = fut => Ok(v),
        }
    }
}

/// Observed state ASSIGNED or later: the task is the node's to run (or to report on).
fn assigned(task: &Task) -> bool {
    task.status
        .as_ref()
        .is_some_and(|s| s.state >= TaskState::Assigned as i32)
}

/// The secrets and configs `task` refers to while it may still run: as in Swarm, a
/// task past RUNNING (it ended) releases them, though it stays in the set.
pub(crate) fn deps_of(task: &Task) -> HashSet<Dep> {
    let mut deps = HashSet::new();
    if task
        .status
        .as_ref()
        .is_some_and(|s| s.state > TaskState::Running as i32)
    {
        return deps;
    }
    let (secrets, configs) = match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(Runtime::Container(c)) => (&c.secrets, &c.configs),
        Some(Runtime::Process(p)) => (&p.secrets, &p.configs),
        None => return deps,
    };
    deps.extend(
        secrets
            .iter()
            .filter(|r| !r.secret_id.is_empty())
            .map(|r| Dep::Secret(r.secret_id.clone())),
    );
    deps.extend(
        configs
            .iter()
            .filter(|r| !r.config_id.is_empty())
            .map(|r| Dep::Config(r.config_id.clone())),
    );
    deps
}

/// The removal of a dependency: its id only.
fn remove_dep(dep: &Dep) -> AssignmentChange {
    let meta = |id: &str| {
        Some(Meta {
            id: id.to_string(),
            ..Default::default()
        })
    };
    let item = match dep {
        Dep::Secret(id) => Item::Secret(Secret {
            meta: meta(id),
            ..Default::default()
        }),
        Dep::Config(id) => Item::Config(Config {
            meta: meta(id),
            ..Default::default()
        }),
    };
    AssignmentChange {
        assignment: Some(Assignment { item: Some(item) }),
        action: Action::Remove as i32,
    }
}

fn update(task: &Task) -> AssignmentChange {
    AssignmentChange {
        assignment: Some(Assignment {
            item: Some(Item::Task(task.clone())),
        }),
        action: Action::Update as i32,
    }
}

fn remove(id: &str) -> AssignmentChange {
    AssignmentChange {
        assignment: Some(Assignment {
            item: Some(Item::Task(Task {
                meta: Some(Meta {
                    id: id.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }),
        action: Action::Remove as i32,
    }
}

/// Equal but for meta and status (Swarm's `TasksEqualStable`): nothing the worker acts on
/// changed. Every field is named, so a new one is a compile error here until decided.
pub(crate) fn stable_eq(a: &Task, b: &Task) -> bool {
    let Task {
        meta: _,
        spec,
        service_id,
        slot,
        node_id,
        annotations,
        service_annotations,
        status: _,
        desired_state,
        networks,
        endpoint,
        log_driver,
        spec_version,
        job_iteration,
        trace_context: _,
        // Never changes after creation; the worker has no use for it.
        restart_count: _,
    } = a;
    *spec == b.spec
        && *desired_state == b.desired_state
        && *spec_version == b.spec_version
        && *service_id == b.service_id
        && *slot == b.slot
        && *node_id == b.node_id
        && *annotations == b.annotations
        && *service_annotations == b.service_annotations
        && *networks == b.networks
        && *endpoint == b.endpoint
        && *log_driver == b.log_driver
        && *job_iteration == b.job_iteration
}

/// `<service>.<slot>` (or `<service>.<node id>` for global tasks), or the task's own
/// name when it has one.
pub fn task_name(task: &Task) -> String {
    if let Some(name) = task
        .annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .filter(|n| !n.is_empty())
    {
        return name.to_string();
    }
    let service = task
        .service_annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(task.service_id.as_str());
    if task.slot > 0 {
        format!("{service}.{}", task.slot)
    } else {
        format!("{service}.{}", task.node_id)
    }
}

/// The "assign <task name>" span, the first time a task the worker has not acknowledged
/// yet is sent to its node.
fn record_assign(task: &Task) {
    let still_assigned = task
        .status
        .as_ref()
        .is_some_and(|s| s.state == TaskState::Assigned as i32);
    if !still_assigned {
        return;
    }
    let name = task_name(task);
    let span = tracing::info_span!(
        "assign",
        otel.name = %format!("assign {name}"),
        task.id = %task.id(),
        task.name = %name,
        node.id = %task.node_id,
        service.id = %task.service_id,
    );
    if let Some(tc) = &task.trace_context {
        shoal_telemetry::set_parent(&span, shoal_telemetry::context_from_stored(tc));
    }
    span.in_scope(|| tracing::debug!("task sent to its node"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Annotations, TaskStatus};

    fn task(id: &str, state: TaskState) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                version: Some(shoal_proto::v1::Version { index: 3 }),
                ..Default::default()
            }),
            service_id: "svc".into(),
            slot: 2,
            node_id: "n1".into(),
            service_annotations: Some(Annotations {
                name: "web".into(),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_swarm() {
        let mut t = task("t", TaskState::Assigned);
        assert_eq!(task_name(&t), "web.2");
        t.slot = 0;
        assert_eq!(task_name(&t), "web.n1");
        t.annotations = Some(Annotations {
            name: "web.7.abc".into(),
            ..Default::default()
        });
        assert_eq!(task_name(&t), "web.7.abc");
    }

    #[test]
    fn status_and_version_changes_are_not_sent_again() {
        let a = task("t", TaskState::Assigned);
        let mut b = task("t", TaskState::Running);
        b.meta = Some(Meta {
            id: "t".into(),
            version: Some(shoal_proto::v1::Version { index: 9 }),
            ..Default::default()
        });
        assert!(stable_eq(&a, &b));
        b.desired_state = TaskState::Shutdown as i32;
        assert!(!stable_eq(&a, &b));
    }

    #[test]
    fn backlog_overflow_turns_into_a_complete() {
        let p = Pending::default();
        p.mark("a", 2);
        p.mark("b", 2);
        p.mark("a", 2);
        let d = p.take();
        assert!(!d.complete);
        assert_eq!(d.ids.len(), 2);
        p.mark("a", 2);
        p.mark("b", 2);
        p.mark("c", 2);
        let d = p.take();
        assert!(d.complete);
        assert!(d.ids.is_empty());
        assert!(!p.take().complete, "taking resets the backlog");
    }
}
