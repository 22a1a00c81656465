//! The leader-only side of managers against real etcd and NATS, for the orchestrator
//! and allocator tests: managers campaigning and running the controller, the test
//! playing scheduler and worker by writing tasks itself.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use shoal_events::EventBus;
use shoal_grpc_host::ShutdownToken;
use shoal_manager::leadership;
use shoal_manager::orchestrator::{ControllerOptions, run_while_leading};
use shoal_proto::v1::node_spec::Availability;
use shoal_proto::v1::service_spec::Mode;
use shoal_proto::v1::{
    Annotations, Meta, Node, NodeSpec, NodeStatus, ReplicatedService, Service, Task, TaskState,
    TaskStatus, node_status,
};
use shoal_store::Store;
use shoal_testkit::{Infra, wait_for};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub infra: Infra,
    pub store: Store,
    pub bus: EventBus,
    pub shutdown: ShutdownToken,
}

/// One manager's leader-only side: its candidacy and its orchestrator.
pub struct Manager {
    /// Cancelling it resigns the leadership (the orchestrator keeps running, idle).
    pub candidacy: ShutdownToken,
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Cluster> {
        let infra = Infra::start().await?;
        let store = Store::connect(&[infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;
        let bus = EventBus::connect(&infra.nats.url(), "orchestrator-test").await?;
        Ok(Cluster {
            infra,
            store,
            bus,
            shutdown: ShutdownToken::new(),
        })
    }

    /// A manager campaigning for the leadership, with its own connections.
    pub async fn manager(&self, name: &str) -> anyhow::Result<Manager> {
        let store =
            Store::connect(&[self.infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;
        let bus = EventBus::connect(&self.infra.nats.url(), name).await?;
        let candidacy = self.shutdown.child_token();
        let (held, leader) = tokio::sync::watch::channel(None);
        tokio::spawn(leadership::hold(
            store.clone(),
            leadership::ELECTION.to_string(),
            name.to_string(),
            Duration::from_secs(3),
            candidacy.clone(),
            held,
        ));
        let options = ControllerOptions {
            resync_interval: Duration::from_secs(5),
            retry_delay: Duration::from_millis(200),
            ..ControllerOptions::default()
        };
        tokio::spawn(run_while_leading(
            store,
            bus,
            leader,
            self.shutdown.clone(),
            options,
        ));
        Ok(Manager { candidacy })
    }

    pub async fn add_node(&self, name: &str) -> anyhow::Result<Node> {
        Ok(self.store.create(ready_node(name)).await?)
    }

    pub async fn update_node(&self, id: &str, f: impl Fn(&mut Node)) -> anyhow::Result<Node> {
        loop {
            let mut n = self.store.get::<Node>(id).await?;
            f(&mut n);
            match self.store.update(n).await {
                Err(e) if e.is_conflict() => continue,
                r => return Ok(r?),
            }
        }
    }

    pub async fn update_service(
        &self,
        id: &str,
        f: impl Fn(&mut Service),
    ) -> anyhow::Result<Service> {
        loop {
            let mut s = self.store.get::<Service>(id).await?;
            f(&mut s);
            match self.store.update(s).await {
                Err(e) if e.is_conflict() => continue,
                r => return Ok(r?),
            }
        }
    }

    pub async fn scale(&self, id: &str, replicas: u64) -> anyhow::Result<Service> {
        self.update_service(id, |s| {
            if let Some(spec) = s.spec.as_mut() {
                spec.mode = Some(Mode::Replicated(ReplicatedService { replicas }));
            }
        })
        .await
    }

    /// Plays scheduler or worker: moves a task to `state` (on `node`, when given).
    pub async fn set_task(
        &self,
        id: &str,
        node: Option<&str>,
        state: TaskState,
    ) -> anyhow::Result<Task> {
        loop {
            let mut t = self.store.get::<Task>(id).await?;
            if let Some(node) = node {
                t.node_id = node.to_string();
            }
            let status = t.status.get_or_insert_with(TaskStatus::default);
            status.state = state as i32;
            status.timestamp = Some(prost_types::Timestamp::from(SystemTime::now()));
            match self.store.update(t).await {
                Err(e) if e.is_conflict() => continue,
                r => return Ok(r?),
            }
        }
    }

    pub async fn tasks(&self, service_id: &str) -> anyhow::Result<Vec<Task>> {
        Ok(self.store.tasks_by_service(service_id).await?.objects)
    }

    pub async fn wait_tasks(
        &self,
        what: &str,
        service_id: &str,
        cond: impl Fn(&[Task]) -> bool,
    ) -> anyhow::Result<Vec<Task>> {
        wait_for(what, DEADLINE, || async {
            let tasks = self.tasks(service_id).await.ok()?;
            cond(&tasks).then_some(tasks)
        })
        .await
    }

    pub async fn wait_service(
        &self,
        what: &str,
        id: &str,
        cond: impl Fn(&Service) -> bool,
    ) -> anyhow::Result<Service> {
        wait_for(what, DEADLINE, || async {
            let s = self.store.get::<Service>(id).await.ok()?;
            cond(&s).then_some(s)
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn ready_node(name: &str) -> Node {
    Node {
        meta: Some(Meta::default()),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: Default::default(),
            }),
            availability: Availability::Active as i32,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: node_status::State::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}
