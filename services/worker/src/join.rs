//! `shoal swarm join`: how a node gets its identity.
//!
//! 1. Parse the token `SWMTKN-1-<CA digest>-<secret>`.
//! 2. Fetch the root CA from the manager over TLS without trusting it yet, and pin it:
//!    its SHA-256 digest must be the token's. A mismatch refuses the join before the
//!    secret ever leaves the node.
//! 3. Reconnect verifying the manager against the pinned CA, send a CSR for a fresh
//!    key with the token, and check the certificate that comes back (issued by the
//!    pinned CA, for our key).
//! 4. Store key, certificate and CA in the state dir (key 0600). Nothing is written
//!    unless every step succeeded.

use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use shoal_pki::{JoinToken, NodeCredentials, NodeKey, Role};
use shoal_proto::v1::ca_client::CaClient;
use shoal_proto::v1::{
    GetRootCaCertificateRequest, IssueNodeCertificateRequest, IssueNodeCertificateResponse,
    NodeRole,
};
use shoal_telemetry::TraceInterceptor;
use tonic::Code;

use crate::identity::{has_identity, record_managers};
use crate::tls::{ConnectError, connect_unverified, connect_with_ca};

/// The manager port when the join address has none (Swarm's).
pub const DEFAULT_MANAGER_PORT: u16 = 2377;

/// How long one call to the manager may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Who the node is after a successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The node id the manager assigned (the certificate's CN).
    pub node_id: String,
    /// The role the token gave (the certificate's OU).
    pub role: Role,
}

/// Why a join was refused or failed. Every case leaves the state dir untouched.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one."
    )]
    AlreadyJoined,
    /// pki's message already starts with "invalid join token".
    #[error("{0}")]
    InvalidToken(shoal_pki::Error),
    #[error("\"{0}\" is not a valid manager address (HOST:PORT)")]
    InvalidAddress(String),
    #[error("cannot reach the manager at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the root CA of {addr} does not match the join token; refusing to trust it")]
    CaMismatch { addr: String },
    /// The manager refused the join (a wrong or rotated token, a removed node, ...);
    /// the manager's own message.
    #[error("{message}")]
    Refused { code: Code, message: String },
    #[error("the manager at {addr} does not serve the CA API")]
    NoCa { addr: String },
    #[error("the manager at {addr} failed the join ({code:?}): {message}")]
    Rpc {
        addr: String,
        code: Code,
        message: String,
    },
    #[error("the manager at {addr} sent an unusable {what}: {reason}")]
    BadResponse {
        addr: String,
        what: &'static str,
        reason: String,
    },
    #[error("cannot write the node identity into {dir}: {reason}")]
    Store { dir: String, reason: String },
}

/// Joins the swarm the manager at `addr` belongs to with `token`, storing the node's
/// new identity in `state_dir`. `advertise_addr` is the address the node advertises
/// (`None`: the manager uses the address the request comes from).
pub async fn join(
    addr: &str,
    token: &str,
    state_dir: &Path,
    advertise_addr: Option<&str>,
) -> Result<JoinOutcome, JoinError> {
    let token: JoinToken = token.parse().map_err(JoinError::InvalidToken)?;
    if has_identity(state_dir) {
        return Err(JoinError::AlreadyJoined);
    }
    let addr = normalize_addr(addr)?;

    // 1. The root CA, pinned by the token before anything else is said.
    let (ca_pem, ca_der) = fetch_pinned_ca(&addr, &token).await?;

    // 2. The node certificate, over a connection verified against the pinned CA.
    let key = NodeKey::generate();
    let csr = key.csr_pem().map_err(|e| JoinError::Store {
        dir: state_dir.display().to_string(),
        reason: format!("cannot build a certificate request: {e}"),
    })?;
    let channel = connect_with_ca(&addr, &ca_pem)
        .await
        .map_err(|e| unreachable(&addr, &e))?;
    let mut ca = CaClient::with_interceptor(channel, TraceInterceptor);
    let request = IssueNodeCertificateRequest {
        csr: csr.into_bytes(),
        token: token.to_string(),
        addr: advertise_addr.unwrap_or_default().to_string(),
        role: NodeRole::Worker as i32,
    };
    let response = tokio::time::timeout(CALL_TIMEOUT, ca.issue_node_certificate(request))
        .await
        .map_err(|_| JoinError::Unreachable {
            addr: addr.clone(),
            reason: format!("no answer within {CALL_TIMEOUT:?}"),
        })?
        .map_err(|status| rpc_error(&addr, status))?
        .into_inner();
    let creds = check_issued(&addr, response, &key, &ca_pem, &ca_der)?;
    let info = creds.info().map_err(|e| bad(&addr, "certificate", e))?;

    // 3. Store, unless another join got there first.
    if has_identity(state_dir) {
        return Err(JoinError::AlreadyJoined);
    }
    store(state_dir, &creds, &addr)?;
    tracing::info!(node = %info.node_id, role = %info.role, manager = %addr, "joined the swarm");
    Ok(JoinOutcome {
        node_id: info.node_id,
        role: info.role,
    })
}

