//! Load figures for the worker's routing mesh: one in-process [`DataPlane`] for a node
//! on 127.0.200.1, fed one endpoint table (one service publishing 8080 → target 80,
//! `--backends` RUNNING tasks), exactly as `Resolver.WatchEndpoints` would feed it.
//!
//! The tasks are in-process TCP echo servers on 127.128.200.1..=N:80 (binding :80 needs
//! root or CAP_NET_BIND_SERVICE). Each one greets a connection with its index (2 bytes,
//! big endian), then echoes what it reads until the client's FIN, then closes. Echo
//! rather than HTTP: a request/response is one fresh connection with no parsing on
//! either end (so the proxy is what is measured), the greeting tells the client which
//! task it reached, and the same server carries the bulk phase.
//!
//! 1. `--clients` concurrent clients for `--seconds`, each making fresh connections to
//!    127.0.200.1:8080 in a loop: connect, send `--payload` bytes and FIN, read the
//!    greeting and the echo to EOF. Prints connections/s, latency p50/p99/max (connect
//!    to EOF), errors by kind, and the per-task distribution (round robin: what the
//!    clients saw and what the tasks accepted);
//! 2. `--streams` long-lived connections for `--seconds`, each writing 64 KiB chunks and
//!    reading the echo back at once: prints the steady-state echo throughput in MB/s
//!    (sampled each second after a 0.5 s warm-up; the proxy carries twice that: every
//!    byte goes in and comes back out);
//! 3. the load of phase 1 again while `apply` removes the last task from the table:
//!    prints how long `apply` took, when the first connection made after it completed
//!    on another task, and when the removed task last accepted a connection.
//!
//! The clients, the tasks and the proxy share the machine (and one tokio runtime), so
//! the figures are lower bounds; nothing is asserted about speed.
//! `cargo run --release -p shoal-worker --example bench_mesh -- --backends 4 --clients 64 --seconds 5`

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use shoal_proto::v1::port_config::{Protocol, PublishMode};
use shoal_proto::v1::{EndpointsUpdate, PortConfig, ResolvedEndpoint, ServiceEndpoints};
use shoal_worker::net::{DataPlane, ListenKey, NetConfig, Proto, sock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 200, 1);
const PUBLISHED: u16 = 8080;
const TARGET: u16 = 80;
const INGRESS: &str = "bench-ingress";
/// One connection attempt, or one exchange, may take this long before it counts as an
/// error.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const CHUNK: usize = 64 * 1024;
const WARM_UP: Duration = Duration::from_millis(500);

#[derive(Parser, Debug)]
#[command(about = "Load figures for the worker's routing mesh (in-process data plane)")]
struct Args {
    /// Tasks behind the published port (echo servers on 127.128.200.1..=N:80).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=250))]
    backends: u16,
    /// Concurrent clients making fresh connections (phases 1 and 3).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Length of phases 1 and 2.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Request size in phase 1 (echoed back).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Long-lived connections in phase 2.
    #[arg(long, default_value_t = 8)]
    streams: usize,
}

// ------------------------------------------------------------------- the tasks

/// What one task saw.
struct Task {
    addr: SocketAddr,
    accepts: AtomicU64,
    /// When it last accepted a connection, in ns since the bench's epoch.
    last_accept: AtomicU64,
}

async fn serve_task(listener: TcpListener, id: u16, me: Arc<Task>, epoch: Instant) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        me.accepts.fetch_add(1, Ordering::Relaxed);
        me.last_accept.store(nanos(epoch), Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = echo(stream, id).await;
        });
    }
}

/// Greets with `id`, echoes until EOF, closes.
async fn echo(mut stream: TcpStream, id: u16) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(&id.to_be_bytes()).await?;
    let (r, mut w) = stream.split();
    let mut r = tokio::io::BufReader::with_capacity(CHUNK, r);
    tokio::io::copy_buf(&mut r, &mut w).await?;
    w.shutdown().await
}

fn nanos(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

// ------------------------------------------------------------------- the table

fn service(tasks: &[Arc<Task>]) -> EndpointsUpdate {
    let endpoints = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| ResolvedEndpoint {
            task_id: format!("task-{:03}", i + 1),
            node_id: format!("node-{}", i % 3 + 1),
            addr: t.addr.ip().to_string(),
            healthy: true,
            network_id: INGRESS.into(),
        })
        .collect();
    EndpointsUpdate {
        snapshot: false,
        upserts: vec![ServiceEndpoints {
            service_id: "bench".into(),
            service_name: "bench".into(),
            ports: vec![PortConfig {
                protocol: Protocol::Tcp as i32,
                target_port: u32::from(TARGET),
                published_port: u32::from(PUBLISHED),
                publish_mode: PublishMode::Ingress as i32,
                ..Default::default()
            }],
            endpoints,
            ..Default::default()
        }],
        removed_service_ids: vec![],
        ingress_network_id: INGRESS.into(),
    }
}

