use clap::Parser;
use shoal_dns::DnsConfig;
use shoal_settings::{ConfigArgs, Overrides, ServiceFlags, StateFlags};

/// shoal-dns: embedded DNS and the VIP resolver API.
#[derive(Debug, Parser)]
#[command(name = "shoal-dns", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    service: ServiceFlags,
    #[command(flatten)]
    state: StateFlags,
    /// DNS listen address (UDP and TCP).
    #[arg(long, value_name = "IP:PORT")]
    dns_listen: Option<String>,
    /// Upstream resolvers (IP or IP:PORT), comma separated or repeated.
    #[arg(long, value_name = "IP[:PORT]", value_delimiter = ',')]
    upstream: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let flags = args
        .state
        .apply(args.service.apply(Overrides::new()))
        .set("dns_listen", args.dns_listen.as_ref())
        .set_list("upstream", &args.upstream);
    let cfg: DnsConfig = shoal_settings::load_or_exit(&args.config, &flags);
    shoal_grpc_host::launch(cfg, shoal_dns::run)
}
