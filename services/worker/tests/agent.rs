//! The worker process's life, worker side: `run` against in-process doubles of the CA
//! and a dispatcher (see `common` for what the doubles are and are not).
//!
//! What this proves: the worker picks up an identity written by `join`, fails over
//! past a dead dispatcher, opens a session over mTLS as its node, describes itself,
//! heartbeats at the dispatcher's period, is SERVING exactly while attached, renews
//! its certificate without reopening the session, ends the session and goes back to
//! waiting when the identity is deleted (leave), attaches again after a new join, and
//! ends cleanly and quickly on shutdown. The dispatcher's own rules (node status, the
//! 3 × period deadline) are not exercised here.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestCa, TestDispatcher};
use shoal_pki::NodeCredentials;
use shoal_proto::v1::executor_description::Kind;
use shoal_testkit::wait_for;
use shoal_worker::WorkerConfig;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn node_description_is_sane() {
    let d = shoal_node_description::node_description("node-a", None).await;
    assert_eq!(d.hostname, "node-a");
    let platform = d.platform.unwrap();
    assert_eq!(platform.os, std::env::consts::OS);
    assert_eq!(platform.architecture, std::env::consts::ARCH);
    let resources = d.resources.unwrap();
    assert!(resources.nano_cpus >= 1_000_000_000, "{resources:?}");
    assert_eq!(resources.nano_cpus % 1_000_000_000, 0);
    assert!(resources.memory_bytes > 64 * 1024 * 1024, "{resources:?}");
    // The process executor is always there; Docker only when an engine answers, and
    // then its version is the engine version.
    let kinds: Vec<_> = d.executors.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&(Kind::Process as i32)), "{kinds:?}");
    let engine = d.engine.unwrap().engine_version;
    match d.executors.iter().find(|e| e.kind == Kind::Docker as i32) {
        Some(docker) => {
            assert!(!engine.is_empty());
            assert_eq!(docker.version, engine);
        }
        None => assert!(engine.is_empty()),
    }
    assert!(d.tls_info.is_none());
}

/// The worker's health as a client sees it over TLS (no client certificate).
async fn health(addr: SocketAddr, ca_pem: &str) -> Option<i32> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("swarm-worker");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .ok()?
        .tls_config(tls)
        .ok()?
        .connect()
        .await
        .ok()?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(reply.into_inner().status)
}

#[tokio::test]
async fn worker_attaches_heartbeats_renews_leaves_and_rejoins() {
    let ca = TestCa::start(Duration::from_secs(12)).await;
    let dispatcher = TestDispatcher::start(&ca.pki, Duration::from_millis(300)).await;
    let dead = shoal_testkit::free_port([127, 0, 0, 1].into()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("worker");

    let cfg = WorkerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        dispatcher_addrs: vec![format!("127.0.0.1:{dead}"), dispatcher.addr.to_string()],
        state_dir: state.clone(),
        hostname: "worker-1".into(),
        ..WorkerConfig::default()
    };
    let host = shoal_grpc_host::Host::new("shoal-worker", cfg.listen)
        .bind()
        .await
        .unwrap();
    let worker_addr = host.local_addr();
    let shutdown = host.shutdown_token();
    let worker = tokio::spawn(shoal_worker::run(cfg, host));

    // Started before the join: it waits for an identity.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(dispatcher.state.sessions().is_empty());
    assert!(!worker.is_finished());

    let joined = shoal_worker::join(&ca.addr(), &ca.worker_token.to_string(), &state, None)
        .await
        .unwrap();
    let ca_pem = ca.pki.ca.cert_pem().to_string();

    // Attached: one session as this node, heartbeats at 300 ms, SERVING.
    let session = wait_for(
        "a session with heartbeats",
        Duration::from_secs(15),
        || async {
            dispatcher
                .state
                .sessions()
                .into_iter()
                .find(|s| s.node_id == joined.node_id && s.heartbeats >= 3)
        },
    )
    .await
    .unwrap();
    let description = session.description.clone().unwrap();
    assert_eq!(description.hostname, "worker-1");
    assert!(description.resources.unwrap().memory_bytes > 0);
    assert_eq!(
        description.tls_info.unwrap().trust_root,
        ca_pem.as_bytes().to_vec()
    );
    wait_for("SERVING", Duration::from_secs(5), || async {
        (health(worker_addr, &ca_pem).await == Some(ServingStatus::Serving as i32)).then_some(())
    })
    .await
    .unwrap();

    // Renewal (12 s certificates: due 6 to 9.6 s after issuance) keeps the session.
    let first = NodeCredentials::load(&state).unwrap().info().unwrap();
    wait_for("a renewed certificate", Duration::from_secs(12), || async {
        NodeCredentials::load(&state)
            .ok()
            .and_then(|c| c.info().ok())
            .filter(|i| i.not_after > first.not_after)
    })
    .await
    .unwrap();
    let sessions = dispatcher.state.sessions();
    assert_eq!(
        sessions.len(),
        1,
        "renewal does not reopen the session: {sessions:?}"
    );
    assert!(!sessions[0].closed);
    let beats = sessions[0].heartbeats;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        dispatcher.state.sessions()[0].heartbeats > beats,
        "still heartbeating after the renewal"
    );

    // Leave: the identity disappears, the session ends, health drops.
    std::fs::remove_dir_all(state.join("certificates")).unwrap();
    wait_for("the session to close", Duration::from_secs(5), || async {
        dispatcher.state.sessions()[0].closed.then_some(())
    })
    .await
    .unwrap();
    wait_for("NOT_SERVING", Duration::from_secs(5), || async {
        (health(worker_addr, &ca_pem).await == Some(ServingStatus::NotServing as i32)).then_some(())
    })
    .await
    .unwrap();
    assert!(!worker.is_finished());

    // Join again: a new node identity, a new session.
    let rejoined = shoal_worker::join(&ca.addr(), &ca.worker_token.to_string(), &state, None)
        .await
        .unwrap();
    assert_ne!(rejoined.node_id, joined.node_id);
    wait_for(
        "a session as the new node",
        Duration::from_secs(15),
        || async {
            dispatcher
                .state
                .sessions()
                .into_iter()
                .find(|s| s.node_id == rejoined.node_id && s.heartbeats >= 1)
        },
    )
    .await
    .unwrap();
    wait_for("SERVING again", Duration::from_secs(5), || async {
        (health(worker_addr, &ca_pem).await == Some(ServingStatus::Serving as i32)).then_some(())
    })
    .await
    .unwrap();

    // Shutdown: the session closes and run returns Ok well within 5 s.
    let started = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("run returns within 5 s")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_for(
        "the last session to close",
        Duration::from_secs(3),
        || async {
            dispatcher
                .state
                .sessions()
                .iter()
                .all(|s| s.closed)
                .then_some(())
        },
    )
    .await
    .unwrap();
}
