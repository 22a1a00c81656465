//! Two writers update one object from the same version: exactly one wins, the other is
//! told `Conflict`, and the stored object is the winner's.

mod common;

use common::*;
use shoal_store::{Error, Object};

#[tokio::test]
async fn concurrent_updates_of_one_version_have_one_winner() -> anyhow::Result<()> {
    let (_etcd, store) = etcd_and_store().await?;
    let created = store.create(service("web")).await?;
    let version = created.version();
    assert!(version > 0);

    for round in 0..10u64 {
        let current = store.get::<shoal_proto::v1::Service>(created.id()).await?;
        let mut a = current.clone();
        let mut b = current.clone();
        a.pending_delete = round % 2 == 0;
        a.spec_version = Some(shoal_proto::v1::Version {
            index: 1000 + round,
        });
        b.spec_version = Some(shoal_proto::v1::Version {
            index: 2000 + round,
        });

        let (ra, rb) = tokio::join!(store.update(a), store.update(b));
        let (winner, loser) = match (ra, rb) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (Ok(_), Ok(_)) => anyhow::bail!("round {round}: both updates won"),
            (Err(a), Err(b)) => anyhow::bail!("round {round}: both failed: {a}; {b}"),
        };
        match loser {
            Error::Conflict {
                expected, actual, ..
            } => {
                assert_eq!(expected, current.version());
                assert_eq!(actual, winner.version());
            }
            other => anyhow::bail!("round {round}: loser got {other}, not Conflict"),
        }
        let stored = store.get::<shoal_proto::v1::Service>(created.id()).await?;
        assert_eq!(
            stored, winner,
            "round {round}: stored object is not the winner's"
        );
        assert!(stored.version() > current.version());
    }

    // A stale version is refused even without a race.
    let mut stale = created.clone();
    stale.pending_delete = true;
    assert!(matches!(
        store.update(stale).await,
        Err(Error::Conflict { .. })
    ));
    Ok(())
}
