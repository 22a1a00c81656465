//! Layered configuration for every shoal process, services and CLI alike.
//!
//! Precedence, lowest first: the type's defaults < a TOML file (`--config PATH`) <
//! environment variables `SHOAL_<KEY>` < command-line flags. Keys are flat (`listen`,
//! `etcd_endpoints`, ...), so each one maps to one env variable and one flag.
//!
//! A bad value anywhere is reported as one line naming the key, the problem and where
//! the value came from; the binary then exits with code 2 ([`EXIT_BAD_CONFIG`]). Keys
//! the process does not know are errors too, so a typo in a file never goes unnoticed.
//! Environment variables are only read for keys the process knows, because one shell
//! may carry settings for several shoal processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Exit code of a process refused for bad configuration.
pub const EXIT_BAD_CONFIG: i32 = 2;

/// Prefix of the environment variables read: `SHOAL_LISTEN` sets `listen`.
pub const ENV_PREFIX: &str = "SHOAL_";

/// A process's configuration.
pub trait Settings: Serialize + DeserializeOwned + Default {
    /// The process name used in messages, e.g. `shoal-manager`.
    const PROCESS: &'static str;

    /// Checks what types alone cannot (ranges, non-empty lists, ...).
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// A value that parsed but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("bad config: key `{key}`: {problem}{}", origin_suffix(.origin))]
    BadValue {
        key: String,
        problem: String,
        origin: Option<String>,
    },
    #[error("bad config: unknown key `{key}`{}", origin_suffix(.origin))]
    UnknownKey { key: String, origin: Option<String> },
    #[error("bad config: cannot read {path}: {problem}")]
    File { path: PathBuf, problem: String },
}

fn origin_suffix(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|o| format!(" (from {o})"))
        .unwrap_or_default()
}

impl SettingsError {
    /// The key at fault, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            SettingsError::BadValue { key, .. } | SettingsError::UnknownKey { key, .. } => {
                Some(key)
            }
            SettingsError::File { .. } => None,
        }
    }
}

/// Flag values that override everything else, keyed by config key.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    values: Vec<(String, Override)>,
}

#[derive(Debug, Clone)]
enum Override {
    One(String),
    Many(Vec<String>),
}

