//! A watch whose etcd is killed and restarted resumes from its last revision: every change
//! made before, during the outage's aftermath and after arrives exactly once, in order.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use futures::StreamExt;
use shoal_proto::v1::Task;
use shoal_store::{Error, Object, WatchEvent, new_id};

/// (event, id, version) of a change event; progress events carry no change and are left out.
type Seen = (&'static str, String, u64);

fn change(ev: &WatchEvent<Task>) -> Option<Seen> {
    match ev {
        WatchEvent::Added(t) => Some(("added", t.id().to_string(), t.version())),
        WatchEvent::Modified(t) => Some(("modified", t.id().to_string(), t.version())),
        WatchEvent::Deleted(t) => Some(("deleted", t.id().to_string(), t.version())),
        WatchEvent::Restarted { .. } | WatchEvent::Progress { .. } => None,
    }
}

#[tokio::test]
async fn watch_resumes_after_etcd_restart_without_gaps_or_duplicates() -> anyhow::Result<()> {
    let (mut etcd, store) = etcd_and_store().await?;
    let t0 = store.create(task("svc", 0)).await?;

    let mut watch = store.watch_kind::<Task>(None);
    let first = within("initial list", watch.next()).await?;
    let Some(WatchEvent::Restarted { objects, revision }) = first else {
        anyhow::bail!("first event is not Restarted: {first:?}");
    };
    assert_eq!(objects, vec![t0.clone()]);
    assert_eq!(revision, t0.version());

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let restarts = Arc::new(Mutex::new(0usize));
    let collector = {
        let seen = seen.clone();
        let restarts = restarts.clone();
        tokio::spawn(async move {
            while let Some(ev) = watch.next().await {
                if matches!(ev, WatchEvent::Restarted { .. }) {
                    *restarts.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                }
                if let Some(c) = change(&ev) {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                }
            }
        })
    };
    let count = |n: usize| {
        let seen = seen.clone();
        move || {
            let seen = seen.clone();
            async move { (seen.lock().unwrap_or_else(|e| e.into_inner()).len() >= n).then_some(()) }
        }
    };

    // Changes before the outage.
    let mut expected: Vec<Seen> = Vec::new();
    let t1 = store.create(task("svc", 1)).await?;
    expected.push(("added", t1.id().into(), t1.version()));
    let mut u = t0.clone();
    u.node_id = "n1".into();
    let t0b = store.update(u).await?;
    expected.push(("modified", t0.id().into(), t0b.version()));
    shoal_testkit::wait_for("changes before the outage", DEADLINE, count(expected.len())).await?;

    // Outage: etcd is killed (connections reset) and comes back with its data.
    etcd.kill();
    etcd.restart().await?;

    // Changes right after the restart, while the watch is still reconnecting; written
    // through a fresh connection so that no write is ambiguous.
    let writer = connect(&etcd).await?;
    let t2 = writer.create(task("svc", 2)).await?;
    expected.push(("added", t2.id().into(), t2.version()));
    let mut u = t1.clone();
    u.node_id = "n2".into();
    let t1b = writer.update(u).await?;
    expected.push(("modified", t1.id().into(), t1b.version()));
    let gone = writer.delete::<Task>(t0.id(), Some(t0b.version())).await?;
    assert_eq!(gone.id(), t0.id());
    expected.push(("deleted", t0.id().into(), gone.version()));
    // A batch: several changes in one revision arrive together.
    let results = writer
        .create_many(vec![task("svc", 3), task("svc", 4), task("svc", 5)])
        .await;
    for r in results {
        let t = r?;
        expected.push(("added", t.id().into(), t.version()));
    }
    // And a last change through the original store, whose connection recovers. A fixed
    // id makes retrying safe: an attempt that failed yet landed shows up as IdExists.
    let mut t6 = task("svc", 6);
    t6.meta_mut().id = new_id();
    let t6 = shoal_testkit::wait_for("original store usable again", DEADLINE, || {
        let store = store.clone();
        let t6 = t6.clone();
        async move {
            match store.create(t6.clone()).await {
                Ok(t) => Some(t),
                Err(Error::IdExists { .. }) => store.get::<Task>(t6.id()).await.ok(),
                Err(_) => None,
            }
        }
    })
    .await?;
    expected.push(("added", t6.id().into(), t6.version()));

    shoal_testkit::wait_for(
        "every change after the outage",
        DEADLINE,
        count(expected.len()),
    )
    .await?;
    let got = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    collector.abort();
    assert_eq!(got, expected);
    assert_eq!(
        *restarts.lock().unwrap_or_else(|e| e.into_inner()),
        0,
        "the watch relisted"
    );
    Ok(())
}
