//! The `shoal.v1.Dispatcher` gRPC API over a [`Dispatcher`].
//!
//! Identity comes only from the client certificate (mTLS; `shoal_pki::peer_info`): its
//! CN is the node id, its OU the role, its O the cluster id. A request without a
//! certificate is UNAUTHENTICATED; an admin certificate, a certificate of another swarm,
//! or one whose node is not (or no longer) in the store is PERMISSION_DENIED. No request
//! body ever names the node.

use std::sync::Arc;

use shoal_grpc_host::ShutdownToken;
use shoal_pki::{CertInfo, Role};
use shoal_proto::TaskStateExt;
use shoal_proto::v1::dispatcher_server::Dispatcher as DispatcherApi;
use shoal_proto::v1::node_spec::Membership;
use shoal_proto::v1::{
    AssignmentsMessage, AssignmentsRequest, Cluster, HeartbeatRequest, HeartbeatResponse, Node,
    SessionMessage, SessionRequest, TaskStatus, UpdateTaskStatusRequest, UpdateTaskStatusResponse,
    WeightedPeer,
};
use shoal_store::Object;
use tokio::sync::{OnceCell, oneshot};
use tokio::time::Instant;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::dispatcher::{Dispatcher, Shared};
use crate::presence;
use crate::task_status;
use crate::writer::{Change, RegisterError};

/// The Dispatcher API. Answers UNAVAILABLE until its [`Dispatcher`] is set (the server
/// starts before etcd and NATS are connected).
#[derive(Debug, Clone)]
pub struct DispatcherService {
    dispatcher: Arc<OnceCell<Dispatcher>>,
}

impl DispatcherService {
    /// A service over a running dispatcher.
    pub fn new(dispatcher: Dispatcher) -> Self {
        Self {
            dispatcher: Arc::new(OnceCell::new_with(Some(dispatcher))),
        }
    }

    /// A service whose dispatcher is set into `cell` once it has started.
    pub fn starting(cell: Arc<OnceCell<Dispatcher>>) -> Self {
        Self { dispatcher: cell }
    }

    fn shared(&self) -> Result<&Arc<Shared>, Status> {
        self.dispatcher.get().map(|d| &d.shared).ok_or_else(|| {
            Status::unavailable("the dispatcher is starting: cluster state is not reachable yet")
        })
    }
}

/// The identity the request's client certificate proves, if it may talk to a dispatcher.
pub fn peer_identity<T>(request: &Request<T>) -> Result<CertInfo, Status> {
    let info = shoal_pki::peer_info(request).ok_or_else(|| {
        Status::unauthenticated(
            "a node certificate is required: connect over mTLS with the certificate the node \
             received when it joined the swarm",
        )
    })?;
    if info.role == Role::Admin {
        return Err(Status::permission_denied(format!(
            "{} presents an admin certificate; dispatcher sessions are for nodes \
             (swarm-worker or swarm-manager certificates)",
            info.node_id
        )));
    }
    Ok(info)
}

