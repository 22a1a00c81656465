//! Health gating, with the task manager fed assignments directly and real checks: a
//! task with a healthcheck stays STARTING (health STARTING) until its check passes,
//! is RUNNING (HEALTHY) from then on, and once the check fails `retries` times in a
//! row the worker stops it and reports FAILED "unhealthy container" (UNHEALTHY).
//! Process tasks are checked by the worker (CMD-SHELL, TCP, HTTP against listeners
//! the test controls); containers by the Docker Engine (skipped with a notice where
//! none answers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use shoal_proto::v1::assignment::Item;
use shoal_proto::v1::assignment_change::Action;
use shoal_proto::v1::assignments_message::Type;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::task_status::{Health, RuntimeStatus};
use shoal_proto::v1::{
    Annotations, Assignment, AssignmentChange, AssignmentsMessage, ContainerSpec, HealthConfig,
    Meta, Mount, ProcessSpec, Task, TaskSpec, TaskState, TaskStatus, mount,
};
use shoal_testkit::docker::{busybox_image, docker_available, remove_containers_labelled};
use shoal_testkit::wait_for;
use shoal_worker::executor::docker::DockerExecutor;
use shoal_worker::executor::process::{ProcessExecutor, proc_stat};
use shoal_worker::executor::{Executor, Executors, Handle, Liveness};
use shoal_worker::tasks::TaskManager;
use shoal_worker::tasks::reporter::Report;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(30);
const UNHEALTHY: &str = "unhealthy container";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{nanos:x}")
}

fn ms(millis: u64) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(Duration::from_millis(millis)).ok()
}

/// A check every 100 ms, 2 s timeout, 3 retries, with this start period.
fn check(test: &[&str], start_period_ms: u64) -> HealthConfig {
    HealthConfig {
        test: test.iter().map(|s| s.to_string()).collect(),
        interval: ms(100),
        timeout: ms(2000),
        retries: 3,
        start_period: ms(start_period_ms),
    }
}

fn task(id: &str, runtime: Runtime) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            runtime: Some(runtime),
            ..Default::default()
        }),
        service_id: "svc0000000000000000000001".into(),
        slot: 1,
        node_id: "node1".into(),
        service_annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

fn process_task(id: &str, argv: &[&str], env: &[String], dir: &Path, hc: HealthConfig) -> Task {
    task(
        id,
        Runtime::Process(ProcessSpec {
            command: argv.iter().map(|s| s.to_string()).collect(),
            env: env.to_vec(),
            dir: dir.display().to_string(),
            healthcheck: Some(hc),
            stop_grace_period: ms(2000),
            ..Default::default()
        }),
    )
}

fn complete(seq: &str, tasks: Vec<Task>) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: Type::Complete as i32,
        applies_to: String::new(),
        results_in: seq.into(),
        changes: tasks
            .into_iter()
            .map(|t| AssignmentChange {
                assignment: Some(Assignment {
                    item: Some(Item::Task(t)),
                }),
                action: Action::Update as i32,
            })
            .collect(),
    }
}

fn manager(
    dir: &Path,
    docker: Option<Arc<DockerExecutor>>,
) -> (TaskManager, mpsc::Receiver<Report>) {
    let (tx, rx) = mpsc::channel(1024);
    let executors = Executors {
        docker: docker.map(|d| d as Arc<dyn Executor>),
        process: ProcessExecutor::new(dir, "node1", "127.0.0.1"),
    };
    (TaskManager::new(dir, executors, tx, None), rx)
}

