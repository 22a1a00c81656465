//! Isolated, real infrastructure for shoal's tests.
//!
//! `shoal-testkit` starts a real `etcd` and a real `nats-server` on free loopback ports
//! with their data in temporary directories ([`Etcd`], [`Nats`], [`Infra`]), runs
//! shoal's own binaries as child processes whose output goes to a log file
//! ([`binary`], [`Process`]), and offers a polling helper ([`wait_for`]) for waiting on
//! eventually-true conditions.
//!
//! Everything is torn down on `Drop`: children are killed (SIGKILL) and reaped,
//! temporary directories removed. Nothing outlives the value that owns it, so a test
//! that panics leaves no stray processes behind.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let infra = shoal_testkit::Infra::start().await?;
//! println!("etcd at {}, nats at {}", infra.etcd.endpoint(), infra.nats.url());
//! # Ok(()) }
//! ```

pub mod docker;
pub mod otlp;
pub use otlp::{OtlpCollector, SeenSpan};

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Path of the etcd binary (Debian package `etcd-server`).
const ETCD_BIN: &str = "etcd";
/// Path of the nats-server binary (Debian package `nats-server`).
const NATS_BIN: &str = "nats-server";
/// How long a started etcd / nats-server may take to answer.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How often readiness and [`wait_for`] conditions are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many times `start` retries with fresh ports when a port was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// How many times `restart` retries on the same ports when they are briefly taken.
const RESTART_ATTEMPTS: usize = 5;
/// Log lines shown in error messages.
const TAIL_LINES: usize = 30;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Binds a TCP listener on `ip` port 0 and returns the port the kernel picked.
///
/// The listener is closed before returning, so the port is only *probably* free: another
/// process may take it before the caller binds it. [`Etcd::start`] and [`Nats::start`]
/// retry on "address in use" for that reason.
pub fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind {ip}:0"))?;
    Ok(listener
        .local_addr()
        .context("local_addr of bound listener")?
        .port())
}

/// Polls `f` until it returns `Some(T)` or `deadline` has passed (checked every 20 ms).
///
/// `f` is always called at least once, and once more after the deadline has passed,
/// so a condition that becomes true just at the deadline is still seen.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        let expired = start.elapsed() >= deadline;
        if let Some(v) = f().await {
            return Ok(v);
        }
        if expired {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Path of a workspace binary built by cargo.
///
/// Uses `CARGO_BIN_EXE_<name>` if set in the environment, else derives cargo's output
/// directory from the current executable (`target/<profile>/deps/<test>` →
/// `target/<profile>`). Fails with a hint to build it if the file is missing.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "CARGO_BIN_EXE_{name} points at {}, which does not exist",
            p.display()
        );
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("current executable {} has no parent", exe.display()))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent", dir.display()))?;
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "binary {name} not found at {} (build it first: `cargo build --bins`)",
            path.display()
        )
    }
}

