//! Connections from the CLI to shoal's gRPC services, with trace context on every call.
//!
//! The Control API is reached one of three ways:
//! - over a local manager's control socket (`socket`, or `host = unix:///path`): no
//!   TLS, the socket's file mode is the access control (like `docker.sock`). This is
//!   how `swarm init` reaches a manager that has no swarm, hence no CA, yet;
//! - over TCP with mutual TLS (`host = HOST:PORT`, the default): the server must hold
//!   a certificate for `swarm-manager` issued by the cluster's root CA, and the CLI
//!   presents the admin client certificate from `cert_dir`;
//! - over plaintext TCP (`host = http://HOST:PORT`), only for a manager started with
//!   its `--insecure` development flag.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use shoal_pki::{NodeCredentials, Role};
use shoal_proto::v1::control_client::ControlClient;
use shoal_telemetry::TraceInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use crate::config::CliConfig;

pub type Control = ControlClient<InterceptedService<Channel, TraceInterceptor>>;

/// The DNS name in every control-plane server certificate.
pub const MANAGER_SERVER_NAME: &str = "swarm-manager";

/// The control socket of a manager run with its default `state_dir`.
pub const DEFAULT_MANAGER_SOCKET: &str = ".shoal-manager/control.sock";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a gRPC server is, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `unix:///path/to/control.sock`
    Unix(PathBuf),
    /// `HOST:PORT` or `https://HOST:PORT`; the URI is always `https://…`.
    Tls { uri: String },
    /// `http://HOST:PORT`
    Plain { uri: String },
}

impl Target {
    pub fn parse(host: &str) -> Result<Target, String> {
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("\"{host}\" names no socket path (unix:///path)"));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let (plain, rest) = if let Some(rest) = host.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = host.strip_prefix("https://") {
            (false, rest)
        } else if host.contains("://") {
            return Err(format!(
                "\"{host}\": unknown scheme (use HOST:PORT, https://, http:// or unix://)"
            ));
        } else {
            (false, host)
        };
        let rest = rest.trim_end_matches('/');
        let uri = format!("{}://{rest}", if plain { "http" } else { "https" });
        let parsed: Uri = uri
            .parse()
            .map_err(|e| format!("\"{host}\" is not HOST:PORT: {e}"))?;
        if parsed.host().is_none_or(str::is_empty) {
            return Err(format!("\"{host}\" has no host (HOST:PORT)"));
        }
        if parsed.port_u16().is_none() {
            return Err(format!("\"{host}\" has no port (HOST:PORT)"));
        }
        Ok(if plain {
            Target::Plain { uri }
        } else {
            Target::Tls { uri }
        })
    }
}

/// An error and its causes on one line ("transport error: tcp connect error: …").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A channel over a Unix socket.
pub async fn unix_channel(path: &Path) -> anyhow::Result<Channel> {
    let socket = path.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(socket).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Endpoint::from_static("http://localhost")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "Cannot connect to the shoal manager's control socket {}. Is the manager running? ({})",
                path.display(),
                error_chain(&e)
            )
        })
}

/// A channel over TCP, with TLS when `tls` is given.
pub async fn tcp_channel(
    uri: &str,
    tls: Option<ClientTlsConfig>,
    shown: &str,
) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(uri.to_string())?.connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "Cannot connect to the shoal manager at {shown}. Is it running? ({})",
            error_chain(&e)
        )
    })
}

/// The admin identity in `cert_dir`, with errors that say what to do.
pub fn admin_credentials(cfg: &CliConfig) -> anyhow::Result<NodeCredentials> {
    let dir = &cfg.cert_dir;
    let cert = shoal_pki::certs_dir(dir).join(shoal_pki::NODE_CERT_FILE);
    if !cert.exists() {
        let mut msg = String::new();
        if let Some(node) = crate::local::this_node(cfg)
            && node.role == Role::Worker
        {
            msg.push_str(
                "This node is not a swarm manager. Worker nodes can't be used to view or modify \
                 cluster state. Please run this command on a manager node or promote the current \
                 node to a manager. ",
            );
        }
        msg.push_str(&format!(
            "No admin credentials in {}: run `shoal swarm init` on a manager, or copy the \
             manager's admin credentials ({}/{{{}, {}, {}}}) here, or set --socket to a local \
             manager's control socket",
            dir.display(),
            shoal_pki::CERTS_DIR,
            shoal_pki::NODE_CERT_FILE,
            shoal_pki::NODE_KEY_FILE,
            shoal_pki::ROOT_CA_FILE,
        ));
        anyhow::bail!(msg);
    }
    NodeCredentials::load(dir)
        .map_err(|e| anyhow::anyhow!("bad admin credentials in {}: {e}", dir.display()))
}

/// The socket Control calls use: `socket` when it is set and present.
pub fn configured_socket(cfg: &CliConfig) -> Option<PathBuf> {
    if cfg.socket.as_os_str().is_empty() {
        return None;
    }
    cfg.socket.exists().then(|| cfg.socket.clone())
}

/// The channel to the Control API `cfg` asks for.
pub async fn control_channel(cfg: &CliConfig) -> anyhow::Result<Channel> {
    if let Some(socket) = configured_socket(cfg) {
        return unix_channel(&socket).await;
    }
    match Target::parse(&cfg.host).map_err(anyhow::Error::msg)? {
        Target::Unix(path) => unix_channel(&path).await,
        Target::Plain { uri } => tcp_channel(&uri, None, &cfg.host).await,
        Target::Tls { uri } => {
            let creds = admin_credentials(cfg)?;
            tcp_channel(&uri, Some(creds.client_tls(MANAGER_SERVER_NAME)), &cfg.host).await
        }
    }
}

