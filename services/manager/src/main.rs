use clap::Parser;
use shoal_manager::ManagerConfig;
use shoal_settings::{ConfigArgs, Overrides, ServiceFlags, StateFlags};

/// shoal-manager: the Control API, CA, orchestrators and allocator.
#[derive(Debug, Parser)]
#[command(name = "shoal-manager", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    service: ServiceFlags,
    #[command(flatten)]
    state: StateFlags,
    /// The manager's state directory (node id, control socket).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// Address nodes reach this manager at (IP or IP:PORT).
    #[arg(long, value_name = "ADDR")]
    advertise_addr: Option<String>,
    /// Hostname of the manager node.
    #[arg(long)]
    hostname: Option<String>,
    /// Lease TTL of the orchestrators' leadership (e.g. 10s).
    #[arg(long, value_name = "DURATION")]
    leader_lease_ttl: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let flags = args
        .state
        .apply(args.service.apply(Overrides::new()))
        .set("leader_lease_ttl", args.leader_lease_ttl.as_ref())
        .set("state_dir", args.state_dir.as_ref())
        .set("advertise_addr", args.advertise_addr.as_ref())
        .set("hostname", args.hostname.as_ref());
    let cfg: ManagerConfig = shoal_settings::load_or_exit(&args.config, &flags);
    shoal_grpc_host::launch(cfg, shoal_manager::run)
}