/// Last `lines` lines of the file at `path` (reads at most the final 256 KiB).
fn tail_file(path: &Path, lines: usize) -> String {
    const MAX: u64 = 256 * 1024;
    let Ok(mut f) = File::open(path) else {
        return format!("<no log at {}>", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX {
        let _ = f.seek(SeekFrom::Start(len - MAX));
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return format!("<unreadable log at {}>", path.display());
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Spawns `bin args…` with stdin closed and stdout+stderr appended to `log`.
fn spawn_logged(
    bin: &Path,
    args: &[String],
    envs: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log file {}", log.display()))?;
    let err = out.try_clone().context("duplicating log file handle")?;
    Command::new(bin)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))
}

/// SIGKILLs `child` (if still running) and reaps it.
fn kill_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Why a start attempt failed.
enum StartError {
    /// A port was taken: worth retrying.
    AddrInUse(anyhow::Error),
    Other(anyhow::Error),
}

/// Waits until `ready` succeeds, failing early if `child` exits. On failure the child
/// is killed and the error carries the tail of `log`.
async fn await_ready<F, Fut>(
    what: &str,
    child: &mut Child,
    log: &Path,
    mut ready: F,
) -> Result<(), StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let failure = loop {
        match child.try_wait() {
            Ok(Some(status)) => break format!("{what} exited early with {status}"),
            Ok(None) => {}
            Err(e) => break format!("{what}: waiting on child failed: {e}"),
        }
        if ready().await {
            return Ok(());
        }
        if start.elapsed() >= READY_DEADLINE {
            break format!("{what} not ready after {READY_DEADLINE:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    kill_child(child);
    let tail = tail_file(log, TAIL_LINES);
    let err = anyhow!("{failure}; last lines of {}:\n{tail}", log.display());
    if tail.contains("address already in use") {
        Err(StartError::AddrInUse(err))
    } else {
        Err(StartError::Other(err))
    }
}

/// A single-member etcd on loopback, data in a temporary directory.
///
/// Dropping it kills etcd and removes the data directory.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd on free 127.0.0.1 client and peer ports and waits until its
    /// `/health` endpoint reports healthy (up to 20 s).
    pub async fn start() -> anyhow::Result<Etcd> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-etcd-")
            .tempdir()
            .context("creating etcd temp dir")?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let client_port = free_port(LOCALHOST)?;
            let peer_port = free_port(LOCALHOST)?;
            if client_port == peer_port {
                continue;
            }
            match launch_etcd(dir.path(), client_port, peer_port).await {
                Ok(child) => {
                    return Ok(Etcd {
                        child: Some(child),
                        dir,
                        client_port,
                        peer_port,
                    });
                }
                Err(StartError::AddrInUse(e)) => {
                    // A half-initialised data dir from a failed bootstrap must not be
                    // reused with different peer URLs.
                    let _ = std::fs::remove_dir_all(dir.path().join("data"));
                    last = Some(e);
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("no distinct free ports found"))
            .context(format!(
                "etcd did not start after {START_ATTEMPTS} attempts"
            )))
    }

    /// Client endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// etcd's `--data-dir` (WAL and snapshots): what a test scans to prove a value
    /// never reached etcd's disk.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// SIGKILLs etcd and waits for it; the data directory is kept for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }

    /// Starts etcd again on the same ports with the same data directory and waits until
    /// it is healthy. Kills the running one first, if any.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut last = None;
        for _ in 0..RESTART_ATTEMPTS {
            match launch_etcd(self.dir.path(), self.client_port, self.peer_port).await {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(StartError::AddrInUse(e)) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!(
                "etcd did not restart after {RESTART_ATTEMPTS} attempts"
            )))
    }
}

/// Spawns etcd with its data in `dir/data` and its log in `dir/etcd.log`, and waits
/// until it is healthy.
async fn launch_etcd(dir: &Path, client_port: u16, peer_port: u16) -> Result<Child, StartError> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let data = dir.join("data");
    let args: Vec<String> = [
        "--name",
        "t",
        "--data-dir",
        &data.to_string_lossy(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("t={peer}"),
        "--initial-cluster-state",
        "new",
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = dir.join("etcd.log");
    let mut child =
        spawn_logged(Path::new(ETCD_BIN), &args, &[], &log).map_err(StartError::Other)?;
    let addr = SocketAddr::new(LOCALHOST, client_port);
    await_ready("etcd", &mut child, &log, || etcd_healthy(addr)).await?;
    Ok(child)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /health` over a plain TCP connection; true when etcd says `"health":"true"`.
async fn etcd_healthy(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        Some(text.starts_with("HTTP/1.") && text.contains("\"health\":\"true\""))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A nats-server on loopback.
///
/// Dropping it kills the server and removes its temporary directory (log).
#[derive(Debug)]
pub struct Nats {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nats {
    /// Starts nats-server on a free 127.0.0.1 port and waits until it greets clients
    /// with its `INFO` line (up to 20 s).
    pub async fn start() -> anyhow::Result<Nats> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-nats-")
            .tempdir()
            .context("creating nats temp dir")?;
        let mut nats = Nats {
            child: None,
            dir,
            port: 0,
        };
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            nats.port = free_port(LOCALHOST)?;
            match nats.launch().await {
                Ok(()) => return Ok(nats),
                Err(StartError::AddrInUse(e)) => last = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!(
                "nats-server did not start after {START_ATTEMPTS} attempts"
            )))
    }

    /// Client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs nats-server and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }

    /// Starts nats-server again on the same port and waits until it is ready. Kills the
    /// running one first, if any.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut last = None;
        for _ in 0..RESTART_ATTEMPTS {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(StartError::AddrInUse(e)) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!(
                "nats-server did not restart after {RESTART_ATTEMPTS} attempts"
            )))
    }

    async fn launch(&mut self) -> Result<(), StartError> {
        let args: Vec<String> = ["-a", "127.0.0.1", "-p", &self.port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let log = self.dir.path().join("nats.log");
        let mut child =
            spawn_logged(Path::new(NATS_BIN), &args, &[], &log).map_err(StartError::Other)?;
        let addr = SocketAddr::new(LOCALHOST, self.port);
        await_ready("nats-server", &mut child, &log, || nats_ready(addr)).await?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when a TCP client connecting to `addr` is greeted with a NATS `INFO` line.
async fn nats_ready(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"INFO ")
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// etcd + nats-server + a scratch directory for service configs and logs.
#[derive(Debug)]
pub struct Infra {
    pub etcd: Etcd,
    pub nats: Nats,
    pub dir: tempfile::TempDir,
}

impl Infra {
    /// Starts etcd and nats-server concurrently and creates the scratch directory.
    pub async fn start() -> anyhow::Result<Infra> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-infra-")
            .tempdir()
            .context("creating scratch dir")?;
        let (etcd, nats) = tokio::try_join!(Etcd::start(), Nats::start())?;
        Ok(Infra { etcd, nats, dir })
    }
}

/// A child process whose stdout and stderr are appended to a log file.
///
/// Dropping it SIGKILLs the process if it is still running and reaps it.
#[derive(Debug)]
pub struct Process {
    child: Child,
    bin: PathBuf,
    log: PathBuf,
}

impl Process {
    /// Spawns `bin` with `args` and extra environment `envs`, stdin closed, output
    /// appended to `log` (created if missing).
    pub fn spawn(
        bin: &Path,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Process> {
        let child = spawn_logged(bin, args, envs, log)?;
        Ok(Process {
            child,
            bin: bin.to_path_buf(),
            log: log.to_path_buf(),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap: a crash, with no chance to clean up.
    pub fn kill_now(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends SIGTERM.
    pub fn signal_term(&self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), Signal::SIGTERM)
            .with_context(|| format!("SIGTERM to {} (pid {pid})", self.bin.display()))
    }

    /// Waits until the process exits, up to `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("waiting on {}", self.bin.display()))?
            {
                return Ok(status);
            }
            if start.elapsed() >= deadline {
                bail!(
                    "{} (pid {}) did not exit within {deadline:?}; last lines of {}:\n{}",
                    self.bin.display(),
                    self.child.id(),
                    self.log.display(),
                    self.log_tail(TAIL_LINES)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port(LOCALHOST).expect("free port");
        assert_ne!(port, 0);
        TcpListener::bind(SocketAddr::new(LOCALHOST, port)).expect("rebind");
    }

    #[tokio::test]
    async fn wait_for_returns_value_or_times_out() {
        let mut n = 0;
        let v = wait_for("counter to reach 3", Duration::from_secs(5), || {
            n += 1;
            let r = (n >= 3).then_some(n);
            async move { r }
        })
        .await
        .expect("value");
        assert_eq!(v, 3);

        let err = wait_for("the impossible", Duration::from_millis(50), || async {
            None::<()>
        })
        .await
        .expect_err("times out");
        assert!(err.to_string().contains("the impossible"), "{err}");
    }

    #[tokio::test]
    async fn nats_answers_and_restarts() {
        let mut nats = Nats::start().await.expect("nats");
        let url = nats.url();
        let addr: SocketAddr = url
            .strip_prefix("nats://")
            .expect("scheme")
            .parse()
            .expect("addr");
        assert!(nats_ready(addr).await);
        nats.kill();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still listening after kill"
        );
        nats.restart().await.expect("restart");
        assert_eq!(nats.url(), url);
        assert!(nats_ready(addr).await);
    }

    #[tokio::test]
    async fn etcd_keeps_data_across_kill_and_restart() {
        let mut etcd = Etcd::start().await.expect("etcd");
        let ep = etcd.endpoint();
        let mut client = etcd_client::Client::connect([ep.clone()], None)
            .await
            .expect("connect");
        client.put("testkit/k", "v1", None).await.expect("put");
        drop(client);

        etcd.kill();
        etcd.restart().await.expect("restart");
        assert_eq!(etcd.endpoint(), ep);

        let mut client = etcd_client::Client::connect([ep], None)
            .await
            .expect("reconnect");
        let resp = client.get("testkit/k", None).await.expect("get");
        let kv = resp.kvs().first().expect("key survives restart");
        assert_eq!(kv.value(), b"v1");
    }

    #[tokio::test]
    async fn drop_kills_and_cleans_up() {
        let infra = Infra::start().await.expect("infra");
        let etcd_dir = infra.etcd.dir.path().to_path_buf();
        let nats_dir = infra.nats.dir.path().to_path_buf();
        let pid = infra
            .etcd
            .child
            .as_ref()
            .map(|c| c.id())
            .expect("running etcd");
        assert!(infra.dir.path().is_dir());
        drop(infra);
        assert!(!etcd_dir.exists());
        assert!(!nats_dir.exists());
        let pid = Pid::from_raw(i32::try_from(pid).expect("pid"));
        assert!(kill(pid, None).is_err(), "etcd pid still exists after drop");
    }

    #[tokio::test]
    async fn process_logs_terms_and_reports_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("p.log");
        let mut p = Process::spawn(
            Path::new("/bin/sh"),
            &[
                "-c".to_string(),
                "echo hello $GREETING; echo oops >&2; exec sleep 30".to_string(),
            ],
            &[("GREETING".to_string(), "world".to_string())],
            &log,
        )
        .expect("spawn");
        assert!(p.pid() > 0);
        wait_for("log lines", Duration::from_secs(5), || {
            let tail = p.log_tail(10);
            async move { (tail.contains("hello world") && tail.contains("oops")).then_some(()) }
        })
        .await
        .expect("log");
        let err = p
            .wait_exit(Duration::from_millis(50))
            .await
            .expect_err("still running");
        assert!(err.to_string().contains("50ms"), "{err}");
        p.signal_term().expect("term");
        let status = p.wait_exit(Duration::from_secs(5)).await.expect("exit");
        assert!(!status.success());
        assert_eq!(p.log_tail(1), "oops");
    }

    #[tokio::test]
    async fn early_exit_is_reported_with_log_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("x.log");
        let args = [
            "-c".to_string(),
            "echo 'listen tcp: address already in use'; exit 3".to_string(),
        ];
        let mut child = spawn_logged(Path::new("/bin/sh"), &args, &[], &log).expect("spawn");
        match await_ready("fake", &mut child, &log, || async { false }).await {
            Err(StartError::AddrInUse(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("fake exited early"), "{msg}");
                assert!(msg.contains("address already in use"), "{msg}");
            }
            Err(StartError::Other(e)) => panic!("wrong classification: {e}"),
            Ok(()) => panic!("should not be ready"),
        }
    }

    #[test]
    fn binary_reports_missing() {
        let err = binary("surely-not-a-shoal-binary").expect_err("missing");
        assert!(err.to_string().contains("cargo build"), "{err}");
    }
}
