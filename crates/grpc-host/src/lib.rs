//! Hosts one shoal process the same way everywhere: its gRPC services with
//! `grpc.health.v1`, server reflection for `shoal.v1`, W3C trace-context extraction on
//! every request, and a graceful shutdown on SIGTERM/SIGINT that never hangs on
//! long-lived streams; plus the connection to cluster state (etcd through the store,
//! NATS through the event bus) that every control-plane service needs.
//!
//! Shutdown runs in three steps: health turns NOT_SERVING (load balancers and
//! `shoal health` see it at once), the [`CancellationToken`] fires (streams such as
//! worker sessions and watches end themselves), and the server drains in-flight calls
//! for at most [`Host::drain`]; whatever is still open then is dropped.

pub mod identity;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use tokio_util::sync::CancellationToken as ShutdownToken;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error("cannot listen on the local socket {path}: {source}")]
    Unix {
        path: String,
        source: std::io::Error,
    },
}

/// The gRPC host of one process.
pub struct Host {
    process: String,
    listen: SocketAddr,
    health: HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    shutdown: CancellationToken,
    drain: Duration,
}

impl Host {
    /// A host for `process` (e.g. "shoal-manager") that will listen on `listen`.
    /// Health starts NOT_SERVING; the process calls [`Host::set_ready`] once its
    /// dependencies answer.
    pub fn new(process: impl Into<String>, listen: SocketAddr) -> Self {
        let health = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        Host {
            process: process.into(),
            listen,
            health,
            health_service,
            shutdown: CancellationToken::new(),
            drain: Duration::from_secs(3),
        }
    }

    /// How long in-flight calls may take to finish after a shutdown signal.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Fires when the process is shutting down. Long-lived streams select on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Marks the whole server ("") and each named gRPC service SERVING or NOT_SERVING.
    pub async fn set_ready(health: &HealthReporter, services: &[&str], ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        for s in services {
            health.set_service_status(*s, status).await;
        }
    }

    /// Binds the listener now, so a bad address fails before anything else starts.
    /// Health reads NOT_SERVING from here until the process says it is ready.
    pub async fn bind(self) -> Result<BoundHost, HostError> {
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let listener = std::net::TcpListener::bind(self.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| HostError::Bind {
                addr: self.listen,
                source,
            })?;
        // From here on a SIGTERM ends the process cleanly, whatever it is waiting for.
        tokio::spawn(cancel_on_signal(self.shutdown.clone()));
        Ok(BoundHost {
            host: self,
            listener,
        })
    }
}

/// A host whose listener is bound. Nothing is served on it until the process has a
/// certificate: every TCP listener of shoal speaks TLS.
pub struct BoundHost {
    host: Host,
    listener: std::net::TcpListener,
}

impl BoundHost {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.host.shutdown.clone()
    }

    pub fn health(&self) -> HealthReporter {
        self.host.health.clone()
    }

    /// The address the listener is bound to (the configured one, with its real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.host.listen)
    }

    /// `routes` plus health and reflection, as every listener of this process serves them.
    pub fn with_standard_services(&self, routes: Routes) -> Result<Routes, HostError> {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shoal_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| HostError::Reflection(e.to_string()))?;
        Ok(routes
            .add_service(self.host.health_service.clone())
            .add_service(reflection))
    }

    /// Serves `routes` plus health and reflection over TLS until SIGTERM/SIGINT or the
    /// shutdown token, then drains.
    pub async fn serve_tls(
        self,
        routes: Routes,
        tls: Arc<tls::SwappableConfig>,
    ) -> Result<(), HostError> {
        let routes = self.with_standard_services(routes)?;
        let listen = self.local_addr();
        let listener =
            tokio::net::TcpListener::from_std(self.listener).map_err(|source| HostError::Bind {
                addr: listen,
                source,
            })?;
        let incoming = tls::incoming(listener, tls);
        tracing::info!(%listen, process = %self.host.process, "gRPC server listening (TLS)");
        run_server(
            routes,
            incoming,
            self.host.shutdown.clone(),
            self.host.drain,
            self.host.health.clone(),
        )
        .await
        .map_err(|source| HostError::Serve {
            addr: listen,
            source,
        })
    }
}

