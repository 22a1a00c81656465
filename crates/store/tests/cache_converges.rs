//! A cache fed by list + watch converges to the store after a burst of creates, updates
//! and deletes, and its secondary indexes match the store's.

mod common;

use std::collections::BTreeMap;

use common::*;
use shoal_proto::v1::{Task, TaskState};
use shoal_store::cache::{TASKS_BY_NODE, TASKS_BY_SERVICE};
use shoal_store::{Cache, CacheEvent, Object};

#[tokio::test]
async fn cache_matches_the_store_after_a_burst() -> anyhow::Result<()> {
    let (_etcd, store) = etcd_and_store().await?;
    // Some state exists before the cache starts.
    let early: Vec<Task> = store
        .create_many((0..50).map(|i| task("svc-0", i)).collect())
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    let cache = Cache::tasks(&store);
    within("cache sync", cache.wait_until_synced()).await??;
    assert_eq!(cache.len(), 50);
    let mut events = cache.subscribe();

    // Burst: creates across services, assignments, status updates, deletes.
    let created: Vec<Task> = store
        .create_many(
            (0..400)
                .map(|i| task(&format!("svc-{}", i % 5), i))
                .collect(),
        )
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let assigned: Vec<Task> = store
        .update_many_from(created.iter().take(250).map(|t| {
            let mut u = t.clone();
            u.node_id = format!("node-{}", t.slot % 4);
            (t, u)
        }))
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let running: Vec<Task> = store
        .update_many(
            assigned
                .iter()
                .take(100)
                .map(|t| {
                    let mut u = t.clone();
                    u.status.get_or_insert_default().state = TaskState::Running as i32;
                    u
                })
                .collect(),
        )
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let deleted = store
        .delete_many(
            running
                .iter()
                .take(30)
                .cloned()
                .chain(early.iter().take(20).cloned())
                .collect(),
        )
        .await;
    assert!(deleted.iter().all(Result::is_ok));
    let last = store.create(task("svc-9", 1)).await?;

    within("cache catches up", cache.wait_for_revision(last.version())).await??;

    let listed = store.list::<Task>().await?;
    let in_store: BTreeMap<String, Task> = listed
        .objects
        .into_iter()
        .map(|t| (t.id().to_string(), t))
        .collect();
    let in_cache: BTreeMap<String, Task> = cache
        .list()
        .into_iter()
        .map(|t| (t.id().to_string(), (*t).clone()))
        .collect();
    assert_eq!(in_cache.len(), 50 + 400 - 50 + 1);
    assert_eq!(in_cache, in_store);
    assert!(cache.revision() >= last.version());

    // Indexes agree with the store's own (etcd) indexes.
    for s in ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4", "svc-9"] {
        let from_store = sorted(
            store
                .tasks_by_service(s)
                .await?
                .objects
                .iter()
                .map(|t| t.id().to_string())
                .collect(),
        );
        assert_eq!(
            sorted(cache.index_ids(TASKS_BY_SERVICE, s)),
            from_store,
            "service {s}"
        );
    }
    for n in ["node-0", "node-1", "node-2", "node-3"] {
        let from_store = sorted(
            store
                .tasks_by_node(n)
                .await?
                .objects
                .iter()
                .map(|t| t.id().to_string())
                .collect(),
        );
        assert_eq!(
            sorted(cache.index_ids(TASKS_BY_NODE, n)),
            from_store,
            "node {n:?}"
        );
        assert_eq!(cache.by_index(TASKS_BY_NODE, n).len(), from_store.len());
    }

    // Subscribers saw the changes, ending with the last create.
    let mut upserts = 0;
    loop {
        match events.try_recv() {
            Ok(CacheEvent::Upserted(t)) => {
                upserts += 1;
                if t.id() == last.id() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => anyhow::bail!("event stream ended early: {e}"),
        }
    }
    assert_eq!(upserts, 400 + 250 + 100 + 1);
    Ok(())
}
