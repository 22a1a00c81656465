//! The shoal-dispatcher configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_settings::{Invalid, Settings, check};
use shoal_telemetry::LogFormat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DispatcherConfig {
    /// Dispatcher API listen address (workers connect here).
    pub listen: SocketAddr,
    /// `HOST:PORT` workers reach this dispatcher at, handed to them as a manager to
    /// fail over to and put in the server certificate. Empty: the listen address, which
    /// then must not be unspecified (0.0.0.0 / ::).
    pub advertise_addr: String,
    /// etcd client URLs.
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of shoal's objects in etcd.
    pub store_prefix: String,
    /// NATS server URL.
    pub nats_url: String,
    /// The cluster CA's key-encryption key (written by `shoal swarm init` on the first
    /// manager; every control-plane host needs the same file, mode 0600).
    pub kek_file: std::path::PathBuf,
    pub otlp_endpoint: String,
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4240)),
            advertise_addr: String::new(),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            store_prefix: shoal_store::DEFAULT_PREFIX.into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            kek_file: std::path::PathBuf::from(shoal_grpc_host::identity::DEFAULT_KEK_FILE),
            otlp_endpoint: String::new(),
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        }
    }
}

impl Settings for DispatcherConfig {
    const PROCESS: &'static str = "shoal-dispatcher";

    fn validate(&self) -> Result<(), Invalid> {
        check::state(&self.etcd_endpoints, &self.store_prefix, &self.nats_url)?;
        if self.advertise_addr.is_empty() {
            if self.listen.ip().is_unspecified() {
                return Err(Invalid::new(
                    "advertise_addr",
                    format!(
                        "is required when listen ({}) is an unspecified address: \
                         workers need an address to reach this dispatcher at",
                        self.listen
                    ),
                ));
            }
        } else {
            check::host_port("advertise_addr", &self.advertise_addr)?;
        }
        check::telemetry(&self.otlp_endpoint, &self.log_filter)
    }
}

impl DispatcherConfig {
    /// The address workers reach this dispatcher at.
    pub fn advertise(&self) -> String {
        if self.advertise_addr.is_empty() {
            self.listen.to_string()
        } else {
            self.advertise_addr.clone()
        }
    }

    /// The host part of [`DispatcherConfig::advertise`].
    fn advertise_host(&self) -> String {
        let addr = self.advertise();
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    }
}

impl DispatcherConfig {
    /// Names and addresses clients may use to reach this process.
    pub fn advertise_sans(&self) -> Vec<shoal_pki::San> {
        let host = self.advertise_host();
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => vec![shoal_pki::San::Ip(ip)],
            Ok(_) => Vec::new(),
            Err(_) if host.is_empty() => Vec::new(),
            Err(_) => vec![shoal_pki::San::Dns(host)],
        }
    }
}

shoal_grpc_host::state_settings!(
    DispatcherConfig,
    advertise_sans = DispatcherConfig::advertise_sans
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_defaults_to_listen_and_is_validated() {
        let cfg = DispatcherConfig::default();
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.advertise(), "127.0.0.1:4240");
        assert_eq!(
            cfg.advertise_sans(),
            vec![shoal_pki::San::Ip([127, 0, 0, 1].into())]
        );

        let unspecified = DispatcherConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 4240)),
            ..DispatcherConfig::default()
        };
        let err = unspecified.validate().err();
        assert!(err.is_some_and(|e| e.key == "advertise_addr"));

        let named = DispatcherConfig {
            advertise_addr: "dispatcher-1:4240".into(),
            ..unspecified
        };
        assert!(named.validate().is_ok());
        assert_eq!(
            named.advertise_sans(),
            vec![shoal_pki::San::Dns("dispatcher-1".into())]
        );
        let bad = DispatcherConfig {
            advertise_addr: "nope".into(),
            ..DispatcherConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
