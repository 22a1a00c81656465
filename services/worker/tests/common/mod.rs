//! Test doubles of the control plane's CA and Dispatcher services, served in-process
//! over the same TLS the real services use (grpc-host's `tls::server_config` and
//! `tls::incoming`, a server certificate of role manager with the SAN `swarm-manager`
//! and 127.0.0.1, issued by a test root CA).
//!
//! What they are for, and what not: they exercise the WORKER's side of the protocol
//! (pinning the CA, refusing, storing, renewing over mTLS, session and heartbeats,
//! leave). Their own rules (the token check, which node id a renewal gets, when a
//! session is valid) are a few lines written for these tests; they stand in for the
//! manager's CA and the dispatcher, and prove nothing about those. The scenarios in
//! the workspace's `tests/` run the worker against the real processes.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_grpc_host::ShutdownToken;
use shoal_grpc_host::tls::{ServerCertResolver, incoming, server_config};
use shoal_pki::{JoinToken, NodeCredentials, NodeKey, Role, RootCa, San, peer_info};
use shoal_proto::v1::ca_server::{Ca, CaServer};
use shoal_proto::v1::dispatcher_server::{Dispatcher, DispatcherServer};
use shoal_proto::v1::node_spec::Membership;
use shoal_proto::v1::{
    GetRootCaCertificateRequest, GetRootCaCertificateResponse, HeartbeatRequest, HeartbeatResponse,
    IssueNodeCertificateRequest, IssueNodeCertificateResponse, NodeDescription, SessionMessage,
    SessionRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The manager's refusal of a bad token (Swarm's words).
pub const BAD_TOKEN: &str = "A valid join token is necessary to join this cluster";

pub const CLUSTER_ID: &str = "testcluster0000000000000a";

/// A test root CA and the server certificate of "managers" it issued.
pub struct Pki {
    pub ca: Arc<RootCa>,
    pub server: NodeCredentials,
}

impl Pki {
    pub fn new() -> Self {
        let ca = RootCa::generate(shoal_pki::DEFAULT_CA_VALIDITY).unwrap();
        let key = NodeKey::generate();
        let cert_pem = ca
            .issue(
                &key.csr_pem().unwrap(),
                "manager-node-1",
                Role::Manager,
                CLUSTER_ID,
                Duration::from_secs(3600),
                &[San::Ip([127, 0, 0, 1].into())],
            )
            .unwrap();
        let server = NodeCredentials {
            cert_pem,
            key_pem: key.key_pem(),
            ca_pem: ca.cert_pem().to_string(),
        };
        Self {
            ca: Arc::new(ca),
            server,
        }
    }

    /// Serves `routes` over TLS on a free loopback port until the token is cancelled.
    async fn serve(&self, routes: tonic::service::Routes) -> (SocketAddr, ShutdownToken) {
        let resolver = Arc::new(ServerCertResolver::new(&self.server).unwrap());
        let tls = shoal_grpc_host::tls::SwappableConfig::new(
            server_config(resolver, &self.server.ca_pem).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = ShutdownToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming(listener, tls), token.cancelled_owned())
                .await;
        });
        (addr, stop)
    }
}

// ---------------------------------------------------------------- CA double

#[derive(Default)]
pub struct CaCounters {
    pub root_ca_calls: AtomicUsize,
    pub issue_calls: AtomicUsize,
    pub joins: AtomicUsize,
    pub renewals: AtomicUsize,
}

struct CaDouble {
    ca: Arc<RootCa>,
    worker_token: JoinToken,
    manager_token: JoinToken,
    validity: Duration,
    counters: Arc<CaCounters>,
}

#[tonic::async_trait]
impl Ca for CaDouble {
    async fn get_root_ca_certificate(
        &self,
        _request: Request<GetRootCaCertificateRequest>,
    ) -> Result<Response<GetRootCaCertificateResponse>, Status> {
        self.counters.root_ca_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(GetRootCaCertificateResponse {
            certificate: self.ca.cert_pem().as_bytes().to_vec(),
        }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        self.counters.issue_calls.fetch_add(1, Ordering::SeqCst);
        let peer = peer_info(&request);
        let req = request.into_inner();
        let csr = String::from_utf8(req.csr)
            .map_err(|_| Status::invalid_argument("the CSR is not PEM"))?;
        let (node_id, role) = if req.token.is_empty() {
            // Renewal: the client certificate says who the node is.
            let peer = peer
                .ok_or_else(|| Status::unauthenticated("a renewal needs the node's certificate"))?;
            self.counters.renewals.fetch_add(1, Ordering::SeqCst);
            (peer.node_id, peer.role)
        } else {
            let presented: JoinToken = req
                .token
                .parse()
                .map_err(|_| Status::invalid_argument(BAD_TOKEN))?;
            let role = if self.worker_token.verify(&presented) {
                Role::Worker
            } else if self.manager_token.verify(&presented) {
                Role::Manager
            } else {
                return Err(Status::invalid_argument(BAD_TOKEN));
            };
            self.counters.joins.fetch_add(1, Ordering::SeqCst);
            (shoal_store::new_id(), role)
        };
        let certificate = self
            .ca
            .issue(&csr, &node_id, role, CLUSTER_ID, self.validity, &[])
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id,
            node_membership: Membership::Accepted as i32,
            certificate: certificate.into_bytes(),
            ca_certificate: self.ca.cert_pem().as_bytes().to_vec(),
        }))
    }
}

