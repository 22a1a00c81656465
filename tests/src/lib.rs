//! The scenario harness: a real etcd and nats-server (from `shoal-testkit`) plus shoal's
//! own binaries as processes, configured the way `deploy/local/up.sh` configures them,
//! and clients that reach them the way the CLI does (the manager's local socket before
//! `swarm init`, TLS with the admin certificate after). The scenarios themselves are the
//! files in `tests/`, each one walk-through.

pub mod dns_query;
pub mod stack_objects;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use shoal_pki::{NodeCredentials, NodeKey};
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{
    InitClusterRequest, InitClusterResponse, ListFilters, ListServicesRequest, ListTasksRequest,
    Task, TaskState,
};
use shoal_testkit::{Infra, Process, binary, free_port, wait_for};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The five service binaries.
pub const SERVICES: [&str; 5] = [
    "shoal-manager",
    "shoal-scheduler",
    "shoal-dispatcher",
    "shoal-dns",
    "shoal-worker",
];

/// The domain control-plane certificates are checked against.
pub const MANAGER_NAME: &str = "swarm-manager";

/// A shoal service running as a process.
pub struct Service {
    pub name: String,
    /// Its gRPC address, `IP:PORT`.
    pub addr: String,
    pub config: PathBuf,
    /// Its state dir (managers and workers).
    pub state_dir: PathBuf,
    pub process: Process,
}

/// The KEK every control-plane process of `infra`'s swarm shares.
pub fn kek_file(infra: &Infra) -> PathBuf {
    infra.dir.path().join("swarm-ca.kek")
}

/// The TOML config that points `service` at `infra`, listening on a free port of `ip`,
/// plus `extra` lines. Returns (config text, listen address, state dir).
pub fn service_config(
    infra: &Infra,
    service: &str,
    ip: IpAddr,
    extra: &str,
) -> anyhow::Result<(String, String, PathBuf)> {
    let listen = format!("{ip}:{}", free_port(ip)?);
    let tag = listen.replace([':', '.'], "-");
    let state_dir = infra.dir.path().join(format!("{service}-{tag}"));
    let mut text = format!("listen = \"{listen}\"\nlog_filter = \"info\"\n");
    if service == "shoal-worker" {
        if !extra.contains("state_dir = ") {
            text.push_str(&format!("state_dir = \"{}\"\n", state_dir.display()));
        }
        text.push_str(&format!("hostname = \"{tag}\"\n"));
        if !extra.contains("dispatcher_addrs") {
            text.push_str("dispatcher_addrs = [\"127.0.0.1:4240\"]\n");
        }
    } else {
        text.push_str(&format!(
            "etcd_endpoints = [\"{}\"]\nnats_url = \"{}\"\nkek_file = \"{}\"\n",
            infra.etcd.endpoint(),
            infra.nats.url(),
            kek_file(infra).display()
        ));
    }
    let state_dir = match extra.lines().find_map(|l| l.strip_prefix("state_dir = ")) {
        Some(given) => PathBuf::from(given.trim().trim_matches('"')),
        None => {
            if service == "shoal-manager" {
                text.push_str(&format!("state_dir = \"{}\"\n", state_dir.display()));
            }
            state_dir
        }
    };
    if service == "shoal-dns" {
        text.push_str(&format!("dns_listen = \"{ip}:{}\"\n", free_port(ip)?));
    }
    text.push_str(extra);
    Ok((text, listen, state_dir))
}

/// Starts `service` against `infra` without waiting for it.
pub fn spawn_service(infra: &Infra, service: &str, extra: &str) -> anyhow::Result<Service> {
    spawn_service_on(infra, service, LOCALHOST, extra)
}

