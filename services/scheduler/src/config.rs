//! The shoal-scheduler configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_settings::{Invalid, Settings, check};
use shoal_telemetry::LogFormat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// Health and reflection listen address.
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
    /// How often the scheduler scans its caches for pending tasks, whatever hints and
    /// events say (the safety net behind them).
    #[serde(with = "shoal_settings::duration")]
    pub scan_interval: std::time::Duration,
    pub otlp_endpoint: String,
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4241)),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            store_prefix: shoal_store::DEFAULT_PREFIX.into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            kek_file: std::path::PathBuf::from(shoal_grpc_host::identity::DEFAULT_KEK_FILE),
            scan_interval: std::time::Duration::from_secs(5),
            otlp_endpoint: String::new(),
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        }
    }
}

impl Settings for SchedulerConfig {
    const PROCESS: &'static str = "shoal-scheduler";

    fn validate(&self) -> Result<(), Invalid> {
        check::state(&self.etcd_endpoints, &self.store_prefix, &self.nats_url)?;
        if self.scan_interval < std::time::Duration::from_millis(100) {
            return Err(Invalid::new("scan_interval", "must be at least 100ms"));
        }
        check::telemetry(&self.otlp_endpoint, &self.log_filter)
    }
}

shoal_grpc_host::state_settings!(SchedulerConfig);
