//! `shoal health ADDR`: asks a process's `grpc.health.v1` service.

use std::process::ExitCode;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Address of the process (HOST:PORT).
    pub addr: String,
    /// gRPC service to ask about; empty asks about the whole process.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Print nothing; only the exit code tells.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let channel = crate::connect::channel(&args.addr).await?;
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
