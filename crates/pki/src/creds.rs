//! A node's TLS credentials on disk and as tonic TLS configuration.

use std::fmt;
use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::ca::NodeKey;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::info::CertInfo;
use crate::pemutil;

/// Directory under a node's state directory holding its TLS files (Swarm's name).
pub const CERTS_DIR: &str = "certificates";
/// The node certificate file.
pub const NODE_CERT_FILE: &str = "swarm-node.crt";
/// The node private key file (mode 0600).
pub const NODE_KEY_FILE: &str = "swarm-node.key";
/// The root CA certificate file.
pub const ROOT_CA_FILE: &str = "swarm-root-ca.crt";

/// A node's certificate, private key and the root CA certificate, all PEM.
/// `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    /// The node certificate.
    pub cert_pem: String,
    /// The node's private key (PKCS#8).
    pub key_pem: String,
    /// The root CA certificate.
    pub ca_pem: String,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("cert", &self.info().ok())
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// `<dir>/certificates`.
pub fn certs_dir(dir: &Path) -> PathBuf {
    dir.join(CERTS_DIR)
}

impl NodeCredentials {
    /// Reads `<dir>/certificates/{swarm-node.crt, swarm-node.key, swarm-root-ca.crt}`
    /// and checks that they hang together: the certificate parses as a node
    /// certificate, the key is the certificate's, and the CA issued the certificate
    /// (validity periods are not checked here, so an expired certificate can still be
    /// loaded and renewed).
    pub fn load(dir: impl AsRef<Path>) -> Result<NodeCredentials> {
        let certs = certs_dir(dir.as_ref());
        let read = |name: &str| {
            let path = certs.join(name);
            fs::read_to_string(&path).map_err(Error::io(path))
        };
        let creds = NodeCredentials {
            cert_pem: read(NODE_CERT_FILE)?,
            key_pem: read(NODE_KEY_FILE)?,
            ca_pem: read(ROOT_CA_FILE)?,
        };
        creds.check()?;
        Ok(creds)
    }

    /// Checks that the key belongs to the certificate and that the CA signed it.
    pub fn check(&self) -> Result<()> {
        self.info()?;
        if !NodeKey::from_pem(&self.key_pem)?.matches_cert_pem(&self.cert_pem)? {
            return Err(Error::KeyMismatch);
        }
        let cert = pemutil::cert_der_from_pem(&self.cert_pem)?;
        let ca = pemutil::cert_der_from_pem(&self.ca_pem)?;
        let (_, ca_not_after) = crate::info::validity_of(&ca)?;
        // Check issuer and signature at a time inside both validity periods.
        let (not_before, _) = crate::info::validity_of(&cert)?;
        let at = if not_before < ca_not_after {
            not_before
        } else {
            ca_not_after
        };
        crate::info::verify_issued_by_at(&cert, &ca, at)
    }

    /// Writes the three files under `<dir>/certificates/` (created 0700 if missing),
    /// each atomically (temporary file + rename); the key file is 0600, the
    /// certificates 0644. The CA goes first, then the key, then the certificate; a
    /// crash between the last two leaves a pair that [`load`](Self::load) rejects
    /// with [`Error::KeyMismatch`], never a half-written file.
    pub fn store(&self, dir: impl AsRef<Path>) -> Result<()> {
        let certs = certs_dir(dir.as_ref());
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&certs)
            .map_err(Error::io(&certs))?;
        write_atomic(&certs.join(ROOT_CA_FILE), self.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&certs.join(NODE_KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&certs.join(NODE_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// Identity of the node certificate.
    pub fn info(&self) -> Result<CertInfo> {
        CertInfo::from_pem(&self.cert_pem)
    }

    /// DER of the root CA certificate (e.g. for [`JoinToken::matches_ca`](crate::JoinToken::matches_ca)).
    pub fn ca_der(&self) -> Result<Vec<u8>> {
        pemutil::cert_der_from_pem(&self.ca_pem)
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Server TLS for tonic: this node's identity, and client certificates REQUIRED
    /// and verified against the root CA.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    /// Client TLS for tonic: trust only the root CA, present this node's certificate,
    /// and expect the server certificate to be valid for `domain` — a DNS SAN such
    /// as `swarm-manager` (in every manager certificate) or an IP SAN such as
    /// `127.0.0.1`.
    pub fn client_tls(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(domain)
    }
}

/// The identity in the client certificate of a request received over mTLS (the
/// leaf of the peer's chain); `None` over plain TCP or if it is not a node
/// certificate. tonic fills the peer certificates in on the server side only.
pub fn peer_info<T>(req: &tonic::Request<T>) -> Option<CertInfo> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    CertInfo::from_der(leaf.as_ref()).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::{Role, RootCa};

    fn creds(ca: &RootCa, role: Role) -> NodeCredentials {
        let key = NodeKey::generate();
        let cert_pem = ca
            .issue(
                &key.csr_pem().unwrap(),
                "node1",
                role,
                "cluster1",
                Duration::from_secs(3600),
                &[],
            )
            .unwrap();
        NodeCredentials {
            cert_pem,
            key_pem: key.key_pem(),
            ca_pem: ca.cert_pem().to_string(),
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn store_and_load() {
        let ca = RootCa::generate(crate::DEFAULT_CA_VALIDITY).unwrap();
        let c = creds(&ca, Role::Worker);
        let dir = tempfile::tempdir().unwrap();
        c.store(dir.path()).unwrap();
        let certs = dir.path().join("certificates");
        assert_eq!(mode(&certs.join("swarm-node.key")), 0o600);
        assert_eq!(mode(&certs.join("swarm-node.crt")), 0o644);
        assert_eq!(mode(&certs.join("swarm-root-ca.crt")), 0o644);
        assert_eq!(mode(&certs), 0o700);
        let loaded = NodeCredentials::load(dir.path()).unwrap();
        assert_eq!(loaded, c);
        let info = loaded.info().unwrap();
        assert_eq!(info.node_id, "node1");
        assert_eq!(info.role, Role::Worker);
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
        assert_eq!(loaded.ca_der().unwrap(), ca.cert_der());

        // Renewal overwrites in place; no temporary files left behind.
        let renewed = creds(&ca, Role::Manager);
        renewed.store(dir.path()).unwrap();
        assert_eq!(NodeCredentials::load(dir.path()).unwrap(), renewed);
        assert_eq!(mode(&certs.join("swarm-node.key")), 0o600);
        let names: Vec<_> = fs::read_dir(&certs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn load_rejects_mismatched_pair_and_foreign_ca() {
        let ca = RootCa::generate(crate::DEFAULT_CA_VALIDITY).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut c = creds(&ca, Role::Worker);
        c.key_pem = NodeKey::generate().key_pem();
        c.store(dir.path()).unwrap();
        assert!(matches!(
            NodeCredentials::load(dir.path()),
            Err(Error::KeyMismatch)
        ));

        let other = RootCa::generate(crate::DEFAULT_CA_VALIDITY).unwrap();
        let mut c = creds(&ca, Role::Worker);
        c.ca_pem = other.cert_pem().to_string();
        c.store(dir.path()).unwrap();
        assert!(matches!(
            NodeCredentials::load(dir.path()),
            Err(Error::NotIssuedBy(_))
        ));

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            NodeCredentials::load(empty.path()),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn tls_configs_build() {
        let ca = RootCa::generate(crate::DEFAULT_CA_VALIDITY).unwrap();
        let c = creds(&ca, Role::Manager);
        let _ = c.server_tls();
        let _ = c.client_tls("swarm-manager");
    }
}