/// `HOST:PORT`, adding Swarm's manager port when there is none.
fn normalize_addr(addr: &str) -> Result<String, JoinError> {
    let addr = addr.trim();
    if addr.is_empty() || addr.contains('/') || addr.chars().any(char::is_whitespace) {
        return Err(JoinError::InvalidAddress(addr.to_string()));
    }
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(addr.to_string());
    }
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, DEFAULT_MANAGER_PORT).to_string());
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            port.parse::<u16>()
                .map_err(|_| JoinError::InvalidAddress(addr.to_string()))?;
            Ok(addr.to_string())
        }
        Some(_) => Err(JoinError::InvalidAddress(addr.to_string())),
        None => Ok(format!("{addr}:{DEFAULT_MANAGER_PORT}")),
    }
}

/// Fetches the root CA over an unverified connection and checks it against the
/// token. Returns the CA as PEM and DER.
async fn fetch_pinned_ca(addr: &str, token: &JoinToken) -> Result<(String, Vec<u8>), JoinError> {
    let channel = connect_unverified(addr)
        .await
        .map_err(|e| unreachable(addr, &e))?;
    let mut ca = CaClient::with_interceptor(channel, TraceInterceptor);
    let pem = tokio::time::timeout(
        CALL_TIMEOUT,
        ca.get_root_ca_certificate(GetRootCaCertificateRequest {}),
    )
    .await
    .map_err(|_| JoinError::Unreachable {
        addr: addr.to_string(),
        reason: format!("no answer within {CALL_TIMEOUT:?}"),
    })?
    .map_err(|status| rpc_error(addr, status))?
    .into_inner()
    .certificate;
    // Exactly one certificate: the one the digest pins, nothing riding along.
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(addr, "root CA certificate", e))?;
    let [der] = certs.as_slice() else {
        return Err(JoinError::CaMismatch {
            addr: addr.to_string(),
        });
    };
    if !token.matches_ca(der.as_ref()) {
        return Err(JoinError::CaMismatch {
            addr: addr.to_string(),
        });
    }
    let pem = String::from_utf8(pem).map_err(|e| bad(addr, "root CA certificate", e))?;
    Ok((pem, der.as_ref().to_vec()))
}

/// Checks the issued certificate: for our key, issued by the pinned CA, valid now,
/// a node role, and the node id the response names.
fn check_issued(
    addr: &str,
    response: IssueNodeCertificateResponse,
    key: &NodeKey,
    ca_pem: &str,
    ca_der: &[u8],
) -> Result<NodeCredentials, JoinError> {
    if !response.ca_certificate.is_empty() {
        let returned: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&response.ca_certificate)
                .collect::<Result<_, _>>()
                .map_err(|e| bad(addr, "root CA certificate", e))?;
        if returned.first().map(|c| c.as_ref()) != Some(ca_der) {
            return Err(bad(
                addr,
                "root CA certificate",
                "it is not the CA the join token pins",
            ));
        }
    }
    let cert_pem =
        String::from_utf8(response.certificate).map_err(|e| bad(addr, "node certificate", e))?;
    let creds = NodeCredentials {
        cert_pem,
        key_pem: key.key_pem(),
        ca_pem: ca_pem.to_string(),
    };
    creds
        .check()
        .map_err(|e| bad(addr, "node certificate", e))?;
    let cert_der = CertificateDer::from_pem_slice(creds.cert_pem.as_bytes())
        .map_err(|e| bad(addr, "node certificate", e))?;
    shoal_pki::verify_issued_by(cert_der.as_ref(), ca_der)
        .map_err(|e| bad(addr, "node certificate", e))?;
    let info = creds.info().map_err(|e| bad(addr, "node certificate", e))?;
    if info.role == Role::Admin {
        return Err(bad(addr, "node certificate", "it is an admin certificate"));
    }
    if !response.node_id.is_empty() && response.node_id != info.node_id {
        return Err(bad(
            addr,
            "node certificate",
            format!(
                "it is for node {} but the answer names node {}",
                info.node_id, response.node_id
            ),
        ));
    }
    Ok(creds)
}

