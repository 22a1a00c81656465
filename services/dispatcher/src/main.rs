use clap::Parser;
use shoal_dispatcher::DispatcherConfig;
use shoal_settings::{ConfigArgs, Overrides, ServiceFlags, StateFlags};

/// shoal-dispatcher: worker sessions, heartbeats and assignments.
#[derive(Debug, Parser)]
#[command(name = "shoal-dispatcher", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    service: ServiceFlags,
    #[command(flatten)]
    state: StateFlags,
    /// HOST:PORT workers reach this dispatcher at (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertise_addr: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let flags = args
        .state
        .apply(args.service.apply(Overrides::new()))
        .set("advertise_addr", args.advertise_addr.as_ref());
    let cfg: DispatcherConfig = shoal_settings::load_or_exit(&args.config, &flags);
    shoal_grpc_host::launch(cfg, shoal_dispatcher::run)
}
