//! Networking end to end (issue 6; seeds 000, 001 and 004), through the `shoal` CLI with
//! real processes: a manager, a scheduler, a dispatcher, shoal-dns and three workers on
//! their own loopback addresses. Real TCP connections to the routing mesh and to VIPs,
//! real DNS queries to shoal-dns, tasks that are real processes (busybox httpd) on the
//! loopback addresses the allocator gave them — and containers where Docker answers.
//!
//! Process tasks of every cluster take their addresses from 127.128.0.0/9, so two
//! clusters of this file would hand out the same addresses: the tests take turns.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use shoal_proto::v1::{Service, Task};
use shoal_scenarios::dns_query::dns_a;
use shoal_scenarios::{Stack, StackOptions, task_id, task_processes};
use shoal_testkit::{Infra, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Long enough for a loaded 2-core CI machine; the conditions end the waits.
const DEADLINE: Duration = Duration::from_secs(60);

/// One cluster at a time (see the module docs).
static TURN: Mutex<()> = Mutex::const_new(());

/// An HTTP server task that answers with its own task id, on its own address.
const HTTPD: &str = "d=$(mktemp -d) && echo \"$SHOAL_TASK_ID\" > \"$d/index.html\" && \
                     exec busybox httpd -f -p \"$SHOAL_TASK_ADDR:80\" -h \"$d\"";

/// The service `name` as the Control API returns it.
async fn service(stack: &Stack, name: &str) -> anyhow::Result<Service> {
    service_on(stack, &stack.swarm.manager.addr, name).await
}

/// The service `name` as the manager at `host` returns it.
async fn service_on(stack: &Stack, host: &str, name: &str) -> anyhow::Result<Service> {
    use shoal_proto::v1::control_client::ControlClient;
    use shoal_proto::v1::{ListFilters, ListServicesRequest};
    let mut control = ControlClient::new(
        shoal_scenarios::tls_channel(host, &stack.swarm.admin, shoal_scenarios::MANAGER_NAME)
            .await?,
    );
    let services = control
        .list_services(ListServicesRequest {
            filters: Some(ListFilters {
                names: vec![name.to_string()],
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .services;
    services
        .into_iter()
        .find(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .is_some_and(|a| a.name == name)
        })
        .ok_or_else(|| anyhow::anyhow!("no service {name}"))
}

/// `a.b.c.d/len` → `a.b.c.d`.
fn ip_of(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

/// The service's VIP on the network `network_id`.
fn vip_of(s: &Service, network_id: &str) -> Option<Ipv4Addr> {
    s.endpoint
        .as_ref()?
        .virtual_ips
        .iter()
        .find(|v| v.network_id == network_id)
        .and_then(|v| ip_of(&v.addr))
}

/// A task's address on the network `network_id`.
fn addr_on(t: &Task, network_id: &str) -> Option<Ipv4Addr> {
    t.networks
        .iter()
        .find(|a| {
            a.network
                .as_ref()
                .and_then(|n| n.meta.as_ref())
                .map(|m| m.id.as_str())
                == Some(network_id)
        })
        .and_then(|a| a.addresses.first())
        .and_then(|a| ip_of(a))
}

/// The id of the network `name` (`network inspect -f`).
async fn network_id(stack: &Stack, name: &str) -> anyhow::Result<String> {
    Ok(stack
        .cli_ok(&["network", "inspect", "-f", "{{.Id}}", name])
        .await?
        .trim()
        .to_string())
}

/// `GET /` over HTTP/1.0 to `addr`: the body, trimmed.
async fn http_get(addr: SocketAddr) -> anyhow::Result<String> {
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(b"GET / HTTP/1.0\r\nHost: shoal\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no HTTP response from {addr}: {text:?}"))?;
        anyhow::ensure!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        Ok(body.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await?
}

/// Waits until `addr` answers HTTP.
async fn wait_http(addr: SocketAddr) -> anyhow::Result<String> {
    wait_for(&format!("HTTP answers on {addr}"), DEADLINE, || async {
        http_get(addr).await.ok()
    })
    .await
}

/// The stack's shoal-dns DNS address.
fn dns(stack: &Stack) -> anyhow::Result<SocketAddr> {
    stack
        .dns_addr()
        .ok_or_else(|| anyhow::anyhow!("the stack runs no shoal-dns"))
}

/// Takes this file's turn and starts a stack: (turn, infra, stack), dropped in reverse.
async fn start(
    opts: StackOptions,
) -> anyhow::Result<(tokio::sync::MutexGuard<'static, ()>, Infra, Stack)> {
    let turn = TURN.lock().await;
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, opts).await?;
    Ok((turn, infra, stack))
}

/// `network create -d overlay <name>`: its id.
async fn create_network(stack: &Stack, name: &str) -> anyhow::Result<String> {
    stack
        .cli_ok(&["network", "create", "-d", "overlay", name])
        .await?;
    network_id(stack, name).await
}

/// `service create --process --name <name> <flags…> sh -c HTTPD`: an HTTP server task.
async fn create_httpd(stack: &Stack, name: &str, flags: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["service", "create", "--process", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["sh", "-c", HTTPD]);
    stack.cli_ok(&args).await
}

fn options(subnet: u8) -> StackOptions {
    StackOptions {
        workers: 3,
        dns: true,
        worker_subnet: subnet,
        ..Default::default()
    }
}

/// Seed 001: `network create -d overlay mynet`, `service create --network mynet -p
/// 8080:80 --replicas 2`: every node answers on :8080, the node without a task too,
/// round robin over both tasks; the VIP answers; DNS; a killed task leaves at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed001_routing_mesh_vip_and_dns() -> anyhow::Result<()> {
    let (_turn, _infra, stack) = start(options(21)).await?;
    let dns = dns(&stack)?;
    let host = IpAddr::V4(Ipv4Addr::LOCALHOST);

    let out = stack
        .cli_ok(&["network", "create", "-d", "overlay", "mynet"])
        .await?;
    assert_eq!(out.trim().len(), 25, "network create prints the id: {out}");
    let mynet = network_id(&stack, "mynet").await?;

    let out = create_httpd(
        &stack,
        "web",
        &["--network", "mynet", "-p", "8080:80", "--replicas", "2"],
    )
    .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    let tasks = stack.wait_running("web", 2).await?;
    let ids: BTreeSet<String> = tasks.iter().map(task_id).collect();

    // `service ls` shows the published port as docker does; inspect has the VIPs.
    let ls = stack.cli_ok(&["service", "ls"]).await?;
    assert!(ls.contains("*:8080->80/tcp"), "{ls}");
    let svc = service(&stack, "web").await?;
    let vip = vip_of(&svc, &mynet).ok_or_else(|| anyhow::anyhow!("no VIP on mynet: {svc:?}"))?;
    let inspect = stack.cli_ok(&["service", "inspect", "web"]).await?;
    assert!(inspect.contains(&vip.to_string()), "{inspect}");
    assert!(inspect.contains("\"PublishedPort\": 8080"), "{inspect}");

    // Every node answers on :8080, including the one that runs no task.
    let busy: BTreeSet<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
    assert!(
        stack
            .workers
            .iter()
            .any(|(_, id)| !busy.contains(id.as_str())),
        "3 nodes, 2 tasks: one node runs none"
    );
    for i in 0..3 {
        let body = wait_http(SocketAddr::new(stack.worker_ip(i), 8080)).await?;
        assert!(
            ids.contains(&body),
            "node {i} answered {body:?}, not a task of web"
        );
    }
    // Round robin: 20 requests to the node without a task reach both tasks.
    let idle = stack
        .workers
        .iter()
        .position(|(_, id)| !busy.contains(id.as_str()))
        .unwrap_or(0);
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(http_get(SocketAddr::new(stack.worker_ip(idle), 8080)).await?);
    }
    assert_eq!(seen, ids, "20 requests reach both tasks");

    // The VIP load-balances too (the worker's VIP proxy on every node).
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        seen.insert(wait_http(SocketAddr::new(IpAddr::V4(vip), 80)).await?);
    }
    assert_eq!(seen, ids, "the VIP reaches both tasks");

    // DNS: `web` → its VIP, `tasks.web` → both task addresses, unknown → NXDOMAIN.
    let (code, addrs) = dns_a(dns, host, "web").await?;
    assert_eq!(
        (code, addrs),
        (ResponseCode::NoError, BTreeSet::from([vip]))
    );
    let task_addrs: BTreeSet<Ipv4Addr> = tasks.iter().filter_map(|t| addr_on(t, &mynet)).collect();
    assert_eq!(task_addrs.len(), 2, "one address per task on mynet");
    let (code, addrs) = dns_a(dns, host, "tasks.web").await?;
    assert_eq!((code, addrs), (ResponseCode::NoError, task_addrs.clone()));
    let (code, _) = dns_a(dns, host, "nosuchservice").await?;
    assert_eq!(code, ResponseCode::NXDomain);
    // A task name resolves to that task's address.
    let t0 = &tasks[0];
    let t0_name = format!("web.{}.{}", t0.slot, task_id(t0));
    let (_, addrs) = dns_a(dns, host, &t0_name).await?;
    assert_eq!(
        addrs.into_iter().collect::<Vec<_>>(),
        addr_on(t0, &mynet).into_iter().collect::<Vec<_>>()
    );

    // Scale to 4: `tasks.web` has 4 addresses.
    stack.cli_ok(&["service", "scale", "web=4"]).await?;
    let tasks = stack.wait_running("web", 4).await?;
    let four: BTreeSet<Ipv4Addr> = tasks.iter().filter_map(|t| addr_on(t, &mynet)).collect();
    assert_eq!(four.len(), 4, "4 distinct task addresses");
    wait_for("tasks.web to hold 4 addresses", DEADLINE, || async {
        let (_, addrs) = dns_a(dns, host, "tasks.web").await.ok()?;
        (addrs == four).then_some(())
    })
    .await?;

    // A dnsrr service answers with its task addresses.
    create_httpd(
        &stack,
        "rr",
        &[
            "--network",
            "mynet",
            "--endpoint-mode",
            "dnsrr",
            "--replicas",
            "2",
        ],
    )
    .await?;
    let rr = stack.wait_running("rr", 2).await?;
    let rr_addrs: BTreeSet<Ipv4Addr> = rr.iter().filter_map(|t| addr_on(t, &mynet)).collect();
    let rr_svc = service(&stack, "rr").await?;
    assert!(vip_of(&rr_svc, &mynet).is_none(), "dnsrr: no VIP");
    wait_for("rr to resolve to its tasks", DEADLINE, || async {
        let (_, addrs) = dns_a(dns, host, "rr").await.ok()?;
        (addrs == rr_addrs).then_some(())
    })
    .await?;

    // A task on another network does not see `web`.
    let othernet = create_network(&stack, "othernet").await?;
    create_httpd(&stack, "lonely", &["--network", "othernet"]).await?;
    let lonely = stack.wait_running("lonely", 1).await?;
    let lonely_addr = addr_on(&lonely[0], &othernet)
        .ok_or_else(|| anyhow::anyhow!("lonely has no address on othernet"))?;
    let (code, _) = dns_a(dns, IpAddr::V4(lonely_addr), "web").await?;
    assert_eq!(code, ResponseCode::NXDomain, "web is not on othernet");
    let (code, addrs) = dns_a(dns, IpAddr::V4(lonely_addr), "tasks.lonely").await?;
    assert_eq!(
        (code, addrs),
        (ResponseCode::NoError, BTreeSet::from([lonely_addr]))
    );
    // … while a task on mynet does.
    let first = *four
        .iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no address"))?;
    let (code, addrs) = dns_a(dns, IpAddr::V4(first), "web").await?;
    assert_eq!(
        (code, addrs),
        (ResponseCode::NoError, BTreeSet::from([vip]))
    );

    // Network in use, published port taken: refused, nothing changes.
    let out = stack.cli(&["network", "rm", "mynet"]).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("is in use"), "{}", out.stderr);
    let out = stack
        .cli(&[
            "service",
            "create",
            "--process",
            "--name",
            "web2",
            "-p",
            "8080:80",
            "sh",
            "-c",
            HTTPD,
        ])
        .await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "port '8080' is already in use by service 'web' ({}) as an ingress port",
            svc.meta.as_ref().map(|m| m.id.as_str()).unwrap_or_default()
        )),
        "{}",
        out.stderr
    );
    let ls = stack.cli_ok(&["service", "ls"]).await?;
    assert!(!ls.contains("web2"), "{ls}");

    // Kill one task's process: its address leaves `tasks.web`, and every request
    // still succeeds (none goes to the dead task).
    let victim = tasks[0].clone();
    let victim_addr = addr_on(&victim, &mynet).ok_or_else(|| anyhow::anyhow!("no addr"))?;
    let pid = task_processes()
        .into_iter()
        .find(|(_, env)| env.contains(&format!("SHOAL_TASK_ID={}", task_id(&victim))))
        .map(|(pid, _)| pid)
        .ok_or_else(|| anyhow::anyhow!("no process for {}", task_id(&victim)))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_for("the killed task to leave tasks.web", DEADLINE, || async {
        let (_, addrs) = dns_a(dns, host, "tasks.web").await.ok()?;
        (!addrs.contains(&victim_addr) && !addrs.is_empty()).then_some(())
    })
    .await?;
    for i in 0..20 {
        let body = http_get(SocketAddr::new(stack.worker_ip(i % 3), 8080)).await?;
        assert_ne!(body, task_id(&victim), "a request reached the killed task");
    }
    Ok(())
}

