//! Seed 000: `docker swarm leave --force` on the only manager dissolves the swarm, and
//! `docker swarm init` then creates a new one. Every control-plane process follows the
//! swarm to its new CA without a restart.

use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{InitClusterRequest, LeaveSwarmRequest, ListNodesRequest};
use shoal_scenarios::{MANAGER_NAME, Swarm, init_swarm, spawn_service, unix_channel};
use shoal_testkit::Infra;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_manager_leaving_dissolves_the_swarm_and_init_starts_anew() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let dispatcher = spawn_service(&infra, "shoal-dispatcher", "")?;
    dispatcher.wait_serving(&swarm.admin, MANAGER_NAME).await?;
    let first_cluster = swarm
        .init
        .cluster
        .clone()
        .and_then(|c| c.meta)
        .map(|m| m.id);

    let mut local = ControlClient::new(unix_channel(&swarm.manager.socket()).await?);
    // Without --force: Swarm's warning, nothing changes.
    let err = local
        .leave_swarm(LeaveSwarmRequest { force: false })
        .await
        .expect_err("no force");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("Removing the last manager erases all current state")
    );
    // Not over TCP, even for an admin: leaving is the host's own business.
    let err = swarm
        .manager
        .control(&swarm.admin)
        .await?
        .leave_swarm(LeaveSwarmRequest { force: true })
        .await
        .expect_err("over TCP");
    assert_eq!(err.code(), Code::PermissionDenied);

    local.leave_swarm(LeaveSwarmRequest { force: true }).await?;
    let nodes = local
        .list_nodes(ListNodesRequest::default())
        .await?
        .into_inner()
        .nodes;
    assert!(nodes.is_empty(), "all swarm state is erased: {nodes:?}");

    // A new swarm, a new CA: the running manager and dispatcher serve with it.
    let (init, admin) = init_swarm(&swarm.manager, InitClusterRequest::default()).await?;
    let second_cluster = init.cluster.and_then(|c| c.meta).map(|m| m.id);
    assert_ne!(first_cluster, second_cluster);
    assert_ne!(admin.ca_pem, swarm.admin.ca_pem);
    swarm.manager.wait_serving(&admin, MANAGER_NAME).await?;
    dispatcher.wait_serving(&admin, MANAGER_NAME).await?;
    let nodes = swarm
        .manager
        .control(&admin)
        .await?
        .list_nodes(ListNodesRequest::default())
        .await?
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1, "the new swarm has its manager node");
    assert_eq!(
        nodes[0].meta.as_ref().map(|m| m.id.clone()),
        Some(init.node_id)
    );
    Ok(())
}
