//! Executors: how a task's runtime runs on this node.
//!
//! A task's spec names its runtime: a `ContainerSpec` runs on the Docker Engine
//! ([`docker::DockerExecutor`]), a `ProcessSpec` as a plain child process
//! ([`process::ProcessExecutor`]). Both implement [`Executor`]; the task manager
//! only talks to that trait. What an executor started is described by a [`Handle`]
//! (container id, or pid and start time) that the worker keeps in its state file, so
//! that a restarted worker adopts what is still running instead of starting it again.
//!
//! A task with a healthcheck is followed through [`Executor::health`]: the engine runs
//! a container's checks, the worker a process task's ([`crate::health`]).
//!
//! A task's network attachments ([`networks`]) give it its addresses: a container
//! joins the Docker network of each of its networks with its address, a process gets
//! them in its environment. When the manager adds an attachment to a running task (its
//! service joined a network), [`Executor::attach`] connects what it can.

pub mod docker;
pub mod networks;
pub mod process;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::task_status::RuntimeStatus;
use shoal_proto::v1::{LogMessage, Task};
use tokio::sync::watch;

use crate::health::Health;

/// Swarm's default stop grace period.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// What an executor started for a task; kept in the worker's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Handle {
    /// A Docker container, by id.
    Container { id: String },
    /// A process group: its leader's pid and kernel start time (clock ticks since
    /// boot, `/proc/<pid>/stat` field 22), which tells it apart from a reused pid.
    /// `pid` 0: prepared, not started yet.
    Process {
        pid: i32,
        start_time: u64,
        log: PathBuf,
    },
}

impl Handle {
    /// The runtime status reported with the task's state.
    pub fn runtime_status(&self, exit_code: i32) -> RuntimeStatus {
        match self {
            Handle::Container { id } => {
                RuntimeStatus::Container(shoal_proto::v1::ContainerStatus {
                    container_id: id.clone(),
                    pid: 0,
                    exit_code,
                })
            }
            Handle::Process { pid, .. } => RuntimeStatus::Process(shoal_proto::v1::ProcessStatus {
                pid: *pid,
                exit_code,
            }),
        }
    }

    /// Which executor made it.
    pub fn kind(&self) -> Kind {
        match self {
            Handle::Container { .. } => Kind::Docker,
            Handle::Process { .. } => Kind::Process,
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// With this exit code (128 + signal for a signal, as Docker reports it).
    Code(i32),
    /// It is gone and nobody can tell how it ended (a process adopted after a worker
    /// restart is not our child: its exit status went to someone else).
    Unknown(String),
}

/// What a handle found on the node is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Running,
    Exited(Exit),
    /// Nothing is there (or it never started).
    Gone,
}

/// Why a step failed; `reject` turns the task REJECTED instead of FAILED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub reject: bool,
    pub message: String,
}

impl TaskError {
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            reject: false,
            message: message.into(),
        }
    }
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            reject: true,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The executor kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Docker,
    Process,
}

/// One output line of a task, for the log history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stderr: bool,
    /// When the line was written, if known.
    pub timestamp: Option<std::time::SystemTime>,
    pub data: Vec<u8>,
}

/// What every executor can do for a task.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    fn kind(&self) -> Kind;
    /// Checks and creates what the task needs (image present, container created, log
    /// file); nothing runs yet.
    async fn prepare(&self, task: &Task) -> Result<Handle, TaskError>;
    /// Starts the prepared task; may complete the handle (a process's pid).
    async fn start(&self, task: &Task, handle: &mut Handle) -> Result<(), TaskError>;
    /// Resolves when the started task has ended.
    async fn wait(&self, handle: &Handle) -> Exit;
    /// The task's network attachments changed while it runs (its service joined a
    /// network): joins the networks the runtime is not on yet, with the task's
    /// addresses. Leaving one is not done (the manager only adds attachments in place).
    /// By default nothing happens: a process's addresses are fixed when it starts.
    async fn attach(&self, _task: &Task, _handle: &Handle) -> Result<(), TaskError> {
        Ok(())
    }
    /// Follows the health of a started task: None when it has no healthcheck, else its
    /// health as it changes (from `Starting`, or `Healthy` for a task already reported
    /// healthy, e.g. one adopted after a worker restart). Checking stops when the
    /// receiver is dropped.
    async fn health(
        &self,
        task: &Task,
        handle: &Handle,
        healthy: bool,
    ) -> Option<watch::Receiver<Health>>;
    /// What the runtime behind a handle is doing now (used to adopt after a restart).
    async fn inspect(&self, handle: &Handle) -> Liveness;
    /// Asks the task to stop, forcing it after `grace`; Ok once it is not running.
    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), TaskError>;
    /// Removes what is left of the task (container, log file).
    async fn remove(&self, handle: &Handle) -> Result<(), TaskError>;
    /// The last `tail` lines of the task's output (negative: all that is kept).
    async fn logs(&self, handle: &Handle, tail: i64) -> Result<Vec<LogLine>, TaskError>;
    /// Follows the task's output, from its first line (`from_start`, a task just
    /// started) or from now (an adopted one), sending each line until it ends.
    async fn follow(
        &self,
        handle: &Handle,
        from_start: bool,
        lines: tokio::sync::mpsc::Sender<LogLine>,
    );
}

