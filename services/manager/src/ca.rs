//! The CA API: how nodes get and renew their identity.
//!
//! - `GetRootCACertificate` is open: a joining node checks the answer against the CA
//!   digest in its join token before trusting it.
//! - `IssueNodeCertificate` with a join token creates a node: the token (compared in
//!   constant time) decides the role; a wrong or rotated token creates nothing.
//! - `IssueNodeCertificate` without a token is a renewal, authenticated by the node's
//!   current certificate: same node id, the node's *current* role (so a promotion or
//!   demotion reaches the certificate at the next renewal), refused for a removed node.
//!   An admin certificate may ask for another admin certificate (a new CLI/gRPC client).

use std::str::FromStr;
use std::sync::Arc;

use shoal_grpc_host::ClusterState;
use shoal_grpc_host::identity::{CLUSTER_NAME, cert_expiry, open_ca, read_kek};
use shoal_pki::{JoinToken, Role};
use shoal_proto::v1::ca_server::Ca;
use shoal_proto::v1::{
    Annotations, Cluster, GetRootCaCertificateRequest, GetRootCaCertificateResponse,
    IssueNodeCertificateRequest, IssueNodeCertificateResponse, Meta, Node, NodeRole, NodeSpec,
    NodeStatus, node_spec, node_status,
};
use shoal_store::Object;
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status};

use crate::announce::announce;
use crate::control::store_status;

/// Swarm's refusal of a bad join token.
pub const INVALID_TOKEN: &str = "A valid join token is necessary to join this cluster";

pub struct CaService {
    state: Arc<OnceCell<ClusterState>>,
    kek_file: std::path::PathBuf,
}

impl CaService {
    pub fn new(state: Arc<OnceCell<ClusterState>>, kek_file: std::path::PathBuf) -> Self {
        Self { state, kek_file }
    }

    fn state(&self) -> Result<&ClusterState, Status> {
        self.state
            .get()
            .ok_or_else(|| Status::unavailable("the manager is not connected to etcd yet"))
    }

    async fn cluster(&self) -> Result<Cluster, Status> {
        match self
            .state()?
            .store
            .get_by_name::<Cluster>(CLUSTER_NAME)
            .await
        {
            Ok(c) => Ok(c),
            Err(e) if e.is_not_found() => Err(Status::failed_precondition(
                "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node to swarm and try again.",
            )),
            Err(e) => Err(store_status(e)),
        }
    }

    fn issue(
        &self,
        cluster: &Cluster,
        csr: &[u8],
        subject: &str,
        role: Role,
    ) -> Result<(String, String), Status> {
        let kek = read_kek(&self.kek_file).map_err(|e| Status::internal(e.to_string()))?;
        let ca = open_ca(cluster, &kek).map_err(|e| Status::internal(e.to_string()))?;
        let cluster_id = cluster.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
        let csr =
            std::str::from_utf8(csr).map_err(|_| Status::invalid_argument("csr: not PEM text"))?;
        let cert = ca
            .issue(csr, subject, role, cluster_id, cert_expiry(cluster), &[])
            .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        Ok((cert, ca.cert_pem().to_string()))
    }
}

fn node_role(role: Role) -> NodeRole {
    match role {
        Role::Manager => NodeRole::Manager,
        Role::Worker => NodeRole::Worker,
        Role::Admin => NodeRole::Admin,
    }
}

/// The role a presented token grants, if it is one of the cluster's current tokens.
pub fn role_for_token(cluster: &Cluster, presented: &str) -> Option<Role> {
    let presented = JoinToken::from_str(presented.trim()).ok()?;
    let tokens = cluster.root_ca.as_ref()?.join_tokens.as_ref()?;
    let check = |stored: &str| {
        JoinToken::from_str(stored)
            .map(|t| t.verify(&presented))
            .unwrap_or(false)
    };
    // Both comparisons always run, so timing does not tell which token was close.
    let worker = check(&tokens.worker);
    let manager = check(&tokens.manager);
    match (worker, manager) {
        (true, _) => Some(Role::Worker),
        (false, true) => Some(Role::Manager),
        _ => None,
    }
}