/// Starts `service` listening on `ip` (each node of a multi-node test has its own).
pub fn spawn_service_on(
    infra: &Infra,
    service: &str,
    ip: IpAddr,
    extra: &str,
) -> anyhow::Result<Service> {
    let (text, addr, state_dir) = service_config(infra, service, ip, extra)?;
    let tag = addr.replace([':', '.'], "-");
    let config = infra.dir.path().join(format!("{service}-{tag}.toml"));
    std::fs::write(&config, text)?;
    let log = infra.dir.path().join(format!("{service}-{tag}.log"));
    let process = Process::spawn(
        &binary(service)?,
        &["--config".into(), config.display().to_string()],
        &[],
        &log,
    )?;
    Ok(Service {
        name: service.to_string(),
        addr,
        config,
        state_dir,
        process,
    })
}

/// Starts a manager and waits until its local socket serves the Control API.
pub async fn start_manager(infra: &Infra, extra: &str) -> anyhow::Result<Service> {
    let manager = spawn_service(infra, "shoal-manager", extra)?;
    let socket = manager.socket();
    wait_for(
        &format!("{} to serve its local socket", manager.name),
        Duration::from_secs(30),
        || async {
            let channel = unix_channel(&socket).await.ok()?;
            health_on(channel, "shoal.v1.Control").await
        },
    )
    .await
    .with_context(|| manager.process.log_tail(30))?;
    Ok(manager)
}

/// `swarm init` through the manager's socket, as the CLI does it. Returns the answer
/// and the admin credentials.
pub async fn init_swarm(
    manager: &Service,
    req: InitClusterRequest,
) -> anyhow::Result<(InitClusterResponse, NodeCredentials)> {
    let key = NodeKey::generate();
    let mut req = req;
    req.admin_csr = key.csr_pem()?.into_bytes();
    let resp = ControlClient::new(unix_channel(&manager.socket()).await?)
        .init_cluster(req)
        .await?
        .into_inner();
    let admin = NodeCredentials {
        cert_pem: String::from_utf8(resp.admin_certificate.clone())?,
        key_pem: key.key_pem(),
        ca_pem: String::from_utf8(resp.ca_certificate.clone())?,
    };
    Ok((resp, admin))
}

impl Service {
    /// Starts the process again from the same config (same address, same state).
    pub fn restart(&mut self, infra: &Infra) -> anyhow::Result<()> {
        let tag = self.addr.replace([':', '.'], "-");
        let log = infra.dir.path().join(format!("{}-{tag}.log", self.name));
        self.process = Process::spawn(
            &binary(&self.name)?,
            &["--config".into(), self.config.display().to_string()],
            &[],
            &log,
        )?;
        Ok(())
    }

    /// The manager's local control socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    /// Waits until the process reports SERVING over TLS, checked against `ca` as a
    /// client with `creds`.
    pub async fn wait_serving(
        &self,
        creds: &NodeCredentials,
        server_name: &str,
    ) -> anyhow::Result<()> {
        wait_for(
            &format!("{} on {} to report SERVING", self.name, self.addr),
            Duration::from_secs(30),
            || async {
                let channel = tls_channel(&self.addr, creds, server_name).await.ok()?;
                health_on(channel, "").await
            },
        )
        .await
        .with_context(|| self.process.log_tail(30))
    }

    /// A TLS channel to this process as `creds`.
    pub async fn channel(&self, creds: &NodeCredentials) -> anyhow::Result<Channel> {
        tls_channel(&self.addr, creds, MANAGER_NAME).await
    }

    pub async fn control(&self, creds: &NodeCredentials) -> anyhow::Result<ControlClient<Channel>> {
        Ok(ControlClient::new(self.channel(creds).await?))
    }
}

/// A TLS channel to `addr` as `creds`, verifying the server against `creds`'s CA.
pub async fn tls_channel(
    addr: &str,
    creds: &NodeCredentials,
    server_name: &str,
) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(creds.client_tls(server_name))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// A channel over a Unix socket.
pub async fn unix_channel(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_path_buf();
    Ok(Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?)
}

/// `Some(())` when `service` reports SERVING on `channel`.
pub async fn health_on(channel: Channel, service: &str) -> Option<()> {
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .ok()?
        .into_inner()
        .status();
    (status == ServingStatus::Serving).then_some(())
}

