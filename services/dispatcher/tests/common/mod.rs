//! Shared set-up for the dispatcher's tests: real etcd and NATS, a swarm as the CA would
//! leave it (cluster object, root CA, node objects, certificates), in-process dispatchers
//! behind real mTLS, and simulated workers.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use shoal_dispatcher::{Dispatcher, DispatcherOptions, DispatcherService, presence};
use shoal_events::EventBus;
use shoal_grpc_host::{ClusterState, ShutdownToken};
use shoal_pki::{DEFAULT_CA_VALIDITY, NodeCredentials, NodeKey, Role, RootCa, San};
use shoal_proto::v1::assignment::Item;
use shoal_proto::v1::assignment_change::Action;
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::dispatcher_server::DispatcherServer;
use shoal_proto::v1::node_spec::Membership;
use shoal_proto::v1::node_status::State as NodeState;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::update_task_status_request::TaskStatusUpdate;
use shoal_proto::v1::update_task_status_response::Rejected;
use shoal_proto::v1::{
    Annotations, AssignmentsMessage, AssignmentsRequest, Cluster, ClusterSpec, ContainerSpec,
    DispatcherConfig, HeartbeatRequest, Meta, Node, NodeDescription, NodeRole, NodeSpec, Platform,
    Resources, RootCa as RootCaObject, SessionMessage, SessionRequest, Task, TaskSpec, TaskState,
    TaskStatus, UpdateTaskStatusRequest,
};
use shoal_store::{Store, WatchEvent};
use shoal_testkit::Infra;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server};
use tonic::{Status, Streaming};

/// The heartbeat period every test swarm uses.
pub const PERIOD: Duration = Duration::from_millis(500);
/// How long any awaited condition may take.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// The name every manager certificate carries and clients verify.
pub const SERVER_NAME: &str = "swarm-manager";

pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A swarm as `swarm init` and `swarm join` leave it, without any shoal process.
pub struct Swarm {
    pub infra: Infra,
    pub state: ClusterState,
    pub ca: RootCa,
    pub cluster_id: String,
    server: NodeCredentials,
}

