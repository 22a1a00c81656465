//! The shoal-worker binary running tasks handed out by a real dispatcher (in-process,
//! behind mTLS) over real etcd and NATS: tasks are written ASSIGNED into the store, as
//! the scheduler leaves them; the worker runs them, its status reaches the store, its
//! output answers history requests over NATS, and a restarted worker adopts its
//! running task instead of starting it again. A task desired READY waits, prepared,
//! for RUNNING; a healthcheck keeps a task STARTING in the store until it passes.
//! A sealed secret in the store reaches the task opened, as a file on a tmpfs, and
//! nowhere else on the worker's side (state dir, log).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use shoal_dispatcher::{Dispatcher, DispatcherOptions, DispatcherService};
use shoal_events::EventBus;
use shoal_grpc_host::{ClusterState, ShutdownToken};
use shoal_pki::{DEFAULT_CA_VALIDITY, NodeCredentials, NodeKey, Role, RootCa, San};
use shoal_proto::v1::dispatcher_server::DispatcherServer;
use shoal_proto::v1::node_spec::Membership;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::task_status::{Health, RuntimeStatus};
use shoal_proto::v1::{
    Annotations, Cluster, ClusterSpec, DispatcherConfig, HealthConfig, LogHistoryRequest, Meta,
    Node, NodeRole, NodeSpec, ProcessSpec, RootCa as RootCaObject, Task, TaskSpec, TaskState,
    TaskStatus,
};
use shoal_store::Store;
use shoal_testkit::{Infra, Process, binary, free_port, wait_for};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

const DEADLINE: Duration = Duration::from_secs(30);

fn issue(ca: &RootCa, node_id: &str, role: Role, cluster: &str, sans: &[San]) -> NodeCredentials {
    let key = NodeKey::generate();
    let cert_pem = ca
        .issue(
            &key.csr_pem().unwrap(),
            node_id,
            role,
            cluster,
            Duration::from_secs(3600),
            sans,
        )
        .unwrap();
    NodeCredentials {
        cert_pem,
        key_pem: key.key_pem(),
        ca_pem: ca.cert_pem().to_string(),
    }
}

struct World {
    infra: Infra,
    store: Store,
    bus: EventBus,
    dispatcher_addr: String,
    node_id: String,
    state_dir: std::path::PathBuf,
    config: std::path::PathBuf,
    /// Seals secrets as the manager does; the dispatcher opens them.
    sealer: std::sync::Arc<shoal_pki::SecretSealer>,
    secrets_dir: std::path::PathBuf,
    _stop: ShutdownToken,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.secrets_dir);
    }
}

