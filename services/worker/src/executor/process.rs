//! The process executor: a `ProcessSpec` task as a child process of the worker.
//!
//! The command runs without a shell, in its own process group, with the spec's
//! environment plus `SHOAL_TASK_ID`, `SHOAL_TASK_SLOT`, `SHOAL_SERVICE_NAME`,
//! `SHOAL_NODE_ID` and the task's addresses: `SHOAL_TASK_ADDR`, its address on its
//! first network (a loopback address of 127.128.0.0/9 the manager allocated for it,
//! bindable as it is, so two tasks of a node can both listen on port 80; the node's
//! address for a task without networks), `SHOAL_TASK_ADDRS` (`net_name=addr,...`, all
//! its networks, when it has any) and `SHOAL_DNS` (shoal-dns's IP:PORT, when the
//! worker has `dns_addr`). A task with secrets or configs also gets
//! `SHOAL_TASK_FILES`, the directory on a tmpfs holding its files as a container would
//! see them (`$SHOAL_TASK_FILES/run/secrets/<target>` for a secret with a relative
//! target, `$SHOAL_TASK_FILES/<target>` for a config's, absolute targets under it
//! without their leading `/`), and `SHOAL_SECRETS_DIR` = `$SHOAL_TASK_FILES/run/secrets`
//! (see [`crate::tasks::files`]). Addresses are fixed when the process starts: a network the
//! task joins while it runs (a service update adding one) reaches the process only
//! through a restart, and the worker does not restart it for that. Its stdout and stderr go straight to a
//! per-task log file in the state dir (never a pipe: a pipe would kill the task with
//! SIGPIPE when the worker restarts). Stopping sends SIGTERM to the group, waits the
//! grace period, then SIGKILLs the group.
//!
//! A healthcheck (CMD, CMD-SHELL, TCP or HTTP) is run by the worker itself with
//! [`health::monitor`]; check commands get the task's environment and directory (and
//! `SHOAL_HEALTHCHECK=1`, so they are never taken for the task), run in their own
//! process group, and the group is killed when a check times out.
//!
//! A child's exit is seen by waiting on it. A process adopted after a worker restart is
//! not our child: it is watched through `/proc/<pid>/stat` (with its start time, so a
//! reused pid is not mistaken for it) every 250 ms, and its exit status is unknown.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{ProcessSpec, Task};
use tokio::sync::{mpsc, watch};

use super::{
    Executor, Exit, Handle, Kind, Liveness, LogLine, TaskError, networks, split_lines, task_id,
};
use crate::health::{self, Health, Probe, Timing};

/// How often a process that is not our child is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(250);
/// How often a followed log file is read for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How long to wait for the group to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The most of a log file read for its history.
const MAX_HISTORY: u64 = 4 * 1024 * 1024;
/// In the environment of a check command (which is a process group leader with the
/// task's environment): not the task itself.
const CHECK_MARKER: &str = "SHOAL_HEALTHCHECK";
/// PATH for tasks when the worker has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs process tasks; their log files live in `<state_dir>/logs`.
pub struct ProcessExecutor {
    log_dir: PathBuf,
    node_id: String,
    advertise_addr: String,
    /// shoal-dns's DNS address (IP:PORT), for `SHOAL_DNS`; empty: not set.
    dns_addr: String,
    /// Exit statuses of our own children, by pid.
    children: Mutex<HashMap<i32, watch::Receiver<Option<i32>>>>,
}

impl ProcessExecutor {
    pub fn new(state_dir: &Path, node_id: &str, advertise_addr: &str) -> Arc<Self> {
        Self::with_dns(state_dir, node_id, advertise_addr, "")
    }