/// Seed 004: `service update --publish-add 80:80` on a live service opens the port on
/// every node without replacing its tasks; `--publish-rm` closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_publish_add_on_a_live_service() -> anyhow::Result<()> {
    let (_turn, _infra, stack) = start(options(22)).await?;
    create_network(&stack, "front").await?;
    create_httpd(&stack, "myweb", &["--network", "front", "--replicas", "3"]).await?;
    let before: BTreeSet<String> = stack
        .wait_running("myweb", 3)
        .await?
        .iter()
        .map(task_id)
        .collect();

    let out = stack
        .cli_ok(&["service", "update", "--publish-add", "8081:80", "myweb"])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    for i in 0..3 {
        let body = wait_http(SocketAddr::new(stack.worker_ip(i), 8081)).await?;
        assert!(before.contains(&body), "node {i} answered {body:?}");
    }
    let after: BTreeSet<String> = stack.running("myweb").await?.iter().map(task_id).collect();
    assert_eq!(before, after, "no task was replaced");
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(http_get(SocketAddr::new(stack.worker_ip(0), 8081)).await?);
    }
    assert_eq!(seen, before, "round robin over the 3 tasks");

    stack
        .cli_ok(&["service", "update", "--publish-rm", "80", "myweb"])
        .await?;
    wait_for("port 8081 to close on every node", DEADLINE, || async {
        for i in 0..3 {
            if tokio::net::TcpStream::connect(SocketAddr::new(stack.worker_ip(i), 8081))
                .await
                .is_ok()
            {
                return None;
            }
        }
        Some(())
    })
    .await?;

    // Host mode: only the node that runs the task listens.
    create_httpd(
        &stack,
        "hostmode",
        &[
            "--network",
            "front",
            "--publish",
            "mode=host,published=9001,target=80",
        ],
    )
    .await?;
    let task = stack.wait_running("hostmode", 1).await?.remove(0);
    let at = stack
        .workers
        .iter()
        .position(|(_, id)| *id == task.node_id)
        .ok_or_else(|| anyhow::anyhow!("hostmode runs on no worker of the stack"))?;
    let body = wait_http(SocketAddr::new(stack.worker_ip(at), 9001)).await?;
    assert_eq!(body, task_id(&task));
    for i in (0..3).filter(|i| *i != at) {
        let refused =
            tokio::net::TcpStream::connect(SocketAddr::new(stack.worker_ip(i), 9001)).await;
        assert!(
            refused.is_err(),
            "node {i} runs no hostmode task but listens on 9001"
        );
    }
    Ok(())
}