/// The CA double on a free loopback port.
pub struct TestCa {
    pub pki: Pki,
    pub addr: SocketAddr,
    pub worker_token: JoinToken,
    pub manager_token: JoinToken,
    pub counters: Arc<CaCounters>,
    stop: ShutdownToken,
}

impl TestCa {
    /// Issues node certificates valid for `validity` (from now; back-dated like the
    /// real CA's).
    pub async fn start(validity: Duration) -> Self {
        let pki = Pki::new();
        let worker_token = JoinToken::generate(pki.ca.digest());
        let manager_token = JoinToken::generate(pki.ca.digest());
        let counters = Arc::new(CaCounters::default());
        let double = CaDouble {
            ca: pki.ca.clone(),
            worker_token: worker_token.clone(),
            manager_token: manager_token.clone(),
            validity,
            counters: counters.clone(),
        };
        let routes = tonic::service::Routes::new(CaServer::new(double));
        let (addr, stop) = pki.serve(routes).await;
        Self {
            pki,
            addr,
            worker_token,
            manager_token,
            counters,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ------------------------------------------------------- Dispatcher double

/// A session the dispatcher double has seen.
#[derive(Debug, Clone)]
pub struct SeenSession {
    pub id: String,
    pub node_id: String,
    pub description: Option<NodeDescription>,
    pub heartbeats: usize,
    pub closed: bool,
}

#[derive(Default)]
pub struct DispatcherState {
    pub sessions: Mutex<Vec<SeenSession>>,
}

impl DispatcherState {
    pub fn sessions(&self) -> Vec<SeenSession> {
        self.sessions.lock().unwrap().clone()
    }
}

struct DispatcherDouble {
    state: Arc<DispatcherState>,
    period: Duration,
    root_ca: Vec<u8>,
    ids: Mutex<HashMap<String, String>>,
}

type SessionStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<SessionMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Dispatcher for DispatcherDouble {
    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<SessionStream>, Status> {
        let peer = peer_info(&request)
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        let req = request.into_inner();
        let id = shoal_store::new_id();
        self.ids
            .lock()
            .unwrap()
            .insert(id.clone(), peer.node_id.clone());
        let index = {
            let mut sessions = self.state.sessions.lock().unwrap();
            sessions.push(SeenSession {
                id: id.clone(),
                node_id: peer.node_id.clone(),
                description: req.description,
                heartbeats: 0,
                closed: false,
            });
            sessions.len() - 1
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(SessionMessage {
            session_id: id,
            node: None,
            managers: vec![],
            root_ca: self.root_ca.clone(),
        }))
        .await
        .map_err(|_| Status::internal("session closed"))?;
        let state = self.state.clone();
        tokio::spawn(async move {
            // Resolves when the worker drops its end of the stream.
            tx.closed().await;
            state.sessions.lock().unwrap()[index].closed = true;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let peer = peer_info(&request)
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        let id = request.into_inner().session_id;
        if self.ids.lock().unwrap().get(&id) != Some(&peer.node_id) {
            return Err(Status::not_found("no such session"));
        }
        let mut sessions = self.state.sessions.lock().unwrap();
        if let Some(s) = sessions.iter_mut().find(|s| s.id == id) {
            s.heartbeats += 1;
        }
        Ok(Response::new(HeartbeatResponse {
            period: prost_types::Duration::try_from(self.period).ok(),
        }))
    }
}

/// The dispatcher double on a free loopback port, trusting `pki`'s CA.
pub struct TestDispatcher {
    pub addr: SocketAddr,
    pub state: Arc<DispatcherState>,
    stop: ShutdownToken,
}

impl TestDispatcher {
    pub async fn start(pki: &Pki, period: Duration) -> Self {
        let state = Arc::new(DispatcherState::default());
        let double = DispatcherDouble {
            state: state.clone(),
            period,
            root_ca: pki.ca.cert_pem().as_bytes().to_vec(),
            ids: Mutex::new(HashMap::new()),
        };
        let routes = tonic::service::Routes::new(DispatcherServer::new(double));
        let (addr, stop) = pki.serve(routes).await;
        Self { addr, state, stop }
    }
}

impl Drop for TestDispatcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// File mode bits of `path`.
pub fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, recursively (empty if `dir` does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}