/// The executors of this node: always processes, Docker when an engine answers.
#[derive(Clone)]
pub struct Executors {
    pub docker: Option<Arc<dyn Executor>>,
    pub process: Arc<dyn Executor>,
}

/// The message for a container task on a node without Docker.
pub const NO_DOCKER: &str = "no docker executor on this node";

impl Executors {
    /// The executor for a task's runtime.
    pub fn for_task(&self, task: &Task) -> Result<Arc<dyn Executor>, TaskError> {
        match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
            Some(Runtime::Container(_)) => self
                .docker
                .clone()
                .ok_or_else(|| TaskError::rejected(NO_DOCKER)),
            Some(Runtime::Process(_)) => Ok(self.process.clone()),
            None => Err(TaskError::rejected("task spec has no runtime")),
        }
    }

    /// The executor that made a handle.
    pub fn for_handle(&self, handle: &Handle) -> Option<Arc<dyn Executor>> {
        match handle.kind() {
            Kind::Docker => self.docker.clone(),
            Kind::Process => Some(self.process.clone()),
        }
    }
}

/// A task's display name: `<service>.<slot>`, or `<service>.<node id>` for global
/// tasks (slot 0), as Swarm names them.
pub fn task_name(task: &Task) -> String {
    let service = service_name(task);
    if task.slot == 0 {
        format!("{service}.{}", task.node_id)
    } else {
        format!("{service}.{}", task.slot)
    }
}

/// The task's service name (its id if the task does not carry the name).
pub fn service_name(task: &Task) -> String {
    task.service_annotations
        .as_ref()
        .map(|a| a.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| task.service_id.clone())
}

/// The task's id.
pub fn task_id(task: &Task) -> &str {
    task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// A protobuf duration as a std one, `default` when unset, zero or negative.
pub fn grace_period(d: Option<&prost_types::Duration>) -> Duration {
    d.and_then(|d| Duration::try_from(*d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_STOP_GRACE)
}

/// The task's stop grace period (default 10 s).
pub fn task_grace(task: &Task) -> Duration {
    match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(Runtime::Container(c)) => grace_period(c.stop_grace_period.as_ref()),
        Some(Runtime::Process(p)) => grace_period(p.stop_grace_period.as_ref()),
        None => DEFAULT_STOP_GRACE,
    }
}

/// A log line as the `LogMessage` published for a task.
pub fn log_message(task: &Task, line: &LogLine) -> LogMessage {
    use shoal_proto::v1::log_message::Stream;
    let ts = line.timestamp.unwrap_or_else(std::time::SystemTime::now);
    LogMessage {
        service_id: task.service_id.clone(),
        service_name: service_name(task),
        task_id: task_id(task).to_string(),
        slot: task.slot,
        node_id: task.node_id.clone(),
        stream: if line.stderr {
            Stream::Stderr as i32
        } else {
            Stream::Stdout as i32
        },
        timestamp: Some(prost_types::Timestamp::from(ts)),
        data: line.data.clone(),
    }
}

/// Splits a buffer into complete lines (without `\n`), keeping an unfinished tail in
/// `pending`.
pub fn split_lines(pending: &mut Vec<u8>, chunk: &[u8]) -> Vec<Vec<u8>> {
    pending.extend_from_slice(chunk);
    let mut lines = Vec::new();
    while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
        let mut line: Vec<u8> = pending.drain(..=pos).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_keeping_the_unfinished_tail() {
        let mut pending = Vec::new();
        assert_eq!(split_lines(&mut pending, b"a\nbc"), vec![b"a".to_vec()]);
        assert_eq!(
            split_lines(&mut pending, b"d\r\n\n"),
            vec![b"bcd".to_vec(), Vec::new()]
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn grace_defaults_to_ten_seconds() {
        assert_eq!(grace_period(None), DEFAULT_STOP_GRACE);
        let d = prost_types::Duration {
            seconds: 2,
            nanos: 0,
        };
        assert_eq!(grace_period(Some(&d)), Duration::from_secs(2));
        let neg = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(grace_period(Some(&neg)), DEFAULT_STOP_GRACE);
    }
}