impl Overrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` when the flag was given.
    pub fn set(mut self, key: &str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.values
                .push((key.to_string(), Override::One(v.to_string())));
        }
        self
    }

    /// Sets a list `key` when the flag was given at least once.
    pub fn set_list(mut self, key: &str, values: &[String]) -> Self {
        if !values.is_empty() {
            self.values
                .push((key.to_string(), Override::Many(values.to_vec())));
        }
        self
    }

    /// Sets a boolean `key` to true when the switch was given.
    pub fn set_flag(self, key: &str, on: bool) -> Self {
        self.set(key, on.then_some("true"))
    }
}

/// Flags every shoal process takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Environment variables SHOAL_<KEY> and flags override it.
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file, env and flags merged) and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
}

/// Loads a configuration from its layers. `env` is the environment to read (pass
/// `std::env::vars()`); tests pass their own.
pub fn load<T: Settings>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &Overrides,
) -> Result<T, SettingsError> {
    let defaults = Config::try_from(&T::default()).map_err(|e| SettingsError::BadValue {
        key: "(defaults)".into(),
        problem: e.to_string(),
        origin: None,
    })?;
    // The keys come from a JSON rendering: config's own drops empty lists.
    let known: BTreeMap<String, bool> = match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(map)) => {
            map.into_iter().map(|(k, v)| (k, v.is_array())).collect()
        }
        _ => BTreeMap::new(),
    };
    let mut builder = Config::builder().add_source(defaults);

    // Reject keys the process does not know, naming the file.
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::File {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        let parsed: toml::Table = toml::from_str(&text).map_err(|e| {
            let problem = e.message().to_string();
            SettingsError::File {
                path: path.to_path_buf(),
                problem: match e.span() {
                    Some(span) => format!("{problem} (at byte {})", span.start),
                    None => problem,
                },
            }
        })?;
        if let Some(key) = parsed.keys().find(|k| !known.contains_key(k.as_str())) {
            return Err(SettingsError::UnknownKey {
                key: key.clone(),
                origin: Some(path.display().to_string()),
            });
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
    }

    let mut origins: BTreeMap<String, String> = BTreeMap::new();
    if let Some(path) = file {
        for key in known.keys() {
            origins.insert(key.clone(), path.display().to_string());
        }
    }
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    env.sort();
    for (name, value) in env {
        let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some(&is_list) = known.get(&key) else {
            continue;
        };
        let value = if is_list {
            list_value(value.split(',').map(str::trim).filter(|s| !s.is_empty()))
        } else {
            Value::from(value)
        };
        builder = builder
            .set_override(key.as_str(), value)
            .map_err(|e| bad(&key, e, Some(&name)))?;
        origins.insert(key, format!("env {name}"));
    }
    for (key, value) in &flags.values {
        let flag = format!("flag --{}", key.replace('_', "-"));
        if !known.contains_key(key) {
            return Err(SettingsError::UnknownKey {
                key: key.clone(),
                origin: Some(flag),
            });
        }
        let value = match value {
            Override::One(v) => Value::from(v.clone()),
            Override::Many(vs) => list_value(vs.iter().map(String::as_str)),
        };
        builder = builder
            .set_override(key.as_str(), value)
            .map_err(|e| bad(key, e, Some(&flag)))?;
        origins.insert(key.clone(), flag);
    }

    let merged = builder.build().map_err(|e| SettingsError::BadValue {
        key: "(file)".into(),
        problem: e.to_string(),
        origin: file.map(|p| p.display().to_string()),
    })?;
    let settings: T = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = top_key(&e.path().to_string());
        let problem = clean_problem(&e.inner().to_string());
        SettingsError::BadValue {
            origin: origins.get(&key).cloned(),
            key,
            problem,
        }
    })?;
    settings.validate().map_err(|inv| SettingsError::BadValue {
        origin: origins.get(&inv.key).cloned(),
        key: inv.key,
        problem: inv.problem,
    })?;
    Ok(settings)
}

/// The process's effective configuration as TOML, as `--print-config` shows it.
pub fn render<T: Settings>(settings: &T) -> String {
    toml::to_string_pretty(settings).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// What a binary does first: load from the real environment, print and exit on
/// `--print-config`, print one line and exit 2 on bad config.
pub fn load_or_exit<T: Settings>(args: &ConfigArgs, flags: &Overrides) -> T {
    match load::<T>(args.config.as_deref(), std::env::vars(), flags) {
        Ok(settings) => {
            if args.print_config {
                print!("{}", render(&settings));
                std::process::exit(0);
            }
            settings
        }
        Err(e) => {
            eprintln!("{}: {e}", T::PROCESS);
            std::process::exit(EXIT_BAD_CONFIG);
        }
    }
}

fn list_value<'a>(items: impl Iterator<Item = &'a str>) -> Value {
    Value::from(
        items
            .map(|s| Value::from(s.to_string()))
            .collect::<Vec<_>>(),
    )
}

fn bad(key: &str, e: config::ConfigError, origin: Option<&str>) -> SettingsError {
    SettingsError::BadValue {
        key: key.to_string(),
        problem: e.to_string(),
        origin: origin.map(str::to_string),
    }
}

fn top_key(path: &str) -> String {
    let first = path.split(['.', '[']).next().unwrap_or(path);
    if first.is_empty() || first == "?" {
        "(root)".to_string()
    } else {
        first.to_string()
    }
}

fn clean_problem(msg: &str) -> String {
    // config's own messages sometimes repeat the key; the key is already named.
    msg.split(" for key `")
        .next()
        .unwrap_or(msg)
        .trim()
        .to_string()
}

