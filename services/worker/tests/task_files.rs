//! Secrets and configs inside tasks, with the task manager fed assignments directly: a
//! process task reads its files under `$SHOAL_TASK_FILES`, a container at
//! `/run/secrets/<target>` and its configs' targets (read-only, with their mode and
//! owner); payload and service templates are expanded per task; the files go with the
//! task and the secret never reaches the state dir or the worker's log. The container
//! tests (and the one of the new container options) are skipped with a notice where no
//! Docker engine answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shoal_proto::v1::assignment::Item;
use shoal_proto::v1::assignment_change::Action;
use shoal_proto::v1::assignments_message::Type;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{
    Annotations, Assignment, AssignmentChange, AssignmentsMessage, Config, ConfigReference,
    ConfigSpec, ContainerSpec, DnsConfig, Driver, Meta, Mount, ProcessSpec, ResourceRequirements,
    Resources, Secret, SecretReference, SecretSpec, Task, TaskSpec, TaskState, TaskStatus, Ulimit,
    mount,
};
use shoal_testkit::docker::{busybox_image, docker_available, remove_containers_labelled};
use shoal_testkit::wait_for;
use shoal_worker::executor::docker::DockerExecutor;
use shoal_worker::executor::process::ProcessExecutor;
use shoal_worker::executor::{Executor, Executors, Handle};
use shoal_worker::tasks::files::NodeInfo;
use shoal_worker::tasks::reporter::Report;
use shoal_worker::tasks::{TaskManager, TaskOptions};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(30);
const SECRET: &str = "s3cret-payload-7f3a9c";
const NODE: &str = "node-files-1";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{nanos:x}")
}

/// Everything the worker logs, at every level, from every thread.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn meta(id: &str) -> Option<Meta> {
    Some(Meta {
        id: id.into(),
        ..Default::default()
    })
}

