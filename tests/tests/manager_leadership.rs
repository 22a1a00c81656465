//! Two managers, one leader. The leader leaving (SIGTERM: it resigns) or dying
//! (SIGKILL: its lease expires) hands the leadership to the other.

use std::time::Duration;

use shoal_scenarios::{MANAGER_NAME, Swarm, start_manager};
use shoal_store::Store;
use shoal_testkit::{Infra, wait_for};

async fn leader_addr(store: &Store) -> Option<String> {
    let leader = store.leader("manager").await.ok()??;
    // Candidate ids are "<node id>@<advertise addr>".
    leader
        .candidate_id
        .split_once('@')
        .map(|(_, addr)| addr.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_when_the_leader_stops_or_dies() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let ttl = "leader_lease_ttl = \"2s\"\n";
    let swarm = Swarm::start(&infra, ttl).await?;
    let mut a = swarm.manager;
    let mut b = start_manager(&infra, ttl).await?;
    b.wait_serving(&swarm.admin, MANAGER_NAME).await?;
    let store = Store::connect(&[infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;

    let first = wait_for("a manager leader", Duration::from_secs(10), || {
        leader_addr(&store)
    })
    .await?;
    assert!(
        first == a.addr || first == b.addr,
        "leader {first} is one of ours"
    );
    let (leader, follower) = if first == a.addr {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    // SIGTERM: the leader resigns on its way out; the follower takes over.
    leader.process.signal_term()?;
    assert!(
        leader
            .process
            .wait_exit(Duration::from_secs(5))
            .await?
            .success()
    );
    let follower_addr = follower.addr.clone();
    wait_for("the follower to lead", Duration::from_secs(10), || async {
        (leader_addr(&store).await? == follower_addr).then_some(())
    })
    .await?;

    // SIGKILL of the new leader: no resignation; a fresh manager takes over once the
    // dead one's lease (2 s) expires.
    let mut c = start_manager(&infra, ttl).await?;
    follower.process.kill_now();
    let c_addr = c.addr.clone();
    wait_for(
        "the new manager to lead",
        Duration::from_secs(15),
        || async { (leader_addr(&store).await? == c_addr).then_some(()) },
    )
    .await?;
    c.process.signal_term()?;
    assert!(c.process.wait_exit(Duration::from_secs(5)).await?.success());
    Ok(())
}
