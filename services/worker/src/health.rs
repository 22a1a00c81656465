//! Healthchecks: what a task's `HealthConfig` asks for, and the probe loop that turns
//! probe results into a health status by Docker's rules.
//!
//! The Docker Engine runs a container's checks itself (the Docker executor passes the
//! config on and follows the engine's health events). For process tasks the worker
//! runs them: [`monitor`] calls a probe (the process executor's CMD / CMD-SHELL, or
//! [`tcp`] / [`http`] here) right after the start, then every interval, so a task is
//! reported healthy as soon as its check passes. Docker's rules: a probe that takes
//! longer than the timeout fails; failures during the start period do not count, and
//! the first success ends it; `retries` failures in a row make the task unhealthy.
//! Zero durations take Docker's defaults: interval 30 s, timeout 30 s, 3 retries, no
//! start period.

use std::future::Future;
use std::time::Duration;

use shoal_proto::v1::HealthConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

pub use shoal_proto::v1::task_status::Health;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;
/// The most of an HTTP answer read for its status line.
const MAX_STATUS_LINE: usize = 1024;

/// When and how often a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

fn duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(*d).ok())
        .filter(|d| !d.is_zero())
}

impl Timing {
    /// The config's timing, Docker's defaults for what is zero.
    pub fn of(cfg: &HealthConfig) -> Self {
        Self {
            interval: duration(cfg.interval.as_ref()).unwrap_or(DEFAULT_INTERVAL),
            timeout: duration(cfg.timeout.as_ref()).unwrap_or(DEFAULT_TIMEOUT),
            retries: u32::try_from(cfg.retries)
                .ok()
                .filter(|r| *r > 0)
                .unwrap_or(DEFAULT_RETRIES),
            start_period: duration(cfg.start_period.as_ref()).unwrap_or_default(),
        }
    }
}

/// What a process task's check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `["CMD", program, args...]`: run without a shell; exit 0 is healthy.
    Exec(Vec<String>),
    /// `["CMD-SHELL", command]`: `sh -c command`; exit 0 is healthy.
    Shell(String),
    /// `["TCP", "host:port"]`: a connection opens.
    Tcp(String),
    /// `["HTTP", "http://host:port/path"]`: a GET answers 2xx or 3xx.
    Http(HttpTarget),
}

/// Where an HTTP check goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to.
    pub addr: String,
    /// The Host header.
    pub host: String,
    pub path: String,
}

impl Probe {
    /// The check a process task's `test` asks for; None for none (`[]`, `["NONE"]`).
    pub fn parse(test: &[String]) -> Result<Option<Probe>, String> {
        let Some((kind, rest)) = test.split_first() else {
            return Ok(None);
        };
        let one = |what: &str| -> Result<String, String> {
            match rest {
                [arg] if !arg.is_empty() => Ok(arg.clone()),
                _ => Err(format!("healthcheck {kind} takes one argument: {what}")),
            }
        };
        match kind.as_str() {
            "NONE" => Ok(None),
            "CMD" if rest.is_empty() || rest[0].is_empty() => {
                Err("healthcheck CMD needs a program".into())
            }
            "CMD" => Ok(Some(Probe::Exec(rest.to_vec()))),
            "CMD-SHELL" if rest.iter().all(|a| a.is_empty()) => {
                Err("healthcheck CMD-SHELL needs a command".into())
            }
            "CMD-SHELL" => Ok(Some(Probe::Shell(rest.join(" ")))),
            "TCP" => Ok(Some(Probe::Tcp(one("host:port")?))),
            "HTTP" => Ok(Some(Probe::Http(HttpTarget::parse(&one(
                "http://host:port/path",
            )?)?))),
            other => Err(format!(
                "unknown healthcheck test {other:?}: want NONE, CMD, CMD-SHELL, TCP or HTTP"
            )),
        }
    }
}

impl HttpTarget {
    /// `http://host[:port][/path]`; the port defaults to 80, the path to `/`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = || format!("healthcheck HTTP wants http://host:port/path, not {url:?}");
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
            return Err(bad());
        }
        // A port follows the last ':' unless that is inside an IPv6 literal.
        let has_port = authority
            .rfind(':')
            .is_some_and(|i| !authority[i..].contains(']'));
        let addr = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Runs `probe` right away, then every interval, and keeps `health` up to date by
