//! Dispatcher restarts and replicas: a healthy fleet is never marked down, a node that
//! died with its dispatcher is marked down after the doubled grace, and two replicas
//! leave each other's nodes alone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_dispatcher::presence;
use shoal_dispatcher::writer::ORPHAN_FAILURE;
use shoal_pki::Role;
use shoal_proto::v1::node_spec::Membership;
use shoal_proto::v1::node_status::State as NodeState;
use shoal_proto::v1::{Node, NodeRole, NodeSpec, NodeStatus};
use shoal_store::Object;
use tokio::sync::watch;

const NODES: usize = 12;

/// Every node READY with a session owned by `instance`.
async fn all_ready_on(swarm: &Swarm, ids: &[String], instance: &str) -> anyhow::Result<()> {
    shoal_testkit::wait_for(
        &format!("all nodes READY on {instance}"),
        DEADLINE,
        || async {
            let nodes = swarm.store().get_many::<Node>(ids).await.ok()?;
            (nodes.len() == ids.len()
                && nodes.iter().all(|n| {
                    state_of(n) == NodeState::Ready
                        && presence::session_owner(&n.session_id) == Some(instance)
                }))
            .then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn restarting_the_dispatcher_never_marks_a_healthy_node_down() -> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let log = StatusLog::start(swarm.store()).await?;
    // A manager's own node: READY without any dispatcher session (the manager proves it
    // is up with its own presence key). No dispatcher may touch it.
    let manager = swarm
        .store()
        .create(Node {
            spec: Some(NodeSpec {
                membership: Membership::Accepted as i32,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                addr: "127.0.0.1".into(),
                ..Default::default()
            }),
            role: NodeRole::Manager as i32,
            ..Default::default()
        })
        .await?;
    let d1 = swarm.start_dispatcher().await?;
    let (target, target_rx) = watch::channel(d1.addr);
    let mut ids = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..NODES {
        let (id, creds) = swarm.join(Role::Worker).await?;
        workers.push(SimWorker::spawn(id.clone(), creds, target_rx.clone()));
        ids.push(id);
    }
    all_ready_on(&swarm, &ids, d1.dispatcher.instance_id()).await?;

    // Restart: the old one goes away, a new one comes up on the same store, the workers
    // find it.
    d1.stop().await?;
    let d2 = swarm.start_dispatcher().await?;
    let _ = target.send(d2.addr);
    all_ready_on(&swarm, &ids, d2.dispatcher.instance_id()).await?;

    // And once more, with the workers heartbeating throughout.
    d2.stop().await?;
    let d3 = swarm.start_dispatcher().await?;
    let _ = target.send(d3.addr);
    all_ready_on(&swarm, &ids, d3.dispatcher.instance_id()).await?;

    // Watch past every grace the restarts could have started (2 × 3 × period), while the
    // workers keep heartbeating.
    let until = Instant::now() + 2 * 3 * PERIOD + Duration::from_secs(1);
    shoal_testkit::wait_for("the failover grace to pass", DEADLINE, || async {
        let counts = d3.dispatcher.session_counts();
        (Instant::now() >= until && counts.live == NODES && counts.orphaned == 0).then_some(())
    })
    .await?;
    let downs: Vec<_> = log
        .all()
        .into_iter()
        .filter(|s| matches!(s.state, NodeState::Down | NodeState::Disconnected))
        .collect();
    assert!(downs.is_empty(), "healthy nodes changed state: {downs:?}");
    all_ready_on(&swarm, &ids, d3.dispatcher.instance_id()).await?;
    let untouched: Node = swarm.store().get(manager.id()).await?;
    assert_eq!(
        untouched, manager,
        "a dispatcher wrote a node it holds no session of"
    );
    for w in &workers {
        assert!(w.sessions.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    }
    d3.stop().await
}

#[tokio::test]
async fn a_node_that_died_with_its_dispatcher_goes_down_after_the_doubled_grace()
-> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let d1 = swarm.start_dispatcher().await?;
    let (id, creds) = swarm.join(Role::Worker).await?;
    let (target, target_rx) = watch::channel(d1.addr);
    let worker = SimWorker::spawn(id.clone(), creds, target_rx);
    all_ready_on(
        &swarm,
        std::slice::from_ref(&id),
        d1.dispatcher.instance_id(),
    )
    .await?;

    // The dispatcher stops (writing nothing), and the worker dies with it.
    worker.kill().await;
    d1.stop().await?;
    let stored: Node = swarm.store().get(&id).await?;
    assert_eq!(
        state_of(&stored),
        NodeState::Ready,
        "a stopping dispatcher writes nothing"
    );

    let started = Instant::now();
    let d2 = swarm.start_dispatcher().await?;
    let _ = target.send(d2.addr);
    assert_eq!(d2.dispatcher.session_counts().orphaned, 1);
    let down = wait_for_state(swarm.store(), &id, NodeState::Down, DEADLINE).await?;
    let took = started.elapsed();
    assert!(
        took >= 2 * 3 * PERIOD - Duration::from_millis(100),
        "down after {took:?}, before the doubled grace"
    );
    assert_eq!(down.status.unwrap_or_default().message, ORPHAN_FAILURE);
    d2.stop().await
}

#[tokio::test]
async fn two_replicas_leave_each_others_nodes_alone() -> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let log = StatusLog::start(swarm.store()).await?;
    let a = swarm.start_dispatcher().await?;
    let (id_a, creds_a) = swarm.join(Role::Worker).await?;
    let (_, rx_a) = watch::channel(a.addr);
    let worker_a = SimWorker::spawn(id_a.clone(), creds_a, rx_a);
    all_ready_on(
        &swarm,
        std::slice::from_ref(&id_a),
        a.dispatcher.instance_id(),
    )
    .await?;

    // A second replica starts while the first holds a session: it adopts nothing.
    let b = swarm.start_dispatcher().await?;
    assert_eq!(b.dispatcher.session_counts().orphaned, 0);
    let (id_b, creds_b) = swarm.join(Role::Worker).await?;
    let (_, rx_b) = watch::channel(b.addr);
    let _worker_b = SimWorker::spawn(id_b.clone(), creds_b, rx_b);
    all_ready_on(
        &swarm,
        std::slice::from_ref(&id_b),
        b.dispatcher.instance_id(),
    )
    .await?;

    // Both run past the failover grace; neither marks the other's node.
    let until = Instant::now() + 2 * 3 * PERIOD + Duration::from_secs(1);
    shoal_testkit::wait_for("the failover grace to pass", DEADLINE, || async {
        (Instant::now() >= until).then_some(())
    })
    .await?;
    assert!(
        log.all().iter().all(|s| s.state != NodeState::Down),
        "{:?}",
        log.all()
    );
    assert_eq!(a.dispatcher.session_counts().orphaned, 0);
    assert_eq!(b.dispatcher.session_counts().orphaned, 0);

    // Replica A dies with its worker: B adopts A's node and marks it down after the
    // doubled grace; B's own node stays READY.
    worker_a.kill().await;
    a.stop().await?;
    let down = wait_for_state(swarm.store(), &id_a, NodeState::Down, DEADLINE).await?;
    assert_eq!(down.status.unwrap_or_default().message, ORPHAN_FAILURE);
    let b_node: Node = swarm.store().get(&id_b).await?;
    assert_eq!(state_of(&b_node), NodeState::Ready);
    assert!(log.states_of(&id_b).iter().all(|s| *s != NodeState::Down));
    b.stop().await
}