/// Seed 000 (wordpress → mysql): a client task resolves another service by name
/// through shoal-dns and talks to it through its VIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed000_a_client_task_reaches_a_service_by_name() -> anyhow::Result<()> {
    let (_turn, _infra, stack) = start(options(23)).await?;
    create_network(&stack, "backend").await?;
    // The "database": answers with its task id on port 80 of its VIP. The VIP proxy
    // forwards the ports a service declares, so it declares 80 (`-p 80`: a node port
    // from the dynamic range is published with it).
    create_httpd(
        &stack,
        "db",
        &["--network", "backend", "-p", "80", "--replicas", "2"],
    )
    .await?;
    let db: BTreeSet<String> = stack
        .wait_running("db", 2)
        .await?
        .iter()
        .map(task_id)
        .collect();
    // The client: resolve `db` with the DNS server the worker gave it, fetch from the
    // address, print what came back.
    let client = "d=${SHOAL_DNS%:*}; p=${SHOAL_DNS##*:}; while true; do \
                  ip=$(busybox nslookup -port=$p db $d | busybox awk '/^Address: /{print $2}' | busybox tail -n1); \
                  echo \"resolved=$ip\"; echo \"got=$(busybox wget -q -O - http://$ip/)\"; \
                  busybox sleep 0.5; done";
    stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "wordpress",
            "--network",
            "backend",
            "sh",
            "-c",
            client,
        ])
        .await?;
    let backend = network_id(&stack, "backend").await?;
    let vip = vip_of(&service(&stack, "db").await?, &backend)
        .ok_or_else(|| anyhow::anyhow!("db has no VIP on backend"))?;
    let logs = wait_for("the client to reach db by name", DEADLINE, || async {
        let logs = stack.cli_ok(&["service", "logs", "wordpress"]).await.ok()?;
        db.iter()
            .any(|id| logs.contains(&format!("got={id}")))
            .then_some(logs)
    })
    .await?;
    assert!(
        logs.contains(&format!("resolved={vip}")),
        "the client resolved db to its VIP: {logs}"
    );
    Ok(())
}

