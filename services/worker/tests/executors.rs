//! The executors against the real thing: child processes, and the local Docker Engine
//! (skipped with a notice where none answers) with an image built from busybox-static.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{Annotations, ContainerSpec, Meta, ProcessSpec, Task, TaskSpec};
use shoal_testkit::docker::{busybox_image, docker_available, remove_containers_labelled};
use shoal_testkit::wait_for;
use shoal_worker::executor::docker::DockerExecutor;
use shoal_worker::executor::process::{ProcessExecutor, proc_stat};
use shoal_worker::executor::{Executor, Exit, Handle, Liveness};

const DEADLINE: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{nanos:x}")
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
        slot: 3,
        node_id: "node1".into(),
        service_annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn process(argv: &[&str], env: &[&str]) -> Runtime {
    Runtime::Process(ProcessSpec {
        command: argv.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z')
}

async fn run_process(exec: &ProcessExecutor, t: &Task) -> Handle {
    let mut h = exec.prepare(t).await.expect("prepare");
    exec.start(t, &mut h).await.expect("start");
    h
}

#[tokio::test]
async fn a_process_gets_its_env_and_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ProcessExecutor::new(dir.path(), "node1", "127.0.1.7");
    let t = task(
        "envtask1",
        process(
            &["sh", "-c", "env; echo oops >&2; exit 7"],
            &["GREETING=hello"],
        ),
    );
    let h = run_process(&exec, &t).await;
    assert_eq!(exec.wait(&h).await, Exit::Code(7));
    let lines: Vec<String> = exec
        .logs(&h, -1)
        .await
        .unwrap()
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .collect();
    for want in [
        "GREETING=hello",
        "SHOAL_TASK_ID=envtask1",
        "SHOAL_TASK_SLOT=3",
        "SHOAL_SERVICE_NAME=web",
        "SHOAL_NODE_ID=node1",
        "SHOAL_TASK_ADDR=127.0.1.7",
        "oops",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want} in {lines:?}");
    }
    // The worker's own environment does not leak into tasks.
    assert!(!lines.iter().any(|l| l.starts_with("CARGO")), "{lines:?}");
    let last = exec.logs(&h, 1).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].data, b"oops");
    exec.remove(&h).await.unwrap();
    assert!(exec.logs(&h, -1).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_program_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ProcessExecutor::new(dir.path(), "node1", "127.0.0.1");
    let t = task("missing1", process(&["/no/such/program"], &[]));
    let mut h = exec.prepare(&t).await.unwrap();
    let err = exec.start(&t, &mut h).await.expect_err("no such program");
    assert!(err.message.contains("/no/such/program"), "{err}");
    let empty = task("empty1", process(&[], &[]));
    assert!(exec.prepare(&empty).await.is_err());
}

#[tokio::test]
async fn stopping_a_process_kills_its_whole_group_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ProcessExecutor::new(dir.path(), "node1", "127.0.0.1");
    let pidfile = dir.path().join("child.pid");
    // The leader ignores SIGTERM and has a child in its group.
    let script = format!(
        "trap '' TERM; sleep 300 & echo $! > {}; while :; do sleep 0.05; done",
        pidfile.display()
    );
    let t = task("group1", process(&["sh", "-c", &script], &[]));
    let h = run_process(&exec, &t).await;
    let child: i32 = wait_for("the child's pid", DEADLINE, || async {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    })
    .await
    .unwrap();
    let Handle::Process { pid, .. } = h.clone() else {
        panic!("process handle")
    };
    assert!(alive(pid) && alive(child));
    assert_eq!(exec.inspect(&h).await, Liveness::Running);
    exec.stop(&h, Duration::from_millis(300)).await.unwrap();
    // SIGTERM was ignored: the leader died of the SIGKILL that followed.
    assert_eq!(exec.wait(&h).await, Exit::Code(128 + 9));
    wait_for("the group's child to die", DEADLINE, || async {
        (!alive(child)).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_polite_process_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ProcessExecutor::new(dir.path(), "node1", "127.0.0.1");
    let t = task(
        "polite1",
        process(
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done",
            ],
            &[],
        ),
    );
    let h = run_process(&exec, &t).await;
    // Once it says so, its handler is in place.
    wait_for("the trap", DEADLINE, || async {
        let lines = exec.logs(&h, -1).await.ok()?;
        lines.iter().any(|l| l.data == b"ready").then_some(())
    })
    .await
    .unwrap();
    exec.stop(&h, Duration::from_secs(30)).await.unwrap();
    assert_eq!(exec.wait(&h).await, Exit::Code(0));
}

#[tokio::test]
async fn an_adopted_process_is_watched_through_proc() {
    let dir = tempfile::tempdir().unwrap();
    let first = ProcessExecutor::new(dir.path(), "node1", "127.0.0.1");
    let t = task("adopt1", process(&["sleep", "300"], &[]));
    let h = run_process(&first, &t).await;
    // Another executor (a restarted worker) is not its parent.
    let second = ProcessExecutor::new(dir.path(), "node1", "127.0.0.1");
    assert_eq!(second.inspect(&h).await, Liveness::Running);
    // The same pid with another start time is someone else.
    let Handle::Process {
        pid,
        start_time,
        log,
    } = h.clone()
    else {
        panic!("process handle")
    };
    let other = Handle::Process {
        pid,
        start_time: start_time + 1,
        log,
    };
    assert_eq!(second.inspect(&other).await, Liveness::Gone);
    second.stop(&h, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(second.wait(&h).await, Exit::Unknown(_)));
    assert!(!alive(pid));
}

