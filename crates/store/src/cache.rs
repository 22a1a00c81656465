//! A local copy of one kind, kept current by list + watch (kube-rs's reflector).
//!
//! A [`Cache`] owns a task that applies the watch to an in-memory map; any number of
//! [`CacheReader`]s read it without touching etcd. Each etcd watch response (every change
//! of whole revisions) is applied under one write lock, so readers never see half a
//! transaction, and the cache's revision only moves once a revision is fully applied. That
//! makes [`CacheReader::wait_for_revision`] a read-your-writes barrier: after a write at
//! revision R, waiting for R guarantees the cache shows it.
//!
//! Secondary indexes (e.g. tasks by service, tasks by node) registered on the builder are
//! maintained on every change, so hot paths look objects up without scanning.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use shoal_proto::v1::Task;
use tokio::sync::{broadcast, watch};

use crate::backoff::TaskGuard;
use crate::error::{Error, Result};
use crate::object::Object;
use crate::store::Store;
use crate::watch::{BatchWatch, Change, WatchBatch};

/// Computes the values an object is indexed under.
pub type IndexFn<T> = Arc<dyn Fn(&T) -> Vec<String> + Send + Sync>;

/// Index name for [`task_service`].
pub const TASKS_BY_SERVICE: &str = "service";
/// Index name for [`task_node`].
pub const TASKS_BY_NODE: &str = "node";

/// Index function: a task's service id.
pub fn task_service(t: &Task) -> Vec<String> {
    vec![t.service_id.clone()]
}

/// Index function: a task's node id (unassigned tasks are not indexed).
pub fn task_node(t: &Task) -> Vec<String> {
    if t.node_id.is_empty() {
        Vec::new()
    } else {
        vec![t.node_id.clone()]
    }
}

/// What changed in a cache, sent to [`CacheReader::subscribe`]rs after it is applied.
#[derive(Debug)]
pub enum CacheEvent<T> {
    Upserted(Arc<T>),
    /// The object as last stored; its version is the revision of the delete.
    Deleted(Arc<T>),
    /// The cache was rebuilt from a full list (start, or after compaction): anything may
    /// have changed.
    Restarted {
        revision: u64,
    },
}

