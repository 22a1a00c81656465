//! Load figures for cluster names on one in-process shoal-dns, on real etcd + NATS:
//! `SERVICES` services (default 200) with `TASKS` RUNNING tasks each (default 4), then
//! `CLIENTS` concurrent UDP clients (default 32) asking `<service>`, `tasks.<service>`
//! and task names in turn for `SECONDS` (default 5). Prints queries/s, latency
//! percentiles and unanswered queries; then how long a task leaving RUNNING takes to
//! leave the answers.
//!
//! The clients share the machine with the server, etcd and NATS, so the figures are
//! lower bounds. `cargo run --release -p shoal-dns --example bench_dns`

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use shoal_proto::v1::endpoint_spec::ResolutionMode;
use shoal_proto::v1::{NetworkAttachment, Task, TaskState, TaskStatus};
use tokio::net::UdpSocket;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One client: asks `names` in turn until `until`; returns latencies and misses.
async fn client(
    server: SocketAddr,
    names: Arc<Vec<Vec<u8>>>,
    offset: usize,
    until: Instant,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    socket.connect(server).await?;
    let mut latencies = Vec::new();
    let mut misses = 0;
    let mut buf = vec![0u8; 4096];
    let mut i = offset;
    let mut id: u16 = 0;
    while Instant::now() < until {
        let mut query = names[i % names.len()].clone();
        i += 1;
        id = id.wrapping_add(1);
        query[..2].copy_from_slice(&id.to_be_bytes());
        let sent = Instant::now();
        socket.send(&query).await?;
        let answered = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                let n = socket.recv(&mut buf).await?;
                if n >= 2 && buf[..2] == id.to_be_bytes() {
                    return Ok::<_, std::io::Error>(());
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(())) => latencies.push(sent.elapsed()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => misses += 1,
        }
    }
    Ok((latencies, misses))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let services = env("SERVICES", 200) as usize;
    let per = env("TASKS", 4) as usize;
    let clients = env("CLIENTS", 32) as usize;
    let seconds = env("SECONDS", 5);
    anyhow::ensure!(
        per <= 250 && services <= 250 * 200,
        "too many tasks for the address plan"
    );

    let swarm = Swarm::start().await?;
    let dns = swarm.start_dns(&[]).await?;
    let net = swarm.network("bench", 1, false).await?;

    let t = Instant::now();
    let mut task_names = Vec::new();
    let mut last_task: Option<Task> = None;
    for s in 0..services {
        let service = swarm
            .service(&format!("svc-{s}"), ResolutionMode::Vip, &[&net], 1)
            .await?;
        let tasks: Vec<Task> = (0..per)
            .map(|k| {
                // Addresses 127.128.x.y beyond the network's /24 are fine for the table.
                let n = s * per + k + 2;
                let addr = format!("127.{}.{}.{}/8", 129 + n / 65536, (n / 256) % 256, n % 256);
                Task {
                    meta: Some(shoal_proto::v1::Meta {
                        id: shoal_store::new_id(),
                        ..Default::default()
                    }),
                    service_id: id_of(&service),
                    slot: k as u64 + 1,
                    node_id: "node-1".into(),
                    desired_state: TaskState::Running as i32,
                    status: Some(TaskStatus {
                        state: TaskState::Running as i32,
                        ..Default::default()
                    }),
                    networks: vec![NetworkAttachment {
                        network: Some(net.network.clone()),
                        addresses: vec![addr],
                        aliases: Vec::new(),
                    }],
                    ..Default::default()
                }
            })
            .collect();
        for created in swarm.store.create_many(tasks).await {
            let task = created?;
            task_names.push(format!("svc-{s}.{}.{}", task.slot, task_id(&task)));
            last_task = Some(task);
        }
    }
    println!(
        "{services} services × {per} tasks written in {:.2?}",
        t.elapsed()
    );
    let last = format!("svc-{}", services - 1);
    wait_answer(dns.dns, &last, Ask::default(), &[net.addr(1)], DEADLINE).await?;
    println!("table converged {:.2?} after the first write", t.elapsed());

    let mut names = Vec::new();
    for s in 0..services {
        for name in [format!("svc-{s}."), format!("tasks.svc-{s}.")] {
            let mut msg = Message::query();
            msg.add_query(Query::query(Name::from_ascii(&name)?, RecordType::A));
            names.push(msg.to_vec()?);
        }
    }
    for name in task_names.iter().step_by(per.max(1)) {
        let mut msg = Message::query();
        msg.add_query(Query::query(
            Name::from_ascii(format!("{name}."))?,
            RecordType::A,
        ));
        names.push(msg.to_vec()?);
    }
    let names = Arc::new(names);
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let runs: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(client(dns.dns, names.clone(), c * 7, until)))
        .collect();
    let mut latencies = Vec::new();
    let mut misses = 0;
    for run in runs {
        let (l, m) = run.await??;
        latencies.extend(l);
        misses += m;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} answers in {:.2?} from {clients} clients: {:.0} queries/s; latency p50 {:.2?} p99 {:.2?} max {:.2?}; {misses} unanswered",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
    );

    // A task leaves RUNNING: how long until `tasks.<service>` no longer holds it.
    if let Some(task) = last_task {
        let name = format!("tasks.svc-{}", services - 1);
        let before = query(dns.dns, &name, RecordType::A, Ask::default()).await?;
        let gone = task
            .networks
            .first()
            .and_then(|a| a.addresses.first())
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<IpAddr>().ok());
        let want: Vec<IpAddr> = before
            .addrs
            .iter()
            .copied()
            .filter(|a| Some(*a) != gone)
            .collect();
        swarm.set_state(&task, TaskState::Failed).await?;
        let t = Instant::now();
        wait_answer(dns.dns, &name, Ask::default(), &want, DEADLINE).await?;
        println!(
            "a FAILED task left the answers {:.2?} after its write (polled every 20 ms)",
            t.elapsed()
        );
    }
    dns.stop().await
}
