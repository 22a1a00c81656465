//! The shoal-dns configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_settings::{Invalid, Settings, check};
use shoal_telemetry::LogFormat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsConfig {
    /// Resolver API listen address.
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
    /// Where the DNS server answers (UDP and TCP).
    pub dns_listen: SocketAddr,
    /// Resolvers for names outside the cluster (IP or IP:PORT); empty: from /etc/resolv.conf.
    pub upstream: Vec<String>,
    pub otlp_endpoint: String,
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4242)),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            store_prefix: shoal_store::DEFAULT_PREFIX.into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            kek_file: std::path::PathBuf::from(shoal_grpc_host::identity::DEFAULT_KEK_FILE),
            dns_listen: SocketAddr::from(([127, 0, 0, 1], 5354)),
            upstream: Vec::new(),
            otlp_endpoint: String::new(),
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        }
    }
}

impl Settings for DnsConfig {
    const PROCESS: &'static str = "shoal-dns";

    fn validate(&self) -> Result<(), Invalid> {
        check::state(&self.etcd_endpoints, &self.store_prefix, &self.nats_url)?;
        for u in &self.upstream {
            if u.parse::<std::net::IpAddr>().is_err() && u.parse::<SocketAddr>().is_err() {
                return Err(Invalid::new(
                    "upstream",
                    format!("\"{u}\" is not IP or IP:PORT"),
                ));
            }
        }
        check::telemetry(&self.otlp_endpoint, &self.log_filter)
    }
}

impl DnsConfig {
    /// The log filter in effect: hickory-server logs every answered query at info, so
    /// unless the filter says otherwise it only gets warnings (shoal-dns's own span per
    /// query is at debug).
    pub fn effective_log_filter(&self) -> String {
        if self.log_filter.contains("hickory") {
            self.log_filter.clone()
        } else if self.log_filter.trim().is_empty() {
            "hickory_server=warn".into()
        } else {
            format!("{},hickory_server=warn", self.log_filter)
        }
    }
}

impl shoal_grpc_host::ServiceSettings for DnsConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn telemetry(&self) -> shoal_grpc_host::TelemetryConfig {
        shoal_grpc_host::telemetry_config(
            <Self as Settings>::PROCESS,
            &self.otlp_endpoint,
            self.log_format,
            &self.effective_log_filter(),
        )
    }
}

impl shoal_grpc_host::StateSettings for DnsConfig {
    fn etcd_endpoints(&self) -> &[String] {
        &self.etcd_endpoints
    }

    fn store_prefix(&self) -> &str {
        &self.store_prefix
    }

    fn nats_url(&self) -> &str {
        &self.nats_url
    }

    fn kek_file(&self) -> &std::path::Path {
        &self.kek_file
    }
}
