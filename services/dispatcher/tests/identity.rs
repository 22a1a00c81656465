//! The dispatcher knows a node only by its certificate: anything else is refused, and a
//! refused client changes nothing in the store.

mod common;

use common::*;
use shoal_pki::{DEFAULT_CA_VALIDITY, NodeCredentials, Role, RootCa};
use shoal_proto::v1::Node;
use shoal_proto::v1::node_status::State as NodeState;
use tonic::Code;

#[tokio::test]
async fn clients_without_a_valid_node_identity_are_refused_and_nothing_is_written()
-> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let (id, creds) = swarm.join(Role::Worker).await?;
    let before: Node = swarm.store().get(&id).await?;
    let revision_before = swarm.store().revision().await?;

    // No certificate at all: the TLS handshake succeeds, the RPC does not.
    let mut anon = connect(d.addr, anonymous_tls(&creds.ca_pem)).await?;
    let err = open_session(&mut anon, "x").await.err();
    assert_eq!(
        err.as_ref().map(|e| e.code()),
        Some(Code::Unauthenticated),
        "{err:?}"
    );
    let err = heartbeat(&mut anon, "a.b").await.err();
    assert_eq!(err.map(|e| e.code()), Some(Code::Unauthenticated));

    // A certificate from another swarm's CA, for the very same node id: no handshake.
    let other_ca = RootCa::generate(DEFAULT_CA_VALIDITY)?;
    let foreign = issue(&other_ca, &id, Role::Worker, &swarm.cluster_id, &[])?;
    let foreign = NodeCredentials {
        ca_pem: creds.ca_pem.clone(),
        ..foreign
    };
    let refused = match connect_as(d.addr, &foreign).await {
        Err(_) => true,
        Ok(mut client) => open_session(&mut client, "x").await.is_err(),
    };
    assert!(refused, "a certificate of another CA opened a session");

    // Our CA, but the node does not exist (never joined, or removed).
    let ghost = swarm.credentials(&shoal_store::new_id(), Role::Worker, &swarm.cluster_id)?;
    let mut client = connect_as(d.addr, &ghost).await?;
    let err = open_session(&mut client, "x")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a node that is not in the store opened a session"))?;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("is not a member of this swarm"),
        "{}",
        err.message()
    );

    // An admin certificate is for the Control API, not for sessions.
    let admin = swarm.credentials(&id, Role::Admin, &swarm.cluster_id)?;
    let mut client = connect_as(d.addr, &admin).await?;
    let err = open_session(&mut client, "x").await.err();
    assert_eq!(err.map(|e| e.code()), Some(Code::PermissionDenied));

    // Our CA, the right node id, but another cluster id.
    let elsewhere = swarm.credentials(&id, Role::Worker, &shoal_store::new_id())?;
    let mut client = connect_as(d.addr, &elsewhere).await?;
    let err = open_session(&mut client, "x").await.err();
    assert_eq!(err.map(|e| e.code()), Some(Code::PermissionDenied));

    // Nothing was written: the node is untouched and etcd's revision did not move.
    let after: Node = swarm.store().get(&id).await?;
    assert_eq!(after, before);
    assert_eq!(swarm.store().revision().await?, revision_before);
    assert_eq!(d.dispatcher.session_counts().live, 0);
    d.stop().await
}

#[tokio::test]
async fn a_removed_node_loses_its_session_and_cannot_open_another() -> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let (id, creds) = swarm.join(Role::Worker).await?;
    let mut client = connect_as(d.addr, &creds).await?;
    let (first, mut stream) = open_session(&mut client, "w").await?;
    wait_for_state(swarm.store(), &id, NodeState::Ready, DEADLINE).await?;

    swarm.store().delete::<Node>(&id, None).await?;
    let ended = tokio::time::timeout(DEADLINE, stream.message()).await?;
    assert_eq!(ended.err().map(|s| s.code()), Some(Code::PermissionDenied));
    let err = heartbeat(&mut client, &first.session_id).await.err();
    assert_eq!(err.map(|e| e.code()), Some(Code::NotFound));
    let err = open_session(&mut client, "w")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a removed node opened a session"))?;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains(&format!("node {id} is not a member of this swarm"))
    );
    // The dispatcher did not resurrect it.
    assert!(swarm.store().try_get::<Node>(&id).await?.is_none());
    d.stop().await
}
