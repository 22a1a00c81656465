//! The record table's controller: list+watch caches of services, tasks, networks (and
//! the cluster, for the API's certificate check) → a queue of dirty service ids →
//! [`ServiceRecord::build`] for each, swapped into the [`Table`].
//!
//! Each batch of cache events is applied as soon as it arrives (a task leaving RUNNING
//! leaves the answers within milliseconds of its etcd write); a cache that restarts or
//! a receiver that lags rebuilds everything, and so does a slow periodic resync, in case
//! a change was missed. Every applied change is announced on a bounded broadcast
//! ([`Change`]) for the Resolver API's watches.

use std::collections::HashSet;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use shoal_grpc_host::ShutdownToken;
use shoal_grpc_host::identity::CLUSTER_NAME;
use shoal_proto::v1::{Cluster, Network, Service, Task};
use shoal_store::cache::TASKS_BY_SERVICE;
use shoal_store::{Cache, CacheEvent, Object, Store};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::table::{NetworkRecord, ServiceRecord, Table};

/// How often everything is rebuilt from the caches even without events.
const RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Changes the broadcast holds before a slow watcher lags (and resyncs).
const CHANGES_CAPACITY: usize = 1024;

/// What changed in the table.
#[derive(Debug, Clone)]
pub enum Change {
    /// These services changed or went away.
    Services(Arc<Vec<String>>),
    /// Anything may have changed (networks, the ingress network, a full rebuild).
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cache: {0}")]
    Cache(#[from] shoal_store::Error),
    #[error("shutting down")]
    Shutdown,
}

/// The caches and the record table built from them.
pub struct Records {
    table: RwLock<Table>,
    changes: broadcast::Sender<Change>,
    services: Cache<Service>,
    tasks: Cache<Task>,
    networks: Cache<Network>,
    clusters: Cache<Cluster>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("services", &self.services.len())
            .field("tasks", &self.tasks.len())
            .field("networks", &self.networks.len())
            .finish()
    }
}

/// What one round of events asks for.
#[derive(Default)]
struct Dirty {
    services: HashSet<String>,
    networks: bool,
    all: bool,
}

impl Dirty {
    fn service<T>(&mut self, ev: Result<CacheEvent<T>, RecvError>, id: impl Fn(&T) -> String) {
        match ev {
            Ok(CacheEvent::Upserted(o)) | Ok(CacheEvent::Deleted(o)) => {
                self.services.insert(id(&o));
            }
            Ok(CacheEvent::Restarted { .. }) | Err(RecvError::Lagged(_)) => self.all = true,
            Err(RecvError::Closed) => {}
        }
    }

    fn network(&mut self, ev: Result<CacheEvent<Network>, RecvError>) {
        match ev {
            Ok(_) | Err(RecvError::Lagged(_)) => self.networks = true,
            Err(RecvError::Closed) => {}
        }
    }
}

fn try_recv<T: Clone>(rx: &mut broadcast::Receiver<T>) -> Option<Result<T, RecvError>> {
    match rx.try_recv() {
        Ok(v) => Some(Ok(v)),
        Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
        Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => None,
    }
}

impl Records {
    /// Starts the caches, waits for their first lists, builds the table and keeps it
    /// current until `shutdown`.
    pub async fn start(
        store: &Store,
        shutdown: ShutdownToken,
    ) -> Result<Arc<Records>, RecordsError> {
        let services = Cache::<Service>::start(store);
        let tasks = Cache::<Task>::builder(store)
            .index(TASKS_BY_SERVICE, shoal_store::cache::task_service)
            .events_capacity(16 * 1024)
            .start();
        let networks = Cache::<Network>::start(store);
        let clusters = Cache::<Cluster>::start(store);
        // Subscribed before the first lists land: whatever happens after is seen, and
        // the full build below covers what came before.
        let service_events = services.subscribe();
        let task_events = tasks.subscribe();
        let network_events = networks.subscribe();
        let synced = async {
            services.wait_until_synced().await?;
            tasks.wait_until_synced().await?;
            networks.wait_until_synced().await?;
            clusters.wait_until_synced().await
        };
        tokio::select! {
            r = synced => r?,
            _ = shutdown.cancelled() => return Err(RecordsError::Shutdown),
        }
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let records = Arc::new(Records {
            table: RwLock::new(Table::default()),
            changes,
            services,
            tasks,
            networks,
            clusters,
        });
        records.rebuild_networks();
        records.rebuild_all();
        tracing::info!(
            services = records.services.len(),
            tasks = records.tasks.len(),
            networks = records.networks.len(),
            "record table built"
        );
        tokio::spawn(
            records
                .clone()
                .follow(service_events, task_events, network_events, shutdown),
        );
        Ok(records)
    }