fn secret(id: &str, name: &str, data: &str) -> Secret {
    Secret {
        meta: meta(id),
        spec: Some(SecretSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            data: data.as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config(id: &str, name: &str, data: &str, golang: bool) -> Config {
    Config {
        meta: meta(id),
        spec: Some(ConfigSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            data: data.as_bytes().to_vec(),
            templating: golang.then(|| Driver {
                name: "golang".into(),
                ..Default::default()
            }),
        }),
    }
}

fn secret_ref(id: &str, target: &str, uid: &str, mode: u32) -> SecretReference {
    SecretReference {
        secret_id: id.into(),
        secret_name: id.into(),
        target: target.into(),
        uid: uid.into(),
        gid: uid.into(),
        mode: Some(mode),
    }
}

fn config_ref(id: &str, target: &str) -> ConfigReference {
    ConfigReference {
        config_id: id.into(),
        config_name: id.into(),
        target: target.into(),
        ..Default::default()
    }
}

fn task(id: &str, runtime: Runtime) -> Task {
    Task {
        meta: meta(id),
        spec: Some(TaskSpec {
            runtime: Some(runtime),
            ..Default::default()
        }),
        service_id: "svcfiles00000000000000001".into(),
        slot: 1,
        node_id: NODE.into(),
        service_annotations: Some(Annotations {
            name: "app".into(),
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

fn change(item: Item, action: Action) -> AssignmentChange {
    AssignmentChange {
        assignment: Some(Assignment { item: Some(item) }),
        action: action as i32,
    }
}

fn message(
    typ: Type,
    applies_to: &str,
    seq: &str,
    changes: Vec<AssignmentChange>,
) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: typ as i32,
        applies_to: applies_to.into(),
        results_in: seq.into(),
        changes,
    }
}

/// A session's first assignment set: each item added.
fn first_set(items: Vec<Item>) -> AssignmentsMessage {
    let changes = items
        .into_iter()
        .map(|item| change(item, Action::Update))
        .collect();
    message(Type::Complete, "", "1", changes)
}

struct Setup {
    manager: TaskManager,
    reports: mpsc::Receiver<Report>,
    state: tempfile::TempDir,
    root: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A task manager of node NODE (host name `host`) keeping its state in `state` and
/// its tasks' files under `files_root`; reports go to `tx`.
fn files_manager(
    state: &Path,
    docker: Option<Arc<DockerExecutor>>,
    files_root: PathBuf,
    host: &str,
    tx: mpsc::Sender<Report>,
) -> TaskManager {
    let executors = Executors {
        docker: docker.map(|d| d as Arc<dyn Executor>),
        process: ProcessExecutor::new(state, NODE, "127.0.0.1"),
    };
    let options = TaskOptions {
        files_root: Some(files_root),
        node: NodeInfo::local(NODE, host),
    };
    TaskManager::with_options(state, executors, tx, None, options)
}

fn setup(docker: Option<Arc<DockerExecutor>>) -> Setup {
    let state = tempfile::tempdir().unwrap();
    let root = PathBuf::from(format!("/dev/shm/{}", unique("shoal-test-files-")));
    let (tx, rx) = mpsc::channel(1024);
    let manager = files_manager(state.path(), docker, root.clone(), "files-host", tx);
    Setup {
        manager,
        reports: rx,
        state,
        root,
    }
}

/// Reads reports until `id` reaches `state` (or later); the last status.
async fn until_state(rx: &mut mpsc::Receiver<Report>, id: &str, state: TaskState) -> TaskStatus {
    let mut seen = Vec::new();
    let wait = async {
        while let Some(r) = rx.recv().await {
            if let Report::Status(tid, s) = r
                && tid == id
            {
                let done = s.state >= state as i32;
                seen.push(s.clone());
                if done {
                    return s;
                }
            }
        }
        panic!("reports ended");
    };
    match tokio::time::timeout(DEADLINE, wait).await {
        Ok(s) => s,
        Err(_) => panic!("task {id}: never {state:?}; saw {seen:?}"),
    }
}

async fn wait_file(path: &Path) -> String {
    wait_for(&format!("{}", path.display()), DEADLINE, || async {
        std::fs::read_to_string(path)
            .ok()
            .filter(|s| s.ends_with('\n'))
    })
    .await
    .unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_secret_not_in(dir: &Path, logs: &Mutex<Vec<u8>>) {
    for f in files_under(dir) {
        let data = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&data).contains(SECRET),
            "the secret is in {}",
            f.display()
        );
    }
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        !logs.is_empty(),
        "the worker logged nothing at all: the capture is broken"
    );
    assert!(!logs.contains(SECRET), "the secret is in the worker's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_task_reads_its_files_and_templates_and_they_go_with_it() {
    let logs = captured_logs();
    let mut s = setup(None);
    let work = tempfile::tempdir().unwrap();
    let id = unique("pf");
    let script = "cat $SHOAL_TASK_FILES/run/secrets/pw > secret.out; \
                  test \"$SHOAL_SECRETS_DIR\" = \"$SHOAL_TASK_FILES/run/secrets\" && echo same > dirs.out; \
                  cat $SHOAL_TASK_FILES/etc/app.conf > conf.out; \
                  cat $SHOAL_TASK_FILES/plain.conf > plain.out; \
                  echo $NODE_ID > node.out; exec sleep 300";
    let t = task(
        &id,
        Runtime::Process(ProcessSpec {
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["X=hello".into(), "NODE_ID={{.Node.ID}}".into()],
            dir: work.path().display().to_string(),
            secrets: vec![secret_ref("sec1", "pw", "", 0o400)],
            configs: vec![
                config_ref("cfg1", "/etc/app.conf"),
                config_ref("cfg2", "plain.conf"),
            ],
            stop_grace_period: prost_types::Duration::try_from(Duration::from_secs(1)).ok(),
            ..Default::default()
        }),
    );
    let templated = r#"x={{ env "X" }} pw={{ secret "pw" }} node={{ .Node.ID }} svc={{ .Service.Name }} missing=[{{ env "NOPE" }}]"#;
    s.manager
        .apply(first_set(vec![
            Item::Secret(secret("sec1", "pw", SECRET)),
            Item::Config(config("cfg1", "app", templated, true)),
            Item::Config(config("cfg2", "plain", "{{ not a template }}", false)),
            Item::Task(t),
        ]))
        .unwrap();
    until_state(&mut s.reports, &id, TaskState::Running).await;
    assert_eq!(
        wait_file(&work.path().join("node.out")).await,
        format!("{NODE}\n")
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("secret.out")).unwrap(),
        SECRET
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("dirs.out")).unwrap(),
        "same\n",
        "SHOAL_SECRETS_DIR is $SHOAL_TASK_FILES/run/secrets"
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("conf.out")).unwrap(),
        format!("x=hello pw={SECRET} node={NODE} svc=app missing=[]")
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("plain.out")).unwrap(),
        "{{ not a template }}",
        "a payload without a template driver is taken verbatim"
    );
    let dir = s.root.join(&id);
    let file = dir.join("run/secrets/pw");
    let file_meta = std::fs::metadata(&file).unwrap();
    assert_eq!(file_meta.permissions().mode() & 0o7777, 0o400);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(dir.join("etc/app.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o444,
        "mode 0444 when the reference sets none"
    );
    assert_secret_not_in(s.state.path(), &logs);

    // A task whose secret has not arrived fails, clearly, instead of starting without it.
    let lost = unique("pl");
    let t2 = task(
        &lost,
        Runtime::Process(ProcessSpec {
            command: vec!["sleep".into(), "300".into()],
            secrets: vec![secret_ref("nope", "pw", "", 0o400)],
            ..Default::default()
        }),
    );
    s.manager
        .apply(message(
            Type::Incremental,
            "1",
            "2",
            vec![change(Item::Task(t2), Action::Update)],
        ))
        .unwrap();
    let failed = until_state(&mut s.reports, &lost, TaskState::Failed).await;
    assert_eq!(failed.state, TaskState::Failed as i32);
    assert_eq!(failed.err, "secret nope not found");

    // The task and its dependencies go: its files go with it, the worker forgets them.
    let removed = |item: Item| change(item, Action::Remove);
    s.manager
        .apply(message(
            Type::Incremental,
            "2",
            "3",
            vec![
                removed(Item::Task(Task {
                    meta: meta(&id),
                    ..Default::default()
                })),
                removed(Item::Task(Task {
                    meta: meta(&lost),
                    ..Default::default()
                })),
                removed(Item::Secret(Secret {
                    meta: meta("sec1"),
                    ..Default::default()
                })),
                removed(Item::Config(Config {
                    meta: meta("cfg1"),
                    ..Default::default()
                })),
                removed(Item::Config(Config {
                    meta: meta("cfg2"),
                    ..Default::default()
                })),
            ],
        ))
        .unwrap();
    wait_for("the task's files to go", DEADLINE, || async {
        (!dir.exists()).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(s.manager.dependency_ids(), (vec![], vec![]));
    assert_secret_not_in(s.state.path(), &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_task_dirs_are_removed_at_start_and_a_disk_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let root = PathBuf::from(format!("/dev/shm/{}", unique("shoal-test-stale-")));
    std::fs::create_dir_all(root.join("gone-task/run/secrets")).unwrap();
    std::fs::write(root.join("gone-task/run/secrets/x"), b"left").unwrap();
    let (tx, _rx) = mpsc::channel(64);
    let _m = files_manager(state.path(), None, root.clone(), "h", tx);
    assert!(
        !root.join("gone-task").exists(),
        "a task the state file does not know"
    );
    let _ = std::fs::remove_dir_all(&root);

    // A files root on a disk: the task fails rather than write its secret there.
    // Under target/: a disk wherever the tests run (/tmp may be a tmpfs).
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let m = files_manager(state.path(), None, disk.path().join("files"), "h", tx);
    let id = unique("pd");
    let t = task(
        &id,
        Runtime::Process(ProcessSpec {
            command: vec!["sleep".into(), "300".into()],
            secrets: vec![secret_ref("sec1", "pw", "", 0o400)],
            ..Default::default()
        }),
    );
    m.apply(first_set(vec![
        Item::Secret(secret("sec1", "pw", SECRET)),
        Item::Task(t),
    ]))
    .unwrap();
    let failed = until_state(&mut rx, &id, TaskState::Failed).await;
    assert!(failed.err.contains("is not a tmpfs"), "{failed:?}");
    assert!(
        files_under(disk.path()).is_empty(),
        "nothing was written to the disk"
    );
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_containers_labelled(&format!("shoal.task.id={}", self.0));
    }
}

fn container_id(m: &TaskManager, id: &str) -> String {
    match m.handle(id) {
        Some(Handle::Container { id }) => id,
        other => panic!("no container for {id}: {other:?}"),
    }
}

/// `docker exec <container> sh -c <script>`: (exit code, stdout).
fn exec(container: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn inspect(container: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reads_its_secret_and_configs_read_only_with_mode_and_owner() {
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; container secrets test skipped");
        return;
    }
    let logs = captured_logs();
    let image = busybox_image().unwrap();
    let docker = DockerExecutor::connect(NODE)
        .await
        .expect("the engine answers the CLI but not bollard");
    let mut s = setup(Some(docker));
    let id = unique("cf");
    let _cleanup = Cleanup(id.clone());
    let t = task(
        &id,
        Runtime::Container(ContainerSpec {
            image,
            command: vec!["sleep".into(), "300".into()],
            env: vec!["NODE_ID={{.Node.ID}}".into(), "GREETING=hi".into()],
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            secrets: vec![secret_ref("sec1", "db_pw", "1000", 0o400)],
            configs: vec![
                config_ref("cfg1", "app.conf"),
                config_ref("cfg2", "/etc/abs/other.conf"),
            ],
            stop_grace_period: prost_types::Duration::try_from(Duration::from_secs(1)).ok(),
            ..Default::default()
        }),
    );
    s.manager
        .apply(first_set(vec![
            Item::Secret(secret("sec1", "db_pw", SECRET)),
            Item::Config(config(
                "cfg1",
                "app",
                r#"{{ env "GREETING" }} from {{ .Task.Name }}: {{ secret "db_pw" }}"#,
                true,
            )),
            Item::Config(config("cfg2", "other", "plain\n", false)),
            Item::Task(t),
        ]))
        .unwrap();
    until_state(&mut s.reports, &id, TaskState::Running).await;
    let c = container_id(&s.manager, &id);
    assert_eq!(exec(&c, "cat /run/secrets/db_pw"), (0, SECRET.to_string()));
    assert_eq!(
        exec(&c, "stat -c '%a %u:%g' /run/secrets/db_pw"),
        (0, "400 1000:1000".to_string())
    );
    let (code, _) = exec(&c, "echo x > /run/secrets/db_pw");
    assert_ne!(code, 0, "the secret's mount is read-only");
    assert_eq!(
        exec(
            &c,
            "grep ' /run/secrets/db_pw ' /proc/mounts | grep -c ' ro,'"
        ),
        (0, "1".to_string())
    );
    assert_eq!(
        exec(&c, "cat /app.conf"),
        (0, format!("hi from app.1.{id}: {SECRET}"))
    );
    assert_eq!(
        exec(&c, "cat /etc/abs/other.conf"),
        (0, "plain".to_string())
    );
    assert_eq!(exec(&c, "echo $NODE_ID"), (0, NODE.to_string()));
    assert_eq!(exec(&c, "hostname"), (0, "app-1".to_string()));
    assert_secret_not_in(s.state.path(), &logs);

    let dir = s.root.join(&id);
    assert!(dir.exists());
    s.manager
        .apply(message(Type::Complete, "", "2", vec![]))
        .unwrap();
    wait_for("the task's files to go", DEADLINE, || async {
        (!dir.exists()).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        s.manager.dependency_ids(),
        (vec![], vec![]),
        "a COMPLETE without them drops them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_era_container_options_reach_the_engine() {
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; container options test skipped");
        return;
    }
    let image = busybox_image().unwrap();
    let docker = DockerExecutor::connect(NODE)
        .await
        .expect("the engine answers the CLI but not bollard");
    let mut s = setup(Some(docker));
    let id = unique("co");
    let _cleanup = Cleanup(id.clone());
    let mut t = task(
        &id,
        Runtime::Container(ContainerSpec {
            image,
            command: vec!["sleep".into(), "300".into()],
            hosts: vec!["10.1.2.3 db db.internal".into()],
            dns_config: Some(DnsConfig {
                nameservers: vec!["10.9.9.9".into()],
                search: vec!["example.internal".into()],
                options: vec!["ndots:3".into()],
            }),
            read_only: true,
            init: Some(true),
            sysctls: [("net.ipv4.tcp_keepalive_time".to_string(), "612".to_string())].into(),
            capability_drop: vec!["NET_RAW".into()],
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1234,
                hard: 2345,
            }],
            oom_score_adj: 200,
            groups: vec!["1234".into()],
            mounts: vec![Mount {
                r#type: mount::Type::Tmpfs as i32,
                target: "/scratch".into(),
                tmpfs_options: Some(mount::TmpfsOptions {
                    size_bytes: 8 * 1024 * 1024,
                    mode: 0o1770,
                }),
                ..Default::default()
            }],
            stop_grace_period: prost_types::Duration::try_from(Duration::from_secs(1)).ok(),
            ..Default::default()
        }),
    );
    t.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
        limits: Some(Resources {
            pids: 64,
            ..Default::default()
        }),
        ..Default::default()
    });
    s.manager.apply(first_set(vec![Item::Task(t)])).unwrap();
    until_state(&mut s.reports, &id, TaskState::Running).await;
    let c = container_id(&s.manager, &id);
    let (code, _) = exec(&c, "touch /written");
    assert_ne!(code, 0, "the root filesystem is read-only");
    assert_eq!(exec(&c, "grep -c '^10.1.2.3.*db' /etc/hosts").0, 0);
    assert_eq!(
        exec(&c, "grep -c 'db.internal' /etc/hosts"),
        (0, "1".to_string())
    );
    assert_eq!(
        exec(
            &c,
            "cat /etc/resolv.conf | grep -c '10.9.9.9\\|example.internal\\|ndots:3'"
        ),
        (0, "3".to_string())
    );
    assert_eq!(
        exec(&c, "cat /proc/sys/net/ipv4/tcp_keepalive_time"),
        (0, "612".to_string())
    );
    // The engine's config, and the hard limit the container's processes have: the soft
    // limit an exec'd shell reports is not reliable (runc's exec path, a Go program,
    // sometimes hands it the hard limit as the soft one).
    assert_eq!(
        inspect(
            &c,
            "{{range .HostConfig.Ulimits}}{{.Name}}={{.Soft}}:{{.Hard}}{{end}}"
        ),
        "nofile=1234:2345"
    );
    assert_eq!(exec(&c, "ulimit -Hn"), (0, "2345".to_string()));
    assert_eq!(exec(&c, "cat /proc/1/comm"), (0, "docker-init".to_string()));
    assert_eq!(
        exec(&c, "cat /proc/self/oom_score_adj"),
        (0, "200".to_string())
    );
    assert_eq!(
        exec(&c, "id -G | tr ' ' '\\n' | grep -cx 1234"),
        (0, "1".to_string())
    );
    let (code, mounts) = exec(&c, "grep ' /scratch ' /proc/mounts");
    assert_eq!(code, 0);
    assert!(
        mounts.contains("size=8192k") && mounts.contains("mode=1770"),
        "{mounts}"
    );
    assert_eq!(inspect(&c, "{{.HostConfig.CapDrop}}"), "[NET_RAW]");
    assert_eq!(inspect(&c, "{{.HostConfig.PidsLimit}}"), "64");
    assert_eq!(inspect(&c, "{{.HostConfig.Init}}"), "true");
    assert_eq!(inspect(&c, "{{.HostConfig.ReadonlyRootfs}}"), "true");
}