/// A swarm on `infra`: one manager, initialised, and the admin's credentials.
pub struct Swarm {
    pub manager: Service,
    pub admin: NodeCredentials,
    pub init: InitClusterResponse,
}

impl Swarm {
    /// Starts a manager with `extra` config, inits the swarm with default settings and
    /// waits for the manager's TLS listener.
    pub async fn start(infra: &Infra, extra: &str) -> anyhow::Result<Swarm> {
        Self::start_with(infra, extra, InitClusterRequest::default()).await
    }

    /// Like [`Swarm::start`], with `swarm init` settings.
    pub async fn start_with(
        infra: &Infra,
        extra: &str,
        req: InitClusterRequest,
    ) -> anyhow::Result<Swarm> {
        let manager = start_manager(infra, extra).await?;
        let (init, admin) = init_swarm(&manager, req).await?;
        manager.wait_serving(&admin, MANAGER_NAME).await?;
        Ok(Swarm {
            manager,
            admin,
            init,
        })
    }

    pub fn worker_token(&self) -> String {
        self.tokens().0
    }

    pub fn manager_token(&self) -> String {
        self.tokens().1
    }

    fn tokens(&self) -> (String, String) {
        let t = self
            .init
            .cluster
            .as_ref()
            .and_then(|c| c.root_ca.as_ref())
            .and_then(|r| r.join_tokens.clone())
            .unwrap_or_default();
        (t.worker, t.manager)
    }
}

/// What `shoal swarm join` does for a node, through the manager's CA: a key, a CSR with
/// the token, the signed certificate stored in `state_dir`. (The worker's own join,
/// which also checks the CA against the token digest, is tested in its crate.)
pub async fn issue_node_identity(
    manager: &Service,
    ca: &NodeCredentials,
    token: &str,
    state_dir: &Path,
) -> anyhow::Result<String> {
    use shoal_proto::v1::IssueNodeCertificateRequest;
    use shoal_proto::v1::ca_client::CaClient;
    let key = NodeKey::generate();
    // No client certificate: a joining node has none yet.
    let anonymous = NodeCredentials {
        cert_pem: String::new(),
        key_pem: String::new(),
        ca_pem: ca.ca_pem.clone(),
    };
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&anonymous.ca_pem))
        .domain_name(MANAGER_NAME);
    let channel = Endpoint::from_shared(format!("https://{}", manager.addr))?
        .tls_config(tls)?
        .connect()
        .await?;
    let resp = CaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            csr: key.csr_pem()?.into_bytes(),
            token: token.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let creds = NodeCredentials {
        cert_pem: String::from_utf8(resp.certificate)?,
        key_pem: key.key_pem(),
        ca_pem: String::from_utf8(resp.ca_certificate)?,
    };
    creds.store(state_dir)?;
    Ok(resp.node_id)
}

/// A worker on `ip`, attached to `dispatcher`, renewing through the swarm's manager,
/// joined with the real join flow (`shoal swarm join`). Waits until its session is up.
pub async fn join_worker(
    infra: &Infra,
    swarm: &Swarm,
    dispatcher: &Service,
    ip: IpAddr,
) -> anyhow::Result<(Service, String)> {
    join_worker_with(infra, swarm, dispatcher, ip, "").await
}

/// A whole cluster as `deploy/local/up.sh` starts it: a swarm (one manager), a
/// scheduler, a dispatcher and `workers` workers, each on its own loopback address
/// (127.0.1.x), joined with the real join flow, shipping task logs over NATS. Task
/// processes and containers the workers leave behind are killed on drop.
pub struct Stack {
    pub swarm: Swarm,
    pub scheduler: Service,
    pub dispatcher: Service,
    /// shoal-dns, when `StackOptions::dns`.
    pub dns: Option<Service>,
    /// (worker, its node id), in address order 127.0.1.1, .2, …
    pub workers: Vec<(Service, String)>,
    /// The further replicas of the control plane (`StackOptions::replicas` > 1):
    /// managers, schedulers and dispatchers, in that order.
    pub replicas: Vec<Service>,
    /// The CLI's config dir (admin credentials).
    pub cli_dir: PathBuf,
    nats_url: String,
    node_ids: std::sync::Mutex<Vec<String>>,
    worker_subnet: u8,
}