/// Reads reports until one for `id` matches; returns every status seen for it.
async fn until(
    rx: &mut mpsc::Receiver<Report>,
    id: &str,
    what: &str,
    done: impl Fn(&TaskStatus) -> bool,
) -> Vec<TaskStatus> {
    let mut seen = Vec::new();
    let wait = async {
        while let Some(r) = rx.recv().await {
            if let Report::Status(tid, s) = r
                && tid == id
            {
                let stop = done(&s);
                seen.push(s);
                if stop {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(DEADLINE, wait).await.is_err() {
        panic!("task {id}: no {what} report; saw {seen:?}");
    }
    seen
}

fn is(state: TaskState, health: Health) -> impl Fn(&TaskStatus) -> bool {
    move |s| s.state == state as i32 && s.health == health as i32
}

/// No report for `id` is waiting right now.
fn nothing_reported(rx: &mut mpsc::Receiver<Report>, id: &str) {
    while let Ok(r) = rx.try_recv() {
        if let Report::Status(tid, s) = r {
            assert_ne!(tid, id, "unexpected report {s:?}");
        }
    }
}

fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z')
}

fn pid_of(m: &TaskManager, id: &str) -> i32 {
    match m.handle(id) {
        Some(Handle::Process { pid, .. }) => pid,
        other => panic!("no process handle for {id}: {other:?}"),
    }
}

async fn wait_gone(pid: i32) {
    wait_for(&format!("process {pid} to end"), DEADLINE, || async {
        (!alive(pid)).then_some(())
    })
    .await
    .unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The unhealthy end every check below comes to: FAILED with Docker's words, health
/// UNHEALTHY, after the task was RUNNING (HEALTHY).
fn assert_unhealthy_end(seen: &[TaskStatus]) {
    let last = seen.last().unwrap();
    assert_eq!(last.state, TaskState::Failed as i32, "{seen:?}");
    assert_eq!(last.err, UNHEALTHY);
    assert_eq!(last.health, Health::Unhealthy as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_stays_starting_until_its_shell_check_passes_and_fails_when_it_stops_passing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (m, mut reports) = manager(dir.path(), None);
    // The check runs in the task's dir with its environment, and logs each run there.
    // A long start period: its failures do not count until it first passes.
    let t = process_task(
        "hc1",
        &["sleep", "300"],
        &["MARK=ready".into()],
        &work,
        check(
            &["CMD-SHELL", "echo $SHOAL_TASK_ID >> probes; test -f $MARK"],
            600_000,
        ),
    );
    m.apply(complete("1", vec![t])).unwrap();
    let seen = until(
        &mut reports,
        "hc1",
        "STARTING (health STARTING)",
        is(TaskState::Starting, Health::Starting),
    )
    .await;
    let pid = pid_of(&m, "hc1");
    assert!(alive(pid));
    let last = seen.last().unwrap();
    assert!(
        matches!(last.runtime_status, Some(RuntimeStatus::Process(ref p)) if p.pid == pid),
        "{last:?}"
    );
    // Several checks fail: it stays STARTING.
    let probes = work.join("probes");
    wait_for("three checks", DEADLINE, || async {
        (lines(&probes).len() >= 3).then_some(())
    })
    .await
    .unwrap();
    assert!(
        lines(&probes).iter().all(|l| l == "hc1"),
        "{:?}",
        lines(&probes)
    );
    nothing_reported(&mut reports, "hc1");

    // The check passes: RUNNING, healthy, at the next check (not after 30 s).
    std::fs::write(work.join("ready"), b"").unwrap();
    let seen = until(&mut reports, "hc1", "RUNNING (HEALTHY)", |s| {
        s.state >= TaskState::Running as i32
    })
    .await;
    let running = seen.last().unwrap();
    assert_eq!(running.state, TaskState::Running as i32, "{seen:?}");
    assert_eq!(running.health, Health::Healthy as i32);
    assert!(alive(pid));

    // It stops passing: three failures in a row (the start period ended with the first
    // success) and the worker stops it.
    std::fs::remove_file(work.join("ready")).unwrap();
    let seen = until(&mut reports, "hc1", "FAILED", |s| {
        s.state > TaskState::Running as i32
    })
    .await;
    assert_unhealthy_end(&seen);
    wait_gone(pid).await;
    assert!(m.task_ids().contains(&"hc1".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_never_gets_healthy_fails_once_its_retries_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let (m, mut reports) = manager(dir.path(), None);
    // CMD: no shell; `test` is the program. No start period.
    let t = process_task(
        "hc2",
        &["sleep", "300"],
        &[],
        dir.path(),
        check(&["CMD", "test", "-f", "never-there"], 0),
    );
    m.apply(complete("1", vec![t])).unwrap();
    let seen = until(&mut reports, "hc2", "FAILED", |s| {
        s.state > TaskState::Running as i32
    })
    .await;
    assert!(
        !seen.iter().any(|s| s.state == TaskState::Running as i32),
        "never RUNNING: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.state == TaskState::Starting as i32 && s.health == Health::Starting as i32),
        "{seen:?}"
    );
    assert_unhealthy_end(&seen);
    wait_gone(pid_of(&m, "hc2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_follows_a_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (m, mut reports) = manager(dir.path(), None);
    // The kernel completes connections on a listener's backlog: no accept needed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t = process_task(
        "tcp1",
        &["sleep", "300"],
        &[],
        dir.path(),
        check(&["TCP", &addr], 0),
    );
    m.apply(complete("1", vec![t])).unwrap();
    let seen = until(&mut reports, "tcp1", "RUNNING", |s| {
        s.state >= TaskState::Running as i32
    })
    .await;
    assert_eq!(
        seen.last().unwrap().health,
        Health::Healthy as i32,
        "{seen:?}"
    );
    let pid = pid_of(&m, "tcp1");
    drop(listener);
    let seen = until(&mut reports, "tcp1", "FAILED", |s| {
        s.state > TaskState::Running as i32
    })
    .await;
    assert_unhealthy_end(&seen);
    wait_gone(pid).await;
}

/// A tiny HTTP server answering every request with the status in `code`, counting
/// the requests.
async fn http_server(code: Arc<AtomicU16>, hits: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 1024];
            let Ok(n) = s.read(&mut buf).await else {
                continue;
            };
            if !buf[..n].starts_with(b"GET /healthz HTTP/1.0\r\n") {
                continue;
            }
            hits.fetch_add(1, Ordering::SeqCst);
            let answer = format!("HTTP/1.0 {} X\r\n\r\n", code.load(Ordering::SeqCst));
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_wants_a_2xx_or_3xx_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (m, mut reports) = manager(dir.path(), None);
    let code = Arc::new(AtomicU16::new(503));
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = http_server(code.clone(), hits.clone()).await;
    let t = process_task(
        "http1",
        &["sleep", "300"],
        &[],
        dir.path(),
        check(&["HTTP", &format!("http://{addr}/healthz")], 600_000),
    );
    m.apply(complete("1", vec![t])).unwrap();
    until(
        &mut reports,
        "http1",
        "STARTING (health STARTING)",
        is(TaskState::Starting, Health::Starting),
    )
    .await;
    // 503s, in the start period: still STARTING.
    wait_for("three requests", DEADLINE, || async {
        (hits.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await
    .unwrap();
    nothing_reported(&mut reports, "http1");
    // A redirect counts as healthy.
    code.store(302, Ordering::SeqCst);
    let seen = until(&mut reports, "http1", "RUNNING", |s| {
        s.state >= TaskState::Running as i32
    })
    .await;
    let running = seen.last().unwrap();
    assert_eq!(running.state, TaskState::Running as i32, "{seen:?}");
    assert_eq!(running.health, Health::Healthy as i32);
    let pid = pid_of(&m, "http1");
    code.store(500, Ordering::SeqCst);
    let seen = until(&mut reports, "http1", "FAILED", |s| {
        s.state > TaskState::Running as i32
    })
    .await;
    assert_unhealthy_end(&seen);
    wait_gone(pid).await;
}

// ---------------------------------------------------------------- docker

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_containers_labelled(&format!("shoal.task.id={}", self.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_s_engine_healthcheck_gates_running_and_fails_it_when_unhealthy() {
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; docker healthcheck test skipped");
        return;
    }
    let image = busybox_image().unwrap();
    let docker = DockerExecutor::connect("node-health-test")
        .await
        .expect("the engine answers the CLI but not bollard");
    let dir = tempfile::tempdir().unwrap();
    let probe_dir = dir.path().join("probe");
    std::fs::create_dir_all(&probe_dir).unwrap();
    let (m, mut reports) = manager(dir.path(), Some(docker.clone()));
    let id = unique("dkhc");
    let _cleanup = Cleanup(id.clone());
    let mut hc = check(
        &["CMD-SHELL", "echo x >> /probe/probes; test -f /probe/ready"],
        600_000,
    );
    hc.interval = ms(200);
    hc.retries = 2;
    let t = task(
        &id,
        Runtime::Container(ContainerSpec {
            image,
            command: vec!["sleep".into(), "300".into()],
            mounts: vec![Mount {
                r#type: mount::Type::Bind as i32,
                source: probe_dir.display().to_string(),
                target: "/probe".into(),
                ..Default::default()
            }],
            healthcheck: Some(hc),
            stop_grace_period: ms(1000),
            ..Default::default()
        }),
    );
    m.apply(complete("1", vec![t])).unwrap();
    until(
        &mut reports,
        &id,
        "STARTING (health STARTING)",
        is(TaskState::Starting, Health::Starting),
    )
    .await;
    let Some(Handle::Container { id: cid }) = m.handle(&id) else {
        panic!("no container handle")
    };
    // The engine got the check: interval in nanoseconds.
    let info = docker.client().inspect_container(&cid, None).await.unwrap();
    let given = info.config.and_then(|c| c.healthcheck).unwrap();
    assert_eq!(given.interval, Some(200_000_000));
    assert_eq!(given.retries, Some(2));
    // The engine's checks fail (start period): still STARTING.
    let probes = probe_dir.join("probes");
    wait_for("two checks in the container", DEADLINE, || async {
        (lines(&probes).len() >= 2).then_some(())
    })
    .await
    .unwrap();
    nothing_reported(&mut reports, &id);

    std::fs::write(probe_dir.join("ready"), b"").unwrap();
    let seen = until(&mut reports, &id, "RUNNING", |s| {
        s.state >= TaskState::Running as i32
    })
    .await;
    let running = seen.last().unwrap();
    assert_eq!(running.state, TaskState::Running as i32, "{seen:?}");
    assert_eq!(running.health, Health::Healthy as i32);

    std::fs::remove_file(probe_dir.join("ready")).unwrap();
    let seen = until(&mut reports, &id, "FAILED", |s| {
        s.state > TaskState::Running as i32
    })
    .await;
    assert_unhealthy_end(&seen);
    // Stopped (sleep ignores SIGTERM as PID 1: killed after its 1 s grace).
    let h = Handle::Container { id: cid };
    assert!(matches!(docker.inspect(&h).await, Liveness::Exited(_)));
}