// ---------------------------------------------------------------- docker

async fn docker() -> Option<std::sync::Arc<DockerExecutor>> {
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; docker executor test skipped");
        return None;
    }
    Some(
        DockerExecutor::connect("node-exec-test")
            .await
            .expect("the engine answers the CLI but not bollard"),
    )
}

fn container(image: &str, argv: &[&str], grace_secs: i64) -> Runtime {
    Runtime::Container(ContainerSpec {
        image: image.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["GREETING=hi".into()],
        stop_grace_period: Some(prost_types::Duration {
            seconds: grace_secs,
            nanos: 0,
        }),
        ..Default::default()
    })
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_containers_labelled(&format!("shoal.task.id={}", self.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_labelled_and_its_exit_code_is_reported() {
    let Some(exec) = docker().await else { return };
    let image = busybox_image().unwrap();
    let id = unique("dk");
    let _cleanup = Cleanup(id.clone());
    let t = task(
        &id,
        container(&image, &["sh", "-c", "echo $GREETING; exit 3"], 10),
    );
    let mut h = exec.prepare(&t).await.expect("prepare");
    let Handle::Container { id: cid } = h.clone() else {
        panic!("container handle")
    };
    let info = exec.client().inspect_container(&cid, None).await.unwrap();
    assert_eq!(info.name.as_deref(), Some(format!("/web.3.{id}").as_str()));
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get("shoal.task.id"), Some(&id));
    assert_eq!(
        labels.get("shoal.service.name").map(String::as_str),
        Some("web")
    );
    assert_eq!(labels.get("shoal.task.slot").map(String::as_str), Some("3"));
    exec.start(&t, &mut h).await.expect("start");
    let exit = tokio::time::timeout(DEADLINE, exec.wait(&h)).await.unwrap();
    assert_eq!(exit, Exit::Code(3));
    let lines = exec.logs(&h, -1).await.unwrap();
    assert!(lines.iter().any(|l| l.data == b"hi"), "{lines:?}");
    exec.remove(&h).await.unwrap();
    assert_eq!(exec.inspect(&h).await, Liveness::Gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_with_docker_s_words_and_is_never_pulled() {
    let Some(exec) = docker().await else { return };
    let id = unique("dk");
    let _cleanup = Cleanup(id.clone());
    let t = task(&id, container("shoal-test/not-here", &[], 10));
    let err = exec.prepare(&t).await.expect_err("no such image");
    assert_eq!(err.message, "No such image: shoal-test/not-here:latest");
    assert!(!err.reject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_stopped_with_its_grace_period() {
    let Some(exec) = docker().await else { return };
    let image = busybox_image().unwrap();
    // PID 1 without a handler ignores SIGTERM: only the kill after the grace ends it.
    let stubborn_id = unique("dk");
    let _c1 = Cleanup(stubborn_id.clone());
    let stubborn = task(&stubborn_id, container(&image, &["sleep", "300"], 1));
    let mut h = exec.prepare(&stubborn).await.unwrap();
    exec.start(&stubborn, &mut h).await.unwrap();
    assert_eq!(exec.inspect(&h).await, Liveness::Running);
    exec.stop(&h, Duration::from_secs(1)).await.unwrap();
    assert_eq!(exec.wait(&h).await, Exit::Code(137));

    // With a handler, SIGTERM ends it politely within the grace period.
    let polite_id = unique("dk");
    let _c2 = Cleanup(polite_id.clone());
    let polite = task(
        &polite_id,
        container(
            &image,
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done",
            ],
            30,
        ),
    );
    let mut h = exec.prepare(&polite).await.unwrap();
    exec.start(&polite, &mut h).await.unwrap();
    wait_for("the trap", DEADLINE, || async {
        let lines = exec.logs(&h, -1).await.ok()?;
        lines.iter().any(|l| l.data == b"ready").then_some(())
    })
    .await
    .unwrap();
    exec.stop(&h, Duration::from_secs(30)).await.unwrap();
    assert_eq!(exec.wait(&h).await, Exit::Code(0));
    exec.remove(&h).await.unwrap();
}

#[tokio::test]
async fn task_processes_of_the_node_are_found_without_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let node = unique("node");
    let first = ProcessExecutor::new(dir.path(), &node, "127.0.0.1");
    // The leader forks a child: it inherits the environment but is not the leader.
    let t = task(
        "found1",
        process(&["sh", "-c", "sleep 300 & exec sleep 300"], &[]),
    );
    let h = run_process(&first, &t).await;
    let Handle::Process { pid, .. } = h.clone() else {
        panic!("process handle")
    };
    let second = ProcessExecutor::new(dir.path(), &node, "127.0.0.1");
    let found = wait_for("the task process", DEADLINE, || async {
        let f = second.managed();
        (!f.is_empty()).then_some(f)
    })
    .await
    .unwrap();
    assert_eq!(found.len(), 1, "only the group leader: {found:?}");
    assert_eq!(found[0].0, "found1");
    assert_eq!(found[0].1, h);
    assert!(
        ProcessExecutor::new(dir.path(), "another-node", "127.0.0.1")
            .managed()
            .iter()
            .all(|(task, _)| task != "found1")
    );
    second.stop(&h, Duration::from_secs(5)).await.unwrap();
    assert!(!alive(pid));
}