/// Serves `routes` on `incoming` until `token` fires, then drains for at most `drain`.
pub async fn run_server<I, IO, IE>(
    routes: Routes,
    incoming: I,
    token: CancellationToken,
    drain: Duration,
    health: HealthReporter,
) -> Result<(), tonic::transport::Error>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stop = token.clone();
    let server = Server::builder()
        .layer(shoal_telemetry::GrpcTraceLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            stop.cancelled().await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = token.cancelled() => {
            match tokio::time::timeout(drain, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(?drain, "calls still open after the drain period; closing them");
                    Ok(())
                }
            }
        }
    };
    tracing::info!("gRPC server stopped");
    result
}

/// Serves `routes` on a Unix socket at `path` (mode 0600: only its owner may connect),
/// for clients on the same host, like docker.sock. The socket needs no certificate;
/// file permissions are its authentication.
pub async fn serve_unix(
    path: &Path,
    routes: Routes,
    token: CancellationToken,
    health: HealthReporter,
) -> Result<(), HostError> {
    use std::os::unix::fs::PermissionsExt;
    let bind_error = |source| HostError::Unix {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_error)?;
    }
    // A socket left by a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    tracing::info!(socket = %path.display(), "gRPC server listening (local socket)");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let result = run_server(routes, incoming, token, Duration::from_secs(3), health).await;
    let _ = std::fs::remove_file(path);
    result.map_err(|source| HostError::Serve {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

/// Cancels `token` on the first SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("shutdown signal received");
    token.cancel();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers (should not happen on Unix) fall back to ctrl-c.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What [`launch`] needs to know of a service's configuration.
pub trait ServiceSettings: shoal_settings::Settings {
    fn listen(&self) -> SocketAddr;
    fn telemetry(&self) -> shoal_telemetry::TelemetryConfig;
}

/// Runs a service process: a multi-threaded runtime, telemetry, the bound gRPC host,
/// then `run`. Returns the process exit code: 0 after a clean shutdown, 1 on failure
/// (with one line on stderr saying why).
pub fn launch<C, F, Fut>(cfg: C, run: F) -> std::process::ExitCode
where
    C: ServiceSettings,
    F: FnOnce(C, BoundHost) -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", C::PROCESS);
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let telemetry = match shoal_telemetry::init(&cfg.telemetry()) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("{}: {e}", C::PROCESS);
                return std::process::ExitCode::FAILURE;
            }
        };
        let host = match Host::new(C::PROCESS, cfg.listen()).bind().await {
            Ok(host) => host,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("{}: {e}", C::PROCESS);
                return std::process::ExitCode::FAILURE;
            }
        };
        let result = run(cfg, host).await;
        let code = match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "exiting on error");
                eprintln!("{}: {e}", C::PROCESS);
                std::process::ExitCode::FAILURE
            }
        };
        if let Err(e) = telemetry.shutdown().await {
            eprintln!("{}: {e}", C::PROCESS);
        }
        code
    });
    // Background tasks (watches, reconnect loops) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

