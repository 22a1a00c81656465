//! Load figures for assignments and task status on one in-process dispatcher, on real
//! etcd + NATS over real mTLS: N workers (env `SESSIONS`, default 1000) with `TASKS`
//! (default 5) tasks each.
//! 1. every worker opens its assignment stream and waits for a COMPLETE with its tasks;
//! 2. every worker reports its tasks through ACCEPTED → PREPARING → READY → STARTING →
//!    RUNNING, one `UpdateTaskStatus` call per state (each answered once written):
//!    prints status writes/s and the writer's batches;
//! 3. every task's desired state is set to SHUTDOWN in the store: prints how long until
//!    every worker has received its INCREMENTAL (and, for comparison, when a fresh task
//!    cache in the bench saw the last write: the watch's own delay), and whether any
//!    worker was sent its own status reports back (it should not be).
//!
//! The clients share the machine with the dispatcher, etcd and NATS, so the figures are
//! lower bounds. `cargo run --release -p shoal-dispatcher --example bench_tasks`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use shoal_pki::Role;
use shoal_proto::v1::assignments_message::Type as MessageType;
use shoal_proto::v1::node_spec::Membership;
use shoal_proto::v1::{Meta, Node, NodeRole, NodeSpec, Task, TaskState};
use shoal_store::Object;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const STATES: [(TaskState, &str); 5] = [
    (TaskState::Accepted, "accepted"),
    (TaskState::Preparing, "preparing"),
    (TaskState::Ready, "prepared"),
    (TaskState::Starting, "starting"),
    (TaskState::Running, "started"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env("SESSIONS", 1000) as usize;
    let per = env("TASKS", 5) as usize;
    let swarm = Swarm::start(Duration::from_secs(60)).await?;

    let t = Instant::now();
    let ids: Vec<String> = (0..n).map(|_| shoal_store::new_id()).collect();
    let nodes = ids.iter().map(|id| Node {
        meta: Some(Meta {
            id: id.clone(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            membership: Membership::Accepted as i32,
            ..Default::default()
        }),
        role: NodeRole::Worker as i32,
        ..Default::default()
    });
    for r in swarm.store().create_many(nodes.collect()).await {
        r?;
    }
    let tasks: Vec<Task> = ids
        .iter()
        .flat_map(|node| {
            (0..per).map(move |i| task_on(node, "bench", (i + 1) as u64, TaskState::Assigned))
        })
        .collect();
    let task_ids: Vec<String> = tasks.iter().map(|t| t.id().to_string()).collect();
    for r in swarm.store().create_many(tasks).await {
        r?;
    }
    let creds = ids
        .iter()
        .map(|id| swarm.credentials(id, Role::Worker, &swarm.cluster_id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "setup: {n} nodes, {} tasks and certificates in {:?}",
        n * per,
        t.elapsed()
    );

    let d = swarm.start_dispatcher().await?;
    let clients = futures::stream::iter(creds.iter().map(|c| connect_as(d.addr, c)))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;

    // 1. Sessions and COMPLETE sets.
    let t = Instant::now();
    let workers = futures::stream::iter(clients.into_iter().enumerate().map(
        |(i, mut c)| async move {
            let (first, session) = open_session(&mut c, &format!("bench-{i}")).await?;
            let mut stream = open_assignments(&mut c, &first.session_id).await?;
            let complete = next_assignments(&mut stream).await?;
            anyhow::ensure!(complete.r#type() == MessageType::Complete);
            anyhow::ensure!(
                complete.changes.len() == per,
                "COMPLETE has the node's tasks"
            );
            Ok((c, first.session_id, session, stream, updated_ids(&complete)))
        },
    ))
    .buffer_unordered(n.max(1))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    let elapsed = t.elapsed();
    println!(
        "sessions + COMPLETE assignments: {n} in {elapsed:?} ({:.0}/s)",
        n as f64 / elapsed.as_secs_f64()
    );

    // 2. Status reports, one call per state per worker, all workers at once.
    let before = d.dispatcher.task_status_stats();
    let t = Instant::now();
    let workers = futures::stream::iter(workers.into_iter().map(
        |(mut c, session_id, session, stream, mine)| async move {
            for (state, message) in STATES {
                let rejected = update_status(
                    &mut c,
                    &session_id,
                    mine.iter()
                        .map(|id| status_update(id, state, message))
                        .collect(),
                )
                .await?;
                anyhow::ensure!(rejected.is_empty(), "rejected: {:?}", rejected.first());
            }
            Ok((c, session, stream))
        },
    ))
    .buffer_unordered(n.max(1))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    let elapsed = t.elapsed();
    let stats = d.dispatcher.task_status_stats();
    anyhow::ensure!(
        d.dispatcher.session_counts().live == n,
        "every session still live"
    );
    let written = stats.written - before.written;
    println!(
        "status writes: {written} in {elapsed:?} ({:.0}/s) in {} batches (writer busy {:?}), \
         {} calls ({:.0} calls/s)",
        written as f64 / elapsed.as_secs_f64(),
        stats.batches - before.batches,
        stats.busy - before.busy,
        n * STATES.len(),
        (n * STATES.len()) as f64 / elapsed.as_secs_f64()
    );

    // 3. A manager-side change reaches every worker; status echoes do not.
    let probe = shoal_store::Cache::<Task>::start(swarm.store());
    probe.wait_until_synced().await?;
    let t = Instant::now();
    let stored = swarm.store().get_many::<Task>(&task_ids).await?;
    let changed: Vec<Task> = stored
        .iter()
        .cloned()
        .map(|mut task| {
            task.desired_state = TaskState::Shutdown as i32;
            task
        })
        .collect();
    let mut last = 0;
    for r in swarm
        .store()
        .update_many_from(stored.iter().zip(changed))
        .await
    {
        last = last.max(r?.version());
    }
    let write = t.elapsed();
    probe.wait_for_revision(last).await?;
    println!(
        "a fresh task cache in this process saw the last write after {:?}",
        t.elapsed()
    );
    let results = futures::stream::iter(workers.into_iter().map(
        |(client, session, mut stream)| async move {
            // The connection and the session stay open until this worker is done.
            let _open = (client, session);
            let mut echoes = 0usize;
            let mut shut: HashSet<String> = HashSet::new();
            while shut.len() < per {
                let msg = next_assignments(&mut stream).await?;
                for task in updated_tasks(&msg) {
                    if task.desired_state == TaskState::Shutdown as i32 {
                        shut.insert(task.id().to_string());
                    } else {
                        echoes += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>((echoes, t.elapsed()))
        },
    ))
    .buffer_unordered(n.max(1))
    .collect::<Vec<_>>()
    .await;
    let elapsed = t.elapsed();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    if let Some(first) = failed.first() {
        anyhow::bail!(
            "{} of {n} workers were not told (first: {first}); streams open: {}, sessions: {:?}",
            failed.len(),
            d.dispatcher.assignment_streams(),
            d.dispatcher.session_counts()
        );
    }
    let (results, mut told): (Vec<usize>, Vec<Duration>) = results.into_iter().flatten().unzip();
    told.sort();
    let pct = |p: usize| told.get((told.len() * p / 100).min(told.len().saturating_sub(1)));
    println!(
        "workers told after: first {:?}, median {:?}, p99 {:?}",
        pct(0),
        pct(50),
        pct(99)
    );
    println!(
        "desired SHUTDOWN of {} tasks: written in {write:?}, every worker told within {elapsed:?}; \
         status echoes sent back: {}",
        n * per,
        results.iter().sum::<usize>()
    );
    d.stop().await
}
