//! The agent: the worker's attachment to the control plane.
//!
//! While the node has an identity the agent keeps one `Session` open with a
//! dispatcher (mutual TLS with the node certificate) and heartbeats on it at the
//! period the dispatcher asks for (±10 % jitter). When a heartbeat fails or the
//! session stream ends it reconnects with a jittered backoff (100 ms to 5 s), rotating
//! through the dispatchers it knows: the configured ones and those the dispatcher
//! lists in its session messages. The process reports SERVING exactly while a
//! session is up.
//!
//! Each heartbeat also looks at the state dir: when `shoal swarm leave` has deleted
//! the identity the agent closes the session and waits for a new join. Certificate
//! renewal runs beside the session ([`crate::renew`]) for as long as the identity
//! lasts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_grpc_host::tls::ServerCertResolver;
use shoal_grpc_host::{Host, RunError, ShutdownToken};
use shoal_pki::NodeCredentials;
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::{HeartbeatRequest, SessionMessage, SessionRequest, WeightedPeer};
use shoal_telemetry::TraceInterceptor;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic_health::server::HealthReporter;

use crate::backoff::{Backoff, jitter};
use crate::config::WorkerConfig;
use crate::identity::{Identity, OnDisk, recorded_managers, wait_for_identity};
use crate::join::error_chain;
use crate::renew::Renewer;
use crate::tasks::Link;
use crate::tls::{ClientVerifier, connect_mtls};
use shoal_node_description::node_description;

/// The heartbeat period until a dispatcher says otherwise (Swarm's 5 s).
pub const DEFAULT_HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
/// Bounds on the period a dispatcher may ask for.
const MIN_HEARTBEAT_PERIOD: Duration = Duration::from_millis(100);
const MAX_HEARTBEAT_PERIOD: Duration = Duration::from_secs(60);
/// Jitter of each heartbeat interval.
const HEARTBEAT_JITTER: f64 = 0.1;
/// The first heartbeat goes out this soon after the session opens.
const FIRST_HEARTBEAT: Duration = Duration::from_millis(50);
/// How long opening a session (call + first message) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

type Client = DispatcherClient<InterceptedService<Channel, TraceInterceptor>>;

/// What the agent needs from the worker's configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    /// Dispatchers to attach to, in order of preference.
    pub dispatcher_addrs: Vec<String>,
    /// Managers whose CA renews the certificate (besides the one recorded at join).
    pub manager_addrs: Vec<String>,
    pub hostname: String,
    pub advertise_addr: String,
}

impl AgentConfig {
    pub fn from_config(cfg: &WorkerConfig) -> Self {
        Self {
            state_dir: cfg.state_dir.clone(),
            dispatcher_addrs: cfg.dispatcher_addrs.clone(),
            manager_addrs: cfg.manager_addrs.clone(),
            hostname: cfg.effective_hostname(),
            advertise_addr: cfg.effective_advertise_addr(),
        }
    }
}

/// The agent of one worker process.
pub struct Agent {
    cfg: AgentConfig,
    resolver: Arc<ServerCertResolver>,
    verifier: Arc<ClientVerifier>,
    health: HealthReporter,
    shutdown: ShutdownToken,
    /// Where the open session is announced (to the task manager); None while there is
    /// none.
    link: Option<watch::Sender<Option<Link>>>,
}

/// Why the agent stopped using an identity.
enum Exit {
    Shutdown,
    Left,
}

/// Why a session ended.
enum End {
    Shutdown,
    Left,
    Lost { reason: String, rotate: bool },
}

impl Agent {
    /// `resolver` and `verifier` are the worker listener's: the agent switches them to
    /// renewed or newly joined credentials. `health` turns SERVING while a session is up.
    pub fn new(
        cfg: AgentConfig,
        resolver: Arc<ServerCertResolver>,
        verifier: Arc<ClientVerifier>,
        health: HealthReporter,
        shutdown: ShutdownToken,
    ) -> Self {
        Self {
            cfg,
            resolver,
            verifier,
            health,
            shutdown,
            link: None,
        }
    }

    /// Announces each open session (client and session id) on `link`, and None when
    /// it ends: the task manager's assignments and status reports use it.
    pub fn with_link(mut self, link: watch::Sender<Option<Link>>) -> Self {
        self.link = Some(link);
        self
    }

