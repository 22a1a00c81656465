//! Tasks on shoal networks, against the real thing: process tasks get their loopback
//! addresses (and shoal-dns's) in their environment and can all listen on port 80 on
//! their own; containers join the Docker network of each of their networks with their
//! allocated address and resolve through the first network's gateway, several workers
//! of one host create a network at the same time without tripping over each other, and
//! a running container joins a network its task gains. Docker tests are skipped with a
//! notice where no engine answers. Every test uses its own random subnets (10.200–250.x)
//! and loopback addresses, and removes the containers and networks it made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::v1::assignment::Item;
use shoal_proto::v1::assignment_change::Action;
use shoal_proto::v1::assignments_message::Type;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{
    Annotations, Assignment, AssignmentChange, AssignmentsMessage, ContainerSpec, IpamConfig,
    IpamOptions, Meta, Network, NetworkAttachment, NetworkSpec, ProcessSpec, Task, TaskSpec,
    TaskState, TaskStatus,
};
use shoal_testkit::docker::{busybox_image, docker_available, remove_containers_labelled};
use shoal_testkit::wait_for;
use shoal_worker::executor::docker::DockerExecutor;
use shoal_worker::executor::networks::{LABEL_NETWORK_ID, docker_network_name, ensure};
use shoal_worker::executor::process::ProcessExecutor;
use shoal_worker::executor::{Executor, Executors, Exit, Handle};
use shoal_worker::tasks::TaskManager;
use shoal_worker::tasks::reporter::Report;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(30);

fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn random_id() -> String {
    format!("{:016x}{:09x}", random(), random() & 0xf_ffff_ffff)
}

/// A shoal network as the manager stores it, with its own random /24.
struct Net {
    network: Network,
    /// `a.b.c` of its subnet.
    prefix: String,
}

impl Net {
    /// A network in 10.<200-250>.<random>.0/24 (container addresses).
    fn overlay(name: &str, internal: bool) -> Self {
        let r = random();
        let prefix = format!("10.{}.{}", 200 + r % 51, (r >> 8) % 256);
        Self::new(name, &prefix, internal)
    }

    /// A loopback network in 127.<128-191>.<random>.0/24 (process addresses).
    fn loopback(name: &str) -> Self {
        let r = random();
        let prefix = format!("127.{}.{}", 128 + r % 64, (r >> 8) % 256);
        Self::new(name, &prefix, false)
    }