    /// Like [`ProcessExecutor::new`], telling tasks shoal-dns's address (`SHOAL_DNS`;
    /// empty: none).
    pub fn with_dns(
        state_dir: &Path,
        node_id: &str,
        advertise_addr: &str,
        dns_addr: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            log_dir: state_dir.join("logs"),
            node_id: node_id.to_string(),
            advertise_addr: advertise_addr.to_string(),
            dns_addr: dns_addr.to_string(),
            children: Mutex::new(HashMap::new()),
        })
    }

    /// Task processes of this node found running (group leaders whose environment
    /// names this node and a task): what a worker that died before recording them
    /// left behind. (task id, handle).
    pub fn managed(&self) -> Vec<(String, Handle)> {
        let node = format!("SHOAL_NODE_ID={}", self.node_id);
        let check = format!("{CHECK_MARKER}=");
        let check = check.as_bytes();
        let mut found = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Some((state, start_time, pgrp)) = proc_stat_full(pid) else {
                continue;
            };
            if pgrp != pid || state == 'Z' {
                continue;
            }
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
            if !vars.contains(&node.as_bytes()) || vars.iter().any(|v| v.starts_with(check)) {
                continue;
            }
            let task = vars.iter().find_map(|v| v.strip_prefix(b"SHOAL_TASK_ID="));
            let Some(task) = task.and_then(|t| std::str::from_utf8(t).ok()) else {
                continue;
            };
            if task.is_empty() || task.contains('/') {
                continue;
            }
            found.push((
                task.to_string(),
                Handle::Process {
                    pid,
                    start_time,
                    log: self.log_dir.join(format!("{task}.log")),
                },
            ));
        }
        found
    }

    /// The environment and directory of the task's process (and of its checks).
    fn task_env(&self, task: &Task, spec: &ProcessSpec) -> Result<TaskEnv, TaskError> {
        let mut vars = vec![(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string()),
        )];
        for kv in &spec.env {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => vars.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(TaskError::failed(format!(
                        "invalid environment variable {kv:?}: want KEY=VALUE"
                    )));
                }
            }
        }
        for (k, v) in [
            ("SHOAL_TASK_ID", task_id(task).to_string()),
            ("SHOAL_TASK_SLOT", task.slot.to_string()),
            ("SHOAL_SERVICE_NAME", super::service_name(task)),
            ("SHOAL_NODE_ID", self.node_id.clone()),
            (
                "SHOAL_TASK_ADDR",
                networks::task_addr(task)
                    .unwrap_or(&self.advertise_addr)
                    .to_string(),
            ),
        ] {
            vars.push((k.to_string(), v));
        }
        let addrs = networks::task_addrs(task);
        if !addrs.is_empty() {
            vars.push(("SHOAL_TASK_ADDRS".to_string(), addrs));
        }
        if !self.dns_addr.is_empty() {
            vars.push(("SHOAL_DNS".to_string(), self.dns_addr.clone()));
        }
        Ok(TaskEnv {
            vars,
            dir: (!spec.dir.is_empty()).then(|| PathBuf::from(&spec.dir)),
        })
    }

    fn child(&self, pid: i32) -> Option<watch::Receiver<Option<i32>>> {
        self.children.lock().ok().and_then(|c| c.get(&pid).cloned())
    }
}

/// What a task's process (and its checks) run with: only these variables, in this
/// directory.
#[derive(Debug, Clone)]
struct TaskEnv {
    vars: Vec<(String, String)>,
    dir: Option<PathBuf>,
}

impl TaskEnv {
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear().envs(self.vars.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd
    }
}

/// The process spec of a process task.
fn process_spec(task: &Task) -> Option<&ProcessSpec> {
    match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(Runtime::Process(spec)) => Some(spec),
        _ => None,
    }
}

/// The check a process task asks for, if any.
fn task_probe(spec: &ProcessSpec) -> Result<Option<(Probe, Timing)>, TaskError> {
    let Some(cfg) = spec.healthcheck.as_ref() else {
        return Ok(None);
    };
    Ok(Probe::parse(&cfg.test)
        .map_err(TaskError::failed)?
        .map(|p| (p, Timing::of(cfg))))
}

/// One run of a process task's check.
async fn probe_once(probe: &Probe, env: &TaskEnv) -> Result<(), String> {
    match probe {
        Probe::Exec(argv) => match argv.split_first() {
            Some((program, args)) => run_check(env, program, args).await,
            None => Err("healthcheck CMD needs a program".into()),
        },
        Probe::Shell(command) => run_check(env, "sh", &["-c".to_string(), command.clone()]).await,
        Probe::Tcp(addr) => health::tcp(addr).await,
        Probe::Http(target) => health::http(target).await,
    }
}

/// Runs a check command in its own process group; exit 0 is healthy. Dropped before
/// the command ends (its timeout), the whole group is killed.
async fn run_check(env: &TaskEnv, program: &str, args: &[String]) -> Result<(), String> {
    let mut cmd = env.command(program);
    cmd.args(args)
        .env(CHECK_MARKER, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {program:?}: {e}"))?;
    let mut group = GroupKill(child.id().and_then(|p| i32::try_from(p).ok()));
    let status = child.wait().await;
    // Reaped: its pid (the group id) may be reused from now on.
    group.0 = None;
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{program} exited with {}", exit_code(s))),
        Err(e) => Err(format!("waiting for {program}: {e}")),
    }
}

/// Kills a check's process group when a check is abandoned.
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}

/// The exit code Docker would report: the code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// A process's state letter and start time from `/proc/<pid>/stat`.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    proc_stat_full(pid).map(|(state, start, _)| (state, start))
}

