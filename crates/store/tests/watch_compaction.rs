//! A watch asked to resume from a revision etcd has compacted away relists: it emits
//! Restarted with the full current state, then continues with later changes.

mod common;

use common::*;
use futures::StreamExt;
use shoal_proto::v1::Task;
use shoal_store::{Object, WatchEvent};

#[tokio::test]
async fn watch_from_a_compacted_revision_relists() -> anyhow::Result<()> {
    let (etcd, store) = etcd_and_store().await?;
    let a = store.create(task("svc", 1)).await?;
    let b = store.create(task("svc", 2)).await?;
    let c = store.create(task("svc", 3)).await?;
    let mut u = b.clone();
    u.node_id = "n1".into();
    let b2 = store.update(u).await?;
    store.delete::<Task>(c.id(), None).await?;
    let now = store.revision().await?;

    let mut raw = raw_client(&etcd).await?;
    raw.compact(now as i64, None).await?;

    // Resume from before the compaction point.
    let mut watch = store.watch_kind::<Task>(Some(a.version()));
    let first = within("relist", watch.next()).await?;
    let Some(WatchEvent::Restarted { objects, revision }) = first else {
        anyhow::bail!("expected Restarted, got {first:?}");
    };
    let mut objects = objects;
    objects.sort_by_key(|t| t.slot);
    assert_eq!(objects, vec![a.clone(), b2.clone()]);
    assert!(revision >= now);

    // Changes after the relist follow normally.
    let d = store.create(task("svc", 4)).await?;
    let next = within("change after relist", async {
        loop {
            match watch.next().await {
                Some(WatchEvent::Progress { .. }) => continue,
                other => return other,
            }
        }
    })
    .await?;
    assert_eq!(next, Some(WatchEvent::Added(d)));
    Ok(())
}