/// Calls `attempt` until it succeeds, backing off from 100 ms to 5 s between tries and
/// logging each failure. Returns `None` when `shutdown` fires first.
pub async fn retry_until_ready<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            result = attempt() => match result {
                Ok(value) => return Some(value),
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "{what} not reachable yet"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A control-plane process's view of cluster state: etcd through the store (the truth)
/// and NATS through the event bus (hints).
#[derive(Clone, Debug)]
pub struct ClusterState {
    pub store: shoal_store::Store,
    pub bus: shoal_events::EventBus,
}

/// Connects to etcd and NATS, retrying until both answer. `None` on shutdown first.
pub async fn connect_cluster_state(
    process: &str,
    etcd_endpoints: &[String],
    store_prefix: &str,
    nats_url: &str,
    shutdown: &CancellationToken,
) -> Option<ClusterState> {
    let store = retry_until_ready("etcd", shutdown, || async {
        let store = shoal_store::Store::connect(etcd_endpoints, store_prefix).await?;
        // A connection alone proves little; a read proves etcd answers.
        store.revision().await?;
        Ok::<_, shoal_store::Error>(store)
    })
    .await?;
    let bus = retry_until_ready("NATS", shutdown, || {
        shoal_events::EventBus::connect(nats_url, process)
    })
    .await?;
    Some(ClusterState { store, bus })
}

/// Where a control-plane service finds cluster state and its CA.
pub trait StateSettings: ServiceSettings {
    fn etcd_endpoints(&self) -> &[String];
    fn store_prefix(&self) -> &str;
    fn nats_url(&self) -> &str;
    /// The key-encryption key of the cluster CA (see [`identity`]).
    fn kek_file(&self) -> &Path;
    /// Extra names and addresses clients may use to reach this process.
    fn advertise_sans(&self) -> Vec<shoal_pki::San> {
        Vec::new()
    }
}

/// The error a service's `run` returns.
pub type RunError = Box<dyn std::error::Error + Send + Sync>;

/// The life of a control-plane service:
/// 1. connect to etcd and NATS (retrying), then hand the connection to `on_connected`
///    (the manager starts serving its local socket and campaigning here);
/// 2. wait for the swarm to exist and issue this process's certificate from its CA;
/// 3. serve `routes` over TLS, mark `services` SERVING, and serve until shutdown.
pub async fn serve_with_cluster_state<C, F, Fut>(
    cfg: &C,
    host: BoundHost,
    routes: Routes,
    services: &[&str],
    on_connected: F,
) -> Result<(), RunError>
where
    C: StateSettings,
    F: FnOnce(ClusterState) -> Fut,
    Fut: std::future::Future<Output = Result<(), RunError>>,
{
    let shutdown = host.shutdown_token();
    let health = host.health();
    let Some(state) = connect_cluster_state(
        C::PROCESS,
        cfg.etcd_endpoints(),
        cfg.store_prefix(),
        cfg.nats_url(),
        &shutdown,
    )
    .await
    else {
        return Ok(());
    };
    on_connected(state.clone()).await?;

    let mut sans = cfg.advertise_sans();
    let ip = host.local_addr().ip();
    if !ip.is_unspecified() {
        sans.push(shoal_pki::San::Ip(ip));
    }
    let subject = format!("{}-{}", C::PROCESS, &shoal_store::new_id()[..10]);
    let Some(identity) =
        identity::control_plane_identity(&state.store, cfg.kek_file(), &subject, sans, &shutdown)
            .await
    else {
        return Ok(());
    };
    let server = tokio::spawn(host.serve_tls(routes, identity.tls.clone()));
    Host::set_ready(&health, services, true).await;
    tracing::info!(process = C::PROCESS, cluster = %identity.cluster_id, "ready");
    server.await??;
    // The connections live as long as the server.
    drop(state);
    Ok(())
}

pub use shoal_pki::San;
pub use shoal_settings::Settings;
pub use shoal_telemetry::{LogFormat, TelemetryConfig};

/// The telemetry of a process from its standard config keys.
pub fn telemetry_config(
    process: &str,
    otlp_endpoint: &str,
    log_format: LogFormat,
    log_filter: &str,
) -> TelemetryConfig {
    TelemetryConfig {
        service_name: process.into(),
        otlp_endpoint: Some(otlp_endpoint.to_string()).filter(|e| !e.is_empty()),
        log_format,
        log_filter: log_filter.to_string(),
    }
}

/// Implements [`ServiceSettings`] for a config struct with the standard keys `listen`,
/// `otlp_endpoint`, `log_format` and `log_filter`.
#[macro_export]
macro_rules! service_settings {
    ($ty:ty) => {
        impl $crate::ServiceSettings for $ty {
            fn listen(&self) -> ::std::net::SocketAddr {
                self.listen
            }

            fn telemetry(&self) -> $crate::TelemetryConfig {
                $crate::telemetry_config(
                    <$ty as $crate::Settings>::PROCESS,
                    &self.otlp_endpoint,
                    self.log_format,
                    &self.log_filter,
                )
            }
        }
    };
}

/// Implements [`ServiceSettings`] and [`StateSettings`] for a control-plane config
/// struct that also has `etcd_endpoints`, `store_prefix`, `nats_url` and `kek_file`;
/// `advertise_sans = f` adds the names `f(&config)` returns to its certificate.
#[macro_export]
macro_rules! state_settings {
    ($ty:ty) => {
        $crate::state_settings!($ty, advertise_sans = |_: &$ty| ::std::vec::Vec::new());
    };
    ($ty:ty, advertise_sans = $sans:expr) => {
        $crate::service_settings!($ty);

        impl $crate::StateSettings for $ty {
            fn etcd_endpoints(&self) -> &[String] {
                &self.etcd_endpoints
            }

            fn store_prefix(&self) -> &str {
                &self.store_prefix
            }

            fn nats_url(&self) -> &str {
                &self.nats_url
            }

            fn kek_file(&self) -> &::std::path::Path {
                &self.kek_file
            }

            fn advertise_sans(&self) -> ::std::vec::Vec<$crate::San> {
                ($sans)(self)
            }
        }
    };
}