    /// The table, for reading. Hold it briefly: the controller writes under it.
    pub fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The swarm's cluster id, once the swarm exists.
    pub fn cluster_id(&self) -> Option<String> {
        let clusters = self.clusters.list();
        let pick = if clusters.len() <= 1 {
            clusters.first()
        } else {
            clusters.iter().find(|c| {
                c.spec
                    .as_ref()
                    .and_then(|s| s.annotations.as_ref())
                    .is_some_and(|a| a.name == CLUSTER_NAME)
            })
        };
        pick.map(|c| c.id().to_string())
    }

    /// Waits until the caches reflect etcd revision `revision` (tests: read your writes).
    pub async fn wait_for_revision(&self, revision: u64) -> Result<(), RecordsError> {
        self.services.wait_for_revision(revision).await?;
        self.tasks.wait_for_revision(revision).await?;
        self.networks.wait_for_revision(revision).await?;
        Ok(())
    }

    fn build(&self, id: &str) -> Option<ServiceRecord> {
        let service = self.services.get(id)?;
        let tasks = self.tasks.by_index(TASKS_BY_SERVICE, id);
        ServiceRecord::build(&service, &tasks)
    }

    /// Rebuilds `ids`; returns those that changed.
    fn rebuild_services(&self, ids: impl IntoIterator<Item = String>) -> Vec<String> {
        let built: Vec<(String, Option<ServiceRecord>)> = ids
            .into_iter()
            .map(|id| {
                let record = self.build(&id);
                (id, record)
            })
            .collect();
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        built
            .into_iter()
            .filter_map(|(id, record)| table.put_service(&id, record).then_some(id))
            .collect()
    }

    /// Rebuilds every service, including those the table has and the cache no longer
    /// does; returns those that changed.
    fn rebuild_all(&self) -> Vec<String> {
        let mut ids: HashSet<String> = self
            .services
            .list()
            .iter()
            .map(|s| s.id().to_string())
            .collect();
        ids.extend(self.read().service_ids().cloned());
        self.rebuild_services(ids)
    }

    fn rebuild_networks(&self) -> bool {
        let networks = self
            .networks
            .list()
            .iter()
            .filter_map(|n| NetworkRecord::from_network(n))
            .collect();
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_networks(networks)
    }

    async fn follow(
        self: Arc<Self>,
        mut service_events: broadcast::Receiver<CacheEvent<Service>>,
        mut task_events: broadcast::Receiver<CacheEvent<Task>>,
        mut network_events: broadcast::Receiver<CacheEvent<Network>>,
        shutdown: ShutdownToken,
    ) {
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        let service_id = |s: &Service| s.id().to_string();
        let task_service = |t: &Task| t.service_id.clone();
        loop {
            let mut dirty = Dirty::default();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = service_events.recv() => {
                    if matches!(ev, Err(RecvError::Closed)) { return; }
                    dirty.service(ev, service_id);
                }
                ev = task_events.recv() => {
                    if matches!(ev, Err(RecvError::Closed)) { return; }
                    dirty.service(ev, task_service);
                }
                ev = network_events.recv() => {
                    if matches!(ev, Err(RecvError::Closed)) { return; }
                    dirty.network(ev);
                }
                _ = resync.tick() => dirty.all = true,
            }
            // Whatever else is already queued (the rest of a transaction) goes in the
            // same round.
            while let Some(ev) = try_recv(&mut service_events) {
                dirty.service(ev, service_id);
            }
            while let Some(ev) = try_recv(&mut task_events) {
                dirty.service(ev, task_service);
            }
            while let Some(ev) = try_recv(&mut network_events) {
                dirty.network(ev);
            }
            self.apply(dirty);
        }
    }

    fn apply(&self, dirty: Dirty) {
        let networks_changed = (dirty.networks || dirty.all) && self.rebuild_networks();
        let changed = if dirty.all {
            self.rebuild_all()
        } else {
            self.rebuild_services(dirty.services)
        };
        if networks_changed {
            tracing::debug!("networks changed");
            let _ = self.changes.send(Change::All);
        } else if !changed.is_empty() {
            tracing::debug!(services = ?changed, "records changed");
            let _ = self.changes.send(Change::Services(Arc::new(changed)));
        }
    }
}
