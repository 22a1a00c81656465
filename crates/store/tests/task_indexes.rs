//! tasks_by_service / tasks_by_node follow every create, assignment and delete, written in
//! the same transaction as the task (the index key's mod revision is the task's version).

mod common;

use common::*;
use shoal_proto::v1::Task;
use shoal_store::{Object, Store};

async fn ids_by_service(store: &Store, service: &str) -> anyhow::Result<Vec<String>> {
    let listed = store.tasks_by_service(service).await?;
    Ok(sorted(
        listed.objects.iter().map(|t| t.id().to_string()).collect(),
    ))
}

async fn ids_by_node(store: &Store, node: &str) -> anyhow::Result<Vec<String>> {
    let listed = store.tasks_by_node(node).await?;
    Ok(sorted(
        listed.objects.iter().map(|t| t.id().to_string()).collect(),
    ))
}

#[tokio::test]
async fn indexes_follow_create_assign_and_delete() -> anyhow::Result<()> {
    let (etcd, store) = etcd_and_store().await?;
    let mut raw = raw_client(&etcd).await?;

    let a1 = store.create(task("svc-a", 1)).await?;
    let a2 = store.create(task("svc-a", 2)).await?;
    let b1 = store.create(task("svc-b", 1)).await?;
    assert_eq!(
        ids_by_service(&store, "svc-a").await?,
        sorted(vec![a1.id().into(), a2.id().into()])
    );
    assert_eq!(
        ids_by_service(&store, "svc-b").await?,
        vec![b1.id().to_string()]
    );
    // Unassigned tasks are in no node's index.
    assert!(ids_by_node(&store, "node-1").await?.is_empty());
    assert!(ids_by_node(&store, "").await?.is_empty());

    // Written in the task's own transaction.
    let index_key = format!("/shoal/test/index/tasks-by-service/svc-a/{}", a1.id());
    let kv = raw.get(index_key, None).await?;
    assert_eq!(kv.kvs()[0].mod_revision() as u64, a1.version());

    // Assign a1 with a plain update (the store discovers the old node itself) and a2 with
    // the previous copy supplied.
    let mut a1n = a1.clone();
    a1n.node_id = "node-1".into();
    let a1n = store.update(a1n).await?;
    let mut a2n = a2.clone();
    a2n.node_id = "node-2".into();
    let a2n = store.update_from(&a2, a2n).await?;
    assert_eq!(
        ids_by_node(&store, "node-1").await?,
        vec![a1.id().to_string()]
    );
    assert_eq!(
        ids_by_node(&store, "node-2").await?,
        vec![a2.id().to_string()]
    );
    let node_key = format!("/shoal/test/index/tasks-by-node/node-1/{}", a1.id());
    let kv = raw.get(node_key, None).await?;
    assert_eq!(kv.kvs()[0].mod_revision() as u64, a1n.version());

    // A move between nodes is not Swarm's, but a plain update still detects it and moves
    // the key.
    let mut moved = a2n.clone();
    moved.node_id = "node-3".into();
    let a2n = store.update(moved).await?;
    assert!(ids_by_node(&store, "node-2").await?.is_empty());
    assert_eq!(
        ids_by_node(&store, "node-3").await?,
        vec![a2.id().to_string()]
    );

    // A status-only update leaves the indexes alone.
    let mut a1s = a1n.clone();
    a1s.status.get_or_insert_default().message = "started".into();
    store.update(a1s).await?;
    assert_eq!(
        ids_by_node(&store, "node-1").await?,
        vec![a1.id().to_string()]
    );

    // Deletes take the index keys along.
    store.delete::<Task>(a1.id(), None).await?;
    let deleted = store.delete_many(vec![a2n.clone()]).await;
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    assert!(ids_by_service(&store, "svc-a").await?.is_empty());
    assert!(ids_by_node(&store, "node-1").await?.is_empty());
    assert!(ids_by_node(&store, "node-3").await?.is_empty());
    let left = raw
        .get(
            "/shoal/test/index/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await?;
    let mut keys: Vec<String> = left
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [format!(
            "/shoal/test/index/tasks-by-service/svc-b/{}",
            b1.id()
        )]
    );
    Ok(())
}
