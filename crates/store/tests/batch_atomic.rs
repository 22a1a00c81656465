//! A Batch is one transaction: one stale object and nothing applies. update_many is not
//! atomic as a whole: only the stale objects get Conflict, the others land.

mod common;

use common::*;
use shoal_proto::v1::{Service, Task, TaskState};
use shoal_store::{Error, Object};

#[tokio::test]
async fn a_batch_with_one_stale_object_applies_nothing() -> anyhow::Result<()> {
    let (_etcd, store) = etcd_and_store().await?;
    let svc = store.create(service("web")).await?;
    let t1 = store.create(task(svc.id(), 1)).await?;
    let t2 = store.create(task(svc.id(), 2)).await?;

    // Someone else moves t2 on.
    let mut other = t2.clone();
    other.desired_state = TaskState::Shutdown as i32;
    let t2_now = store.update(other).await?;

    let before = store.revision().await?;
    let mut svc_u = svc.clone();
    svc_u.pending_delete = true;
    let mut t1_u = t1.clone();
    t1_u.desired_state = TaskState::Shutdown as i32;
    let mut t2_stale = t2.clone();
    t2_stale.desired_state = TaskState::Remove as i32;
    let mut batch = store.batch();
    batch
        .update(svc_u)
        .update(t1_u)
        .update(t2_stale)
        .create(task(svc.id(), 3));
    match batch.commit().await {
        Err(Error::Conflict { id, .. }) => assert_eq!(id, t2.id()),
        other => anyhow::bail!("expected Conflict on t2, got {other:?}"),
    }
    assert_eq!(
        store.revision().await?,
        before,
        "a failed batch wrote something"
    );
    assert_eq!(store.get::<Service>(svc.id()).await?, svc);
    assert_eq!(store.get::<Task>(t1.id()).await?, t1);
    assert_eq!(store.get::<Task>(t2.id()).await?, t2_now);
    assert_eq!(store.tasks_by_service(svc.id()).await?.objects.len(), 2);

    // The same batch from fresh copies commits, all at one revision.
    let mut svc_u = svc.clone();
    svc_u.pending_delete = true;
    let mut t2_u = t2_now.clone();
    t2_u.desired_state = TaskState::Remove as i32;
    let mut batch = store.batch();
    batch
        .update(svc_u)
        .update(t2_u)
        .create(task(svc.id(), 3))
        .delete(&t1);
    let committed = batch.commit().await?;
    assert_eq!(committed.ids.len(), 4);
    assert_eq!(
        store.get::<Service>(svc.id()).await?.version(),
        committed.revision
    );
    assert_eq!(
        store.get::<Task>(&committed.ids[2]).await?.version(),
        committed.revision
    );
    assert!(store.try_get::<Task>(t1.id()).await?.is_none());

    // A batch larger than one transaction is refused before anything is sent.
    let mut big = store.batch();
    for slot in 0..100 {
        big.create(task(svc.id(), slot));
    }
    assert!(matches!(big.commit().await, Err(Error::TooManyOps { .. })));
    Ok(())
}

#[tokio::test]
async fn update_many_fails_only_the_stale_objects() -> anyhow::Result<()> {
    let (_etcd, store) = etcd_and_store().await?;
    let created: Vec<Task> = store
        .create_many((0..300).map(|i| task("svc", i)).collect())
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(store.tasks_by_service("svc").await?.objects.len(), 300);

    // Every 7th task is changed behind our back.
    let stale: Vec<usize> = (0..300).step_by(7).collect();
    let bumped = store
        .update_many(
            stale
                .iter()
                .map(|&i| {
                    let mut t = created[i].clone();
                    t.status.get_or_insert_default().message = "moved on".into();
                    t
                })
                .collect(),
        )
        .await;
    assert!(bumped.iter().all(Result::is_ok));

    // Assign every task to a node from the old copies; half with previous copies.
    let updates: Vec<Task> = created
        .iter()
        .map(|t| {
            let mut u = t.clone();
            u.node_id = format!("node-{}", t.slot % 3);
            u.status.get_or_insert_default().state = TaskState::Assigned as i32;
            u
        })
        .collect();
    let (first, second) = updates.split_at(150);
    let mut results = store.update_many(first.to_vec()).await;
    results.extend(
        store
            .update_many_from(created[150..].iter().zip(second.iter().cloned()))
            .await,
    );
    assert_eq!(results.len(), 300);
    for (i, r) in results.iter().enumerate() {
        if stale.contains(&i) {
            assert!(
                matches!(r, Err(Error::Conflict { .. })),
                "task {i}: expected Conflict, got {r:?}"
            );
        } else {
            let t = r.as_ref().map_err(|e| anyhow::anyhow!("task {i}: {e}"))?;
            assert_eq!(t.node_id, format!("node-{}", i % 3));
            assert_eq!(store.get::<Task>(t.id()).await?, *t);
        }
    }
    // Indexes agree: stale tasks are still unassigned.
    let unassigned = store
        .list::<Task>()
        .await?
        .objects
        .iter()
        .filter(|t| t.node_id.is_empty())
        .count();
    assert_eq!(unassigned, stale.len());
    let mut total = 0;
    for n in 0..3 {
        total += store
            .tasks_by_node(&format!("node-{n}"))
            .await?
            .objects
            .len();
    }
    assert_eq!(total, 300 - stale.len());

    // create_many: a name given twice in one call: the first wins, only the second fails.
    let results = store
        .create_many(vec![service("a"), service("b"), service("a")])
        .await;
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(matches!(results[2], Err(Error::AlreadyExists { .. })));
    Ok(())
}