async fn world() -> World {
    let infra = Infra::start().await.unwrap();
    let store = Store::connect(&[infra.etcd.endpoint()], "/shoal/v1")
        .await
        .unwrap();
    let bus = EventBus::connect(&infra.nats.url(), "worker-test")
        .await
        .unwrap();
    let ca = RootCa::generate(DEFAULT_CA_VALIDITY).unwrap();
    let cluster_id = shoal_store::new_id();
    store
        .create(Cluster {
            meta: Some(Meta {
                id: cluster_id.clone(),
                ..Default::default()
            }),
            spec: Some(ClusterSpec {
                annotations: Some(Annotations {
                    name: "default".into(),
                    ..Default::default()
                }),
                dispatcher: Some(DispatcherConfig {
                    heartbeat_period: Some(prost_types::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            }),
            root_ca: Some(RootCaObject {
                ca_cert: ca.cert_pem().as_bytes().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let node_id = shoal_store::new_id();
    store
        .create(Node {
            meta: Some(Meta {
                id: node_id.clone(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                desired_role: NodeRole::Worker as i32,
                membership: Membership::Accepted as i32,
                ..Default::default()
            }),
            role: NodeRole::Worker as i32,
            ..Default::default()
        })
        .await
        .unwrap();

    // The dispatcher, in this process, behind mTLS.
    let server_creds = issue(
        &ca,
        "dispatcher-under-test",
        Role::Manager,
        &cluster_id,
        &[
            San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            San::Dns("swarm-manager".into()),
        ],
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = ShutdownToken::new();
    let sealer =
        std::sync::Arc::new(shoal_pki::SecretSealer::new(&shoal_pki::Kek::generate()).unwrap());
    let dispatcher = Dispatcher::start(
        ClusterState {
            store: store.clone(),
            bus: bus.clone(),
        },
        DispatcherOptions {
            advertise_addr: addr.to_string(),
            secret_sealer: Some(sealer.clone()),
            ..Default::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let server = Server::builder()
        .tls_config(server_creds.server_tls().client_auth_optional(true))
        .unwrap()
        .add_service(DispatcherServer::new(DispatcherService::new(dispatcher)))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop.clone().cancelled_owned());
    tokio::spawn(server);

    // The worker's identity and config, as `shoal swarm join` leaves them.
    let state_dir = infra.dir.path().join("worker-state");
    std::fs::create_dir_all(&state_dir).unwrap();
    issue(&ca, &node_id, Role::Worker, &cluster_id, &[])
        .store(&state_dir)
        .unwrap();
    let config = infra.dir.path().join("worker.toml");
    let secrets_dir = std::path::PathBuf::from(format!("/dev/shm/shoal-test-{node_id}"));
    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\ndispatcher_addrs = [\"{addr}\"]\nnats_url = \"{}\"\nlog_filter = \"info,shoal_worker=debug\"\nsecrets_dir = \"{}\"\n",
            state_dir.display(),
            infra.nats.url(),
            secrets_dir.display()
        ),
    )
    .unwrap();
    World {
        infra,
        store,
        bus,
        dispatcher_addr: addr.to_string(),
        node_id,
        state_dir,
        config,
        sealer,
        secrets_dir,
        _stop: stop,
    }
}

fn spawn_worker(w: &World, log: &Path) -> Process {
    Process::spawn(
        &binary("shoal-worker").unwrap(),
        &["--config".into(), w.config.display().to_string()],
        &[],
        log,
    )
    .unwrap()
}

fn process_task(node_id: &str, argv: &[&str]) -> Task {
    Task {
        meta: Some(Meta {
            id: shoal_store::new_id(),
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            runtime: Some(Runtime::Process(ProcessSpec {
                command: argv.iter().map(|s| s.to_string()).collect(),
                stop_grace_period: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
        service_id: shoal_store::new_id(),
        slot: 1,
        node_id: node_id.into(),
        service_annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            message: "scheduler assigned task to node".into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

fn id(t: &Task) -> String {
    t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

fn state(t: &Task) -> i32 {
    t.status.as_ref().map(|s| s.state).unwrap_or(0)
}

async fn wait_state(store: &Store, task_id: &str, at_least: TaskState) -> Task {
    wait_for(
        &format!("task {task_id} to reach {at_least:?}"),
        DEADLINE,
        || async {
            let t: Task = store.get(task_id).await.ok()?;
            (state(&t) >= at_least as i32).then_some(t)
        },
    )
    .await
    .unwrap()
}

/// Live processes whose environment says they are task `task_id` (not its checks).
fn processes_of(task_id: &str) -> Vec<i32> {
    let marker = format!("SHOAL_TASK_ID={task_id}");
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        let check = env
            .split(|b| *b == 0)
            .any(|e| e.starts_with(b"SHOAL_HEALTHCHECK="));
        if !zombie && !check && env.split(|b| *b == 0).any(|e| e == marker.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_assigned_tasks_reports_them_and_readopts_them() {
    let w = world().await;
    let log = w.infra.dir.path().join("worker.log");
    let mut worker = spawn_worker(&w, &log);

    let long = process_task(
        &w.node_id,
        &["sh", "-c", "echo hello-from-task; exec sleep 300"],
    );
    // Its output is published live.
    let mut live = w
        .bus
        .subscribe_logs(Some(&long.service_id), None)
        .await
        .unwrap();
    let long = w.store.create(long).await.unwrap();
    let short = w
        .store
        .create(process_task(&w.node_id, &["sh", "-c", "exit 4"]))
        .await
        .unwrap();

    let running = wait_state(&w.store, &id(&long), TaskState::Running).await;
    assert_eq!(
        state(&running),
        TaskState::Running as i32,
        "{}",
        worker.log_tail(40)
    );
    let status = running.status.clone().unwrap();
    assert_eq!(status.message, "started");
    let Some(RuntimeStatus::Process(p)) = status.runtime_status else {
        panic!("no process status: {status:?}");
    };
    let pid = p.pid;
    assert_eq!(processes_of(&id(&long)), vec![pid]);

    let failed = wait_state(&w.store, &id(&short), TaskState::Failed).await;
    let st = failed.status.unwrap();
    assert_eq!(st.state, TaskState::Failed as i32);
    assert_eq!(st.err, "task: non-zero exit (4)");

    let line = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut live))
        .await
        .expect("a live log line")
        .expect("the log stream ends");
    assert_eq!(line.data, b"hello-from-task");
    assert_eq!(line.task_id, id(&long));
    assert_eq!(line.service_name, "web");

    // The output is on the node, and its worker answers history requests.
    let history = wait_for("the task's output in the history", DEADLINE, || async {
        let r = w
            .bus
            .request_log_history(
                &w.node_id,
                &LogHistoryRequest {
                    task_ids: vec![id(&long)],
                    tail: -1,
                },
                Duration::from_secs(2),
            )
            .await
            .ok()?;
        (!r.messages.is_empty()).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(history.messages[0].data, b"hello-from-task");
    assert_eq!(history.messages[0].node_id, w.node_id);

    // kill -9 the worker and start it again: the task is adopted, not started twice.
    worker.kill_now();
    let mut worker = spawn_worker(&w, &log);
    // A probe task shows the new worker has worked through its assignments.
    let probe = w
        .store
        .create(process_task(&w.node_id, &["true"]))
        .await
        .unwrap();
    wait_state(&w.store, &id(&probe), TaskState::Complete).await;
    assert_eq!(
        processes_of(&id(&long)),
        vec![pid],
        "{}",
        worker.log_tail(40)
    );
    let t: Task = w.store.get(&id(&long)).await.unwrap();
    assert_eq!(state(&t), TaskState::Running as i32);

    // Desired SHUTDOWN stops it.
    let mut stop = t;
    stop.desired_state = TaskState::Shutdown as i32;
    w.store.update(stop).await.unwrap();
    let done = wait_state(&w.store, &id(&long), TaskState::Shutdown).await;
    assert_eq!(state(&done), TaskState::Shutdown as i32);
    wait_for("the task's process to end", DEADLINE, || async {
        processes_of(&id(&long)).is_empty().then_some(())
    })
    .await
    .unwrap();
    let _ = &w.dispatcher_addr;
    let _ = &w.state_dir;
    worker.kill_now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_task_waits_for_running_and_its_healthcheck_gates_running_in_the_store() {
    let w = world().await;
    let log = w.infra.dir.path().join("worker.log");
    let mut worker = spawn_worker(&w, &log);
    let work = w.infra.dir.path().join("hc-work");
    std::fs::create_dir_all(&work).unwrap();

    // A stop-first update's replacement: desired READY, with a healthcheck.
    let mut t = process_task(&w.node_id, &["sleep", "300"]);
    if let Some(Runtime::Process(p)) = t.spec.as_mut().and_then(|s| s.runtime.as_mut()) {
        p.dir = work.display().to_string();
        p.healthcheck = Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "test -f ready".into()],
            interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            retries: 2,
            start_period: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
            ..Default::default()
        });
    }
    t.desired_state = TaskState::Ready as i32;
    let t = w.store.create(t).await.unwrap();
    let tid = id(&t);
    let ready = wait_state(&w.store, &tid, TaskState::Ready).await;
    assert_eq!(
        state(&ready),
        TaskState::Ready as i32,
        "{}",
        worker.log_tail(40)
    );
    // A probe task run to completion: the worker has had time to go further; it did not.
    let probe = w
        .store
        .create(process_task(&w.node_id, &["true"]))
        .await
        .unwrap();
    wait_state(&w.store, &id(&probe), TaskState::Complete).await;
    assert!(processes_of(&tid).is_empty(), "started while desired READY");
    let still: Task = w.store.get(&tid).await.unwrap();
    assert_eq!(state(&still), TaskState::Ready as i32);

    // The orchestrator moves it on: it starts, and stays STARTING until healthy.
    let mut go = still;
    go.desired_state = TaskState::Running as i32;
    w.store.update(go).await.unwrap();
    let starting = wait_state(&w.store, &tid, TaskState::Starting).await;
    let st = starting.status.clone().unwrap();
    assert_eq!(st.state, TaskState::Starting as i32, "{st:?}");
    let starting = wait_for("health STARTING in the store", DEADLINE, || async {
        let t: Task = w.store.get(&tid).await.ok()?;
        let s = t.status?;
        (s.health == Health::Starting as i32).then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(starting.state, TaskState::Starting as i32);
    assert!(starting.started_at.is_none());
    let pids = processes_of(&tid);
    assert_eq!(pids.len(), 1, "{pids:?}");

    std::fs::write(work.join("ready"), b"").unwrap();
    let running = wait_state(&w.store, &tid, TaskState::Running).await;
    let st = running.status.unwrap();
    assert_eq!(st.state, TaskState::Running as i32);
    assert_eq!(st.health, Health::Healthy as i32);
    assert!(st.started_at.is_some(), "the dispatcher marks when it ran");

    std::fs::remove_file(work.join("ready")).unwrap();
    let failed = wait_state(&w.store, &tid, TaskState::Failed).await;
    let st = failed.status.unwrap();
    assert_eq!(st.state, TaskState::Failed as i32);
    assert_eq!(st.err, "unhealthy container");
    assert_eq!(st.health, Health::Unhealthy as i32);
    wait_for("the unhealthy task's process to end", DEADLINE, || async {
        processes_of(&tid).is_empty().then_some(())
    })
    .await
    .unwrap();
    worker.kill_now();
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_secret_reaches_its_task_as_a_file_and_nowhere_else() {
    const PLAINTEXT: &str = "e2e-secret-4b1d2c";
    let w = world().await;
    let log = w.infra.dir.path().join("worker.log");
    let _worker = spawn_worker(&w, &log);
    let secret = w
        .store
        .create(shoal_proto::v1::Secret {
            meta: Some(Meta {
                id: shoal_store::new_id(),
                ..Default::default()
            }),
            spec: Some(shoal_proto::v1::SecretSpec {
                annotations: Some(Annotations {
                    name: "api_key".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sealed: w.sealer.seal("api_key", PLAINTEXT.as_bytes()).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    let work = w.infra.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut t = process_task(
        &w.node_id,
        &[
            "sh",
            "-c",
            "cat $SHOAL_SECRETS_DIR/key > secret.out; echo $NODE_ID > node.out; exec sleep 300",
        ],
    );
    if let Some(Runtime::Process(p)) = t.spec.as_mut().and_then(|s| s.runtime.as_mut()) {
        p.dir = work.display().to_string();
        p.env = vec!["NODE_ID={{.Node.ID}}".into()];
        p.secrets = vec![shoal_proto::v1::SecretReference {
            secret_id: secret.meta.as_ref().unwrap().id.clone(),
            secret_name: "api_key".into(),
            target: "key".into(),
            mode: Some(0o400),
            ..Default::default()
        }];
    }
    let t = w.store.create(t).await.unwrap();
    let running = wait_state(&w.store, &id(&t), TaskState::Running).await;
    assert_eq!(state(&running), TaskState::Running as i32, "{running:?}");
    let node = wait_for("the task's output", DEADLINE, || async {
        std::fs::read_to_string(work.join("node.out"))
            .ok()
            .filter(|s| s.ends_with('\n'))
    })
    .await
    .unwrap();
    assert_eq!(node.trim(), w.node_id, "{{.Node.ID}} is expanded per task");
    assert_eq!(
        std::fs::read_to_string(work.join("secret.out")).unwrap(),
        PLAINTEXT
    );
    let task_dir = w.secrets_dir.join(id(&t));
    assert!(task_dir.join("run/secrets/key").exists());
    for f in files_under(&w.state_dir).into_iter().chain([log.clone()]) {
        let data = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        assert!(
            !data.contains(PLAINTEXT),
            "the secret is in {}",
            f.display()
        );
    }

    // The task is deleted (as the orchestrator does): its files go with it.
    w.store.delete::<Task>(&id(&t), None).await.unwrap();
    wait_for("the task's files to go", DEADLINE, || async {
        (!task_dir.exists()).then_some(())
    })
    .await
    .unwrap();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("DEBUG"), "the worker logs at debug level");
    assert!(
        !logged.contains(PLAINTEXT),
        "the secret is in the worker's log"
    );
}
