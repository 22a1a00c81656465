//! The Control API. Reads go to etcd through the store; writes are compare-and-swap
//! transactions, then a hint event. Errors carry gRPC codes a client can act on and
//! messages in Swarm's words where Swarm has them.
//!
//! Secret payloads are sealed before they are stored and never leave through this
//! API: every secret it returns has neither `spec.data` nor `sealed`.

mod configs;
mod filters;
mod logs;
pub mod networks;
pub mod nodes;
mod secrets;
mod services;
pub mod validate;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use shoal_events::EventFilter;
use shoal_grpc_host::{ClusterState, ShutdownToken};
use shoal_proto::TaskStateExt;
use shoal_proto::v1::control_server::Control;
use shoal_proto::v1::*;
use shoal_store::{Index, Object};
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status};

use crate::ManagerConfig;

pub use filters::{Filterable, Lookup, lookup, matches};

pub struct ControlService {
    state: Arc<OnceCell<ClusterState>>,
    shutdown: ShutdownToken,
    cfg: Arc<ManagerConfig>,
}

impl ControlService {
    pub fn new(
        state: Arc<OnceCell<ClusterState>>,
        shutdown: ShutdownToken,
        cfg: Arc<ManagerConfig>,
    ) -> Self {
        Self {
            state,
            shutdown,
            cfg,
        }
    }

    fn state(&self) -> Result<&ClusterState, Status> {
        self.state.get().ok_or_else(|| {
            Status::unavailable("the manager is starting: etcd and NATS are not reachable yet")
        })
    }

    /// One object by id, name or unique id prefix (Docker's rule).
    async fn resolve<T: Filterable>(&self, reference: &str) -> Result<T, Status> {
        let kind = T::KIND;
        if reference.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{kind} id or name is required"
            )));
        }
        let store = &self.state()?.store;
        if let Some(obj) = store.try_get::<T>(reference).await.map_err(store_status)? {
            return Ok(obj);
        }
        if kind.has_unique_names() {
            match store.get_by_name::<T>(reference).await {
                Ok(obj) => return Ok(obj),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(store_status(e)),
            }
        }
        let all = store.list::<T>().await.map_err(store_status)?.objects;
        match lookup(&all, reference) {
            Lookup::Found(obj) => Ok(obj.clone()),
            Lookup::NotFound => Err(Status::not_found(format!("{kind} {reference} not found"))),
            Lookup::Ambiguous(n) => Err(Status::invalid_argument(format!(
                "{kind} {reference} is ambiguous ({n} matches found)"
            ))),
        }
    }

    async fn list<T: Filterable>(&self, filters: Option<ListFilters>) -> Result<Vec<T>, Status> {
        let filters = filters.unwrap_or_default();
        let listed = self
            .state()?
            .store
            .list::<T>()
            .await
            .map_err(store_status)?;
        Ok(listed
            .objects
            .into_iter()
            .filter(|o| matches(o, &filters))
            .collect())
    }

    /// Tasks, through the service or node index when the filter names them, so a
    /// `service ps` never reads every task of the cluster.
    async fn list_tasks(&self, filters: Option<ListFilters>) -> Result<Vec<Task>, Status> {
        let filters = filters.unwrap_or_default();
        let store = &self.state()?.store;
        let (index, values) = if !filters.service_ids.is_empty() {
            (Some(Index::TasksByService), &filters.service_ids)
        } else if !filters.node_ids.is_empty() {
            (Some(Index::TasksByNode), &filters.node_ids)
        } else {
            (None, &filters.service_ids)
        };
        let mut tasks = Vec::new();
        match index {
            Some(index) => {
                for value in values {
                    let listed = store
                        .by_index::<Task>(index, value)
                        .await
                        .map_err(store_status)?;
                    tasks.extend(listed.objects);
                }
            }
            None => tasks = store.list::<Task>().await.map_err(store_status)?.objects,
        }
        tasks.retain(|t| matches(t, &filters));
        Ok(tasks)
    }
}

