//! Load figures for one in-process dispatcher on real etcd + NATS, over real mTLS:
//! N workers (env `SESSIONS`, default 2000) each with its own node certificate and
//! connection open a session at once, then heartbeat as fast as they can for
//! `BENCH_SECS` (default 5) seconds. Prints registrations/s and heartbeats/s.
//!
//! The clients share the machine with the dispatcher, etcd and NATS, so the figures are
//! lower bounds. For scale: 20,000 nodes at Swarm's 5 s period send 4,000 heartbeats/s.
//!
//! `cargo run --release -p shoal-dispatcher --example bench_sessions`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use shoal_pki::Role;
use shoal_proto::v1::node_spec::Membership;
use shoal_proto::v1::node_status::State as NodeState;
use shoal_proto::v1::{Meta, Node, NodeRole, NodeSpec};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env("SESSIONS", 2000) as usize;
    let secs = env("BENCH_SECS", 5);
    // Swarm's default period: the bench drives heartbeats itself, as fast as it can.
    let swarm = Swarm::start(Duration::from_secs(5)).await?;

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
    let creds = ids
        .iter()
        .map(|id| swarm.credentials(id, Role::Worker, &swarm.cluster_id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("setup: {n} nodes and certificates in {:?}", t.elapsed());

    let d = swarm.start_dispatcher().await?;

    let t = Instant::now();
    let clients = futures::stream::iter(creds.iter().map(|c| connect_as(d.addr, c)))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let connect = t.elapsed();
    println!(
        "mTLS connections: {n} in {connect:?} ({:.0}/s)",
        n as f64 / connect.as_secs_f64()
    );

    let t = Instant::now();
    let sessions = futures::stream::iter(clients.into_iter().enumerate().map(
        |(i, mut c)| async move {
            let (first, stream) = open_session(&mut c, &format!("bench-{i}")).await?;
            Ok::<_, tonic::Status>((c, first.session_id, stream))
        },
    ))
    .buffer_unordered(n.max(1))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let register = t.elapsed();
    println!(
        "registrations: {n} sessions in {register:?} ({:.0}/s)",
        n as f64 / register.as_secs_f64()
    );

    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut streams = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    let t = Instant::now();
    for (mut client, session_id, stream) in sessions {
        streams.push(stream);
        let (count, errors, stop) = (count.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match heartbeat(&mut client, &session_id).await {
                    Ok(_) => count.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let beats = count.load(Ordering::Relaxed);
    let elapsed = t.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "heartbeats: {beats} in {elapsed:.1?} ({:.0}/s), {} refused",
        beats as f64 / elapsed.as_secs_f64(),
        errors.load(Ordering::Relaxed)
    );

    let ready = swarm
        .store()
        .get_many::<Node>(&ids)
        .await?
        .iter()
        .filter(|n| state_of(n) == NodeState::Ready)
        .count();
    println!(
        "nodes READY: {ready}/{n}; dispatcher tracks {:?}",
        d.dispatcher.session_counts()
    );
    drop(streams);
    d.stop().await
}
