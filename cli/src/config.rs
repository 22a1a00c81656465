//! The CLI's configuration: which manager to talk to, with which identity, which node
//! this host is, and how to trace.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shoal_settings::{Invalid, Settings};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CliConfig {
    /// The manager's Control API, like DOCKER_HOST: `HOST:PORT` or `https://HOST:PORT`
    /// (TLS with the admin identity in `cert_dir`), `http://HOST:PORT` (plaintext, only
    /// for a manager started with `--insecure`) or `unix:///path` (a control socket).
    /// Env: SHOAL_HOST.
    pub host: String,
    /// A local manager's control socket (`<manager state_dir>/control.sock`). When set
    /// and present, Control calls go over it instead of `host`. Env: SHOAL_SOCKET.
    pub socket: PathBuf,
    /// Where the admin client identity lives (`certificates/swarm-node.crt`,
    /// `swarm-node.key`, `swarm-root-ca.crt`); `swarm init` writes it. Env: SHOAL_CERT_DIR.
    pub cert_dir: PathBuf,
    /// This host's node state directory (the worker's `state_dir`): which node the CLI
    /// runs on, and where `swarm join` / `swarm leave` keep or drop the node identity.
    /// Empty: none configured. Env: SHOAL_STATE_DIR.
    pub state_dir: PathBuf,
    /// OTLP gRPC endpoint the CLI's own spans go to; empty: none.
    pub otlp_endpoint: String,
    /// Log filter for the CLI's diagnostics on stderr.
    pub log_filter: String,
}

/// `~/.config/shoal`, or `.shoal` in the working directory without a home.
pub fn default_cert_dir() -> PathBuf {
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".config").join("shoal"),
        None => PathBuf::from(".shoal"),
    }
}

impl Default for CliConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1:2377".into(),
            socket: PathBuf::new(),
            cert_dir: default_cert_dir(),
            state_dir: PathBuf::new(),
            otlp_endpoint: String::new(),
            log_filter: "warn".into(),
        }
    }
}

impl Settings for CliConfig {
    const PROCESS: &'static str = "shoal";

    fn validate(&self) -> Result<(), Invalid> {
        crate::connect::Target::parse(&self.host)
            .map(|_| ())
            .map_err(|problem| Invalid::new("host", problem))?;
        if self.cert_dir.as_os_str().is_empty() {
            return Err(Invalid::new("cert_dir", "must not be empty"));
        }
        if !self.otlp_endpoint.is_empty() {
            shoal_settings::check::url("otlp_endpoint", &self.otlp_endpoint, &["http", "https"])?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use shoal_settings::Overrides;

    fn load(env: &[(&str, &str)], flags: Overrides) -> Result<CliConfig, String> {
        shoal_settings::load::<CliConfig>(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            &flags,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn env_and_flags_override_defaults() {
        let cfg = load(
            &[
                ("SHOAL_SOCKET", "/run/m/control.sock"),
                ("SHOAL_CERT_DIR", "/etc/shoal"),
                ("SHOAL_STATE_DIR", "/var/lib/w"),
            ],
            Overrides::new().set("state_dir", Some("/flag/w")),
        )
        .unwrap();
        assert_eq!(cfg.socket, PathBuf::from("/run/m/control.sock"));
        assert_eq!(cfg.cert_dir, PathBuf::from("/etc/shoal"));
        assert_eq!(cfg.state_dir, PathBuf::from("/flag/w"));
        assert_eq!(cfg.host, "127.0.0.1:2377");
    }

    #[test]
    fn bad_host_is_named() {
        let err = load(&[("SHOAL_HOST", "nowhere")], Overrides::new()).unwrap_err();
        assert!(err.contains("`host`"), "{err}");
        assert!(err.contains("SHOAL_HOST"), "{err}");
        assert!(load(&[("SHOAL_HOST", "unix:///tmp/x.sock")], Overrides::new()).is_ok());
        assert!(load(&[("SHOAL_HOST", "https://10.0.0.1:2377")], Overrides::new()).is_ok());
    }
}