/// Serde helpers for durations written the human way ("5s", "2160h").
pub mod duration {
    pub use humantime_serde::{deserialize, serialize};
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::net::SocketAddr;
    use std::time::Duration;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Demo {
        listen: SocketAddr,
        etcd_endpoints: Vec<String>,
        #[serde(with = "duration")]
        heartbeat: Duration,
        workers: u32,
        verbose: bool,
        peers: Vec<String>,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo {
                listen: "127.0.0.1:2377".parse().expect("valid"),
                etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
                heartbeat: Duration::from_secs(5),
                workers: 3,
                verbose: false,
                peers: Vec::new(),
            }
        }
    }

    impl Settings for Demo {
        const PROCESS: &'static str = "demo";
        fn validate(&self) -> Result<(), Invalid> {
            if self.heartbeat.is_zero() {
                return Err(Invalid::new("heartbeat", "must be greater than 0"));
            }
            Ok(())
        }
    }

    fn file(text: &str) -> tempfile_lite::TempFile {
        tempfile_lite::TempFile::new(text)
    }

    /// A tiny temp file, so this crate needs no dev-dependency for it.
    mod tempfile_lite {
        use std::path::PathBuf;
        pub struct TempFile(pub PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "shoal-settings-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, text).expect("write temp file");
                TempFile(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let f = file("listen = \"127.0.0.1:1000\"\nworkers = 7\nheartbeat = \"2s\"\n");
        let s: Demo = load(
            Some(&f.0),
            env(&[
                ("SHOAL_WORKERS", "9"),
                ("SHOAL_ETCD_ENDPOINTS", "http://a:1, http://b:2"),
                ("SHOAL_UNRELATED", "ignored"),
            ]),
            &Overrides::new().set("listen", Some("127.0.0.1:3000")),
        )
        .expect("loads");
        assert_eq!(
            s.listen,
            "127.0.0.1:3000".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(s.workers, 9);
        assert_eq!(s.heartbeat, Duration::from_secs(2));
        assert_eq!(s.etcd_endpoints, vec!["http://a:1", "http://b:2"]);
        assert!(!s.verbose);
    }

    #[test]
    fn a_list_that_defaults_to_empty_is_a_known_key() {
        let f = file("peers = [\"a:1\"]\n");
        let s: Demo = load(Some(&f.0), env(&[]), &Overrides::new()).expect("file");
        assert_eq!(s.peers, vec!["a:1"]);
        let s: Demo =
            load(None, env(&[("SHOAL_PEERS", "b:2,c:3")]), &Overrides::new()).expect("env");
        assert_eq!(s.peers, vec!["b:2", "c:3"]);
    }

    #[test]
    fn defaults_alone() {
        let s: Demo = load(None, env(&[]), &Overrides::new()).expect("loads");
        assert_eq!(s, Demo::default());
    }

    #[test]
    fn bad_value_in_file_names_key_and_file() {
        let f = file("listen = \"not-an-address\"\n");
        let err = load::<Demo>(Some(&f.0), env(&[]), &Overrides::new()).expect_err("bad");
        assert_eq!(err.key(), Some("listen"));
        let msg = err.to_string();
        assert!(msg.contains("`listen`"), "{msg}");
        assert!(msg.contains(&f.0.display().to_string()), "{msg}");
    }

    #[test]
    fn bad_value_in_env_and_flag_names_key() {
        let err = load::<Demo>(None, env(&[("SHOAL_WORKERS", "many")]), &Overrides::new())
            .expect_err("bad");
        assert_eq!(err.key(), Some("workers"));
        assert!(err.to_string().contains("SHOAL_WORKERS"), "{err}");

        let err = load::<Demo>(
            None,
            env(&[]),
            &Overrides::new().set("heartbeat", Some("soon")),
        )
        .expect_err("bad");
        assert_eq!(err.key(), Some("heartbeat"));
        assert!(err.to_string().contains("--heartbeat"), "{err}");
    }

    #[test]
    fn unknown_key_in_file_is_refused() {
        let f = file("lisen = \"127.0.0.1:1\"\n");
        let err = load::<Demo>(Some(&f.0), env(&[]), &Overrides::new()).expect_err("bad");
        assert_eq!(err.key(), Some("lisen"));
    }

    #[test]
    fn validation_names_key() {
        let err = load::<Demo>(None, env(&[("SHOAL_HEARTBEAT", "0s")]), &Overrides::new())
            .expect_err("bad");
        assert_eq!(err.key(), Some("heartbeat"));
        assert!(err.to_string().contains("greater than 0"), "{err}");
    }

    #[test]
    fn render_round_trips() {
        let s = Demo::default();
        let text = render(&s);
        let f = file(&text);
        let back: Demo = load(Some(&f.0), env(&[]), &Overrides::new()).expect("loads");
        assert_eq!(back, s);
    }
}

/// Flags every shoal service takes; each sets the config key of the same name.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceFlags {
    /// gRPC listen address (IP:PORT).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// OTLP gRPC endpoint spans are exported to (e.g. http://127.0.0.1:4317); empty: none.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Log line format on stderr: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log filter directives (tracing EnvFilter syntax), e.g. "info,shoal_store=debug".
    #[arg(long, value_name = "DIRECTIVES")]
    pub log_filter: Option<String>,
}

impl ServiceFlags {
    pub fn apply(&self, o: Overrides) -> Overrides {
        o.set("listen", self.listen.as_ref())
            .set("otlp_endpoint", self.otlp_endpoint.as_ref())
            .set("log_format", self.log_format.as_ref())
            .set("log_filter", self.log_filter.as_ref())
    }
}

/// Flags of the services that hold cluster state: where etcd and NATS are.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StateFlags {
    /// etcd client URLs, comma separated or repeated.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of shoal's objects in etcd.
    #[arg(long, value_name = "PREFIX")]
    pub store_prefix: Option<String>,
    /// NATS server URL.
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// The cluster CA's key-encryption key file.
    #[arg(long, value_name = "PATH")]
    pub kek_file: Option<String>,
}