/// Deletes the `T` `id` (at `version`; any when `None`) and returns it as it was; an
/// object already gone is NotFound with `not_found`'s message.
pub async fn delete_or_not_found<T: shoal_store::Object>(
    state: &ClusterState,
    id: &str,
    version: Option<u64>,
    not_found: impl FnOnce() -> String,
) -> Result<T, Status> {
    state
        .store
        .delete::<T>(id, version)
        .await
        .map_err(|e| match e {
            shoal_store::Error::NotFound { .. } => Status::not_found(not_found()),
            e => store_status(e),
        })
}

/// A store error as the status a client sees.
pub fn store_status(e: shoal_store::Error) -> Status {
    use shoal_store::Error as E;
    match &e {
        E::NotFound { .. } => Status::not_found(e.to_string()),
        // Swarm's wording.
        E::AlreadyExists { kind, name } => {
            Status::already_exists(format!("{kind} {name} already exists"))
        }
        E::IdExists { .. } => Status::already_exists(e.to_string()),
        E::Conflict { .. } => Status::failed_precondition(format!(
            "update out of sequence: {e}; read the object again and retry"
        )),
        E::Invalid(_) | E::TooManyOps { .. } => Status::invalid_argument(e.to_string()),
        E::Fenced { .. } | E::LeaseLost(_) | E::Etcd(_) => {
            Status::unavailable(format!("cluster state is unavailable: {e}"))
        }
        _ => Status::internal(e.to_string()),
    }
}

