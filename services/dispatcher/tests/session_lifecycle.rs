//! A node's life as one dispatcher sees it: registration, heartbeats, missed
//! heartbeats, a dropped stream, and the re-registration limit.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use shoal_events::EventFilter;
use shoal_pki::Role;
use shoal_proto::v1::Node;
use shoal_proto::v1::node_status::State as NodeState;
use shoal_store::Object;
use tonic::Code;

#[tokio::test]
async fn a_session_registers_the_node_and_heartbeats_return_the_period() -> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let (id, creds) = swarm.join(Role::Worker).await?;
    let mut events = swarm
        .state
        .bus
        .subscribe(&EventFilter::kind("node").with_action("update"))
        .await?;

    let mut client = connect_as(d.addr, &creds).await?;
    let (first, _stream) = open_session(&mut client, "worker-1").await?;
    assert!(!first.session_id.is_empty());
    assert!(first.session_id.starts_with(d.dispatcher.instance_id()));
    let node = first.node.clone().unwrap_or_default();
    assert_eq!(node.id(), id);
    assert_eq!(first.managers.len(), 1);
    assert_eq!(first.managers[0].addr, d.addr.to_string());
    assert_eq!(first.managers[0].weight, 1);
    assert_eq!(first.root_ca, swarm.ca.cert_pem().as_bytes());

    let stored: Node = swarm.store().get(&id).await?;
    let status = stored.status.clone().unwrap_or_default();
    assert_eq!(status.state(), NodeState::Ready);
    assert_eq!(status.message, "");
    assert_eq!(status.addr, "127.0.0.1");
    assert!(status.timestamp.is_some());
    assert_eq!(stored.session_id, first.session_id);
    let desc = stored.description.clone().unwrap_or_default();
    assert_eq!(desc.hostname, "worker-1");
    assert_eq!(desc.platform.unwrap_or_default().os, "linux");
    assert_eq!(
        stored.version(),
        node.version(),
        "the first message carries the node as written"
    );

    // The write was announced.
    let ev = tokio::time::timeout(DEADLINE, events.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
    assert_eq!(ev.event.id, id);
    assert_eq!(
        ev.event.attributes.get("state").map(String::as_str),
        Some("ready")
    );

    assert_eq!(heartbeat(&mut client, &first.session_id).await?, PERIOD);
    let err = heartbeat(&mut client, "someone-else.123")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a foreign session id was accepted"))?;
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("session invalid"), "{err:?}");
    assert_eq!(d.dispatcher.session_counts().live, 1);
    d.stop().await
}

#[tokio::test]
async fn missing_heartbeats_mark_the_node_down_and_a_new_session_brings_it_back()
-> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let (id, creds) = swarm.join(Role::Worker).await?;
    let mut client = connect_as(d.addr, &creds).await?;
    let (first, mut stream) = open_session(&mut client, "worker-1").await?;
    heartbeat(&mut client, &first.session_id).await?;
    let silent_since = Instant::now();

    // The stream stays open; only the heartbeats stop.
    let down = wait_for_state(swarm.store(), &id, NodeState::Down, DEADLINE).await?;
    let took = silent_since.elapsed();
    assert!(
        took >= 3 * PERIOD - Duration::from_millis(100),
        "marked down after {took:?}, before 3 × {PERIOD:?}"
    );
    assert!(took < 3 * PERIOD + Duration::from_secs(3), "took {took:?}");
    let status = down.status.unwrap_or_default();
    assert_eq!(status.message, "heartbeat failure");
    assert_eq!(down.session_id, first.session_id);

    // The dispatcher closed the session; its id is dead.
    let ended = tokio::time::timeout(DEADLINE, stream.message()).await?;
    assert_eq!(ended.err().map(|s| s.code()), Some(Code::NotFound));
    let err = heartbeat(&mut client, &first.session_id).await.err();
    assert_eq!(err.map(|s| s.code()), Some(Code::NotFound));

    // The node comes back: READY again, same id, new session.
    let (second, _stream) = open_session(&mut client, "worker-1").await?;
    assert_ne!(second.session_id, first.session_id);
    let back: Node = swarm.store().get(&id).await?;
    assert_eq!(state_of(&back), NodeState::Ready);
    assert_eq!(back.id(), id);
    assert_eq!(back.status.unwrap_or_default().message, "");
    assert_eq!(heartbeat(&mut client, &second.session_id).await?, PERIOD);
    d.stop().await
}