// ----------------------------------------------------------------- the clients

#[derive(Debug, Default, Clone, Copy)]
struct Errors {
    connect: u64,
    timeout: u64,
    io: u64,
    /// The connection ended without the greeting and the whole echo.
    short: u64,
}

impl Errors {
    fn total(&self) -> u64 {
        self.connect + self.timeout + self.io + self.short
    }

    fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.io += o.io;
        self.short += o.short;
    }

    fn count(&mut self, f: Failure) {
        match f {
            Failure::Connect => self.connect += 1,
            Failure::Timeout => self.timeout += 1,
            Failure::Io => self.io += 1,
            Failure::Short => self.short += 1,
        }
    }
}

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} errors (connect {}, timeout {}, reset/io {}, short reply {})",
            self.total(),
            self.connect,
            self.timeout,
            self.io,
            self.short
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    Connect,
    Timeout,
    Io,
    Short,
}

/// One request/response on a fresh connection: the index of the task that answered.
async fn request(target: SocketAddr, payload: &[u8], buf: &mut Vec<u8>) -> Result<u16, Failure> {
    let mut stream = match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(target)).await {
        Err(_) => return Err(Failure::Timeout),
        Ok(Err(_)) => return Err(Failure::Connect),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    buf.clear();
    let exchange = async {
        stream.write_all(payload).await?;
        stream.shutdown().await?;
        stream.read_to_end(buf).await
    };
    match tokio::time::timeout(IO_TIMEOUT, exchange).await {
        Err(_) => return Err(Failure::Timeout),
        Ok(Err(_)) => return Err(Failure::Io),
        Ok(Ok(_)) => {}
    }
    match buf.split_first_chunk::<2>() {
        Some((id, echoed)) if echoed == payload => Ok(u16::from_be_bytes(*id)),
        _ => Err(Failure::Short),
    }
}

/// One connection of a requester: started and ended (ns since the epoch), the task.
type Logged = (u64, u64, u16);

#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    by_task: BTreeMap<u16, u64>,
    errors: Errors,
    log: Vec<Logged>,
}

impl Run {
    fn merge(&mut self, o: Run) {
        self.latencies.extend(o.latencies);
        for (k, v) in o.by_task {
            *self.by_task.entry(k).or_default() += v;
        }
        self.errors.add(&o.errors);
        self.log.extend(o.log);
    }
}

/// Fresh connections one after the other until `stop`.
async fn requester(
    target: SocketAddr,
    payload: Arc<[u8]>,
    epoch: Instant,
    log: bool,
    stop: CancellationToken,
) -> Run {
    let mut run = Run::default();
    let mut buf = Vec::with_capacity(payload.len() + 2);
    while !stop.is_cancelled() {
        let started = nanos(epoch);
        let t = Instant::now();
        match request(target, &payload, &mut buf).await {
            Ok(id) => {
                run.latencies.push(t.elapsed());
                *run.by_task.entry(id).or_default() += 1;
                if log {
                    run.log.push((started, nanos(epoch), id));
                }
            }
            Err(f) => {
                run.errors.count(f);
                // A refused connect returns at once: do not spin on it.
                if matches!(f, Failure::Connect) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    run
}

/// `clients` requesters until `stop`; their runs merged, and how long they ran.
async fn load(
    clients: usize,
    target: SocketAddr,
    payload: Arc<[u8]>,
    epoch: Instant,
    log: bool,
    stop: CancellationToken,
) -> anyhow::Result<(Run, Duration)> {
    let started = Instant::now();
    let runs: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(requester(target, payload.clone(), epoch, log, stop.clone())))
        .collect();
    let mut all = Run::default();
    for run in runs {
        all.merge(run.await?);
    }
    Ok((all, started.elapsed()))
}

/// One long-lived connection: writes `CHUNK`s until `stop`, then FIN; counts the bytes
/// echoed into `received`. Returns the task it reached.
async fn streamer(
    target: SocketAddr,
    received: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<u16> {
    let mut stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(target)).await??;
    stream.set_nodelay(true)?;
    let mut id = [0u8; 2];
    tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut id)).await??;
    let (mut r, mut w) = stream.into_split();
    let writer = async {
        let data = vec![0x5a_u8; CHUNK];
        while !stop.is_cancelled() {
            w.write_all(&data).await?;
        }
        w.shutdown().await
    };
    let reader = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    };
    tokio::try_join!(writer, reader)?;
    Ok(u16::from_be_bytes(id))
}