/// Settings for [`Stack::start`].
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub workers: usize,
    /// Heartbeat period of the swarm (short, so node failures show quickly).
    pub heartbeat: Duration,
    /// Extra config lines for every process (e.g. the OTLP endpoint).
    pub extra: String,
    /// How many managers, schedulers and dispatchers (each); workers know every
    /// dispatcher.
    pub replicas: usize,
    /// Start shoal-dns and give every worker its Resolver API and DNS address (the
    /// data plane: routing mesh, VIPs, task DNS).
    pub dns: bool,
    /// Workers live on 127.0.<worker_subnet>.1, .2, … (tests that bind node ports in
    /// parallel use different ones).
    pub worker_subnet: u8,
    /// `swarm init --default-addr-pool` (e.g. a subnet of its own per test, so Docker
    /// networks of parallel tests never overlap); empty: Swarm's 10.0.0.0/8.
    pub default_addr_pool: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            workers: 3,
            heartbeat: Duration::from_secs(1),
            extra: String::new(),
            replicas: 1,
            dns: false,
            worker_subnet: 1,
            default_addr_pool: Vec::new(),
        }
    }
}

/// The address of worker `i` (0-based): 127.0.1.(i+1).
pub fn worker_ip(i: usize) -> IpAddr {
    worker_ip_in(1, i)
}

/// The address of worker `i` (0-based) in `subnet`: 127.0.<subnet>.(i+1).
pub fn worker_ip_in(subnet: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, subnet, (i + 1) as u8))
}