fn store(state_dir: &Path, creds: &NodeCredentials, addr: &str) -> Result<(), JoinError> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |reason: String| JoinError::Store {
        dir: state_dir.display().to_string(),
        reason,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| fail(e.to_string()))?;
    record_managers(state_dir, &[addr.to_string()]).map_err(|e| fail(e.to_string()))?;
    if let Err(e) = creds.store(state_dir) {
        // Leave no half identity behind.
        let certs = shoal_pki::certs_dir(state_dir);
        for file in [
            shoal_pki::NODE_CERT_FILE,
            shoal_pki::NODE_KEY_FILE,
            shoal_pki::ROOT_CA_FILE,
        ] {
            let _ = std::fs::remove_file(certs.join(file));
        }
        let _ = std::fs::remove_file(state_dir.join(crate::identity::MANAGERS_FILE));
        return Err(fail(e.to_string()));
    }
    Ok(())
}

fn bad(addr: &str, what: &'static str, reason: impl std::fmt::Display) -> JoinError {
    JoinError::BadResponse {
        addr: addr.to_string(),
        what,
        reason: reason.to_string(),
    }
}

fn unreachable(addr: &str, e: &ConnectError) -> JoinError {
    JoinError::Unreachable {
        addr: addr.to_string(),
        reason: error_chain(e),
    }
}

fn rpc_error(addr: &str, status: tonic::Status) -> JoinError {
    let message = if status.message().is_empty() {
        status.code().description().to_string()
    } else {
        status.message().to_string()
    };
    match status.code() {
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::NotFound => JoinError::Refused {
            code: status.code(),
            message,
        },
        Code::Unimplemented => JoinError::NoCa {
            addr: addr.to_string(),
        },
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => JoinError::Unreachable {
            addr: addr.to_string(),
            reason: message,
        },
        code => JoinError::Rpc {
            addr: addr.to_string(),
            code,
            message,
        },
    }
}

/// An error with its causes, `a: b: c` (tonic's transport errors say little alone).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_manager_port() {
        let ok = |a: &str| normalize_addr(a).ok();
        assert_eq!(ok("10.0.0.1"), Some("10.0.0.1:2377".into()));
        assert_eq!(ok("10.0.0.1:4000"), Some("10.0.0.1:4000".into()));
        assert_eq!(ok("manager1"), Some("manager1:2377".into()));
        assert_eq!(ok("manager1:2377"), Some("manager1:2377".into()));
        assert_eq!(ok("::1"), Some("[::1]:2377".into()));
        assert_eq!(ok("[::1]:2377"), Some("[::1]:2377".into()));
        assert!(ok("").is_none());
        assert!(ok("a b").is_none());
        assert!(ok("host:port").is_none());
        assert!(ok("http://x:1").is_none());
    }

    #[test]
    fn grpc_refusals_keep_the_managers_words() {
        let e = rpc_error(
            "m:2377",
            tonic::Status::invalid_argument("A valid join token is necessary to join this cluster"),
        );
        assert!(matches!(
            e,
            JoinError::Refused {
                code: Code::InvalidArgument,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "A valid join token is necessary to join this cluster"
        );
        let e = rpc_error("m:2377", tonic::Status::unavailable("connection refused"));
        assert!(e.to_string().contains("cannot reach the manager at m:2377"));
        let e = rpc_error("m:2377", tonic::Status::unimplemented(""));
        assert!(e.to_string().contains("does not serve the CA API"));
    }
}