impl StateFlags {
    pub fn apply(&self, o: Overrides) -> Overrides {
        o.set_list("etcd_endpoints", &self.etcd_endpoints)
            .set("store_prefix", self.store_prefix.as_ref())
            .set("nats_url", self.nats_url.as_ref())
            .set("kek_file", self.kek_file.as_ref())
    }
}

/// Checks shared by the services' `validate`.
pub mod check {
    use super::Invalid;

    pub fn url_list(key: &str, urls: &[String], schemes: &[&str]) -> Result<(), Invalid> {
        if urls.is_empty() {
            return Err(Invalid::new(key, "needs at least one URL"));
        }
        urls.iter().try_for_each(|u| url(key, u, schemes))
    }

    pub fn url(key: &str, value: &str, schemes: &[&str]) -> Result<(), Invalid> {
        let ok = schemes.iter().any(|s| {
            value
                .strip_prefix(s)
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace))
        });
        if ok {
            Ok(())
        } else {
            Err(Invalid::new(
                key,
                format!(
                    "\"{value}\" is not a URL of scheme {}",
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ))
        }
    }

    /// `HOST:PORT` with a non-empty host and a numeric port.
    pub fn host_port(key: &str, value: &str) -> Result<(), Invalid> {
        let ok = value
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if ok {
            Ok(())
        } else {
            Err(Invalid::new(key, format!("\"{value}\" is not HOST:PORT")))
        }
    }

    /// The keys every process has for telemetry.
    pub fn telemetry(otlp_endpoint: &str, log_filter: &str) -> Result<(), Invalid> {
        if !otlp_endpoint.is_empty() {
            url("otlp_endpoint", otlp_endpoint, &["http", "https"])?;
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(log_filter)
            .map_err(|e| Invalid::new("log_filter", format!("\"{log_filter}\": {e}")))?;
        Ok(())
    }

    /// The keys of the services that hold cluster state.
    pub fn state(
        etcd_endpoints: &[String],
        store_prefix: &str,
        nats_url: &str,
    ) -> Result<(), Invalid> {
        url_list("etcd_endpoints", etcd_endpoints, &["http", "https"])?;
        self::store_prefix("store_prefix", store_prefix)?;
        url("nats_url", nats_url, &["nats", "tls"])
    }

    pub fn not_empty(key: &str, value: &str) -> Result<(), Invalid> {
        if value.trim().is_empty() {
            Err(Invalid::new(key, "must not be empty"))
        } else {
            Ok(())
        }
    }

    pub fn store_prefix(key: &str, value: &str) -> Result<(), Invalid> {
        if !value.starts_with('/') || value.ends_with('/') || value.len() < 2 {
            Err(Invalid::new(
                key,
                format!("\"{value}\" must start with '/' and not end with '/'"),
            ))
        } else {
            Ok(())
        }
    }
}
