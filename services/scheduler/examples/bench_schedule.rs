//! Placement throughput against a real etcd: N ready nodes, M pending tasks written
//! first, then one scheduler started; prints placements per second from its start to
//! the last committed placement (and checks the store agrees).
//!
//! ```text
//! cargo run --release -p shoal-scheduler --example bench_schedule -- [NODES] [TASKS] [SERVICES] [SCHEDULERS]
//! ```
//! Defaults: 100 nodes, 20000 tasks, 10 services, 1 scheduler.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoal_events::EventBus;
use shoal_grpc_host::{ClusterState, ShutdownToken};
use shoal_proto::v1::executor_description::Kind as ExecutorKind;
use shoal_proto::v1::node_status::State as NodeState;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{
    Annotations, ContainerSpec, ExecutorDescription, Meta, Node, NodeDescription, NodeSpec,
    NodeStatus, Placement, Platform, ResourceRequirements, Resources, Task, TaskSpec, TaskState,
    TaskStatus, Version,
};
use shoal_scheduler::{Scheduler, SchedulerOptions};
use shoal_store::Store;

fn arg(i: usize, default: usize) -> anyhow::Result<usize> {
    match std::env::args().nth(i) {
        Some(a) => Ok(a.parse()?),
        None => Ok(default),
    }
}

fn node(i: usize) -> Node {
    Node {
        meta: Some(Meta {
            id: format!("node{i:05}"),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations::default()),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: format!("host{i}"),
            platform: Some(Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
            }),
            resources: Some(Resources {
                nano_cpus: 64_000_000_000,
                memory_bytes: 256 << 30,
                ..Default::default()
            }),
            executors: vec![ExecutorDescription {
                kind: ExecutorKind::Docker as i32,
                version: String::new(),
            }],
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(service: usize, slot: u64) -> Task {
    Task {
        spec: Some(TaskSpec {
            runtime: Some(Runtime::Container(ContainerSpec {
                image: "busybox:latest".into(),
                ..Default::default()
            })),
            resources: Some(ResourceRequirements {
                limits: None,
                reservations: Some(Resources {
                    nano_cpus: 1_000_000,
                    memory_bytes: 1 << 20,
                    ..Default::default()
                }),
            }),
            placement: Some(Placement::default()),
            ..Default::default()
        }),
        service_id: format!("service{service:03}"),
        service_annotations: Some(Annotations {
            name: format!("svc{service}"),
            ..Default::default()
        }),
        slot,
        status: Some(TaskStatus {
            state: TaskState::Pending as i32,
            message: "pending task scheduling".into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        spec_version: Some(Version { index: 1 }),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes = arg(1, 100)?;
    let tasks = arg(2, 20_000)?;
    let services = arg(3, 10)?.max(1);
    let schedulers = arg(4, 1)?.max(1);

    let infra = shoal_testkit::Infra::start().await?;
    let endpoints = [infra.etcd.endpoint()];
    let store = Store::connect(&endpoints, shoal_store::DEFAULT_PREFIX).await?;

    let t = Instant::now();
    for r in store.create_many((0..nodes).map(node).collect()).await {
        r?;
    }
    let per_service = tasks.div_ceil(services);
    let all: Vec<Task> = (0..tasks)
        .map(|i| task(i / per_service, (i % per_service) as u64 + 1))
        .collect();
    for r in store.create_many(all).await {
        r?;
    }
    println!(
        "wrote {nodes} nodes and {tasks} pending tasks in {:.2?}",
        t.elapsed()
    );

    let shutdown = ShutdownToken::new();
    let started = Instant::now();
    let mut running = Vec::new();
    // Placing starts as soon as the first scheduler is up.
    let mut synced = None;
    for _ in 0..schedulers {
        let state = ClusterState {
            store: Store::connect(&endpoints, shoal_store::DEFAULT_PREFIX).await?,
            bus: EventBus::connect(&infra.nats.url(), "bench-scheduler").await?,
        };
        running.push(Scheduler::start(state, SchedulerOptions::default(), shutdown.clone()).await?);
        synced.get_or_insert(started.elapsed());
    }
    let synced = synced.unwrap_or_default();
    let placed = || {
        running
            .iter()
            .map(|s| s.stats().placed.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    shoal_testkit::wait_for("every task placed", Duration::from_secs(600), || async {
        (placed() >= tasks as u64).then_some(())
    })
    .await?;
    let total = started.elapsed();
    let placing = total.saturating_sub(synced);

    let stored = store.list::<Task>().await?.objects;
    let assigned = stored
        .iter()
        .filter(|t| t.status.as_ref().map(|s| s.state()) == Some(TaskState::Assigned))
        .count();
    anyhow::ensure!(
        assigned == tasks,
        "store shows {assigned} of {tasks} assigned"
    );
    let passes: u64 = running
        .iter()
        .map(|s| s.stats().passes.load(Ordering::Relaxed))
        .sum();
    let conflicts: u64 = running
        .iter()
        .map(|s| s.stats().conflicts.load(Ordering::Relaxed))
        .sum();
    println!(
        "{schedulers} scheduler(s): cache sync {synced:.2?}, placed {tasks} tasks on {nodes} nodes \
         in {placing:.2?} ({passes} passes, {conflicts} lost CAS)"
    );
    println!(
        "placements/s: {:.0} (placing only), {:.0} (including the cache sync)",
        tasks as f64 / placing.as_secs_f64(),
        tasks as f64 / total.as_secs_f64()
    );
    shutdown.cancel();
    Ok(())
}