/// State letter, start time and process group from `/proc/<pid>/stat`.
fn proc_stat_full(pid: i32) -> Option<(char, u64, i32)> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after it.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 is the state, 4 the parent, 5 the process group, 22 the start time.
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    let start_time = fields.nth(16)?.parse().ok()?;
    Some((state, start_time, pgrp))
}

/// Whether the process `pid` started at `start_time` is still alive (zombies are not).
fn alive(pid: i32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some((state, st)) if st == start_time && state != 'Z' && state != 'X')
}

fn signal_group(pid: i32, signal: Signal) {
    if pid > 0 {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

#[async_trait::async_trait]
impl Executor for ProcessExecutor {
    fn kind(&self) -> Kind {
        Kind::Process
    }

    async fn prepare(&self, task: &Task) -> Result<Handle, TaskError> {
        let Some(spec) = process_spec(task) else {
            return Err(TaskError::rejected("not a process task"));
        };
        if spec.command.is_empty() && spec.args.is_empty() {
            return Err(TaskError::failed("process task has no command"));
        }
        task_probe(spec)?;
        let id = task_id(task);
        if id.is_empty() || id.contains('/') || id.contains("..") {
            return Err(TaskError::rejected(format!("bad task id {id:?}")));
        }
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| TaskError::failed(format!("log dir {}: {e}", self.log_dir.display())))?;
        Ok(Handle::Process {
            pid: 0,
            start_time: 0,
            log: self.log_dir.join(format!("{id}.log")),
        })
    }

    async fn start(&self, task: &Task, handle: &mut Handle) -> Result<(), TaskError> {
        let Some(spec) = process_spec(task) else {
            return Err(TaskError::rejected("not a process task"));
        };
        let Handle::Process {
            pid,
            start_time,
            log,
        } = handle
        else {
            return Err(TaskError::failed("not a process handle"));
        };
        let mut argv = spec.command.iter().chain(spec.args.iter());
        let Some(program) = argv.next() else {
            return Err(TaskError::failed("process task has no command"));
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*log)
            .map_err(|e| TaskError::failed(format!("log file {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| TaskError::failed(format!("log file {}: {e}", log.display())))?;
        let env = self.task_env(task, spec)?;
        let mut cmd = env.command(program);
        cmd.args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| TaskError::failed(format!("starting {program:?}: {e}")))?;
        let Some(raw) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            return Err(TaskError::failed("the process ended before it had a pid"));
        };
        let (tx, rx) = watch::channel(None);
        if let Ok(mut children) = self.children.lock() {
            children.insert(raw, rx);
        }
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => exit_code(status),
                Err(_) => -1,
            };
            let _ = tx.send(Some(code));
        });
        *pid = raw;
        *start_time = proc_stat(raw).map(|(_, st)| st).unwrap_or(0);
        Ok(())
    }

    async fn wait(&self, handle: &Handle) -> Exit {
        let Handle::Process {
            pid, start_time, ..
        } = handle
        else {
            return Exit::Unknown("not a process handle".into());
        };
        if let Some(mut rx) = self.child(*pid) {
            return match rx.wait_for(Option::is_some).await {
                Ok(code) => Exit::Code(code.unwrap_or(-1)),
                Err(_) => Exit::Unknown("lost the process's exit status".into()),
            };
        }
        let mut tick = tokio::time::interval(ADOPTED_POLL);
        loop {
            tick.tick().await;
            if !alive(*pid, *start_time) {
                return Exit::Unknown(format!(
                    "process {pid} ended while the worker was not its parent: exit status unknown"
                ));
            }
        }
    }

    async fn health(
        &self,
        task: &Task,
        _handle: &Handle,
        healthy: bool,
    ) -> Option<watch::Receiver<Health>> {
        let spec = process_spec(task)?;
        let (probe, timing) = match task_probe(spec) {
            Ok(p) => p?,
            Err(e) => {
                tracing::warn!(task = %task_id(task), error = %e, "healthcheck not run");
                return None;
            }
        };
        let env = match self.task_env(task, spec) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(task = %task_id(task), error = %e, "healthcheck not run");
                return None;
            }
        };
        let initial = if healthy {
            Health::Healthy
        } else {
            Health::Starting
        };
        let (tx, rx) = watch::channel(initial);
        tokio::spawn(async move {
            let probe = &probe;
            let env = &env;
            health::monitor(timing, || probe_once(probe, env), tx).await;
        });
        Some(rx)
    }

    async fn inspect(&self, handle: &Handle) -> Liveness {
        let Handle::Process {
            pid, start_time, ..
        } = handle
        else {
            return Liveness::Gone;
        };
        if *pid <= 0 {
            return Liveness::Gone;
        }
        if let Some(rx) = self.child(*pid) {
            return match *rx.borrow() {
                Some(code) => Liveness::Exited(Exit::Code(code)),
                None => Liveness::Running,
            };
        }
        if alive(*pid, *start_time) {
            Liveness::Running
        } else {
            Liveness::Gone
        }
    }

    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), TaskError> {
        let Handle::Process { pid, .. } = handle else {
            return Err(TaskError::failed("not a process handle"));
        };
        let pid = *pid;
        if self.inspect(handle).await != Liveness::Running {
            // The leader is gone; whatever it left in its group goes too.
            signal_group(pid, Signal::SIGKILL);
            return Ok(());
        }
        signal_group(pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, self.wait(handle))
            .await
            .is_err()
        {
            tracing::debug!(
                pid,
                ?grace,
                "process did not stop in its grace period: SIGKILL"
            );
        }
        signal_group(pid, Signal::SIGKILL);
        match tokio::time::timeout(KILL_WAIT, self.wait(handle)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(TaskError::failed(format!(
                "process {pid} still running after SIGKILL"
            ))),
        }
    }

    async fn remove(&self, handle: &Handle) -> Result<(), TaskError> {
        let Handle::Process { pid, log, .. } = handle else {
            return Err(TaskError::failed("not a process handle"));
        };
        if let Ok(mut children) = self.children.lock() {
            children.remove(pid);
        }
        match std::fs::remove_file(log) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TaskError::failed(format!(
                "removing {}: {e}",
                log.display()
            ))),
        }
    }

    async fn logs(&self, handle: &Handle, tail: i64) -> Result<Vec<LogLine>, TaskError> {
        let Handle::Process { log, .. } = handle else {
            return Err(TaskError::failed("not a process handle"));
        };
        let log = log.clone();
        tokio::task::spawn_blocking(move || read_tail(&log, tail))
            .await
            .map_err(|e| TaskError::failed(format!("reading the log: {e}")))?
    }

    async fn follow(&self, handle: &Handle, from_start: bool, lines: mpsc::Sender<LogLine>) {
        let Handle::Process { log, .. } = handle else {
            return;
        };
        let mut offset = if from_start {
            0
        } else {
            std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
        };
        let mut pending = Vec::new();
        let mut tick = tokio::time::interval(FOLLOW_POLL);
        loop {
            tick.tick().await;
            let ended = !matches!(self.inspect(handle).await, Liveness::Running);
            let (chunk, next) = match read_from(log, offset) {
                Ok(r) => r,
                Err(_) => return,
            };
            offset = next;
            for data in split_lines(&mut pending, &chunk) {
                let line = LogLine {
                    stderr: false,
                    timestamp: Some(std::time::SystemTime::now()),
                    data,
                };
                if lines.send(line).await.is_err() {
                    return;
                }
            }
            if ended {
                if !pending.is_empty() {
                    let data = std::mem::take(&mut pending);
                    let _ = lines
                        .send(LogLine {
                            stderr: false,
                            timestamp: Some(std::time::SystemTime::now()),
                            data,
                        })
                        .await;
                }
                return;
            }
        }
    }
}

