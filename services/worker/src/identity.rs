//! The node's identity while the worker runs: the credentials in the state dir, the
//! copy the worker uses for new connections and serves on its listener, and how the
//! worker notices that `shoal swarm leave` (or a new join) changed them on disk.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_grpc_host::ShutdownToken;
use shoal_grpc_host::tls::{ServerCertResolver, TlsError};
use shoal_pki::{CertInfo, NODE_CERT_FILE, NODE_KEY_FILE, NodeCredentials, certs_dir};

use crate::tls::ClientVerifier;

/// How often a worker without an identity looks for one in its state dir.
pub const IDENTITY_POLL: Duration = Duration::from_millis(500);

/// The file under the state dir where `join` records the manager address it joined
/// through, one `HOST:PORT` a line: where the worker renews its certificate.
pub const MANAGERS_FILE: &str = "managers";

/// Whether the state dir holds (part of) a node identity: a node key or certificate.
pub fn has_identity(state_dir: &Path) -> bool {
    let certs = certs_dir(state_dir);
    certs.join(NODE_CERT_FILE).exists() || certs.join(NODE_KEY_FILE).exists()
}

/// Waits until `shoal swarm join` has written a complete identity into the state dir.
/// `None` when `shutdown` fires first.
pub async fn wait_for_identity(dir: &Path, shutdown: &ShutdownToken) -> Option<NodeCredentials> {
    let mut logged = false;
    loop {
        match NodeCredentials::load(dir) {
            Ok(creds) => return Some(creds),
            Err(e) if !logged => {
                tracing::info!(
                    state_dir = %dir.display(),
                    reason = %e,
                    "no node identity yet: waiting for `shoal swarm join`"
                );
                logged = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(IDENTITY_POLL) => {}
        }
    }
}

/// The manager addresses recorded by `join` in the state dir (empty if none).
pub fn recorded_managers(state_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(state_dir.join(MANAGERS_FILE))
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Records `addrs` as the managers of this node's swarm (atomically: temp + rename).
pub fn record_managers(state_dir: &Path, addrs: &[String]) -> io::Result<()> {
    let path = state_dir.join(MANAGERS_FILE);
    let tmp = state_dir.join(format!(".{MANAGERS_FILE}.tmp"));
    let mut text = addrs.join("\n");
    text.push('\n');
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// What the state dir says about the identity the worker is using.
#[derive(Debug)]
pub enum OnDisk {
    /// Still this node's identity (possibly renewed meanwhile: `Some` then).
    Same(Option<NodeCredentials>),
    /// The identity is gone: the node left the swarm.
    Gone,
    /// Another node identity is there now (left and joined again).
    Replaced,
}

/// The identity in use: what new connections present and what the listener serves.
#[derive(Debug)]
pub struct Identity {
    state_dir: PathBuf,
    creds: RwLock<NodeCredentials>,
    info: RwLock<CertInfo>,
    resolver: Arc<ServerCertResolver>,
    verifier: Arc<ClientVerifier>,
}

impl Identity {
    /// Starts using `creds` (serving them through `resolver`, trusting their CA
    /// through `verifier`).
    pub fn new(
        state_dir: &Path,
        creds: NodeCredentials,
        resolver: Arc<ServerCertResolver>,
        verifier: Arc<ClientVerifier>,
    ) -> Result<Self, IdentityError> {
        let info = creds.info()?;
        resolver.replace(&creds)?;
        verifier.replace(&creds.ca_pem)?;
        Ok(Self {
            state_dir: state_dir.to_path_buf(),
            creds: RwLock::new(creds),
            info: RwLock::new(info),
            resolver,
            verifier,
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The current credentials.
    pub fn creds(&self) -> NodeCredentials {
        match self.creds.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Who the current certificate says this node is.
    pub fn info(&self) -> CertInfo {
        match self.info.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Switches to renewed credentials of the same node: new connections present
    /// them and the listener serves them from its next handshake on. Open
    /// connections (the running session) keep theirs.
    pub fn update(&self, creds: NodeCredentials) -> Result<(), IdentityError> {
        let info = creds.info()?;
        self.resolver.replace(&creds)?;
        self.verifier.replace(&creds.ca_pem)?;
        match self.creds.write() {
            Ok(mut c) => *c = creds,
            Err(poisoned) => *poisoned.into_inner() = creds,
        }
        match self.info.write() {
            Ok(mut i) => *i = info,
            Err(poisoned) => *poisoned.into_inner() = info,
        }
        Ok(())
    }

    /// Compares the state dir with the identity in use. Cheap when nothing changed
    /// (one small file read); a changed certificate is loaded and checked.
    pub fn check_disk(&self) -> OnDisk {
        let cert_path = certs_dir(&self.state_dir).join(NODE_CERT_FILE);
        let key_path = certs_dir(&self.state_dir).join(NODE_KEY_FILE);
        let cert = match std::fs::read_to_string(&cert_path) {
            Ok(cert) => cert,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return OnDisk::Gone,
            Err(e) => {
                tracing::warn!(path = %cert_path.display(), error = %e, "cannot read the node certificate");
                return OnDisk::Same(None);
            }
        };
        if !key_path.exists() {
            return OnDisk::Gone;
        }
        if cert == self.creds().cert_pem {
            return OnDisk::Same(None);
        }
        // Changed on disk: a renewal we have not switched to yet, or a new join.
        match NodeCredentials::load(&self.state_dir) {
            Ok(creds) => match creds.info() {
                Ok(info) => {
                    let current = self.info();
                    if info.node_id == current.node_id && info.cluster_id == current.cluster_id {
                        OnDisk::Same(Some(creds))
                    } else {
                        OnDisk::Replaced
                    }
                }
                Err(_) => OnDisk::Same(None),
            },
            // Half-written (a join or renewal in progress): look again next time.
            Err(_) => OnDisk::Same(None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("node credentials: {0}")]
    Pki(#[from] shoal_pki::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}
