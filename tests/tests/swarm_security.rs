//! Swarm's security model against a real manager: who may call the Control API, who may
//! join, what a rotated token, a second init, and `node rm` refuse.

use shoal_pki::{NodeCredentials, NodeKey, Role, RootCa};
use shoal_proto::v1::ca_client::CaClient;
use shoal_proto::v1::update_cluster_request::Rotation;
use shoal_proto::v1::{
    GetClusterRequest, InitClusterRequest, IssueNodeCertificateRequest, ListNodesRequest, NodeRole,
    NodeSpec, RemoveNodeRequest, UpdateClusterRequest, UpdateNodeRequest, node_spec,
};
use shoal_scenarios::{MANAGER_NAME, Swarm, init_swarm, issue_node_identity, tls_channel};
use shoal_testkit::Infra;
use tonic::Code;

async fn node_count(swarm: &Swarm) -> anyhow::Result<usize> {
    Ok(swarm
        .manager
        .control(&swarm.admin)
        .await?
        .list_nodes(ListNodesRequest::default())
        .await?
        .into_inner()
        .nodes
        .len())
}

/// Credentials signed by a CA that is not the swarm's.
fn foreign_credentials(swarm_ca_pem: &str) -> anyhow::Result<NodeCredentials> {
    let other = RootCa::generate(std::time::Duration::from_secs(3600))?;
    let key = NodeKey::generate();
    let cert = other.issue(
        &key.csr_pem()?,
        "intruder",
        Role::Admin,
        "other",
        std::time::Duration::from_secs(600),
        &[],
    )?;
    Ok(NodeCredentials {
        cert_pem: cert,
        key_pem: key.key_pem(),
        // Trusts the swarm's CA for the server, presents a foreign client certificate.
        ca_pem: swarm_ca_pem.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_reach_the_control_api() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;

    // No client certificate.
    let anonymous = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&swarm.admin.ca_pem))
        .domain_name(MANAGER_NAME);
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://{}", swarm.manager.addr))?
            .tls_config(anonymous)?
            .connect()
            .await?;
    let err = shoal_proto::v1::control_client::ControlClient::new(channel)
        .list_nodes(ListNodesRequest::default())
        .await
        .expect_err("no certificate");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A certificate of another CA never gets through the handshake.
    let foreign = foreign_credentials(&swarm.admin.ca_pem)?;
    let refused = match tls_channel(&swarm.manager.addr, &foreign, MANAGER_NAME).await {
        Err(_) => true,
        Ok(channel) => shoal_proto::v1::control_client::ControlClient::new(channel)
            .list_nodes(ListNodesRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a foreign certificate must be refused");

    // A worker's certificate is a node identity, not an admin one.
    let worker_dir = infra.dir.path().join("w1");
    issue_node_identity(
        &swarm.manager,
        &swarm.admin,
        &swarm.worker_token(),
        &worker_dir,
    )
    .await?;
    let worker = NodeCredentials::load(&worker_dir)?;
    let err = swarm
        .manager
        .control(&worker)
        .await?
        .list_nodes(ListNodesRequest::default())
        .await
        .expect_err("worker certificate");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The admin gets through.
    assert_eq!(node_count(&swarm).await?, 2, "the manager and the worker");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rotated_and_foreign_tokens_create_nothing() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let dir = infra.dir.path();
    let before = node_count(&swarm).await?;

    // The right digest with a wrong secret.
    let good = swarm.worker_token();
    let wrong = format!("{}{}", &good[..good.len() - 5], "00000");
    let err = issue_node_identity(&swarm.manager, &swarm.admin, &wrong, &dir.join("a"))
        .await
        .expect_err("wrong secret");
    assert!(
        err.to_string()
            .contains("A valid join token is necessary to join this cluster"),
        "{err:#}"
    );

    // Another CA's digest.
    let other = RootCa::generate(std::time::Duration::from_secs(3600))?;
    let foreign = shoal_pki::JoinToken::generate(other.digest()).to_string();
    issue_node_identity(&swarm.manager, &swarm.admin, &foreign, &dir.join("b"))
        .await
        .expect_err("foreign digest");

    // Rotation: the old token stops working at once, the new one works.
    let mut control = swarm.manager.control(&swarm.admin).await?;
    let cluster = control
        .get_cluster(GetClusterRequest {
            cluster_id: "default".into(),
        })
        .await?
        .into_inner()
        .cluster
        .expect("cluster");
    let rotated = control
        .update_cluster(UpdateClusterRequest {
            cluster_id: "default".into(),
            cluster_version: cluster.meta.and_then(|m| m.version),
            spec: None,
            rotation: Some(Rotation {
                worker_join_token: true,
                manager_join_token: false,
            }),
        })
        .await?
        .into_inner()
        .cluster
        .expect("cluster");
    let new_token = rotated
        .root_ca
        .and_then(|r| r.join_tokens)
        .expect("tokens")
        .worker;
    assert_ne!(new_token, good);
    issue_node_identity(&swarm.manager, &swarm.admin, &good, &dir.join("c"))
        .await
        .expect_err("rotated token");
    assert_eq!(node_count(&swarm).await?, before, "nothing was created");
    issue_node_identity(&swarm.manager, &swarm.admin, &new_token, &dir.join("d")).await?;
    assert_eq!(node_count(&swarm).await?, before + 1);

    // The manager token makes a manager.
    let id = issue_node_identity(
        &swarm.manager,
        &swarm.admin,
        &swarm.manager_token(),
        &dir.join("e"),
    )
    .await?;
    let creds = NodeCredentials::load(dir.join("e"))?;
    assert_eq!(creds.info()?.role, Role::Manager);
    assert_eq!(creds.info()?.node_id, id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_init_and_node_removal_follow_swarm() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;

    let err = init_swarm(&swarm.manager, InitClusterRequest::default())
        .await
        .expect_err("second init");
    assert!(
        err.to_string()
            .contains("This node is already part of a swarm"),
        "{err:#}"
    );

    let mut control = swarm.manager.control(&swarm.admin).await?;
    let manager_id = swarm.init.node_id.clone();
    let err = control
        .remove_node(RemoveNodeRequest {
            node_id: manager_id.clone(),
            force: false,
        })
        .await
        .expect_err("manager");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        format!(
            "node {manager_id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
        )
    );

    // The last manager cannot be demoted.
    let manager = control
        .get_node(shoal_proto::v1::GetNodeRequest {
            node_id: manager_id.clone(),
        })
        .await?
        .into_inner()
        .node
        .expect("node");
    let mut spec: NodeSpec = manager.spec.clone().expect("spec");
    spec.desired_role = NodeRole::Worker as i32;
    let err = control
        .update_node(UpdateNodeRequest {
            node_id: manager_id.clone(),
            node_version: manager.meta.and_then(|m| m.version),
            spec: Some(spec),
        })
        .await
        .expect_err("last manager");
    assert!(err.message().contains("last manager"), "{err:?}");

    // A worker that is not down needs --force; once removed its certificate is refused.
    let dir = infra.dir.path().join("w");
    let worker_id =
        issue_node_identity(&swarm.manager, &swarm.admin, &swarm.worker_token(), &dir).await?;
    // Availability round trip: drain, pause, active — each stored, labels kept.
    for availability in [
        node_spec::Availability::Drain,
        node_spec::Availability::Pause,
        node_spec::Availability::Active,
    ] {
        let node = control
            .get_node(shoal_proto::v1::GetNodeRequest {
                node_id: worker_id.clone(),
            })
            .await?
            .into_inner()
            .node
            .expect("node");
        let mut spec = node.spec.clone().expect("spec");
        spec.availability = availability as i32;
        spec.annotations
            .get_or_insert_with(Default::default)
            .labels
            .insert("zone".into(), "east".into());
        let updated = control
            .update_node(UpdateNodeRequest {
                node_id: worker_id.clone(),
                node_version: node.meta.and_then(|m| m.version),
                spec: Some(spec),
            })
            .await?
            .into_inner()
            .node
            .expect("node");
        let spec = updated.spec.expect("spec");
        assert_eq!(spec.availability, availability as i32);
        assert_eq!(
            spec.annotations.expect("annotations").labels["zone"],
            "east"
        );
    }

    let err = control
        .remove_node(RemoveNodeRequest {
            node_id: worker_id.clone(),
            force: false,
        })
        .await
        .expect_err("not down");
    assert_eq!(
        err.message(),
        format!("node {worker_id} is not down and can't be removed")
    );
    control
        .remove_node(RemoveNodeRequest {
            node_id: worker_id.clone(),
            force: true,
        })
        .await?;
    let creds = NodeCredentials::load(&dir)?;
    let renewal = CaClient::new(tls_channel(&swarm.manager.addr, &creds, MANAGER_NAME).await?)
        .issue_node_certificate(IssueNodeCertificateRequest {
            csr: NodeKey::generate().csr_pem()?.into_bytes(),
            ..Default::default()
        })
        .await
        .expect_err("removed node");
    assert_eq!(renewal.code(), Code::PermissionDenied, "{renewal:?}");
    Ok(())
}