    fn new(name: &str, prefix: &str, internal: bool) -> Self {
        let network = Network {
            meta: Some(Meta {
                id: random_id(),
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                internal,
                ..Default::default()
            }),
            ipam: Some(IpamOptions {
                configs: vec![IpamConfig {
                    subnet: format!("{prefix}.0/24"),
                    gateway: format!("{prefix}.1"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        Self {
            network,
            prefix: prefix.to_string(),
        }
    }

    fn id(&self) -> String {
        self.network.meta.as_ref().unwrap().id.clone()
    }

    fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    fn addr(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }

    fn docker_name(&self) -> String {
        docker_network_name(&self.network)
    }

    fn attachment(&self, host: u8) -> NetworkAttachment {
        NetworkAttachment {
            network: Some(self.network.clone()),
            addresses: vec![format!("{}/24", self.addr(host))],
            aliases: Vec::new(),
        }
    }
}

fn task(id: &str, runtime: Runtime, networks: Vec<NetworkAttachment>) -> Task {
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
        networks,
        ..Default::default()
    }
}

fn process(argv: &[&str], env: &[String]) -> Runtime {
    Runtime::Process(ProcessSpec {
        command: argv.iter().map(|s| s.to_string()).collect(),
        env: env.to_vec(),
        ..Default::default()
    })
}

fn container(image: &str, argv: &[&str]) -> Runtime {
    Runtime::Container(ContainerSpec {
        image: image.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        stop_grace_period: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:x}", random())
}

// ---------------------------------------------------------------- processes

#[tokio::test]
async fn a_process_task_gets_its_addresses_and_the_dns_address() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ProcessExecutor::with_dns(dir.path(), "node1", "127.0.0.1", "127.0.0.1:5354");
    let (front, ingress) = (Net::loopback("front"), Net::loopback("ingress"));
    let t = task(
        "netenv1",
        process(&["env"], &[]),
        vec![front.attachment(5), ingress.attachment(9)],
    );
    let mut h = exec.prepare(&t).await.unwrap();
    exec.start(&t, &mut h).await.unwrap();
    assert_eq!(exec.wait(&h).await, Exit::Code(0));
    let lines: Vec<String> = exec
        .logs(&h, -1)
        .await
        .unwrap()
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .collect();
    for want in [
        format!("SHOAL_TASK_ADDR={}", front.addr(5)),
        format!(
            "SHOAL_TASK_ADDRS=front={},ingress={}",
            front.addr(5),
            ingress.addr(9)
        ),
        "SHOAL_DNS=127.0.0.1:5354".to_string(),
    ] {
        assert!(lines.contains(&want), "{want} in {lines:?}");
    }
    exec.remove(&h).await.unwrap();

    // Without networks: the node's address, no ADDRS; without dns_addr: no SHOAL_DNS.
    let plain = ProcessExecutor::new(dir.path(), "node1", "127.0.0.1");
    let t = task("netenv2", process(&["env"], &[]), Vec::new());
    let mut h = plain.prepare(&t).await.unwrap();
    plain.start(&t, &mut h).await.unwrap();
    assert_eq!(plain.wait(&h).await, Exit::Code(0));
    let lines: Vec<String> = plain
        .logs(&h, -1)
        .await
        .unwrap()
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .collect();
    assert!(lines.contains(&"SHOAL_TASK_ADDR=127.0.0.1".to_string()));
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("SHOAL_TASK_ADDRS=") || l.starts_with("SHOAL_DNS=")),
        "{lines:?}"
    );
    plain.remove(&h).await.unwrap();
}

/// An HTTP/1.0 GET of `/` on `addr:80`; the body.
async fn get(addr: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect((addr, 80)).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    Some(body.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_process_tasks_listen_on_port_80_each_on_its_own_address() {
    let net = Net::loopback("web");
    if let Err(e) = std::net::TcpListener::bind((net.addr(10).as_str(), 80))
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        eprintln!("NOTICE: port 80 is privileged here; two-tasks-on-:80 test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exec = ProcessExecutor::new(dir.path(), "node1", "127.0.0.1");
    let mut running = Vec::new();
    for (slot, host) in [(1u8, 10u8), (2, 11)] {
        let www = dir.path().join(format!("www{slot}"));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), format!("task {slot}\n")).unwrap();
        let t = task(
            &format!("port80t{slot}"),
            process(
                &[
                    "sh",
                    "-c",
                    "exec busybox httpd -f -p \"$SHOAL_TASK_ADDR:80\" -h \"$WWW\"",
                ],
                &[format!("WWW={}", www.display())],
            ),
            vec![net.attachment(host)],
        );
        let mut h = exec.prepare(&t).await.unwrap();
        exec.start(&t, &mut h).await.unwrap();
        running.push((slot, host, h));
    }
    for (slot, host, h) in &running {
        let addr = net.addr(*host);
        let body = wait_for(&format!("task {slot} on {addr}:80"), DEADLINE, || async {
            get(&addr).await
        })
        .await;
        if body.is_err() {
            let log = exec.logs(h, -1).await.unwrap_or_default();
            panic!("task {slot} does not answer on {addr}:80: {log:?}");
        }
        assert_eq!(body.unwrap(), format!("task {slot}"));
    }
    for (_, _, h) in &running {
        exec.stop(h, Duration::from_secs(5)).await.unwrap();
        exec.remove(h).await.unwrap();
    }
}

// ---------------------------------------------------------------- docker

/// Removes the containers of its tasks, then its Docker networks.
#[derive(Default)]
struct Cleanup {
    tasks: Vec<String>,
    networks: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for t in &self.tasks {
            remove_containers_labelled(&format!("shoal.task.id={t}"));
        }
        for n in &self.networks {
            let _ = Command::new("docker")
                .args(["network", "rm", n])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn docker(node: &str, dns: &str) -> Option<Arc<DockerExecutor>> {
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; docker network test skipped");
        return None;
    }
    Some(
        DockerExecutor::connect_with_dns(node, dns)
            .await
            .expect("the engine answers the CLI but not bollard"),
    )
}

fn container_id(h: &Handle) -> String {
    let Handle::Container { id } = h else {
        panic!("container handle")
    };
    id.clone()
}

/// The address of a started container on each of its Docker networks.
async fn addresses(exec: &DockerExecutor, id: &str) -> HashMap<String, String> {
    let info = exec.client().inspect_container(id, None).await.unwrap();
    info.network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, e)| (name, e.ip_address.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_joins_its_networks_with_its_addresses_and_resolves_via_the_gateway() {
    let Some(exec) = docker(&unique("node"), "127.0.0.1:5354").await else {
        return;
    };
    let image = busybox_image().unwrap();
    let (front, back) = (Net::overlay("front", false), Net::overlay("back", true));
    let id = unique("nk");
    let _cleanup = Cleanup {
        tasks: vec![id.clone()],
        networks: vec![front.docker_name(), back.docker_name()],
    };
    let t = task(
        &id,
        container(&image, &["sleep", "300"]),
        vec![front.attachment(5), back.attachment(7)],
    );
    let mut h = exec.prepare(&t).await.expect("prepare");
    exec.start(&t, &mut h).await.expect("start");
    let cid = container_id(&h);

    let on = addresses(&exec, &cid).await;
    assert_eq!(
        on,
        HashMap::from([
            (front.docker_name(), front.addr(5)),
            (back.docker_name(), back.addr(7)),
        ])
    );
    let info = exec.client().inspect_container(&cid, None).await.unwrap();
    let host = info.host_config.unwrap();
    assert_eq!(host.dns, Some(vec![front.gateway()]));
    assert_eq!(host.network_mode, Some(front.docker_name()));

    for (net, internal) in [(&front, false), (&back, true)] {
        let n = exec
            .client()
            .inspect_network(&net.docker_name(), None)
            .await
            .unwrap();
        assert_eq!(n.driver.as_deref(), Some("bridge"));
        assert_eq!(n.internal, Some(internal));
        assert_eq!(
            n.labels.unwrap_or_default().get(LABEL_NETWORK_ID),
            Some(&net.id())
        );
        let ipam = n.ipam.and_then(|i| i.config).unwrap_or_default();
        assert_eq!(ipam.len(), 1, "{ipam:?}");
        assert_eq!(ipam[0].subnet, Some(net.subnet()));
        assert_eq!(ipam[0].gateway, Some(net.gateway()));
    }

    // Removing the container leaves the networks (another worker may use them).
    exec.stop(&h, Duration::from_secs(1)).await.unwrap();
    exec.remove(&h).await.unwrap();
    assert!(
        exec.client()
            .inspect_network(&front.docker_name(), None)
            .await
            .is_ok()
    );

    // A worker without dns_addr leaves the container's resolver alone.
    let plain = docker(&unique("node"), "").await.unwrap();
    let id2 = unique("nk");
    let _cleanup2 = Cleanup {
        tasks: vec![id2.clone()],
        networks: Vec::new(),
    };
    let t2 = task(
        &id2,
        container(&image, &["sleep", "300"]),
        vec![front.attachment(6)],
    );
    let mut h2 = plain.prepare(&t2).await.expect("prepare");
    plain.start(&t2, &mut h2).await.expect("start");
    let info = plain
        .client()
        .inspect_container(&container_id(&h2), None)
        .await
        .unwrap();
    assert!(info.host_config.unwrap().dns.is_none_or(|d| d.is_empty()));
    assert_eq!(
        addresses(&plain, &container_id(&h2)).await,
        HashMap::from([(front.docker_name(), front.addr(6))])
    );
    plain.remove(&h2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_of_one_host_create_the_same_network_at_once() {
    let Some(a) = docker(&unique("node"), "").await else {
        return;
    };
    let b = docker(&unique("node"), "").await.unwrap();
    let image = busybox_image().unwrap();
    for round in 0..3 {
        let net = Net::overlay(&format!("race{round}"), false);
        let (ta, tb) = (unique("nra"), unique("nrb"));
        let _cleanup = Cleanup {
            tasks: vec![ta.clone(), tb.clone()],
            networks: vec![net.docker_name()],
        };
        // Two workers preparing a task on the network, and a few more ensuring it.
        let task_a = task(
            &ta,
            container(&image, &["sleep", "300"]),
            vec![net.attachment(10)],
        );
        let task_b = task(
            &tb,
            container(&image, &["sleep", "300"]),
            vec![net.attachment(11)],
        );
        let (ra, rb, e1, e2, e3, e4) = tokio::join!(
            a.prepare(&task_a),
            b.prepare(&task_b),
            ensure(a.client(), &net.network),
            ensure(b.client(), &net.network),
            ensure(a.client(), &net.network),
            ensure(b.client(), &net.network),
        );
        for e in [e1, e2, e3, e4] {
            assert_eq!(e.expect("ensure"), net.docker_name());
        }
        let (mut ha, mut hb) = (ra.expect("worker a"), rb.expect("worker b"));
        a.start(&task_a, &mut ha).await.expect("start a");
        b.start(&task_b, &mut hb).await.expect("start b");
        // One Docker network for the shoal network.
        let listed = a
            .client()
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("{LABEL_NETWORK_ID}={}", net.id())],
                )])),
            }))
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            addresses(&a, &container_id(&ha)).await,
            HashMap::from([(net.docker_name(), net.addr(10))])
        );
        assert_eq!(
            addresses(&b, &container_id(&hb)).await,
            HashMap::from([(net.docker_name(), net.addr(11))])
        );
        a.remove(&ha).await.unwrap();
        b.remove(&hb).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_taken_by_another_docker_network_fails_the_task_naming_it() {
    let Some(exec) = docker(&unique("node"), "").await else {
        return;
    };
    let image = busybox_image().unwrap();
    let net = Net::overlay("clash", false);
    let squatter = unique("shoal-test-squatter-");
    let id = unique("nov");
    let _cleanup = Cleanup {
        tasks: vec![id.clone()],
        networks: vec![squatter.clone(), net.docker_name()],
    };
    let created = Command::new("docker")
        .args(["network", "create", "--subnet", &net.subnet(), &squatter])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success());
    let t = task(
        &id,
        container(&image, &["sleep", "300"]),
        vec![net.attachment(5)],
    );
    let err = exec.prepare(&t).await.expect_err("the subnet is taken");
    assert!(
        err.message.contains(&net.subnet()) && err.message.contains("overlaps"),
        "{err}"
    );
    assert!(!err.reject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_docker_network_of_a_removed_shoal_network_gives_way_to_its_subnet() {
    let Some(exec) = docker(&unique("node"), "").await else {
        return;
    };
    let image = busybox_image().unwrap();
    let old = Net::overlay("old", false);
    // The next network gets the same subnet, as the manager's IPAM may hand it out.
    let new = Net::new("new", &old.prefix, false);
    let id = unique("nst");
    let _cleanup = Cleanup {
        tasks: vec![id.clone()],
        networks: vec![old.docker_name(), new.docker_name()],
    };
    ensure(exec.client(), &old.network).await.unwrap();
    let t = task(
        &id,
        container(&image, &["sleep", "300"]),
        vec![new.attachment(5)],
    );
    let mut h = exec.prepare(&t).await.expect("prepare");
    exec.start(&t, &mut h).await.expect("start");
    assert_eq!(
        addresses(&exec, &container_id(&h)).await,
        HashMap::from([(new.docker_name(), new.addr(5))])
    );
    assert!(
        exec.client()
            .inspect_network(&old.docker_name(), None)
            .await
            .is_err(),
        "the stale network is gone"
    );

    // One with a container on it stays, and the task fails naming the subnet.
    let newer = Net::new("newer", &old.prefix, false);
    let id2 = unique("nst");
    let _cleanup2 = Cleanup {
        tasks: vec![id2.clone()],
        networks: vec![newer.docker_name()],
    };
    let t2 = task(
        &id2,
        container(&image, &["sleep", "300"]),
        vec![newer.attachment(6)],
    );
    let err = exec.prepare(&t2).await.expect_err("the subnet is in use");
    assert!(err.message.contains(&newer.subnet()), "{err}");
    assert_eq!(
        addresses(&exec, &container_id(&h)).await,
        HashMap::from([(new.docker_name(), new.addr(5))])
    );
    exec.remove(&h).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_container_joins_a_network_its_task_gains() {
    let Some(exec) = docker(&unique("node"), "").await else {
        return;
    };
    let image = busybox_image().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mine, ingress) = (Net::overlay("mine", false), Net::overlay("ingress", false));
    let id = unique("nlive");
    let _cleanup = Cleanup {
        tasks: vec![id.clone()],
        networks: vec![mine.docker_name(), ingress.docker_name()],
    };
    let (tx, mut reports) = tokio::sync::mpsc::channel(1024);
    let executors = Executors {
        docker: Some(exec.clone() as Arc<dyn Executor>),
        process: ProcessExecutor::new(dir.path(), "node1", "127.0.0.1"),
    };
    let manager = TaskManager::new(dir.path(), executors, tx, None);
    let t = task(
        &id,
        container(&image, &["sleep", "300"]),
        vec![mine.attachment(20)],
    );
    manager
        .apply(AssignmentsMessage {
            r#type: Type::Complete as i32,
            applies_to: String::new(),
            results_in: "1".into(),
            changes: vec![update(t.clone())],
        })
        .unwrap();
    tokio::time::timeout(DEADLINE, async {
        while let Some(r) = reports.recv().await {
            if let Report::Status(_, s) = r {
                assert!(s.err.is_empty(), "{s:?}");
                if s.state == TaskState::Running as i32 {
                    return;
                }
            }
        }
    })
    .await
    .expect("the task runs");
    let cid = container_id(&manager.handle(&id).expect("a recorded handle"));
    assert_eq!(
        addresses(&exec, &cid).await,
        HashMap::from([(mine.docker_name(), mine.addr(20))])
    );

    // The service joins ingress: the manager adds the attachment in place.
    let mut grown = t.clone();
    grown.networks.push(ingress.attachment(21));
    grown.status = Some(TaskStatus {
        state: TaskState::Running as i32,
        ..Default::default()
    });
    manager
        .apply(AssignmentsMessage {
            r#type: Type::Incremental as i32,
            applies_to: "1".into(),
            results_in: "2".into(),
            changes: vec![update(grown)],
        })
        .unwrap();
    let want = HashMap::from([
        (mine.docker_name(), mine.addr(20)),
        (ingress.docker_name(), ingress.addr(21)),
    ]);
    wait_for("the container on ingress too", DEADLINE, || async {
        (addresses(&exec, &cid).await == want).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        exec.inspect(&Handle::Container { id: cid.clone() }).await,
        shoal_worker::executor::Liveness::Running,
        "joined live, not restarted"
    );
    manager.detach();
}

fn update(task: Task) -> AssignmentChange {
    AssignmentChange {
        assignment: Some(Assignment {
            item: Some(Item::Task(task)),
        }),
        action: Action::Update as i32,
    }
}
