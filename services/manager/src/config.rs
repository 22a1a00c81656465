//! The shoal-manager configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_settings::{Invalid, Settings, check};
use shoal_telemetry::{LogFormat, TelemetryConfig};

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
        if self.leader_lease_ttl < std::time::Duration::from_secs(2) {
            return Err(Invalid::new("leader_lease_ttl", "must be at least 2s"));
        }
        check::telemetry(&self.otlp_endpoint, &self.log_filter)
    }
}

impl shoal_grpc_host::ServiceSettings for ManagerConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn telemetry(&self) -> TelemetryConfig {
        TelemetryConfig {
            service_name: Self::PROCESS.into(),
            otlp_endpoint: Some(self.otlp_endpoint.clone()).filter(|e| !e.is_empty()),
            log_format: self.log_format,
            log_filter: self.log_filter.clone(),
        }
    }
}

impl shoal_grpc_host::StateSettings for ManagerConfig {
    fn etcd_endpoints(&self) -> &[String] {
        &self.etcd_endpoints
    }

    fn store_prefix(&self) -> &str {
        &self.store_prefix
    }

    fn nats_url(&self) -> &str {
        &self.nats_url
    }
}