    fn announce(&self, link: Option<Link>) {
        if let Some(tx) = &self.link {
            tx.send_replace(link);
        }
    }

    /// Runs with `creds` until shutdown; after a leave, waits for the next join and
    /// carries on with that identity.
    pub async fn run(self, creds: NodeCredentials) -> Result<(), RunError> {
        let mut creds = creds;
        loop {
            let identity = Arc::new(Identity::new(
                &self.cfg.state_dir,
                creds,
                self.resolver.clone(),
                self.verifier.clone(),
            )?);
            match self.attached(identity).await {
                Exit::Shutdown => return Ok(()),
                Exit::Left => {
                    self.set_ready(false).await;
                    tracing::info!("the node left the swarm: waiting for `shoal swarm join`");
                    match wait_for_identity(&self.cfg.state_dir, &self.shutdown).await {
                        Some(next) => creds = next,
                        None => return Ok(()),
                    }
                }
            }
        }
    }

    /// Sessions and renewals for one identity.
    async fn attached(&self, identity: Arc<Identity>) -> Exit {
        let info = identity.info();
        tracing::info!(
            node = %info.node_id,
            role = %info.role,
            cluster = %info.cluster_id,
            hostname = %self.cfg.hostname,
            dispatchers = ?self.cfg.dispatcher_addrs,
            "attaching to the swarm"
        );
        let mut managers = self.cfg.manager_addrs.clone();
        for m in recorded_managers(&self.cfg.state_dir) {
            if !managers.contains(&m) {
                managers.push(m);
            }
        }
        let stop = self.shutdown.child_token();
        let renewer = Renewer::new(identity.clone(), managers, self.cfg.advertise_addr.clone());
        let renewal = tokio::spawn(renewer.run(stop.clone()));
        let exit = self.sessions(&identity).await;
        stop.cancel();
        let _ = renewal.await;
        exit
    }

