//! The command tree. Each command is a module; `run` wires config, telemetry and a
//! runtime around it.

pub mod config;
pub mod events;
pub mod health;
pub mod info;
pub mod network;
pub mod node;
pub mod secret;
pub mod service;
pub mod stack;
pub mod swarm;
pub mod task;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_settings::{ConfigArgs, Overrides};

use crate::config::CliConfig;

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Docker Swarm mode, rebuilt as separate services",
    propagate_version = true
)]
pub struct Cli {
    /// The CLI's own settings file (TOML). Environment variables SHOAL_<KEY> and flags
    /// override it. (Not `--config`: `service create --config` is docker's.)
    #[arg(long = "cli-config", value_name = "PATH", global = true)]
    pub cli_config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file, env and flags merged) and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
    /// Manager to talk to: HOST:PORT (TLS), http://HOST:PORT or unix:///path. Env:
    /// SHOAL_HOST.
    #[arg(long, short = 'H', global = true, value_name = "HOST:PORT")]
    pub host: Option<String>,
    /// A local manager's control socket (<manager state_dir>/control.sock). Env:
    /// SHOAL_SOCKET.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<String>,
    /// Where the admin client credentials live. Env: SHOAL_CERT_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub cert_dir: Option<String>,
    /// This host's node state directory. Env: SHOAL_STATE_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// OTLP gRPC endpoint for the CLI's own spans. Env: SHOAL_OTLP_ENDPOINT.
    #[arg(long, global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The settings-file flags as every shoal process takes them.
    pub fn config_args(&self) -> ConfigArgs {
        ConfigArgs {
            config: self.cli_config.clone(),
            print_config: self.print_config,
        }
    }

    pub fn overrides(&self) -> Overrides {
        Overrides::new()
            .set("host", self.host.as_ref())
            .set("socket", self.socket.as_ref())
            .set("cert_dir", self.cert_dir.as_ref())
            .set("state_dir", self.state_dir.as_ref())
            .set("otlp_endpoint", self.otlp_endpoint.as_ref())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage Swarm configs.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Get real time events from the cluster.
    Events(events::EventsArgs),
    /// Check a shoal process's gRPC health (exit 0 when SERVING).
    Health(health::HealthArgs),
    /// Display system-wide information (the Swarm section of `docker info`).
    Info(info::InfoArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage Swarm nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage Swarm secrets.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Manage Swarm services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage Swarm stacks.
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Manage Swarm.
    #[command(subcommand)]
    Swarm(swarm::SwarmCommand),
    /// Show the shoal version information.
    Version,
}

pub fn run(cli: Cli, cfg: CliConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = shoal_telemetry::init(&shoal_telemetry::TelemetryConfig {
            service_name: "shoal-cli".into(),
            otlp_endpoint: (!cfg.otlp_endpoint.is_empty()).then(|| cfg.otlp_endpoint.clone()),
            log_format: shoal_telemetry::LogFormat::Text,
            log_filter: cfg.log_filter.clone(),
        });
        let telemetry = match telemetry {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("shoal: {e}");
                return ExitCode::FAILURE;
            }
        };
        // One root span per command (`shoal service create`): every RPC the command
        // makes, and everything the cluster does for it, joins this trace.
        let span = tracing::info_span!("command", otel.name = %command_path());
        let result = tracing::Instrument::instrument(run_command(&cfg, cli.command), span).await;
        let code = match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("Error: {e:#}");
                ExitCode::FAILURE
            }
        };
        // On this single-threaded runtime spans are only exported if we wait for them.
        if let Err(e) = telemetry.shutdown().await {
            eprintln!("shoal: {e}");
        }
        code
    })
}

async fn run_command(cfg: &CliConfig, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config(cmd) => config::run(cfg, cmd).await,
        Command::Events(args) => events::run(cfg, args).await,
        Command::Health(args) => health::run(cfg, args).await,
        Command::Info(args) => info::run(cfg, args).await,
        Command::Network(cmd) => network::run(cfg, cmd).await,
        Command::Node(cmd) => node::run(cfg, cmd).await,
        Command::Secret(cmd) => secret::run(cfg, cmd).await,
        Command::Service(cmd) => service::run(cfg, cmd).await,
        Command::Stack(cmd) => stack::run(cfg, cmd).await,
        Command::Swarm(cmd) => swarm::run(cfg, cmd).await,
        Command::Version => {
            println!("shoal version {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The command as typed, without its arguments: `shoal service create`.
fn command_path() -> String {
    use clap::CommandFactory;
    let mut parts = vec!["shoal".to_string()];
    if let Ok(matches) = Cli::command().try_get_matches_from(std::env::args_os()) {
        let mut current = &matches;
        while let Some((name, sub)) = current.subcommand() {
            parts.push(name.to_string());
            current = sub;
        }
    }
    parts.join(" ")
}

/// Turns a gRPC status into the one line a user reads.
pub fn status_message(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable => {
            format!("the shoal manager is unavailable: {}", status.message())
        }
        _ => status.message().to_string(),
    }
}

/// A failed call as the error the user reads.
pub fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(status_message(&status))
}

/// Docker-style `--filter key=value` flags as list filters.
pub fn parse_filters(flags: &[String]) -> anyhow::Result<shoal_proto::v1::ListFilters> {
    let mut f = shoal_proto::v1::ListFilters::default();
    for flag in flags {
        let Some((key, value)) = flag.split_once('=') else {
            anyhow::bail!("bad format of filter (expected name=value)");
        };
        match key {
            "name" => f.name_prefixes.push(value.to_string()),
            "id" => f.id_prefixes.push(value.to_string()),
            "label" => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                f.labels.insert(k.to_string(), v.to_string());
            }
            other => anyhow::bail!("invalid filter '{other}'"),
        }
    }
    Ok(f)
}