// --------------------------------------------------------------------- figures

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or_default()
}

fn print_distribution(run: &Run, tasks: &[Arc<Task>], accepted: &[u64]) {
    let served: u64 = run.by_task.values().sum();
    let mean = served as f64 / tasks.len() as f64;
    let mut worst = 0f64;
    for (i, task) in tasks.iter().enumerate() {
        let id = (i + 1) as u16;
        let seen = run.by_task.get(&id).copied().unwrap_or(0);
        let off = if mean > 0.0 {
            (seen as f64 - mean) / mean * 100.0
        } else {
            0.0
        };
        worst = worst.max(off.abs());
        println!(
            "  task {id:>3} {}: {seen:>8} answers ({off:+.3}% from even), {:>8} accepted",
            task.addr,
            accepted.get(i).copied().unwrap_or(0)
        );
    }
    let strays: u64 = run
        .by_task
        .iter()
        .filter(|(id, _)| usize::from(**id) == 0 || usize::from(**id) > tasks.len())
        .map(|(_, n)| n)
        .sum();
    println!(
        "  round robin: largest deviation from an even split {worst:.3}%{}",
        if strays > 0 {
            format!("; {strays} answers from unknown tasks")
        } else {
            String::new()
        }
    );
}

fn accepts(tasks: &[Arc<Task>]) -> Vec<u64> {
    tasks
        .iter()
        .map(|t| t.accepts.load(Ordering::Relaxed))
        .collect()
}