/// Removes the Docker networks the workers made for these shoal networks, with the
/// containers still on them (this test's tasks: the stack is dropped after this).
struct DockerNetworks(Vec<String>);

impl Drop for DockerNetworks {
    fn drop(&mut self) {
        let docker = |args: &[&str]| -> String {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default()
        };
        for id in &self.0 {
            let label = format!("label=com.shoal.network.id={id}");
            for net in docker(&["network", "ls", "-q", "--filter", &label]).split_whitespace() {
                let on = docker(&[
                    "network",
                    "inspect",
                    "-f",
                    "{{range $k, $v := .Containers}}{{$k}} {{end}}",
                    net,
                ]);
                for container in on.split_whitespace() {
                    docker(&["rm", "-f", container]);
                }
                docker(&["network", "rm", net]);
            }
        }
    }
}

/// Seed 000 with containers, where a Docker engine answers: a client container reaches
/// `db` by name (Docker's resolver → the worker's relay on the network's gateway →
/// shoal-dns) through its VIP, and each node's routing mesh reaches the containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed000_containers_reach_a_service_by_name() -> anyhow::Result<()> {
    if !shoal_testkit::docker::docker_available() {
        eprintln!("skipped: no Docker engine answers");
        return Ok(());
    }
    let image = shoal_testkit::docker::busybox_image()?;
    // A pool of its own, so its Docker networks overlap no one else's.
    let pool = format!("10.{}.0.0/16", 200 + std::process::id() % 50);
    let (_turn, _infra, stack) = start(StackOptions {
        default_addr_pool: vec![pool],
        ..options(24)
    })
    .await?;
    let backend = create_network(&stack, "backend").await?;
    let ingress = network_id(&stack, "ingress").await?;
    let _cleanup = DockerNetworks(vec![backend.clone(), ingress]);

    stack
        .cli_ok(&[
            "service",
            "create",
            "--name",
            "db",
            "--network",
            "backend",
            "-p",
            "8090:80",
            "--replicas",
            "2",
            &image,
            "sh",
            "-c",
            "hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ])
        .await?;
    let db = stack.wait_running("db", 2).await?;
    // Each container has the address the allocator gave it on backend.
    for t in &db {
        let addr = addr_on(t, &backend).ok_or_else(|| anyhow::anyhow!("no address"))?;
        let name = format!("db.{}.{}", t.slot, task_id(t));
        let out = std::process::Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &name,
            ])
            .output()?;
        let ips = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            ips.split_whitespace().any(|ip| ip == addr.to_string()),
            "{name}: {ips}"
        );
    }
    // The routing mesh reaches the containers from every node.
    let mut hosts = BTreeSet::new();
    for i in 0..3 {
        hosts.insert(wait_http(SocketAddr::new(stack.worker_ip(i), 8090)).await?);
    }
    for _ in 0..20 {
        hosts.insert(http_get(SocketAddr::new(stack.worker_ip(0), 8090)).await?);
    }
    assert_eq!(
        hosts.len(),
        2,
        "the mesh reaches both containers: {hosts:?}"
    );

    // The "mysql": publishes nothing, its image EXPOSEs 80 — the VIP forwards that
    // port as IPVS would.
    let exposing = shoal_testkit::docker::busybox_image_exposing(80)?;
    stack
        .cli_ok(&[
            "service",
            "create",
            "--name",
            "mysql",
            "--network",
            "backend",
            "--replicas",
            "2",
            &exposing,
            "sh",
            "-c",
            "hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ])
        .await?;
    let mysql = stack.wait_running("mysql", 2).await?;
    let mut mysql_hosts = BTreeSet::new();
    for t in &mysql {
        let name = format!("mysql.{}.{}", t.slot, task_id(t));
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.Config.Hostname}}", &name])
            .output()?;
        mysql_hosts.insert(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }

    stack
        .cli_ok(&[
            "service",
            "create",
            "--name",
            "wordpress",
            "--network",
            "backend",
            &image,
            "sh",
            "-c",
            "while true; do echo \"got=$(wget -q -O - http://db/)\"; \
             echo \"mysql=$(wget -q -O - http://mysql/)\"; sleep 0.5; done",
        ])
        .await?;
    let logs = wait_for(
        "the client container to reach db and mysql by name",
        DEADLINE,
        || async {
            let logs = stack.cli_ok(&["service", "logs", "wordpress"]).await.ok()?;
            let db = hosts.iter().any(|h| logs.contains(&format!("got={h}")));
            let mysql = mysql_hosts
                .iter()
                .any(|h| logs.contains(&format!("mysql={h}")));
            (db && mysql).then_some(logs)
        },
    )
    .await?;
    assert!(!logs.is_empty());
    Ok(())
}