impl<T> Clone for CacheEvent<T> {
    fn clone(&self) -> Self {
        match self {
            CacheEvent::Upserted(o) => CacheEvent::Upserted(o.clone()),
            CacheEvent::Deleted(o) => CacheEvent::Deleted(o.clone()),
            CacheEvent::Restarted { revision } => CacheEvent::Restarted {
                revision: *revision,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Status {
    revision: u64,
    synced: bool,
    closed: bool,
}

struct State<T> {
    objects: HashMap<String, Arc<T>>,
    /// One map per registered index: value → ids.
    indexes: Vec<HashMap<String, HashSet<String>>>,
}

struct Shared<T> {
    state: RwLock<State<T>>,
    index_names: Vec<&'static str>,
    index_fns: Vec<IndexFn<T>>,
    status: watch::Sender<Status>,
    events: broadcast::Sender<CacheEvent<T>>,
    store: Store,
}

impl<T: Object> Shared<T> {
    fn read(&self) -> RwLockReadGuard<'_, State<T>> {
        // A poisoned lock only means a reader panicked; the map itself is consistent.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State<T>> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn index_insert(&self, state: &mut State<T>, obj: &T) {
        let id = obj.id();
        for (i, f) in self.index_fns.iter().enumerate() {
            for value in f(obj) {
                state.indexes[i]
                    .entry(value)
                    .or_default()
                    .insert(id.to_string());
            }
        }
    }

    fn index_remove(&self, state: &mut State<T>, obj: &T) {
        let id = obj.id();
        for (i, f) in self.index_fns.iter().enumerate() {
            for value in f(obj) {
                if let Some(ids) = state.indexes[i].get_mut(&value) {
                    ids.remove(id);
                    if ids.is_empty() {
                        state.indexes[i].remove(&value);
                    }
                }
            }
        }
    }

    fn apply(&self, batch: WatchBatch<T>) {
        match batch {
            WatchBatch::Restarted { objects, revision } => {
                let mut fresh = State {
                    objects: HashMap::with_capacity(objects.len()),
                    indexes: vec![HashMap::new(); self.index_fns.len()],
                };
                for obj in objects {
                    self.index_insert(&mut fresh, &obj);
                    fresh.objects.insert(obj.id().to_string(), Arc::new(obj));
                }
                *self.write() = fresh;
                self.status.send_modify(|s| {
                    s.revision = revision;
                    s.synced = true;
                });
                let _ = self.events.send(CacheEvent::Restarted { revision });
            }
            WatchBatch::Changes { changes, revision } => {
                let mut events = Vec::with_capacity(changes.len());
                {
                    let mut state = self.write();
                    for change in changes {
                        match change {
                            Change::Put { object, .. } => {
                                let object = Arc::new(object);
                                let id = object.id().to_string();
                                if let Some(old) = state.objects.insert(id, object.clone()) {
                                    self.index_remove(&mut state, &old);
                                }
                                self.index_insert(&mut state, &object);
                                events.push(CacheEvent::Upserted(object));
                            }
                            Change::Deleted(object) => {
                                if let Some(old) = state.objects.remove(object.id()) {
                                    self.index_remove(&mut state, &old);
                                }
                                events.push(CacheEvent::Deleted(Arc::new(object)));
                            }
                        }
                    }
                }
                self.status
                    .send_modify(|s| s.revision = s.revision.max(revision));
                for ev in events {
                    let _ = self.events.send(ev);
                }
            }
            WatchBatch::Progress { revision } => {
                self.status
                    .send_modify(|s| s.revision = s.revision.max(revision));
            }
        }
    }
}

/// Configures a [`Cache`]: its indexes and how many change events subscribers may lag.
pub struct CacheBuilder<T> {
    store: Store,
    index_names: Vec<&'static str>,
    index_fns: Vec<IndexFn<T>>,
    events_capacity: usize,
}

impl<T: Object> CacheBuilder<T> {
    /// Adds an index `name`: each object is findable under every value `f` returns.
    pub fn index(
        mut self,
        name: &'static str,
        f: impl Fn(&T) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.index_names.push(name);
        self.index_fns.push(Arc::new(f));
        self
    }

    /// How many events a subscriber may fall behind before it sees `Lagged` (default 4096).
    pub fn events_capacity(mut self, capacity: usize) -> Self {
        self.events_capacity = capacity.max(1);
        self
    }

    /// Starts the cache's watch (needs a tokio runtime). The cache is empty and unsynced
    /// until the first list lands; see [`CacheReader::wait_until_synced`].
    pub fn start(self) -> Cache<T> {
        let mut watch: BatchWatch<T> = self.store.watch_batches(None);
        let (status, _) = watch::channel(Status::default());
        let (events, _) = broadcast::channel(self.events_capacity);
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                objects: HashMap::new(),
                indexes: vec![HashMap::new(); self.index_fns.len()],
            }),
            index_names: self.index_names,
            index_fns: self.index_fns,
            status,
            events,
            store: self.store.clone(),
        });
        let driver = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(batch) = watch.next().await {
                    shared.apply(batch);
                }
            })
        };
        Cache {
            reader: CacheReader { shared },
            _driver: TaskGuard(driver),
        }
    }
}

/// A local copy of every object of kind `T`. Dropping it stops the watch; readers still
/// holding a [`CacheReader`] then see it closed.
pub struct Cache<T: Object> {
    reader: CacheReader<T>,
    _driver: TaskGuard,
}

impl<T: Object> Cache<T> {
    pub fn builder(store: &Store) -> CacheBuilder<T> {
        CacheBuilder {
            store: store.unfenced(),
            index_names: Vec::new(),
            index_fns: Vec::new(),
            events_capacity: 4096,
        }
    }

    /// A cache with no secondary indexes.
    pub fn start(store: &Store) -> Self {
        Self::builder(store).start()
    }

    pub fn reader(&self) -> CacheReader<T> {
        self.reader.clone()
    }
}

