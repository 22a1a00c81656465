//! The worker's TLS: its listener (certificate and trusted CA both replaceable while it
//! serves) and its three kinds of client connection to the control plane:
//!
//! - [`connect_unverified`]: before a join, to fetch the root CA and nothing else. The
//!   server's certificate is not checked (the node has nothing to check it against
//!   yet); the caller must pin what it receives against the join token's digest before
//!   trusting any of it.
//! - [`connect_with_ca`]: the join itself, verifying the manager against the pinned CA
//!   but without a client certificate (the node has none yet).
//! - [`connect_mtls`]: everything after the join (sessions, heartbeats, renewals):
//!   the manager verified against the cluster CA, and the node's certificate presented.
//!
//! Managers and dispatchers carry the DNS SAN [`MANAGER_DOMAIN`] in their certificates;
//! that is the name the worker verifies, whatever address it dialled.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use shoal_grpc_host::tls::{ServerCertResolver, TlsError, provider, roots};
use shoal_pki::NodeCredentials;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The DNS name in every manager and dispatcher certificate.
pub const MANAGER_DOMAIN: &str = "swarm-manager";

/// How long to wait for TCP + TLS to a manager or dispatcher.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection to a manager or dispatcher could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("\"{0}\" is not a valid HOST:PORT address")]
    Address(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
}

fn endpoint(addr: &str, scheme: &str) -> Result<Endpoint, ConnectError> {
    Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
        })
        .map_err(|_| ConnectError::Address(addr.to_string()))
}

/// A channel to `addr` over TLS WITHOUT verifying the server's certificate. Use it for
/// `GetRootCACertificate` only, and pin the answer before trusting it.
pub async fn connect_unverified(addr: &str) -> Result<Channel, ConnectError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new()))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = addr.to_string();
    // The TLS is done by the connector, so tonic sees a plain http:// endpoint.
    let tcp_tls = tower::service_fn(move |_uri: http::Uri| {
        let connector = connector.clone();
        let target = target.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(target.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(MANAGER_DOMAIN)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(endpoint(addr, "http")?
        .connect_with_connector(tcp_tls)
        .await?)
}

/// A channel to `addr` whose certificate must chain to `ca_pem` and name
/// [`MANAGER_DOMAIN`]; no client certificate.
pub async fn connect_with_ca(addr: &str, ca_pem: &str) -> Result<Channel, ConnectError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(MANAGER_DOMAIN);
    Ok(endpoint(addr, "https")?.tls_config(tls)?.connect().await?)
}

/// A mutual-TLS channel to `addr`: the server verified against the cluster CA as
/// [`MANAGER_DOMAIN`], the node's certificate presented as the client certificate.
/// With `from`, connections leave from that local address: the node's own address,
/// which is how the control plane sees it (several nodes share one host in tests and in
/// the local stack, each on its own loopback address).
pub async fn connect_mtls(
    addr: &str,
    creds: &NodeCredentials,
    from: Option<std::net::IpAddr>,
) -> Result<Channel, ConnectError> {
    let tls = creds.client_tls(MANAGER_DOMAIN);
    Ok(endpoint(addr, "https")?
        .local_address(from)
        .tls_config(tls)?
        .connect()
        .await?)
}

/// Accepts any server certificate, but still checks that the server holds the key of
/// the certificate it showed (the handshake signatures).
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    fn new() -> Self {
        Self {
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client-certificate check of the worker's listener: optional at the TLS layer,
/// verified against the cluster CA when offered, and replaceable, so a node that
/// leaves and joins another swarm trusts the new swarm's CA without a restart.
pub struct ClientVerifier {
    current: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier").finish_non_exhaustive()
    }
}

fn webpki_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Material(format!("client verifier: {e}")))
}

impl ClientVerifier {
    pub fn new(ca_pem: &str) -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new(webpki_verifier(ca_pem)?),
        })
    }

    /// Trusts `ca_pem` (only) from the next handshake on.
    pub fn replace(&self, ca_pem: &str) -> Result<(), TlsError> {
        let verifier = webpki_verifier(ca_pem)?;
        match self.current.write() {
            Ok(mut current) => *current = verifier,
            Err(poisoned) => *poisoned.into_inner() = verifier,
        }
        Ok(())
    }

    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints cannot be borrowed from a replaceable verifier; they are optional, and
        // a node has a single certificate to offer anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// The worker listener's TLS: our certificate from `resolver`, client certificates
/// optional and checked by `verifier`, HTTP/2 only.
pub fn server_config(
    resolver: Arc<ServerCertResolver>,
    verifier: Arc<ClientVerifier>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
