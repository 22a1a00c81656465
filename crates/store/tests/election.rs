//! Two candidates: exactly one leads. Revoking the leader's lease hands leadership to the
//! other, the first one learns it lost, and a write fenced on the old leadership is refused
//! and not stored.

mod common;

use std::time::Duration;

use common::*;
use shoal_proto::v1::Service;
use shoal_store::{Election, Error, Object};

#[tokio::test]
async fn leadership_moves_on_lease_loss_and_fences_the_old_leader() -> anyhow::Result<()> {
    let (etcd, store) = etcd_and_store().await?;
    let other_store = connect(&etcd).await?;
    let ttl = Duration::from_secs(3);
    let a = Election::new(&store, "orchestrator", "candidate-a", ttl);
    let b = Election::new(&other_store, "orchestrator", "candidate-b", ttl);

    let lead_a = within("a's campaign", a.campaign()).await??;
    assert!(!lead_a.is_lost());
    let contender = tokio::spawn(async move { b.campaign().await });

    let leader = store.leader("orchestrator").await?;
    let leader = leader.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    assert_eq!(leader.candidate_id, "candidate-a");
    assert_eq!(leader.revision, lead_a.revision());
    assert_eq!(leader.lease_id, lead_a.lease_id());

    // Leader a's fenced writes land while it leads.
    let fenced_a = store.fenced(&lead_a);
    let svc = fenced_a.create(service("web")).await?;
    // b keeps waiting: a's lease is kept alive well past its ttl.
    tokio::time::timeout(ttl * 2, lead_a.lost())
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a lost leadership while its lease was kept"))?;
    assert!(
        !contender.is_finished(),
        "b became leader while a held the key"
    );

    // Revoke a's lease from outside, as an expiry would.
    let mut raw = raw_client(&etcd).await?;
    raw.lease_revoke(lead_a.lease_id()).await?;

    let lead_b = within("b takes over", contender).await???;
    assert!(lead_b.revision() > lead_a.revision());
    within("a notices it lost", lead_a.lost()).await?;
    assert!(lead_a.is_lost());
    let leader = store.leader("orchestrator").await?;
    assert_eq!(
        leader.map(|l| l.candidate_id),
        Some("candidate-b".to_string())
    );

    // The deposed leader's fenced writes are refused, and nothing lands.
    let before = store.revision().await?;
    let mut stale_write = svc.clone();
    stale_write.pending_delete = true;
    assert!(matches!(
        fenced_a.update(stale_write).await,
        Err(Error::Fenced { .. })
    ));
    assert!(matches!(
        fenced_a.create(service("api")).await,
        Err(Error::Fenced { .. })
    ));
    let results = fenced_a.create_many(vec![service("x"), service("y")]).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::Fenced { .. })))
    );
    assert_eq!(store.revision().await?, before, "a fenced write landed");
    assert_eq!(store.get::<Service>(svc.id()).await?, svc);
    assert!(matches!(
        store.get_by_name::<Service>("api").await,
        Err(Error::NotFound { .. })
    ));

    // The new leader's fenced writes land.
    let fenced_b = store.fenced(&lead_b);
    let mut ok_write = svc.clone();
    ok_write.pending_delete = true;
    let written = fenced_b.update(ok_write).await?;
    assert!(written.pending_delete);

    // Resigning frees the key.
    lead_b.resign().await?;
    assert_eq!(store.leader("orchestrator").await?, None);
    Ok(())
}
