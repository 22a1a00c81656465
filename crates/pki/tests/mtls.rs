//! Real mTLS over tonic with credentials from shoal-pki: a grpc.health.v1 server with
//! a manager certificate, clients with and without valid client certificates.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_pki::{CertInfo, NodeCredentials, NodeKey, Role, RootCa, San, peer_info};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

const HOUR: Duration = Duration::from_secs(3600);

fn credentials(ca: &RootCa, node_id: &str, role: Role, sans: &[San]) -> NodeCredentials {
    let key = NodeKey::generate();
    let cert_pem = ca
        .issue(
            &key.csr_pem().unwrap(),
            node_id,
            role,
            "cluster-x",
            HOUR,
            sans,
        )
        .unwrap();
    NodeCredentials {
        cert_pem,
        key_pem: key.key_pem(),
        ca_pem: ca.cert_pem().to_string(),
    }
}

type Seen = Arc<Mutex<Vec<Option<CertInfo>>>>;

/// Starts the health service behind mTLS; every request's peer identity is recorded.
async fn start_server(creds: &NodeCredentials) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let health = HealthServer::with_interceptor(
        HealthService::from_health_reporter(HealthReporter::new()),
        move |req: tonic::Request<()>| {
            record.lock().unwrap().push(peer_info(&req));
            Ok(req)
        },
    );
    let router = Server::builder()
        .tls_config(creds.server_tls())
        .unwrap()
        .add_service(health);
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, seen)
}

/// Connects and calls Check once; any failure (handshake or RPC) is an Err string.
async fn check(addr: SocketAddr, tls: ClientTlsConfig) -> Result<i32, String> {
    let attempt = async {
        let channel = Channel::from_shared(format!("https://{addr}"))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|e| format!("rpc: {e:?}"))?;
        Ok(resp.into_inner().status)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test]
async fn mtls_with_swarm_certificates() {
    let ca = RootCa::generate(shoal_pki::DEFAULT_CA_VALIDITY).unwrap();
    let manager = credentials(
        &ca,
        "manager1",
        Role::Manager,
        &[San::Ip("127.0.0.1".parse().unwrap())],
    );
    let worker = credentials(&ca, "worker7", Role::Worker, &[]);
    let (addr, seen) = start_server(&manager).await;

    // A worker with a certificate from the same CA, checking the server by IP SAN.
    let status = check(addr, worker.client_tls("127.0.0.1")).await.unwrap();
    assert_eq!(status, 1, "SERVING");
    {
        let seen = seen.lock().unwrap();
        let info = seen
            .last()
            .unwrap()
            .as_ref()
            .expect("server saw a peer cert");
        assert_eq!(info.node_id, "worker7");
        assert_eq!(info.role, Role::Worker);
        assert_eq!(info.cluster_id, "cluster-x");
        assert_eq!(info, &worker.info().unwrap());
    }

    // Checking the server by the role DNS SAN every manager certificate carries.
    check(addr, worker.client_tls("swarm-manager"))
        .await
        .unwrap();

    // A name the server certificate does not carry is refused by the client.
    let err = check(addr, worker.client_tls("swarm-worker"))
        .await
        .unwrap_err();
    assert!(!err.contains("timed out"), "{err}");
    eprintln!("refused as expected: {err}");

    let calls_before = seen.lock().unwrap().len();

    // No client certificate: the server refuses.
    let no_cert = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .domain_name("127.0.0.1");
    let err = check(addr, no_cert).await.unwrap_err();
    assert!(!err.contains("timed out"), "{err}");
    eprintln!("refused as expected: {err}");

    // A client certificate from another CA: the server refuses.
    let other_ca = RootCa::generate(shoal_pki::DEFAULT_CA_VALIDITY).unwrap();
    let stranger = credentials(&other_ca, "worker7", Role::Worker, &[]);
    let foreign = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .identity(Identity::from_pem(&stranger.cert_pem, &stranger.key_pem))
        .domain_name("127.0.0.1");
    let err = check(addr, foreign).await.unwrap_err();
    assert!(!err.contains("timed out"), "{err}");
    eprintln!("refused as expected: {err}");

    // A client that trusts another CA refuses the server.
    let err = check(addr, stranger.client_tls("127.0.0.1"))
        .await
        .unwrap_err();
    assert!(!err.contains("timed out"), "{err}");
    eprintln!("refused as expected: {err}");

    // None of the refused clients reached the service.
    assert_eq!(seen.lock().unwrap().len(), calls_before);

    // Credentials reloaded from disk work the same.
    let dir = tempfile::tempdir().unwrap();
    worker.store(dir.path()).unwrap();
    let reloaded = NodeCredentials::load(dir.path()).unwrap();
    check(addr, reloaded.client_tls("127.0.0.1")).await.unwrap();
}