/// What the generated trait expects of a server stream.
type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Control for ControlService {
    // ------------------------------------------------------------------ nodes

    async fn get_node(
        &self,
        req: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        let node = self.resolve::<Node>(&req.into_inner().node_id).await?;
        let mut nodes = [node];
        nodes::decorate(&self.state()?.store, &mut nodes).await?;
        let [node] = nodes;
        Ok(Response::new(GetNodeResponse { node: Some(node) }))
    }

    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let mut nodes = self.list::<Node>(req.into_inner().filters).await?;
        nodes::decorate(&self.state()?.store, &mut nodes).await?;
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        let req = req.into_inner();
        let current = self.resolve::<Node>(&req.node_id).await?;
        let version = req
            .node_version
            .ok_or_else(|| Status::invalid_argument("node_version: the version read is required"))?
            .index;
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: a node spec is required"))?;
        let node = nodes::update(self.state()?, current, version, spec).await?;
        Ok(Response::new(UpdateNodeResponse { node: Some(node) }))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let req = req.into_inner();
        let node = self.resolve::<Node>(&req.node_id).await?;
        nodes::remove(self.state()?, node, req.force).await?;
        Ok(Response::new(RemoveNodeResponse {}))
    }

    // --------------------------------------------------------------- services

    async fn get_service(
        &self,
        req: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        let service = self
            .resolve::<Service>(&req.into_inner().service_id)
            .await?;
        Ok(Response::new(GetServiceResponse {
            service: Some(service),
        }))
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let services = self.list::<Service>(req.into_inner().filters).await?;
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn create_service(
        &self,
        req: Request<CreateServiceRequest>,
    ) -> Result<Response<CreateServiceResponse>, Status> {
        let service = services::create(self.state()?, req.into_inner()).await?;
        Ok(Response::new(CreateServiceResponse {
            service: Some(service),
        }))
    }

    async fn update_service(
        &self,
        req: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        let req = req.into_inner();
        let current = self.resolve::<Service>(&req.service_id).await?;
        let service = services::update(self.state()?, current, req).await?;
        Ok(Response::new(UpdateServiceResponse {
            service: Some(service),
        }))
    }

    async fn remove_service(
        &self,
        req: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        let current = self
            .resolve::<Service>(&req.into_inner().service_id)
            .await?;
        services::remove(self.state()?, current).await?;
        Ok(Response::new(RemoveServiceResponse {}))
    }

    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<logs::LogStream>, Status> {
        let req = req.into_inner();
        if req.selectors.is_empty() {
            return Err(Status::invalid_argument(
                "selectors: at least one service or task is required",
            ));
        }
        let state = self.state()?;
        let mut selection = logs::Selection::default();
        for selector in &req.selectors {
            match self.resolve::<Service>(selector).await {
                Ok(service) => {
                    let tasks = state
                        .store
                        .tasks_by_service(service.id())
                        .await
                        .map_err(store_status)?
                        .objects;
                    selection.add_service(service.id(), tasks);
                    continue;
                }
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e),
            }
            match self.resolve::<Task>(selector).await {
                Ok(task) => selection.add_task(task),
                // Docker's wording.
                Err(e) if e.code() == tonic::Code::NotFound => {
                    return Err(Status::not_found(format!(
                        "no such task or service: {selector}"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        let stream = logs::stream(
            state.bus.clone(),
            selection,
            req.follow,
            req.tail,
            self.shutdown.clone(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn list_service_statuses(
        &self,
        req: Request<ListServiceStatusesRequest>,
    ) -> Result<Response<ListServiceStatusesResponse>, Status> {
        let store = &self.state()?.store;
        let mut statuses = Vec::new();
        for reference in req.into_inner().service_ids {
            let service = self.resolve::<Service>(&reference).await?;
            let tasks = store
                .tasks_by_service(service.id())
                .await
                .map_err(store_status)?
                .objects;
            statuses.push(service_status(&service, &tasks));
        }
        Ok(Response::new(ListServiceStatusesResponse { statuses }))
    }

    // ------------------------------------------------------------------ tasks

    async fn get_task(
        &self,
        req: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskResponse>, Status> {
        let task = self.resolve::<Task>(&req.into_inner().task_id).await?;
        Ok(Response::new(GetTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let tasks = self.list_tasks(req.into_inner().filters).await?;
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    // --------------------------------------------------------------- networks

    async fn get_network(
        &self,
        req: Request<GetNetworkRequest>,
    ) -> Result<Response<GetNetworkResponse>, Status> {
        let network = self
            .resolve::<Network>(&req.into_inner().network_id)
            .await?;
        Ok(Response::new(GetNetworkResponse {
            network: Some(network),
        }))
    }

    async fn list_networks(
        &self,
        req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let networks = self.list::<Network>(req.into_inner().filters).await?;
        Ok(Response::new(ListNetworksResponse { networks }))
    }

    async fn create_network(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<CreateNetworkResponse>, Status> {
        let network = networks::create(self.state()?, req.into_inner()).await?;
        Ok(Response::new(CreateNetworkResponse {
            network: Some(network),
        }))
    }

    async fn update_network(
        &self,
        req: Request<UpdateNetworkRequest>,
    ) -> Result<Response<UpdateNetworkResponse>, Status> {
        let req = req.into_inner();
        let current = self.resolve::<Network>(&req.network_id).await?;
        let network = networks::update(self.state()?, current, req).await?;
        Ok(Response::new(UpdateNetworkResponse {
            network: Some(network),
        }))
    }

    async fn remove_network(
        &self,
        req: Request<RemoveNetworkRequest>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        let current = self
            .resolve::<Network>(&req.into_inner().network_id)
            .await?;
        networks::remove(self.state()?, current).await?;
        Ok(Response::new(RemoveNetworkResponse {}))
    }

    // ---------------------------------------------------------------- secrets

    async fn get_secret(
        &self,
        req: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let secret = self.resolve::<Secret>(&req.into_inner().secret_id).await?;
        Ok(Response::new(GetSecretResponse {
            secret: Some(without_data(secret)),
        }))
    }

    async fn list_secrets(
        &self,
        req: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        let secrets = self
            .list::<Secret>(req.into_inner().filters)
            .await?
            .into_iter()
            // As swarmkit: internal secrets are the dispatcher's, not the user's.
            .filter(|s| !s.internal)
            .map(without_data)
            .collect();
        Ok(Response::new(ListSecretsResponse { secrets }))
    }

    async fn create_secret(
        &self,
        req: Request<CreateSecretRequest>,
    ) -> Result<Response<CreateSecretResponse>, Status> {
        let secret = secrets::create(self.state()?, &self.cfg.kek_file, req.into_inner()).await?;
        Ok(Response::new(CreateSecretResponse {
            secret: Some(without_data(secret)),
        }))
    }

    async fn update_secret(
        &self,
        req: Request<UpdateSecretRequest>,
    ) -> Result<Response<UpdateSecretResponse>, Status> {
        let req = req.into_inner();
        // swarmkit's answer to a request without an id or a version.
        if req.secret_id.is_empty() || req.secret_version.is_none() {
            return Err(Status::invalid_argument(
                "invalid argument: secret_id and secret_version are required",
            ));
        }
        let current = self.resolve::<Secret>(&req.secret_id).await?;
        let secret = secrets::update(self.state()?, &self.cfg.kek_file, current, req).await?;
        Ok(Response::new(UpdateSecretResponse {
            secret: Some(without_data(secret)),
        }))
    }

    async fn remove_secret(
        &self,
        req: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        let reference = req.into_inner().secret_id;
        if reference.is_empty() {
            return Err(Status::invalid_argument("secret ID must be provided"));
        }
        let current = self
            .resolve::<Secret>(&reference)
            .await
            .map_err(|e| match e.code() {
                tonic::Code::NotFound => {
                    Status::not_found(format!("could not find secret {reference}"))
                }
                _ => e,
            })?;
        secrets::remove(self.state()?, current).await?;
        Ok(Response::new(RemoveSecretResponse {}))
    }

    // ---------------------------------------------------------------- configs

    async fn get_config(
        &self,
        req: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let config = self.resolve::<Config>(&req.into_inner().config_id).await?;
        Ok(Response::new(GetConfigResponse {
            config: Some(config),
        }))
    }

    async fn list_configs(
        &self,
        req: Request<ListConfigsRequest>,
    ) -> Result<Response<ListConfigsResponse>, Status> {
        let configs = self.list::<Config>(req.into_inner().filters).await?;
        Ok(Response::new(ListConfigsResponse { configs }))
    }

    async fn create_config(
        &self,
        req: Request<CreateConfigRequest>,
    ) -> Result<Response<CreateConfigResponse>, Status> {
        let config = configs::create(self.state()?, req.into_inner()).await?;
        Ok(Response::new(CreateConfigResponse {
            config: Some(config),
        }))
    }

    async fn update_config(
        &self,
        req: Request<UpdateConfigRequest>,
    ) -> Result<Response<UpdateConfigResponse>, Status> {
        let req = req.into_inner();
        let current = self.resolve::<Config>(&req.config_id).await?;
        let config = configs::update(self.state()?, current, req).await?;
        Ok(Response::new(UpdateConfigResponse {
            config: Some(config),
        }))
    }

    async fn remove_config(
        &self,
        req: Request<RemoveConfigRequest>,
    ) -> Result<Response<RemoveConfigResponse>, Status> {
        let reference = req.into_inner().config_id;
        let current = self
            .resolve::<Config>(&reference)
            .await
            .map_err(|e| match e.code() {
                tonic::Code::NotFound => {
                    Status::not_found(format!("could not find config {reference}"))
                }
                _ => e,
            })?;
        configs::remove(self.state()?, current).await?;
        Ok(Response::new(RemoveConfigResponse {}))
    }

    // ---------------------------------------------------------------- cluster

    async fn get_cluster(
        &self,
        req: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        let cluster = self
            .resolve::<Cluster>(&req.into_inner().cluster_id)
            .await?;
        Ok(Response::new(GetClusterResponse {
            cluster: Some(without_ca_key(cluster)),
        }))
    }

    async fn list_clusters(
        &self,
        req: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        let clusters = self
            .list::<Cluster>(req.into_inner().filters)
            .await?
            .into_iter()
            .map(without_ca_key)
            .collect();
        Ok(Response::new(ListClustersResponse { clusters }))
    }

    async fn init_cluster(
        &self,
        req: Request<InitClusterRequest>,
    ) -> Result<Response<InitClusterResponse>, Status> {
        let resp = crate::swarm::init(self.state()?, &self.cfg, req.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn update_cluster(
        &self,
        req: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        let req = req.into_inner();
        let current = self.resolve::<Cluster>(&req.cluster_id).await?;
        let version = req
            .cluster_version
            .ok_or_else(|| {
                Status::invalid_argument("cluster_version: the version read is required")
            })?
            .index;
        let rotation = req.rotation.unwrap_or_default();
        let mut next = crate::swarm::apply_cluster_update(
            &current,
            req.spec,
            rotation.worker_join_token,
            rotation.manager_join_token,
            self.cfg.min_cert_expiry,
        )?;
        next.set_version(version);
        let state = self.state()?;
        let stored = state.store.update(next).await.map_err(store_status)?;
        crate::announce::announce(
            &state.bus,
            "update",
            &stored,
            shoal_grpc_host::identity::CLUSTER_NAME,
        )
        .await;
        Ok(Response::new(UpdateClusterResponse {
            cluster: Some(without_ca_key(stored)),
        }))
    }

    async fn leave_swarm(
        &self,
        req: Request<LeaveSwarmRequest>,
    ) -> Result<Response<LeaveSwarmResponse>, Status> {
        let local = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .is_some();
        if !local {
            return Err(Status::permission_denied(
                "swarm leave runs on the manager's own host, through its local socket",
            ));
        }
        if !req.into_inner().force {
            return Err(Status::failed_precondition(
                "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.",
            ));
        }
        crate::swarm::dissolve(self.state()?, &self.cfg).await?;
        Ok(Response::new(LeaveSwarmResponse {}))
    }

    // ----------------------------------------------------------------- events

    async fn watch_events(
        &self,
        req: Request<WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let want = req.into_inner();
        let bus = &self.state()?.bus;
        // One kind and one action narrow the NATS subscription itself; anything wider
        // subscribes to all events and filters here.
        let filter = match (want.kinds.as_slice(), want.actions.as_slice()) {
            ([kind], [action]) => EventFilter::kind(kind.clone()).with_action(action.clone()),
            ([kind], _) => EventFilter::kind(kind.clone()),
            _ => EventFilter::all(),
        };
        let stream = bus
            .subscribe(&filter)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let shutdown = self.shutdown.clone().cancelled_owned();
        let events = stream
            .filter_map(move |received| {
                let event = received.event;
                let keep = (want.kinds.is_empty() || want.kinds.contains(&event.kind))
                    && (want.actions.is_empty() || want.actions.contains(&event.action))
                    && (want.ids.is_empty() || want.ids.contains(&event.id));
                std::future::ready(keep.then_some(Ok(event)))
            })
            .take_until(shutdown);
        Ok(Response::new(Box::pin(events)))
    }
}

/// Running / desired counts as `service ls` shows them.
fn service_status(service: &Service, tasks: &[Task]) -> ServiceStatus {
    let running_desired = |t: &&Task| t.desired_state == TaskState::Running as i32;
    let state_of = |t: &Task| {
        t.status
            .as_ref()
            .map(|s| s.state())
            .unwrap_or(TaskState::New)
    };
    let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(service_spec::Mode::Replicated(r)) => r.replicas,
        Some(service_spec::Mode::ReplicatedJob(j)) => j.total_completions,
        _ => tasks.iter().filter(running_desired).count() as u64,
    };
    ServiceStatus {
        service_id: service.id().to_string(),
        desired_tasks: desired,
        running_tasks: tasks
            .iter()
            .filter(|t| state_of(t) == TaskState::Running && !state_of(t).is_terminal())
            .filter(running_desired)
            .count() as u64,
        completed_tasks: tasks
            .iter()
            .filter(|t| state_of(t) == TaskState::Complete)
            .count() as u64,
    }
}

/// Secret data never leaves the managers through the Control API, neither plain nor
/// sealed.
fn without_data(mut secret: Secret) -> Secret {
    if let Some(spec) = secret.spec.as_mut() {
        spec.data.clear();
    }
    secret.sealed.clear();
    secret
}

/// The CA key stays in etcd, encrypted; clients get the certificate only.
fn without_ca_key(mut cluster: Cluster) -> Cluster {
    if let Some(ca) = cluster.root_ca.as_mut() {
        ca.ca_key_encrypted.clear();
    }
    cluster
}
