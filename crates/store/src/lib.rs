//! shoal's state in etcd. This crate is the only code that talks to etcd.
//!
//! Its job: store the `shoal.v1` objects (nodes, services, tasks, networks, secrets,
//! configs, the cluster) under one documented key layout ([`keys`]), and give every
//! service the primitives that keep that state consistent:
//! - typed reads and compare-and-swap writes ([`Store`]): an object's version is its etcd
//!   mod revision, every update compares it, so concurrent writers never silently
//!   overwrite each other; unique names and secondary indexes are kept in the same
//!   transactions as the objects;
//! - multi-object transactions ([`Batch`]) and batched hot-path writes
//!   ([`Store::create_many`], [`Store::update_many`], [`Store::delete_many`]) that pack up
//!   to 64 objects per transaction and retry only the objects that lost a race;
//! - leader election with fencing ([`Election`], [`Leadership`], [`Store::fenced`]): a
//!   deposed leader's writes are refused by etcd, not by its good intentions;
//! - list + watch ([`Store::watch_kind`]) that resumes after a broken connection without
//!   missing or repeating a change, and relists after compaction;
//! - reflector caches ([`Cache`]) with secondary indexes, for hot paths that must never
//!   scan etcd.
//!
//! Boundaries: it knows nothing of NATS, gRPC or Swarm semantics (task states, scheduling);
//! callers decide what to write, this crate makes writing it safe. Events published after a
//! write are the callers' business; they are hints, the store is the truth.

mod backoff;
mod batch;
pub mod cache;
mod election;
mod error;
pub mod keys;
mod object;
mod store;
mod txn;
mod watch;

pub use batch::Batch;
pub use cache::{Cache, CacheBuilder, CacheEvent, CacheReader};
pub use election::{Election, Leader, Leadership};
pub use error::{Error, Result};
pub use keys::{DEFAULT_PREFIX, Keys};
pub use object::{Index, Kind, Object, new_id};
pub use store::{Committed, Listed, Store, StoreOptions};
pub use txn::Fence;
pub use watch::{ObjectWatch, WatchEvent};

/// Compile-time check: the futures callers spawn (gRPC handlers, controllers) are `Send`.
#[cfg(test)]
#[allow(dead_code)]
fn store_futures_are_send(store: Store, election: Election) {
    use shoal_proto::v1::{Service, Task};
    fn spawned<F: std::future::Future + Send + 'static>(_: F) {}
    let s = store.clone();
    spawned(async move {
        let t = s.get::<Task>("id").await;
        let prev = Task::default();
        let _ = s.create(Task::default()).await;
        let _ = s.update(Task::default()).await;
        let _ = s.update_from(&prev, Task::default()).await;
        let _ = s.delete::<Service>("id", None).await;
        let _ = s.create_many(vec![Task::default()]).await;
        let _ = s.update_many(vec![Task::default()]).await;
        let _ = s.update_many_from([(&prev, Task::default())]).await;
        let _ = s.delete_many(vec![Task::default()]).await;
        let _ = s.list::<Service>().await;
        let _ = s.get_many::<Task>(&["a"]).await;
        let _ = s.tasks_by_service("s").await;
        let _ = s.tasks_by_node("n").await;
        let _ = s.get_by_name::<Service>("web").await;
        let _ = s.leader("x").await;
        let _ = s.mark_progress::<Task>().await;
        let mut batch = s.batch();
        batch.create(Task::default());
        let _ = batch.commit().await;
        let cache = Cache::tasks(&s);
        let _ = cache.wait_until_synced().await;
        let _ = cache.wait_for_revision(1).await;
        t
    });
    spawned(async move {
        if let Ok(l) = election.campaign().await {
            l.lost().await;
            let _ = l.resign().await;
        }
    });
    let watch = store.watch_kind::<Task>(None);
    spawned(async move {
        use futures::StreamExt;
        let mut watch = watch;
        watch.next().await
    });
}