/// What the file holds from `offset`, and the offset after it.
fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(MAX_HISTORY).read_to_end(&mut buf)?;
    let next = start + buf.len() as u64;
    Ok((buf, next))
}

/// The last `tail` lines of a log file (negative: all, within the last 4 MiB).
fn read_tail(path: &Path, tail: i64) -> Result<Vec<LogLine>, TaskError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TaskError::failed(format!("{}: {e}", path.display()))),
    };
    let len = f
        .metadata()
        .map_err(|e| TaskError::failed(e.to_string()))?
        .len();
    let start = len.saturating_sub(MAX_HISTORY);
    f.seek(SeekFrom::Start(start))
        .map_err(|e| TaskError::failed(e.to_string()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| TaskError::failed(e.to_string()))?;
    let mut pending = Vec::new();
    let mut lines = split_lines(&mut pending, &buf);
    if !pending.is_empty() {
        lines.push(pending);
    }
    if start > 0 && !lines.is_empty() {
        // The first line was cut by the 4 MiB window.
        lines.remove(0);
    }
    if tail >= 0 {
        let keep = usize::try_from(tail).unwrap_or(usize::MAX);
        let skip = lines.len().saturating_sub(keep);
        lines.drain(..skip);
    }
    Ok(lines
        .into_iter()
        .map(|data| LogLine {
            stderr: false,
            timestamp: None,
            data,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_is_parsed() {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        let (state, start) = proc_stat(me).expect("own /proc stat");
        assert!(state == 'R' || state == 'S', "state {state}");
        assert!(start > 0);
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(proc_stat(0).is_none());
    }
}