#[tokio::test]
async fn a_dropped_stream_disconnects_the_node_then_downs_it() -> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let log = StatusLog::start(swarm.store()).await?;
    let d = swarm.start_dispatcher().await?;
    let (id, creds) = swarm.join(Role::Worker).await?;
    let mut client = connect_as(d.addr, &creds).await?;
    let (first, stream) = open_session(&mut client, "worker-1").await?;
    drop(stream);

    let disconnected =
        wait_for_state(swarm.store(), &id, NodeState::Disconnected, DEADLINE).await?;
    assert_eq!(
        disconnected.status.unwrap_or_default().message,
        shoal_dispatcher::writer::DISCONNECTED_MESSAGE
    );
    // The session is over: its heartbeats are refused.
    let err = heartbeat(&mut client, &first.session_id).await.err();
    assert_eq!(err.map(|s| s.code()), Some(Code::NotFound));

    let down = wait_for_state(swarm.store(), &id, NodeState::Down, DEADLINE).await?;
    assert_eq!(down.status.unwrap_or_default().message, "heartbeat failure");
    let states = log.states_of(&id);
    let pos = |s| states.iter().position(|x| *x == s);
    assert!(
        pos(NodeState::Ready) < pos(NodeState::Disconnected)
            && pos(NodeState::Disconnected) < pos(NodeState::Down),
        "{states:?}"
    );

    // A node that reconnects within the grace never goes down.
    let (second, stream) = open_session(&mut client, "worker-1").await?;
    drop(stream);
    wait_for_state(swarm.store(), &id, NodeState::Disconnected, DEADLINE).await?;
    let (third, _stream) = open_session(&mut client, "worker-1").await?;
    assert_ne!(second.session_id, third.session_id);
    let since = log.all().len();
    // Keep it alive past the grace the dropped session had.
    let until = Instant::now() + 3 * PERIOD + Duration::from_millis(500);
    while Instant::now() < until {
        heartbeat(&mut client, &third.session_id).await?;
        tokio::time::sleep(PERIOD / 2).await;
    }
    let later: Vec<_> = log.all().into_iter().skip(since).collect();
    assert!(
        later.iter().all(|s| s.state != NodeState::Down),
        "went down although it came back: {later:?}"
    );
    assert_eq!(
        state_of(&swarm.store().get::<Node>(&id).await?),
        NodeState::Ready
    );
    d.stop().await
}

#[tokio::test]
async fn re_registration_is_rate_limited() -> anyhow::Result<()> {
    let swarm = Swarm::start(PERIOD).await?;
    let d = swarm.start_dispatcher().await?;
    let (id, creds) = swarm.join(Role::Worker).await?;
    let (other, other_creds) = swarm.join(Role::Worker).await?;
    let mut client = connect_as(d.addr, &creds).await?;

    let (_, mut s1) = open_session(&mut client, "w").await?;
    let (_, _s2) = open_session(&mut client, "w").await?;
    // The replaced session is closed.
    let ended = tokio::time::timeout(DEADLINE, s1.message()).await?;
    assert_eq!(ended.err().map(|s| s.code()), Some(Code::Aborted));
    let (_, _s3) = open_session(&mut client, "w").await?;
    let err = open_session(&mut client, "w")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a 4th session within 8 s was accepted"))?;
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message()
            .starts_with(&format!("node {id} re-registered too often; try again in ")),
        "{}",
        err.message()
    );
    // Other nodes are not affected.
    let mut other_client = connect_as(d.addr, &other_creds).await?;
    let (first, _s) = open_session(&mut other_client, "o").await?;
    assert_eq!(first.node.map(|n| n.id().to_string()), Some(other));
    d.stop().await
}
