//! Certificates renew on their own before they expire, without dropping the node's
//! session. The swarm is initialised with a 20 s certificate lifetime, which only a
//! manager configured with a lower `min_cert_expiry` accepts (Swarm's minimum is 1 h and
//! stays the default).

use std::time::Duration;

use shoal_pki::{CertInfo, NodeCredentials};
use shoal_proto::v1::{CaConfig, ClusterSpec, GetNodeRequest, InitClusterRequest, node_status};
use shoal_scenarios::{MANAGER_NAME, Swarm, join_worker, spawn_service};
use shoal_testkit::{Infra, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_renews_its_certificate_and_keeps_its_session() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start_with(
        &infra,
        "min_cert_expiry = \"5s\"\n",
        InitClusterRequest {
            spec: Some(ClusterSpec {
                ca_config: Some(CaConfig {
                    node_cert_expiry: Some(prost_types::Duration {
                        seconds: 20,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await?;
    let dispatcher = spawn_service(&infra, "shoal-dispatcher", "")?;
    dispatcher.wait_serving(&swarm.admin, MANAGER_NAME).await?;
    let (worker, node_id) = join_worker(&infra, &swarm, &dispatcher, "127.0.1.9".parse()?).await?;

    let first = CertInfo::from_pem(&NodeCredentials::load(&worker.state_dir)?.cert_pem)?;
    assert_eq!(first.node_id, node_id);
    let control = swarm.manager.control(&swarm.admin).await?;
    let node = || {
        let id = node_id.clone();
        let mut control = control.clone();
        async move {
            control
                .get_node(GetNodeRequest { node_id: id })
                .await
                .ok()?
                .into_inner()
                .node
        }
    };
    let session = wait_for("the node to be ready", Duration::from_secs(10), || async {
        node()
            .await
            .filter(|n| {
                n.status
                    .as_ref()
                    .is_some_and(|s| s.state == node_status::State::Ready as i32)
            })
            .map(|n| n.session_id)
    })
    .await?;

    // Renewed before the first certificate expires: a later not_after, same node.
    let renewed = wait_for("a renewed certificate", Duration::from_secs(20), || async {
        let creds = NodeCredentials::load(&worker.state_dir).ok()?;
        let info = CertInfo::from_pem(&creds.cert_pem).ok()?;
        (info.not_after > first.not_after).then_some(info)
    })
    .await?;
    assert!(
        std::time::SystemTime::now() < first.not_after,
        "renewed in time"
    );
    assert_eq!(renewed.node_id, first.node_id);
    assert_eq!(renewed.cluster_id, first.cluster_id);

    // The session the node had is the session it has: nothing was dropped.
    let now = node().await.expect("node");
    assert_eq!(now.session_id, session);
    assert_eq!(
        now.status.map(|s| s.state),
        Some(node_status::State::Ready as i32)
    );
    // And the worker serves with the new certificate.
    worker.wait_serving(&swarm.admin, "swarm-worker").await?;
    Ok(())
}