/// Docker's rules, starting in `Healthy` when the task was already found healthy
/// (an adopted task: its start period is over). Ends once the task is unhealthy, or
/// when nobody listens any more.
pub async fn monitor<P, F>(timing: Timing, mut probe: P, health: watch::Sender<Health>)
where
    P: FnMut() -> F,
    F: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let mut ever_healthy = *health.borrow() == Health::Healthy;
    let mut failures = 0u32;
    loop {
        let at = Instant::now();
        let result = tokio::select! {
            r = tokio::time::timeout(timing.timeout, probe()) => r.unwrap_or_else(|_| {
                Err(format!("no result within the timeout ({:?})", timing.timeout))
            }),
            _ = health.closed() => return,
        };
        match result {
            Ok(()) => {
                failures = 0;
                ever_healthy = true;
                health
                    .send_if_modified(|h| std::mem::replace(h, Health::Healthy) != Health::Healthy);
            }
            Err(why) => {
                let in_start_period = !ever_healthy && at - started < timing.start_period;
                tracing::debug!(%why, in_start_period, failures, "healthcheck failed");
                if !in_start_period {
                    failures += 1;
                    if failures >= timing.retries {
                        health.send_replace(Health::Unhealthy);
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.interval) => {}
            _ = health.closed() => return,
        }
    }
}

/// A TCP check: the connection opens.
pub async fn tcp(addr: &str) -> Result<(), String> {
    tokio::net::TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// An HTTP check: a `GET` (HTTP/1.0) answers 2xx or 3xx.
pub async fn http(target: &HttpTarget) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(&target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: shoal-healthcheck\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send to {}: {e}", target.addr))?;
    let mut answer = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < MAX_STATUS_LINE {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read from {}: {e}", target.addr))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let code = status_code(&answer)
        .ok_or_else(|| format!("{} did not answer with an HTTP status line", target.addr))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP status {code}"))
    }
}

/// The status code of `HTTP/1.x NNN reason`.
fn status_code(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then_some(())?;
    code.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tests_are_parsed_as_docker_and_the_process_executor_take_them() {
        assert_eq!(Probe::parse(&[]), Ok(None));
        assert_eq!(Probe::parse(&strings(&["NONE"])), Ok(None));
        assert_eq!(
            Probe::parse(&strings(&["CMD", "test", "-f", "/x"])),
            Ok(Some(Probe::Exec(strings(&["test", "-f", "/x"]))))
        );
        assert_eq!(
            Probe::parse(&strings(&["CMD-SHELL", "test -f /x"])),
            Ok(Some(Probe::Shell("test -f /x".into())))
        );
        assert_eq!(
            Probe::parse(&strings(&["TCP", "127.0.0.1:80"])),
            Ok(Some(Probe::Tcp("127.0.0.1:80".into())))
        );
        assert_eq!(
            Probe::parse(&strings(&["HTTP", "http://127.0.0.1:8080/healthz"])),
            Ok(Some(Probe::Http(HttpTarget {
                addr: "127.0.0.1:8080".into(),
                host: "127.0.0.1:8080".into(),
                path: "/healthz".into(),
            })))
        );
        for bad in [
            &["CMD"][..],
            &["CMD-SHELL"],
            &["TCP"],
            &["TCP", "a:1", "b:2"],
            &["HTTP", "https://x/"],
            &["HTTP", "http:///x"],
            &["EXEC", "x"],
        ] {
            assert!(Probe::parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_targets_default_their_port_and_path() {
        let t = HttpTarget::parse("http://localhost").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("localhost:80", "/"));
        let t = HttpTarget::parse("HTTP://[::1]/a?b").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("[::1]:80", "/a?b"));
        let t = HttpTarget::parse("http://[::1]:81").unwrap();
        assert_eq!(t.addr, "[::1]:81");
    }

    #[test]
    fn zero_durations_take_docker_s_defaults() {
        let t = Timing::of(&HealthConfig::default());
        assert_eq!(
            t,
            Timing {
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT,
                retries: DEFAULT_RETRIES,
                start_period: Duration::ZERO,
            }
        );
        let t = Timing::of(&HealthConfig {
            interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
            retries: 5,
            ..Default::default()
        });
        assert_eq!(t.interval, Duration::from_millis(200));
        assert_eq!(t.retries, 5);
    }

    #[test]
    fn status_lines_are_read() {
        assert_eq!(status_code(b"HTTP/1.0 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.1 503\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    fn fast(retries: u32, start_period: Duration) -> Timing {
        Timing {
            interval: Duration::from_millis(5),
            timeout: Duration::from_millis(500),
            retries,
            start_period,
        }
    }

    /// Runs the monitor over scripted results (then failures); returns the health
    /// changes it made and how many probes ran.
    async fn run_script(timing: Timing, initial: Health, script: &[bool]) -> (Vec<Health>, usize) {
        let (tx, mut rx) = watch::channel(initial);
        let calls = Arc::new(Mutex::new(0usize));
        let script = script.to_vec();
        let counter = calls.clone();
        let probe = move || {
            let n = {
                let mut c = counter.lock().unwrap();
                *c += 1;
                *c - 1
            };
            let ok = script.get(n).copied().unwrap_or(false);
            async move { if ok { Ok(()) } else { Err("no".to_string()) } }
        };
        let run = tokio::spawn(monitor(timing, probe, tx));
        let mut seen = Vec::new();
        while rx.changed().await.is_ok() {
            seen.push(*rx.borrow_and_update());
        }
        run.await.unwrap();
        let n = *calls.lock().unwrap();
        (seen, n)
    }

    #[tokio::test]
    async fn the_first_success_makes_the_task_healthy_and_retries_failures_unhealthy() {
        let (seen, calls) = run_script(
            fast(3, Duration::ZERO),
            Health::Starting,
            &[false, true, true, false, false, true, false, false],
        )
        .await;
        // Healthy at the second probe; two failures are forgiven by a success; then
        // three in a row (the 7th, 8th and 9th probes) make it unhealthy.
        assert_eq!(seen, vec![Health::Healthy, Health::Unhealthy]);
        assert_eq!(calls, 9);
    }

    #[tokio::test]
    async fn failures_in_the_start_period_do_not_count_until_the_first_success() {
        // Within a long start period, failures are forgiven until the first success;
        // after it, two failures in a row are enough.
        let (seen, calls) = run_script(
            fast(2, Duration::from_secs(600)),
            Health::Starting,
            &[false, false, false, false, true, false, false],
        )
        .await;
        assert_eq!(seen, vec![Health::Healthy, Health::Unhealthy]);
        assert_eq!(calls, 7);
        // Past a short start period, failures count again.
        let started = Instant::now();
        let (seen, calls) =
            run_script(fast(2, Duration::from_millis(100)), Health::Starting, &[]).await;
        assert_eq!(seen, vec![Health::Unhealthy]);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(calls > 2, "{calls} probes");
    }

    #[tokio::test]
    async fn an_already_healthy_task_has_no_start_period() {
        let (seen, calls) = run_script(
            fast(2, Duration::from_secs(600)),
            Health::Healthy,
            &[false, false],
        )
        .await;
        assert_eq!(seen, vec![Health::Unhealthy]);
        assert_eq!(calls, 2);
    }

    #[tokio::test]
    async fn tcp_and_http_checks_talk_to_a_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answers = ["HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.1 500 Oops\r\n\r\n"];
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(answer.as_bytes()).await.unwrap();
            }
            requests
        });
        let target = HttpTarget::parse(&format!("http://{addr}/healthz")).unwrap();
        assert_eq!(http(&target).await, Ok(()));
        assert_eq!(http(&target).await, Err("HTTP status 500".to_string()));
        let requests = server.await.unwrap();
        assert!(
            requests[0].starts_with(&format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n")),
            "{requests:?}"
        );
        // Nothing listens any more.
        assert!(tcp(&addr).await.is_err());
        assert!(http(&target).await.is_err());
    }
}