fn ms(ns: i128) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    let epoch = Instant::now();
    let seconds = Duration::from_secs(args.seconds);

    // The tasks.
    let mut tasks = Vec::new();
    for i in 1..=args.backends {
        let Ok(last) = u8::try_from(i) else {
            anyhow::bail!("--backends is at most 250");
        };
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 128, 200, last)), TARGET);
        let listener = sock::tcp_listener(addr, false).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr} (binding :80 needs root or CAP_NET_BIND_SERVICE): {e}"
            )
        })?;
        let task = Arc::new(Task {
            addr,
            accepts: AtomicU64::new(0),
            last_accept: AtomicU64::new(0),
        });
        tokio::spawn(serve_task(listener, i, task.clone(), epoch));
        tasks.push(task);
    }

    // The node's data plane, fed the table.
    let target = SocketAddr::new(IpAddr::V4(NODE_IP), PUBLISHED);
    let plane = DataPlane::new(NetConfig::new("bench-node", IpAddr::V4(NODE_IP)));
    let mut first = service(&tasks);
    first.snapshot = true;
    plane.apply(first);
    let key = ListenKey {
        addr: target,
        proto: Proto::Tcp,
    };
    anyhow::ensure!(
        plane.listeners().contains(&key),
        "the mesh port {target} did not open (in use?)"
    );
    println!(
        "routing mesh {target} → {} tasks {}..={} port {TARGET}; {} clients, {} s per phase, {} B requests",
        tasks.len(),
        tasks
            .first()
            .map(|t| t.addr.ip().to_string())
            .unwrap_or_default(),
        tasks
            .last()
            .map(|t| t.addr.ip().to_string())
            .unwrap_or_default(),
        args.clients,
        args.seconds,
        args.payload,
    );
    let payload: Arc<[u8]> = (0..args.payload).map(|i| (i % 251) as u8).collect();

    // 1. Fresh connections.
    let before = accepts(&tasks);
    let stop = CancellationToken::new();
    let running = tokio::spawn(load(
        args.clients,
        target,
        payload.clone(),
        epoch,
        false,
        stop.clone(),
    ));
    tokio::time::sleep(seconds).await;
    stop.cancel();
    let (mut run, elapsed) = running.await??;
    let accepted: Vec<u64> = accepts(&tasks)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    run.latencies.sort();
    println!(
        "1. fresh connections: {} in {elapsed:.2?}: {:.0} connections/s; latency p50 {:.2?} p99 {:.2?} max {:.2?}; {}",
        run.latencies.len(),
        run.latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&run.latencies, 0.50),
        percentile(&run.latencies, 0.99),
        run.latencies.last().copied().unwrap_or_default(),
        run.errors,
    );
    print_distribution(&run, &tasks, &accepted);

    // 2. Bulk copy over long-lived connections.
    let received = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let streams: Vec<_> = (0..args.streams)
        .map(|_| tokio::spawn(streamer(target, received.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let mut samples = Vec::new();
    let mut last = (Instant::now(), received.load(Ordering::Relaxed));
    let start = last;
    let end = start.0 + seconds;
    while last.0 < end {
        let next = (last.0 + Duration::from_secs(1)).min(end);
        tokio::time::sleep_until(next.into()).await;
        let now = (Instant::now(), received.load(Ordering::Relaxed));
        samples.push((now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64() / 1e6);
        last = now;
    }
    stop.cancel();
    let mut per_task: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failed = 0;
    for s in streams {
        match s.await? {
            Ok(id) => *per_task.entry(id).or_default() += 1,
            Err(e) => {
                failed += 1;
                println!("  a stream failed: {e:#}");
            }
        }
    }
    let total = (last.1 - start.1) as f64 / (last.0 - start.0).as_secs_f64() / 1e6;
    let lo = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = samples.iter().copied().fold(0f64, f64::max);
    println!(
        "2. bulk copy: {} long-lived connections, {:.2?} after a {WARM_UP:?} warm-up: {total:.1} MB/s echoed (per second {lo:.1}..{hi:.1}; the proxy carries {:.1} MB/s both ways); {failed} failed",
        args.streams,
        last.0 - start.0,
        total * 2.0,
    );
    println!(
        "  connections per task: {}",
        per_task
            .iter()
            .map(|(id, n)| format!("{id}:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 3. A task leaves the table under load.
    if tasks.len() < 2 {
        println!("3. endpoint removal: skipped (needs --backends 2 or more)");
        return Ok(());
    }
    let removed_id = tasks.len() as u16;
    let stop = CancellationToken::new();
    let running = tokio::spawn(load(
        args.clients,
        target,
        payload.clone(),
        epoch,
        true,
        stop.clone(),
    ));
    tokio::time::sleep(WARM_UP).await;
    let remaining = tasks.get(..tasks.len() - 1).unwrap_or_default();
    let update = service(remaining);
    let applied_at = nanos(epoch);
    let t0 = Instant::now();
    plane.apply(update);
    let apply_took = t0.elapsed();
    let mut buf = Vec::new();
    let mut probes = 0;
    let mut probe_hit_removed = 0;
    let first_other = loop {
        probes += 1;
        match request(target, &payload, &mut buf).await {
            Ok(id) if id != removed_id => break Some((id, t0.elapsed())),
            Ok(_) => probe_hit_removed += 1,
            Err(_) => {}
        }
        if t0.elapsed() > IO_TIMEOUT {
            break None;
        }
    };
    tokio::time::sleep(WARM_UP).await;
    stop.cancel();
    let (run, _) = running.await??;
    let applied_done = applied_at + u64::try_from(apply_took.as_nanos()).unwrap_or(u64::MAX);
    let after: Vec<&Logged> = run.log.iter().filter(|l| l.0 >= applied_done).collect();
    let after_on_removed = after.iter().filter(|l| l.2 == removed_id).count();
    let in_flight_on_removed = run
        .log
        .iter()
        .filter(|l| l.2 == removed_id && l.0 < applied_at && l.1 > applied_at)
        .count();
    let first_after = after
        .iter()
        .filter(|l| l.2 != removed_id)
        .map(|l| l.1)
        .min();
    let last_accept = tasks
        .last()
        .map(|t| t.last_accept.load(Ordering::Relaxed))
        .unwrap_or(0);
    println!(
        "3. endpoint removal under load: task {removed_id} removed by apply in {apply_took:.2?}"
    );
    match first_other {
        Some((id, took)) => println!(
            "  first connection made after apply reached task {id} {took:.2?} after apply began (probe {probes}, {probe_hit_removed} probes reached the removed task)"
        ),
        None => {
            println!("  no connection made after apply reached another task within {IO_TIMEOUT:?}")
        }
    }
    if let Some(done) = first_after {
        println!(
            "  under load, the first connection started after apply returned was answered by a remaining task {} after apply began",
            ms(i128::from(done) - i128::from(applied_at))
        );
    }
    println!(
        "  the removed task last accepted a connection {} after apply began (negative: before); {} connections started after apply, {after_on_removed} of them reached the removed task; {in_flight_on_removed} in flight to it at the time finished normally; {}",
        ms(i128::from(last_accept) - i128::from(applied_at)),
        after.len(),
        run.errors,
    );
    plane.shutdown();
    Ok(())
}
