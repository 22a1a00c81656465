//! Automatic certificate renewal.
//!
//! At a random point between 50 % and 80 % of the certificate's lifetime (Swarm's
//! rule, [`shoal_pki::renewal_wait`]) the worker asks a manager's CA for a new
//! certificate: a CSR for a fresh key, no token, over mutual TLS with the current
//! certificate (which is how the CA knows the node). The new credentials are stored
//! atomically, served by the listener from its next handshake, and presented on new
//! dispatcher connections; the running session and the node's tasks are not touched.
//! Failures are retried with backoff until the certificate expires (after which only
//! a new join helps, and the log says so).

pub use shoal_pki::{MIN_RENEWAL_WAIT, renewal_wait};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use shoal_grpc_host::ShutdownToken;
use shoal_pki::{CertInfo, NodeCredentials, NodeKey, Role, verify_issued_by};
use shoal_proto::v1::ca_client::CaClient;
use shoal_proto::v1::{IssueNodeCertificateRequest, NodeRole};
use shoal_telemetry::TraceInterceptor;

use crate::backoff::Backoff;
use crate::identity::{Identity, OnDisk};
use crate::join::error_chain;
use crate::tls::connect_mtls;

/// How long one renewal call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("no manager address is known to renew the certificate with (set manager_addrs)")]
    NoManager,
    #[error("cannot reach the manager at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the manager at {addr} refused the renewal ({code:?}): {message}")]
    Refused {
        addr: String,
        code: tonic::Code,
        message: String,
    },
    #[error("the manager at {addr} sent an unusable certificate: {reason}")]
    BadCertificate { addr: String, reason: String },
    #[error("cannot store the renewed certificate: {0}")]
    Store(String),
    #[error("the node left the swarm during the renewal")]
    Left,
}

/// Asks the CA at `addr` to renew `creds` (mutual TLS with them, no token) and checks
/// the answer: issued by the CA for the new key, valid now, the same node of the same
/// cluster. Writes nothing.
pub async fn renew_once(
    addr: &str,
    creds: &NodeCredentials,
    advertise_addr: &str,
) -> Result<NodeCredentials, RenewError> {
    let current = creds.info().map_err(|e| RenewError::Store(e.to_string()))?;
    let key = NodeKey::generate();
    let csr = key
        .csr_pem()
        .map_err(|e| RenewError::Store(format!("cannot build a certificate request: {e}")))?;
    let channel = connect_mtls(addr, creds, advertise_addr.parse().ok())
        .await
        .map_err(|e| RenewError::Unreachable {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })?;
    let mut ca = CaClient::with_interceptor(channel, TraceInterceptor);
    let request = IssueNodeCertificateRequest {
        csr: csr.into_bytes(),
        token: String::new(),
        addr: advertise_addr.to_string(),
        role: node_role(current.role) as i32,
    };
    let response = tokio::time::timeout(CALL_TIMEOUT, ca.issue_node_certificate(request))
        .await
        .map_err(|_| RenewError::Unreachable {
            addr: addr.to_string(),
            reason: format!("no answer within {CALL_TIMEOUT:?}"),
        })?
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RenewError::Unreachable {
                    addr: addr.to_string(),
                    reason: status.message().to_string(),
                }
            }
            code => RenewError::Refused {
                addr: addr.to_string(),
                code,
                message: status.message().to_string(),
            },
        })?
        .into_inner();

    let bad = |reason: String| RenewError::BadCertificate {
        addr: addr.to_string(),
        reason,
    };
    // The manager was verified against our CA; a CA it sends along is how a node
    // learns of a root rotation.
    let ca_pem = if response.ca_certificate.is_empty() {
        creds.ca_pem.clone()
    } else {
        String::from_utf8(response.ca_certificate).map_err(|e| bad(e.to_string()))?
    };
    let renewed = NodeCredentials {
        cert_pem: String::from_utf8(response.certificate).map_err(|e| bad(e.to_string()))?,
        key_pem: key.key_pem(),
        ca_pem,
    };
    renewed.check().map_err(|e| bad(e.to_string()))?;
    let cert_der = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let ca_der = renewed.ca_der().map_err(|e| bad(e.to_string()))?;
    verify_issued_by(cert_der.as_ref(), &ca_der).map_err(|e| bad(e.to_string()))?;
    let info = renewed.info().map_err(|e| bad(e.to_string()))?;
    if info.node_id != current.node_id || info.cluster_id != current.cluster_id {
        return Err(bad(format!(
            "it is for node {} of cluster {}, not node {} of cluster {}",
            info.node_id, info.cluster_id, current.node_id, current.cluster_id
        )));
    }
    if info.role == Role::Admin {
        return Err(bad("it is an admin certificate".into()));
    }
    Ok(renewed)
}

fn node_role(role: Role) -> NodeRole {
    match role {
        Role::Worker => NodeRole::Worker,
        Role::Manager => NodeRole::Manager,
        Role::Admin => NodeRole::Admin,
    }
}

/// Renews the node's certificate for as long as the node keeps its identity.
#[derive(Debug)]
pub struct Renewer {
    identity: Arc<Identity>,
    manager_addrs: Vec<String>,
    advertise_addr: String,
    next_manager: usize,
}

