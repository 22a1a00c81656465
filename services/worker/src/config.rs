//! The worker's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shoal_settings::{Invalid, Settings, check};
use shoal_telemetry::LogFormat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// The worker's own gRPC address (health, reflection): its node address.
    pub listen: SocketAddr,
    /// The address the node advertises to the cluster; empty: the listen IP.
    pub advertise_addr: String,
    /// Dispatchers to attach to (HOST:PORT); the worker fails over between them.
    pub dispatcher_addrs: Vec<String>,
    /// Managers (HOST:PORT) whose CA renews the node certificate, besides the one
    /// `shoal swarm join` went through (recorded in the state dir).
    pub manager_addrs: Vec<String>,
    /// Where the node keeps its identity (key, certificate) and task state.
    pub state_dir: PathBuf,
    /// The node's hostname as `node ls` shows it; empty: the system hostname.
    pub hostname: String,
    /// NATS server for task output (`shoal.logs.*`); empty: output is not shipped.
    pub nats_url: String,
    /// shoal-dns Resolver APIs (HOST:PORT) the data plane follows (routing mesh,
    /// VIPs); the worker fails over between them. Empty: no data plane.
    pub resolver_addrs: Vec<String>,
    /// shoal-dns's DNS address (IP:PORT) that tasks' queries go to: process tasks get
    /// it as `SHOAL_DNS`, containers reach it through the worker's relay on their
    /// network's gateway. Empty: tasks keep the host's resolver.
    pub dns_addr: String,
    /// Where tasks' secret and config files are written, one directory per task; it
    /// must be a tmpfs (tasks that need files fail otherwise). Empty:
    /// `/dev/shm/shoal-<node id>`.
    pub secrets_dir: PathBuf,
    pub otlp_endpoint: String,
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4243)),
            advertise_addr: String::new(),
            dispatcher_addrs: vec!["127.0.0.1:4240".into()],
            manager_addrs: Vec::new(),
            state_dir: PathBuf::from(".shoal-worker"),
            hostname: String::new(),
            nats_url: String::new(),
            resolver_addrs: Vec::new(),
            dns_addr: String::new(),
            secrets_dir: PathBuf::new(),
            otlp_endpoint: String::new(),
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        }
    }
}

impl WorkerConfig {
    /// The hostname to register with: the configured one, else the system's.
    pub fn effective_hostname(&self) -> String {
        if !self.hostname.is_empty() {
            return self.hostname.clone();
        }
        shoal_node_description::system_hostname()
    }

    /// The address to advertise: the configured one, else the listen IP.
    pub fn effective_advertise_addr(&self) -> String {
        if self.advertise_addr.is_empty() {
            self.listen.ip().to_string()
        } else {
            self.advertise_addr.clone()
        }
    }
}

impl Settings for WorkerConfig {
    const PROCESS: &'static str = "shoal-worker";

    fn validate(&self) -> Result<(), Invalid> {
        if self.dispatcher_addrs.is_empty() {
            return Err(Invalid::new(
                "dispatcher_addrs",
                "needs at least one HOST:PORT",
            ));
        }
        for addr in &self.resolver_addrs {
            check::host_port("resolver_addrs", addr)?;
        }
        if !self.dns_addr.is_empty() && self.dns_addr.parse::<SocketAddr>().is_err() {
            return Err(Invalid::new(
                "dns_addr",
                format!("\"{}\" is not IP:PORT", self.dns_addr),
            ));
        }
        for addr in &self.dispatcher_addrs {
            check::host_port("dispatcher_addrs", addr)?;
        }
        for addr in &self.manager_addrs {
            check::host_port("manager_addrs", addr)?;
        }
        if !self.advertise_addr.is_empty()
            && self.advertise_addr.parse::<std::net::IpAddr>().is_err()
        {
            return Err(Invalid::new(
                "advertise_addr",
                format!("\"{}\" is not an IP address", self.advertise_addr),
            ));
        }
        if !self.nats_url.is_empty() {
            check::url("nats_url", &self.nats_url, &["nats", "tls"])?;
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(Invalid::new("state_dir", "must not be empty"));
        }
        check::telemetry(&self.otlp_endpoint, &self.log_filter)
    }
}

shoal_grpc_host::service_settings!(WorkerConfig);
