//! Throughput of the store's batched hot paths against a real etcd.
//!
//! ```text
//! SHOAL_ETCD=http://127.0.0.1:2379 [SHOAL_BENCH_TASKS=20000] [SHOAL_BENCH_IN_FLIGHT=8] \
//!     [SHOAL_BENCH_PER_TXN=64] \
//!     cargo run --release -p shoal-store --example bench_update_many
//! ```
//!
//! Writes under a fresh `/shoal-bench/<id>` prefix and deletes it afterwards. Prints
//! figures; asserts nothing.

use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_proto::v1::{Task, TaskState};
use shoal_store::{Store, StoreOptions};

fn report(what: &str, n: usize, took: Duration, failed: usize) {
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "{what:<44} {n:>7} tasks {:>8.2} s {rate:>10.0} tasks/s{}",
        took.as_secs_f64(),
        if failed > 0 {
            format!("  ({failed} failed)")
        } else {
            String::new()
        }
    );
}

fn ok<T>(results: Vec<shoal_store::Result<T>>) -> (Vec<T>, usize) {
    let n = results.len();
    let oks: Vec<T> = results.into_iter().filter_map(Result::ok).collect();
    let failed = n - oks.len();
    (oks, failed)
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Ok(endpoint) = std::env::var("SHOAL_ETCD") else {
        eprintln!("set SHOAL_ETCD to an etcd client URL, e.g. http://127.0.0.1:2379");
        std::process::exit(2);
    };
    let n = env_usize("SHOAL_BENCH_TASKS").unwrap_or(20_000);
    let prefix = format!("/shoal-bench/{}", shoal_store::new_id());
    let mut options = StoreOptions::with_prefix(&prefix);
    if let Some(v) = env_usize("SHOAL_BENCH_IN_FLIGHT") {
        options.max_txns_in_flight = v;
    }
    if let Some(v) = env_usize("SHOAL_BENCH_PER_TXN") {
        options.max_objects_per_txn = v;
    }
    let store = Store::connect_with(std::slice::from_ref(&endpoint), options).await?;
    let opts = store.options().clone();
    println!(
        "etcd {endpoint}, {n} tasks, <= {} objects / {} ops per txn, {} txns in flight",
        opts.max_objects_per_txn, opts.max_txn_ops, opts.max_txns_in_flight
    );

    // Orchestrator: create tasks (object + 2 index keys each).
    let tasks: Vec<Task> = (0..n)
        .map(|i| Task {
            service_id: format!("svc-{}", i % 10),
            slot: (i / 10 + 1) as u64,
            desired_state: TaskState::Running as i32,
            status: Some(shoal_proto::v1::TaskStatus {
                state: TaskState::Pending as i32,
                message: "pending task scheduling".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let t = Instant::now();
    let (created, failed) = ok(store.create_many(tasks).await);
    report("create_many", n, t.elapsed(), failed);

    // Scheduler: assign nodes (moves the tasks-by-node index key).
    let half = created.len() / 2;
    let assign = |t: &Task, i: usize| {
        let mut u = t.clone();
        u.node_id = format!("node-{}", i % 50);
        u.status.get_or_insert_default().state = TaskState::Assigned as i32;
        u
    };
    let t = Instant::now();
    let (placed_a, failed) = ok(store
        .update_many(
            created[..half]
                .iter()
                .enumerate()
                .map(|(i, t)| assign(t, i))
                .collect(),
        )
        .await);
    report(
        "update_many: assign node (store finds old keys)",
        half,
        t.elapsed(),
        failed,
    );
    let t = Instant::now();
    let (placed_b, failed) = ok(store
        .update_many_from(
            created[half..]
                .iter()
                .enumerate()
                .map(|(i, t)| (t, assign(t, i))),
        )
        .await);
    report(
        "update_many_from: assign node (caller's copy)",
        created.len() - half,
        t.elapsed(),
        failed,
    );

    // Dispatcher: status reports (no index change).
    let placed: Vec<Task> = placed_a.into_iter().chain(placed_b).collect();
    let t = Instant::now();
    let (running, failed) = ok(store
        .update_many(
            placed
                .iter()
                .map(|t| {
                    let mut u = t.clone();
                    u.status.get_or_insert_default().state = TaskState::Running as i32;
                    u
                })
                .collect(),
        )
        .await);
    report(
        "update_many: status report",
        placed.len(),
        t.elapsed(),
        failed,
    );
    let t = Instant::now();
    let (running, failed) = ok(store
        .update_many_from(running.iter().map(|t| {
            let mut u = t.clone();
            u.status.get_or_insert_default().message = "started".into();
            (t, u)
        }))
        .await);
    report(
        "update_many_from: status report",
        placed.len(),
        t.elapsed(),
        failed,
    );

    // Baseline: the same kind of write one object per transaction, 8 in flight.
    let sample: Vec<Task> = running
        .iter()
        .take(2000.min(running.len()))
        .cloned()
        .collect();
    let t = Instant::now();
    let singles = futures::stream::iter(sample.iter().map(|t| {
        let mut u = t.clone();
        u.status.get_or_insert_default().message = "started".into();
        let store = store.clone();
        async move { store.update(u).await }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    let (_, failed) = ok(singles);
    report(
        "update: one per txn, 8 in flight (baseline)",
        sample.len(),
        t.elapsed(),
        failed,
    );

    // Reaper: delete (object + 2 index keys each).
    let current = store.list::<Task>().await?.objects;
    let t = Instant::now();
    let (_, failed) = ok(store.delete_many(current.clone()).await);
    report("delete_many", current.len(), t.elapsed(), failed);

    let left = store.list::<Task>().await?.objects.len();
    let mut raw = etcd_client::Client::connect([endpoint], None).await?;
    raw.delete(
        prefix,
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await?;
    println!("tasks left before cleanup: {left}");
    Ok(())
}
