//! Identities issued from the cluster's root CA.
//!
//! The CA lives in the one `Cluster` object: its certificate in clear, its private key
//! sealed with the key-encryption key (KEK) that only control-plane hosts hold (the
//! `kek_file` written by `swarm init` on the first manager). A control-plane process
//! (manager, dispatcher, dns, scheduler) proves it belongs to the control plane by
//! holding the KEK: it opens the CA and issues its own serving certificate (role
//! manager), and renews it at a random point between 50 % and 80 % of its lifetime.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use shoal_pki::{CertInfo, Kek, NodeCredentials, NodeKey, Role, RootCa, San};
use shoal_proto::v1::Cluster;
use shoal_store::{Store, WatchEvent};
use tokio_util::sync::CancellationToken;

use crate::tls::ServerCertResolver;

/// Where the KEK is looked for unless configured.
pub const DEFAULT_KEK_FILE: &str = ".shoal-manager/swarm-ca.kek";

/// The name of the one Cluster object.
pub const CLUSTER_NAME: &str = "default";
/// Node certificate lifetime when the cluster does not say (Swarm's 90 days).
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot read the key-encryption key {path}: {source} (it is written by `shoal swarm init` on the first manager; copy it to every control-plane host)"
    )]
    Kek {
        path: String,
        source: shoal_pki::Error,
    },
    #[error("the cluster object has no root CA")]
    NoRootCa,
    #[error("cannot open the root CA: {0} (is kek_file the one this swarm was initialised with?)")]
    OpenCa(shoal_pki::Error),
    #[error("cannot issue a certificate: {0}")]
    Issue(shoal_pki::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] shoal_store::Error),
}

/// The cluster's CA, opened with the KEK.
pub fn open_ca(cluster: &Cluster, kek: &Kek) -> Result<RootCa, IdentityError> {
    let root = cluster.root_ca.as_ref().ok_or(IdentityError::NoRootCa)?;
    let key = shoal_pki::open(kek, &root.ca_key_encrypted).map_err(IdentityError::OpenCa)?;
    let key = String::from_utf8(key).map_err(|_| {
        IdentityError::OpenCa(shoal_pki::Error::Pem {
            what: "CA key",
            reason: "not UTF-8".into(),
        })
    })?;
    let cert = String::from_utf8_lossy(&root.ca_cert);
    RootCa::from_pem(&cert, &key).map_err(IdentityError::OpenCa)
}

/// The lifetime the cluster gives node certificates.
pub fn cert_expiry(cluster: &Cluster) -> Duration {
    cluster
        .spec
        .as_ref()
        .and_then(|s| s.ca_config.as_ref())
        .and_then(|c| c.node_cert_expiry)
        .and_then(|d| Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_CERT_EXPIRY)
}

/// Reads the KEK, refusing a file others can read.
pub fn read_kek(path: &Path) -> Result<Kek, IdentityError> {
    Kek::from_file(path).map_err(|source| IdentityError::Kek {
        path: path.display().to_string(),
        source,
    })
}

/// A fresh serving certificate for a control-plane process.
pub fn issue_process_credentials(
    cluster: &Cluster,
    kek: &Kek,
    subject: &str,
    sans: &[San],
) -> Result<NodeCredentials, IdentityError> {
    let ca = open_ca(cluster, kek)?;
    let cluster_id = cluster.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let key = NodeKey::generate();
    let csr = key.csr_pem().map_err(IdentityError::Issue)?;
    let cert = ca
        .issue(
            &csr,
            subject,
            Role::Manager,
            cluster_id,
            cert_expiry(cluster),
            sans,
        )
        .map_err(IdentityError::Issue)?;
    Ok(NodeCredentials {
        cert_pem: cert,
        key_pem: key.key_pem(),
        ca_pem: ca.cert_pem().to_string(),
    })
}

/// Waits until the swarm is initialised; `None` on shutdown.
pub async fn wait_for_cluster(store: &Store, shutdown: &CancellationToken) -> Option<Cluster> {
    let mut watch = store.watch_kind::<Cluster>(None);
    let mut logged = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return None,
            event = watch.next() => event?,
        };
        let found = match event {
            WatchEvent::Restarted { objects, .. } => objects.into_iter().next(),
            WatchEvent::Added(c) | WatchEvent::Modified(c) => Some(c),
            _ => None,
        };
        if let Some(cluster) = found.filter(|c| c.root_ca.is_some()) {
            return Some(cluster);
        }
        if !logged {
            tracing::info!("waiting for the swarm to be initialised (`shoal swarm init`)");
            logged = true;
        }
    }
}

/// The serving identity of a control-plane process: its current credentials, kept
/// fresh in the background.
pub struct ProcessIdentity {
    pub resolver: Arc<ServerCertResolver>,
    pub ca_pem: String,
    pub cluster_id: String,
}

/// Waits for the cluster, issues this process's certificate, and keeps renewing it
/// until shutdown. `None` on shutdown before the swarm exists.
pub async fn control_plane_identity(
    store: &Store,
    kek_file: &Path,
    subject: &str,
    sans: Vec<San>,
    shutdown: &CancellationToken,
) -> Option<ProcessIdentity> {
    let cluster = wait_for_cluster(store, shutdown).await?;
    let mut delay = Duration::from_millis(200);
    let creds = loop {
        match read_kek(kek_file)
            .and_then(|kek| issue_process_credentials(&cluster, &kek, subject, &sans))
        {
            Ok(creds) => break creds,
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?delay, "no serving identity yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    let resolver = match ServerCertResolver::new(&creds) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!(error = %e, "issued certificate unusable");
            return None;
        }
    };
    let identity = ProcessIdentity {
        resolver: resolver.clone(),
        ca_pem: creds.ca_pem.clone(),
        cluster_id: cluster
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default(),
    };
    tokio::spawn(renew_forever(
        store.clone(),
        kek_file.to_path_buf(),
        subject.to_string(),
        sans,
        creds,
        resolver,
        shutdown.clone(),
    ));
    Some(identity)
}

async fn renew_forever(
    store: Store,
    kek_file: std::path::PathBuf,
    subject: String,
    sans: Vec<San>,
    mut creds: NodeCredentials,
    resolver: Arc<ServerCertResolver>,
    shutdown: CancellationToken,
) {
    loop {
        let delay = match CertInfo::from_pem(&creds.cert_pem) {
            Ok(info) => shoal_pki::renewal_delay(&info, SystemTime::now()),
            Err(_) => Duration::from_secs(30),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let renewed = async {
            let cluster = store.get_by_name::<Cluster>(CLUSTER_NAME).await?;
            let kek = read_kek(&kek_file)?;
            let fresh = issue_process_credentials(&cluster, &kek, &subject, &sans)?;
            resolver.replace(&fresh)?;
            Ok::<_, IdentityError>(fresh)
        }
        .await;
        match renewed {
            Ok(fresh) => {
                tracing::info!(%subject, "serving certificate renewed");
                creds = fresh;
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; retrying in 30s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    }
}
