use clap::Parser;
use shoal_settings::{ConfigArgs, Overrides, ServiceFlags};
use shoal_worker::WorkerConfig;

/// shoal-worker: runs a node's tasks.
#[derive(Debug, Parser)]
#[command(name = "shoal-worker", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    service: ServiceFlags,
    /// Address advertised to the cluster.
    #[arg(long, value_name = "IP")]
    advertise_addr: Option<String>,
    /// Dispatcher addresses (HOST:PORT), comma separated or repeated.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    dispatcher_addrs: Vec<String>,
    /// Manager addresses (HOST:PORT) for certificate renewal, comma separated or repeated.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    manager_addrs: Vec<String>,
    /// Directory of the node's identity and task state.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// Hostname shown by `node ls`.
    #[arg(long)]
    hostname: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let flags = args
        .service
        .apply(Overrides::new())
        .set("advertise_addr", args.advertise_addr.as_ref())
        .set_list("dispatcher_addrs", &args.dispatcher_addrs)
        .set_list("manager_addrs", &args.manager_addrs)
        .set("state_dir", args.state_dir.as_ref())
        .set("hostname", args.hostname.as_ref());
    let cfg: WorkerConfig = shoal_settings::load_or_exit(&args.config, &flags);
    shoal_grpc_host::launch(cfg, shoal_worker::run)
}