/// A Control API client with trace context on every call.
pub async fn control(cfg: &CliConfig) -> anyhow::Result<Control> {
    Ok(ControlClient::with_interceptor(
        control_channel(cfg).await?,
        TraceInterceptor,
    ))
}

/// The socket of the manager on this host, for `swarm init`: `socket`, `host` when it
/// is `unix://…`, else the default manager's socket when it exists.
pub fn local_manager_socket(cfg: &CliConfig) -> anyhow::Result<PathBuf> {
    let configured = if !cfg.socket.as_os_str().is_empty() {
        Some(cfg.socket.clone())
    } else if let Ok(Target::Unix(path)) = Target::parse(&cfg.host) {
        Some(path)
    } else {
        None
    };
    match configured {
        Some(path) if path.exists() => Ok(path),
        Some(path) => anyhow::bail!(
            "no manager control socket at {}: is shoal-manager running on this host with that \
             state_dir?",
            path.display()
        ),
        // The manager whose state dir this host's CLI points at (the local stack's env).
        None if !cfg.state_dir.as_os_str().is_empty()
            && cfg.state_dir.join("control.sock").exists() =>
        {
            Ok(cfg.state_dir.join("control.sock"))
        }
        None if Path::new(DEFAULT_MANAGER_SOCKET).exists() => {
            Ok(PathBuf::from(DEFAULT_MANAGER_SOCKET))
        }
        None => anyhow::bail!(
            "`shoal swarm init` talks to the manager on this host through its control socket \
             (<manager state_dir>/control.sock): set --socket or SHOAL_SOCKET to it"
        ),
    }
}

/// A Control API client for `swarm init`: the local manager's socket, or a plaintext
/// `http://` host (a manager started with `--insecure`).
pub async fn init_control(cfg: &CliConfig) -> anyhow::Result<Control> {
    let channel = match (cfg.socket.as_os_str().is_empty(), Target::parse(&cfg.host)) {
        (true, Ok(Target::Plain { uri })) => tcp_channel(&uri, None, &cfg.host).await?,
        _ => unix_channel(&local_manager_socket(cfg)?).await?,
    };
    Ok(ControlClient::with_interceptor(channel, TraceInterceptor))
}

/// The channel `shoal health` uses: TLS with the cluster CA from `cert_dir` (and the
/// admin certificate when there is one), a Unix socket, or plaintext for `http://`.
pub async fn health_channel(
    cfg: &CliConfig,
    addr: &str,
    server_name: &str,
) -> anyhow::Result<Channel> {
    match Target::parse(addr).map_err(anyhow::Error::msg)? {
        Target::Unix(path) => unix_channel(&path).await,
        Target::Plain { uri } => tcp_channel(&uri, None, addr).await,
        Target::Tls { uri } => {
            let tls = match NodeCredentials::load(&cfg.cert_dir) {
                Ok(creds) => creds.client_tls(server_name),
                Err(_) => {
                    let ca = shoal_pki::certs_dir(&cfg.cert_dir).join(shoal_pki::ROOT_CA_FILE);
                    let pem = std::fs::read_to_string(&ca).map_err(|e| {
                        anyhow::anyhow!(
                            "no cluster CA certificate at {} ({e}): run `shoal swarm init`, copy \
                             the admin credentials into {}, or use http:// for a plaintext process",
                            ca.display(),
                            cfg.cert_dir.display()
                        )
                    })?;
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(pem))
                        .domain_name(server_name)
                }
            };
            tcp_channel(&uri, Some(tls), addr).await
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("127.0.0.1:2377").unwrap(),
            Target::Tls {
                uri: "https://127.0.0.1:2377".into()
            }
        );
        assert_eq!(
            Target::parse("https://m1:2377/").unwrap(),
            Target::Tls {
                uri: "https://m1:2377".into()
            }
        );
        assert_eq!(
            Target::parse("http://127.0.0.1:2377").unwrap(),
            Target::Plain {
                uri: "http://127.0.0.1:2377".into()
            }
        );
        assert_eq!(
            Target::parse("unix:///run/shoal/control.sock").unwrap(),
            Target::Unix(PathBuf::from("/run/shoal/control.sock"))
        );
        assert!(Target::parse("127.0.0.1").is_err());
        assert!(Target::parse("unix://").is_err());
        assert!(Target::parse("ftp://x:1").is_err());
        assert!(Target::parse(":2377").is_err());
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn init_needs_a_socket() {
        let cfg = CliConfig {
            socket: PathBuf::from("/nonexistent/control.sock"),
            ..CliConfig::default()
        };
        let err = local_manager_socket(&cfg).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/control.sock"), "{err}");
    }

    #[test]
    fn missing_admin_credentials_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CliConfig {
            cert_dir: dir.path().to_path_buf(),
            ..CliConfig::default()
        };
        let err = admin_credentials(&cfg).unwrap_err().to_string();
        assert!(err.contains("No admin credentials in"), "{err}");
        assert!(err.contains("shoal swarm init"), "{err}");
    }

    #[tokio::test]
    async fn unix_socket_that_is_not_there_fails_clearly() {
        let err = unix_channel(Path::new("/nonexistent/control.sock"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/control.sock"), "{err}");
    }
}
