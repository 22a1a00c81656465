//! The task manager fed assignment messages directly, running real processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::time::Duration;

use shoal_proto::v1::assignment::Item;
use shoal_proto::v1::assignment_change::Action;
use shoal_proto::v1::assignments_message::Type;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{
    Annotations, Assignment, AssignmentChange, AssignmentsMessage, ContainerSpec, Meta,
    ProcessSpec, Task, TaskSpec, TaskState, TaskStatus,
};
use tokio::sync::mpsc;

use super::reporter::Report;
use super::*;
use crate::executor::process::{ProcessExecutor, proc_stat};

const DEADLINE: Duration = Duration::from_secs(20);

fn process_task(id: &str, slot: u64, argv: &[&str], desired: TaskState) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            runtime: Some(Runtime::Process(ProcessSpec {
                command: argv.iter().map(|s| s.to_string()).collect(),
                env: vec!["GREETING=hello".into()],
                stop_grace_period: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
        service_id: "svc0000000000000000000001".into(),
        slot,
        node_id: "node1".into(),
        service_annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        desired_state: desired as i32,
        ..Default::default()
    }
}

fn with_state(mut task: Task, state: TaskState) -> Task {
    task.status = Some(TaskStatus {
        state: state as i32,
        ..Default::default()
    });
    task
}

fn change(task: Task, action: Action) -> AssignmentChange {
    AssignmentChange {
        assignment: Some(Assignment {
            item: Some(Item::Task(task)),
        }),
        action: action as i32,
    }
}

fn complete(seq: &str, tasks: Vec<Task>) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: Type::Complete as i32,
        applies_to: String::new(),
        results_in: seq.into(),
        changes: tasks
            .into_iter()
            .map(|t| change(t, Action::Update))
            .collect(),
    }
}

fn incremental(from: &str, seq: &str, changes: Vec<AssignmentChange>) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: Type::Incremental as i32,
        applies_to: from.into(),
        results_in: seq.into(),
        changes,
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    manager: TaskManager,
    reports: mpsc::Receiver<Report>,
}

fn manager_in(dir: &std::path::Path, docker: bool) -> (TaskManager, mpsc::Receiver<Report>) {
    let (tx, rx) = mpsc::channel(1024);
    let executors = Executors {
        docker: None,
        process: ProcessExecutor::new(dir, "node1", "127.0.0.1"),
    };
    assert!(!docker, "these tests run processes only");
    (TaskManager::new(dir, executors, tx, None), rx)
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (manager, reports) = manager_in(dir.path(), false);
    Fixture {
        dir,
        manager,
        reports,
    }
}