/// Allocations survive a leader change: the new leader rebuilds its allocator from the
/// store, keeps every VIP and published port, and hands out no address twice while it
/// scales one service and creates another; the data plane keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_survive_a_leader_change() -> anyhow::Result<()> {
    let (_turn, _infra, mut stack) = start(StackOptions {
        replicas: 2,
        ..options(25)
    })
    .await?;
    let dns = dns(&stack)?;
    let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let second = stack
        .replicas
        .iter()
        .find(|s| s.name == "shoal-manager")
        .map(|s| s.addr.clone())
        .ok_or_else(|| anyhow::anyhow!("no second manager"))?;
    let mynet = create_network(&stack, "mynet").await?;
    create_httpd(
        &stack,
        "web",
        &["--network", "mynet", "-p", "80", "--replicas", "3"],
    )
    .await?;
    stack.wait_running("web", 3).await?;
    let before = service(&stack, "web").await?;
    let endpoint = before.endpoint.clone();
    let published = endpoint
        .as_ref()
        .and_then(|e| e.ports.first())
        .map(|p| p.published_port)
        .unwrap_or(0);
    assert!(
        (30000..=32767).contains(&published),
        "auto-assigned: {published}"
    );

    // The leader goes; the second manager takes over.
    stack.swarm.manager.process.signal_term()?;
    stack
        .swarm
        .manager
        .process
        .wait_exit(Duration::from_secs(10))
        .await?;
    let out = stack
        .cli_on(&second, &["service", "scale", "web=6"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let out = stack
        .cli_on(
            &second,
            &[
                "service",
                "create",
                "--process",
                "--name",
                "api",
                "--network",
                "mynet",
                "--replicas",
                "3",
                "-p",
                "80",
                "sh",
                "-c",
                HTTPD,
            ],
        )
        .await?;
    assert_eq!(out.code, 0, "{out:?}");

    let web = stack.wait_running_on(&second, "web", 6).await?;
    let api = stack.wait_running_on(&second, "api", 3).await?;
    let after = service_on(&stack, &second, "web").await?;
    assert_eq!(after.endpoint, endpoint, "web's VIPs and port kept");
    let api_svc = service_on(&stack, &second, "api").await?;
    let api_port = api_svc
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.first())
        .map(|p| p.published_port)
        .unwrap_or(0);
    assert_ne!(api_port, published, "no published port handed out twice");

    // Every address on mynet is held once: 2 VIPs, 9 tasks.
    let mut addrs: Vec<Ipv4Addr> = web
        .iter()
        .chain(&api)
        .filter_map(|t| addr_on(t, &mynet))
        .collect();
    addrs.extend(vip_of(&after, &mynet));
    addrs.extend(vip_of(&api_svc, &mynet));
    let unique: BTreeSet<Ipv4Addr> = addrs.iter().copied().collect();
    assert_eq!(addrs.len(), 11, "{addrs:?}");
    assert_eq!(unique.len(), 11, "an address handed out twice: {addrs:?}");

    // The data plane follows: 6 addresses in DNS, the mesh reaches the new tasks.
    let six: BTreeSet<Ipv4Addr> = web.iter().filter_map(|t| addr_on(t, &mynet)).collect();
    wait_for("tasks.web to hold 6 addresses", DEADLINE, || async {
        let (_, got) = dns_a(dns, host, "tasks.web").await.ok()?;
        (got == six).then_some(())
    })
    .await?;
    let ids: BTreeSet<String> = web.iter().map(task_id).collect();
    let seen = std::sync::Mutex::new(BTreeSet::new());
    wait_for("the mesh to reach all 6 tasks of web", DEADLINE, || async {
        for i in 0..3 {
            let addr = SocketAddr::new(stack.worker_ip(i), published as u16);
            if let Ok(body) = http_get(addr).await {
                seen.lock().ok()?.insert(body);
            }
        }
        (*seen.lock().ok()? == ids).then_some(())
    })
    .await?;
    Ok(())
}
