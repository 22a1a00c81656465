//! The shoal-manager configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_settings::{Invalid, Settings, check};
use shoal_telemetry::LogFormat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ManagerConfig {
    /// Control API and CA listen address.
    pub listen: SocketAddr,
    /// etcd client URLs.
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of shoal's objects in etcd.
    pub store_prefix: String,
    /// NATS server URL.
    pub nats_url: String,
    /// The cluster CA's key-encryption key (written by `shoal swarm init` on the first
    /// manager; every control-plane host needs the same file, mode 0600).
    pub kek_file: std::path::PathBuf,
    /// The manager's own state: its node id and its local control socket.
    pub state_dir: std::path::PathBuf,
    /// The address other nodes reach this manager at (IP or IP:PORT), printed in
    /// `swarm join` commands; empty: the listen address.
    pub advertise_addr: String,
    /// The manager node's hostname in `node ls`; empty: the system hostname.
    pub hostname: String,
    /// The shortest node certificate lifetime `swarm init --cert-expiry` accepts
    /// (Swarm's 1h; tests lower it to exercise renewal).
    #[serde(with = "shoal_settings::duration")]
    pub min_cert_expiry: std::time::Duration,
    /// How long a manager's leadership outlives its last lease renewal.
    #[serde(with = "shoal_settings::duration")]
    pub leader_lease_ttl: std::time::Duration,
    pub otlp_endpoint: String,
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2377)),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            store_prefix: shoal_store::DEFAULT_PREFIX.into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            kek_file: std::path::PathBuf::from(shoal_grpc_host::identity::DEFAULT_KEK_FILE),
            state_dir: std::path::PathBuf::from(".shoal-manager"),
            advertise_addr: String::new(),
            hostname: String::new(),
            min_cert_expiry: std::time::Duration::from_secs(3600),
            leader_lease_ttl: std::time::Duration::from_secs(10),
            otlp_endpoint: String::new(),
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        }
    }
}

impl Settings for ManagerConfig {
    const PROCESS: &'static str = "shoal-manager";

    fn validate(&self) -> Result<(), Invalid> {
        check::state(&self.etcd_endpoints, &self.store_prefix, &self.nats_url)?;
        if !self.advertise_addr.is_empty() && self.advertise_endpoint().is_none() {
            return Err(Invalid::new(
                "advertise_addr",
                format!("\"{}\" is not IP or IP:PORT", self.advertise_addr),
            ));
        }
        if self.min_cert_expiry.is_zero() {
            return Err(Invalid::new("min_cert_expiry", "must be greater than 0"));
        }
        if self.leader_lease_ttl < std::time::Duration::from_secs(2) {
            return Err(Invalid::new("leader_lease_ttl", "must be at least 2s"));
        }
        check::telemetry(&self.otlp_endpoint, &self.log_filter)
    }
}

impl ManagerConfig {
    /// `IP:PORT` nodes use to reach this manager: advertise_addr (its port defaults to
    /// the listen port), else the listen address.
    pub fn advertise_endpoint(&self) -> Option<SocketAddr> {
        if self.advertise_addr.is_empty() {
            return Some(self.listen);
        }
        if let Ok(addr) = self.advertise_addr.parse::<SocketAddr>() {
            return Some(addr);
        }
        self.advertise_addr
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.listen.port()))
    }

    /// The local control socket (like docker.sock): `<state_dir>/control.sock`.
    pub fn control_socket(&self) -> std::path::PathBuf {
        self.state_dir.join("control.sock")
    }

    /// The hostname the manager node registers with.
    pub fn effective_hostname(&self) -> String {
        if !self.hostname.is_empty() {
            return self.hostname.clone();
        }
        shoal_node_description::system_hostname()
    }
}

impl ManagerConfig {
    /// Names and addresses clients may use to reach this process.
    pub fn advertise_sans(&self) -> Vec<shoal_pki::San> {
        self.advertise_endpoint()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .map(shoal_pki::San::Ip)
            .into_iter()
            .collect()
    }
}

shoal_grpc_host::state_settings!(
    ManagerConfig,
    advertise_sans = ManagerConfig::advertise_sans
);