#[tonic::async_trait]
impl Ca for CaService {
    async fn get_root_ca_certificate(
        &self,
        _req: Request<GetRootCaCertificateRequest>,
    ) -> Result<Response<GetRootCaCertificateResponse>, Status> {
        let cluster = self.cluster().await?;
        let certificate = cluster
            .root_ca
            .map(|r| r.ca_cert)
            .ok_or_else(|| Status::failed_precondition("the swarm has no root CA"))?;
        Ok(Response::new(GetRootCaCertificateResponse { certificate }))
    }

    async fn issue_node_certificate(
        &self,
        req: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let peer = shoal_pki::peer_info(&req);
        let remote_ip = req.remote_addr().map(|a| a.ip().to_string());
        let req = req.into_inner();
        if req.csr.is_empty() {
            return Err(Status::invalid_argument(
                "csr: a certificate signing request is required",
            ));
        }
        let cluster = self.cluster().await?;
        let state = self.state()?;

        if !req.token.is_empty() {
            let role = role_for_token(&cluster, &req.token)
                .ok_or_else(|| Status::invalid_argument(INVALID_TOKEN))?;
            let node_id = shoal_store::new_id();
            let (certificate, ca_certificate) = self.issue(&cluster, &req.csr, &node_id, role)?;
            let addr = if req.addr.is_empty() {
                remote_ip.unwrap_or_default()
            } else {
                req.addr.clone()
            };
            let node = Node {
                meta: Some(Meta {
                    id: node_id.clone(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec {
                    annotations: Some(Annotations::default()),
                    desired_role: node_role(role) as i32,
                    membership: node_spec::Membership::Accepted as i32,
                    availability: node_spec::Availability::Active as i32,
                }),
                status: Some(NodeStatus {
                    state: node_status::State::Unknown as i32,
                    message: String::new(),
                    addr,
                    timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                }),
                role: node_role(role) as i32,
                ..Default::default()
            };
            let node = state.store.create(node).await.map_err(store_status)?;
            announce(&state.bus, "create", &node, "").await;
            tracing::info!(node = %node_id, %role, "node joined");
            return Ok(Response::new(IssueNodeCertificateResponse {
                node_id,
                node_membership: node_spec::Membership::Accepted as i32,
                certificate: certificate.into_bytes(),
                ca_certificate: ca_certificate.into_bytes(),
            }));
        }

        // Renewal, authenticated by the current certificate.
        let peer = peer.ok_or_else(|| {
            Status::unauthenticated("a join token or a valid node certificate is required")
        })?;
        let cluster_id = cluster.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
        if peer.cluster_id != cluster_id {
            return Err(Status::permission_denied("certificate of another swarm"));
        }
        if peer.role == Role::Admin {
            if req.role != NodeRole::Admin as i32 {
                return Err(Status::permission_denied(
                    "an admin certificate can only ask for another admin certificate",
                ));
            }
            let subject = format!("admin-{}", &shoal_store::new_id()[..10]);
            let (certificate, ca_certificate) =
                self.issue(&cluster, &req.csr, &subject, Role::Admin)?;
            return Ok(Response::new(IssueNodeCertificateResponse {
                node_id: subject,
                node_membership: node_spec::Membership::Accepted as i32,
                certificate: certificate.into_bytes(),
                ca_certificate: ca_certificate.into_bytes(),
            }));
        }
        let node = state
            .store
            .try_get::<Node>(&peer.node_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "node {} is not a member of this swarm",
                    peer.node_id
                ))
            })?;
        let role = if node.role == NodeRole::Manager as i32 {
            Role::Manager
        } else {
            Role::Worker
        };
        let (certificate, ca_certificate) = self.issue(&cluster, &req.csr, node.id(), role)?;
        tracing::info!(node = %node.id(), %role, "node certificate renewed");
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id: node.id().to_string(),
            node_membership: node_spec::Membership::Accepted as i32,
            certificate: certificate.into_bytes(),
            ca_certificate: ca_certificate.into_bytes(),
        }))
    }
}
