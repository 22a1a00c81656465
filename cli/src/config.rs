//! The CLI's configuration: which manager to talk to and how to trace.

use serde::{Deserialize, Serialize};
use shoal_settings::{Invalid, Settings};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CliConfig {
    /// Manager address (HOST:PORT), like DOCKER_HOST. Env: SHOAL_HOST.
    pub host: String,
    /// OTLP gRPC endpoint the CLI's own spans go to; empty: none.
    pub otlp_endpoint: String,
    /// Log filter for the CLI's diagnostics on stderr.
    pub log_filter: String,
}

impl Default for CliConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1:2377".into(),
            otlp_endpoint: String::new(),
            log_filter: "warn".into(),
        }
    }
}

impl Settings for CliConfig {
    const PROCESS: &'static str = "shoal";

    fn validate(&self) -> Result<(), Invalid> {
        crate::connect::endpoint_uri(&self.host)
            .map(|_| ())
            .map_err(|problem| Invalid::new("host", problem))?;
        if !self.otlp_endpoint.is_empty() {
            shoal_settings::check::url("otlp_endpoint", &self.otlp_endpoint, &["http", "https"])?;
        }
        Ok(())
    }
}
