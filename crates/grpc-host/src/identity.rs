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

use crate::tls::{ServerCertResolver, SwappableConfig, server_config};

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

/// The serving identity of a control-plane process: its TLS configuration, kept
/// fresh in the background.
pub struct ProcessIdentity {
    pub tls: Arc<SwappableConfig>,
    pub ca_pem: String,
    pub cluster_id: String,
}

fn cluster_id(cluster: &Cluster) -> String {
    cluster
        .meta
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default()
}

/// Waits for the cluster, issues this process's certificate, and keeps it current until
/// shutdown: renewed at 50–80 % of its lifetime, and re-issued from the new CA when the
/// swarm is re-initialised. `None` on shutdown before the swarm exists.
pub async fn control_plane_identity(
    store: &Store,
    kek_file: &Path,
    subject: &str,
    sans: Vec<San>,
    shutdown: &CancellationToken,
) -> Option<ProcessIdentity> {
    let cluster = wait_for_cluster(store, shutdown).await?;
    let issuer = Issuer {
        kek_file: kek_file.to_path_buf(),
        subject: subject.to_string(),
        sans,
    };
    let creds = issuer.issue_retrying(&cluster, shutdown).await?;
    let resolver = match ServerCertResolver::new(&creds) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!(error = %e, "issued certificate unusable");
            return None;
        }
    };
    let config = match server_config(resolver.clone(), &creds.ca_pem) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "TLS configuration unusable");
            return None;
        }
    };
    let tls = SwappableConfig::new(config);
    let identity = ProcessIdentity {
        tls: tls.clone(),
        ca_pem: creds.ca_pem.clone(),
        cluster_id: cluster_id(&cluster),
    };
    tokio::spawn(keep_current(
        store.clone(),
        issuer,
        creds,
        resolver,
        tls,
        shutdown.clone(),
    ));
    Some(identity)
}

/// What a control-plane process's certificates are issued for.
struct Issuer {
    kek_file: std::path::PathBuf,
    subject: String,
    sans: Vec<San>,
}

impl Issuer {
    fn issue(&self, cluster: &Cluster) -> Result<NodeCredentials, IdentityError> {
        let kek = read_kek(&self.kek_file)?;
        issue_process_credentials(cluster, &kek, &self.subject, &self.sans)
    }

    async fn issue_retrying(
        &self,
        cluster: &Cluster,
        shutdown: &CancellationToken,
    ) -> Option<NodeCredentials> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.issue(cluster) {
                Ok(creds) => return Some(creds),
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?delay, "no serving identity yet");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Renews before expiry, and follows the swarm to a new CA after a re-init.
async fn keep_current(
    store: Store,
    issuer: Issuer,
    mut creds: NodeCredentials,
    resolver: Arc<ServerCertResolver>,
    tls: Arc<SwappableConfig>,
    shutdown: CancellationToken,
) {
    let mut clusters = store.watch_kind::<Cluster>(None);
    loop {
        let delay = match CertInfo::from_pem(&creds.cert_pem) {
            Ok(info) => shoal_pki::renewal_wait(&info, SystemTime::now()),
            Err(_) => Duration::from_secs(30),
        };
        // The cluster to issue from: the current one at renewal time, or a new one.
        let cluster = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {
                match store.get_by_name::<Cluster>(CLUSTER_NAME).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the cluster to renew; retrying in 30s");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
                        }
                    }
                }
            }
            event = clusters.next() => {
                let Some(event) = event else { return };
                let changed = match event {
                    WatchEvent::Added(c) | WatchEvent::Modified(c) => Some(c),
                    WatchEvent::Restarted { objects, .. } => objects.into_iter().next(),
                    WatchEvent::Deleted(_) => {
                        tracing::warn!("the swarm was dissolved; waiting for a new `swarm init`");
                        None
                    }
                    WatchEvent::Progress { .. } => None,
                };
                let new_ca = changed.filter(|c| {
                    c.root_ca
                        .as_ref()
                        .is_some_and(|r| r.ca_cert != creds.ca_pem.as_bytes())
                });
                match new_ca {
                    Some(c) => c,
                    None => continue,
                }
            }
        };
        let ca_changed = cluster
            .root_ca
            .as_ref()
            .is_some_and(|r| r.ca_cert != creds.ca_pem.as_bytes());
        let fresh = match issuer.issue(&cluster) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; retrying in 30s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
                }
            }
        };
        if let Err(e) = resolver.replace(&fresh) {
            tracing::warn!(error = %e, "renewed certificate unusable");
            continue;
        }
        if ca_changed {
            match server_config(resolver.clone(), &fresh.ca_pem) {
                Ok(config) => tls.replace(config),
                Err(e) => tracing::warn!(error = %e, "TLS configuration for the new CA unusable"),
            }
            tracing::info!(subject = %issuer.subject, cluster = %cluster_id(&cluster), "serving with the new swarm's CA");
        } else {
            tracing::info!(subject = %issuer.subject, "serving certificate renewed");
        }
        creds = fresh;
    }
}
