//! Seeds 000 and 004 on one machine: a manager, a dispatcher and three workers, each
//! worker on its own loopback address (127.0.1.x), joined with the real join flow.
//! Nodes go Down when their worker dies and come back Ready with the same id; a
//! dispatcher restart never marks a healthy node Down; a second manager shows as
//! Reachable next to the Leader.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use shoal_proto::v1::{
    ClusterSpec, DispatcherConfig, InitClusterRequest, ListNodesRequest, Node, NodeRole,
    manager_status::Reachability, node_status,
};
use shoal_scenarios::{MANAGER_NAME, Swarm, join_worker, spawn_service, start_manager};
use shoal_store::{Store, WatchEvent};
use shoal_testkit::{Infra, wait_for};

const HEARTBEAT: Duration = Duration::from_secs(1);

fn state(node: &Node) -> node_status::State {
    node.status
        .as_ref()
        .and_then(|s| node_status::State::try_from(s.state).ok())
        .unwrap_or(node_status::State::Unknown)
}

async fn nodes(swarm: &Swarm) -> Option<HashMap<String, Node>> {
    let mut control = swarm.manager.control(&swarm.admin).await.ok()?;
    let nodes = control
        .list_nodes(ListNodesRequest::default())
        .await
        .ok()?
        .into_inner()
        .nodes;
    Some(
        nodes
            .into_iter()
            .map(|n| (n.meta.clone().unwrap_or_default().id, n))
            .collect(),
    )
}

async fn wait_state(
    swarm: &Swarm,
    id: &str,
    want: node_status::State,
    deadline: Duration,
) -> anyhow::Result<Node> {
    wait_for(&format!("node {id} to be {want:?}"), deadline, || async {
        nodes(swarm).await?.remove(id).filter(|n| state(n) == want)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_go_down_come_back_and_survive_a_dispatcher_restart() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start_with(
        &infra,
        "",
        InitClusterRequest {
            spec: Some(ClusterSpec {
                dispatcher: Some(DispatcherConfig {
                    heartbeat_period: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await?;
    let mut dispatcher = spawn_service(&infra, "shoal-dispatcher", "")?;
    dispatcher.wait_serving(&swarm.admin, MANAGER_NAME).await?;

    let mut workers = Vec::new();
    for i in 1..=3u8 {
        let ip: IpAddr = format!("127.0.1.{i}").parse()?;
        workers.push(join_worker(&infra, &swarm, &dispatcher, ip).await?);
    }
    // init → join 3 workers: 4 nodes, all Ready and Active, one leader.
    let all = wait_for("4 ready nodes", Duration::from_secs(20), || async {
        let all = nodes(&swarm).await?;
        (all.len() == 4 && all.values().all(|n| state(n) == node_status::State::Ready))
            .then_some(all)
    })
    .await?;
    for (i, (_, id)) in workers.iter().enumerate() {
        let node = &all[id];
        assert_eq!(node.role, NodeRole::Worker as i32);
        let addr = node
            .status
            .as_ref()
            .map(|s| s.addr.clone())
            .unwrap_or_default();
        assert_eq!(
            addr,
            format!("127.0.1.{}", i + 1),
            "a node's address is its own"
        );
    }
    let leaders: Vec<_> = all
        .values()
        .filter(|n| n.manager_status.as_ref().is_some_and(|m| m.leader))
        .collect();
    assert_eq!(leaders.len(), 1);

    // kill -9 a worker: Down within 3 heartbeats (+ jitter and the status batch).
    let (victim, victim_id) = &mut workers[0];
    victim.process.kill_now();
    let down = wait_state(
        &swarm,
        victim_id,
        node_status::State::Down,
        HEARTBEAT * 3 + Duration::from_secs(4),
    )
    .await?;
    assert!(
        down.status
            .map(|s| s.message)
            .unwrap_or_default()
            .contains("heartbeat")
    );
    // Back with the same identity: Ready again, same id.
    victim.restart(&infra)?;
    victim.wait_serving(&swarm.admin, "swarm-worker").await?;
    wait_state(
        &swarm,
        victim_id,
        node_status::State::Ready,
        Duration::from_secs(10),
    )
    .await?;

    // Restart the dispatcher while the workers keep heartbeating: nobody is marked Down.
    let store = Store::connect(&[infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;
    let mut watch = store.watch_kind::<Node>(None);
    let went_down = tokio::spawn(async move {
        let mut down = Vec::new();
        while let Some(event) = watch.next().await {
            if let WatchEvent::Modified(node) = event
                && state(&node) == node_status::State::Down
            {
                down.push(node.meta.map(|m| m.id).unwrap_or_default());
            }
        }
        down
    });
    dispatcher.process.signal_term()?;
    assert!(
        dispatcher
            .process
            .wait_exit(Duration::from_secs(5))
            .await?
            .success()
    );
    dispatcher.restart(&infra)?;
    dispatcher.wait_serving(&swarm.admin, MANAGER_NAME).await?;
    for (worker, _) in &workers {
        worker.wait_serving(&swarm.admin, "swarm-worker").await?;
    }
    // Longer than the grace a restarted dispatcher gives (2 × 3 heartbeats).
    tokio::time::sleep(HEARTBEAT * 8).await;
    went_down.abort();
    let down = went_down.await.unwrap_or_default();
    assert!(
        down.is_empty(),
        "nodes marked down during a dispatcher restart: {down:?}"
    );
    let all = nodes(&swarm).await.expect("nodes");
    let states: Vec<_> = all
        .values()
        .map(|n| {
            (
                n.description.clone().unwrap_or_default().hostname,
                state(n),
                n.status.clone().unwrap_or_default().message,
            )
        })
        .collect();
    assert!(
        all.values().all(|n| state(n) == node_status::State::Ready),
        "{states:?}"
    );

    // A second manager: joins with the manager token, runs as that node, Reachable.
    let second = infra.dir.path().join("manager-2-state");
    shoal_worker::join(&swarm.manager.addr, &swarm.manager_token(), &second, None).await?;
    let m2 = start_manager(&infra, &format!("state_dir = \"{}\"\n", second.display())).await?;
    m2.wait_serving(&swarm.admin, MANAGER_NAME).await?;
    let managers = wait_for(
        "a leader and a reachable manager",
        Duration::from_secs(15),
        || async {
            let all = nodes(&swarm).await?;
            let managers: Vec<_> = all
                .values()
                .filter(|n| n.role == NodeRole::Manager as i32)
                .cloned()
                .collect();
            let reachable = managers.iter().all(|n| {
                n.manager_status
                    .as_ref()
                    .is_some_and(|m| m.reachability == Reachability::Reachable as i32)
            });
            (managers.len() == 2 && reachable).then_some(managers)
        },
    )
    .await?;
    let leader_count = managers
        .iter()
        .filter(|n| n.manager_status.as_ref().is_some_and(|m| m.leader))
        .count();
    assert_eq!(leader_count, 1);
    Ok(())
}