impl Renewer {
    /// Renews `identity` with the CA of `manager_addrs` (tried in turn).
    pub fn new(
        identity: Arc<Identity>,
        manager_addrs: Vec<String>,
        advertise_addr: String,
    ) -> Self {
        Self {
            identity,
            manager_addrs,
            advertise_addr,
            next_manager: 0,
        }
    }

    /// Runs until `stop` fires or the node leaves the swarm.
    pub async fn run(mut self, stop: ShutdownToken) {
        if self.manager_addrs.is_empty() {
            tracing::error!("{}", RenewError::NoManager);
            return;
        }
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let info = self.identity.info();
            let wait = renewal_wait(&info, SystemTime::now());
            tracing::info!(
                node = %info.node_id,
                not_after = %humantime::format_rfc3339_seconds(info.not_after),
                renew_in = ?wait,
                "certificate renewal scheduled"
            );
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            loop {
                let attempt = tokio::select! {
                    _ = stop.cancelled() => return,
                    attempt = self.attempt() => attempt,
                };
                match attempt {
                    Ok(new) => {
                        backoff.reset();
                        tracing::info!(
                            node = %new.node_id,
                            role = %new.role,
                            not_after = %humantime::format_rfc3339_seconds(new.not_after),
                            "node certificate renewed"
                        );
                        if new.not_after <= info.not_after {
                            tracing::warn!(
                                "the renewed certificate does not last longer than the old one"
                            );
                        }
                        break;
                    }
                    Err(RenewError::Left) => {
                        tracing::info!("node identity gone: certificate renewal stops");
                        return;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        if SystemTime::now() >= info.not_after {
                            tracing::error!(
                                error = %e,
                                retry_in = ?delay,
                                "certificate renewal failed and the certificate has EXPIRED: the node cannot reach the control plane until it renews (or leaves and joins again)"
                            );
                        } else {
                            tracing::warn!(error = %e, retry_in = ?delay, "certificate renewal failed");
                        }
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }

    /// One renewal: the next manager in turn, then store and switch.
    async fn attempt(&mut self) -> Result<CertInfo, RenewError> {
        let addr = self.manager_addrs[self.next_manager % self.manager_addrs.len()].clone();
        let creds = self.identity.creds();
        let renewed = match renew_once(&addr, &creds, &self.advertise_addr).await {
            Ok(renewed) => renewed,
            Err(e) => {
                self.next_manager = self.next_manager.wrapping_add(1);
                return Err(e);
            }
        };
        // `shoal swarm leave` may have run meanwhile: never bring a deleted identity back.
        if matches!(self.identity.check_disk(), OnDisk::Gone | OnDisk::Replaced) {
            return Err(RenewError::Left);
        }
        renewed
            .store(self.identity.state_dir())
            .map_err(|e| RenewError::Store(e.to_string()))?;
        let info = renewed
            .info()
            .map_err(|e| RenewError::Store(e.to_string()))?;
        self.identity
            .update(renewed)
            .map_err(|e| RenewError::Store(e.to_string()))?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_pki::CLOCK_SKEW_BACKDATE;

    fn info(not_before: SystemTime, life: Duration) -> CertInfo {
        CertInfo {
            node_id: "n".into(),
            role: Role::Worker,
            cluster_id: "c".into(),
            not_before,
            not_after: not_before + life,
            serial_hex: "01".into(),
        }
    }

    #[test]
    fn short_backdated_certs_renew_inside_their_real_lifetime() {
        // Issued now for 20 s, back-dated by the CA's clock-skew margin.
        let now = SystemTime::now();
        let i = info(
            now - CLOCK_SKEW_BACKDATE,
            CLOCK_SKEW_BACKDATE + Duration::from_secs(20),
        );
        for _ in 0..200 {
            let w = renewal_wait(&i, now);
            assert!(
                w >= Duration::from_secs(10) && w <= Duration::from_secs(16),
                "{w:?}"
            );
        }
    }

    #[test]
    fn long_certs_follow_swarms_window() {
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        let i = info(now - CLOCK_SKEW_BACKDATE, CLOCK_SKEW_BACKDATE + 90 * day);
        for _ in 0..200 {
            let w = renewal_wait(&i, now);
            assert!(w >= 44 * day && w <= 73 * day, "{w:?}");
        }
        // Loaded 60 days in: somewhere before the 80 % point.
        let later = now + 60 * day;
        for _ in 0..200 {
            assert!(renewal_wait(&i, later) <= 13 * day);
        }
    }

    #[test]
    fn overdue_or_expired_renews_at_the_floor() {
        let now = SystemTime::now();
        let i = info(now - Duration::from_secs(3600), Duration::from_secs(600));
        assert_eq!(renewal_wait(&i, now), MIN_RENEWAL_WAIT);
        // Not back-dated and fresh: counted from now.
        let i = info(now, Duration::from_secs(100));
        let w = renewal_wait(&i, now);
        assert!(
            w >= Duration::from_secs(50) && w <= Duration::from_secs(80),
            "{w:?}"
        );
    }
}
