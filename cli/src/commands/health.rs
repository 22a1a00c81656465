//! `shoal health ADDR`: asks a process's `grpc.health.v1` service.

use std::process::ExitCode;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::config::CliConfig;

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Address of the process: HOST:PORT or https://HOST:PORT (TLS, verified against
    /// the cluster CA in cert_dir), http://HOST:PORT (plaintext) or unix:///path.
    pub addr: String,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = crate::connect::MANAGER_SERVER_NAME)]
    pub server_name: String,
    /// gRPC service to ask about; empty asks about the whole process.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Print nothing; only the exit code tells.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(cfg: &CliConfig, args: HealthArgs) -> anyhow::Result<ExitCode> {
    let channel = crate::connect::health_channel(cfg, &args.addr, &args.server_name).await?;
    let mut client = HealthClient::new(channel);
    let status = client
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", args.addr, super::status_message(&s)))?
        .into_inner()
        .status();
    if !args.quiet {
        println!("{}", status.as_str_name());
    }
    Ok(
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