impl Swarm {
    pub async fn start(period: Duration) -> anyhow::Result<Swarm> {
        let infra = Infra::start().await?;
        let store = Store::connect(&[infra.etcd.endpoint()], "/shoal/test").await?;
        let bus = EventBus::connect(&infra.nats.url(), "dispatcher-test").await?;
        let ca = RootCa::generate(DEFAULT_CA_VALIDITY)?;
        let cluster_id = shoal_store::new_id();
        store
            .create(Cluster {
                meta: Some(Meta {
                    id: cluster_id.clone(),
                    ..Default::default()
                }),
                spec: Some(ClusterSpec {
                    annotations: Some(Annotations {
                        name: "default".into(),
                        ..Default::default()
                    }),
                    dispatcher: Some(DispatcherConfig {
                        heartbeat_period: Some(proto_duration(period)),
                    }),
                    ..Default::default()
                }),
                root_ca: Some(RootCaObject {
                    ca_cert: ca.cert_pem().as_bytes().to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        let server = issue(
            &ca,
            "dispatcher-under-test",
            Role::Manager,
            &cluster_id,
            &[
                San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                San::Dns(SERVER_NAME.into()),
            ],
        )?;
        Ok(Swarm {
            infra,
            state: ClusterState { store, bus },
            ca,
            cluster_id,
            server,
        })
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// A certificate from this swarm's CA.
    pub fn credentials(
        &self,
        node_id: &str,
        role: Role,
        cluster_id: &str,
    ) -> anyhow::Result<NodeCredentials> {
        issue(&self.ca, node_id, role, cluster_id, &[])
    }

    /// What the CA does when a node joins: a Node object (accepted) and its certificate.
    pub async fn join(&self, role: Role) -> anyhow::Result<(String, NodeCredentials)> {
        let id = shoal_store::new_id();
        let node_role = match role {
            Role::Manager => NodeRole::Manager,
            _ => NodeRole::Worker,
        };
        self.store()
            .create(Node {
                meta: Some(Meta {
                    id: id.clone(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec {
                    desired_role: node_role as i32,
                    membership: Membership::Accepted as i32,
                    ..Default::default()
                }),
                role: node_role as i32,
                ..Default::default()
            })
            .await?;
        let creds = self.credentials(&id, role, &self.cluster_id)?;
        Ok((id, creds))
    }

    /// A dispatcher serving on 127.0.0.1 behind mTLS, client certificates optional at
    /// the TLS layer (as the host serves every control-plane API) and enforced per RPC.
    pub async fn start_dispatcher(&self) -> anyhow::Result<RunningDispatcher> {
        self.start_dispatcher_with(DispatcherOptions::default())
            .await
    }

    pub async fn start_dispatcher_with(
        &self,
        options: DispatcherOptions,
    ) -> anyhow::Result<RunningDispatcher> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let token = ShutdownToken::new();
        let dispatcher = Dispatcher::start(
            self.state.clone(),
            DispatcherOptions {
                advertise_addr: addr.to_string(),
                ..options
            },
            token.clone(),
        )
        .await?;
        let tls = self.server.server_tls().client_auth_optional(true);
        let server = Server::builder()
            .tls_config(tls)?
            .add_service(DispatcherServer::new(DispatcherService::new(
                dispatcher.clone(),
            )))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener),
                token.clone().cancelled_owned(),
            );
        Ok(RunningDispatcher {
            addr,
            store: self.state.store.clone(),
            dispatcher,
            token,
            server: Some(tokio::spawn(server)),
        })
    }
}

pub fn issue(
    ca: &RootCa,
    node_id: &str,
    role: Role,
    cluster_id: &str,
    sans: &[San],
) -> anyhow::Result<NodeCredentials> {
    let key = NodeKey::generate();
    let cert_pem = ca.issue(
        &key.csr_pem()?,
        node_id,
        role,
        cluster_id,
        Duration::from_secs(3600),
        sans,
    )?;
    Ok(NodeCredentials {
        cert_pem,
        key_pem: key.key_pem(),
        ca_pem: ca.cert_pem().to_string(),
    })
}

/// An in-process dispatcher and its gRPC server.
pub struct RunningDispatcher {
    pub addr: SocketAddr,
    store: Store,
    pub dispatcher: Dispatcher,
    token: ShutdownToken,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RunningDispatcher {
    /// Shuts down as the process does on SIGTERM: streams end, nothing is written,
    /// the presence key is revoked.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.token.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(DEADLINE, server)
                .await
                .context("dispatcher server did not stop")???;
        }
        // The presence key goes with the process (revoked on a clean stop).
        let store = self.store.clone();
        let instance = self.dispatcher.instance_id().to_string();
        shoal_testkit::wait_for("the dispatcher's presence to go", DEADLINE, || async {
            matches!(presence::is_alive(&store, &instance).await, Ok(false)).then_some(())
        })
        .await
    }
}

impl Drop for RunningDispatcher {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub async fn connect(
    addr: SocketAddr,
    tls: ClientTlsConfig,
) -> anyhow::Result<DispatcherClient<Channel>> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(DispatcherClient::new(channel))
}

pub async fn connect_as(
    addr: SocketAddr,
    creds: &NodeCredentials,
) -> anyhow::Result<DispatcherClient<Channel>> {
    connect(addr, creds.client_tls(SERVER_NAME)).await
}

/// TLS that verifies the server but presents no certificate.
pub fn anonymous_tls(ca_pem: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(SERVER_NAME)
}

pub fn description(hostname: &str) -> NodeDescription {
    NodeDescription {
        hostname: hostname.into(),
        platform: Some(Platform {
            architecture: "x86_64".into(),
            os: "linux".into(),
        }),
        resources: Some(Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 4 << 30,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Opens a session and reads its first message.
pub async fn open_session(
    client: &mut DispatcherClient<Channel>,
    hostname: &str,
) -> Result<(SessionMessage, Streaming<SessionMessage>), Status> {
    let mut stream = client
        .session(SessionRequest {
            description: Some(description(hostname)),
            session_id: String::new(),
        })
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("session stream ended before its first message"))?;
    Ok((first, stream))
}

pub async fn heartbeat(
    client: &mut DispatcherClient<Channel>,
    session_id: &str,
) -> Result<Duration, Status> {
    let resp = client
        .heartbeat(HeartbeatRequest {
            session_id: session_id.into(),
        })
        .await?
        .into_inner();
    let period = resp
        .period
        .ok_or_else(|| Status::internal("heartbeat response without a period"))?;
    Ok(Duration::new(period.seconds as u64, period.nanos as u32))
}

pub fn state_of(node: &Node) -> NodeState {
    node.status
        .as_ref()
        .map(|s| s.state())
        .unwrap_or(NodeState::Unknown)
}

/// Waits until node `id` is stored in `state`; returns it.
pub async fn wait_for_state(
    store: &Store,
    id: &str,
    state: NodeState,
    deadline: Duration,
) -> anyhow::Result<Node> {
    shoal_testkit::wait_for(&format!("node {id} {state:?}"), deadline, || async {
        store
            .try_get::<Node>(id)
            .await
            .ok()
            .flatten()
            .filter(|n| state_of(n) == state)
    })
    .await
}

/// One stored node status, as a watch saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub node_id: String,
    pub state: NodeState,
    pub message: String,
    pub session_id: String,
}

/// Every node status the store goes through, from now on.
pub struct StatusLog {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl StatusLog {
    /// Records every node change committed after this call returns (the watch resumes
    /// from the store's revision now, so a change made before the spawned task first
    /// polls is still seen).
    pub async fn start(store: &Store) -> anyhow::Result<StatusLog> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let from = store.revision().await?;
        let mut watch = store.watch_kind::<Node>(Some(from));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(ev) = watch.next().await {
                let nodes = match ev {
                    WatchEvent::Added(n) | WatchEvent::Modified(n) => vec![n],
                    WatchEvent::Restarted { objects, .. } => objects,
                    _ => continue,
                };
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                for n in nodes {
                    log.push(Seen {
                        node_id: n.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
                        state: state_of(&n),
                        message: n
                            .status
                            .as_ref()
                            .map(|s| s.message.clone())
                            .unwrap_or_default(),
                        session_id: n.session_id.clone(),
                    });
                }
            }
        });
        Ok(StatusLog { seen, task })
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn states_of(&self, node_id: &str) -> Vec<NodeState> {
        self.all()
            .into_iter()
            .filter(|s| s.node_id == node_id)
            .map(|s| s.state)
            .collect()
    }
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A worker that keeps a session with whatever dispatcher `target` names: opens a
/// session, heartbeats every period the dispatcher returns, and opens a new session
/// whenever the stream or a heartbeat fails.
pub struct SimWorker {
    pub node_id: String,
    pub sessions: Arc<AtomicUsize>,
    pub heartbeats: Arc<AtomicUsize>,
    stop: ShutdownToken,
    task: Option<JoinHandle<()>>,
}

impl SimWorker {
    pub fn spawn(
        node_id: String,
        creds: NodeCredentials,
        target: watch::Receiver<SocketAddr>,
    ) -> SimWorker {
        let stop = ShutdownToken::new();
        let sessions = Arc::new(AtomicUsize::new(0));
        let heartbeats = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run_worker(
            node_id.clone(),
            creds,
            target,
            stop.clone(),
            sessions.clone(),
            heartbeats.clone(),
        ));
        SimWorker {
            node_id,
            sessions,
            heartbeats,
            stop,
            task: Some(task),
        }
    }

    /// Stops like a killed worker: its connection goes away.
    pub async fn kill(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run_worker(
    node_id: String,
    creds: NodeCredentials,
    target: watch::Receiver<SocketAddr>,
    stop: ShutdownToken,
    sessions: Arc<AtomicUsize>,
    heartbeats: Arc<AtomicUsize>,
) {
    let retry = Duration::from_millis(50);
    while !stop.is_cancelled() {
        let addr = *target.borrow();
        let mut client = match connect_as(addr, &creds).await {
            Ok(c) => c,
            Err(_) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => continue,
                }
            }
        };
        let (first, mut stream) = match open_session(&mut client, &node_id).await {
            Ok(s) => s,
            Err(_) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => continue,
                }
            }
        };
        sessions.fetch_add(1, Ordering::SeqCst);
        let mut period = PERIOD;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = stream.message() => match msg {
                    Ok(Some(_)) => continue,
                    _ => break,
                },
                _ = tokio::time::sleep(period * 9 / 10) => {
                    match heartbeat(&mut client, &first.session_id).await {
                        Ok(p) => {
                            period = p;
                            heartbeats.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

/// A task of service `service` (slot `slot`) placed on `node_id` in `state`, as the
/// scheduler leaves it (desired RUNNING).
pub fn task_on(node_id: &str, service: &str, slot: u64, state: TaskState) -> Task {
    Task {
        meta: Some(Meta {
            id: shoal_store::new_id(),
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            runtime: Some(Runtime::Container(ContainerSpec {
                image: "busybox:latest".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        service_id: format!("{service}-id"),
        slot,
        node_id: node_id.into(),
        service_annotations: Some(Annotations {
            name: service.into(),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: state as i32,
            message: "scheduler assigned task to node".into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

/// Opens the assignment stream of `session_id`.
pub async fn open_assignments(
    client: &mut DispatcherClient<Channel>,
    session_id: &str,
) -> Result<Streaming<AssignmentsMessage>, Status> {
    Ok(client
        .assignments(AssignmentsRequest {
            session_id: session_id.into(),
        })
        .await?
        .into_inner())
}

/// The next assignments message, within [`DEADLINE`].
pub async fn next_assignments(
    stream: &mut Streaming<AssignmentsMessage>,
) -> anyhow::Result<AssignmentsMessage> {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .context("no assignments message within the deadline")??
        .context("the assignments stream ended")
}

/// The ids a message updates, sorted.
pub fn updated_ids(msg: &AssignmentsMessage) -> Vec<String> {
    ids_with(msg, Action::Update)
}

/// The ids a message removes, sorted.
pub fn removed_ids(msg: &AssignmentsMessage) -> Vec<String> {
    ids_with(msg, Action::Remove)
}

/// The tasks a message updates.
pub fn updated_tasks(msg: &AssignmentsMessage) -> Vec<Task> {
    msg.changes
        .iter()
        .filter(|c| c.action() == Action::Update)
        .filter_map(|c| match c.assignment.as_ref()?.item.as_ref()? {
            Item::Task(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn ids_with(msg: &AssignmentsMessage, action: Action) -> Vec<String> {
    let mut ids: Vec<String> = msg
        .changes
        .iter()
        .filter(|c| c.action() == action)
        .filter_map(|c| match c.assignment.as_ref()?.item.as_ref()? {
            Item::Task(t) => Some(t.meta.as_ref()?.id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

pub fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

pub fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        message: message.into(),
        ..Default::default()
    }
}

pub fn status_update(task_id: &str, state: TaskState, message: &str) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: task_id.into(),
        status: Some(status(state, message)),
    }
}

pub async fn update_status(
    client: &mut DispatcherClient<Channel>,
    session_id: &str,
    updates: Vec<TaskStatusUpdate>,
) -> Result<Vec<Rejected>, Status> {
    Ok(client
        .update_task_status(UpdateTaskStatusRequest {
            session_id: session_id.into(),
            updates,
        })
        .await?
        .into_inner()
        .rejected)
}

/// A worker's session on `d`: its client, first message and session stream.
pub struct WorkerSession {
    pub node_id: String,
    pub client: DispatcherClient<Channel>,
    pub session_id: String,
    pub stream: Streaming<SessionMessage>,
}

impl Swarm {
    /// Joins a worker and opens its session on `d`.
    pub async fn worker_session(&self, d: &RunningDispatcher) -> anyhow::Result<WorkerSession> {
        let (node_id, creds) = self.join(Role::Worker).await?;
        let mut client = connect_as(d.addr, &creds).await?;
        let (first, stream) = open_session(&mut client, &node_id).await?;
        Ok(WorkerSession {
            node_id,
            client,
            session_id: first.session_id,
            stream,
        })
    }
}
