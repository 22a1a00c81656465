//! The node identity, worker side: `join` against an in-process CA double, and
//! automatic renewal against the same double.
//!
//! What this proves: the worker pins the root CA by the token's digest before it
//! sends the secret, refuses a CA that does not match and a manager's refusal with
//! clear messages, writes nothing unless the join succeeded, stores the identity with
//! the right permissions, and renews over mTLS before expiry. What it does not: the
//! CA double's token check and issuance are test code (see `common`); the manager's
//! real CA is covered by the scenarios in the workspace's `tests/`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::{BAD_TOKEN, CLUSTER_ID, Pki, TestCa, files_under, mode};
use shoal_grpc_host::ShutdownToken;
use shoal_grpc_host::tls::ServerCertResolver;
use shoal_pki::{CertInfo, JoinToken, NodeCredentials, Role};
use shoal_worker::identity::Identity;
use shoal_worker::renew::Renewer;
use shoal_worker::tls::ClientVerifier;
use shoal_worker::{JoinError, join};

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn good_token_stores_the_identity() {
    let ca = TestCa::start(LONG).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node");
    let out = join(
        &ca.addr(),
        &ca.worker_token.to_string(),
        &state,
        Some("127.0.0.9"),
    )
    .await
    .unwrap();
    assert_eq!(out.role, Role::Worker);
    assert_eq!(out.node_id.len(), 25);

    let creds = NodeCredentials::load(&state).unwrap();
    let info = creds.info().unwrap();
    assert_eq!(info.node_id, out.node_id, "CN = node id");
    assert_eq!(info.role, Role::Worker);
    assert_eq!(info.cluster_id, CLUSTER_ID);
    assert_eq!(creds.ca_der().unwrap(), ca.pki.ca.cert_der());
    let certs = state.join("certificates");
    assert_eq!(mode(&certs.join("swarm-node.key")), 0o600);
    assert_eq!(mode(&certs), 0o700);
    assert_eq!(mode(&state), 0o700);
    // The manager it joined through is recorded for renewals.
    assert_eq!(
        shoal_worker::identity::recorded_managers(&state),
        vec![ca.addr()]
    );
    assert_eq!(ca.counters.joins.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn manager_token_makes_a_manager() {
    let ca = TestCa::start(LONG).await;
    let dir = tempfile::tempdir().unwrap();
    let out = join(&ca.addr(), &ca.manager_token.to_string(), dir.path(), None)
        .await
        .unwrap();
    assert_eq!(out.role, Role::Manager);
    let info = NodeCredentials::load(dir.path()).unwrap().info().unwrap();
    assert_eq!(info.role, Role::Manager);
}

#[tokio::test]
async fn token_for_another_ca_is_refused_before_the_secret_is_sent() {
    let ca = TestCa::start(LONG).await;
    let other = Pki::new();
    // The right secret, pinned to another CA: what a token for another swarm, or a
    // man in the middle presenting its own CA, looks like.
    let token = JoinToken {
        ca_digest: other.ca.digest(),
        secret: ca.worker_token.secret.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node");
    let err = join(&ca.addr(), &token.to_string(), &state, None)
        .await
        .unwrap_err();
    assert!(matches!(err, JoinError::CaMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the root CA of {} does not match the join token; refusing to trust it",
            ca.addr()
        )
    );
    assert!(!state.exists(), "nothing written");
    assert_eq!(ca.counters.root_ca_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        ca.counters.issue_calls.load(Ordering::SeqCst),
        0,
        "the token never reached the untrusted server"
    );
}

#[tokio::test]
async fn wrong_secret_is_refused_with_the_managers_message() {
    let ca = TestCa::start(LONG).await;
    // Right CA digest, wrong secret: a mistyped or rotated token.
    let token = JoinToken::generate(ca.pki.ca.digest());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node");
    let err = join(&ca.addr(), &token.to_string(), &state, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            JoinError::Refused {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), BAD_TOKEN);
    assert!(files_under(&state).is_empty(), "nothing written");
    assert_eq!(ca.counters.joins.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn already_joined_is_refused() {
    let ca = TestCa::start(LONG).await;
    let dir = tempfile::tempdir().unwrap();
    join(&ca.addr(), &ca.worker_token.to_string(), dir.path(), None)
        .await
        .unwrap();
    let before = NodeCredentials::load(dir.path()).unwrap();
    let err = join(&ca.addr(), &ca.worker_token.to_string(), dir.path(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, JoinError::AlreadyJoined), "{err:?}");
    assert_eq!(
        err.to_string(),
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one."
    );
    assert_eq!(NodeCredentials::load(dir.path()).unwrap(), before);
    assert_eq!(ca.counters.joins.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_token_and_unreachable_manager() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node");
    let err = join("127.0.0.1:1", "SWMTKN-1-abc-def", &state, None)
        .await
        .unwrap_err();
    assert!(matches!(err, JoinError::InvalidToken(_)), "{err:?}");
    assert!(err.to_string().starts_with("invalid join token"), "{err}");

    let token = JoinToken::generate("0".repeat(50)).to_string();
    let port = shoal_testkit::free_port([127, 0, 0, 1].into()).unwrap();
    let err = join(&format!("127.0.0.1:{port}"), &token, &state, None)
        .await
        .unwrap_err();
    assert!(matches!(err, JoinError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cannot reach the manager"),
        "{err}"
    );
    assert!(!state.exists());
}

#[tokio::test]
async fn certificate_renews_before_expiry() {
    // 20 s certificates: renewal is due between 10 s and 16 s after issuance.
    let ca = TestCa::start(Duration::from_secs(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let joined = join(&ca.addr(), &ca.worker_token.to_string(), dir.path(), None)
        .await
        .unwrap();
    let creds = NodeCredentials::load(dir.path()).unwrap();
    let first = creds.info().unwrap();

    let resolver = Arc::new(ServerCertResolver::new(&creds).unwrap());
    let verifier = Arc::new(ClientVerifier::new(&creds.ca_pem).unwrap());
    let identity = Arc::new(Identity::new(dir.path(), creds.clone(), resolver, verifier).unwrap());
    let stop = ShutdownToken::new();
    let renewer = Renewer::new(identity.clone(), vec![ca.addr()], String::new());
    let task = tokio::spawn(renewer.run(stop.clone()));

    let stored = |dir: &std::path::Path| -> Option<CertInfo> {
        NodeCredentials::load(dir).ok()?.info().ok()
    };
    let deadline = first
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let renewed = shoal_testkit::wait_for("a renewed certificate", deadline, || async {
        stored(dir.path()).filter(|i| i.not_after > first.not_after)
    })
    .await
    .unwrap();
    assert!(SystemTime::now() < first.not_after, "renewed before expiry");
    assert_eq!(renewed.node_id, joined.node_id, "same node");
    assert_eq!(renewed.role, Role::Worker);
    assert_ne!(renewed.serial_hex, first.serial_hex);
    // The identity in use switched too (new connections present the new cert), and
    // the renewal went through mTLS as this node, without a token.
    assert_eq!(identity.info().serial_hex, renewed.serial_hex);
    assert!(ca.counters.renewals.load(Ordering::SeqCst) >= 1);
    assert_eq!(ca.counters.joins.load(Ordering::SeqCst), 1);
    let certs = dir.path().join("certificates");
    assert_eq!(mode(&certs.join("swarm-node.key")), 0o600);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn renewal_stops_when_the_node_leaves() {
    let ca = TestCa::start(Duration::from_secs(4)).await;
    let dir = tempfile::tempdir().unwrap();
    join(&ca.addr(), &ca.worker_token.to_string(), dir.path(), None)
        .await
        .unwrap();
    let creds = NodeCredentials::load(dir.path()).unwrap();
    let resolver = Arc::new(ServerCertResolver::new(&creds).unwrap());
    let verifier = Arc::new(ClientVerifier::new(&creds.ca_pem).unwrap());
    let identity = Arc::new(Identity::new(dir.path(), creds, resolver, verifier).unwrap());
    // `shoal swarm leave` deletes the identity before the renewal is due.
    std::fs::remove_dir_all(dir.path().join("certificates")).unwrap();
    let renewer = Renewer::new(identity, vec![ca.addr()], String::new());
    tokio::time::timeout(Duration::from_secs(10), renewer.run(ShutdownToken::new()))
        .await
        .expect("the renewer stops by itself");
    assert!(
        !dir.path().join("certificates/swarm-node.crt").exists(),
        "a left identity is never brought back"
    );
}