impl Cache<Task> {
    /// A task cache indexed by service ([`TASKS_BY_SERVICE`]) and node ([`TASKS_BY_NODE`]).
    pub fn tasks(store: &Store) -> Self {
        Self::builder(store)
            .index(TASKS_BY_SERVICE, task_service)
            .index(TASKS_BY_NODE, task_node)
            .start()
    }
}

impl<T: Object> Deref for Cache<T> {
    type Target = CacheReader<T>;

    fn deref(&self) -> &CacheReader<T> {
        &self.reader
    }
}

impl<T: Object> Drop for Cache<T> {
    fn drop(&mut self) {
        self.reader.shared.status.send_modify(|s| s.closed = true);
    }
}

/// A cheap, cloneable read handle on a [`Cache`].
pub struct CacheReader<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for CacheReader<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Object> CacheReader<T> {
    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        self.shared.read().objects.get(id).cloned()
    }

    /// Every object, in no particular order.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.shared.read().objects.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.shared.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision the cache reflects: every change up to it has been applied.
    pub fn revision(&self) -> u64 {
        self.shared.status.borrow().revision
    }

    pub fn is_synced(&self) -> bool {
        self.shared.status.borrow().synced
    }

    /// The objects indexed under `value` in index `index`.
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<T>> {
        let Some(i) = self.shared.index_names.iter().position(|n| *n == index) else {
            return Vec::new();
        };
        let state = self.shared.read();
        state.indexes[i]
            .get(value)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| state.objects.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ids indexed under `value` in index `index`.
    pub fn index_ids(&self, index: &str, value: &str) -> Vec<String> {
        let Some(i) = self.shared.index_names.iter().position(|n| *n == index) else {
            return Vec::new();
        };
        self.shared.read().indexes[i]
            .get(value)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The values of index `index` that have objects, with their counts.
    pub fn index_counts(&self, index: &str) -> HashMap<String, usize> {
        let Some(i) = self.shared.index_names.iter().position(|n| *n == index) else {
            return HashMap::new();
        };
        self.shared.read().indexes[i]
            .iter()
            .map(|(v, ids)| (v.clone(), ids.len()))
            .collect()
    }

    /// Waits for the first full list to be applied.
    pub async fn wait_until_synced(&self) -> Result<()> {
        let mut status = self.shared.status.subscribe();
        let s = status
            .wait_for(|s| s.synced || s.closed)
            .await
            .map_err(|_| Error::CacheClosed)?;
        if s.closed {
            return Err(Error::CacheClosed);
        }
        Ok(())
    }

    /// Waits until the cache reflects every change up to `revision` (e.g. the version of a
    /// write just made). If the cache is behind, the kind's progress marker is written
    /// ([`Store::mark_progress`]) so this also returns when `revision` touched other kinds.
    pub async fn wait_for_revision(&self, revision: u64) -> Result<()> {
        let mut status = self.shared.status.subscribe();
        let reached = |s: &Status| (s.synced && s.revision >= revision) || s.closed;
        // Mostly the revision is a write of this very kind, whose event is on its way:
        // give it a moment before writing the marker.
        let arrived = tokio::time::timeout(Duration::from_millis(100), status.wait_for(reached))
            .await
            .is_ok();
        let mut marked = false;
        loop {
            if arrived || reached(&status.borrow()) {
                break;
            }
            if !marked {
                match self.shared.store.mark_progress::<T>().await {
                    Ok(_) => marked = true,
                    Err(e) => tracing::warn!(kind = %T::KIND, error = %e, "cannot mark progress"),
                }
            }
            tokio::select! {
                r = status.wait_for(reached) => {
                    r.map_err(|_| Error::CacheClosed)?;
                    break;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        if status.borrow().closed {
            return Err(Error::CacheClosed);
        }
        Ok(())
    }

    /// Changes applied from now on. A receiver that falls more than the builder's
    /// `events_capacity` behind gets `Lagged` and should resync from [`CacheReader::list`].
    pub fn subscribe(&self) -> broadcast::Receiver<CacheEvent<T>> {
        self.shared.events.subscribe()
    }
}