fn duration_to_proto(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

impl Shared {
    /// The cluster, if the certificate belongs to it.
    fn check_cluster(&self, info: &CertInfo) -> Result<Arc<Cluster>, Status> {
        let cluster = self.cluster().ok_or_else(|| {
            Status::unavailable("the swarm's cluster object is not available yet; retry")
        })?;
        if cluster.id() != info.cluster_id {
            return Err(Status::permission_denied(format!(
                "the certificate of node {} belongs to swarm {}, not to this swarm ({})",
                info.node_id,
                info.cluster_id,
                cluster.id()
            )));
        }
        Ok(cluster)
    }

    /// The node, if it is an accepted member of the swarm. Read from the cache, or from
    /// etcd when the cache does not have it (yet). A node removed a moment ago that the
    /// cache still shows does not get in either: the registration is a compare-and-swap
    /// on the node, which fails on a deleted node.
    async fn member(&self, node_id: &str) -> Result<Arc<Node>, Status> {
        let node = match self.nodes.get(node_id) {
            Some(node) => Some(node),
            None => self
                .store
                .try_get::<Node>(node_id)
                .await
                .map_err(|e| Status::unavailable(format!("cannot read node {node_id}: {e}")))?
                .map(Arc::new),
        };
        let node = node.ok_or_else(|| {
            Status::permission_denied(format!("node {node_id} is not a member of this swarm"))
        })?;
        let accepted = node
            .spec
            .as_ref()
            .is_some_and(|s| s.membership() == Membership::Accepted);
        if !accepted {
            return Err(Status::permission_denied(format!(
                "node {node_id} is not accepted into this swarm yet (membership pending)"
            )));
        }
        Ok(node)
    }

    fn managers(&self) -> Vec<WeightedPeer> {
        if self.options.advertise_addr.is_empty() {
            return Vec::new();
        }
        vec![WeightedPeer {
            node_id: self.instance.clone(),
            addr: self.options.advertise_addr.clone(),
            weight: 1,
        }]
    }

    async fn open_session(
        self: Arc<Self>,
        request: Request<SessionRequest>,
    ) -> Result<Response<BoxStream<SessionMessage>>, Status> {
        let info = peer_identity(&request)?;
        let cluster = self.check_cluster(&info)?;
        let node_id = info.node_id;
        self.member(&node_id).await?;
        let now = Instant::now();
        if let Err(wait) = self.limiter.check(&node_id, now) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Status::resource_exhausted(format!(
                "node {node_id} re-registered too often; try again in {}s",
                secs.max(1)
            )));
        }
        let addr = request
            .remote_addr()
            .map(|a| a.ip().to_canonical().to_string());
        let description = request.into_inner().description;

        let session_id = presence::new_session_id(&self.instance);
        let (end_tx, end_rx) = oneshot::channel();
        let deadline = now + self.grace();
        if let Some(mut old) = self.table.open(&node_id, &session_id, deadline, end_tx) {
            old.end(Status::aborted(format!(
                "session {} of node {node_id} was replaced by a new session",
                old.session_id
            )));
        }
        self.deadlines.watch(&node_id, deadline);

        let written = tokio::time::timeout(
            self.options.register_timeout,
            self.writer
                .register(&node_id, &session_id, description, addr),
        )
        .await;
        let node = match written {
            Ok(Ok(node)) => node,
            Ok(Err(e)) => {
                self.table.remove_session(&node_id, &session_id);
                return Err(match e {
                    RegisterError::Removed(_) => Status::permission_denied(e.to_string()),
                    RegisterError::Unavailable(_) => Status::unavailable(e.to_string()),
                });
            }
            Err(_) => {
                self.table.remove_session(&node_id, &session_id);
                return Err(Status::unavailable(format!(
                    "the session of node {node_id} could not be recorded within {:?}; retry",
                    self.options.register_timeout
                )));
            }
        };
        if !self.table.is_live(&node_id, &session_id) {
            return Err(Status::aborted(format!(
                "session {session_id} of node {node_id} ended while it was being opened"
            )));
        }
        tracing::info!(node = %node_id, session = %session_id, "node registered");

        let first = SessionMessage {
            session_id: session_id.clone(),
            node: Some(node),
            managers: self.managers(),
            root_ca: cluster
                .root_ca
                .as_ref()
                .map(|r| r.ca_cert.clone())
                .unwrap_or_default(),
        };
        let state = SessionStream {
            first: Some(first),
            end: end_rx,
            shutdown: self.shutdown.clone(),
            done: false,
            _guard: SessionGuard {
                shared: self.clone(),
                node_id,
                session_id,
            },
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            if let Some(first) = st.first.take() {
                return Some((Ok(first), st));
            }
            if st.done {
                return None;
            }
            let status = tokio::select! {
                _ = st.shutdown.cancelled() => Status::unavailable(
                    "the dispatcher is shutting down; open a session with another manager",
                ),
                ended = &mut st.end => ended.unwrap_or_else(|_| Status::aborted("session ended")),
            };
            st.done = true;
            Some((Err(status), st))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

impl Shared {
    /// The caller's node id, if `session_id` is its live session here (Swarm: "session
    /// invalid", InvalidArgument).
    fn check_session(&self, info: &CertInfo, session_id: &str) -> Result<(), Status> {
        self.check_cluster(info)?;
        if self.table.is_live(&info.node_id, session_id) && !session_id.is_empty() {
            Ok(())
        } else {
            Err(session_invalid(&info.node_id, session_id))
        }
    }

    async fn open_assignments(
        self: Arc<Self>,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<BoxStream<AssignmentsMessage>>, Status> {
        let info = peer_identity(&request)?;
        self.check_cluster(&info)?;
        let session_id = request.into_inner().session_id;
        let ended = self
            .table
            .session_ended(&info.node_id, &session_id)
            .ok_or_else(|| session_invalid(&info.node_id, &session_id))?;
        let stream = self.assignments.stream(
            &info.node_id,
            &session_id,
            self.options.assignment_window,
            ended,
            self.shutdown.clone(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        let info = peer_identity(&request)?;
        let UpdateTaskStatusRequest {
            session_id,
            updates,
        } = request.into_inner();
        self.check_session(&info, &session_id)?;
        let node_id = info.node_id;
        let mut rejected = Vec::new();
        let mut valid = Vec::with_capacity(updates.len());
        // What this request has moved each task to so far, for the backwards check of a
        // later update of the same task.
        let mut states = std::collections::HashMap::new();
        for update in updates {
            let task_id = update.task_id;
            if task_id.is_empty() {
                rejected.push(task_status::rejected(
                    "",
                    "an update without a task id".into(),
                ));
                continue;
            }
            let Some(mut status) = update.status else {
                rejected.push(task_status::rejected(
                    &task_id,
                    format!("task {task_id}: the update carries no status"),
                ));
                continue;
            };
            if shoal_proto::v1::TaskState::try_from(status.state).is_err() {
                rejected.push(task_status::rejected(
                    &task_id,
                    format!("task {task_id}: unknown state {}", status.state),
                ));
                continue;
            }
            // A task the cache does not have (yet) is checked by the writer, on the copy
            // it reads from the store.
            if let Some(task) = self.assignments.tasks.get(&task_id) {
                if task.node_id != node_id {
                    rejected.push(task_status::not_on_node(&task_id));
                    continue;
                }
                let from = states.get(&task_id).copied().unwrap_or_else(|| {
                    task.status
                        .as_ref()
                        .map(TaskStatus::state)
                        .unwrap_or_default()
                });
                if !from.can_move_to(status.state()) {
                    rejected.push(task_status::backwards(&task_id, from, status.state()));
                    continue;
                }
            }
            states.insert(task_id.clone(), status.state());
            if status.timestamp.is_none() {
                status.timestamp = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
            }
            valid.push((task_id, status));
        }
        let refused = self
            .statuses
            .write(&node_id, valid)
            .await
            .map_err(Status::unavailable)?;
        rejected.extend(refused);
        Ok(Response::new(UpdateTaskStatusResponse { rejected }))
    }
}

fn session_invalid(node_id: &str, session_id: &str) -> Status {
    Status::invalid_argument(format!(
        "session invalid: {session_id:?} is not a live session of node {node_id} on this \
         dispatcher; open a new session"
    ))
}

struct SessionStream {
    first: Option<SessionMessage>,
    end: oneshot::Receiver<Status>,
    shutdown: ShutdownToken,
    done: bool,
    _guard: SessionGuard,
}

/// Dropped with the session's response stream. If the stream went away while the
/// session was still the node's live one here (the client left; not a shutdown, not an
/// expiry or replacement, which change the table first), the node is DISCONNECTED.
struct SessionGuard {
    shared: Arc<Shared>,
    node_id: String,
    session_id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let s = &self.shared;
        if s.shutdown.is_cancelled() {
            return;
        }
        let deadline = Instant::now() + s.grace();
        if s.table
            .stream_closed(&self.node_id, &self.session_id, deadline)
        {
            tracing::info!(node = %self.node_id, session = %self.session_id, "session stream closed; node disconnected");
            s.deadlines.watch(&self.node_id, deadline);
            s.writer.send(
                &self.node_id,
                Change::Disconnected {
                    session_id: std::mem::take(&mut self.session_id),
                },
            );
        }
    }
}

#[tonic::async_trait]
impl DispatcherApi for DispatcherService {
    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<BoxStream<SessionMessage>>, Status> {
        self.shared()?.clone().open_session(request).await
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let shared = self.shared()?;
        let info = peer_identity(&request)?;
        let cluster = shared.check_cluster(&info)?;
        let period = crate::dispatcher::heartbeat_period(Some(&cluster));
        let session_id = &request.get_ref().session_id;
        let deadline = Instant::now() + period * crate::dispatcher::MISSED_HEARTBEATS;
        if shared.table.heartbeat(&info.node_id, session_id, deadline) {
            Ok(Response::new(HeartbeatResponse {
                period: Some(duration_to_proto(period)),
            }))
        } else {
            Err(Status::not_found(format!(
                "session invalid: {session_id:?} is not a live session of node {} on this \
                 dispatcher; open a new session",
                info.node_id
            )))
        }
    }

    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<BoxStream<AssignmentsMessage>>, Status> {
        self.shared()?.clone().open_assignments(request).await
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        self.shared()?.update_task_status(request).await
    }
}
