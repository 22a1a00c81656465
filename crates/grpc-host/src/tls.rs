//! TLS for every shoal listener.
//!
//! Each TCP listener speaks TLS 1.2/1.3 with a certificate issued by the cluster's root
//! CA. The certificate lives in a [`ServerCertResolver`] that can be replaced while the
//! server runs, so a renewal never drops a connection. Client certificates are
//! *optional at the TLS layer* and verified against the root CA when offered: some calls
//! must work without one (a node joining with a token, health checks), so each service
//! decides per RPC what it requires, from the verified peer certificate
//! (`shoal_pki::peer_info`). A certificate from another CA never completes a handshake.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use shoal_pki::NodeCredentials;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to pick them up.
const ACCEPT_BACKLOG: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("bad certificate material: {0}")]
    Material(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider of every shoal TLS endpoint. Explicit, so a binary never has to
/// guess between two compiled-in providers.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(creds: &NodeCredentials) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(creds.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Material(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Material("no certificate in PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes())
        .map_err(|e| TlsError::Material(format!("private key: {e}")))?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// The server certificate of a listener, replaceable at any time.
#[derive(Debug)]
pub struct ServerCertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertResolver {
    pub fn new(creds: &NodeCredentials) -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new(Arc::new(certified_key(creds)?)),
        })
    }

    /// Serves `creds` from the next handshake on; open connections keep theirs.
    pub fn replace(&self, creds: &NodeCredentials) -> Result<(), TlsError> {
        let key = Arc::new(certified_key(creds)?);
        match self.current.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(current) => Some(current.clone()),
            Err(poisoned) => Some(poisoned.into_inner().clone()),
        }
    }
}

/// A root store holding the cluster's CA certificate(s).
pub fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Material(format!("CA certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Material(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Material("no CA certificate in PEM".into()));
    }
    Ok(roots)
}

/// The server side: our certificate from `resolver`, clients verified against `ca_pem`
/// when they present a certificate, HTTP/2 only.
pub fn server_config(
    resolver: Arc<ServerCertResolver>,
    ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Material(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A server TLS configuration that can be replaced while the server runs (a new root CA
/// after the swarm is re-initialised changes the client roots, not only our certificate).
#[derive(Debug)]
pub struct SwappableConfig {
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl SwappableConfig {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(config),
        })
    }

    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Accepts TCP connections on `listener` and completes their TLS handshakes
/// concurrently (one slow or hostile client never holds the others up), each with the
/// configuration current at accept time. Failed handshakes are logged and dropped; the
/// stream yields only connections that are ready.
pub fn incoming(
    listener: TcpListener,
    config: Arc<SwappableConfig>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