/// Reads reports until `id` reaches at least `state`; returns every status seen for it.
async fn until(rx: &mut mpsc::Receiver<Report>, id: &str, state: TaskState) -> Vec<TaskStatus> {
    let mut seen = Vec::new();
    let wait = async {
        while let Some(r) = rx.recv().await {
            if let Report::Status(tid, s) = r
                && tid == id
            {
                let done = s.state >= state as i32;
                seen.push(s);
                if done {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("task {id} did not reach {state:?}; saw {seen:?}"));
    seen
}

fn pid_of(m: &TaskManager, id: &str) -> i32 {
    match m.handle(id) {
        Some(Handle::Process { pid, .. }) => pid,
        other => panic!("no process handle for {id}: {other:?}"),
    }
}

fn running(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z')
}

async fn wait_gone(pid: i32) {
    let ok = tokio::time::timeout(DEADLINE, async {
        while running(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "process {pid} still runs");
}

#[tokio::test]
async fn a_task_goes_through_docker_s_states_and_fails_with_its_exit_code() {
    let mut f = fixture();
    let t = process_task(
        "task1",
        1,
        &["sh", "-c", "echo $GREETING; exit 3"],
        TaskState::Running,
    );
    f.manager.apply(complete("1", vec![t])).unwrap();
    let seen = until(&mut f.reports, "task1", TaskState::Failed).await;
    let states: Vec<i32> = seen.iter().map(|s| s.state).collect();
    let want: Vec<i32> = [
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Failed,
    ]
    .iter()
    .map(|s| *s as i32)
    .collect();
    assert_eq!(states, want);
    let msgs: Vec<&str> = seen.iter().map(|s| s.message.as_str()).collect();
    assert_eq!(
        &msgs[..5],
        &["accepted", "preparing", "prepared", "starting", "started"]
    );
    let failed = seen.last().unwrap();
    assert_eq!(failed.err, "task: non-zero exit (3)");
    match &failed.runtime_status {
        Some(RuntimeStatus::Process(p)) => assert_eq!(p.exit_code, 3),
        other => panic!("runtime status {other:?}"),
    }
    // The output went to the task's log file.
    let history = f
        .manager
        .history(&LogHistoryRequest {
            task_ids: vec!["task1".into()],
            tail: -1,
        })
        .await;
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].data, b"hello");
    assert_eq!(history.messages[0].service_name, "web");

    // Removed from the set: its log file goes, the state forgets it.
    f.manager
        .apply(incremental(
            "1",
            "2",
            vec![change(
                process_task("task1", 1, &[], TaskState::Remove),
                Action::Remove,
            )],
        ))
        .unwrap();
    let log = f.dir.path().join("logs/task1.log");
    tokio::time::timeout(DEADLINE, async {
        while log.exists() || f.manager.handle("task1").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the removed task's leftovers go");
}

#[tokio::test]
async fn a_task_exiting_zero_completes() {
    let mut f = fixture();
    f.manager
        .apply(complete(
            "1",
            vec![process_task("ok1", 1, &["true"], TaskState::Running)],
        ))
        .unwrap();
    let seen = until(&mut f.reports, "ok1", TaskState::Complete).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, TaskState::Complete as i32);
    assert_eq!(last.message, "finished");
    assert!(last.err.is_empty());
}

#[tokio::test]
async fn desired_shutdown_stops_the_task_and_reports_shutdown() {
    let mut f = fixture();
    let t = process_task("sd1", 2, &["sleep", "60"], TaskState::Running);
    f.manager.apply(complete("1", vec![t.clone()])).unwrap();
    until(&mut f.reports, "sd1", TaskState::Running).await;
    let pid = pid_of(&f.manager, "sd1");
    assert!(running(pid));
    let mut stop = with_state(t, TaskState::Running);
    stop.desired_state = TaskState::Shutdown as i32;
    f.manager
        .apply(incremental("1", "2", vec![change(stop, Action::Update)]))
        .unwrap();
    let seen = until(&mut f.reports, "sd1", TaskState::Shutdown).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, TaskState::Shutdown as i32);
    assert_eq!(last.message, "shutdown");
    wait_gone(pid).await;
}

#[tokio::test]
async fn an_incremental_message_out_of_sequence_is_a_gap() {
    let f = fixture();
    let gap = f
        .manager
        .apply(incremental("0", "1", Vec::new()))
        .expect_err("no COMPLETE yet");
    assert_eq!(gap.expected, None);
    f.manager.apply(complete("5", Vec::new())).unwrap();
    f.manager.apply(incremental("5", "6", Vec::new())).unwrap();
    let gap = f
        .manager
        .apply(incremental("5", "7", Vec::new()))
        .expect_err("applies to 5, last was 6");
    assert_eq!(gap.expected.as_deref(), Some("6"));
    assert_eq!(f.manager.last_seq().as_deref(), Some("6"));
}

#[tokio::test]
async fn a_container_task_without_docker_is_rejected() {
    let mut f = fixture();
    let mut t = process_task("c1", 1, &[], TaskState::Running);
    t.spec = Some(TaskSpec {
        runtime: Some(Runtime::Container(ContainerSpec {
            image: "busybox".into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    f.manager.apply(complete("1", vec![t])).unwrap();
    let seen = until(&mut f.reports, "c1", TaskState::Rejected).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, TaskState::Rejected as i32);
    assert_eq!(last.err, crate::executor::NO_DOCKER);
}

#[tokio::test]
async fn a_restarted_worker_adopts_its_running_process_and_stops_unassigned_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (m1, mut r1) = manager_in(dir.path(), false);
    let keep = process_task("keep1", 1, &["sleep", "60"], TaskState::Running);
    let drop_ = process_task("drop1", 2, &["sleep", "60"], TaskState::Running);
    m1.apply(complete("1", vec![keep.clone(), drop_.clone()]))
        .unwrap();
    until(&mut r1, "keep1", TaskState::Running).await;
    until(&mut r1, "drop1", TaskState::Running).await;
    let keep_pid = pid_of(&m1, "keep1");
    let drop_pid = pid_of(&m1, "drop1");
    // The worker goes away; its tasks do not.
    m1.detach();
    drop(m1);
    assert!(running(keep_pid) && running(drop_pid));

    let (m2, mut r2) = manager_in(dir.path(), false);
    // The new COMPLETE set has only keep1 (RUNNING in the store).
    m2.apply(complete("1", vec![with_state(keep, TaskState::Running)]))
        .unwrap();
    wait_gone(drop_pid).await;
    assert!(running(keep_pid), "the assigned task keeps running");
    assert_eq!(pid_of(&m2, "keep1"), keep_pid, "adopted, not restarted");
    tokio::time::timeout(DEADLINE, async {
        while m2.handle("drop1").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the unassigned task is forgotten");
    // Nothing was reported for keep1 so far (no restart: no ACCEPTED again).
    while let Ok(r) = r2.try_recv() {
        if let Report::Status(id, s) = r {
            assert_ne!(id, "keep1", "unexpected report {s:?}");
        }
    }
    // Killing the adopted process is seen and reported FAILED.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keep_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen = until(&mut r2, "keep1", TaskState::Failed).await;
    assert_eq!(seen.last().unwrap().state, TaskState::Failed as i32);
}

#[tokio::test]
async fn a_killed_task_process_is_reported_failed_with_the_signal() {
    let mut f = fixture();
    f.manager
        .apply(complete(
            "1",
            vec![process_task("k1", 1, &["sleep", "60"], TaskState::Running)],
        ))
        .unwrap();
    until(&mut f.reports, "k1", TaskState::Running).await;
    let pid = pid_of(&f.manager, "k1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen = until(&mut f.reports, "k1", TaskState::Failed).await;
    assert_eq!(seen.last().unwrap().err, "task: non-zero exit (137)");
}

#[tokio::test]
async fn a_task_dropped_from_a_complete_set_is_stopped() {
    let mut f = fixture();
    f.manager
        .apply(complete(
            "1",
            vec![process_task(
                "gone1",
                1,
                &["sleep", "60"],
                TaskState::Running,
            )],
        ))
        .unwrap();
    until(&mut f.reports, "gone1", TaskState::Running).await;
    let pid = pid_of(&f.manager, "gone1");
    f.manager.apply(complete("9", Vec::new())).unwrap();
    wait_gone(pid).await;
    assert!(f.manager.task_ids().is_empty());
}

#[tokio::test]
async fn an_adopted_task_not_yet_reported_running_is_reported_running() {
    let dir = tempfile::tempdir().unwrap();
    let (m1, mut r1) = manager_in(dir.path(), false);
    let t = process_task("late1", 1, &["sleep", "60"], TaskState::Running);
    m1.apply(complete("1", vec![t.clone()])).unwrap();
    until(&mut r1, "late1", TaskState::Running).await;
    let pid = pid_of(&m1, "late1");
    m1.detach();
    // The store still says STARTING: the RUNNING report was lost with the worker.
    let (m2, mut r2) = manager_in(dir.path(), false);
    m2.apply(complete("1", vec![with_state(t, TaskState::Starting)]))
        .unwrap();
    let seen = until(&mut r2, "late1", TaskState::Running).await;
    assert_eq!(seen.len(), 1, "only RUNNING: {seen:?}");
    assert_eq!(pid_of(&m2, "late1"), pid);
    m2.apply(complete("2", Vec::new())).unwrap();
    wait_gone(pid).await;
}

/// Live processes whose environment says they are task `task_id`.
fn processes_of(task_id: &str) -> Vec<i32> {
    let marker = format!("SHOAL_TASK_ID={task_id}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| running(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}

/// No report for `id` is waiting right now.
fn nothing_reported(rx: &mut mpsc::Receiver<Report>, id: &str) {
    while let Ok(r) = rx.try_recv() {
        if let Report::Status(tid, s) = r {
            assert_ne!(tid, id, "unexpected report {s:?}");
        }
    }
}

#[tokio::test]
async fn a_task_desired_ready_is_prepared_and_started_only_once_desired_running() {
    let mut f = fixture();
    let t = process_task("rdy1", 1, &["sleep", "60"], TaskState::Ready);
    f.manager.apply(complete("1", vec![t.clone()])).unwrap();
    let seen = until(&mut f.reports, "rdy1", TaskState::Ready).await;
    let states: Vec<i32> = seen.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [TaskState::Accepted, TaskState::Preparing, TaskState::Ready].map(|s| s as i32)
    );
    // Prepared, not started: no pid, no process; and it stays so.
    assert_eq!(pid_of(&f.manager, "rdy1"), 0);
    // Another assignment message (the set changes elsewhere) does not start it.
    f.manager
        .apply(incremental(
            "1",
            "2",
            vec![change(
                process_task("other1", 2, &["sleep", "60"], TaskState::Ready),
                Action::Update,
            )],
        ))
        .unwrap();
    until(&mut f.reports, "other1", TaskState::Ready).await;
    assert!(processes_of("rdy1").is_empty());
    assert_eq!(pid_of(&f.manager, "rdy1"), 0);
    nothing_reported(&mut f.reports, "rdy1");

    // Desired RUNNING (the task it replaces has stopped): now it starts.
    let mut go = with_state(t, TaskState::Ready);
    go.desired_state = TaskState::Running as i32;
    f.manager
        .apply(incremental("2", "3", vec![change(go, Action::Update)]))
        .unwrap();
    let seen = until(&mut f.reports, "rdy1", TaskState::Running).await;
    let states: Vec<i32> = seen.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [TaskState::Starting, TaskState::Running].map(|s| s as i32)
    );
    let pid = pid_of(&f.manager, "rdy1");
    assert_eq!(processes_of("rdy1"), vec![pid]);
    f.manager.apply(complete("4", Vec::new())).unwrap();
    wait_gone(pid).await;
}

#[tokio::test]
async fn a_ready_task_desired_shutdown_is_never_started() {
    let mut f = fixture();
    let t = process_task("rdy2", 1, &["sleep", "60"], TaskState::Ready);
    f.manager.apply(complete("1", vec![t.clone()])).unwrap();
    until(&mut f.reports, "rdy2", TaskState::Ready).await;
    let mut stop = with_state(t, TaskState::Ready);
    stop.desired_state = TaskState::Shutdown as i32;
    f.manager
        .apply(incremental("1", "2", vec![change(stop, Action::Update)]))
        .unwrap();
    let seen = until(&mut f.reports, "rdy2", TaskState::Shutdown).await;
    assert_eq!(
        seen.iter().map(|s| s.state).collect::<Vec<_>>(),
        vec![TaskState::Shutdown as i32]
    );
    assert!(processes_of("rdy2").is_empty());
    // Removed from the set, what was prepared goes.
    f.manager.apply(complete("3", Vec::new())).unwrap();
    tokio::time::timeout(DEADLINE, async {
        while f.manager.handle("rdy2").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the prepared task is forgotten");
}

#[tokio::test]
async fn a_restarted_worker_keeps_a_ready_task_prepared_and_starts_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (m1, mut r1) = manager_in(dir.path(), false);
    let t = process_task("rdy3", 1, &["sleep", "60"], TaskState::Ready);
    m1.apply(complete("1", vec![t.clone()])).unwrap();
    until(&mut r1, "rdy3", TaskState::Ready).await;
    m1.detach();
    drop(m1);

    // The store says READY; the new worker prepares it again without a word (nothing
    // below READY is reported again) and does not start it.
    let (m2, mut r2) = manager_in(dir.path(), false);
    let ready = with_state(t, TaskState::Ready);
    m2.apply(complete("1", vec![ready.clone()])).unwrap();
    tokio::time::timeout(DEADLINE, async {
        while m2.handle("rdy3").is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("prepared again");
    // A probe task run to completion shows the manager has worked through the set.
    m2.apply(incremental(
        "1",
        "2",
        vec![change(
            process_task("probe3", 2, &["true"], TaskState::Running),
            Action::Update,
        )],
    ))
    .unwrap();
    until(&mut r2, "probe3", TaskState::Complete).await;
    nothing_reported(&mut r2, "rdy3");
    assert_eq!(pid_of(&m2, "rdy3"), 0);
    assert!(processes_of("rdy3").is_empty());

    let mut go = ready;
    go.desired_state = TaskState::Running as i32;
    m2.apply(incremental("2", "3", vec![change(go, Action::Update)]))
        .unwrap();
    let seen = until(&mut r2, "rdy3", TaskState::Running).await;
    assert_eq!(
        seen.iter().map(|s| s.state).collect::<Vec<_>>(),
        [TaskState::Starting, TaskState::Running].map(|s| s as i32)
    );
    let pid = pid_of(&m2, "rdy3");
    assert_eq!(processes_of("rdy3"), vec![pid], "started exactly once");
    m2.apply(complete("4", Vec::new())).unwrap();
    wait_gone(pid).await;
}

#[tokio::test]
async fn a_process_started_but_not_recorded_is_adopted_not_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let (m1, mut r1) = manager_in(dir.path(), false);
    let t = process_task("rdy4", 1, &["sleep", "60"], TaskState::Ready);
    m1.apply(complete("1", vec![t.clone()])).unwrap();
    until(&mut r1, "rdy4", TaskState::Ready).await;
    m1.detach();
    drop(m1);
    // As if the worker died right after starting it: the state file has the prepared
    // handle (no pid), the process runs, with the task's environment, in its own group.
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .env("SHOAL_TASK_ID", "rdy4")
        .env("SHOAL_NODE_ID", "node1")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();

    let (m2, mut r2) = manager_in(dir.path(), false);
    let found = ProcessExecutor::new(dir.path(), "node1", "127.0.0.1").managed();
    m2.add_adoptable(found);
    let mut go = with_state(t, TaskState::Ready);
    go.desired_state = TaskState::Running as i32;
    m2.apply(complete("1", vec![go])).unwrap();
    let seen = until(&mut r2, "rdy4", TaskState::Running).await;
    assert_eq!(
        seen.iter().map(|s| s.state).collect::<Vec<_>>(),
        vec![TaskState::Running as i32],
        "adopted: no STARTING, no start"
    );
    assert_eq!(pid_of(&m2, "rdy4"), pid);
    assert_eq!(processes_of("rdy4"), vec![pid]);
    m2.apply(complete("2", Vec::new())).unwrap();
    // Not our child here either: std's Child reaps it.
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
}