impl Stack {
    pub async fn start(infra: &Infra, opts: StackOptions) -> anyhow::Result<Stack> {
        use shoal_proto::v1::{ClusterSpec, DispatcherConfig, IpamDefaults};
        let heartbeat = prost_types::Duration::try_from(opts.heartbeat)?;
        let ipam = (!opts.default_addr_pool.is_empty()).then(|| IpamDefaults {
            default_address_pool: opts.default_addr_pool.clone(),
            subnet_size: 24,
        });
        let swarm = Swarm::start_with(
            infra,
            &opts.extra,
            InitClusterRequest {
                spec: Some(ClusterSpec {
                    dispatcher: Some(DispatcherConfig {
                        heartbeat_period: Some(heartbeat),
                    }),
                    ipam,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
        let scheduler = spawn_service(infra, "shoal-scheduler", &opts.extra)?;
        let dispatcher = spawn_service(infra, "shoal-dispatcher", &opts.extra)?;
        scheduler.wait_serving(&swarm.admin, MANAGER_NAME).await?;
        dispatcher.wait_serving(&swarm.admin, MANAGER_NAME).await?;
        let dns = if opts.dns {
            let dns = spawn_service(infra, "shoal-dns", &opts.extra)?;
            dns.wait_serving(&swarm.admin, MANAGER_NAME).await?;
            Some(dns)
        } else {
            None
        };
        let mut replicas = Vec::new();
        for kind in ["shoal-manager", "shoal-scheduler", "shoal-dispatcher"] {
            for _ in 1..opts.replicas {
                replicas.push(spawn_service(infra, kind, &opts.extra)?);
            }
        }
        for r in &replicas {
            r.wait_serving(&swarm.admin, MANAGER_NAME).await?;
        }
        let cli_dir = infra.dir.path().join("cli");
        swarm.admin.store(&cli_dir)?;
        let mut stack = Stack {
            swarm,
            scheduler,
            dispatcher,
            dns,
            workers: Vec::new(),
            replicas,
            cli_dir,
            nats_url: infra.nats.url(),
            node_ids: std::sync::Mutex::new(Vec::new()),
            worker_subnet: opts.worker_subnet,
        };
        for i in 0..opts.workers {
            stack.add_worker(infra, &opts.extra).await?;
            let _ = i;
        }
        Ok(stack)
    }

    /// The DNS address (IP:PORT) of the stack's shoal-dns, when it runs one.
    pub fn dns_addr(&self) -> Option<std::net::SocketAddr> {
        let dns = self.dns.as_ref()?;
        let text = std::fs::read_to_string(&dns.config).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("dns_listen = "))
            .and_then(|v| v.trim().trim_matches('"').parse().ok())
    }

    /// The config lines that point a worker at the stack's data plane (shoal-dns).
    fn data_plane_config(&self) -> String {
        match (&self.dns, self.dns_addr()) {
            (Some(dns), Some(addr)) => format!(
                "resolver_addrs = [\"{}\"]\ndns_addr = \"{addr}\"\n",
                dns.addr
            ),
            _ => String::new(),
        }
    }

    /// The address of this stack's worker `i` (0-based).
    pub fn worker_ip(&self, i: usize) -> IpAddr {
        worker_ip_in(self.worker_subnet, i)
    }

    /// Joins one more worker, on the next loopback address.
    pub async fn add_worker(&mut self, infra: &Infra, extra: &str) -> anyhow::Result<String> {
        let ip = self.worker_ip(self.workers.len());
        let extra = format!(
            "nats_url = \"{}\"\n{}{extra}",
            self.nats_url,
            self.data_plane_config()
        );
        let (worker, node_id) =
            join_worker_to(infra, &self.swarm, &self.dispatcher_addrs(), ip, &extra).await?;
        self.track(&node_id);
        self.workers.push((worker, node_id.clone()));
        Ok(node_id)
    }

    /// Starts a worker running as the manager's own node (sharing the manager's state
    /// dir and the node certificate the manager writes there), as `up.sh` does.
    /// Returns the manager's node id.
    pub async fn add_manager_worker(
        &mut self,
        infra: &Infra,
        extra: &str,
    ) -> anyhow::Result<String> {
        let state_dir = self.swarm.manager.state_dir.clone();
        let node_id = std::fs::read_to_string(state_dir.join("node-id"))?
            .trim()
            .to_string();
        let cert = state_dir.join("certificates").join("swarm-node.crt");
        wait_for(
            "the manager to write its node certificate",
            Duration::from_secs(30),
            || async { cert.exists().then_some(()) },
        )
        .await?;
        let worker = spawn_service_on(
            infra,
            "shoal-worker",
            LOCALHOST,
            &format!(
                "dispatcher_addrs = [\"{}\"]\nmanager_addrs = [\"{}\"]\nadvertise_addr = \"127.0.0.1\"\nstate_dir = \"{}\"\nnats_url = \"{}\"\n{}{extra}",
                self.dispatcher.addr,
                self.swarm.manager.addr,
                state_dir.display(),
                self.nats_url,
                self.data_plane_config()
            ),
        )?;
        worker.wait_serving(&self.swarm.admin, MANAGER_NAME).await?;
        self.track(&node_id);
        self.workers.push((worker, node_id.clone()));
        Ok(node_id)
    }

    /// The nodes of this stack (their tasks are cleaned up on drop).
    pub fn node_ids(&self) -> Vec<String> {
        self.node_ids.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Remembers a node whose task processes/containers are cleaned up on drop.
    pub fn track(&self, node_id: &str) {
        if let Ok(mut ids) = self.node_ids.lock() {
            ids.push(node_id.to_string());
        }
    }

    /// Every dispatcher's address.
    pub fn dispatcher_addrs(&self) -> Vec<String> {
        std::iter::once(&self.dispatcher)
            .chain(self.replicas.iter())
            .filter(|s| s.name == "shoal-dispatcher")
            .map(|s| s.addr.clone())
            .collect()
    }

    /// Runs the `shoal` CLI against the manager at `host`.
    pub async fn cli_on(&self, host: &str, args: &[&str]) -> anyhow::Result<CliOutput> {
        self.cli_env_on(host, &[], args).await
    }

    /// Runs the `shoal` CLI with extra environment variables (e.g. the variables a
    /// compose file interpolates), as a user exporting them in their shell would.
    pub async fn cli_env(&self, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<CliOutput> {
        self.cli_env_on(&self.swarm.manager.addr, env, args).await
    }

    async fn cli_env_on(
        &self,
        host: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<CliOutput> {
        let out = tokio::process::Command::new(binary("shoal")?)
            .args(args)
            .envs(env.iter().copied())
            .env("SHOAL_HOST", host)
            .env("SHOAL_CERT_DIR", &self.cli_dir)
            .env_remove("SHOAL_SOCKET")
            .env_remove("SHOAL_STATE_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        Ok(CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// A Control API client as the admin.
    pub async fn control(&self) -> anyhow::Result<ControlClient<Channel>> {
        self.swarm.manager.control(&self.swarm.admin).await
    }

    /// The tasks of `name` that are wanted and RUNNING.
    pub async fn running(&self, name: &str) -> anyhow::Result<Vec<Task>> {
        self.running_on(&self.swarm.manager.addr, name).await
    }

    /// [`Stack::running`], asking the manager at `host`.
    pub async fn running_on(&self, host: &str, name: &str) -> anyhow::Result<Vec<Task>> {
        Ok(self
            .tasks_of_on(host, name)
            .await?
            .into_iter()
            .filter(|t| {
                task_state(t) == TaskState::Running && task_desired(t) == TaskState::Running
            })
            .collect())
    }

    /// Waits (up to a minute) until exactly `n` tasks of `name` are wanted and RUNNING.
    pub async fn wait_running(&self, name: &str, n: usize) -> anyhow::Result<Vec<Task>> {
        self.wait_running_on(&self.swarm.manager.addr, name, n)
            .await
    }

    /// [`Stack::wait_running`], asking the manager at `host`.
    pub async fn wait_running_on(
        &self,
        host: &str,
        name: &str,
        n: usize,
    ) -> anyhow::Result<Vec<Task>> {
        wait_for(
            &format!("{n} running tasks of {name}"),
            Duration::from_secs(60),
            || async {
                let tasks = self.running_on(host, name).await.ok()?;
                (tasks.len() == n).then_some(tasks)
            },
        )
        .await
    }

    /// Every task of the service named `name` (none when there is no such service).
    pub async fn tasks_of(&self, name: &str) -> anyhow::Result<Vec<Task>> {
        self.tasks_of_on(&self.swarm.manager.addr, name).await
    }

    /// [`Stack::tasks_of`], asking the manager at `host`.
    pub async fn tasks_of_on(&self, host: &str, name: &str) -> anyhow::Result<Vec<Task>> {
        let mut control =
            ControlClient::new(tls_channel(host, &self.swarm.admin, MANAGER_NAME).await?);
        let service = control
            .list_services(ListServicesRequest {
                filters: Some(ListFilters {
                    names: vec![name.to_string()],
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .services
            .into_iter()
            .next();
        let Some(service) = service else {
            return Ok(Vec::new());
        };
        Ok(control
            .list_tasks(ListTasksRequest {
                filters: Some(ListFilters {
                    service_ids: vec![service.meta.map(|m| m.id).unwrap_or_default()],
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .tasks)
    }

    /// Runs the `shoal` CLI against this stack, as a user would (SHOAL_HOST and
    /// SHOAL_CERT_DIR set, no TTY).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        self.cli_on(&self.swarm.manager.addr, args).await
    }

    /// Like [`Stack::cli`], failing unless the command exits 0.
    pub async fn cli_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli(args).await?;
        anyhow::ensure!(
            out.code == 0,
            "`shoal {}` exited {}:\n{}{}",
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
        Ok(out.stdout)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let ids = self.node_ids.lock().map(|g| g.clone()).unwrap_or_default();
        kill_task_leftovers(&ids);
    }
}

/// What a CLI run printed and how it ended.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Kills every process that runs as a task of one of `node_ids` (their environment
/// holds `SHOAL_NODE_ID=<id>`) and removes their containers (label `shoal.node.id`):
/// tasks outlive their worker on purpose, tests must not leave them behind.
pub fn kill_task_leftovers(node_ids: &[String]) {
    if node_ids.is_empty() {
        return;
    }
    for pid in task_pids(node_ids) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    for id in node_ids {
        let listed = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=shoal.node.id={id}"),
            ])
            .output();
        if let Ok(out) = listed {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
    // The tasks' secret and config files (the workers' default secrets_dir, a tmpfs).
    for id in node_ids {
        let _ = std::fs::remove_dir_all(format!("/dev/shm/shoal-{id}"));
    }
}

/// Pids of live processes whose environment names one of `node_ids` as SHOAL_NODE_ID.
pub fn task_pids(node_ids: &[String]) -> Vec<u32> {
    let wanted: Vec<String> = node_ids
        .iter()
        .map(|id| format!("SHOAL_NODE_ID={id}"))
        .collect();
    task_processes()
        .into_iter()
        .filter(|(_, env)| env.iter().any(|e| wanted.contains(e)))
        .map(|(pid, _)| pid)
        .collect()
}

/// Every live process with a `SHOAL_TASK_ID` in its environment: (pid, environment).
pub fn task_processes() -> Vec<(u32, Vec<String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Zombies keep their environ readable but are dead: skip them.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let env: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if env.iter().any(|e| e.starts_with("SHOAL_TASK_ID=")) {
            found.push((pid, env));
        }
    }
    found
}

/// [`join_worker`] with extra config lines for the worker.
pub async fn join_worker_with(
    infra: &Infra,
    swarm: &Swarm,
    dispatcher: &Service,
    ip: IpAddr,
    extra: &str,
) -> anyhow::Result<(Service, String)> {
    join_worker_to(
        infra,
        swarm,
        std::slice::from_ref(&dispatcher.addr),
        ip,
        extra,
    )
    .await
}

/// A worker on `ip` that knows `dispatchers` (it fails over between them), joined with
/// the real join flow, with extra config lines.
pub async fn join_worker_to(
    infra: &Infra,
    swarm: &Swarm,
    dispatchers: &[String],
    ip: IpAddr,
    extra: &str,
) -> anyhow::Result<(Service, String)> {
    let list: Vec<String> = dispatchers.iter().map(|a| format!("\"{a}\"")).collect();
    let worker = spawn_service_on(
        infra,
        "shoal-worker",
        ip,
        &format!(
            "dispatcher_addrs = [{}]\nmanager_addrs = [\"{}\"]\nadvertise_addr = \"{ip}\"\n{extra}",
            list.join(", "),
            swarm.manager.addr
        ),
    )?;
    let joined = shoal_worker::join(
        &swarm.manager.addr,
        &swarm.worker_token(),
        &worker.state_dir,
        Some(&ip.to_string()),
    )
    .await?;
    worker.wait_serving(&swarm.admin, "swarm-worker").await?;
    Ok((worker, joined.node_id))
}

/// A task's observed state (NEW when unknown).
pub fn task_state(t: &Task) -> TaskState {
    t.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

/// A task's desired state (NEW when unknown).
pub fn task_desired(t: &Task) -> TaskState {
    TaskState::try_from(t.desired_state).unwrap_or(TaskState::New)
}

/// A task's id.
pub fn task_id(t: &Task) -> String {
    t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

/// Names of the Docker containers (running or not) labelled as tasks of the service
/// `service`.
pub fn containers_of(service: &str) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=shoal.service.name={service}"),
            "--format",
            "{{.Names}}",
        ])
        .output()?;
    anyhow::ensure!(out.status.success(), "docker ps failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The names of every service the manager holds, sorted.
pub async fn service_names(control: &mut ControlClient<Channel>) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = control
        .list_services(shoal_proto::v1::ListServicesRequest::default())
        .await?
        .into_inner()
        .services
        .iter()
        .filter_map(|s| {
            s.spec
                .as_ref()?
                .annotations
                .as_ref()
                .map(|a| a.name.clone())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// A replicated container service of one task (nginx:alpine) on `networks` (ids or
/// names) with `ports`.
pub fn container_service(
    name: &str,
    networks: &[&str],
    ports: Vec<shoal_proto::v1::PortConfig>,
) -> shoal_proto::v1::ServiceSpec {
    shoal_proto::v1::ServiceSpec {
        annotations: Some(shoal_proto::v1::Annotations {
            name: name.into(),
            labels: Default::default(),
        }),
        task: Some(shoal_proto::v1::TaskSpec {
            runtime: Some(shoal_proto::v1::task_spec::Runtime::Container(
                shoal_proto::v1::ContainerSpec {
                    image: "nginx:alpine".into(),
                    ..Default::default()
                },
            )),
            networks: networks
                .iter()
                .map(|n| shoal_proto::v1::NetworkAttachmentConfig {
                    target: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        mode: Some(shoal_proto::v1::service_spec::Mode::Replicated(
            shoal_proto::v1::ReplicatedService { replicas: 1 },
        )),
        endpoint: (!ports.is_empty()).then_some(shoal_proto::v1::EndpointSpec {
            ports,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `docker <args>` on this machine's engine: its trimmed stdout, or an error with its
/// stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The image every stack fixture's image names are tagged as.
pub const STACK_STUB: &str = "shoal-test/stack-stub:latest";

/// Tags [`STACK_STUB`] as each of `images`: busybox whose entrypoint sleeps forever
/// whatever the arguments (`command: top`, mysqldump loops…), so compose files that
/// name registry images deploy with nothing pulled.
pub fn stub_images(images: &[&str]) -> anyhow::Result<()> {
    let base = shoal_testkit::docker::busybox_image()?;
    if docker(&["image", "inspect", "--format", "{{.Id}}", STACK_STUB]).is_err() {
        let id = docker(&["create", &base])?;
        let mut export = std::process::Command::new("docker")
            .args(["export", &id])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = export
            .stdout
            .take()
            .context("docker export has no stdout")?;
        let status = std::process::Command::new("docker")
            .args([
                "import",
                "--change",
                r#"ENTRYPOINT ["/bin/sh","-c","exec sleep 2147483647","sh"]"#,
                "--change",
                "ENV PATH=/bin",
                "-",
                STACK_STUB,
            ])
            .stdin(stdout)
            .status()?;
        export.wait()?;
        docker(&["rm", &id])?;
        anyhow::ensure!(status.success(), "docker import of the stub failed");
    }
    for image in images {
        docker(&["tag", STACK_STUB, image])?;
    }
    Ok(())
}

/// Removes what an interrupted run of a stack scenario left in the engine: the
/// containers of its stacks (`namespaces`) and the Docker networks shoal's workers
/// made in its address pool (`pool`, a /16 no other test uses).
pub fn remove_stack_leftovers(namespaces: &[&str], pool: &str) -> anyhow::Result<()> {
    for ns in namespaces {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.stack.namespace={ns}"),
        ])?;
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id])?;
        }
    }
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        "label=com.shoal.network.id",
    ])?;
    let prefix = pool.trim_end_matches(".0.0/16");
    for id in networks.split_whitespace() {
        let subnet = docker(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            id,
        ])
        .unwrap_or_default();
        if subnet.starts_with(&format!("{prefix}.")) {
            docker(&["network", "rm", id])?;
        }
    }
    Ok(())
}

/// Whether no container of the stacks `namespaces` is left in the engine.
pub fn no_stack_containers(namespaces: &[&str]) -> bool {
    namespaces.iter().all(|ns| {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.stack.namespace={ns}"),
        ])
        .is_ok_and(|out| out.is_empty())
    })
}