    /// Keeps a session open, reconnecting and failing over, until shutdown or leave.
    async fn sessions(&self, identity: &Identity) -> Exit {
        let mut dispatchers = Dispatchers::new(&self.cfg.dispatcher_addrs);
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        let mut resume = String::new();
        loop {
            match identity.check_disk() {
                OnDisk::Gone | OnDisk::Replaced => return Exit::Left,
                OnDisk::Same(Some(renewed)) => adopt(identity, renewed),
                OnDisk::Same(None) => {}
            }
            let addr = dispatchers.current();
            let opened = tokio::select! {
                _ = self.shutdown.cancelled() => return Exit::Shutdown,
                opened = self.open(&addr, identity, &resume) => opened,
            };
            match opened {
                Err(e) => {
                    if e.refused {
                        // The dispatcher answered but would not resume: start afresh.
                        resume.clear();
                    }
                    tracing::warn!(dispatcher = %addr, error = %e.reason, "cannot open a session");
                    dispatchers.advance();
                }
                Ok(mut session) => {
                    resume = session.id.clone();
                    dispatchers.learn(&session.first.managers);
                    tracing::info!(
                        dispatcher = %addr,
                        session = %session.id,
                        node = %identity.info().node_id,
                        "session open"
                    );
                    self.set_ready(true).await;
                    self.announce(Some(Link {
                        client: session.client.clone(),
                        session_id: session.id.clone(),
                    }));
                    let end = self
                        .keep(&mut session, identity, &mut dispatchers, &mut backoff)
                        .await;
                    self.announce(None);
                    self.set_ready(false).await;
                    // Dropping the session closes its stream: the dispatcher sees it end.
                    drop(session);
                    match end {
                        End::Shutdown => {
                            tracing::info!(dispatcher = %addr, "session closed: shutting down");
                            return Exit::Shutdown;
                        }
                        End::Left => {
                            tracing::info!(
                                dispatcher = %addr,
                                "node identity removed from the state dir: session closed"
                            );
                            return Exit::Left;
                        }
                        End::Lost { reason, rotate } => {
                            tracing::warn!(dispatcher = %addr, %reason, "session lost; reconnecting");
                            if rotate {
                                dispatchers.advance();
                            }
                        }
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = self.shutdown.cancelled() => return Exit::Shutdown,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Connects to `addr` and opens a session, up to its first message.
    async fn open(
        &self,
        addr: &str,
        identity: &Identity,
        resume: &str,
    ) -> Result<Session, OpenError> {
        let creds = identity.creds();
        let from = self.cfg.advertise_addr.parse().ok();
        let channel = connect_mtls(addr, &creds, from)
            .await
            .map_err(|e| OpenError {
                reason: error_chain(&e),
                refused: false,
            })?;
        let mut client = DispatcherClient::with_interceptor(channel, TraceInterceptor);
        let description = node_description(&self.cfg.hostname, Some(&creds)).await;
        let request = SessionRequest {
            description: Some(description),
            session_id: resume.to_string(),
        };
        let opening = async {
            let mut stream = client.session(request).await?.into_inner();
            let first = stream.message().await?;
            Ok::<_, tonic::Status>((stream, first))
        };
        let (stream, first) = match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
            Err(_) => {
                return Err(OpenError {
                    reason: format!("no session message within {OPEN_TIMEOUT:?}"),
                    refused: false,
                });
            }
            Ok(Err(status)) => {
                return Err(OpenError {
                    refused: !is_transport(&status),
                    reason: status_text(&status),
                });
            }
            Ok(Ok((_, None))) => {
                return Err(OpenError {
                    reason: "the dispatcher closed the session before its first message".into(),
                    refused: true,
                });
            }
            Ok(Ok((stream, Some(first)))) => (stream, first),
        };
        if first.session_id.is_empty() {
            return Err(OpenError {
                reason: "the dispatcher's first session message has no session id".into(),
                refused: true,
            });
        }
        Ok(Session {
            id: first.session_id.clone(),
            client,
            stream,
            first,
        })
    }

    /// Heartbeats on an open session until it fails, the node leaves, or shutdown.
    async fn keep(
        &self,
        session: &mut Session,
        identity: &Identity,
        dispatchers: &mut Dispatchers,
        backoff: &mut Backoff,
    ) -> End {
        let mut next_beat = Instant::now() + FIRST_HEARTBEAT;
        let mut period = DEFAULT_HEARTBEAT_PERIOD;
        let mut beats: u64 = 0;
        let root_ca = session.first.root_ca.clone();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return End::Shutdown,
                message = session.stream.message() => match message {
                    Ok(Some(update)) => {
                        dispatchers.learn(&update.managers);
                        if !update.root_ca.is_empty() && update.root_ca != root_ca {
                            tracing::warn!("the dispatcher announces a new root CA; CA rotation is not supported yet");
                        }
                    }
                    Ok(None) => {
                        return End::Lost {
                            reason: "the dispatcher ended the session".into(),
                            rotate: false,
                        };
                    }
                    Err(status) => {
                        return End::Lost {
                            rotate: is_transport(&status),
                            reason: format!("session stream: {}", status_text(&status)),
                        };
                    }
                },
                _ = tokio::time::sleep_until(next_beat) => {
                    match identity.check_disk() {
                        OnDisk::Gone | OnDisk::Replaced => return End::Left,
                        OnDisk::Same(Some(renewed)) => adopt(identity, renewed),
                        OnDisk::Same(None) => {}
                    }
                    let request = HeartbeatRequest { session_id: session.id.clone() };
                    let timeout = period.clamp(Duration::from_secs(1), Duration::from_secs(10));
                    match tokio::time::timeout(timeout, session.client.heartbeat(request)).await {
                        Ok(Ok(response)) => {
                            period = heartbeat_period(response.into_inner().period);
                            beats += 1;
                            if beats == 1 {
                                backoff.reset();
                                tracing::debug!(?period, "first heartbeat answered");
                            }
                            next_beat = Instant::now() + jitter(period, HEARTBEAT_JITTER);
                        }
                        Ok(Err(status)) => {
                            return End::Lost {
                                rotate: is_transport(&status),
                                reason: format!("heartbeat: {}", status_text(&status)),
                            };
                        }
                        Err(_) => {
                            return End::Lost {
                                reason: format!("heartbeat: no answer within {timeout:?}"),
                                rotate: true,
                            };
                        }
                    }
                }
            }
        }
    }

    async fn set_ready(&self, ready: bool) {
        Host::set_ready(&self.health, &[], ready).await;
    }
}

/// Switches to credentials renewed on disk behind the agent's back.
fn adopt(identity: &Identity, renewed: NodeCredentials) {
    if let Err(e) = identity.update(renewed) {
        tracing::warn!(error = %e, "cannot use the renewed credentials found in the state dir");
    }
}

struct Session {
    id: String,
    client: Client,
    stream: tonic::Streaming<SessionMessage>,
    first: SessionMessage,
}

struct OpenError {
    reason: String,
    /// The dispatcher answered and said no (as opposed to not answering).
    refused: bool,
}

/// Whether a status means "could not talk to that dispatcher" rather than an answer.
fn is_transport(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// The period a heartbeat response asks for, within sane bounds.
fn heartbeat_period(period: Option<prost_types::Duration>) -> Duration {
    period
        .and_then(|p| Duration::try_from(p).ok())
        .filter(|p| !p.is_zero())
        .map(|p| p.clamp(MIN_HEARTBEAT_PERIOD, MAX_HEARTBEAT_PERIOD))
        .unwrap_or(DEFAULT_HEARTBEAT_PERIOD)
}

/// The dispatchers a worker knows and the one it is using.
#[derive(Debug)]
struct Dispatchers {
    configured: Vec<String>,
    learned: Vec<String>,
    current: Option<String>,
}

impl Dispatchers {
    fn new(configured: &[String]) -> Self {
        Self {
            configured: configured.to_vec(),
            learned: Vec::new(),
            current: None,
        }
    }

    /// Configured first, then learned ones; no duplicates.
    fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for a in self.configured.iter().chain(&self.learned) {
            if !a.is_empty() && !all.contains(a) {
                all.push(a.clone());
            }
        }
        all
    }

    fn current(&self) -> String {
        let all = self.all();
        match &self.current {
            Some(c) if all.contains(c) => c.clone(),
            _ => all.first().cloned().unwrap_or_default(),
        }
    }

    fn advance(&mut self) {
        let all = self.all();
        if all.is_empty() {
            return;
        }
        let current = self.current();
        let pos = all.iter().position(|a| *a == current).unwrap_or(0);
        self.current = Some(all[(pos + 1) % all.len()].clone());
    }

    fn learn(&mut self, peers: &[WeightedPeer]) {
        if peers.is_empty() {
            return;
        }
        let current = self.current();
        self.learned = peers
            .iter()
            .map(|p| p.addr.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        self.current = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str) -> WeightedPeer {
        WeightedPeer {
            node_id: String::new(),
            addr: addr.into(),
            weight: 1,
        }
    }

    #[test]
    fn dispatchers_rotate_through_configured_and_learned() {
        let mut d = Dispatchers::new(&["a:1".into(), "b:1".into()]);
        assert_eq!(d.current(), "a:1");
        d.advance();
        assert_eq!(d.current(), "b:1");
        d.advance();
        assert_eq!(d.current(), "a:1");
        d.learn(&[peer("b:1"), peer("c:1"), peer("")]);
        assert_eq!(d.all(), vec!["a:1", "b:1", "c:1"]);
        assert_eq!(d.current(), "a:1");
        d.advance();
        d.advance();
        assert_eq!(d.current(), "c:1");
        // A learned dispatcher that disappears from the list is left.
        d.learn(&[peer("d:1")]);
        assert_eq!(d.current(), "a:1");
        // An empty list from a dispatcher does not forget what we know.
        d.learn(&[]);
        assert_eq!(d.all(), vec!["a:1", "b:1", "d:1"]);
    }

    #[test]
    fn heartbeat_period_is_bounded() {
        let p = |secs: i64, nanos: i32| {
            heartbeat_period(Some(prost_types::Duration {
                seconds: secs,
                nanos,
            }))
        };
        assert_eq!(heartbeat_period(None), DEFAULT_HEARTBEAT_PERIOD);
        assert_eq!(p(0, 0), DEFAULT_HEARTBEAT_PERIOD);
        assert_eq!(p(-1, 0), DEFAULT_HEARTBEAT_PERIOD);
        assert_eq!(p(2, 0), Duration::from_secs(2));
        assert_eq!(p(0, 1000), MIN_HEARTBEAT_PERIOD);
        assert_eq!(p(3600, 0), MAX_HEARTBEAT_PERIOD);
    }
}
